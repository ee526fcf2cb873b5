"""Can this metric serve as a loss? Prove what can be proved, say "unknown" otherwise.

The report states, for any metric of the grammar:

- its range over all confusion matrices with n > 0;
- its direction: the signs of its derivative along a batch, where the labels fix
  P and N, so raising TP lowers FN and raising FP lowers TN;
- a Lipschitz bound K on |d f / d(TP/n, FP/n)| over batches whose prevalence lies
  in [π, 1 − π] (None when no finite bound exists);
- the batches that make it singular, and what the generated code does there;
- whether it is linear-fractional.

Every stated number is proved: signs by structural reasoning on the expression
(``signs.py``), sign changes and unboundedness by exact witnesses or sympy limits,
ranges by sign proofs of ``hi − f`` and ``f − lo`` or by monotonicity and exact
corner limits, Lipschitz bounds by interval branch and bound (``interval.py``).
What cannot be proved in the time budget is reported as "unknown".
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import time
import warnings

import numpy as np
import sympy

from .budget import BudgetExceeded, time_budget
from .errors import MetricCheckError, NonLipschitzWarning
from .interval import Interval, Unsupported, enclose
from .metric import CONFUSION_SYMBOLS, FN, FP, TN, TP, Metric, differentiate
from .parse import parse
from .signs import orthant_zero_sets, sign
from .simplify import tidy

UNKNOWN = "unknown"
DEFAULT_SECONDS = 3.5  # leaves room for the unbudgeted steps (parsing, sampling) inside 5 s
_STATUS_TO_MONOTONE = {"increasing": 1, "decreasing": -1, "constant": 0, "changes": 0, UNKNOWN: None}

# Batch coordinates: prevalence π, and the fractions a = TP/P, b = FP/N of positives and
# negatives predicted positive. Every confusion matrix with n = 1 is (π, a, b) in [0, 1]^3.
_PI, _A, _B = sympy.symbols("pi a b", nonnegative=True)
_BATCH = {TP: _PI * _A, FN: _PI * (1 - _A), FP: (1 - _PI) * _B, TN: (1 - _PI) * (1 - _B)}

_CONDITION_NAMES = {
    frozenset({TP, FN}): "batch without positives",
    frozenset({FP, TN}): "batch without negatives",
    frozenset({TP, FP}): "no predicted positives",
    frozenset({FN, TN}): "no predicted negatives",
    frozenset({TP, FN, FP, TN}): "empty batch",
    frozenset({TP}): "no true positives",
    frozenset({FN}): "no false negatives",
    frozenset({FP}): "no false positives",
    frozenset({TN}): "no true negatives",
    frozenset({TP, FN, FP}): "no positives and no predicted positives",
    frozenset({FN, FP, TN}): "no negatives and no predicted negatives",
    frozenset({TP, TN}): "no correct predictions",
    frozenset({FN, FP}): "no errors",
}


@dataclasses.dataclass
class Report:
    """What :func:`analyze` proved about a metric. Fields hold "unknown" where a proof failed.

    Attributes:
        metric: the analysed metric.
        range: (lo, hi) over all confusion matrices with n > 0 where the metric is
            defined: floats, None where unbounded on that side, or "unknown".
        observed_range: the smallest and largest values seen on sample matrices.
        direction: "maximize", "minimize", "neither" (not monotone) or "unknown".
        monotone: {"TP": s, "FP": s}, s the sign of the derivative along a batch:
            +1, -1, 0 (changes sign, or is identically 0), None (unknown).
        lipschitz: K with |d f/d(TP/n, FP/n)| ≤ K for prevalence in [π, 1 − π]; None
            when no finite K exists; "unknown" when neither could be proved.
        min_prevalence: π.
        singularities: conditions under which the metric or its gradient is singular,
            with what the generated code does there.
        linear_fractional: True when f = (a0 + a·CM)/(b0 + b·CM).
        homogeneous: True when f(λ·CM) = f(CM) (a function of rates, not counts).
        proofs: how each claim was established.
        warnings: properties that may hurt training, or could not be proved.
        seconds: time the analysis took.
    """

    metric: Metric
    range: tuple = (UNKNOWN, UNKNOWN)
    observed_range: tuple = (math.nan, math.nan)
    direction: str = UNKNOWN
    monotone: dict = dataclasses.field(default_factory=dict)
    lipschitz: float | None | str = UNKNOWN
    min_prevalence: float = 0.01
    singularities: list = dataclasses.field(default_factory=list)
    linear_fractional: bool | str = UNKNOWN
    homogeneous: bool | str = UNKNOWN
    proofs: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def blocking_problems(self, direction: str | None = None) -> list[str]:
        """Why the metric cannot serve as a loss; an explicit ``direction`` settles an unproved one."""
        problems = []
        lo, hi = self.range
        if lo is None or hi is None:
            problems.append(f"unbounded {'below' if lo is None else 'above'}: no loss can be built on it")
        if self.direction == "neither":
            problems.append("not monotone along a batch (neither maximize nor minimize): derivative signs "
                            f"TP {self.monotone.get('TP')}, FP {self.monotone.get('FP')}")
        elif self.direction == UNKNOWN and direction is None:
            problems.append("could not prove whether it should be maximized or minimized; pass "
                            "direction='maximize' or 'minimize' to compile it anyway")
        return problems

    @property
    def problems(self) -> list[str]:
        return self.blocking_problems()

    @property
    def ok(self) -> bool:
        """False when the metric cannot serve as a loss (unbounded, or not monotone)."""
        return not self.problems

    def problem(self) -> str:
        return "; ".join(self.problems)

    def warn(self, stacklevel: int = 2) -> None:
        """Emit the report's warnings as ``NonLipschitzWarning``s (``UserWarning``)."""
        for message in self.warnings:
            warnings.warn(f"{self.metric.name}: {message}", NonLipschitzWarning, stacklevel=stacklevel)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric.name,
            "expression": self.metric.text(),
            "params": dict(self.metric.params),
            "ok": self.ok,
            "range": list(self.range),
            "observed_range": list(self.observed_range),
            "direction": self.direction,
            "monotone": self.monotone,
            "lipschitz": self.lipschitz,
            "min_prevalence": self.min_prevalence,
            "singularities": self.singularities,
            "linear_fractional": self.linear_fractional,
            "homogeneous": self.homogeneous,
            "proofs": self.proofs,
            "problems": self.problems,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """The report as an aligned, readable table."""
        def show(value):
            if value is None:
                return "unbounded"
            if isinstance(value, float):
                return f"{value:.6g}"
            return str(value)

        monotone = ", ".join(f"{k} {'+' if v == 1 else '-' if v == -1 else '0' if v == 0 else '?'}"
                             for k, v in self.monotone.items())
        lipschitz = ("none (gradient unbounded)" if self.lipschitz is None else show(self.lipschitz))
        rows = [
            ("metric", f"{self.metric.name} = {self.metric.text()}"),
            ("verdict", "ok: usable as a loss" if self.ok else "NOT OK: " + self.problem()),
            ("range", f"[{show(self.range[0])}, {show(self.range[1])}]"
                      f"   (observed [{show(self.observed_range[0])}, {show(self.observed_range[1])}])"),
            ("direction", f"{self.direction}   (sign along a batch: {monotone})"),
            ("lipschitz", f"{lipschitz}   (prevalence in [{self.min_prevalence:g}, {1 - self.min_prevalence:g}])"),
            ("linear-fractional", show(self.linear_fractional)),
            ("scale-invariant", show(self.homogeneous)),
        ]
        for index, item in enumerate(self.singularities or ["none"]):
            rows.append(("singular" if index == 0 else "", item))
        for index, item in enumerate(self.warnings):
            rows.append(("warning" if index == 0 else "", item))
        for index, item in enumerate(self.proofs):
            rows.append(("proof" if index == 0 else "", item))
        rows.append(("time", f"{self.seconds:.2f} s"))
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


