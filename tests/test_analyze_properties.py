"""Soundness of ``metricc.analyze`` on random expressions of the grammar.

Every claim the report makes is checked against the metric itself, evaluated with
50-digit arithmetic (mpmath) on sampled confusion matrices: a stated range contains
every value, a stated Lipschitz bound exceeds every finite-difference slope along a
batch, a stated direction (and per-entry monotonicity) agrees with every step along
a batch, and the analysis keeps to its time budget (in CPU time, the budget's clock).
One analysis per drawn expression serves all the claims, since analyses cost seconds.

The gate (``Report.ok``) is checked against an oracle that shares no code with metricc:
the expression *text* evaluated node by node with exact fractions (mpmath at 80 digits
for roots, logarithms and exponentials), undefined wherever the text divides by zero or
takes a root or logarithm of something negative, catalog names read from the catalog
file itself. Every accepted metric has a finite range that confusion matrices with n up
to 1e12 respect; every divergence the analysis claims is one the oracle sees.
"""

import ast
import math
import time
import tomllib
from fractions import Fraction
from pathlib import Path

import mpmath
import pytest
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


def at(f, prevalence, a, b, n=1):
    """f on the batch with P = prevalence·n, N = (1 − prevalence)·n, TP = a·P, FP = b·N."""
    positives, negatives = prevalence * n, (1 - prevalence) * n
    return f(a * positives, (1 - a) * positives, b * negatives, (1 - b) * negatives)


# Batch sizes for the monotonicity claims: a metric of counts must be monotone along every batch, not only n = 1.
batch_sizes = st.sampled_from([1, 1, Fraction(1, 1000), 7, 1000, 10**6, 10**12])


analysed_expressions = st.one_of(metric_expressions(max_depth=2),
                                 metric_expressions(max_depth=2, scale_invariant=True, catalog_names=False))


@property_settings(max_examples=50)
@given(analysed_expressions, st.sampled_from([0.01, 0.1]), st.lists(confusion_matrices(), min_size=10, max_size=30),
       st.data())
def test_analysis_claims_hold_on_sampled_confusion_matrices(expression, min_prevalence, matrices, data):
    metric = expression.metric()
    note(expression.call("metricc.analyze", min_prevalence=min_prevalence))
    analyze_metric.cache_clear()  # time the analysis itself, not a cached answer
    started = time.process_time()
    report = metricc.analyze(expression.text, expression.params or None, min_prevalence=min_prevalence)
    elapsed = time.process_time() - started
    note(f"report: range {report.range}, direction {report.direction}, monotone {report.monotone}, "
         f"lipschitz {report.lipschitz}")
    assert elapsed < SECONDS, f"analysis took {elapsed:.2f} s of CPU time"
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
        n = data.draw(batch_sizes)
        first = at(f, prevalence, a, b, n)
        for entry, moved in (("TP", (a2, b)), ("FP", (a, b2))):
            sign = claims.get(entry)
            if sign not in (1, -1) or moved == (a, b):
                continue
            second = at(f, prevalence, *moved, n)
            if first is None or second is None:
                continue
            step = (moved[0] - a) if entry == "TP" else (moved[1] - b)
            change = (second - first) * (1 if step > 0 else -1)  # change per increase of the entry
            assert sign * change >= -near(first, second), (
                f"stated {'increasing' if sign == 1 else 'decreasing'} in {entry} along a batch, but on n = {n}, "
                f"P/n = {prevalence}: f(TP/P={a}, FP/N={b}) = {first}, f{moved} = {second}")

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
    started = time.process_time()
    report = metricc.analyze("min(TP/P, TN/N, PP/n)")
    assert time.process_time() - started < SECONDS
    assert report.range[0] == 0.0


def test_analysis_survives_gradients_that_divide_by_zero_or_turn_complex_at_probe_points():
    # Regression: the divergence probe evaluated the gradient with Python floats, so
    # 0.0**-0.5 raised ZeroDivisionError and (-x)**(1/3) a complex TypeError, crashing analyze.
    for text in ("(TP/P - TN/N)**(1/3)", "(TP/n - FN/n)**2**-1"):
        report = metricc.analyze(text)
        assert report.lipschitz is None  # the gradient is unbounded where the base vanishes



# -- the gate, against an oracle that reads the text itself ----------------------------------

CATALOG_FILE = Path(__file__).resolve().parent.parent / "grammar" / "catalog.toml"
ORACLE_DIGITS = 80
LARGEST_EXACT_BITS = 50_000  # beyond this an exact fraction turns into an 80-digit float (huge powers)


class Undefined(Exception):
    """The metric as written has no real value on this batch."""


