"""Can this metric serve as a loss? Prove what can be proved, say what was tried otherwise.

The report states, for any metric of the grammar:

- its range over all confusion matrices with n > 0 where the metric is defined, or a
  family of batches along which it diverges (then that end is None);
- its direction: the signs of its derivative along a batch, where the labels fix
  P and N, so raising TP lowers FN and raising FP lowers TN;
- where it is defined: poles and invalid arguments (a root or logarithm of something
  negative) inside the domain, with a batch that shows them; the denominators the user
  wrote that simplification removed (``Metric.domain``);
- a Lipschitz bound K on |d f / d(TP/n, FP/n)| over batches whose prevalence lies
  in [π, 1 − π] (None when no finite bound exists);
- the batches that make it singular, and what the generated code does there;
- whether it is linear-fractional.

A metric serves as a loss (``Report.ok``) when its range is proved finite, its direction
is proved, and it is defined on every batch except on faces of the domain (batches
without positives, without predicted positives, ...), where ``zero_division`` applies.

Every stated number is proved: signs by structural reasoning on the expression
(``signs.py``), sign changes, poles and unboundedness by exact witnesses or sympy limits
(``domain.py``), ranges by sign proofs of ``hi − f`` and ``f − lo`` or by monotonicity
and exact corner limits, Lipschitz bounds by interval branch and bound (``interval.py``).
What cannot be proved is reported as "unknown", with what was tried; "not proved within
the time budget" only where a time budget did run out.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import math
import numbers
import time
import warnings
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import sympy

from . import curves, groups, limits
from . import domain as _domain
from .budget import budgets_available, cpu_time, expirations, try_within
from .errors import (
    BatchSizeWarning,
    DomainWarning,
    MetricCheckError,
    MetricWarning,
    NonLipschitzWarning,
    Option,
    Part,
    RangeWarning,
    Spelling,
    render,
)
from .interval import Interval, Unsupported, enclose
from .limits import call_budget
from .metric import CONFUSION_SYMBOLS, FN, FP, TN, TP, Metric, differentiate, scale_degree, to_text
from .parse import parse, written_domain
from .signs import face_zero_sets, sign
from .simplify import tidy

UNKNOWN = "unknown"
DEFAULT_SECONDS = 3.5  # CPU seconds; leaves room for the unbudgeted steps (parsing, sampling) inside 5 s
_STATUS_TO_MONOTONE = {"increasing": 1, "decreasing": -1, "constant": 0, "changes": 0, UNKNOWN: None}
_SIDES = ("below", "above")

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
            defined: floats, None where unbounded on that side (``divergence`` holds the
            proof), or "unknown".
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
        divergence: {"below": family, "above": family}: batches along which f → ∓∞
            (:class:`metricc.domain.Family`), for each unbounded end.
        domain_problems: poles and invalid arguments inside the domain, each as message
            parts (what, where, what to do instead).
        unproved: claim → what was tried, for each claim left "unknown".
        proofs: how each claim was established.
        findings: (warning class, message parts) for each property that may hurt training.
        seconds: time the analysis took (wall clock).
        cpu_seconds: CPU time it took: what its budget bounds, whatever else the machine runs.
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
    divergence: dict = dataclasses.field(default_factory=dict)
    domain_problems: list = dataclasses.field(default_factory=list)
    range_problems: list = dataclasses.field(default_factory=list)
    unproved: dict = dataclasses.field(default_factory=dict)
    zero_division_batches: list = dataclasses.field(default_factory=list)
    proofs: list = dataclasses.field(default_factory=list)
    findings: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def all_findings(self, zero_division: float | None = 0.0) -> list[tuple[type[MetricWarning], tuple]]:
        """(warning class, message parts) for every finding, given the loss's ``zero_division``."""
        extra = _zero_division_finding(self, zero_division)
        return list(self.findings) + ([(RangeWarning, extra)] if extra else [])

    @property
    def warnings(self) -> list[str]:
        """The findings' messages (with the default zero_division=0): properties that may hurt training."""
        return [render(parts) for _, parts in self.all_findings()]

    def problem_parts(self, direction: str | None = None) -> list[tuple[Part, ...]]:
        """Why the metric cannot serve as a loss, each with the options it suggests (see ``errors.Option``).

        An explicit ``direction`` settles an unproved one.
        """
        problems = list(self.domain_problems) + list(self.range_problems)
        if self.direction == "neither":
            problems.append(("not monotone along a batch (neither maximize nor minimize): derivative signs "
                             f"TP {self.monotone.get('TP')}, FP {self.monotone.get('FP')}",))
        elif self.direction == UNKNOWN and direction is None:
            tried = ", and ".join(self.unproved[k] for k in ("TP", "FP") if k in self.unproved)
            problems.append(("could not prove whether it should be maximized or minimized"
                             + (f": {tried}" if tried else "") + "; pass ", Option("direction", "maximize"),
                             " or ", Option("direction", "minimize"), " to compile it anyway"))
        return problems

    def blocking_problems(self, direction: str | None = None, spell: Spelling = Option.python) -> list[str]:
        """Why the metric cannot serve as a loss; an explicit ``direction`` settles an unproved one."""
        return [render(parts, spell) for parts in self.problem_parts(direction)]

    @property
    def problems(self) -> list[str]:
        return self.blocking_problems()

    @property
    def ok(self) -> bool:
        """True when the metric can serve as a loss: finite proved range, proved direction, and no pole
        or invalid argument inside the domain except on faces, where zero_division applies."""
        return not self.problem_parts()

    def problem(self) -> str:
        return "; ".join(self.problems)

    def error(self, direction: str | None = None) -> MetricCheckError | None:
        """The error ``compile_metric`` raises for this metric (None when it can serve as a loss).

        Its options render as keyword arguments (``str(error)``) or as command-line flags
        (``error.render(spell)``).
        """
        problems = self.problem_parts(direction)
        if not problems:
            return None
        parts: list[Part] = [f"metric {self.metric.name!r} cannot serve as a loss: "]
        for index, problem in enumerate(problems):
            parts += (["; "] if index else []) + list(problem)
        parts += ["; pass ", Option("check", False), " to compile it anyway"]
        return MetricCheckError(parts, self)

    def warn(self, stacklevel: int = 2, *, zero_division: float | None = None,
             categories: tuple[type[MetricWarning], ...] | None = None) -> None:
        """Emit the findings as warnings, each of its own class under :class:`metricc.MetricWarning`.

        ``NonLipschitzWarning`` (gradient bound), ``RangeWarning`` (range: the loss's
        ``zero_division``, when given, lies outside it), ``BatchSizeWarning`` (depends on
        counts, not rates), ``DomainWarning`` (undefined where the simplified expression
        does not show). ``categories`` limits the warnings to those classes.
        """
        findings = self.findings if zero_division is None else self.all_findings(zero_division)
        for category, parts in findings:
            if categories is None or issubclass(category, tuple(categories)):
                warnings.warn(category((f"{self.metric.name}: ", *parts)), stacklevel=stacklevel)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric.name,
            "expression": self.metric.text(),
            "params": dict(self.metric.params),
            "domain": [to_text(e) for e in self.metric.domain],
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
            "divergence": {side: family.description() for side, family in self.divergence.items()},
            "proofs": self.proofs,
            "unproved": self.unproved,
            "problems": self.problems,
            "warnings": self.warnings,
            "warning_classes": [category.__name__ for category, _ in self.all_findings()],
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self, spell: Spelling = Option.python, direction: str | None = None) -> str:
        """The report as an aligned, readable table (options in problems spelt by ``spell``); an explicit
        ``direction`` settles an unproved one, as in :meth:`problem_parts`."""
        def show(value):
            if value is None:
                return "unbounded"
            if isinstance(value, float):
                return f"{value:.6g}"
            return str(value)

        monotone = ", ".join(f"{k} {'+' if v == 1 else '-' if v == -1 else '0' if v == 0 else '?'}"
                             for k, v in self.monotone.items())
        lipschitz = ("none (gradient unbounded)" if self.lipschitz is None else show(self.lipschitz))
        problems = self.blocking_problems(direction, spell=spell)
        given = f" (given: {direction})" if direction and direction != self.direction else ""
        rows = [
            ("metric", f"{self.metric.name} = {self.metric.text()}"),
            ("verdict", "ok: usable as a loss" if not problems else "NOT OK: cannot serve as a loss"),
        ]
        for index, item in enumerate(problems):
            rows.append(("problem" if index == 0 else "", item))
        rows += [
            ("range", f"[{show(self.range[0])}, {show(self.range[1])}]"
                      f"   (observed [{show(self.observed_range[0])}, {show(self.observed_range[1])}])"),
            ("direction", f"{self.direction}{given}   (sign along a batch: {monotone})"),
            ("lipschitz", f"{lipschitz}   (prevalence in [{self.min_prevalence:g}, {1 - self.min_prevalence:g}])"),
            ("linear-fractional", show(self.linear_fractional)),
            ("scale-invariant", show(self.homogeneous)),
        ]
        for index, item in enumerate(self.singularities or ["none"]):
            rows.append(("singular" if index == 0 else "", item))
        for index, (category, parts) in enumerate(self.all_findings()):
            rows.append(("warning" if index == 0 else "", f"{render(parts, spell)} ({category.__name__})"))
        for index, item in enumerate(self.proofs):
            rows.append(("proof" if index == 0 else "", item))
        rows.append(("time", f"{self.seconds:.2f} s ({self.cpu_seconds:.2f} s CPU)"))
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _zero_division_outside(bounds: tuple, zero_division: float | None) -> bool:
    lo, hi = bounds
    if zero_division is None or not isinstance(lo, float) or not isinstance(hi, float):
        return False
    return not lo <= zero_division <= hi


