"""The analysis of a metric that reads per-group entries (``max_g(TP[g]/P[g]) - min_g(TP[g]/P[g])``), by composition.

The analysis of :mod:`metricc.analyze` works on one confusion matrix. A group metric combines metrics of single
confusion matrices: group g's (``TP[g]/P[g]``) and the whole batch's (``TP/P``), through sums, products, min, max,
abs, powers and the group reductions. So each such piece is analysed as an ordinary metric (its range, its
direction along a batch, its singular batches), and the pieces' proofs are combined with exact interval
arithmetic on their ranges and sign rules on their directions:

* a reduction keeps its argument's range (``sum_g``: G times it) and direction: max, min, mean and sum are
  non-decreasing in every group's value;
* ``max_g(h) - min_g(h)`` lies in [0, hi − lo] of h's range (h's spread over the groups is never negative);
* a sum (product of non-negative factors, min, max) moves with its terms where they all move the same way.

The bounds are sound (every value lies within them) but may be wider than the metric's true range; a pieces'
"unknown" makes the metric's range unknown, and the report says which piece. Directions are proved only where
the sign rules settle them: the spread of a rate over the groups is in neither direction, and an objective made of
it needs ``direction=``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import sympy

from . import groups as _groups
from .budget import cpu_time
from .metric import CONFUSION_SYMBOLS, Metric, parameter_symbol, to_text

if TYPE_CHECKING:
    from .analyze import Report

UNKNOWN = "unknown"


class _CannotBound(Exception):
    """A piece whose range is not proved; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class _Bound:
    """An enclosure [lo, hi] (None: unbounded on that side) and the signs of the derivative along a batch in TP
    and in FP ("+", "-", "0" or "?")."""

    lo: Fraction | None
    hi: Fraction | None
    tp: str = "?"
    fp: str = "?"

    @classmethod
    def point(cls, value) -> _Bound:
        exact = Fraction(str(value))  # "1/3" from a sympy Rational, "0.25" from a float: exact either way
        return cls(exact, exact, "0", "0")


def _add_signs(a: str, b: str) -> str:
    if a == "0":
        return b
    if b == "0":
        return a
    return a if a == b else "?"


def _flip(s: str) -> str:
    return {"+": "-", "-": "+"}.get(s, s)


def _plus(a, b):
    return None if a is None or b is None else a + b


def _add(a: _Bound, b: _Bound) -> _Bound:
    return _Bound(_plus(a.lo, b.lo), _plus(a.hi, b.hi), _add_signs(a.tp, b.tp), _add_signs(a.fp, b.fp))


def _negate(a: _Bound) -> _Bound:
    return _Bound(None if a.hi is None else -a.hi, None if a.lo is None else -a.lo, _flip(a.tp), _flip(a.fp))


def _scale(a: _Bound, c: Fraction) -> _Bound:
    if c == 0:
        return _Bound.point(0)
    if c < 0:
        return _scale(_negate(a), -c)
    return _Bound(None if a.lo is None else a.lo * c, None if a.hi is None else a.hi * c, a.tp, a.fp)


def _multiply(a: _Bound, b: _Bound) -> _Bound:
    if a.lo is not None and a.lo == a.hi:
        return _scale(b, a.lo)
    if b.lo is not None and b.lo == b.hi:
        return _scale(a, b.lo)
    if None in (a.lo, a.hi, b.lo, b.hi):
        if a.lo is not None and b.lo is not None and a.lo >= 0 and b.lo >= 0:
            hi = None if (a.hi is None and b.hi != 0) or (b.hi is None and a.hi != 0) else Fraction(0)
            return _Bound(a.lo * b.lo, hi, *_product_signs(a, b))
        raise _CannotBound("a product of factors with an unbounded range")
    assert a.lo is not None and a.hi is not None and b.lo is not None and b.hi is not None
    corners = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
    return _Bound(min(corners), max(corners), *_product_signs(a, b))


def _product_signs(a: _Bound, b: _Bound) -> tuple[str, str]:
    """(a·b)' = a'·b + a·b': settled where both factors are ≥ 0 and their derivatives agree."""
    if a.lo is not None and b.lo is not None and a.lo >= 0 and b.lo >= 0:
        return _add_signs(a.tp, b.tp), _add_signs(a.fp, b.fp)
    return "?", "?"


