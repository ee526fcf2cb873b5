"""The command line: every command, its exit codes, and that it never overwrites a file unasked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metricc.catalog import catalog
from metricc.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_compile_writes_a_new_file_and_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "f1_loss.py"
    assert main(["compile", "2*TP/(2*TP+FP+FN)", "--name", "f1", "-o", str(path)]) == 0
    written = path.read_text()
    assert "class F1Loss(MetricLoss)" in written and "from metricc.runtime import" in written
    path.write_text("# the user's own edits\n")
    assert main(["compile", "f1", "-o", str(path)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert path.read_text() == "# the user's own edits\n"
    assert main(["compile", "f1", "-o", str(path), "--force"]) == 0
    assert "class F1Loss" in path.read_text()


def test_compile_to_stdout_with_options(capsys):
    assert main(["compile", "fbeta", "--param", "beta=2", "--relaxation", "sigmoid:L=30,threshold=0.4",
                 "--thresholds", "0.3,0.5", "--zero-division", "1", "--sync", "--probabilities"]) == 0
    source = capsys.readouterr().out
    assert "beta = 2.0" in source and "SigmoidAmplifier(scale=30.0, threshold=0.4)" in source
    assert "thresholds=(0.3, 0.5)" in source
    assert "zero_division=1.0" in source and "sync=True" in source and "from_logits=False" in source


def test_compile_prints_the_analysis_warnings(capsys):
    assert main(["compile", "gmean"]) == 0
    assert "warning: gmean: no finite Lipschitz bound" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["compile", "2*TP/(2*TP+FP+FX)"], "did you mean 'FP' or 'FN'"),
    (["compile", "TP*FN/n**2"], "not monotone"),
    (["compile", "f1", "--relaxation", "cubic"], "unknown relaxation"),
    (["compile", "f1", "--name", "my f1"], "identifier"),
    (["compile", "f1", "--thresholds", "0.5,1.5"], "thresholds must be numbers in (0, 1)"),
    (["derive", "fbeta", "--param", "gamma=2"], "does not use"),
    (["check", "TP^2"], "write **"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_compile_into_a_missing_folder_is_an_error(tmp_path, capsys):
    assert main(["compile", "f1", "-o", str(tmp_path / "missing" / "f1.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_derive_text_and_latex(capsys):
    assert main(["derive", "fbeta", "--param", "beta=2"]) == 0
    text = capsys.readouterr().out
    assert "∂f/∂TP" in text and "beta = 2" in text and "g+ =" in text
    assert main(["derive", "f1", "--latex"]) == 0
    latex = capsys.readouterr().out
    assert latex.startswith("\\begin{align*}") and "\\frac{\\partial f}{\\partial TP}" in latex


def test_list_shows_every_catalog_metric(capsys):
    assert main(["list"]) == 0
    table = capsys.readouterr().out
    for name in catalog():
        assert name in table
    assert main(["list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert {e["name"] for e in entries} == set(catalog())
    assert next(e for e in entries if e["name"] == "fbeta")["params"] == {"beta": 1.0}


def test_check_exit_codes_and_json(capsys):
    assert main(["check", "2*TP/(2*TP+FP+FN)"]) == 0
    out = capsys.readouterr().out
    assert "maximize" in out and "lipschitz" in out
    assert main(["check", "gmean", "--json"]) == 1  # ok, with a warning (unbounded gradient)
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["lipschitz"] is None and report["warnings"]
    assert main(["check", "TP*FN/n**2"]) == 2
    assert "NOT OK" in capsys.readouterr().out


def test_python_dash_m_runs_the_same_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "metricc", "list"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0 and "balanced_accuracy" in result.stdout
    result = subprocess.run([sys.executable, "-m", "metricc", "compile", "f1", "-o", str(tmp_path / "x.py")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and (tmp_path / "x.py").exists()


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "compile" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["check", "-TP/(TP+FN)"],
    ["check", "-TP/(TP+FN)", "--min-prevalence", "0.1"],
    ["check", "--min-prevalence", "0.1", "-TP/(TP+FN)", "--json"],
    ["check", "--", "-TP/(TP+FN)"],
    ["check", "-(TP/P)"],
])
def test_a_metric_may_start_with_a_minus_sign(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "minimize" in out and "-TP/(FN + TP)" in out


def test_option_values_that_start_with_a_minus_stay_option_values(tmp_path, capsys):
    path = tmp_path / "neg.py"
    assert main(["compile", "-TP/n", "--zero-division", "-1", "-o", str(path)]) == 0
    assert "zero_division=-1.0" in path.read_text()
    assert main(["compile", "-pbeta=2", "fbeta"]) == 0  # a short option with its value attached
    assert "beta = 2.0" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flags, keywords", [
    (["compile", "8/TP"], ["pass --no-check to compile it anyway", "unbounded above"], ["check=False"]),
    (["derive", "TP/(TP+beta*FN)"], ["pass --param beta=VALUE"], ["params="]),
    (["derive", "fbeta", "--param", "gamma=2"], ["--param gives 'gamma'"], ["params="]),
    (["compile", "log(TP-FP)"], ["--direction maximize or --direction minimize", "--no-check"],
     ["direction=", "check=False"]),
])
def test_messages_name_the_command_lines_flags_not_keyword_arguments(argv, flags, keywords, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for fragment in flags:
        assert fragment in err, err
    for fragment in keywords:
        assert fragment not in err, err


def test_the_check_table_names_flags_and_the_api_names_keywords(capsys):
    assert main(["check", "log(TP-FP)"]) == 2
    assert "--direction maximize" in capsys.readouterr().out
    import metricc

    assert "direction='maximize'" in metricc.analyze("log(TP-FP)").table()


def test_no_check_compiles_a_metric_the_gate_refuses(capsys):
    assert main(["compile", "8/TP", "--no-check"]) == 0
    assert "class CompiledMetricLoss(MetricLoss)" in capsys.readouterr().out


def test_compile_warns_with_this_commands_zero_division(capsys):
    assert main(["compile", "1 + TP/P"]) == 0
    assert "pass --zero-division 1 (or another value in [1, 2])" in capsys.readouterr().err
    assert main(["compile", "1 + TP/P", "--zero-division", "1.5"]) == 0
    assert "zero_division" not in capsys.readouterr().err
    assert main(["compile", "(FP/FP)*TP/(TP+FN)"]) == 0
    assert "simplified FP/FP: the metric is undefined where FP = 0" in capsys.readouterr().err


def test_list_shows_the_scikit_learn_aliases(capsys):
    assert main(["list"]) == 0
    table = capsys.readouterr().out
    assert "f1_score" in table and "matthews_corrcoef" in table
    assert main(["list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["mcc"]["aliases"] == ["matthews_corrcoef"]
    assert main(["derive", "f1_score"]) == 0
