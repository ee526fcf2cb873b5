"""Soundness of ``metricc.analyze`` on random expressions of the grammar.

Every claim the report makes is checked against the metric itself, evaluated with
50-digit arithmetic (mpmath) on sampled confusion matrices: a stated range contains
every value, a stated Lipschitz bound exceeds every finite-difference slope along a
batch, a stated direction (and per-entry monotonicity) agrees with every step along
a batch, and the analysis keeps to its time budget. One analysis per drawn
expression serves all the claims, since analyses cost seconds.
"""

import time
from fractions import Fraction

import mpmath
import sympy
from hypothesis import event, given, note
from hypothesis import strategies as st

import metricc
from metricc.analyze import analyze_metric
from metricc.metric import CONFUSION_SYMBOLS
from metricc.testing import confusion_matrices, metric_expressions, property_settings

DIGITS = 50
SLACK = 1e-9  # relative, for rounding the last of 50 digits and the bounds' own float rounding
SECONDS = 5.0


def exact_metric(metric):
    """f(TP, FN, FP, TN) at 50 digits; None where it is undefined (division by 0, log 0, complex)."""
    function = sympy.lambdify(CONFUSION_SYMBOLS, metric.bound_expr(), modules="mpmath")

    def evaluate(*entries):
        with mpmath.workdps(DIGITS):
            values = [exact(e) for e in entries]
            try:
                value = function(*values)
            except (ZeroDivisionError, ValueError, OverflowError, TypeError):
                return None
            if not isinstance(value, mpmath.mpf):
                value = mpmath.mpmathify(value)
                if not isinstance(value, mpmath.mpf):  # complex: a root or log of a negative
                    return None
            return value if mpmath.isfinite(value) else None

    return evaluate


def exact(number):
    """An int or Fraction as an mpmath number at the working precision."""
    number = Fraction(number)
    return mpmath.mpf(number.numerator) / number.denominator


def near(value, bound) -> float:
    return SLACK * max(1.0, abs(float(bound)), abs(float(value)))


fractions_of_a_class = st.one_of(st.sampled_from([Fraction(0), Fraction(1), Fraction(1, 2), Fraction(1, 10**6),
                                                  1 - Fraction(1, 10**6)]),
                                 st.fractions(min_value=0, max_value=1, max_denominator=10**6))


@st.composite
def batch_points(draw, min_prevalence: float):
    """A batch (P, N with P + N = 1 and P in [π, 1 − π]) and two nearby points (TP, FP) on it."""
    smallest = Fraction(str(min_prevalence))
    prevalence = draw(st.one_of(st.sampled_from([smallest, 1 - smallest, Fraction(1, 2)]),
                                st.fractions(min_value=smallest, max_value=1 - smallest, max_denominator=10**4)))
    a, b = draw(fractions_of_a_class), draw(fractions_of_a_class)
    step = Fraction(1, 10 ** draw(st.integers(2, 8)))
    da, db = draw(st.sampled_from([(1, 0), (0, 1), (1, 1), (1, -1), (-1, 0), (0, -1)]))
    a2 = min(max(a + da * step, Fraction(0)), Fraction(1))
    b2 = min(max(b + db * step, Fraction(0)), Fraction(1))
    return prevalence, (a, b), (a2, b2)


def at(f, prevalence, a, b):
    """f on the batch with P = prevalence, N = 1 − prevalence, TP = a·P, FP = b·N."""
    positives, negatives = prevalence, 1 - prevalence
    return f(a * positives, (1 - a) * positives, b * negatives, (1 - b) * negatives)


analysed_expressions = st.one_of(metric_expressions(max_depth=2),
                                 metric_expressions(max_depth=2, scale_invariant=True, catalog_names=False))


@property_settings(max_examples=50)
@given(analysed_expressions, st.sampled_from([0.01, 0.1]), st.lists(confusion_matrices(), min_size=10, max_size=30),
       st.data())