def _power(a: _Bound, exponent: sympy.Expr) -> _Bound:
    k = Fraction(str(exponent)) if exponent.is_Rational else None
    if k is None:
        raise _CannotBound(f"a power with exponent {exponent}")
    if k.denominator == 1 and k > 0:
        if k.numerator % 2 == 1:  # odd: monotone over the reals
            lo, hi = (None if v is None else v ** k.numerator for v in (a.lo, a.hi))
            return _Bound(lo, hi, a.tp, a.fp)
        if a.lo is not None and a.lo >= 0:
            return _Bound(a.lo ** k.numerator, None if a.hi is None else a.hi ** k.numerator, a.tp, a.fp)
        if a.hi is not None and a.hi <= 0:
            return _Bound(a.hi ** k.numerator, None if a.lo is None else a.lo ** k.numerator, _flip(a.tp), _flip(a.fp))
        if a.lo is None or a.hi is None:
            return _Bound(Fraction(0), None)
        return _Bound(Fraction(0), max(a.lo ** k.numerator, a.hi ** k.numerator))
    if a.lo is None or a.lo < 0 or (k < 0 and a.lo == 0):
        raise _CannotBound(f"a power {exponent} of a quantity that may be {'≤' if k < 0 else '<'} 0")
    ends = [None if v is None else _real_power(v, k) for v in (a.lo, a.hi)]
    if k > 0:
        return _Bound(ends[0], ends[1], a.tp, a.fp)
    return _Bound(Fraction(0) if ends[1] is None else ends[1], ends[0], _flip(a.tp), _flip(a.fp))


def _real_power(value: Fraction, k: Fraction) -> Fraction:
    if k.denominator == 1:
        return value ** k.numerator
    return Fraction(float(value) ** float(k))  # a root: within rounding of the exact end


def _extremum(bounds: list[_Bound], largest: bool) -> _Bound:
    pick = max if largest else min

    def end(values, side_largest):
        if any(v is None for v in values):
            infinite_side = side_largest  # an unbounded hi makes max's hi unbounded, min's hi the others'
            if largest == infinite_side:
                return None
            finite = [v for v in values if v is not None]
            return pick(finite) if finite else None
        return pick(values)

    lo = end([b.lo for b in bounds], False)
    hi = end([b.hi for b in bounds], True)
    tps, fps = {b.tp for b in bounds} - {"0"}, {b.fp for b in bounds} - {"0"}
    return _Bound(lo, hi, tps.pop() if len(tps) == 1 else ("0" if not tps else "?"),
                  fps.pop() if len(fps) == 1 else ("0" if not fps else "?"))


def _absolute(a: _Bound) -> _Bound:
    if a.lo is not None and a.lo >= 0:
        return a
    if a.hi is not None and a.hi <= 0:
        return _negate(a)
    hi = None if a.lo is None or a.hi is None else max(-a.lo, a.hi)
    return _Bound(Fraction(0), hi)


def _monotone_function(a: _Bound, function, lowest=None) -> _Bound:
    """exp or log (increasing): the ends mapped, rounded outward by a relative ulp-sized step."""
    def at(value, down):
        if value is None:
            return None
        result = function(float(value))
        step = abs(result) * 4 * np.finfo(np.float64).eps + np.finfo(np.float64).tiny
        return Fraction(result - step if down else result + step)

    if lowest is not None and (a.lo is None or a.lo <= lowest):
        raise _CannotBound("a logarithm of a quantity that may be ≤ 0")
    return _Bound(at(a.lo, True), at(a.hi, False), a.tp, a.fp)