class _Deadline:
    """A CPU-time budget shared by the analysis steps (see ``budget``); counts the steps a budget cut short.

    Each step runs in a budget of its own, never past the shared deadline; no new step starts once
    the shared budget is spent. Where budgets cannot interrupt running work (an interpreter without
    ``PyThreadState_SetAsyncExc``), a step runs to completion.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = cpu_time() + seconds
        self.expired = 0  # steps cut short by their own budget or by the shared one

    def left(self) -> float:
        return self.end - cpu_time()

    def run(self, seconds: float, work, fallback):
        budget = min(seconds, self.left())
        if budget <= 0.01:
            self.expired += 1
            return fallback
        before = expirations()
        try:
            # sympy gives up in many ways (NotImplementedError, PolynomialError, ...): "unknown" too
            return try_within(budget, work, fallback, failures=(Exception,))
        finally:
            if expirations() > before:
                self.expired += 1

    def ran_out(self, since: int) -> str:
        """"; …" naming the time budget when a step ran out of it since ``since`` (``self.expired`` then)."""
        if self.expired <= since:
            return ""
        if not budgets_available():
            return (f"; not proved within the time budget ({self.seconds:g} s of CPU time; this interpreter "
                    "cannot stop a running step, so later steps were skipped)")
        return f"; not proved within the time budget ({self.seconds:g} s of CPU time in all, less for each step)"


def check_min_prevalence(value) -> float:
    """π as a float in (0, 0.5): the Lipschitz bound covers prevalences in [π, 1 − π], an empty or inverted
    interval for any other π (0.9 gave a "proved" bound over [0.9, 0.1]). analyze and compile_metric both ask."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < 0.5:
        raise ValueError(f"min_prevalence must lie in (0, 0.5), got {value!r}")
    return float(value)


