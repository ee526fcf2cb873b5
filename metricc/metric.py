"""The intermediate representation: a metric as a sympy expression in TP, FN, FP, TN.

Every later stage (analysis, derivation, code generation) reads a ``Metric`` and
nothing else, so this module also owns the symbols and the printer that turns an
expression back into text the grammar accepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import sympy
from sympy.printing.precedence import precedence
from sympy.printing.str import StrPrinter

from . import limits, names

# Soft confusion entries are sums of non-negative terms; telling sympy so lets it
# simplify sqrt(TP**2) to TP and prove signs in the analysis.
TP, FN, FP, TN = sympy.symbols("TP FN FP TN", nonnegative=True)
CONFUSION_SYMBOLS: tuple[sympy.Symbol, ...] = (TP, FN, FP, TN)

# Names users may write that stand for sums of confusion entries.
DERIVED_SYMBOLS: dict[str, sympy.Expr] = {
    "P": TP + FN,  # actual positives
    "N": FP + TN,  # actual negatives
    "PP": TP + FP,  # predicted positives
    "PN": FN + TN,  # predicted negatives
    "n": TP + FN + FP + TN,  # batch size
}

DIRECTIONS = ("maximize", "minimize")


def check_direction(direction: object) -> Literal["maximize", "minimize"]:
    """``"maximize"`` or ``"minimize"`` (our own string), or a ValueError: a typo such as ``"min"`` must not
    be replaced by the inferred direction, which may train the opposite objective."""
    if isinstance(direction, str) and direction in DIRECTIONS:
        return "maximize" if direction == "maximize" else "minimize"  # our own string, not a look-alike subclass
    raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")


class _RealAbs(sympy.Function):
    """|u| for a real u. sympy's Abs must allow complex u, so d|sqrt(u)|/du comes out in
    terms of re, im and atan2(0, u); metrics are real-valued, where d|u| = sign(u) du."""

    def fdiff(self, argindex=1):
        return sympy.sign(self.args[0])


def differentiate(expr: sympy.Expr, symbol: sympy.Symbol) -> sympy.Expr:
    """∂expr/∂symbol, treating every subexpression as real (as the grammar guarantees)."""
    return sympy.diff(expr.replace(sympy.Abs, _RealAbs), symbol).replace(_RealAbs, sympy.Abs)
MAX_PRINTED_EXPONENT = 64  # the grammar's limit on a written exponent


def scale_degree(expr: sympy.Expr):
    """d with f(λ·CM) = λ^d·f(CM) for λ > 0, read off the expression's structure; None if it has none."""
    if expr in CONFUSION_SYMBOLS:
        return sympy.Integer(1)
    if not expr.free_symbols & set(CONFUSION_SYMBOLS):
        return sympy.Integer(0)
    if expr.is_Add or isinstance(expr, (sympy.Min, sympy.Max)):
        distinct = {scale_degree(a) for a in expr.args}
        return distinct.pop() if len(distinct) == 1 else None
    if expr.is_Mul:
        degrees = [scale_degree(a) for a in expr.args]
        return None if None in degrees else sum(degrees)
    if expr.is_Pow and expr.exp.is_number:
        degree = scale_degree(expr.base)
        return None if degree is None else degree * expr.exp
    if isinstance(expr, sympy.Abs):
        return scale_degree(expr.args[0])
    return None


def parameter_symbol(name: str) -> sympy.Symbol:
    """The sympy symbol of a named metric parameter (real-valued, sign unknown)."""
    return sympy.Symbol(name, real=True)


