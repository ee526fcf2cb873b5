"""Sign proofs over the non-negative orthant of confusion matrices.

``sign(expr)`` returns "+" when the expression is ≥ 0 at every confusion matrix
where it is defined, "-" when ≤ 0, "0" when identically 0, and "?" when this
structural reasoning cannot tell. sympy's own ``is_nonnegative`` answers None
for 1/(TP + FN), because it must allow the zero denominator; a loss only ever
evaluates the metric where it is defined, so here a reciprocal of a
non-negative quantity is non-negative. Sums of mixed sign are expanded and
proved term by term when every monomial has a non-negative coefficient.
"""

from __future__ import annotations

import itertools

import sympy

from .budget import try_within
from .metric import CONFUSION_SYMBOLS

_NONNEGATIVE_SYMBOLS = frozenset(CONFUSION_SYMBOLS)
EXPAND_SECONDS = 0.5


def _combine_product(signs: list[str]) -> str:
    if "0" in signs:
        return "0"
    if "?" in signs:
        return "?"
    return "-" if signs.count("-") % 2 else "+"


def _expanded_sign(expr: sympy.Expr) -> str:
    """Sign of a polynomial in the confusion symbols from the signs of its coefficients."""
    def work():
        expanded = sympy.expand(expr)
        if expanded == 0:
            return "0"
        if not expanded.free_symbols <= _NONNEGATIVE_SYMBOLS:
            return "?"
        terms = sympy.Add.make_args(expanded)
        coefficient_signs = set()
        for term in terms:
            coefficient, rest = term.as_coeff_Mul()
            if sign(rest, expand=False) != "+":
                return "?"
            coefficient_signs.add("+" if coefficient > 0 else "-")
        if coefficient_signs == {"+"}:
            return "+"
        if coefficient_signs == {"-"}:
            return "-"
        return "?"

    return try_within(EXPAND_SECONDS, work, "?")


def sign(expr: sympy.Expr, expand: bool = True) -> str:
    """"+", "-", "0" or "?": the sign of ``expr`` wherever it is defined on the orthant."""
    if expr.is_Number:
        if expr.is_zero:
            return "0"
        if expr.is_extended_real:
            return "+" if expr.is_positive else "-"
        return "?"
    if expr.is_Symbol:
        return "+" if expr in _NONNEGATIVE_SYMBOLS else "?"
    if expr.is_number:
        value = expr.evalf(30)
        if value.is_real:
            return "0" if value == 0 else ("+" if value > 0 else "-")
        return "?"
    if expr.is_Add:
        signs = {sign(a, expand) for a in expr.args} - {"0"}
        if signs <= {"+"}:
            return "+" if signs else "0"
        if signs <= {"-"}:
            return "-"
        if expr.has(sympy.Min, sympy.Max, sympy.Abs):
            through = _sign_through_extremum(expr, expand)
            if through != "?":
                return through
        return _expanded_sign(expr) if expand and expr.is_polynomial(*CONFUSION_SYMBOLS) else "?"
    if expr.is_Mul:
        return _combine_product([sign(a, expand) for a in expr.args])
    if expr.is_Pow:
        base = sign(expr.base, expand)
        exponent = expr.exp
        if base == "+":
            return "+"
        if base == "0":
            return "0" if exponent.is_positive else "?"
        if base == "-" and exponent.is_Integer:
            return "+" if int(exponent) % 2 == 0 else "-"
        if base == "?" and exponent.is_Integer and int(exponent) % 2 == 0:
            return "+"
        return "?"
    if isinstance(expr, (sympy.exp, sympy.Abs, sympy.Heaviside)):
        return "+"
    if isinstance(expr, (sympy.Min, sympy.Max)):
        signs = {sign(a, expand) for a in expr.args}
        if signs <= {"+", "0"}:
            return "+" if "+" in signs else "0"
        if signs <= {"-", "0"}:
            return "-" if "-" in signs else "0"
        if isinstance(expr, sympy.Max) and "+" in signs:
            return "+"
        if isinstance(expr, sympy.Min) and "-" in signs:
            return "-"
        return "?"
    if isinstance(expr, sympy.sign):
        inner = sign(expr.args[0], expand)
        return inner if inner in "+-0" else "?"
    if isinstance(expr, sympy.log):  # log u ≥ 0 exactly where u ≥ 1 (and u > 0 wherever it is defined)
        argument = expr.args[0]
        if sign(argument - 1, expand) in "+0":
            return "+"
        if sign(1 - argument, expand) in "+0":
            return "-"
    return "?"


_MAX_EXTREMUM_ARGS = 32  # beyond this, distributing a sum over min/max costs more than it proves


def _sign_through_extremum(expr: sympy.Expr, expand: bool) -> str:
    """Sign of ``rest ± min(b…)``, ``rest ± max(b…)`` or ``rest ± |b|`` from the signs of ``rest ± b_i``.

    rest + min(b) ≥ 0 iff every rest + b_i ≥ 0, and ≤ 0 if one is; rest + max(b) ≥ 0 if one
    rest + b_i is, and ≤ 0 iff every one is; −min(b) = max(−b) and −max(b) = min(−b). So
    ``1 − min(TP/P, TN/N)`` is ≥ 0 because ``1 − TP/P`` is.
    """
    for term in expr.args:
        coefficient, extremum = term.as_coeff_Mul()
        if isinstance(extremum, sympy.Abs):  # |x| = max(x, −x)
            extremum = sympy.Max(extremum.args[0], -extremum.args[0], evaluate=False)
        if coefficient not in (1, -1) or not isinstance(extremum, (sympy.Min, sympy.Max)):
            continue
        if len(extremum.args) > _MAX_EXTREMUM_ARGS:
            return "?"
        rest = expr - term
        is_min = isinstance(extremum, sympy.Min) == (coefficient == 1)  # −max(b) = min(−b)
        signs = [sign(sympy.together(rest + coefficient * b), expand) for b in extremum.args]
        nonnegative = [s in "+0" for s in signs]
        nonpositive = [s in "-0" for s in signs]
        if is_min:
            if all(nonnegative):
                return "+"
            if any(nonpositive):
                return "-"
        else:
            if any(nonnegative):
                return "+"
            if all(nonpositive):
                return "-"
        return "?"
    return "?"