class _Deadline:
    """A wall-clock budget shared by the analysis steps."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def run(self, seconds: float, work, fallback):
        budget = min(seconds, self.left())
        if budget <= 0.01:
            return fallback
        try:
            with time_budget(budget):
                return work()
        except (BudgetExceeded, RecursionError):
            return fallback
        except Exception:  # sympy gives up in many ways (NotImplementedError, PolynomialError, ...)
            return fallback


def analyze(metric, params=None, *, min_prevalence: float = 0.01, seconds: float = DEFAULT_SECONDS) -> Report:
    """Analyse a metric: range, direction, Lipschitz bound, singular batches.

    Args:
        metric: an expression, a catalog name, a sympy expression or a ``Metric``.
        params: parameter values (override catalog defaults).
        min_prevalence: π; the Lipschitz bound covers batches with P/n in [π, 1 − π].
        seconds: time budget; what is not proved in time is reported as "unknown".

    Returns:
        A :class:`Report`.
    """
    if not 0 < min_prevalence < 0.5:
        raise ValueError(f"min_prevalence must lie in (0, 0.5), got {min_prevalence!r}")
    return analyze_metric(parse(metric, params), min_prevalence=min_prevalence, seconds=seconds)


@functools.lru_cache(maxsize=256)
def analyze_metric(metric: Metric, min_prevalence: float = 0.01, seconds: float = DEFAULT_SECONDS) -> Report:
    """:func:`analyze` for a parsed metric (cached: compile_metric calls it for every loss)."""
    started = time.monotonic()
    deadline = _Deadline(seconds)
    report = Report(metric=metric, min_prevalence=min_prevalence)
    f = _exact(metric.bound_expr())
    samples = _Samples(f)
    report.observed_range = samples.observed_range()

    report.homogeneous = _homogeneous(f, samples, deadline, report)
    positive = _along_batch(f, TP, FN, deadline)
    negative = _along_batch(f, FP, TN, deadline)
    tp_status = _derivative_status(positive, "TP", samples, deadline, report) if positive is not None else UNKNOWN
    fp_status = _derivative_status(negative, "FP", samples, deadline, report) if negative is not None else UNKNOWN
    report.monotone = {"TP": _STATUS_TO_MONOTONE[tp_status], "FP": _STATUS_TO_MONOTONE[fp_status]}
    report.direction = _direction(tp_status, fp_status)

    report.singularities = _singularities(f, deadline)
    report.range = _range(f, tp_status, fp_status, samples, deadline, report)
    if report.homogeneous is True and positive is not None and negative is not None:
        report.lipschitz = _lipschitz(positive, negative, min_prevalence, deadline, report)
    report.linear_fractional = _linear_fractional(f, deadline)

    _collect_warnings(report)
    report.seconds = time.monotonic() - started
    return report


def infer_direction(metric: Metric) -> str:
    """"maximize" or "minimize" as the analysis proves it; MetricCheckError otherwise."""
    report = analyze_metric(metric)
    if report.direction in ("maximize", "minimize"):
        return report.direction
    raise MetricCheckError(
        f"cannot tell whether {metric.name!r} should be maximized or minimized (direction: {report.direction}); "
        "pass direction='maximize' or 'minimize'", report)


# -- helpers -----------------------------------------------------------------------------

def _along_batch(f, up, down, deadline):
    """∂f/∂up − ∂f/∂down, the derivative along a batch (None if sympy cannot finish in time).

    Differentiating min/max of many terms can take sympy seconds, so even the plain
    derivative is budgeted; the simplified form gets a further, shorter budget.
    """
    derivative = deadline.run(1.0, lambda: differentiate(f, up) - differentiate(f, down), None)
    if derivative is None:
        return None
    return deadline.run(0.6, lambda: tidy(derivative, 0.3), derivative)


def _in_batch_coordinates(expr):
    """``expr`` with TP = π·a, FN = π·(1 − a), FP = (1 − π)·b, TN = (1 − π)·(1 − b), unevaluated.

    Unevaluated, because re-evaluating min/max of many terms after substitution makes
    sympy search for comparable arguments, which takes seconds.
    """
    with sympy.evaluate(False):
        return expr.xreplace(_BATCH)

# sympy's NumPy printer rewrites Heaviside (from differentiating min/max/abs) as a Piecewise
# and simplifies its conditions, which takes seconds and runs outside any time budget.
# Printing it as an opaque function and evaluating that with numpy is instant.
_FAST_HEAVISIDE = sympy.Function("_metricc_heaviside")
_NUMPY_MODULES = [{"_metricc_heaviside": lambda x: np.heaviside(x, 0.5)}, "numpy"]


def _numpy_function(variables, expr: sympy.Expr):
    """``sympy.lambdify(variables, expr, "numpy")``, without sympy's slow Heaviside printing."""
    fast = expr.replace(sympy.Heaviside, lambda *args: _FAST_HEAVISIDE(args[0]))
    return sympy.lambdify(variables, fast, modules=_NUMPY_MODULES)


