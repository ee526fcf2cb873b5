"""Vectorised interval arithmetic over sympy expressions, for sound bounds.

``enclose(expr, boxes)`` returns, for every box of variable values, an interval
guaranteed to contain the expression's value at every point of the box where it
is defined. Each operation rounds outward (one ulp for the correctly rounded
+ − × ÷ and sqrt, a few ulps for exp, log and pow), so the enclosures stay sound
in floating point. Used by the analysis to bound gradients (Lipschitz constants)
and to prove signs; anything it cannot enclose raises ``Unsupported``.
"""

from __future__ import annotations

import numpy as np
import sympy

_EPS = np.finfo(np.float64).eps
_TINY = np.finfo(np.float64).tiny


class Unsupported(Exception):
    """The expression holds a node this evaluator does not enclose."""


def _down(x, ulps: int = 1):
    with np.errstate(all="ignore"):
        return x - (np.abs(x) * (ulps * _EPS) + ulps * _TINY)


def _up(x, ulps: int = 1):
    with np.errstate(all="ignore"):
        return x + (np.abs(x) * (ulps * _EPS) + ulps * _TINY)


class Interval:
    """Arrays of lower and upper bounds, one pair per box."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)

    @classmethod
    def point(cls, value: float, shape, exact: bool = False) -> Interval:
        """The constant ``value``; unless ``exact``, widened by an ulp (the float only approximates it)."""
        lo = np.full(shape, float(value))
        hi = lo.copy()
        if not exact:
            lo, hi = _down(lo), _up(hi)
        return cls(lo, hi)

    def __add__(self, other: Interval) -> Interval:
        with np.errstate(all="ignore"):
            return Interval(_down(self.lo + other.lo), _up(self.hi + other.hi))

    def __neg__(self) -> Interval:
        return Interval(-self.hi, -self.lo)

    def __mul__(self, other: Interval) -> Interval:
        with np.errstate(all="ignore"):
            products = np.stack([self.lo * other.lo, self.lo * other.hi, self.hi * other.lo, self.hi * other.hi])
        products = np.where(np.isnan(products), 0.0, products)  # 0·∞ between limits is 0
        return Interval(_down(products.min(axis=0)), _up(products.max(axis=0)))

    def reciprocal(self) -> Interval:
        lo, hi = self.lo, self.hi
        with np.errstate(all="ignore"):
            r_lo = np.where(hi == 0, -np.inf, _down(1.0 / hi))
            r_hi = np.where(lo == 0, np.inf, _up(1.0 / lo))
        straddles = (lo < 0) & (hi > 0)
        return Interval(np.where(straddles, -np.inf, r_lo), np.where(straddles, np.inf, r_hi))

    def nonnegative_part(self) -> Interval:
        """Clip to [0, ∞): points with a negative base lie outside the expression's domain."""
        return Interval(np.maximum(self.lo, 0.0), np.maximum(self.hi, 0.0))

    def monotone(self, function, increasing: bool, ulps: int) -> Interval:
        with np.errstate(all="ignore"):
            a, b = function(self.lo), function(self.hi)
        if not increasing:
            a, b = b, a
        return Interval(_down(a, ulps), _up(b, ulps))

    def abs(self) -> Interval:
        lo = np.where((self.lo <= 0) & (self.hi >= 0), 0.0, np.minimum(np.abs(self.lo), np.abs(self.hi)))
        return Interval(lo, np.maximum(np.abs(self.lo), np.abs(self.hi)))

    def magnitude(self) -> np.ndarray:
        """An upper bound of |x| over each box."""
        return np.maximum(np.abs(self.lo), np.abs(self.hi))


def _power(base: Interval, exponent: sympy.Expr) -> Interval:
    if exponent.is_Integer:
        k = int(exponent)
        if k == 0:
            return Interval(np.ones_like(base.lo), np.ones_like(base.hi))
        if k < 0:
            return _power(base, sympy.Integer(-k)).reciprocal()
        if k == 1:
            return base
        # One correctly rounded-ish pow per end (a few ulps, as for fractional exponents), not k − 1 products:
        # an exponent of 262,144 took seconds per box. x**k increases on [0, ∞); odd powers on all reals.
        if k % 2:
            return base.monotone(lambda x: np.power(x, float(k)), increasing=True, ulps=4)
        return base.abs().monotone(lambda x: np.power(x, float(k)), increasing=True, ulps=4)
    value = float(exponent)
    clipped = base.nonnegative_part()
    if value > 0:
        return clipped.monotone(lambda x: np.power(x, value), increasing=True, ulps=4)
    with np.errstate(all="ignore"):
        lo = np.where(clipped.hi == np.inf, 0.0, _down(np.power(clipped.hi, value), 4))
        hi = np.where(clipped.lo == 0, np.inf, _up(np.power(clipped.lo, value), 4))
    return Interval(lo, hi)


def enclose(expr: sympy.Expr, variables: dict[sympy.Symbol, Interval]) -> Interval:
    """An interval enclosure of ``expr`` over boxes given per variable."""
    shape = next(iter(variables.values())).lo.shape
    memo: dict[sympy.Basic, Interval] = {}

    def visit(node: sympy.Basic) -> Interval:
        if node in memo:
            return memo[node]
        if node in variables:
            result = variables[node]
        elif node.is_Number or (node.is_number and not node.free_symbols):
            value = complex(node.evalf(30))
            if value.imag != 0 or not np.isfinite(value.real):
                raise Unsupported(f"constant {node}")
            exact = bool(node.is_Integer and abs(int(node)) < 2**53)
            result = Interval.point(value.real, shape, exact)
        elif node.is_Add:
            parts = [visit(a) for a in node.args]
            result = parts[0]
            for part in parts[1:]:
                result = result + part
        elif node.is_Mul:
            parts = [visit(a) for a in node.args]
            result = parts[0]
            for part in parts[1:]:
                result = result * part
        elif node.is_Pow:
            if node.exp.free_symbols:
                raise Unsupported("symbolic exponent")
            result = _power(visit(node.base), node.exp)
        elif isinstance(node, sympy.exp):
            result = visit(node.args[0]).monotone(np.exp, increasing=True, ulps=4)
        elif isinstance(node, sympy.log):
            inner = visit(node.args[0]).nonnegative_part()
            with np.errstate(divide="ignore"):
                result = inner.monotone(np.log, increasing=True, ulps=4)
        elif isinstance(node, sympy.Abs):
            result = visit(node.args[0]).abs()
        elif isinstance(node, (sympy.Min, sympy.Max)):
            parts = [visit(a) for a in node.args]
            pick = np.minimum if isinstance(node, sympy.Min) else np.maximum
            lo, hi = parts[0].lo, parts[0].hi
            for part in parts[1:]:
                lo, hi = pick(lo, part.lo), pick(hi, part.hi)
            result = Interval(lo, hi)
        elif isinstance(node, (sympy.sign, sympy.Heaviside)):
            inner = visit(node.args[0])
            low = -1.0 if isinstance(node, sympy.sign) else 0.0
            lo = np.where(inner.lo > 0, 1.0, np.where(inner.hi < 0, low, low))
            hi = np.where(inner.hi < 0, low, 1.0)
            result = Interval(np.where(inner.lo > 0, 1.0, lo), hi)
        else:
            raise Unsupported(type(node).__name__)
        memo[node] = result
        return result

    return visit(expr)