def orthant_zero_sets(expr: sympy.Expr) -> list[frozenset] | None:
    """The minimal sets of confusion symbols whose vanishing makes ``expr`` vanish.

    Defined for polynomials with non-negative coefficients (``TP + FN``,
    ``(TP + FP)*(FN + TN)`` expanded, ...): such a polynomial is zero exactly when
    every monomial has a zero factor, so it vanishes only on faces of the orthant,
    never inside it. The answer lists each minimal way of zeroing all monomials;
    it is empty when a positive constant term means it never vanishes. Returns
    None for anything else (mixed signs, non-polynomials): such an expression may
    vanish inside the domain.
    """
    def work():
        expanded = sympy.expand(expr)
        if not expanded.free_symbols <= _NONNEGATIVE_SYMBOLS or not expanded.is_polynomial(*CONFUSION_SYMBOLS):
            return None
        constant = expanded.as_independent(*CONFUSION_SYMBOLS, as_Add=True)[0]
        if constant.is_negative:
            return None
        monomials = []
        for term in sympy.Add.make_args(expanded - constant):
            coefficient, rest = term.as_coeff_Mul()
            if coefficient < 0:
                return None
            monomials.append(frozenset(rest.free_symbols))
        if constant.is_positive or not monomials:
            return []
        hitting = [frozenset(c) for k in range(1, 5) for c in itertools.combinations(CONFUSION_SYMBOLS, k)
                   if all(m & set(c) for m in monomials)]
        return [h for h in hitting if not any(other < h for other in hitting)]

    return try_within(EXPAND_SECONDS, work, None)


def positive(expr: sympy.Expr) -> bool:
    """True when ``expr`` > 0 at every confusion matrix where it is defined (structural proof; False: unknown).

    ``1 + TP``, ``exp(-FP)``, ``sqrt(2 + FN)*(TP + 1)``: quantities a batch can never make 0, so
    dividing by them or taking their logarithm is safe everywhere.
    """
    if expr.is_number:
        value = expr.evalf(30)
        return bool(value.is_real and value > 0)
    if expr.is_Symbol:
        return False
    if expr.is_Add:
        return all(sign(a) in "+0" for a in expr.args) and any(positive(a) for a in expr.args)
    if expr.is_Mul:
        return all(positive(a) for a in expr.args)
    if expr.is_Pow:
        return positive(expr.base) and bool(expr.exp.is_real)
    if isinstance(expr, sympy.exp):
        return bool(expr.args[0].is_real)
    if isinstance(expr, sympy.Abs):
        return positive(expr.args[0])
    if isinstance(expr, sympy.Max):
        return any(positive(a) for a in expr.args)
    if isinstance(expr, sympy.Min):
        return all(positive(a) for a in expr.args)
    return False


def face_zero_sets(expr: sympy.Expr) -> list[frozenset] | None:
    """Like :func:`orthant_zero_sets`, for any expression built from non-negative pieces.

    A sum of non-negative terms vanishes exactly where every term does, a product where
    one factor does, a positive power (``sqrt(TP + FN)``) where its base does, and
    ``exp``, positive constants and reciprocals never do. So ``sqrt(TP) + FP`` vanishes
    only where TP = FP = 0, a face of the orthant. Returns None where this structure
    does not settle it (then the expanded polynomial is tried).
    """
    structural = _structural_zero_sets(expr)
    return structural if structural is not None else orthant_zero_sets(expr)


def _minimal(sets) -> list[frozenset]:
    unique = set(sets)
    minimal = (s for s in unique if not any(other < s for other in unique))
    return sorted(minimal, key=lambda s: (len(s), sorted(map(str, s))))


def _structural_zero_sets(expr: sympy.Expr) -> list[frozenset] | None:
    if expr.is_number:
        value = expr.evalf(30)
        return [] if value.is_real and value != 0 else None
    if expr in _NONNEGATIVE_SYMBOLS:
        return [frozenset({expr})]
    if positive(expr):
        return []
    if expr.is_Add:
        signs = {sign(a, expand=False) for a in expr.args}
        if not (signs <= {"+", "0"} or signs <= {"-", "0"}):
            return None
        combined: list[frozenset] = [frozenset()]
        for term in expr.args:
            term_sets = _structural_zero_sets(term)
            if term_sets is None:
                return None
            if not term_sets:
                return []  # a term that never vanishes
            combined = _minimal(a | b for a in combined for b in term_sets)
        return combined
    if expr.is_Mul:
        sets = []
        for factor in expr.args:
            factor_sets = _structural_zero_sets(factor)
            if factor_sets is None:
                return None
            sets += factor_sets
        return _minimal(sets)
    if expr.is_Pow and expr.exp.is_number:
        if expr.exp.is_negative:
            return []  # 1/u is never 0 (where u = 0 it is undefined, which is a condition of its own)
        return _structural_zero_sets(expr.base) if expr.exp.is_positive else None
    if isinstance(expr, sympy.Abs):
        return _structural_zero_sets(expr.args[0])
    return None