def _exact(expr: sympy.Expr) -> sympy.Expr:
    """Replace floats (bound parameter values) by exact rationals, so proofs are exact."""
    return expr.xreplace({f: sympy.Rational(f) for f in expr.atoms(sympy.Float)})


class _Samples:
    """Sample confusion matrices (n = 1, corners and edges included) and f's values there."""

    def __init__(self, f: sympy.Expr, count: int = 4000, seed: int = 0):
        rng = np.random.default_rng(seed)
        grid = np.array([0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0])
        corners = np.array(list(itertools.product(grid, repeat=3)))
        random = rng.random((count, 3))
        random[: count // 4] = random[: count // 4] ** 4  # crowd some towards the faces
        self.points = np.vstack([corners, random])  # columns: π, a, b
        self.f = f
        self._functions: dict = {}

    def matrices(self, scale: float = 1.0):
        pi, a, b = self.points.T
        return (scale * pi * a, scale * pi * (1 - a), scale * (1 - pi) * b, scale * (1 - pi) * (1 - b))

    def values(self, expr: sympy.Expr, scale: float = 1.0) -> np.ndarray:
        function = self._functions.get(expr)
        if function is None:
            function = _numpy_function(CONFUSION_SYMBOLS, expr)
            self._functions[expr] = function
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                values = np.asarray(function(*self.matrices(scale)), dtype=np.float64)
            except (TypeError, ValueError, ZeroDivisionError, OverflowError):
                return np.full(len(self.points), np.nan)
        return np.broadcast_to(values, (len(self.points),)).copy()

    def observed_range(self) -> tuple[float, float]:
        values = self.values(self.f)
        finite = values[np.isfinite(values)]
        return (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)

    def exact_value(self, expr: sympy.Expr, index: int) -> sympy.Expr:
        pi, a, b = (sympy.Rational(float(v)) for v in self.points[index])
        point = {TP: pi * a, FN: pi * (1 - a), FP: (1 - pi) * b, TN: (1 - pi) * (1 - b)}
        return expr.xreplace(point)


def _degree(expr: sympy.Expr):
    """d with f(λ·CM) = λ^d·f(CM) for λ > 0, read off the expression's structure; None if it has none."""
    if expr in CONFUSION_SYMBOLS:
        return sympy.Integer(1)
    if not expr.free_symbols & set(CONFUSION_SYMBOLS):
        return sympy.Integer(0)
    if expr.is_Add or isinstance(expr, (sympy.Min, sympy.Max)):
        degrees = {_degree(a) for a in expr.args}
        return degrees.pop() if len(degrees) == 1 else None
    if expr.is_Mul:
        degrees = [_degree(a) for a in expr.args]
        return None if None in degrees else sum(degrees)
    if expr.is_Pow and expr.exp.is_number:
        degree = _degree(expr.base)
        return None if degree is None else degree * expr.exp
    if isinstance(expr, sympy.Abs):
        return _degree(expr.args[0])
    return None


def _homogeneous(f, samples, deadline, report) -> bool | str:
    """f(λ·CM) = f(CM)? Proved from the structure or by Euler's identity, refuted by an exact witness."""
    if _degree(f) == 0:
        report.proofs.append("scale-invariant: every term has degree 0 in the confusion entries")
        return True
    euler = sum(s * differentiate(f, s) for s in CONFUSION_SYMBOLS)
    if deadline.run(1.0, lambda: tidy(euler, 0.4) == 0, False):
        report.proofs.append("scale-invariant: Σ x·∂f/∂x simplifies to 0 (Euler)")
        return True
    base, scaled = samples.values(f), samples.values(f, scale=3.0)
    differ = np.flatnonzero(np.isfinite(base) & np.isfinite(scaled) & ~np.isclose(base, scaled, rtol=1e-6))
    tripled_f = f.xreplace({s: 3 * s for s in CONFUSION_SYMBOLS})
    for index in differ[:3]:
        difference = deadline.run(
            0.5, lambda index=index: (samples.exact_value(tripled_f, index) - samples.exact_value(f, index)).evalf(30),
            None)
        if difference is not None and difference.is_real and abs(difference) > 1e-20:
            report.proofs.append("not scale-invariant: f(3·CM) ≠ f(CM) at an exact sample point")
            return False
    return UNKNOWN


def _derivative_status(expr, name, samples, deadline, report) -> str:
    """"increasing", "decreasing", "constant", "changes" or "unknown" along a batch."""
    along = "TP (FN = P − TP)" if name == "TP" else "FP (TN = N − FP)"
    proved = deadline.run(1.0, lambda: sign(expr), "?")
    if proved == "0":
        report.proofs.append(f"constant in {along}: the derivative is identically 0")
        return "constant"
    values = samples.values(expr)
    finite = np.isfinite(values)
    positive_at = np.flatnonzero(finite & (values > 1e-12))
    negative_at = np.flatnonzero(finite & (values < -1e-12))
    if proved in "+-":
        report.proofs.append(f"{'increasing' if proved == '+' else 'decreasing'} in {along}: the derivative "
                             f"{'≥' if proved == '+' else '≤'} 0 wherever defined (sign structure)")
        return "increasing" if proved == "+" else "decreasing"
    if positive_at.size and negative_at.size:
        up = deadline.run(0.5, lambda: samples.exact_value(expr, positive_at[0]).evalf(30), None)
        down = deadline.run(0.5, lambda: samples.exact_value(expr, negative_at[0]).evalf(30), None)
        if up is not None and down is not None and up.is_real and down.is_real and up > 0 > down:
            report.proofs.append(f"not monotone in {along}: the derivative takes both signs at exact points")
            return "changes"
    if not positive_at.size and not negative_at.size and finite.any():
        zero = deadline.run(1.0, lambda: tidy(expr, 0.4) == 0, False)
        if zero:
            report.proofs.append(f"constant in {along}: the derivative simplifies to 0")
            return "constant"
    boxed = _sign_by_intervals(expr, deadline)
    if boxed in "+-":
        report.proofs.append(f"{'increasing' if boxed == '+' else 'decreasing'} in {along}: interval enclosures "
                             "of the derivative keep one sign over all batches")
        return "increasing" if boxed == "+" else "decreasing"
    return UNKNOWN


def _sign_by_intervals(expr, deadline, seconds: float = 0.8) -> str:
    """Prove one sign over all batches (π, a, b) in [0, 1]^3 by bisection; "?" when it cannot.

    Boxes whose enclosure has one sign are settled; the rest are split. Near points
    where the expression is singular enclosures stay unbounded, so the proof then
    runs out of time and answers "?".
    """
    batch_expr = _in_batch_coordinates(expr)
    boxes = _grid_boxes(np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]), 4)
    stop = time.monotonic() + min(seconds, max(deadline.left(), 0))
    seen = set()
    while boxes.shape[0]:
        if time.monotonic() > stop or boxes.shape[0] > 200_000:
            return "?"
        try:
            enclosure = _enclose_batch(batch_expr, boxes)
        except Unsupported:
            return "?"
        nonnegative, nonpositive = enclosure.lo >= 0, enclosure.hi <= 0
        if (nonnegative & ~nonpositive).any():
            seen.add("+")
        if (nonpositive & ~nonnegative).any():
            seen.add("-")
        if len(seen) > 1:
            return "?"
        boxes = _bisect(boxes[~(nonnegative | nonpositive)])
    return seen.pop() if seen else "?"


