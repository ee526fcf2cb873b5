"""Issue 22: each class of fault an adversarial audit found stays closed (docs/security.md).

- budgets that always hold: every input is answered (compiled or refused) within the per-call CPU budget, on
  any thread; nested budgets cannot postpone a deadline; nested powers and exp of exp are refused by structure;
- no code from names: every name and node that reaches generated source is checked where the Metric is built;
  option values are plain Python values before they are written;
- no silently ignored or overridden option: direction, min_prevalence, --momentum, repeated --param and
  relaxation options, repeated CSV columns;
- files: never written through a symbolic link, never half-written, never over a file unless --force;
- experiment inputs: huge labels and features, devices that cannot compute, non-finite learning rates;
- the generated-module cache is bounded.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import sympy
import torch
from hypothesis import HealthCheck, given, note
from hypothesis import strategies as st

import metricc
from metricc import limits, load
from metricc.budget import cpu_time
from metricc.cli import main
from metricc.files import check_writable, save_figure, write_file
from metricc.metric import FN, TP, Metric
from metricc.testing import property_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NESTED_ABS = "abs(" * 20 + "TP-FP" + ")-FN" * 20  # issue 22: past 100 s in `metricc check`
REFUSED_BY_STRUCTURE = [
    "(((TP/P)**64)**64)**64",  # TP**262144/(FN+TP)**262144: sympy.expand ran past 300 s and 4.3 GB
    "((TP+FN+1)**64+FP)**64/(1+((TP+FN+1)**64+FP)**64)",  # MemoryError in emit with check=False
    "exp(exp(exp(exp(exp(exp(TP/n))))))",  # a MemoryError traceback from mpmath
    "exp(exp(TP))",  # 27 s in one mpmath multiplication at TP = 10**6
    "TP/(n+1)**64",  # 814,385 terms over one denominator
    "(TP/P)**64*(TN/N)**64",  # degree 256
]

# Inputs within the structural limits that cost the most CPU time or memory found (docs/security.md).
NEAR_LIMITS = [
    "TP/(n+1)**16", "(n+1)**16/(1+(n+2)**16)", "(TP/P)**64", "(TP/P)**32*(TN/N)**32",
    "log(1+log(1+log(1+log(1+log(1+log(1+TP/n))))))", "exp((n+1)**16)",
    "(TP*TN-FP*FN)**8/((TP+FP)*(TP+FN)*(TN+FP)*(TN+FN))**4",
    "abs(" * 33 + "TP-FP" + ")-FN" * 33, "max(" * 15 + "TP/P" + ", FN/N)" * 15, "sqrt(" * 99 + "TP/n" + ")" * 99,
]


def _timed(work):
    """(result or exception, CPU seconds of the calling thread) of ``work()``."""
    started = cpu_time()
    try:
        result = work()
    except Exception as error:  # noqa: BLE001 - handed back to the test
        result = error
    return result, cpu_time() - started


def _in_thread(work):
    """``_timed(work)`` in a new thread, which no signal reaches."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_timed(work)))
    thread.start()
    thread.join()
    return outcome[0]


@pytest.fixture
def short_budget(monkeypatch):
    """A per-call budget of 0.5 s instead of 4.9 s: the same guarantee, checked at a tenth of the cost."""
    monkeypatch.setattr(limits, "CALL_SECONDS", 0.5)
    return 0.5


# -- budgets that always hold (items 1-3) ----------------------------------------------------------------

CALLS = {
    "compile_metric": lambda text: metricc.compile_metric(text),
    "compile_metric(check=False)": lambda text: metricc.compile_metric(text, check=False, direction="maximize"),
    "analyze": lambda text: metricc.analyze(text),
    "derive": lambda text: metricc.derive(metricc.parse(text), direction="maximize"),
}


@pytest.mark.parametrize("call", CALLS)
def test_the_nested_abs_metric_is_answered_within_the_budget_on_a_thread_and_on_the_main_thread(call, short_budget):
    for result, seconds in (_in_thread(lambda: CALLS[call](NESTED_ABS)), _timed(lambda: CALLS[call](NESTED_ABS))):
        assert seconds < short_budget + 0.5, f"{call} took {seconds:.2f} s of CPU time"
        assert not isinstance(result, Exception) or isinstance(result, metricc.MetricCheckError), repr(result)