def test_analysis_claims_hold_on_sampled_confusion_matrices(expression, min_prevalence, matrices, data):
    metric = expression.metric()
    note(expression.call("metricc.analyze", min_prevalence=min_prevalence))
    analyze_metric.cache_clear()  # time the analysis itself, not a cached answer
    started = time.monotonic()
    report = metricc.analyze(expression.text, expression.params or None, min_prevalence=min_prevalence)
    elapsed = time.monotonic() - started
    note(f"report: range {report.range}, direction {report.direction}, monotone {report.monotone}, "
         f"lipschitz {report.lipschitz}")
    assert elapsed < SECONDS, f"analysis took {elapsed:.2f} s"
    event(f"range stated: {isinstance(report.range[0], float)}, {isinstance(report.range[1], float)}")
    event(f"direction: {report.direction}")
    event(f"lipschitz stated: {isinstance(report.lipschitz, float)}")
    f = exact_metric(metric)

    # Range: no defined value outside [lo, hi].
    lo, hi = report.range
    for matrix in matrices:
        value = f(*matrix)
        if value is None:
            continue
        if isinstance(lo, float):
            assert value >= lo - near(value, lo), f"f{matrix} = {value} < stated lower bound {lo}"
        if isinstance(hi, float):
            assert value <= hi + near(value, hi), f"f{matrix} = {value} > stated upper bound {hi}"

    # Monotonicity along a batch (P, N fixed): TP up (FN down), FP up (TN down).
    claims = {entry: sign for entry, sign in report.monotone.items() if sign in (1, -1)}
    implied = {"maximize": {"TP": 1, "FP": -1}, "minimize": {"TP": -1, "FP": 1}}.get(report.direction, {})
    for entry, sign in implied.items():  # "maximize": never decreases as TP rises or FP falls
        assert claims.setdefault(entry, sign) == sign, f"direction {report.direction} but monotone {claims}"
    for prevalence, (a, b), (a2, b2) in data.draw(st.lists(batch_points(min_prevalence), min_size=8, max_size=8)):
        first = at(f, prevalence, a, b)
        for entry, moved in (("TP", (a2, b)), ("FP", (a, b2))):
            sign = claims.get(entry)
            if sign not in (1, -1) or moved == (a, b):
                continue
            second = at(f, prevalence, *moved)
            if first is None or second is None:
                continue
            step = (moved[0] - a) if entry == "TP" else (moved[1] - b)
            change = (second - first) * (1 if step > 0 else -1)  # change per increase of the entry
            assert sign * change >= -near(first, second), (
                f"stated {'increasing' if sign == 1 else 'decreasing'} in {entry} along a batch, but on P = "
                f"{prevalence}: f(TP/P={a}, FP/N={b}) = {first}, f{moved} = {second}")

    # Lipschitz: |f(x) − f(y)| ≤ K·|x − y| for x, y on one batch, in rates TP/n and FP/n (n = 1 here).
    if isinstance(report.lipschitz, float):
        bound = report.lipschitz
        for prevalence, (a, b), (a2, b2) in data.draw(st.lists(batch_points(min_prevalence), min_size=12,
                                                               max_size=12)):
            first, second = at(f, prevalence, a, b), at(f, prevalence, a2, b2)
            if first is None or second is None or (a, b) == (a2, b2):
                continue
            with mpmath.workdps(DIGITS):
                distance = mpmath.sqrt(exact((a2 - a) * prevalence) ** 2 + exact((b2 - b) * (1 - prevalence)) ** 2)
                slope = abs(second - first) / distance
            assert slope <= bound * (1 + SLACK) + 1e-12, (
                f"slope {slope} between TP/P, FP/N = ({a}, {b}) and ({a2}, {b2}) on P = {prevalence} exceeds the "
                f"stated Lipschitz bound {bound}")


def test_analysis_of_min_over_rates_keeps_its_time_budget():
    # Regression: lambdify printed the Heaviside of d/dx min(...) through sympy's logic
    # simplifier, outside any budget: 10 to 30 s for this metric.
    analyze_metric.cache_clear()
    started = time.monotonic()
    report = metricc.analyze("min(TP/P, TN/N, PP/n)")
    assert time.monotonic() - started < SECONDS
    assert report.range[0] == 0.0


def test_analysis_survives_gradients_that_divide_by_zero_or_turn_complex_at_probe_points():
    # Regression: the divergence probe evaluated the gradient with Python floats, so
    # 0.0**-0.5 raised ZeroDivisionError and (-x)**(1/3) a complex TypeError, crashing analyze.
    for text in ("(TP/P - TN/N)**(1/3)", "(TP/n - FN/n)**2**-1"):
        report = metricc.analyze(text)
        assert report.lipschitz is None  # the gradient is unbounded where the base vanishes