def analyze(metric: str | Metric | sympy.Expr, params: Mapping[str, float] | None = None, *,
            min_prevalence: float = 0.01, seconds: float = DEFAULT_SECONDS) -> Report:
    """Analyse a metric: range, direction, where it is defined, Lipschitz bound, singular batches.

    Args:
        metric: an expression, a catalog name, a sympy expression or a ``Metric``.
        params: parameter values (override catalog defaults).
        min_prevalence: π; the Lipschitz bound covers batches with P/n in [π, 1 − π].
        seconds: CPU-time budget; what is not proved within it is reported as "unknown".

    Returns:
        A :class:`Report`.
    """
    min_prevalence = check_min_prevalence(min_prevalence)
    with call_budget("analyze", max(limits.CALL_SECONDS, seconds + limits.CALL_SECONDS - DEFAULT_SECONDS)):
        return analyze_metric(parse(metric, params), min_prevalence=min_prevalence, seconds=seconds)


def analyze_metric(metric: Metric, min_prevalence: float = 0.01, seconds: float = DEFAULT_SECONDS) -> Report:
    """:func:`analyze` for a parsed metric. The analysis is cached (compile_metric calls it for every loss);
    every caller gets its own copy of the report, so that changing one cannot change the next."""
    report = _analyze_metric_cached(metric, min_prevalence, seconds)
    return copy.deepcopy(report, {id(report.metric): report.metric})  # the Metric is frozen: shared


@functools.lru_cache(maxsize=256)
def _analyze_metric_cached(metric: Metric, min_prevalence: float, seconds: float) -> Report:
    if curves.is_curve(metric.expr):
        return _analyze_curve(metric, min_prevalence, seconds)
    if groups.has_group_entries(metric.expr):
        from .analyze_groups import analyze_group_metric

        return analyze_group_metric(metric, None, min_prevalence, seconds)
    started, started_cpu = time.monotonic(), cpu_time()
    deadline = _Deadline(seconds)
    report = Report(metric=metric, min_prevalence=min_prevalence)
    f = _exact(metric.bound_expr())
    written = tuple(_exact(e) for e in metric.bound_domain())
    if f.has(sympy.zoo, sympy.nan, sympy.oo) or any(e.is_zero for e in written):
        values = ", ".join(f"{k} = {v:g}" for k, v in metric.params) or "none"
        report.domain_problems.append((f"with its parameter values ({values}) the expression divides by zero on "
                                       "every batch; choose other values",))
        report.seconds, report.cpu_seconds = time.monotonic() - started, cpu_time() - started_cpu
        return report
    samples = _Samples(f, written)

    report.homogeneous = _homogeneous(f, samples, deadline, report)
    if report.homogeneous is not True:  # values depend on the scale: look at small and large batches too
        samples = samples.with_scales((1e-3, 1.0, 10.0, 1e3, 1e6))
    report.observed_range = samples.observed_range()
    positive = _along_batch(f, TP, FN, deadline)
    negative = _along_batch(f, FP, TN, deadline)
    statuses = {}
    for name, derivative in (("TP", positive), ("FP", negative)):
        if derivative is None:
            statuses[name] = UNKNOWN
            report.unproved[name] = (f"the derivative along a batch in {name} did not finish"
                                     f"{deadline.ran_out(-1)}")
        else:
            statuses[name] = _derivative_status(derivative, name, samples, deadline, report)
    tp_status, fp_status = statuses["TP"], statuses["FP"]
    report.monotone = {"TP": _STATUS_TO_MONOTONE[tp_status], "FP": _STATUS_TO_MONOTONE[fp_status]}
    report.direction = _direction(tp_status, fp_status)

    faces, zeros = _check_domain(f, written, deadline, report)
    report.singularities = _singularities(f, deadline) + _written_singularities(metric)
    report.range = _range(f, written, faces, zeros, tp_status, fp_status, samples, deadline, report)
    if report.homogeneous is True and positive is not None and negative is not None:
        report.lipschitz = _lipschitz(positive, negative, min_prevalence, deadline, report)
    report.linear_fractional = _linear_fractional(f, deadline)

    _collect_findings(report)
    report.seconds, report.cpu_seconds = time.monotonic() - started, cpu_time() - started_cpu
    return report


analyze_metric.cache_clear = _analyze_metric_cached.cache_clear  # type: ignore[attr-defined]


