"""Equivalent shorter forms of sympy expressions, chosen by structure within a time budget.

Both the analysis (derivatives it proves signs of) and the derivation (the partials the
code generator prints) tidy expressions, so this helper sits below both stages: neither
imports the other for it. ``sympy.simplify`` is offered only expressions it finishes fast
(no case splits, small integer or half-integer powers), so the chosen form does not hinge
on the machine's speed.
"""

from __future__ import annotations

import sympy

from .budget import try_within
from .metric import CONFUSION_SYMBOLS
from .signs import sign

SIMPLIFY_SECONDS = 1.0


def tidy(expr: sympy.Expr, seconds: float = SIMPLIFY_SECONDS) -> sympy.Expr:
    """The shortest of a few equivalent forms that sympy finds within the budget.

    sympy's equivalences hold over the complex numbers: it may rewrite sqrt(|u|)'s
    derivative with |u**(3/2)|, which is the same modulus but NaN in real floating point
    wherever u < 0. Forms that take a root or logarithm of something not known to be
    non-negative, beyond those ``expr`` already takes, are not candidates.
    """
    candidates = [expr, sympy.together(expr)]
    if expr.is_rational_function(*CONFUSION_SYMBOLS):
        candidates.append(try_within(seconds, lambda: sympy.factor(sympy.cancel(expr)), expr))
    if _simplify_is_tractable(expr):
        candidates.append(try_within(seconds, lambda: sympy.simplify(expr), expr))
    allowed = _unsafe_roots_and_logs(expr)
    return min((c for c in candidates if _unsafe_roots_and_logs(c) <= allowed), key=sympy.count_ops)


# Where sympy.simplify routinely runs for seconds (case splits, high or fractional powers), the
# budget would decide the emitted form by the machine's load; such expressions are not offered
# to it at all, so the generated code is the same on every machine.
_PIECEWISE_FUNCTIONS = (sympy.Heaviside, sympy.Min, sympy.Max, sympy.Piecewise, sympy.Abs, sympy.sign)
_TRACTABLE_POWER = 8


def _simplify_is_tractable(expr: sympy.Expr) -> bool:
    """Whether ``expr`` is built from the pieces on which sympy.simplify finishes fast: no case
    splits, and powers that are integers or halves up to ``_TRACTABLE_POWER``."""
    if expr.has(*_PIECEWISE_FUNCTIONS):
        return False
    for power in expr.atoms(sympy.Pow):
        exponent = power.exp
        if not (exponent.is_Rational and (2 * exponent).is_integer and abs(exponent) <= _TRACTABLE_POWER):
            return False
    return True


def _unsafe_roots_and_logs(expr: sympy.Expr) -> set[sympy.Expr]:
    """Arguments of non-integer powers and logarithms in ``expr`` not structurally proved ≥ 0."""
    unsafe = set()
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and not node.exp.is_integer:
            argument = node.base
        elif isinstance(node, sympy.log):
            argument = node.args[0]
        else:
            continue
        if sign(argument, expand=False) not in ("+", "0"):
            unsafe.add(argument)
    return unsafe