@pytest.mark.parametrize("text", REFUSED_BY_STRUCTURE)
def test_nested_powers_and_exp_of_exp_are_refused_by_structure_at_once(text):
    for call in CALLS.values():
        started = cpu_time()
        with pytest.raises(metricc.MetricSyntaxError, match="degree|terms|exp\\(\\) of an exp\\(\\)"):
            call(text)
        assert cpu_time() - started < 0.5


def test_a_hand_built_metric_cannot_bypass_the_structural_limits():
    with pytest.raises(metricc.MetricSyntaxError, match="degree"):
        Metric(expr=TP**200 / (TP + FN) ** 200)
    with pytest.raises(metricc.MetricSyntaxError, match="exp"):
        Metric(expr=sympy.exp(sympy.exp(TP / (TP + FN))))
    shared = TP  # a tree of 2**60 nodes in 60 distinct subtrees: counted as the tree it is, and stopped
    for _ in range(60):
        shared = sympy.Add(shared, sympy.Mul(shared, FN, evaluate=False), evaluate=False)
    started = cpu_time()
    with pytest.raises(metricc.MetricSyntaxError, match="nodes"):
        Metric(expr=shared)
    assert cpu_time() - started < 0.5


def test_running_out_of_memory_is_a_refusal_not_a_traceback():
    with pytest.raises(metricc.MetricCheckError, match="ran out of memory"):
        with limits.call_budget("derive"):
            raise MemoryError


def test_interval_powers_cost_the_same_for_every_exponent():
    from metricc.interval import Interval, _power

    box = Interval(np.array([-0.5, 0.2, 1.0]), np.array([0.25, 0.9, 1.0001]))
    started = time.perf_counter()
    big = _power(box, sympy.Integer(2**18))
    assert time.perf_counter() - started < 0.05
    points = np.linspace(box.lo, box.hi, 9)  # each column: points of one box
    assert np.all(big.lo <= np.power(points, 2.0**18)) and np.all(np.power(points, 2.0**18) <= big.hi)
    assert big.hi[2] < 1.0001**2**18 * 1.01 and big.lo[0] <= 0  # tight: not the width of 2**18 products
    odd = _power(Interval(np.array([-2.0]), np.array([3.0])), sympy.Integer(3))
    assert odd.lo[0] <= -8 and odd.hi[0] >= 27 and odd.lo[0] > -8.001 and odd.hi[0] < 27.001


@st.composite
def nested_expressions(draw, depth: int = 5) -> str:
    """Grammar-valid text biased to what costs the most: nesting, powers (of sums, nested, high), exp and log,
    abs/min/max (case splits), up to the grammar's 2,000 characters."""
    if depth == 0 or draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["TP", "FN", "FP", "TN", "P", "N", "PP", "PN", "n", "TP/P", "FP/N", "(n+1)",
                                     "(TP+1)", "2", "(1/3)"]))
    inner = nested_expressions(depth - 1)
    kind = draw(st.sampled_from(["power", "power", "power", "nest", "sum", "product", "quotient", "call",
                                 "variadic"]))
    if kind == "power":
        exponent = draw(st.sampled_from(["2", "3", "8", "16", "32", "64", "-1", "-2", "-64", "(1/2)", "(3/2)"]))
        text = f"({draw(inner)})**{exponent}"
    elif kind == "nest":
        text = f"(({draw(inner)}))"
    elif kind in ("sum", "product", "quotient"):
        op = {"sum": draw(st.sampled_from(["+", "-"])), "product": "*", "quotient": "/"}[kind]
        text = f"({draw(inner)}){op}({draw(inner)})"
    elif kind == "call":
        text = f"{draw(st.sampled_from(['sqrt', 'log', 'exp', 'abs']))}({draw(inner)})"
    else:
        text = f"{draw(st.sampled_from(['min', 'max']))}({draw(inner)}, {draw(inner)})"
    return text[:2000] if len(text) <= 2000 else draw(inner)


def _answered(text: str):
    """compile_metric's answer to ``text`` on a thread: (outcome, CPU seconds)."""
    return _in_thread(lambda: metricc.compile_metric(text))


