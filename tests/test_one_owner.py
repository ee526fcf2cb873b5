"""One owner for each check and constant: the runtime defines the tasks, averages, estimators and the
zero_division check (a standalone module must carry them); the API, emit, the CLI and the experiments
use those definitions, and what the docs say matches what the code does."""

import ast
import re
import warnings
from pathlib import Path

import pytest
import torch

import metricc
from metricc import runtime
from metricc.cli import build_parser
from metricc.emit import EmitOptions

ROOT = Path(__file__).resolve().parent.parent
CONSTANTS = {"TASKS": runtime.TASKS, "AVERAGES": runtime.AVERAGES, "ESTIMATORS": runtime.ESTIMATORS}


def _tuple_literals(path):
    """The string tuples and lists written in a module, with their line numbers; ``Literal[...]`` types are
    not counted (tests/test_typing.py checks that they name the runtime's values)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    literal_types = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)
                     and isinstance(node.value, ast.Name) and node.value.id == "Literal"}
    for node in ast.walk(tree):
        if id(node) in literal_types:
            continue
        if isinstance(node, (ast.Tuple, ast.List)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield node.lineno, {e.value for e in node.elts}


def test_no_module_but_the_runtime_spells_out_the_tasks_averages_or_estimators():
    spelled = []
    for path in sorted((ROOT / "metricc").rglob("*.py")):
        if path.name == "runtime.py":
            continue
        for line, values in _tuple_literals(path):
            for name, constant in CONSTANTS.items():
                if len(values) > 1 and values <= set(constant):
                    spelled.append(f"{path.relative_to(ROOT)}:{line} writes {sorted(values)} (use runtime.{name})")
    assert not spelled, "\n".join(spelled)


def _choices(parser, *path, option):
    for command in path:
        parser = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in parser._actions if option in a.option_strings).choices)


@pytest.mark.parametrize(("command", "option", "constant"), [
    ("compile", "--task", runtime.TASKS), ("compile", "--average", runtime.AVERAGES),
    ("compile", "--estimator", runtime.ESTIMATORS), ("derive", "--task", runtime.TASKS),
    ("experiment", "--estimator", runtime.ESTIMATORS),
    ("experiment", "--task", (*runtime.TASKS, "segmentation", "constrained", "fairness")),
])
def test_the_command_line_offers_the_runtime_choices(command, option, constant):
    assert _choices(build_parser(), command, option=option) == constant


def test_the_experiment_tasks_are_the_runtimes_then_the_experiments_own():
    # --task of `metricc experiment` also names experiments that are not runtime tasks (constrained, fairness)
    choices = _choices(build_parser(), "experiment", option="--task")
    assert choices[:len(runtime.TASKS)] == runtime.TASKS and not set(choices[len(runtime.TASKS):]) & set(runtime.TASKS)


def _error(build):
    with pytest.raises((ValueError, TypeError)) as caught:
        build()
    return type(caught.value), str(caught.value)


@pytest.mark.parametrize("options", [
    {"zero_division": float("nan")}, {"zero_division": True}, {"zero_division": "0"},
    {"task": "multi-class"}, {"task": "multiclass", "num_classes": 1},
    {"task": "multiclass", "num_classes": 3, "average": "samples"},
])
def test_emit_the_runtime_and_compile_metric_refuse_an_option_with_one_message(options):
    definition = metricc.compile_metric("f1").definition
    from_emit = _error(lambda: EmitOptions(**options))
    from_runtime = _error(lambda: runtime.MetricLoss(definition, **options))
    from_api = _error(lambda: metricc.compile_metric("f1", relaxation="identity", **options))
    assert from_emit == from_runtime == from_api


@pytest.mark.parametrize("name", ["from_logits", "sync", "grad_average", "validate"])
def test_a_boolean_option_gets_one_message_from_emit_and_the_runtime(name):
    definition = metricc.compile_metric("f1").definition
    assert _error(lambda: EmitOptions(**{name: 1})) == _error(lambda: runtime.MetricLoss(definition, **{name: 1}))


def test_every_caller_gets_its_own_report():
    first, second = metricc.compile_metric("f1").report, metricc.compile_metric("f1").report
    assert first is not second and first == second
    first.findings.append(("appended by a caller",))
    first.singularities.clear()
    third = metricc.compile_metric("f1").report
    assert third.findings == second.findings and third.singularities == second.singularities
    assert ("appended by a caller",) not in third.findings and third.singularities
    assert metricc.analyze("gmean") is not metricc.analyze("gmean")
    assert metricc.analyze("gmean").metric is metricc.analyze("gmean").metric  # the frozen Metric is shared


def test_every_metricc_name_the_readme_uses_exists():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = set(re.findall(r"metricc\.([A-Za-z_]\w*)", text)) | set(re.findall(r"`(describe_\w+|valid_\w+)`", text))
    missing = sorted(n for n in names if not hasattr(metricc, n) and not (ROOT / "metricc" / f"{n}.py").exists())
    assert not missing
    assert "describe_amplifier_range" in metricc.__all__


def test_the_default_amplifier_does_not_warn_in_float32_as_the_docs_say():
    logits, target = torch.randn(64, dtype=torch.float32), torch.randint(0, 2, (64,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", metricc.SaturationWarning)
        metricc.compile_metric("f1")(logits, target)
    with pytest.warns(metricc.SaturationWarning, match="float32"):  # where the slope underflows, it does
        metricc.compile_metric("f1", relaxation=metricc.Sigmoid(L=180.0))(logits, target)
    assert "metricc warns)" not in (ROOT / "docs" / "benchmark.md").read_text(encoding="utf-8")


def test_a_curve_metric_header_names_its_grid_not_a_mean_or_one_threshold():
    source = metricc.compile_metric("auroc").source
    header = source[: source.index("Derivation")]
    assert "mean of the loss" not in header and "t = 0.5" not in header
    assert "the curve's 19 points t_k = 0.05" in header and "t = t_k (each threshold)" in header
    assert "t = 0.5" not in metricc.compile_metric("auroc").derivation.text()
    averaged = metricc.compile_metric("f1", thresholds=[0.3, 0.5]).source
    assert "mean of the loss over thresholds t_k = 0.3, 0.5" in averaged and "t = 0.5\n" not in averaged
    assert "Relaxation   ŷ = σ(L·(p − t)) with L = 73, t = 0.5\n" in metricc.compile_metric("f1").source