def _catalog_entries() -> dict:
    tables = tomllib.loads(CATALOG_FILE.read_text(encoding="utf-8"))
    entries = {}
    for name, table in tables.items():
        for key in [name, *table.get("aliases", [])]:
            entries[key.lower()] = table
    return entries


CATALOG_TEXT = _catalog_entries()


class OracleMetric:
    """The metric ``text`` (or catalog name) with ``params``, evaluated exactly from its syntax tree."""

    def __init__(self, text: str, params: dict | None = None):
        params = dict(params or {})
        table = CATALOG_TEXT.get(text.strip().lower()) if text.strip().isidentifier() else None
        if table is not None:
            params = {**table.get("params", {}), **params}
            text = table["expression"]
        self.text = text.strip()
        self.tree = ast.parse(self.text, mode="eval").body
        self.params = {k: Fraction(v) for k, v in params.items()}

    def __call__(self, tp, fn, fp, tn):
        """The exact value (Fraction) or an 80-digit one (mpf); None where undefined or not finite."""
        entries = {name: Fraction(v) for name, v in zip(("TP", "FN", "FP", "TN"), (tp, fn, fp, tn))}
        entries.update(P=entries["TP"] + entries["FN"], N=entries["FP"] + entries["TN"],
                       PP=entries["TP"] + entries["FP"], PN=entries["FN"] + entries["TN"],
                       n=entries["TP"] + entries["FN"] + entries["FP"] + entries["TN"])
        with mpmath.workdps(ORACLE_DIGITS):
            try:
                value = self._eval(self.tree, entries)
            except (Undefined, ZeroDivisionError, OverflowError):
                return None
            if isinstance(value, mpmath.mpf) and not mpmath.isfinite(value):
                return None
            return value

    def _eval(self, node, entries):
        if isinstance(node, ast.Constant):
            literal = ast.get_source_segment(self.text, node) or repr(node.value)
            return Fraction(literal.replace("_", ""))
        if isinstance(node, ast.Name):
            return entries[node.id] if node.id in entries else self.params[node.id]
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, entries)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, entries), self._eval(node.right, entries)
            if isinstance(node.op, ast.Pow):
                return _power(left, right)
            if isinstance(node.op, ast.Div):
                if right == 0:
                    raise Undefined("division by zero")
                return _small(left / right if _exact(left, right) else _mp(left) / _mp(right))
            if _exact(left, right):
                return _small(left + right if isinstance(node.op, ast.Add) else
                              left - right if isinstance(node.op, ast.Sub) else left * right)
            left, right = _mp(left), _mp(right)
            return left + right if isinstance(node.op, ast.Add) else left - right if isinstance(
                node.op, ast.Sub) else left * right
        if isinstance(node, ast.Call):
            args = [self._eval(a, entries) for a in node.args]
            name = node.func.id
            if name in ("min", "max"):
                chosen = (min if name == "min" else max)(args, key=_mp)
                return chosen
            (x,) = args
            if name == "abs":
                return abs(x)
            if name == "exp":
                return mpmath.exp(_mp(x))
            if name == "sqrt":
                if x < 0:
                    raise Undefined("root of a negative number")
                return mpmath.sqrt(_mp(x))
            if name == "log":
                if x <= 0:
                    raise Undefined("logarithm of a number ≤ 0")
                return mpmath.log(_mp(x))
        raise AssertionError(f"the oracle does not know {ast.dump(node)}")


def _exact(*values) -> bool:
    return all(isinstance(v, Fraction) for v in values)


def _mp(value):
    return mpmath.mpf(value.numerator) / value.denominator if isinstance(value, Fraction) else mpmath.mpf(value)


def _small(value):
    """A fraction too long to compute with exactly becomes an 80-digit number."""
    if isinstance(value, Fraction) and max(value.numerator.bit_length(), value.denominator.bit_length()) \
            > LARGEST_EXACT_BITS:
        return _mp(value)
    return value


def _power(base, exponent):
    if isinstance(exponent, Fraction) and exponent.denominator == 1:
        k = int(exponent)
        if base == 0 and k < 0:
            raise Undefined("zero to a negative power")
        if isinstance(base, Fraction) and abs(k) * max(base.numerator.bit_length(), base.denominator.bit_length(),
                                                          1) <= LARGEST_EXACT_BITS:
            return base ** k
        return _mp(base) ** k
    if base < 0:
        raise Undefined("a non-integer power of a negative number")
    if base == 0:
        if exponent < 0:
            raise Undefined("zero to a negative power")
        return Fraction(0)
    return mpmath.power(_mp(base), _mp(exponent))