@property_settings(max_examples=12, thorough=60, suppress_health_check=[HealthCheck.too_slow])
@given(nested_expressions())
def test_every_expression_is_compiled_or_refused_within_the_budget_on_a_thread(text):
    """The goal of issue 22 at a tenth of the budget (the same mechanism); the full budget and memory are the
    slow test's. Anything but a loss or a metricc refusal (a MemoryError, a RecursionError) fails."""
    saved, limits.CALL_SECONDS = limits.CALL_SECONDS, 0.5
    try:
        note(f"metricc.compile_metric({text!r})")
        outcome, seconds = _answered(text)
    finally:
        limits.CALL_SECONDS = saved
    assert isinstance(outcome, (load.CompiledLoss, metricc.MetricSyntaxError, metricc.MetricCheckError)), outcome
    assert seconds < 1.0, f"{seconds:.2f} s of CPU time"


_MEASURE = """
import json, resource, sys, threading, time
import metricc
texts = json.loads(sys.stdin.read())
metricc.compile_metric("f1"); metricc.analyze("mcc")  # warm: imports and caches, before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
worst = 0.0
def one(text, call):
    global worst
    started = time.thread_time()
    try:
        call(text)
    except (metricc.MetricSyntaxError, metricc.MetricCheckError):
        pass
    worst = max(worst, time.thread_time() - started)
calls = [metricc.compile_metric, metricc.analyze, lambda t: metricc.derive(metricc.parse(t), direction="maximize")]
for text in texts:
    for call in calls:
        thread = threading.Thread(target=one, args=(text, call)); thread.start(); thread.join()
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({"seconds": worst, "megabytes": grown}))
"""


@pytest.mark.slow
@property_settings(max_examples=1, thorough=5, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(nested_expressions(), min_size=20, max_size=20))
def test_the_full_budget_holds_in_time_and_memory_for_every_public_call(texts):
    """Issue 22's goal as stated: compile_metric, analyze and derive answer each input within 5 s of CPU time and
    500 MB more memory than the process held, on a thread (measured in a fresh interpreter: ru_maxrss); the
    costliest inputs known, and drawn ones. About 5 minutes."""
    import json

    texts = texts + [NESTED_ABS, *REFUSED_BY_STRUCTURE, *NEAR_LIMITS]
    done = subprocess.run([sys.executable, "-c", _MEASURE], input=json.dumps(texts), capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    note(f"{measured}")
    assert measured["seconds"] < 5.0 and measured["megabytes"] < 500, measured


def test_the_command_line_answers_hostile_metrics_without_a_traceback(capsys, short_budget):
    for command, text in (("check", NESTED_ABS), ("check", REFUSED_BY_STRUCTURE[0]),
                          ("derive", REFUSED_BY_STRUCTURE[1]), ("compile", REFUSED_BY_STRUCTURE[2])):
        started = cpu_time()
        code = main([command, text])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("metricc: error: ") and "Traceback" not in err, err
        assert cpu_time() - started < short_budget + 1.0


# -- no code from names (items 4, 5) ----------------------------------------------------------------------

def test_a_parameter_name_with_code_is_refused_where_the_metric_is_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = "x=__import__('os').system('touch pwned') or 1#"
    with pytest.raises(metricc.MetricSyntaxError, match="parameter name"):
        metricc.compile_metric(metricc.parse("f1").with_params({payload: 1.0}))
    with pytest.raises(metricc.MetricSyntaxError, match="parameter name"):
        Metric(expr=TP / (TP + FN), params=((payload, 1.0),))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["class", "_private", "__import__", "ﬁ", "a b", "1a", "TP", "n", "exp", "torch", ""])
def test_parameter_names_that_are_not_plain_identifiers_or_are_reserved_are_refused(name):
    with pytest.raises(metricc.MetricSyntaxError):
        metricc.parse("f1").with_params({name: 1.0})
    with pytest.raises(metricc.MetricSyntaxError):
        metricc.parse("TP/(TP + FN)", {name: 1.0})


class _Injected(sympy.Function):
    """A function that prints itself as code (sympy's printers call an object's own _pythoncode)."""

    def _pythoncode(self, printer):
        return "__import__('os').system('touch pwned')"

    def _sympystr(self, printer):
        return "TP"