def _analyze_curve(metric: Metric, min_prevalence: float, seconds: float) -> Report:
    """A metric of the curve over the thresholds, curve_area(Y, X) or curve_sum(Y, X) (docs/curves.md).

    Y and X are analysed as metrics of their own, each with half the budget. The curve's value is
    Σ_k ΔX_k·(a mean of Y's), ΔX_k = X_k − X_{k+1} over thresholds ascending from the all-positive end
    to the all-negative one. Where X lies in [0, 1] and does not decrease as TP or FP grows (FPR,
    recall), every ΔX_k ≥ 0, because a relaxation's soft predictions do not grow with the threshold,
    and Σ ΔX_k ≤ 1: the value lies within [min(0, Y's lower end), max(0, Y's upper end)] and moves
    with Y, so it takes Y's direction. Otherwise nothing is claimed and the gate refuses it.
    """
    started, started_cpu = time.monotonic(), cpu_time()
    kind, y, x = curves.curve_parts(metric.expr) or (None, None, None)  # a curve: analyze_metric checked
    report = Report(metric=metric, min_prevalence=min_prevalence)
    parts = {}
    for name, expr in (("Y", y), ("X", x)):
        part = dataclasses.replace(metric, expr=expr, name=f"{metric.name}_{name}", direction=None, domain=())
        parts[name] = analyze_metric(part, min_prevalence, seconds / 2)
        text = to_text(expr)
        report.domain_problems += [(f"the curve's {name} = {text}: ", *problem)
                                   for problem in parts[name].domain_problems]
        report.range_problems += [(f"the curve's {name} = {text}: ", *problem)
                                  for problem in parts[name].range_problems]
        report.singularities += [f"{name}: {singularity}" for singularity in parts[name].singularities]
    report.singularities.append("a batch with one class only has no curve (TPR or FPR is 0/0 at every threshold "
                                "for ROC): the loss takes zero_division and gives no gradient")
    y_report, x_report = parts["Y"], parts["X"]
    x_lo, x_hi = x_report.range
    along = [_sign_along(x, up, down) for up, down in ((TP, FN), (FP, TN))]
    x_runs_down = (isinstance(x_lo, (int, float)) and isinstance(x_hi, (int, float)) and 0 <= x_lo and x_hi <= 1
                   and all(s in ("+", "0") for s in along) and along != ["0", "0"])
    if not x_runs_down:
        report.range_problems.append((f"the curve's X = {to_text(x)} must lie in [0, 1] and not decrease as TP or "
                                      f"FP grows (as FPR and recall do; here its range is {x_report.range} and its "
                                      f"signs along TP and FP are {along[0]} and {along[1]}), so that the curve runs "
                                      "from the all-positive end to the all-negative one",))
    y_lo, y_hi = y_report.range
    if x_runs_down and all(isinstance(v, (int, float)) for v in (y_lo, y_hi)):
        report.range = (min(0.0, float(y_lo)), max(0.0, float(y_hi)))
        report.direction, report.monotone = y_report.direction, dict(y_report.monotone)
        report.proofs.append(f"{kind}: every ΔX ≥ 0 (X in [0, 1], signs along TP and FP {along}), Σ ΔX ≤ 1, so the "
                             f"value lies in [min(0, {y_lo}), max(0, {y_hi})] and follows Y ({y_report.direction})")
    report.observed_range = y_report.observed_range
    report.homogeneous = y_report.homogeneous is True and x_report.homogeneous is True
    report.linear_fractional = False
    report.unproved["lipschitz"] = "a Lipschitz bound is not derived for metrics of the curve"
    report.findings = list(y_report.findings) + [f for f in x_report.findings if f not in y_report.findings]
    report.seconds, report.cpu_seconds = time.monotonic() - started, cpu_time() - started_cpu
    return report


def _sign_along(expr, up, down) -> str:
    """The sign of ∂expr/∂up − ∂expr/∂down wherever defined: "+", "-", "0" or "?"."""
    derivative = tidy(differentiate(expr, up) - differentiate(expr, down))
    return "0" if derivative == 0 else sign(derivative)