class _Composer:
    """Bounds a group metric from the analysed ranges and directions of its single-matrix pieces."""

    def __init__(self, metric: Metric, group_count: int | None, min_prevalence: float, seconds: float):
        self.metric = metric
        self.group_count = group_count
        self.min_prevalence = min_prevalence
        self.seconds = seconds
        self.pieces: dict[sympy.Expr, tuple[str, Report]] = {}  # piece (over TP … TN) → whose, its Report
        self.proofs: list[str] = []
        self.values = {parameter_symbol(k): sympy.Rational(repr(v)) for k, v in metric.params}

    def bound(self, expr: sympy.Expr) -> _Bound:
        expr = expr.xreplace(self.values)
        if expr.is_number:
            return _Bound.point(expr if expr.is_Rational else float(expr))
        symbols = expr.free_symbols
        group_symbols, batch_symbols = symbols & set(_groups.GROUP_SYMBOLS), symbols & set(CONFUSION_SYMBOLS)
        if not expr.has(_groups.GroupReduction) and not (group_symbols and batch_symbols) \
                and symbols <= {*_groups.GROUP_SYMBOLS, *CONFUSION_SYMBOLS}:
            return self._piece(expr.xreplace(_groups.FROM_GROUP), "group g's" if group_symbols else "the batch's")
        if isinstance(expr, _groups.GroupReduction):
            inner = self.bound(expr.args[0])
            if expr.kind != "sum":
                return inner
            if self.group_count is None:
                raise _CannotBound("sum_g grows with the number of groups: pass groups= to bound it")
            return _scale(inner, Fraction(self.group_count))
        if expr.is_Add:
            return self._sum(expr)
        if expr.is_Mul:
            coefficient, rest = expr.as_coeff_Mul()
            factors = [self.bound(f) for f in sympy.Mul.make_args(rest)]
            result = factors[0]
            for factor in factors[1:]:
                result = _multiply(result, factor)
            return _scale(result, Fraction(str(coefficient if coefficient.is_Rational else float(coefficient))))
        if expr.is_Pow and expr.exp.is_number:
            return _power(self.bound(expr.base), expr.exp)
        if isinstance(expr, (sympy.Max, sympy.Min)):
            return _extremum([self.bound(a) for a in expr.args], isinstance(expr, sympy.Max))
        if isinstance(expr, sympy.Abs):
            return _absolute(self.bound(expr.args[0]))
        if isinstance(expr, sympy.exp):
            return _monotone_function(self.bound(expr.args[0]), math.exp)
        if isinstance(expr, sympy.log):
            return _monotone_function(self.bound(expr.args[0]), math.log, lowest=0)
        raise _CannotBound(f"{to_text(expr)} mixes group g's and the batch's entries in a way the composition "
                           "does not bound")

    def _sum(self, expr: sympy.Expr) -> _Bound:
        terms = list(sympy.Add.make_args(expr))
        total = _Bound.point(0)
        # max_g(h) - min_g(h): h's spread over the groups, in [0, hi - lo], in no proved direction.
        for term in list(terms):
            coefficient, node = term.as_coeff_Mul()
            if not isinstance(node, _groups.max_g):
                continue
            partner = next((t for t in terms if t.as_coeff_Mul() == (-coefficient, _groups.min_g(node.args[0]))),
                           None)
            if partner is None:
                continue
            inner = self.bound(node.args[0])
            if inner.lo is None or inner.hi is None:
                raise _CannotBound(f"the spread of {to_text(node.args[0])} over the groups is unbounded")
            width = inner.hi - inner.lo
            spread = _Bound(Fraction(0), width)
            self.proofs.append(f"max_g(h) - min_g(h) with h = {to_text(node.args[0])} lies in [0, {float(width):g}]"
                               " (h's spread over the groups)")
            total = _add(total, _scale(spread, Fraction(str(coefficient))))
            terms.remove(term)
            terms.remove(partner)
        for term in terms:
            total = _add(total, self.bound(term))
        return total

    def _piece(self, expr: sympy.Expr, whose: str) -> _Bound:
        from .analyze import analyze_metric

        params = tuple((k, v) for k, v in self.metric.params if parameter_symbol(k) in expr.free_symbols)
        piece = Metric(expr=expr, params=params, name=f"{self.metric.name}_piece")
        report = analyze_metric(piece, self.min_prevalence, self.seconds)
        self.pieces[expr] = (whose, report)
        lo, hi = report.range
        if UNKNOWN in (lo, hi) or report.domain_problems:
            raise _CannotBound(f"{whose} {to_text(expr)}: {report.problem() or 'its range is not proved'}")
        signs = {1: "+", -1: "-", 0: "0", None: "?"}
        tp = signs[report.monotone.get("TP")]
        fp = signs[report.monotone.get("FP")]
        if report.monotone.get("TP") == 0 and report.direction == "neither":
            tp = "?"  # 0 means "changes sign" as well as "constant"
        if report.monotone.get("FP") == 0 and report.direction == "neither":
            fp = "?"
        return _Bound(None if lo is None else Fraction(str(lo)), None if hi is None else Fraction(str(hi)), tp, fp)