def _grid_boxes(bounds: np.ndarray, divisions: int) -> np.ndarray:
    """Boxes (k, 3, 2) tiling ``bounds`` (3, 2) with ``divisions`` per axis."""
    edges = [np.linspace(lo, hi, divisions + 1) for lo, hi in bounds]
    cells = []
    for i, j, k in itertools.product(range(divisions), repeat=3):
        cells.append([[edges[0][i], edges[0][i + 1]], [edges[1][j], edges[1][j + 1]], [edges[2][k], edges[2][k + 1]]])
    return np.array(cells)


def _bisect(boxes: np.ndarray) -> np.ndarray:
    """Split each box in two along its widest axis."""
    if not boxes.shape[0]:
        return boxes
    widths = boxes[:, :, 1] - boxes[:, :, 0]
    axis = widths.argmax(axis=1)
    middle = boxes[np.arange(len(boxes)), axis].mean(axis=1)
    left, right = boxes.copy(), boxes.copy()
    left[np.arange(len(boxes)), axis, 1] = middle
    right[np.arange(len(boxes)), axis, 0] = middle
    return np.concatenate([left, right])


def _enclose_batch(batch_expr, boxes) -> Interval:
    variables = {
        _PI: Interval(boxes[:, 0, 0], boxes[:, 0, 1]),
        _A: Interval(boxes[:, 1, 0], boxes[:, 1, 1]),
        _B: Interval(boxes[:, 2, 0], boxes[:, 2, 1]),
    }
    return enclose(batch_expr, variables)