@pytest.mark.parametrize("expr, params", [
    (sympy.Symbol("__import__('os').system('touch pwned')", real=True) * TP, ()),  # a symbol's name is printed
    (sympy.Symbol("a", real=True) * TP, ()),  # a symbol without a value
    (sympy.Symbol("a") * TP, (("a", 1.0),)),  # a parameter without metricc's assumptions (never bound)
    (sympy.Function("system")(TP), ()),  # an undefined function
    (_Injected(TP) / (TP + FN), ()),  # a subclass that prints itself
    (sympy.Symbol("TP") / (TP + FN), ()),  # TP without metricc's assumptions
    (sympy.sin(TP), ()),  # a sympy function the grammar does not have
])
def test_a_hand_built_metric_holds_only_nodes_and_symbols_the_grammar_produces(expr, params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(metricc.MetricSyntaxError):
        metricc.compile_metric(Metric(expr=expr, params=params), check=False, direction="maximize")
    assert not (tmp_path / "pwned").exists()
    bound = Metric(expr=sympy.Symbol("a", real=True) * TP / (TP + FN), params=(("a", 2.0),))  # as parse makes it
    assert bound.bound_expr() == 2.0 * TP / (TP + FN)


@property_settings(max_examples=40)
@given(st.one_of(st.text(max_size=30), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)))
def test_any_parameter_name_is_refused_or_written_as_a_plain_assignment(name):
    try:
        metric = metricc.parse("f1").with_params({name: 0.5})
    except metricc.MetricSyntaxError:
        return
    source = metricc.compile_metric(Metric(expr=TP / (TP + FN), params=metric.params), check=False,
                                    direction="maximize").source
    function = next(node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef))
    assignments = [node for node in function.body if isinstance(node, ast.Assign)]
    assert isinstance(assignments[0].targets[0], ast.Name) and isinstance(assignments[0].value, ast.Constant)
    assert assignments[0].value.value == 0.5


class _Printing(str):
    def __repr__(self):
        return "__import__('os').system('touch pwned')"


def test_text_written_into_the_source_is_a_plain_string(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metric = Metric(expr=TP / (TP + FN), source=_Printing("TP/P"), description=_Printing("recall"))
    loss = metricc.compile_metric(metric, check=False, direction="maximize")
    assert loss.module.METRIC_SOURCE == "TP/P" and "system" not in loss.source
    assert not (tmp_path / "pwned").exists()


def test_numpy_option_values_are_written_as_plain_python_values():
    options = dict(zero_division=np.float64(0.5), momentum=np.float64(0.5), estimator="running")
    loss = metricc.compile_metric("f1", **options)
    plain = metricc.compile_metric("f1", zero_division=0.5, momentum=0.5, estimator="running")
    assert loss.source == plain.source and "np." not in loss.source
    logits, target = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 0])
    torch.testing.assert_close(loss(logits, target), plain(logits, target))
    three = metricc.compile_metric("f1", task="multiclass", num_classes=np.int64(3))
    assert "num_classes=3," in three.source


@pytest.mark.parametrize("options, message", [
    (dict(momentum=float("nan"), estimator="running"), "momentum"),
    (dict(momentum=1.0, estimator="running"), "momentum"),
    (dict(zero_division=float("inf")), "zero_division"),
    (dict(zero_division=np.float64("nan")), "zero_division"),
])
def test_non_finite_option_values_are_refused_before_anything_is_written(options, message):
    with pytest.raises(ValueError, match=message):
        metricc.compile_metric("f1", **options)


def test_momentum_nan_on_the_command_line_is_an_error_not_a_traceback(capsys):
    assert main(["compile", "f1", "--estimator", "running", "--momentum", "nan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metricc: error: momentum must be a number in [0, 1)") and "Traceback" not in err


# -- no silently ignored or overridden option (items 7, 9, 12) --------------------------------------------

@pytest.mark.parametrize("direction", ["min", "MINIMIZE", "minimise", "", 0])
def test_an_invalid_direction_is_refused_not_replaced_by_the_inferred_one(direction):
    with pytest.raises(ValueError, match="direction must be 'maximize' or 'minimize'"):
        metricc.compile_metric("f1", direction=direction)
    with pytest.raises(ValueError, match="direction must be 'maximize' or 'minimize'"):
        metricc.compile_metric("f1", direction=direction, check=False)


@pytest.mark.parametrize("value", [0.9, 0.5, -1, 0, float("nan"), True, "0.1"])
def test_min_prevalence_is_checked_by_compile_metric_as_by_analyze(value):
    messages = []
    for call in (lambda: metricc.analyze("f1", min_prevalence=value),
                 lambda: metricc.compile_metric("f1", min_prevalence=value),
                 lambda: metricc.compile_metric("f1", min_prevalence=value, check=False)):
        with pytest.raises(ValueError, match="min_prevalence must lie in \\(0, 0.5\\)") as raised:
            call()
        messages.append(str(raised.value))
    assert len(set(messages)) == 1


def test_momentum_without_the_running_estimator_is_refused_on_compile(capsys):
    assert main(["compile", "f1", "--momentum", "0.5"]) == 2
    assert "--momentum applies to the running estimator; add --estimator running" in capsys.readouterr().err
    assert main(["compile", "f1", "--estimator", "running", "--momentum", "0.5"]) == 0
    assert "momentum=0.5" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["compile", "derive", "check"])