@dataclasses.dataclass(frozen=True)
class Metric:
    """A confusion-matrix metric, ready for analysis and compilation.

    Attributes:
        expr: sympy expression over ``TP FN FP TN`` and parameter symbols.
        params: parameter values bound at compile time, as sorted ``(name, value)`` pairs.
        name: a Python identifier naming the metric (catalog name or user's choice).
        source: the text the user wrote (or the catalog expression).
        direction: ``"maximize"``, ``"minimize"`` or ``None`` when the catalog does not
            say; the analysis decides then.
        description: one line for docs and generated docstrings.
        domain: expressions that must be non-zero for the metric to be defined, beyond what
            ``expr`` shows: the denominators (and root and logarithm arguments) the user wrote
            whose zero sets sympy's automatic simplification removed. ``(FP/FP)*TP/(TP+FN)``
            reads as ``TP/(TP + FN)`` with ``domain == (FP,)``: it stays undefined where
            FP = 0, as written. A root or logarithm of ``u`` that vanished while ``u`` may be
            negative is kept as ``u + abs(u)``, zero exactly where ``u ≤ 0``.
    """

    expr: sympy.Expr
    params: tuple[tuple[str, float], ...] = ()
    name: str = "metric"
    source: str = ""
    direction: str | None = None
    description: str = ""
    domain: tuple[sympy.Expr, ...] = ()

    def __post_init__(self):
        # Everything here may reach generated source, which metricc imports and runs: names, parameter
        # values and node types are checked wherever a Metric is built (metricc.names), and the structural
        # limits that keep every later stage within its time and memory are applied (metricc.limits).
        names.check_metric_name(self.name)
        object.__setattr__(self, "params", names.checked_params(self.params))
        if self.direction is not None:
            object.__setattr__(self, "direction", check_direction(self.direction))
        if not (isinstance(self.domain, tuple) and all(isinstance(e, sympy.Expr) for e in self.domain)):
            raise ValueError(f"domain must be a tuple of sympy expressions, got {self.domain!r}")
        if not isinstance(self.source, str) or not isinstance(self.description, str):
            raise ValueError("source and description must be strings")
        for part, what in ((self.expr, "the expression"), *((e, "a domain entry") for e in self.domain)):
            if not isinstance(part, sympy.Expr):
                raise ValueError(f"{what} must be a sympy expression, got {type(part).__name__}")
            limits.check_expression(part, what)  # first: it stops counting at the size limit
            names.check_nodes(part, self.params, what)

    @property
    def param_values(self) -> dict[str, float]:
        return dict(self.params)

    @property
    def param_symbols(self) -> dict[sympy.Symbol, float]:
        return {parameter_symbol(k): v for k, v in self.params}

    def bound_expr(self) -> sympy.Expr:
        """The expression with parameter values substituted (numbers only, for evaluation)."""
        return self.expr.subs(self.param_symbols)

    def bound_domain(self) -> tuple[sympy.Expr, ...]:
        """``domain`` with parameter values substituted."""
        values = self.param_symbols
        return tuple(e.subs(values) for e in self.domain)

    def text(self) -> str:
        """The expression as text that ``metricc.parse`` reads back to the same expression."""
        return to_text(self.expr)

    def with_params(self, params: Mapping[str, float]) -> Metric:
        return dataclasses.replace(self, params=tuple(sorted(params.items())))


class _MetricTextPrinter(StrPrinter):
    """sympy's str printer, restricted to the grammar's spelling of functions."""

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_Min(self, expr):
        return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Max(self, expr):
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Exp1(self, expr):
        return "exp(1)"

    def _print_CurveArea(self, expr):
        return "curve_area(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_CurveSum(self, expr):
        return "curve_sum(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Mul(self, expr):
        # sympy prints (1/2)*x/(a + b) as x/(2*(a + b)); reading that back distributes the 2
        # into the sum (a different tree). Printing the rational coefficient up front reads
        # back to the very same expression.
        coefficient, rest = expr.as_coeff_Mul()
        if coefficient.is_Rational and coefficient != 1 and rest.is_Mul and any(a.is_Add for a in rest.args):
            # -(a + b)/c must not read as (-(a + b))/c: a number times a lone sum distributes
            # (-a - b), so the coefficient multiplies the whole parenthesised product instead.
            if coefficient == -1:
                sign = "-"
            elif coefficient.is_Integer and coefficient > 0:
                sign = f"{coefficient}*"
            else:
                sign = f"({coefficient})*"
            return f"{sign}({self._print(rest)})"
        if coefficient.is_Rational and coefficient.q != 1 and rest != 1:
            return f"({coefficient})*{self.parenthesize(rest, precedence(expr))}"
        return super()._print_Mul(expr)

    def _print_Pow(self, expr, rational=False):
        # The grammar allows exponents up to 64 in magnitude, but sympy merges TP*TP**64 into
        # TP**65. Print such a power as a product of allowed powers; it reads back merged.
        exponent = expr.exp
        if exponent.is_Rational and abs(exponent) > MAX_PRINTED_EXPONENT:
            step = MAX_PRINTED_EXPONENT if exponent > 0 else -MAX_PRINTED_EXPONENT
            count, remainder = divmod(exponent, step)
            parts = [sympy.Integer(step)] * int(count) + ([remainder] if remainder else [])
            base = self.parenthesize(expr.base, precedence(expr), strict=True)
            return "(" + "*".join(f"{base}**{self._exponent(part)}" for part in parts) + ")"
        return super()._print_Pow(expr, rational)

    @staticmethod
    def _exponent(value: sympy.Rational) -> str:
        return str(value) if value.is_Integer and value > 0 else f"({value})"

    def _print_Float(self, expr):
        # Parsed numbers are exact rationals; a Float only appears when a user builds
        # the expression with sympy. repr() keeps every digit.
        return repr(float(expr))


def to_text(expr: sympy.Expr) -> str:
    """Print an expression in the metric grammar (``**`` powers, lower-case functions)."""
    return _MetricTextPrinter({"order": "none"}).doprint(expr)
