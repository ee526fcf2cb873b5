"""Metrics over per-group confusion matrices: ``TP[g]`` … and the group reductions ``max_g``, ``min_g``, ``mean_g``,
``sum_g``.

Fairness metrics compare a rate across groups of samples (sex, race, site): equal opportunity asks that the
true-positive rate TP[g]/P[g] be the same in every group g, demographic parity that the rate of positive
predictions PP[g]/n[g] be. Each sample carries a group index g in [0, G), and the soft confusion table gains a
group axis, (4, G, C, T) instead of (4, C, T); ``TP`` keeps meaning the whole batch's entry, the sum over groups.
A metric reads group g's entries as ``TP[g]``, ``FN[g]``, ``FP[g]``, ``TN[g]`` (and ``P[g] N[g] PP[g] PN[g] n[g]``;
a catalog name works too: ``recall[g]``) inside a reduction over the groups:

    max_g(TP[g]/P[g]) - min_g(TP[g]/P[g])         equal opportunity: the spread of the groups' TPR
    max_g(abs(PP[g]/n[g] - PP/n))                  demographic parity: the largest deviation from the whole batch

A reduction runs over the groups where its argument is defined (a group absent from the batch, or without
positives for a TPR, is left out, as pandas' ``max`` skips NaN); where it is defined for no group, the metric
takes ``zero_division``. ``max_g``/``min_g`` pass the gradient to the extreme group (split evenly between tied
groups, the midpoint subgradient used for ``max`` elsewhere). In a constraint, an expression whose ``g`` is left
free holds for every group: ``TP[g]/P[g] - TP/P <= 0.05`` is G constraints, each with its own multiplier
(fairlearn's per-group moments).

This module is the IR for it: the symbols, the reductions as sympy functions, and :func:`group_form`, which
splits an expression into an outer expression over the batch's entries and placeholders, one per distinct
reduction, each with the expression it reduces. Nothing here evaluates anything.
"""

from __future__ import annotations

import ast
import dataclasses

import sympy

from . import names
from .metric import CONFUSION_SYMBOLS, DERIVED_SYMBOLS

GROUP_INDEX = "g"

# Group g's entries. The names print as the text a user writes, so to_text() reads back unchanged.
TP_G, FN_G, FP_G, TN_G = sympy.symbols("TP[g] FN[g] FP[g] TN[g]", nonnegative=True)
GROUP_SYMBOLS: tuple[sympy.Symbol, ...] = (TP_G, FN_G, FP_G, TN_G)
TO_GROUP = dict(zip(CONFUSION_SYMBOLS, GROUP_SYMBOLS))
FROM_GROUP = dict(zip(GROUP_SYMBOLS, CONFUSION_SYMBOLS))
GROUP_DERIVED: dict[str, sympy.Expr] = {name: expr.xreplace(TO_GROUP) for name, expr in DERIVED_SYMBOLS.items()}


class GroupReduction(sympy.Function):
    """A reduction over the groups of an expression in group g's entries; the subclasses name the kind.

    The class names are the grammar's function names, so sympy's printer writes them back as written."""

    nargs = 1
    kind = ""

    def _eval_is_real(self):
        return True


class max_g(GroupReduction):  # noqa: N801 - the name is the grammar's
    """The largest value over the groups (where defined)."""

    kind = "max"


class min_g(GroupReduction):  # noqa: N801
    """The smallest value over the groups (where defined)."""

    kind = "min"


class mean_g(GroupReduction):  # noqa: N801
    """The unweighted mean over the groups (where defined): each group counts once, whatever its size."""

    kind = "mean"


class sum_g(GroupReduction):  # noqa: N801
    """The sum over the groups (where defined)."""

    kind = "sum"


REDUCTIONS: dict[str, type[GroupReduction]] = {cls.__name__: cls for cls in (max_g, min_g, mean_g, sum_g)}
KINDS = tuple(cls.kind for cls in REDUCTIONS.values())
names.allow_group_grammar(REDUCTIONS.values(), (symbol.name for symbol in GROUP_SYMBOLS))  # Metric's node check


def has_group_entries(expr: sympy.Expr) -> bool:
    """Whether ``expr`` reads any group's entries (inside a reduction or not)."""
    return bool(expr.free_symbols & set(GROUP_SYMBOLS)) or expr.has(GroupReduction)