def test_a_parameter_given_twice_is_refused(command, capsys):
    assert main([command, "fbeta", "-p", "beta=2", "-p", "beta=3"]) == 2
    assert "--param beta is given twice (beta=2 and beta=3)" in capsys.readouterr().err


def test_a_relaxation_option_given_twice_is_refused():
    with pytest.raises(ValueError, match="'threshold' is given twice"):
        metricc.compile_metric("f1", relaxation="sigmoid:threshold=0.5,threshold=0.6")
    from metricc.experiments.losses import LossNameError, parse_losses

    with pytest.raises(LossNameError, match="given twice"):
        parse_losses("focal:gamma=1,gamma=2", {})


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    from metricc.experiments.datasets import DatasetError, load_csv
    from metricc.experiments.multiclass_data import load_task_csv

    path = tmp_path / "twice.csv"
    path.write_text("x1,x1,label\n" + "".join(f"{i},{i + 1},{i % 2}\n" for i in range(8)))
    for load_table in (load_csv, lambda p: load_task_csv(p, "multiclass")):
        with pytest.raises(DatasetError, match="names column 'x1' twice \\(columns 1 and 2\\)"):
            load_table(path)


# -- files (item 14) ---------------------------------------------------------------------------------------

def test_an_existing_file_or_link_is_refused_without_force_even_a_dangling_link(tmp_path):
    target, link, dangling = tmp_path / "target.txt", tmp_path / "link.py", tmp_path / "dangling.py"
    target.write_text("precious")
    link.symlink_to(target)
    dangling.symlink_to(tmp_path / "nowhere" / "file.py")
    for path, reason in ((target, "exists; pass --force"), (link, "symbolic link"), (dangling, "symbolic link")):
        with pytest.raises(FileExistsError, match=reason):
            write_file(path, "new")
    assert target.read_text() == "precious" and not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.py", "link.py", "target.txt"]  # no leftovers


def test_force_replaces_a_link_itself_never_the_file_it_points_to(tmp_path):
    target, link = tmp_path / "target.txt", tmp_path / "link.py"
    target.write_text("precious")
    link.symlink_to(target)
    write_file(link, "new", overwrite=True)
    assert target.read_text() == "precious" and not link.is_symlink() and link.read_text() == "new"
    write_file(target, "replaced", overwrite=True)
    assert target.read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.py", "target.txt"]


def test_a_file_planted_after_the_check_is_not_replaced(tmp_path, monkeypatch):
    from metricc import files

    path = tmp_path / "loss.py"
    real_link = os.link

    def plant_then_link(source, destination):
        path.write_text("planted")  # between check_writable and the write
        real_link(source, destination)

    monkeypatch.setattr(files.os, "link", plant_then_link)
    with pytest.raises(FileExistsError, match="exists"):
        write_file(path, "new")
    assert path.read_text() == "planted" and [p.name for p in tmp_path.iterdir()] == ["loss.py"]


def test_compile_to_a_dangling_link_is_a_clear_error(tmp_path, capsys):
    dangling = tmp_path / "loss.py"
    dangling.symlink_to(tmp_path / "elsewhere.py")
    assert main(["compile", "f1", "-o", str(dangling)]) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and "Errno" not in err and not (tmp_path / "elsewhere.py").exists()
    assert main(["compile", "f1", "-o", str(dangling), "--force"]) == 0
    assert not dangling.is_symlink() and "class F1Loss" in dangling.read_text()
    assert not (tmp_path / "elsewhere.py").exists()