def infer_direction(metric: Metric) -> str:
    """"maximize" or "minimize" as the analysis proves it; MetricCheckError otherwise."""
    report = analyze_metric(metric)
    if report.direction in ("maximize", "minimize"):
        return report.direction
    raise MetricCheckError(
        [f"cannot tell whether {metric.name!r} should be maximized or minimized (direction: {report.direction}); "
         "pass ", Option("direction", "maximize"), " or ", Option("direction", "minimize")], report)


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
    """Sample confusion matrices (corners and edges included) and f's values there.

    Points are (π, a, b, scale): the batch with n = scale. A metric that is not
    scale-invariant is sampled at several scales (:meth:`with_scales`). Points where the
    metric is undefined as written (a ``Metric.domain`` entry vanishes) count as undefined.
    """

    def __init__(self, f: sympy.Expr, written: tuple = (), count: int = 4000, seed: int = 0):
        rng = np.random.default_rng(seed)
        grid = np.array([0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0])
        corners = np.array(list(itertools.product(grid, repeat=3)))
        random = rng.random((count, 3))
        random[: count // 4] = random[: count // 4] ** 4  # crowd some towards the faces
        points = np.vstack([corners, random])  # columns: π, a, b
        self.points = np.hstack([points, np.ones((len(points), 1))])
        self.f = f
        self.written = written
        self._functions: dict = {}
        self._defined: np.ndarray | None = None

    def with_scales(self, scales) -> _Samples:
        scaled = _Samples.__new__(_Samples)
        scaled.__dict__.update(self.__dict__)
        base = self.points[self.points[:, 3] == 1.0]
        scaled.points = np.vstack([np.hstack([base[:, :3], np.full((len(base), 1), s)]) for s in scales])
        scaled._functions = dict(self._functions)
        scaled._defined = None
        return scaled

    def matrices(self, scale: float = 1.0):
        pi, a, b, n = self.points.T
        n = n * scale
        return (n * pi * a, n * pi * (1 - a), n * (1 - pi) * b, n * (1 - pi) * (1 - b))

    def _raw(self, expr: sympy.Expr, scale: float) -> np.ndarray:
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

    def defined(self) -> np.ndarray:
        """Where every written-domain entry is non-zero (numerically)."""
        if self._defined is None:
            mask = np.ones(len(self.points), dtype=bool)
            for entry in self.written:
                values = self._raw(entry, 1.0)
                mask &= np.isfinite(values) & (values != 0)
            self._defined = mask
        return self._defined

    def values(self, expr: sympy.Expr, scale: float = 1.0) -> np.ndarray:
        values = self._raw(expr, scale)
        values[~self.defined()] = np.nan
        return values

    def observed_range(self) -> tuple[float, float]:
        values = self.values(self.f)
        finite = values[np.isfinite(values)]
        return (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)

    def exact_point(self, index: int) -> dict:
        pi, a, b, n = (sympy.Rational(float(v)) for v in self.points[index])
        return {TP: n * pi * a, FN: n * pi * (1 - a), FP: n * (1 - pi) * b, TN: n * (1 - pi) * (1 - b)}

    def exact_value(self, expr: sympy.Expr, index: int) -> sympy.Expr:
        return expr.xreplace(self.exact_point(index))


def _homogeneous(f, samples, deadline, report) -> bool | str:
    """f(λ·CM) = f(CM)? Proved from the structure or by Euler's identity, refuted by an exact witness."""
    if scale_degree(f) == 0:
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
    """"increasing", "decreasing", "constant", "changes" or "unknown" along a batch.

    Witnesses of a sign change must lie where the metric itself is defined (log(TP − FP)
    has a derivative at TP < FP, but no value). Interval bisection in batch coordinates
    covers n = 1 only, so it proves a sign only for scale-invariant metrics.
    """
    along = "TP (FN = P − TP)" if name == "TP" else "FP (TN = N − FP)"
    since = deadline.expired
    proved = deadline.run(1.0, lambda: sign(expr), "?")
    if proved == "0":
        report.proofs.append(f"constant in {along}: the derivative is identically 0")
        return "constant"
    defined = np.isfinite(samples.values(samples.f))
    values = samples.values(expr)
    finite = np.isfinite(values) & defined
    positive_at = np.flatnonzero(finite & (values > 1e-12))
    negative_at = np.flatnonzero(finite & (values < -1e-12))
    if proved in "+-":
        report.proofs.append(f"{'increasing' if proved == '+' else 'decreasing'} in {along}: the derivative "
                             f"{'≥' if proved == '+' else '≤'} 0 wherever defined (sign structure)")
        return "increasing" if proved == "+" else "decreasing"
    if positive_at.size and negative_at.size:
        def exact(index):
            value = samples.exact_value(expr, index).evalf(30)
            defined_there = _domain.exact_value(samples.f, samples.exact_point(index)) is not None
            return value if defined_there else None

        up = deadline.run(0.5, lambda: exact(positive_at[0]), None)
        down = deadline.run(0.5, lambda: exact(negative_at[0]), None)
        if up is not None and down is not None and up.is_real and down.is_real and up > 0 > down:
            report.proofs.append(f"not monotone in {along}: the derivative takes both signs at exact points")
            return "changes"
    if not positive_at.size and not negative_at.size and finite.any():
        zero = deadline.run(1.0, lambda: tidy(expr, 0.4) == 0, False)
        if zero:
            report.proofs.append(f"constant in {along}: the derivative simplifies to 0")
            return "constant"
    tried = f"sign structure, {int(finite.sum())} sampled batches"
    if report.homogeneous is True:
        boxed = _sign_by_intervals(expr, deadline)
        if boxed in "+-":
            report.proofs.append(f"{'increasing' if boxed == '+' else 'decreasing'} in {along}: interval "
                                 "enclosures of the derivative keep one sign over all batches")
            return "increasing" if boxed == "+" else "decreasing"
        tried += ", interval bisection over all batches"
    report.unproved[name] = (f"the sign of its derivative along a batch in {name} is unknown (tried {tried})"
                             f"{deadline.ran_out(since)}")
    return UNKNOWN


def _sign_by_intervals(expr, deadline, seconds: float = 0.8) -> str:
    """Prove one sign over all batches (π, a, b) in [0, 1]^3 by bisection; "?" when it cannot.

    Boxes whose enclosure has one sign are settled; the rest are split. Near points
    where the expression is singular enclosures stay unbounded, so the proof then
    runs out of time and answers "?".
    """
    batch_expr = _in_batch_coordinates(expr)
    boxes = _grid_boxes(np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]), 4)
    stop = cpu_time() + min(seconds, max(deadline.left(), 0))
    seen = set()
    while boxes.shape[0]:
        if cpu_time() > stop or boxes.shape[0] > 200_000:
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


# -- where the metric is defined -------------------------------------------------------------

def _written_defined(written: tuple):
    """``defined(point)``: every written-domain entry is non-zero at the exact batch ``point``."""
    def defined(point: dict) -> bool:
        for entry in written:
            value = _domain.exact_value(entry, point)
            if value is None or value == 0:
                return False
        return True

    return defined


