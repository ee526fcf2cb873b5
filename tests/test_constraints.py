"""Constraints and group metrics: the language, the analysis's checks, the derivation, the CLI, the emitted module."""

import builtins
import importlib.util
import warnings

import pytest
import sympy
import torch

import metricc
from metricc.cli import main as cli_main
from metricc.constraints import parse_constraint, parse_constraints, split_problem
from metricc.groups import GROUP_SYMBOLS, expand_groups, group_entry_symbols, group_form
from metricc.metric import FN, FP, TP
from metricc.problem import check_problem, make_problem

TPR = "TP[g]/(TP[g]+FN[g])"
GAP = f"max_g({TPR}) - min_g({TPR})"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


# ---------------------------------------------------------------------------------------------
# The language


@pytest.mark.parametrize("text, expected", [
    ("precision >= 0.9", [(TP / (TP + FP), ">=", 0.9)]),
    ("0.9 <= precision", [(TP / (TP + FP), ">=", 0.9)]),
    ("FP/(FP+TN) <= 0.01", [(FP / (FP + metricc.metric.TN), "<=", 0.01)]),
    ("0.8 <= precision <= 0.95", [(TP / (TP + FP), ">=", 0.8), (TP / (TP + FP), "<=", 0.95)]),
    ("recall >= precision", [(TP / (TP + FN) - TP / (TP + FP), ">=", 0.0)]),
])
def test_constraints_read_as_an_expression_a_sense_and_a_level(text, expected):
    constraints = parse_constraint(text)
    assert [(sympy.simplify(c.metric.expr - e) == 0, c.sense, c.level) for c, (e, _, _) in zip(constraints, expected)] \
        == [(True, sense, level) for _, sense, level in expected]


def test_a_catalog_name_in_a_constraint_takes_its_parameters_from_params():
    (constraint,) = parse_constraint("fbeta >= 0.5", {"beta": 2.0})
    assert dict(constraint.metric.params) == {"beta": 2.0}


def test_subject_to_splits_the_objective_from_constraints_joined_by_commas_or_and():
    objective, constraints = split_problem("recall subject to precision >= 0.9, FP/N <= 0.1 and TP/n >= 0.01")
    assert objective == "recall" and [c.text for c in constraints] == ["precision >= 0.9", "FP/N <= 0.1",
                                                                       "TP/n >= 0.01"]
    assert [c.metric.name for c in constraints] == ["constraint_1", "constraint_2", "constraint_3"]
    assert split_problem("2*TP/(2*TP+FP+FN)") is None


@pytest.mark.parametrize("text, message, column", [
    ("recall subject to precision > 0.9", "write >=", 18),
    ("recall subject to precision == 0.9", "write two constraints", 18),
    ("recall subject to precision >= 0.9 or recall <= 1", "joined by ',' or 'and'", 18),
    ("recall subject to precison >= 0.9", "did you mean 'precision'", 18),
    ("recall subject to precision >= 0.9, FX <= 1", "did you mean 'FP' or 'FN'", 36),
    ("recall subject to 1 <= 2", "compares two constants", 23),
    ("recall subject to", "needs at least one constraint", 7),
    ("subject to precision >= 0.9", "needs an objective", 0),
    ("recall subject to precision", "a comparison with <= or >=", 18),
])
def test_bad_constraints_are_refused_with_the_column_in_the_text_as_written(text, message, column):
    with pytest.raises(metricc.MetricSyntaxError, match=message) as info:
        metricc.compile_metric(text)
    assert info.value.column == column and info.value.text == text


def test_a_comparison_in_a_metric_points_to_constraints():
    with pytest.raises(metricc.MetricSyntaxError, match="pass it as constraints="):
        metricc.parse("TP/P >= 0.5")


def test_constraints_must_be_strings():
    with pytest.raises(metricc.MetricSyntaxError, match="a constraint must be a string"):
        parse_constraints([0.9])


@pytest.mark.parametrize("text", [GAP, "max_g(abs(PP[g]/n[g] - PP/n))", "mean_g(recall[g])", f"{TPR} - TP/P",
                                  "min_g(fbeta[g]) + sum_g(FP[g]/n[g])"])
def test_group_expressions_print_back_to_themselves(text):
    metric = metricc.parse(text)
    assert metricc.parse(metric.text()).expr == metric.expr