def _direction(tp_status: str, fp_status: str) -> str:
    if "changes" in (tp_status, fp_status):
        return "neither"
    if UNKNOWN in (tp_status, fp_status):
        return UNKNOWN
    up = {tp_status == "increasing", fp_status == "decreasing"}
    down = {tp_status == "decreasing", fp_status == "increasing"}
    if tp_status == fp_status == "constant":
        return "neither"
    if True in up and True not in down:
        return "maximize"
    if True in down and True not in up:
        return "minimize"
    return "neither"


# -- singularities -------------------------------------------------------------------------

def _describe_zero_set(symbols: frozenset) -> str:
    names = " + ".join(s.name for s in CONFUSION_SYMBOLS if s in symbols)
    what = _CONDITION_NAMES.get(symbols, "")
    return f"{names} = 0" + (f" ({what})" if what else "")


def _label_determined(symbols: frozenset) -> bool:
    """True when the condition follows from the labels alone (P = 0, N = 0): common in mini-batches."""
    return symbols in (frozenset({TP, FN}), frozenset({FP, TN}), frozenset(CONFUSION_SYMBOLS))


def _singular_factors(expr: sympy.Expr, deadline) -> list[sympy.Expr]:
    """Factors of the numerator of ``expr``: where one vanishes, so does ``expr``.

    Denominators inside ``expr`` are negative powers, visited as nodes of their own.
    """
    numerator = sympy.fraction(sympy.together(expr))[0]

    def work():
        if numerator.is_polynomial(*CONFUSION_SYMBOLS):
            return [base for base, _ in sympy.factor_list(numerator)[1]]
        return list(sympy.Mul.make_args(numerator))

    factors = deadline.run(0.5, work, [numerator])
    return [base for base in factors if base.free_symbols & set(CONFUSION_SYMBOLS)]


def _singularities(f: sympy.Expr, deadline) -> list[str]:
    """Batch conditions under which f or its gradient is singular, and the emitted code's response."""
    divisions: dict[sympy.Expr, list | None] = {}
    logarithms: dict[sympy.Expr, list | None] = {}
    roots: dict[sympy.Expr, list | None] = {}
    kinks: set[str] = set()
    for node in sympy.preorder_traversal(f):
        if node.is_Pow and node.exp.is_number and node.base.free_symbols & set(CONFUSION_SYMBOLS):
            if node.exp.is_negative:
                target = divisions
            elif not node.exp.is_Integer and node.exp < 1:
                target = roots
            else:
                continue
            for factor in _singular_factors(node.base, deadline):
                target.setdefault(factor, orthant_zero_sets(factor))
        elif isinstance(node, sympy.log):
            for factor in _singular_factors(node.args[0], deadline):
                logarithms.setdefault(factor, orthant_zero_sets(factor))
        elif isinstance(node, (sympy.Abs, sympy.Min, sympy.Max)):
            kinks.add(f"{sympy.sstr(node)}: a kink (one-sided derivatives differ); the emitted code uses the "
                      "midpoint subgradient")

    lines = []
    for factor, zero_sets in divisions.items():
        if zero_sets is None:
            lines.append(f"{sympy.sstr(factor)} = 0: division by zero, possibly inside the domain (the factor "
                         "changes sign); the emitted code returns zero_division with zero gradient there")
            continue
        for zero_set in zero_sets:
            frequency = ("occurs in mini-batches whatever the model predicts" if _label_determined(zero_set)
                         else "needs soft predictions that are exactly 0 or 1 (saturated or clamped)")
            lines.append(f"{_describe_zero_set(zero_set)}: division by zero, {frequency}; the emitted code "
                         "returns zero_division (default 0) with zero gradient for such a batch")
    for factor, zero_sets in logarithms.items():
        for condition in _conditions(factor, zero_sets):
            lines.append(f"log at 0 when {condition}: the metric is -inf there; the emitted code returns "
                         "zero_division with zero gradient")
    for factor, zero_sets in roots.items():
        for condition in _conditions(factor, zero_sets):
            lines.append(f"root at 0: unbounded gradient when {condition}; the emitted code sets non-finite "
                         "gradients to 0 (zero_division), but gradients grow large near it")
    return list(dict.fromkeys(lines)) + sorted(kinks)