def analyze_group_metric(metric: Metric, group_count: int | None = None, min_prevalence: float = 0.01,
                         seconds: float = 3.5):
    """A :class:`metricc.analyze.Report` for a metric reading ``TP[g]`` …, by composition (see the module)."""
    from .analyze import Report

    started, started_cpu = time.monotonic(), cpu_time()
    report = Report(metric=metric, min_prevalence=min_prevalence)
    composer = _Composer(metric, group_count, min_prevalence, seconds)
    if _groups.free_group_entries(metric.expr):
        # One value per group: bound it as the batch's metric of group g alone, for every g.
        report.proofs.append("g is free: one value per group, bounded alike for every group")
    try:
        bound = composer.bound(metric.expr)
    except _CannotBound as reason:
        bound = None
        report.range = (UNKNOWN, UNKNOWN)
        report.range_problems.append((f"could not bound it by composing its pieces: {reason}",))
    if bound is not None:
        report.range = (None if bound.lo is None else float(bound.lo), None if bound.hi is None else float(bound.hi))
        for side, end in (("below", bound.lo), ("above", bound.hi)):
            if end is None:
                report.range_problems.append((f"unbounded {side}: a piece of it is unbounded {side}, so the "
                                              "composition is too",))
        status = {"+": 1, "-": -1, "0": 0, "?": None}
        report.monotone = {"TP": status[bound.tp], "FP": status[bound.fp]}
        report.direction = _direction(bound.tp, bound.fp)
        report.proofs.append(f"range [{_show(report.range[0])}, {_show(report.range[1])}] by exact interval "
                             "arithmetic on the proved ranges of its pieces")
        if report.direction in ("maximize", "minimize"):
            report.proofs.append(f"direction {report.direction}: its pieces move the same way along a batch, and "
                                 "the group reductions are non-decreasing in every group's value")
        else:
            report.unproved["TP"] = ("the sign rules over its pieces do not settle the direction (a spread over the "
                                     "groups, or pieces moving in opposite ways)")
    report.proofs += composer.proofs
    for expr, (whose, piece) in composer.pieces.items():
        text = to_text(expr)
        report.proofs.append(f"piece ({whose}) {text}: range {piece.range}, direction {piece.direction}")
        report.domain_problems += [(f"{whose} {text}: ", *p) for p in piece.domain_problems]
        report.singularities += [f"{whose} {text}: {s}" for s in piece.singularities]
        report.findings += [f for f in piece.findings if f not in report.findings]
    if metric.expr.has(_groups.GroupReduction):
        report.singularities.append("a group absent from the batch, or where a reduced expression is undefined (no "
                                    "positives for a TPR): the reduction leaves it out; where no group is left, the "
                                    "loss takes zero_division with zero gradient")
    homogeneous = [piece.homogeneous for _, piece in composer.pieces.values()]
    report.homogeneous = all(h is True for h in homogeneous) if homogeneous else UNKNOWN
    report.linear_fractional = False
    report.lipschitz = UNKNOWN
    report.unproved["lipschitz"] = "a Lipschitz bound is not derived for group metrics"
    report.observed_range = _observed_range(metric, group_count or 2)
    report.seconds, report.cpu_seconds = time.monotonic() - started, cpu_time() - started_cpu
    return report


def _show(value) -> str:
    return "unbounded" if value is None else f"{value:g}"


def _direction(tp: str, fp: str) -> str:
    if "?" in (tp, fp):
        return UNKNOWN
    if tp in "+0" and fp in "-0" and (tp, fp) != ("0", "0"):
        return "maximize"
    if tp in "-0" and fp in "+0" and (tp, fp) != ("0", "0"):
        return "minimize"
    return "neither"


def _observed_range(metric: Metric, group_count: int, count: int = 500, seed: int = 0) -> tuple[float, float]:
    """The smallest and largest values seen on random per-group confusion matrices (every group's h defined)."""
    expr = metric.bound_expr()
    free = _groups.free_group_entries(expr)
    expanded = _groups.expand_groups(expr, group_count, 0 if free else None)
    variables = [s for k in range(group_count) for s in _groups.group_entry_symbols(k)]
    function = sympy.lambdify(variables, expanded, modules="numpy")
    rng = np.random.default_rng(seed)
    values = rng.random((count, len(variables))) ** 2
    with np.errstate(all="ignore"):
        try:
            results = np.asarray(function(*values.T), dtype=np.float64)
        except (TypeError, ValueError, ZeroDivisionError):
            return (math.nan, math.nan)
    finite = results[np.isfinite(results)]
    return (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)


__all__ = ["analyze_group_metric"]
