"""Derivation: simplification picks forms by structure, never by how fast the machine is."""

import math

import pytest
import sympy

import metricc
from metricc import simplify
from metricc.catalog import catalog
from metricc.metric import FN, FP, TN, TP

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


@pytest.mark.parametrize("name", list(catalog()))
def test_every_catalog_gradient_is_offered_to_simplify(name):
    derivation = metricc.derive(metricc.parse(name))
    for _, partial in derivation.partials:
        assert simplify._simplify_is_tractable(partial)
    assert simplify._simplify_is_tractable(derivation.positive_coefficient)
    assert simplify._simplify_is_tractable(derivation.negative_coefficient)
