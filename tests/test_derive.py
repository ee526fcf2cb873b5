"""Derivation: simplification picks forms by structure, never by how fast the machine is."""

import math

import pytest
import sympy

import metricc
from metricc import simplify
from metricc.catalog import catalog
from metricc.metric import FN, FP, TN, TP, parameter_symbol

# Each took sympy.simplify over a second (one of them 7 operations long) in the property
# tests, so the budget, that is the machine's load, chose the emitted form.
SLOW_TO_SIMPLIFY = [
    63 * (FN + FP + TN + TP) ** sympy.Rational(59, 4) / 4,
    -64 * TP ** 63 + 63 * (FN + FP + TN + TP) ** sympy.Rational(59, 4) / 4,
    2 * sympy.Heaviside(2 * TP - sympy.Max(FN - 1, (FN + TN) ** sympy.Rational(63, 2))),
    FP * sympy.Heaviside(1 - FP / (FN + TN)) / (FN + TN) ** 2 + sympy.Min(TP, FP) / (FP + TN),
]


@pytest.mark.parametrize("expr", SLOW_TO_SIMPLIFY, ids=str)
def test_case_splits_and_high_or_fractional_powers_are_not_offered_to_simplify(expr, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("sympy.simplify was called")

    monkeypatch.setattr(simplify.sympy, "simplify", refuse)
    tidied = simplify.tidy(expr)
    point = {TP: 3.0, FN: 2.0, FP: 5.0, TN: 7.0}
    assert math.isclose(float(tidied.subs(point)), float(expr.subs(point)), rel_tol=1e-12)


# Focal Tversky's gradient holds a (1/gamma)-th power (3/4 by default), which is never offered to
# sympy.simplify (see SLOW_TO_SIMPLIFY); its catalog text is already in the form the code should compute.
FRACTIONAL_POWER = ("focal_tversky",)


@pytest.mark.parametrize("name", [name for name in catalog() if name not in FRACTIONAL_POWER])
def test_every_catalog_gradient_is_offered_to_simplify(name):
    derivation = metricc.derive(metricc.parse(name))
    for _, partial in derivation.partials:
        assert simplify._simplify_is_tractable(partial)
    assert simplify._simplify_is_tractable(derivation.positive_coefficient)
    assert simplify._simplify_is_tractable(derivation.negative_coefficient)


@pytest.mark.parametrize("name", FRACTIONAL_POWER)
def test_fractional_power_catalog_gradients_are_exact_and_never_offered_to_simplify(name, monkeypatch):
    original = simplify.sympy.simplify

    def refuse_fractional_powers(expr, *args, **kwargs):
        assert not any(not (2 * p.exp).is_integer for p in expr.atoms(sympy.Pow)), f"offered {expr}"
        return original(expr, *args, **kwargs)

    monkeypatch.setattr(simplify.sympy, "simplify", refuse_fractional_powers)
    derivation = metricc.derive(metricc.parse(name))
    values = {parameter_symbol(key): value for key, value in derivation.metric.params}
    point = {TP: 3.0, FN: 2.0, FP: 5.0, TN: 7.0}
    f = derivation.metric.expr.xreplace(values)
    for entry, partial in derivation.partials:
        exact = sympy.diff(f, {"TP": TP, "FN": FN, "FP": FP, "TN": TN}[entry]).subs(point)
        assert math.isclose(float(partial.xreplace(values).subs(point)), float(exact), rel_tol=1e-12,
                            abs_tol=1e-15)


@pytest.mark.parametrize("thresholds, message", [
    ([], "thresholds= is empty; give at least one threshold in (0, 1)"),
    ([0.5, 1.0], "thresholds must be numbers in (0, 1), got 1.0"),
    ([True], "thresholds must be numbers in (0, 1), got True"),
    (["0.5"], "thresholds must be numbers in (0, 1), got '0.5'"),
])
def test_threshold_lists_are_checked_with_a_message_that_names_the_value(thresholds, message):
    with pytest.raises(ValueError) as caught:
        metricc.derive(metricc.parse("f1"), "anyloss", thresholds=thresholds)
    assert str(caught.value) == message


def test_latex_holds_the_metric_and_its_factors():
    derivation = metricc.derive(metricc.parse("f1"), "anyloss")
    latex = derivation.latex()
    assert latex.count(r"\\") >= 2 and rf"f &= {sympy.latex(derivation.metric.expr)}" in latex
    assert sympy.latex(derivation.positive_coefficient) in latex
    assert sympy.latex(derivation.negative_coefficient) in latex


def test_the_chain_rule_line_sums_over_thresholds_only_where_there_are_several():
    one = metricc.derive(metricc.parse("f1"), "anyloss").text()
    several = metricc.derive(metricc.parse("f1"), "anyloss", thresholds=[0.3, 0.5]).text()
    assert "∂loss/∂z_i = ∂loss/∂ŷ_i · dŷ/dp · σ(z_i)·σ(-z_i)" in one and "Σ_t" not in one
    assert "∂loss/∂z_i = Σ_t ∂loss/∂ŷ_it · dŷ/dp at t · σ(z_i)·σ(-z_i)" in several