def _check_domain(f, written, deadline, report) -> tuple[list[frozenset], list[tuple]]:
    """Poles and invalid arguments inside the domain, as blocking problems with witnesses.

    Returns the faces where a denominator or logarithm argument vanishes (zero_division
    applies there; the range looks for divergence toward them) and the interior zeros
    found (factor, batch), toward which the range looks too.
    """
    faces: set[frozenset] = set()
    zeros: list[tuple] = []
    seen: set = set()
    raw_sources = written_domain(report.metric)
    written_sources = {bound: raw_sources.get(raw) for raw, bound in zip(report.metric.domain, written)}
    # Where a root's argument is negative, the written sign conditions fail by definition: witnesses of a
    # negative argument need only the written denominators to be non-zero.
    defined = _written_defined(tuple(e for e in written if getattr(written_sources.get(e), "needs", "") != "positive"))
    arguments = _domain.singular_arguments(f)
    for entry in written:
        source = written_sources.get(entry)
        # a root or logarithm that simplification removed (its argument must be > 0)
        if source is not None and source.needs == "positive" and source.argument is not None:
            argument = _exact(source.argument.subs(report.metric.param_symbols))
            arguments.append(("written root", argument, source))
        else:
            arguments.append(("written", entry, source))
    for what, argument, source in arguments:
        if (what, argument) in seen:
            continue
        seen.add((what, argument))
        if what in ("root", "log", "written root"):
            written_as = (f"the expression as written takes a root or logarithm of {to_text(argument)} (in "
                          f"{source.segment}, which simplification removed)") if what == "written root" else None
            if not _check_sign(what, argument, defined, deadline, report, written_as) or what == "root":
                continue  # a logarithm of something negative: its zeros are not the point
        for factor in _domain.zero_factors(argument, deadline.run):
            if (factor, "zero") in seen:
                continue
            seen.add((factor, "zero"))
            zero_sets = face_zero_sets(factor)
            if zero_sets is not None:
                faces.update(zero_sets)
                continue
            witness = _domain.interior_zero(factor, deadline.run)
            if witness is not None and len(witness) == 1:
                zeros.append((factor, witness[0], "logarithm" if what == "log" else "denominator"))
            report.domain_problems.append(_pole_problem(what, argument, factor, witness, source))
    faces_in_order = sorted(faces, key=lambda s: (len(s), sorted(map(str, s))))
    report.zero_division_batches = [_describe_zero_set(face) for face in faces_in_order] + [
        (source.describe() if (source := raw_sources.get(entry)) else f"{to_text(entry)} = 0")
        for entry in report.metric.domain]
    return faces_in_order, zeros


def _pole_problem(what, argument, factor, witness, source) -> tuple[str, ...]:
    if sympy.expand(factor + argument) == 0:
        factor = argument  # show it as written: TP - FP rather than the factor FP - TP
    if what in ("log", "written root"):
        head = (f"logarithm of {to_text(argument)}" if what == "log" else
                f"the expression as written takes a logarithm or a root in a denominator of {to_text(argument)} "
                f"(in {source.segment}, which simplification removed)")
        fix = "take the logarithm of something positive on every batch, such as 1 + a rate"
    else:
        fix = "divide by a sum of confusion entries (such as TP + FP), or add a positive constant"
    if what == "written":
        head = (f"the expression as written divides by {to_text(factor)}"
                + (f" (in {source.segment}, which simplification removed)" if source else ""))
    elif what not in ("log", "written root"):
        head = f"division by {to_text(argument)}"
    if witness is None:
        return (f"{head}: could not prove that {to_text(factor)} vanishes only on faces of the domain (batches "
                "without positives, without predicted positives, ...), where zero_division applies (tried its "
                f"sign structure, solving for each entry, and small batches); {fix}",)
    return (f"{head}: {_domain.describe_zero(factor, witness)}, inside the domain, where zero_division cannot "
            f"stand in (it covers only faces: batches without positives, without predicted positives, ...); {fix}",)


def _root_argument_proved_nonnegative(argument, what) -> bool:
    """``argument`` ≥ 0 by its sign structure; a root's also over one common denominator: focal Tversky's
    ``1 - TP/(TP + a*FP + b*FN)`` mixes signs term by term but is ``(a*FP + b*FN)/(TP + a*FP + b*FN)``. A
    logarithm's argument is not combined: where it vanishes the metric is not a number (``log(1 + TP/n -
    FP/n)`` stays refused)."""
    if _domain.proved_nonnegative(argument):
        return True
    if what != "root":  # a logarithm, or a root or logarithm that simplification removed
        return False
    combined = sympy.together(argument)
    return combined != argument and _domain.proved_nonnegative(combined)


def _check_sign(what, argument, defined, deadline, report, written_as: str | None = None) -> bool:
    """A root or logarithm of ``argument``: it must be ≥ 0 wherever the metric is otherwise defined.

    Returns True when proved; otherwise adds the problem (with a negative batch where one is found).
    """
    if deadline.run(1.0, lambda: _root_argument_proved_nonnegative(argument, what), False):
        return True
    name = "logarithm" if what == "log" else "root"
    head = written_as or f"{name} of {to_text(argument)}"
    witness = _domain.negative_witness(argument, defined, deadline.run)
    if witness is not None:
        value = _domain.exact_value(argument, witness)
        report.domain_problems.append(
            (f"{head}, which is negative ({_domain._show(value)}) at "
             f"{_domain.describe_batch(witness)}: the metric is not a real number on such batches, and "
             "zero_division covers only faces of the domain; take the "
             f"{name} of something non-negative on every batch (a sum of confusion entries, or abs(...))",))
        return False
    report.domain_problems.append(
        (f"{head}: could not prove that {to_text(argument)} is ≥ 0 on every batch (tried its sign "
         "structure and small batches); the metric may not be a real number somewhere inside the domain",))
    return False


def _describe_zero_set(symbols: frozenset) -> str:
    names = " + ".join(s.name for s in CONFUSION_SYMBOLS if s in symbols)
    what = _CONDITION_NAMES.get(symbols, "")
    return f"{names} = 0" + (f" ({what})" if what else "")


def _label_determined(symbols: frozenset) -> bool:
    """True when the condition follows from the labels alone (P = 0, N = 0): common in mini-batches."""
    return symbols in (frozenset({TP, FN}), frozenset({FP, TN}), frozenset(CONFUSION_SYMBOLS))