def _conditions(factor, zero_sets) -> list[str]:
    if zero_sets is None:
        return [f"{sympy.sstr(factor)} = 0"]
    return [_describe_zero_set(z) for z in zero_sets]


# -- range ---------------------------------------------------------------------------------

def _range(f, tp_status, fp_status, samples, deadline, report) -> tuple:
    lo_seen, hi_seen = report.observed_range
    if not (math.isfinite(lo_seen) and math.isfinite(hi_seen)):
        return (UNKNOWN, UNKNOWN)
    bounds = [UNKNOWN, UNKNOWN]
    for side, seen in ((0, lo_seen), (1, hi_seen)):
        candidate = _nice_bound(seen, upper=side == 1)
        gap = (candidate - f) if side == 1 else (f - candidate)
        proved = deadline.run(0.8, lambda gap=gap: sign(sympy.together(gap)), "?")
        if proved in "+0":
            bounds[side] = float(candidate)
            report.proofs.append(f"{'upper' if side else 'lower'} bound {float(candidate):g}: "
                                 f"{'hi − f' if side else 'f − lo'} ≥ 0 wherever f is defined (sign structure)")
    if UNKNOWN in bounds and report.homogeneous is True and tp_status != UNKNOWN and fp_status != UNKNOWN \
            and "changes" not in (tp_status, fp_status) and _orthant_safe(f, deadline):
        corner = _range_by_corners(f, tp_status, fp_status, deadline)
        for side in (0, 1):
            if bounds[side] == UNKNOWN and corner[side] != UNKNOWN:
                bounds[side] = corner[side]
                what = "unbounded" if corner[side] is None else f"{corner[side]:g}"
                report.proofs.append(f"{'upper' if side else 'lower'} bound {what}: f is monotone along every "
                                     "batch, so its extremes are limits at the batch corners, found exactly")
    if UNKNOWN in bounds:
        divergence = _divergence(f, samples, deadline)
        for side in (0, 1):
            if bounds[side] == UNKNOWN and divergence[side]:
                bounds[side] = None
                report.proofs.append(f"unbounded {'above' if side else 'below'}: a sympy limit toward a singular "
                                     "corner is infinite")
    return tuple(bounds)


def _nice_bound(value: float, upper: bool) -> sympy.Rational:
    """A simple rational at or beyond ``value``: the bound most worth trying to prove."""
    for denominator in (1, 2, 4, 10, 100):
        nearest = sympy.Rational(round(value * denominator), denominator)
        if abs(float(nearest) - value) <= 1e-9 * max(1.0, abs(value)):
            return nearest
    scaled = math.ceil(value * 1000) if upper else math.floor(value * 1000)
    return sympy.Rational(scaled, 1000)


def _orthant_safe(f: sympy.Expr, deadline) -> bool:
    """Every denominator, root and log argument vanishes only on faces of the orthant, never inside."""
    for node in sympy.preorder_traversal(f):
        argument = None
        if node.is_Pow and node.base.free_symbols and (node.exp.is_negative or not node.exp.is_Integer):
            argument = node.base
        elif isinstance(node, sympy.log):
            argument = node.args[0]
        if argument is None:
            continue
        for factor in _singular_factors(argument, deadline):
            if orthant_zero_sets(factor) is None:
                return False
    return True