def test_group_reductions_split_into_placeholders_shared_between_equal_reductions():
    form = group_form(metricc.parse(f"{GAP} + max_g({TPR})").expr)
    assert [r.kind for r in form.reductions] == ["min", "max"] and not form.per_group
    assert len(form.outer.free_symbols) == 2
    assert metricc.parse("sum_g(FP[g])/n").text() == "FP/(FN + FP + TN + TP)"  # a linear sum is the batch's entry


def test_expanding_over_groups_writes_the_reductions_out():
    expanded = expand_groups(metricc.parse(GAP).expr, 2)
    tp0, fn0, _, _ = group_entry_symbols(0)
    tp1, fn1, _, _ = group_entry_symbols(1)
    values = {tp0: 3, fn0: 1, tp1: 1, fn1: 1}
    assert expanded.subs(values) == sympy.Rational(3, 4) - sympy.Rational(1, 2)
    assert set(GROUP_SYMBOLS).isdisjoint(expanded.free_symbols)


@pytest.mark.parametrize("text, message", [
    ("max_g(TP/P)", "reads no group entry"),
    ("TP[0]/P", "only the group index g"),
    ("max_g(min_g(TP[g]))", "cannot be nested"),
    ("max_g(TP[g], FN[g])", "takes exactly 1 argument"),
    ("foo[g]", "'foo' cannot be indexed by g"),
    ("TP/P + g", "'g' alone is not a value"),
])
def test_bad_group_expressions_are_refused(text, message):
    with pytest.raises(metricc.MetricSyntaxError, match=message):
        metricc.parse(text)


def test_group_entries_need_groups_and_an_objective_must_reduce_them():
    with pytest.raises(metricc.MetricSyntaxError, match="pass groups= with the number of groups"):
        metricc.compile_metric("accuracy", constraints=[f"{GAP} <= 0.05"])
    with pytest.raises(metricc.MetricSyntaxError, match="outside a group reduction"):
        metricc.compile_metric(TPR, groups=2)
    with pytest.raises(ValueError, match="groups must be the number of groups"):
        metricc.compile_metric("accuracy", groups=0, constraints=[f"{GAP} <= 0.05"])


# ---------------------------------------------------------------------------------------------
# The analysis


def test_a_constraint_that_can_never_hold_is_refused_with_its_range():
    with pytest.raises(metricc.MetricCheckError, match=r"it can never hold: TP/\(FP \+ TP\) lies in \[0, 1\] on every "
                                                       r"batch, so it is never >= 1.5; choose a level within \[0, 1\]"):
        metricc.compile_metric("recall", constraints=["precision >= 1.5"])
    with pytest.raises(metricc.MetricCheckError, match="it can never hold"):
        metricc.compile_metric("accuracy", groups=2, constraints=[f"{GAP} <= -0.1"])


def test_a_constraint_the_analysis_cannot_bound_is_refused_with_the_reason():
    with pytest.raises(metricc.MetricCheckError, match="constraint 'TP - FP >= 2': unbounded.*divide by n"):
        metricc.compile_metric("recall", constraints=["TP - FP >= 2"])


def test_a_constraint_that_always_holds_is_reported():
    with pytest.warns(metricc.errors.ConstraintWarning, match="always holds"):
        metricc.compile_metric("recall", constraints=["precision >= 0"])


def test_group_metrics_are_bounded_by_composing_their_pieces():
    report = check_problem(make_problem("accuracy", constraints=[f"{GAP} <= 0.05", "max_g(abs(PP[g]/n[g] - PP/n)) "
                                                                 "<= 0.1", f"{TPR} - TP/P <= 0.05"], groups=3))
    assert report.ok
    assert [c.report.range for c in report.constraints] == [(0.0, 1.0), (0.0, 1.0), (-1.0, 1.0)]
    worst = metricc.analyze("max_g(FP[g]/(FP[g]+TN[g]))")
    assert worst.ok and worst.direction == "minimize" and worst.range == (0.0, 1.0)
    for analysed in (worst, *[c.report for c in report.constraints]):
        lo, hi = analysed.range
        assert lo <= analysed.observed_range[0] and analysed.observed_range[1] <= hi