def _singular_factors(expr: sympy.Expr, deadline) -> list[sympy.Expr]:
    return _domain.zero_factors(expr, deadline.run)


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
                target.setdefault(factor, face_zero_sets(factor))
        elif isinstance(node, sympy.log):
            for factor in _singular_factors(node.args[0], deadline):
                logarithms.setdefault(factor, face_zero_sets(factor))
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


def _written_singularities(metric: Metric) -> list[str]:
    """The written domain (``Metric.domain``): what simplification changed, and what the loss keeps."""
    sources = written_domain(metric)
    lines = []
    for entry in metric.domain:
        source = sources.get(entry)
        where = source.describe() if source else f"{to_text(entry)} = 0"
        changed = f"simplified {source.segment}" if source else "simplified away a denominator, root or logarithm"
        lines.append(f"{changed}: the metric is undefined where {where}, which the generated loss keeps "
                     "(zero_division there)")
    return lines


def _conditions(factor, zero_sets) -> list[str]:
    if zero_sets is None:
        return [f"{sympy.sstr(factor)} = 0"]
    return [_describe_zero_set(z) for z in zero_sets]


# -- range ---------------------------------------------------------------------------------

def _range(f, written, faces, zeros, tp_status, fp_status, samples, deadline, report) -> tuple:
    """(lo, hi): proved bounds, None for an end along which a family of batches diverges, or "unknown"."""
    since = deadline.expired
    lo_seen, hi_seen = report.observed_range
    bounds: list = [UNKNOWN, UNKNOWN]
    tried: list[list[str]] = [[], []]
    for side, seen in ((0, lo_seen), (1, hi_seen)):
        if not math.isfinite(seen):
            tried[side].append("no sampled batch gave a finite value to start a sign proof from")
            continue
        candidate = _nice_bound(seen, upper=side == 1)
        gap = (candidate - f) if side == 1 else (f - candidate)
        before = deadline.expired
        proved = deadline.run(0.8, lambda gap=gap: sign(sympy.together(gap)), "?")
        outcome = "cut short by the time budget" if deadline.expired > before else "inconclusive"
        if proved in "+0":
            bounds[side] = float(candidate)
            report.proofs.append(f"{'upper' if side else 'lower'} bound {float(candidate):g}: "
                                 f"{'hi − f' if side else 'f − lo'} ≥ 0 wherever f is defined (sign structure)")
        else:
            tried[side].append(f"a sign proof of {'hi − f' if side else 'f − lo'} ≥ 0 with "
                               f"{'hi' if side else 'lo'} = {float(candidate):g} ({outcome})")
    if UNKNOWN in bounds:
        reason = _corners_not_applicable(f, tp_status, fp_status, report, deadline)
        before = deadline.expired
        corner = _range_by_corners(f, tp_status, fp_status, deadline) if reason is None else (UNKNOWN, UNKNOWN)
        outcome = "cut short by the time budget" if deadline.expired > before else "inconclusive"
        for side in (0, 1):
            if bounds[side] != UNKNOWN:
                continue
            if corner[side] != UNKNOWN:
                bounds[side] = corner[side]
                what = "unbounded" if corner[side] is None else f"{corner[side]:g}"
                report.proofs.append(f"{'upper' if side else 'lower'} bound {what}: f is monotone along every "
                                     "batch, so its extremes are limits at the batch corners, found exactly")
            else:
                tried[side].append("exact limits at the batch corners" + (f" (not applicable: {reason})"
                                                                          if reason else f" ({outcome})"))
    if UNKNOWN in bounds or None in bounds:  # look for divergence, or a family to show for the corners' proof
        wanted = (bounds[0] in (UNKNOWN, None), bounds[1] in (UNKNOWN, None))
        before = deadline.expired
        found, count = _domain.divergent_families(f, _written_defined(written), faces, zeros, report.homogeneous,
                                                  deadline.run, wanted, extra=_sampled_families(f, samples))
        for side, family in found.items():
            bounds[side] = None
            report.divergence[_SIDES[side]] = family
            report.proofs.append(f"unbounded {'above' if side else 'below'}: {family.description()} (a sympy "
                                 "limit, confirmed with 30-digit values along the family)")
        scalings = "" if report.homogeneous is True else ", scalings of the whole batch"
        outcome = "none found before the time budget ran out" if deadline.expired > before else "none found"
        for side in (0, 1):
            if bounds[side] == UNKNOWN:
                tried[side].append(f"{count} families of batches (toward singular batches{scalings} and extreme "
                                   f"samples) for an infinite limit ({outcome})")
    report.range_problems += _range_problems(f, bounds, tried, deadline.ran_out(since), report)
    return tuple(bounds)


def _range_problems(f, bounds, tried, ran_out: str, report) -> list[tuple[str, ...]]:
    problems: list[tuple[str, ...]] = []
    unbounded = [side for side in (1, 0) if bounds[side] is None]
    if unbounded:
        text = report.metric.text()
        text = text if text.isidentifier() else f"({text})"
        descriptions, fixes = [], []
        for side in unbounded:
            family = report.divergence.get(_SIDES[side])
            if family is None:  # proved by the corners' exact limits; no family of batches was confirmed
                descriptions.append("the exact limit of f at a corner of the batch domain is infinite")
                fixes.append("a denominator vanishes on batches where the numerator does not: add a constant to "
                             "the denominator, or include the numerator's terms in it (as TP/(TP + FP) does)")
            else:
                descriptions.append(family.description())
                fixes.append(_domain.fix_for(family, f, scale_degree(f), text))
        if len(unbounded) == 2 and fixes[0] == fixes[1]:
            problems.append((f"unbounded above and below: {descriptions[0]}, and {descriptions[1]}; {fixes[0]}",))
        else:
            for side, description, fix in zip(unbounded, descriptions, fixes):
                problems.append((f"unbounded {'above' if side else 'below'}: {description}; {fix}",))
    for side in (0, 1):
        if bounds[side] == UNKNOWN:
            report.unproved[f"range {'upper' if side else 'lower'}"] = "; ".join(tried[side])
            problems.append((f"could not prove {'an upper' if side else 'a lower'} bound (tried "
                             f"{'; '.join(tried[side])}){ran_out}",))
    return problems