def _range_by_corners(f, tp_status, fp_status, deadline) -> tuple:
    """Exact range of a batch-monotone, scale-invariant f: sup and inf of its corner limits.

    Along a batch with P positives and N negatives, f is monotone in TP and in FP, so on
    the box TP ∈ [0, P], FP ∈ [0, N] its supremum is the limit at one corner and its
    infimum the limit at the opposite corner. Approaching along the diagonal from the
    box's centre gives the limit; with P = r, N = 1 the corner limits are functions of
    the odds r > 0, whose extremes sympy finds exactly. Batches without positives or
    without negatives (r = 0, r = ∞) are degenerate boxes, checked on their own.
    """
    r, s = sympy.symbols("r s", positive=True)
    increasing_tp = tp_status != "decreasing"
    decreasing_fp = fp_status != "increasing"

    def path(a_corner, b_corner, positives, negatives):
        a = a_corner + s * (sympy.Rational(1, 2) - a_corner)
        b = b_corner + s * (sympy.Rational(1, 2) - b_corner)
        return f.xreplace({TP: positives * a, FN: positives * (1 - a), FP: negatives * b, TN: negatives * (1 - b)})

    def corner_limit(a_corner, b_corner, positives, negatives):
        along = path(a_corner, b_corner, positives, negatives)
        direct = along.xreplace({s: 0})
        if direct.is_finite is True and not direct.has(sympy.nan, sympy.zoo):
            return sympy.simplify(direct) if direct.free_symbols else direct
        return sympy.limit(along, s, 0, "+")

    def extreme(values: list, upper: bool):
        finite = []
        for value in values:
            if value is None or value.has(sympy.nan) or value == sympy.zoo:
                continue
            if value in (sympy.oo, -sympy.oo):
                if (value == sympy.oo) == upper:
                    return None
                continue
            finite.append(value)
        if not finite:
            return UNKNOWN
        chosen = max(finite, key=float) if upper else min(finite, key=float)
        return float(chosen)

    def side(upper: bool):
        a_corner = 1 if increasing_tp == upper else 0
        b_corner = 0 if decreasing_fp == upper else 1
        general = corner_limit(a_corner, b_corner, r, 1)
        candidates = _univariate_extremes(general, r, upper)
        if candidates is None:
            return UNKNOWN
        for positives, negatives in ((0, 1), (1, 0)):  # batches without positives / negatives
            degenerate = corner_limit(a_corner, b_corner, positives, negatives)
            if degenerate.has(s):
                return UNKNOWN
            candidates.append(degenerate)
        return extreme(candidates, upper)

    lower = deadline.run(1.2, lambda: side(False), UNKNOWN)
    upper = deadline.run(1.2, lambda: side(True), UNKNOWN)
    return lower, upper


def _univariate_extremes(g: sympy.Expr, r: sympy.Symbol, upper: bool) -> list | None:
    """Candidate extreme values of g(r) over r > 0: endpoint limits and stationary points."""
    if g.has(sympy.nan) or g == sympy.zoo:
        return None
    if not g.free_symbols:
        return [g]
    if g.free_symbols != {r}:
        return None
    values = [sympy.limit(g, r, 0, "+"), sympy.limit(g, r, sympy.oo)]
    stationary = sympy.solveset(sympy.diff(g, r), r, sympy.Interval.open(0, sympy.oo))
    if not isinstance(stationary, sympy.FiniteSet):
        if stationary == sympy.EmptySet:
            return values
        return None
    values += [g.xreplace({r: point}) for point in stationary]
    return values


def _divergence(f, samples, deadline) -> tuple[bool, bool]:
    """(unbounded below, unbounded above), proved by infinite limits toward sampled extreme points."""
    values = samples.values(f)
    finite = np.isfinite(values)
    found = [False, False]
    if not finite.any():
        return tuple(found)
    s = sympy.Symbol("s", positive=True)
    centre = {TP: sympy.Rational(1, 4), FN: sympy.Rational(1, 4), FP: sympy.Rational(1, 4), TN: sympy.Rational(1, 4)}
    order = np.argsort(np.where(finite, values, np.nan))
    lowest = [i for i in order[:3] if finite[i]]
    highest = [i for i in order[::-1] if finite[i]][:3]
    for side, indices in ((0, lowest), (1, highest)):
        for index in indices:
            pi, a, b = (sympy.Rational(float(v)) for v in samples.points[index])
            target = {TP: pi * a, FN: pi * (1 - a), FP: (1 - pi) * b, TN: (1 - pi) * (1 - b)}
            path = {k: target[k] + s * (centre[k] - target[k]) for k in CONFUSION_SYMBOLS}
            limit = deadline.run(0.5, lambda path=path: sympy.limit(f.xreplace(path), s, 0, "+"), None)
            if limit == (sympy.oo if side else -sympy.oo):
                found[side] = True
                break
    return tuple(found)


# -- Lipschitz -----------------------------------------------------------------------------