def free_group_entries(expr: sympy.Expr) -> bool:
    """Whether ``expr`` reads group g's entries outside every reduction: it then has one value per group."""
    outside = expr.replace(lambda node: isinstance(node, GroupReduction), lambda node: sympy.Integer(0))
    return bool(outside.free_symbols & set(GROUP_SYMBOLS))


@dataclasses.dataclass(frozen=True)
class Reduction:
    """One distinct reduction of a metric: ``symbol`` stands for it in :attr:`GroupForm.outer`.

    Attributes:
        symbol: the placeholder (real-valued) in the outer expression.
        kind: ``"max"``, ``"min"``, ``"mean"`` or ``"sum"``.
        inner: the reduced expression, over group g's entries and possibly the batch's (``TP[g]/P[g] - TP/P``).
    """

    symbol: sympy.Symbol
    kind: str
    inner: sympy.Expr

    def text(self) -> str:
        from .metric import to_text

        return f"{self.kind}_g({to_text(self.inner)})"


@dataclasses.dataclass(frozen=True)
class GroupForm:
    """A metric split at its reductions: f = outer(TP, FN, FP, TN, [TP[g] …], r_1, …, r_m), r_j = reduction j.

    ``outer`` reads group g's entries only where g is free (a per-group constraint); then it has one value
    per group.
    """

    outer: sympy.Expr
    reductions: tuple[Reduction, ...]

    @property
    def per_group(self) -> bool:
        return bool(self.outer.free_symbols & set(GROUP_SYMBOLS))

    @property
    def grouped(self) -> bool:
        """Whether the metric needs the group axis at all."""
        return self.per_group or bool(self.reductions)


def reduction_symbol(index: int) -> sympy.Symbol:
    return sympy.Symbol(f"r{index + 1}", real=True)


def group_form(expr: sympy.Expr) -> GroupForm:
    """Split ``expr`` at its group reductions; equal reductions share one placeholder."""
    (outer,), reductions = split_reductions([expr])
    return GroupForm(outer=outer, reductions=reductions)


def split_reductions(exprs) -> tuple[list[sympy.Expr], tuple[Reduction, ...]]:
    """Split several expressions (an objective and its constraints) at their reductions, numbering the distinct
    reductions across all of them: a TPR spread in the objective and in a constraint is computed once."""
    found: dict[GroupReduction, sympy.Symbol] = {}
    reductions: list[Reduction] = []

    def placeholder(node):
        symbol = found.get(node)
        if symbol is None:
            symbol = found[node] = reduction_symbol(len(reductions))
            reductions.append(Reduction(symbol, type(node).kind, node.args[0]))
        return symbol

    outers = [expr.replace(lambda node: isinstance(node, GroupReduction), placeholder) for expr in exprs]
    return outers, tuple(reductions)


def joint_degree(expr: sympy.Expr):
    """d with f(λ·table) = λ^d·f(table) when every entry, the batch's and each group's, is scaled by λ; None if f
    has no such degree. A reduction has its argument's degree."""
    from .metric import scale_degree

    unreduced = expr.replace(lambda node: isinstance(node, GroupReduction), lambda node: node.args[0])
    return scale_degree(unreduced.xreplace(FROM_GROUP))


def group_entry_symbols(group: int) -> tuple[sympy.Symbol, ...]:
    """Group ``group``'s own entries, e.g. TP_0, FN_0, FP_0, TN_0 (for expanded forms and oracles)."""
    return tuple(sympy.Symbol(f"{s.name}_{group}", nonnegative=True) for s in CONFUSION_SYMBOLS)


def expand_groups(expr: sympy.Expr, groups: int, group: int | None = None) -> sympy.Expr:
    """``expr`` written out for ``groups`` groups, over TP_0, …, TN_{G−1}: the batch's entries become the sums
    over groups, max_g(h) the Max over the groups' h (sympy's, so every group counts: an expanded form is
    defined only where every group's h is). A free g takes the value ``group``."""
    per_group = [group_entry_symbols(k) for k in range(groups)]
    pooled = {s: sum(entries[i] for entries in per_group) for i, s in enumerate(CONFUSION_SYMBOLS)}

    def at(inner, k):
        return inner.xreplace({**pooled, **dict(zip(GROUP_SYMBOLS, per_group[k]))})

    def expand_reduction(node):
        values = [at(node.args[0], k) for k in range(groups)]
        return {"max": lambda: sympy.Max(*values), "min": lambda: sympy.Min(*values),
                "mean": lambda: sympy.Add(*values) / groups, "sum": lambda: sympy.Add(*values)}[node.kind]()

    expanded = expr.replace(lambda node: isinstance(node, GroupReduction), expand_reduction)
    if free_group_entries(expr):
        if group is None:
            raise ValueError("the expression reads TP[g] … outside a reduction: say which group with group=")
        expanded = expanded.xreplace(dict(zip(GROUP_SYMBOLS, per_group[group])))
    return expanded.xreplace(pooled)