def _sampled_families(f, samples) -> list:
    """Paths from the centre of the batch toward the sampled batches with the most extreme values."""
    values = samples.values(f)
    finite = np.isfinite(values)
    if not finite.any():
        return []
    order = np.argsort(np.where(finite, values, np.nan))
    lowest = [i for i in order[:3] if finite[i]]
    highest = [i for i in order[::-1] if finite[i]][:3]
    t = _domain.T
    families = []
    for index in lowest + highest:
        # Grid values as the simple rationals they stand for (0.01 → 1/100), so the family reads well.
        pi, a, b, scale = (sympy.Rational(Fraction(float(v)).limit_denominator(10**4)) for v in samples.points[index])
        target = {TP: scale * pi * a, FN: scale * pi * (1 - a), FP: scale * (1 - pi) * b,
                  TN: scale * (1 - pi) * (1 - b)}
        families.append(_domain.Family(tuple(target[s] + t * (scale / 4 - target[s]) for s in CONFUSION_SYMBOLS),
                                       sympy.Integer(0), "sample"))
    return families


def _nice_bound(value: float, upper: bool) -> sympy.Rational:
    """A simple rational at or beyond ``value``: the bound most worth trying to prove."""
    for denominator in (1, 2, 4, 10, 100):
        nearest = sympy.Rational(round(value * denominator), denominator)
        if abs(float(nearest) - value) <= 1e-9 * max(1.0, abs(value)):
            return nearest
    scaled = math.ceil(value * 1000) if upper else math.floor(value * 1000)
    return sympy.Rational(scaled, 1000)


def _corners_not_applicable(f, tp_status, fp_status, report, deadline) -> str | None:
    """Why the batch-corner method cannot bound f (None when it can)."""
    if report.homogeneous is not True:
        return "f depends on the batch size"
    if UNKNOWN in (tp_status, fp_status) or "changes" in (tp_status, fp_status):
        return "f is not proved monotone along a batch"
    if report.domain_problems or not _orthant_safe(f, deadline):
        return "a denominator, root or logarithm may vanish inside the domain"
    return None


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
            if face_zero_sets(factor) is None:
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
    stop = cpu_time() + min(1.5, max(deadline.left() - 0.3, 0))
    settled = 0.0
    tolerance = 0.05  # stop refining boxes whose bound is within 5 % of a value actually attained
    while boxes.shape[0]:
        try:
            magnitudes = [np.minimum(_enclose_batch(a, boxes).magnitude(), _enclose_batch(b, boxes).magnitude())
                          for a, b in zip(raw, cancelled)]
        except Unsupported as unsupported:
            report.unproved["lipschitz"] = (f"interval arithmetic cannot enclose {unsupported} in the gradient, "
                                            "so no bound was attempted")
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
        if cpu_time() > stop:
            deadline.expired += 1
            report.unproved["lipschitz"] = (f"interval bisection of the gradient did not settle {len(boxes)} boxes "
                                            f"(largest value seen {best:.6g}); not proved within the time budget "
                                            f"({deadline.seconds:g} s of CPU time in all, 1.5 s for this step)")
            return UNKNOWN
        if boxes.shape[0] > 100_000:
            report.unproved["lipschitz"] = (f"interval bisection of the gradient needed more than 100,000 boxes "
                                            f"(largest value seen {best:.6g})")
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


def _zero_division_finding(report: Report, zero_division: float | None) -> tuple | None:
    """A ``zero_division`` value outside the proved range: the loss on undefined batches is one no batch reaches."""
    if not report.zero_division_batches or not _zero_division_outside(report.range, zero_division):
        return None
    lo, hi = report.range
    inside = lo if lo > 0 or hi < 0 else 0.0
    return (f"zero_division={zero_division!r} lies outside the metric's range [{lo:g}, {hi:g}]: on batches where "
            f"the metric is undefined ({'; '.join(report.zero_division_batches)}) the loss takes a value no other "
            "batch reaches; pass ", Option("zero_division", inside), f" (or another value in [{lo:g}, {hi:g}])")


def _collect_findings(report: Report) -> None:
    findings = report.findings
    if report.lipschitz is None:
        findings.append((NonLipschitzWarning, (
            f"no finite Lipschitz bound for prevalence in [{report.min_prevalence:g}, "
            f"{1 - report.min_prevalence:g}]: the gradient is unbounded near a singular batch",)))
    elif report.lipschitz == UNKNOWN and report.homogeneous is True:
        tried = report.unproved.get("lipschitz", "the gradient could not be formed")
        findings.append((NonLipschitzWarning, (f"Lipschitz bound unknown: {tried}",)))
    if report.homogeneous is False:
        findings.append((BatchSizeWarning, ("the metric depends on the batch size, not only on rates: its value "
                                            "and gradient change with the batch size",)))
    elif report.homogeneous == UNKNOWN:
        findings.append((BatchSizeWarning, ("could not prove that the metric depends only on rates (Euler's "
                                            "identity did not simplify to 0, and no sampled batch refuted it): "
                                            "its value and gradient may change with the batch size",)))
    for line in _written_singularities(report.metric):
        findings.append((DomainWarning, (line,)))