def _lipschitz(positive, negative, min_prevalence, deadline, report):
    """Sound upper bound of sqrt(g+² + g-²) over batches with prevalence in [π, 1 − π], or None."""
    # Two forms of each gradient in batch coordinates: substituted as is (sums of non-negative
    # terms, no cancellation) and cancelled (TP + FN = π, ...: fewer repeated variables). Both
    # enclosures are sound, so their intersection is too, and it is much tighter than either.
    raw = [_in_batch_coordinates(e) for e in (positive, negative)]
    cancelled = [deadline.run(0.6, lambda e=e: tidy(sympy.cancel(e), 0.2), e) for e in raw]
    pos_batch, neg_batch = cancelled
    if _gradient_diverges(pos_batch, neg_batch, min_prevalence, deadline):
        report.proofs.append("no finite Lipschitz bound: a sympy limit of the gradient toward the edge of the "
                             "batch domain is infinite")
        return None
    bounds = np.array([[min_prevalence, 1 - min_prevalence], [0.0, 1.0], [0.0, 1.0]])
    boxes = _grid_boxes(bounds, 6)
    centre_functions = [_numpy_function((_PI, _A, _B), e) for e in (pos_batch, neg_batch)]
    best = 0.0
    stop = time.monotonic() + min(1.5, max(deadline.left() - 0.3, 0))
    settled = 0.0
    tolerance = 0.05  # stop refining boxes whose bound is within 5 % of a value actually attained
    while boxes.shape[0]:
        try:
            magnitudes = [np.minimum(_enclose_batch(a, boxes).magnitude(), _enclose_batch(b, boxes).magnitude())
                          for a, b in zip(raw, cancelled)]
        except Unsupported:
            return UNKNOWN
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            upper = np.sqrt(magnitudes[0] ** 2 + magnitudes[1] ** 2) * (1 + 4 * np.finfo(float).eps)
            # The gradient at box centres and vertices: values it really takes (lower bounds on K).
            points = np.concatenate([boxes.mean(axis=2)] + [boxes[:, np.arange(3), list(corner)]
                                                           for corner in itertools.product((0, 1), repeat=3)])
            values = [np.broadcast_to(np.asarray(fn(*points.T), dtype=float), (len(points),))
                      for fn in centre_functions]
            norms = np.sqrt(values[0] ** 2 + values[1] ** 2)
        norms = norms[np.isfinite(norms)]
        if norms.size:
            best = max(best, float(norms.max()))
        open_boxes = ~(upper <= best * (1 + tolerance))
        if (~open_boxes).any():
            settled = max(settled, float(upper[~open_boxes].max()))
        boxes = boxes[open_boxes]
        if not boxes.shape[0]:
            bound = settled
            report.proofs.append(f"Lipschitz bound {bound:.6g}: interval enclosures of the gradient over all "
                                 f"batches with prevalence in [{min_prevalence:g}, {1 - min_prevalence:g}] "
                                 f"(largest value seen {best:.6g})")
            return bound
        if time.monotonic() > stop or boxes.shape[0] > 100_000:
            return UNKNOWN
        boxes = _bisect(boxes)
    return UNKNOWN


def _magnitude(function, point) -> float:
    """|function(point)|: inf where it divides by zero, nan where it is not a real number.

    numpy scalars, not Python floats: ``0.0**-0.5`` raises ZeroDivisionError and
    ``(-1.0)**(1/3)`` is complex in Python, which crashed the whole analysis.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = np.asarray(function(*(np.float64(v) for v in point)))
        except (ZeroDivisionError, OverflowError):
            return math.inf
        except (ValueError, TypeError):
            return math.nan
    if np.iscomplexobj(value) or value.size != 1:
        return math.nan
    return abs(float(value))


def _gradient_diverges(pos_batch, neg_batch, min_prevalence, deadline) -> bool:
    s = sympy.Symbol("s", positive=True)
    half = sympy.Rational(1, 2)
    prevalences = (sympy.Rational(min_prevalence), half, 1 - sympy.Rational(min_prevalence))
    targets = [(p, a, b) for p in prevalences for a in (0, half, 1) for b in (0, half, 1)]
    functions = [_numpy_function((_PI, _A, _B), e) for e in (pos_batch, neg_batch)]

    def growth(target) -> float:
        """How fast the gradient grows along the path into ``target`` (numerically; a hint only)."""
        pi, a, b = (float(v) for v in target)
        sizes = []
        for step in (1e-4, 1e-8):
            point = (pi, a + step * (0.5 - a) / 2, b + step * (0.5 - b) / 2)
            sizes.append(max(_magnitude(fn, point) for fn in functions))
        if np.isnan(sizes).any():
            return 0.0
        if not np.isfinite(sizes[1]):
            return np.inf
        return sizes[1] / sizes[0] if sizes[0] and np.isfinite(sizes[0]) else 0.0

    targets.sort(key=growth, reverse=True)
    for pi, a, b in targets[:6]:
        path = {_PI: pi, _A: a + s * (half - a) / 2, _B: b + s * (half - b) / 2}
        for expr in (pos_batch, neg_batch):
            limit = deadline.run(0.3, lambda expr=expr, path=path: sympy.limit(expr.xreplace(path), s, 0, "+"),
                                 None)
            if limit in (sympy.oo, -sympy.oo, sympy.zoo):
                return True
    return False


# -- the rest ------------------------------------------------------------------------------

def _linear_fractional(f, deadline) -> bool | str:
    def work():
        numerator, denominator = sympy.fraction(sympy.cancel(sympy.together(f)))
        for part in (numerator, denominator):
            if not part.is_polynomial(*CONFUSION_SYMBOLS):
                return False
            if sympy.Poly(part, *CONFUSION_SYMBOLS).total_degree() > 1:
                return False
        return True

    return deadline.run(0.8, work, UNKNOWN)


def _collect_warnings(report: Report) -> None:
    if report.lipschitz is None:
        report.warnings.append(f"no finite Lipschitz bound for prevalence in [{report.min_prevalence:g}, "
                               f"{1 - report.min_prevalence:g}]: the gradient is unbounded near a singular batch")
    elif report.lipschitz == UNKNOWN and report.homogeneous is True:
        report.warnings.append("Lipschitz bound unknown: not proved within the time budget")
    for side, value in zip(("lower", "upper"), report.range):
        if value == UNKNOWN:
            report.warnings.append(f"{side} end of the range unknown: not proved within the time budget")
    if report.homogeneous is not True:
        report.warnings.append("the metric depends on the batch size, not only on rates: its value and "
                               "gradient change with the batch size")