def test_a_group_metric_with_an_unproved_direction_needs_one_as_an_objective():
    with pytest.raises(metricc.MetricCheckError, match="pass direction='maximize' or direction='minimize'"):
        metricc.compile_metric(GAP, groups=2)
    loss_fn = metricc.compile_metric(GAP, groups=2, direction="minimize")
    assert loss_fn.derivation.direction == "minimize"


# ---------------------------------------------------------------------------------------------
# The derivation and the generated module


def test_the_derivation_prints_the_lagrangian_and_every_partial():
    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.9"])
    text = loss_fn.derivation.text()
    assert "Lagrangian  L = 1 - f + λ_1·(0.9 - c_1)" in text
    assert "c_1+ = FP/(FP + TP)**2" in text and "c_1- = -TP/(FP + TP)**2" in text
    assert "y_i = 1:  ∂L/∂ŷ_i = w_i·(-f+ − λ_1·c_1+)" in text
    latex = loss_fn.derivation.latex()
    assert latex.startswith("\\begin{align*}") and r"\lambda_{1}" in latex
    grouped = metricc.compile_metric("accuracy", groups=2, constraints=[f"{GAP} <= 0.05"]).derivation.text()
    assert "reduction   r2 = max_g h_1(g)" in grouped and "h_1+_g = 1/(FN[g] + TP[g])" in grouped


def _import_without_metricc(path):
    spec = importlib.util.spec_from_file_location("generated_problem", path)
    module = importlib.util.module_from_spec(spec)
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name.split(".")[0] in {"metricc", "sympy", "numpy"}:
            raise ImportError(f"the standalone module must not import {name}")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = guarded
    try:
        spec.loader.exec_module(module)
    finally:
        builtins.__import__ = real_import
    return module


def test_the_cli_writes_a_module_and_a_standalone_file_that_give_the_compiled_loss(tmp_path, capsys):
    constraint = f"{GAP} <= 0.05"
    plain, standalone = tmp_path / "gap.py", tmp_path / "gap_standalone.py"
    assert cli_main(["compile", "accuracy", "--groups", "2", "--constraint", constraint, "-o", str(plain)]) == 0
    assert cli_main(["compile", "accuracy", "--groups", "2", "--constraint", constraint, "--multiplier-lr", "0.2",
                     "--standalone", "-o", str(standalone)]) == 0
    assert "imports metricc.lagrangian" in capsys.readouterr().err
    source = plain.read_text()
    body = source[source.index("METRIC_SOURCE"):]
    assert len([line for line in body.splitlines() if line.strip()]) <= 120
    module = _import_without_metricc(standalone)
    reference = metricc.compile_metric("accuracy", groups=2, constraints=[constraint], multiplier_lr=0.2)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(30, generator=generator, dtype=torch.float64)
    target = (torch.rand(30, generator=generator) < 0.5).double()
    groups = torch.randint(0, 2, (30,), generator=generator)
    results = []
    for loss_fn in (module.AccuracyLoss(), reference):
        for _ in range(3):  # three steps: the multipliers move alike
            z = logits.clone().requires_grad_(True)
            loss = loss_fn(z, target, groups=groups)
            loss.backward()
        results.append((loss.detach(), z.grad, loss_fn.multipliers.clone()))
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert results[0][2].item() > 0


def test_the_cli_checks_and_derives_constraints(capsys):
    assert cli_main(["check", GAP, "--groups", "2"]) == 2  # a spread: no direction, as an objective
    assert "pass --direction maximize or --direction minimize" in capsys.readouterr().out
    assert cli_main(["check", GAP, "--groups", "2", "--direction", "minimize"]) == 0
    assert cli_main(["check", f"{GAP} <= 0.05", "--groups", "2"]) == 0
    assert "range         [0, 1]" in capsys.readouterr().out
    assert cli_main(["check", "precision >= 1.5"]) == 2
    assert "it can never hold" in capsys.readouterr().out
    assert cli_main(["check", "f1", "--constraint", "precision >= 0"]) == 1  # it always holds: a warning
    assert cli_main(["derive", "recall", "--constraint", "precision >= 0.9"]) == 0
    assert "Lagrangian" in capsys.readouterr().out
    assert cli_main(["compile", "recall subject to precision >= 1.5"]) == 2
    assert "--no-check" in capsys.readouterr().err
    assert cli_main(["compile", "accuracy", "--constraint", f"{GAP} <= 0.05"]) == 2
    assert "pass --groups" in capsys.readouterr().err