# ---------------------------------------------------------------------------------------------
# Parsing: called by metricc.parse's converter for ``X[g]`` and ``max_g(...)``.

_GROUP_HELP = ("group entries are written TP[g], FN[g], FP[g], TN[g] (or P[g], N[g], PP[g], PN[g], n[g], or a "
               "catalog metric such as recall[g]), g being the group index")


def convert_subscript(converter, node: ast.Subscript) -> sympy.Expr:
    """``TP[g]``, ``P[g]`` or ``recall[g]``: group g's entry, sum or catalog metric."""
    from .catalog import lookup

    index = node.slice
    if not (isinstance(index, ast.Name) and index.id == GROUP_INDEX):
        converter.fail(index, f"only the group index g may appear in brackets: {_GROUP_HELP}")
    if not isinstance(node.value, ast.Name):
        converter.fail(node.value, f"only a confusion symbol or a catalog metric can be indexed by g: {_GROUP_HELP}")
    assert isinstance(node.value, ast.Name)  # fail() raised otherwise
    name = node.value.id
    entries = {symbol.name: TO_GROUP[symbol] for symbol in CONFUSION_SYMBOLS}
    if name in entries:
        return entries[name]
    if name in GROUP_DERIVED:
        return GROUP_DERIVED[name]
    entry = lookup(name)
    if entry is None or entry.is_curve:
        converter.fail(node.value, f"'{name}' cannot be indexed by g: {_GROUP_HELP}")
    from .parse import parse

    metric = parse(name)
    # The catalog's default parameters, bound exactly (beta = 1 reads back as 1, not 1.0).
    values = {symbol: sympy.Rational(repr(value)) for symbol, value in metric.param_symbols.items()}
    return metric.expr.xreplace(values).xreplace(TO_GROUP)


def convert_reduction(converter, node: ast.Call, depth: int) -> sympy.Expr:
    """``max_g(expr)`` and its kin: one argument, reading group g's entries, no reduction inside."""
    assert isinstance(node.func, ast.Name)  # the converter dispatches on the called name
    name = node.func.id
    if node.keywords:
        converter.fail(node.keywords[0].value, f"{name}() takes no keyword arguments")
    if len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
        converter.fail(node, f"{name}() takes exactly 1 argument, an expression in group g's entries, got "
                             f"{len(node.args)}")
    inner = converter.convert(node.args[0], depth + 1)
    if inner.has(GroupReduction):
        converter.fail(node.args[0], f"{name}() of an expression that already reduces over the groups: "
                                     "reductions cannot be nested")
    if not inner.free_symbols & set(GROUP_SYMBOLS):
        converter.fail(node.args[0], f"{name}() reduces over the groups, but its argument reads no group entry; "
                                     f"{_GROUP_HELP}")
    if name == "sum_g" and _linear_in_groups(inner):
        return inner.xreplace(FROM_GROUP)  # sum_g(FP[g]) is FP: the batch's entry, defined on every batch
    return REDUCTIONS[name](inner)


def _linear_in_groups(expr: sympy.Expr) -> bool:
    """A linear combination of group g's entries alone (no constant, nothing of the batch's)."""
    if expr.free_symbols - set(GROUP_SYMBOLS) or expr.subs({s: 0 for s in GROUP_SYMBOLS}) != 0:
        return False
    return all(sympy.diff(expr, s).free_symbols == set() for s in GROUP_SYMBOLS)


def name_hint(name: str) -> str | None:
    """What to say about a bare ``g`` (or a reduction named without a call)."""
    if name == GROUP_INDEX:
        return f"'g' alone is not a value: {_GROUP_HELP}, inside max_g(...), min_g(...), mean_g(...) or sum_g(...)"
    if name in REDUCTIONS:
        return f"'{name}' is a function: call it, as in {name}(TP[g]/P[g])"
    return None


__all__ = ["FN_G", "FP_G", "GROUP_SYMBOLS", "GroupForm", "GroupReduction", "REDUCTIONS", "Reduction", "TN_G", "TP_G",
           "expand_groups", "free_group_entries", "group_form", "has_group_entries", "max_g", "mean_g", "min_g",
           "sum_g"]
