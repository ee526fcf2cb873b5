"""The command line's error paths: what a user sees for a bad value, a folder as output, and --version.

Every case exits with code 2 (argparse's code for a bad argument, metricc's for bad input), prints one
message that names what was wrong and the value given, and never a traceback; nothing is written.
"""

import tomllib
from pathlib import Path

import pytest

import metricc
from metricc.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(argv, capsys):
    """(exit code, stdout, stderr) of ``metricc argv``, argparse's SystemExit included."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv, message", [
    (["compile", "fbeta", "--param", "beta"], "argument --param/-p: --param needs NAME=VALUE, got 'beta'"),
    (["compile", "fbeta", "--param", "=2"], "argument --param/-p: --param needs NAME=VALUE, got '=2'"),
    (["compile", "fbeta", "--param", "beta=two"], "argument --param/-p: --param beta needs a number, got 'two'"),
    (["compile", "f1", "--thresholds", "0.3,half"],
     "argument --thresholds: --thresholds needs comma-separated numbers, got '0.3,half'"),
    (["derive", "f1", "--thresholds", "x"], "argument --thresholds: --thresholds needs comma-separated numbers"),
    (["compile", "f1", "--zero-division", "zero"],
     "argument --zero-division: --zero-division needs a number or 'none', got 'zero'"),
    (["compile", "f1", "--momentum", "fast"], "argument --momentum: invalid float value: 'fast'"),
    (["compile", "f1", "--task", "regression"], "argument --task: invalid choice: 'regression'"),
])
def test_malformed_option_values_are_refused_by_the_parser(argv, message, capsys, tmp_path):
    code, out, err = run(argv + ["-o", str(tmp_path / "loss.py")] if argv[0] == "compile" else argv, capsys)
    assert code == 2
    assert message in err
    assert err.splitlines()[0].startswith("usage: metricc")  # argparse shows the usage first
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "loss.py").exists()


@pytest.mark.parametrize("argv, message", [
    (["compile", "fbeta", "--param", "beta=nan"], "parameter 'beta' must be finite, got nan"),
    (["compile", "f1", "--param", "beta=2"], "'beta', which metric 'f1' does not use"),
    (["compile", "f1", "--thresholds", "0.5,1.5"], "thresholds must be numbers in (0, 1), got 1.5"),
    (["compile", "f1", "--thresholds", "0"], "thresholds must be numbers in (0, 1), got 0.0"),
    (["compile", "f1", "--thresholds", ",,"], "is empty; give at least one threshold in (0, 1)"),
    (["compile", "f1", "--zero-division", "inf"], "zero_division must be a finite number"),
    (["compile", "f1", "--estimator", "running", "--momentum", "2"], "momentum must be a number in [0, 1), got 2.0"),
    (["compile", "f1", "--relaxation", "sigmoid:L=-3"], "Sigmoid: L must be positive, got -3.0"),
    (["compile", "f1", "--relaxation", "sigmoid:L=abc"], "relaxation option L='abc' needs a number"),
])
def test_well_formed_but_invalid_values_get_metricc_errors(argv, message, capsys, tmp_path):
    code, out, err = run(argv + ["-o", str(tmp_path / "loss.py")], capsys)
    assert code == 2
    assert err.startswith("metricc: error: ") and message in err, err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "loss.py").exists()


def test_a_folder_as_output_is_an_error_with_or_without_force(tmp_path, capsys):
    """Regression: `metricc compile f1 -o <folder> --force` crashed with an IsADirectoryError traceback."""
    code, _, err = run(["compile", "f1", "-o", str(tmp_path), "--force"], capsys)
    assert code == 2
    assert err == f"metricc: error: {tmp_path} is a folder; -o needs a file name, e.g. {tmp_path / 'loss.py'}\n"
    code, _, err = run(["compile", "f1", "-o", str(tmp_path)], capsys)
    assert code == 2 and "Traceback" not in err and str(tmp_path) in err
    assert list(tmp_path.iterdir()) == []


def test_an_output_path_through_a_file_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    code, _, err = run(["compile", "f1", "-o", str(tmp_path / "notes.txt" / "f1_loss.py")], capsys)
    assert code == 2
    assert err.startswith("metricc: error: ") and "notes.txt is a file, not a folder" in err and "Traceback" not in err
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder\n"


def test_version_prints_the_package_version(capsys):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # one source: metricc.__version__
    version = metricc.__version__
    code, out, err = run(["--version"], capsys)
    assert code == 0
    assert out == f"metricc {version}\n" and err == ""


def test_a_missing_command_says_which_commands_exist(capsys):
    code, _, err = run([], capsys)
    assert code == 2
    assert "the following arguments are required: COMMAND" in err