def test_experiment_pngs_follow_the_rule_of_text_outputs(tmp_path):
    from matplotlib.figure import Figure

    from metricc.experiments.report import ensure_writable, output_paths
    from metricc.experiments.summary import save_compact_png

    out = tmp_path / "out"
    out.mkdir()
    planted = out / "learning_curves_slp.png"
    planted.symlink_to(tmp_path / "victim.png")  # dangling: nothing there yet
    with pytest.raises(FileExistsError, match="symbolic link"):
        ensure_writable(output_paths(out, "slp"), overwrite=False)
    figure = Figure()
    figure.subplots().plot([0, 1], [1, 0])
    for save in (lambda: save_figure(figure, planted), lambda: save_compact_png(figure, planted)):
        with pytest.raises(FileExistsError, match="symbolic link"):
            save()
    assert not (tmp_path / "victim.png").exists()
    save_compact_png(figure, planted, overwrite=True)
    assert not planted.is_symlink() and planted.read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "victim.png").exists()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_writable([out], overwrite=True)


# -- experiment inputs (item 15) ---------------------------------------------------------------------------

def test_a_huge_class_label_is_refused_without_building_its_range(tmp_path):
    from metricc.experiments.multiclass_data import DatasetError, load_task_csv

    path = tmp_path / "labels.csv"
    path.write_text("x1,label\n" + "".join(f"{i},{i % 3}\n" for i in range(9)) + "9,1000000000\n")
    started = time.perf_counter()
    with pytest.raises(DatasetError, match="largest label, 1000000000, makes C = 1000000001"):
        load_task_csv(path, "multiclass")
    assert time.perf_counter() - started < 1.0
    path.write_text("x1,label\n" + "".join(f"{i},{i % 3}\n" for i in range(9)) + "9,inf\n")
    with pytest.raises(DatasetError, match="whole numbers"):
        load_task_csv(path, "multiclass")


def test_features_beyond_what_standardising_can_square_are_refused(tmp_path):
    from metricc.experiments.datasets import DatasetError, load_csv

    path = tmp_path / "big.csv"
    path.write_text("x1,x2,label\n" + "".join(f"{i},{(-1) ** i * 1e308},{i % 2}\n" for i in range(8)))
    with pytest.raises(DatasetError, match="column 'x2' holds 1e\\+308 \\(line 2\\)"):
        load_csv(path)


def test_a_device_that_cannot_compute_is_refused_before_training(capsys):
    from metricc.experiments.training import check_device

    for device in ("meta", "cuda:0" if not torch.cuda.is_available() else "cuda:999", "nonsense"):
        with pytest.raises(ValueError, match=f"--device {device}: cannot train there"):
            check_device(device)
    assert check_device("cpu") == torch.device("cpu")
    assert main(["experiment", "--folds", "2", "--epochs", "1", "--device", "meta", "--out", "unused", "--quiet"]) == 2
    assert "--device meta: cannot train there" in capsys.readouterr().err


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-1"])
def test_a_learning_rate_that_is_not_finite_and_positive_is_refused(lr, capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "--lr", lr])
    assert "needs a finite positive number" in capsys.readouterr().err


def test_a_loss_that_diverged_in_every_fold_is_reported_not_a_traceback():
    from metricc.experiments.report import achievement_rate

    assert np.isnan(achievement_rate(np.array([]), 1))
    assert np.isnan(achievement_rate(np.array([1.0, 0.5]), 3))
    assert achievement_rate(np.array([1.0, 0.5, 0.0]), 2) == 0.5


# -- the generated-module cache is bounded (item 16) -------------------------------------------------------

def test_the_module_cache_and_sys_modules_keep_at_most_max_modules(monkeypatch):
    monkeypatch.setattr(load, "MAX_MODULES", 3)
    first = metricc.compile_metric("TP/(TP + FN + 1)", check=False, direction="maximize")
    for k in range(2, 8):
        metricc.compile_metric(f"TP/(TP + FN + {k})", check=False, direction="maximize")
    generated = [name for name in sys.modules if name.startswith("metricc.generated.")]
    assert len(load._MODULES) == 3 and len(generated) <= 3  # evicted ones leave sys.modules too
    assert first.module.__name__ not in sys.modules
    logits, target = torch.tensor([1.0, -2.0]), torch.tensor([1, 0])
    again = metricc.compile_metric("TP/(TP + FN + 1)", check=False, direction="maximize")
    torch.testing.assert_close(first(logits, target), again(logits, target))  # an evicted module still works
    assert again.module.__name__ in sys.modules