def test_the_oracle_agrees_with_definitions_and_knows_where_metrics_are_undefined():
    f1 = OracleMetric("f1_score")
    assert f1(7, 3, 2, 13) == Fraction(14, 19)  # exactly
    assert OracleMetric("fbeta", {"beta": 2.0})(3, 1, 2, 4) == Fraction(15, 21)
    assert OracleMetric("(FP/FP)*TP/(TP+FN)")(1, 1, 0, 1) is None  # undefined where written: FP = 0
    assert OracleMetric("(FP/FP)*TP/(TP+FN)")(1, 1, 2, 1) == Fraction(1, 2)
    assert OracleMetric("sqrt(TP - FP)")(0, 0, 1, 0) is None and OracleMetric("log(TP/n)")(0, 1, 1, 1) is None
    with mpmath.workdps(ORACLE_DIGITS):
        assert abs(OracleMetric("gmean")(7, 3, 2, 13) - mpmath.sqrt(mpmath.mpf(91) / 150)) < mpmath.mpf(10) ** -70
    assert OracleMetric("(TP**64)**2/n**128")(10**12, 1, 1, 1) < 1  # huge powers stay cheap


# Expressions the gate should often accept (rates) and often refuse (counts, poles, logs).
gate_expressions = st.one_of(
    metric_expressions(max_depth=2, scale_invariant=True),
    metric_expressions(max_depth=2, catalog_names=False),
    metric_expressions(max_depth=3, scale_invariant=True, catalog_names=False),
)
# Confusion matrices of every size up to n = 1e12: each entry up to 10**k, k drawn.
large_matrices = st.integers(0, 12).flatmap(lambda k: confusion_matrices(max_count=max(10**k // 4, 1)))


@property_settings(max_examples=40)
@given(gate_expressions, st.lists(large_matrices, min_size=20, max_size=40))
def test_every_metric_the_gate_accepts_has_a_proved_finite_range_that_matrices_up_to_n_1e12_respect(
        expression, matrices):
    note(expression.call("metricc.analyze"))
    try:
        report = metricc.analyze(expression.text, expression.params or None)
    except metricc.MetricCheckError as refused:  # the call's CPU budget (issue 22) ran out: refused, in bounded time
        assert "did not finish within" in str(refused)
        event("gate: out of time")
        return
    note(f"report: ok {report.ok}, range {report.range}, problems {report.problems}")
    event(f"gate: {'accepts' if report.ok else 'refuses'}")
    f = OracleMetric(expression.text, expression.params)
    if report.ok:
        lo, hi = report.range
        assert isinstance(lo, float) and isinstance(hi, float) and math.isfinite(lo) and math.isfinite(hi), (
            "accepted without a proved finite range")
        assert report.direction in ("maximize", "minimize")
        for matrix in matrices:
            value = f(*matrix)
            if value is None:
                continue
            value = _mp(value)
            slack = SLACK * max(1.0, abs(lo), abs(hi), abs(float(value)))
            assert lo - slack <= value <= hi + slack, f"f{matrix} = {value} outside the proved range [{lo}, {hi}]"
    for side, family in report.divergence.items():  # every divergence claimed is real
        event(f"divergence proved: {family.kind}")
        near, far = (10**8, 10**40) if family.toward == sympy.oo else (Fraction(1, 10**8), Fraction(1, 10**40))
        values = []
        for t in (near, far):
            point = [Fraction(str(sympy.Rational(e))) for e in family.at(sympy.Rational(t)).values()]
            values.append(f(*point))
        assert None not in values, f"{family.description()}: the metric is undefined along the family"
        grew = _mp(values[1]) - _mp(values[0])
        assert (grew > 1 if side == "above" else grew < -1), (
            f"{family.description()}: f = {values[0]} at t = {near}, {values[1]} at t = {far}")


@pytest.mark.parametrize("text", ["TP - FP", "TP", "TP/FP", "8/TP", "1/(TP-FP)", "1+3*((TP+2*FP+3*FN)/TN)",
                                  "log(TP-FP)", "TP/(1 + TP**2)", "(TP-FP)/(TP-FP)*TP/P", "sqrt(TP/n - FP/n)**2",
                                  "(TP + TN)/(FP + FN)", "TP*FN/n**2", "log(TP/n)", "exp(TP/FN)",
                                  "TP/(TP - FP + n)", "sqrt(TP - FP + FN)/n"])
def test_the_gate_refuses_metrics_that_cannot_serve_as_losses_for_reasons_the_oracle_confirms(text):
    report = metricc.analyze(text)
    assert not report.ok
    f = OracleMetric(text)
    for side, family in report.divergence.items():
        near, far = (10**8, 10**40) if family.toward == sympy.oo else (Fraction(1, 10**8), Fraction(1, 10**40))
        values = [_mp(f(*[Fraction(str(sympy.Rational(e))) for e in family.at(sympy.Rational(t)).values()]))
                  for t in (near, far)]
        assert (values[1] - values[0] > 1) if side == "above" else (values[1] - values[0] < -1), family
