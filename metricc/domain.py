"""Where a metric is defined, and where it blows up: the analysis's witnesses.

A loss can be built on a metric only if the metric has a finite value on every batch
(n > 0) except on faces of the domain, the batches where a sum of confusion entries
vanishes (no positives, no predicted positives, ...), where ``zero_division`` supplies
the value. This module finds, with exact witnesses:

- poles and invalid arguments inside the domain: a denominator, or a logarithm's argument,
  that vanishes at a batch with every entry positive (``1/(TP - FP)`` at TP = FP), and a
  root or logarithm of something negative at some batch (``log(TP - FP)`` at TP < FP);
- families of batches along which the metric diverges (its range is unbounded): scaling the
  whole batch (count-valued metrics such as ``TP - FP``), approaching a face where a
  denominator vanishes and the numerator does not (``8/TP`` as TP → 0), or approaching an
  interior pole. Each divergence is an infinite sympy limit along the family, confirmed by
  evaluating the metric there with 30 significant digits.

Every function takes ``run(seconds, work, fallback)``, the analysis's time-budgeted runner.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import mpmath
import numpy as np
import sympy

from .metric import CONFUSION_SYMBOLS, to_text
from .signs import sign

T = sympy.Symbol("t", positive=True)
_CONFUSION = frozenset(CONFUSION_SYMBOLS)


def describe_batch(values: dict) -> str:
    """``TP = FP = 1, FN = 0, TN = 2``: entries with equal values grouped, in the order TP FN FP TN."""
    groups: dict[str, list[str]] = {}
    for symbol in CONFUSION_SYMBOLS:
        groups.setdefault(_show(values[symbol]), []).append(symbol.name)
    return ", ".join(" = ".join(names) + f" = {value}" for value, names in groups.items())


def _show(value) -> str:
    value = sympy.nsimplify(value) if isinstance(value, float) else sympy.sympify(value)
    if value.is_Rational:
        return str(value)
    return to_text(value) if value.free_symbols else f"{float(value):.6g}"


def singular_arguments(f: sympy.Expr) -> list[tuple[str, sympy.Expr, sympy.Expr]]:
    """(what, argument, node) for every division, root and logarithm of an expression of the entries.

    ``what`` is "division" (a negative power), "root" (a non-integer power; a root in a
    denominator is both) or "log".
    """
    found = []
    for node in sympy.preorder_traversal(f):
        if node.is_Pow and node.exp.is_number and node.base.free_symbols & _CONFUSION:
            if not node.exp.is_integer:
                found.append(("root", node.base, node))
            if node.exp.is_negative:
                found.append(("division", node.base, node))
        elif isinstance(node, sympy.log) and node.args[0].free_symbols & _CONFUSION:
            found.append(("log", node.args[0], node))
    return found


def zero_factors(expr: sympy.Expr, run) -> list[sympy.Expr]:
    """Factors of the numerator of ``expr``: where one vanishes, so does ``expr``."""
    def work():
        numerator = sympy.fraction(sympy.together(expr))[0]
        if numerator.is_polynomial(*CONFUSION_SYMBOLS):
            return [base for base, _ in sympy.factor_list(numerator)[1]]
        return [term.as_base_exp()[0] for term in sympy.Mul.make_args(numerator)]

    factors = run(0.5, work, [expr])
    return [base for base in factors if base.free_symbols & _CONFUSION]


# -- witnesses -------------------------------------------------------------------------------

# Small batches to look for witnesses at: every entry in {0, 1, 2, 5} (n > 0), and the
# interior points among them first (every entry positive), where zero_division never applies.
_GRID = sorted((p for p in itertools.product((0, 1, 2, 5), repeat=4) if any(p)),
               key=lambda p: (0 in p, sum(p), p))


def _grid_values(expr: sympy.Expr) -> np.ndarray:
    """``expr`` at every batch of the grid, in floating point (a screen: witnesses are then checked exactly)."""
    columns = np.array(_GRID, dtype=np.float64).T
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            function = sympy.lambdify(CONFUSION_SYMBOLS, expr, modules="numpy")
            values = np.asarray(function(*columns), dtype=np.float64)
        except Exception:  # a printer or evaluation failure: no screen, so no witness
            return np.full(len(_GRID), np.nan)
    return np.broadcast_to(values, (len(_GRID),)).copy()


def exact_value(expr: sympy.Expr, point: dict) -> sympy.Expr | None:
    """``expr`` at the exact batch ``point``, evaluated to 30 digits; None where it is undefined or not real."""
    value = expr.xreplace(point)
    if value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo) or value.free_symbols:
        return None
    numeric = value.evalf(30)
    if not numeric.is_real or numeric.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    return numeric


def negative_witness(argument: sympy.Expr, defined, run) -> dict | None:
    """A batch where ``argument`` < 0 and the rest of the metric is defined, checked exactly."""
    values = _grid_values(argument)
    for index in np.flatnonzero(np.isfinite(values) & (values < 0))[:6]:
        point = {s: sympy.Integer(v) for s, v in zip(CONFUSION_SYMBOLS, _GRID[index])}
        value = run(0.3, lambda point=point: exact_value(argument, point), None)
        if value is not None and value < 0 and defined(point):
            return point
    return None


def interior_zero(factor: sympy.Expr, run) -> tuple[dict, ...] | None:
    """Proof that ``factor`` vanishes at a batch with every entry positive.

    Returns (point,) with ``factor(point) = 0`` exactly, found by solving for one entry with
    the others at small integers; or (a, b) with ``factor`` > 0 at ``a`` and < 0 at ``b``,
    both interior, so that it vanishes between them (offered only for factors continuous on
    the open orthant: no roots, logarithms or denominators). None when neither is found.
    """
    symbols = [s for s in CONFUSION_SYMBOLS if s in factor.free_symbols]
    for others in (1, 2):
        for unknown in symbols:
            point = {s: sympy.Integer(others) for s in CONFUSION_SYMBOLS if s != unknown}
            reduced = factor.xreplace(point)
            roots = run(0.3, lambda reduced=reduced, unknown=unknown: sympy.solve(reduced, unknown), [])
            for root in sorted(roots, key=lambda r: (not r.is_Rational, sympy.count_ops(r))):
                if root.is_real and root.is_positive:
                    candidate = {**point, unknown: root}
                    if run(0.3, lambda c=candidate: factor.xreplace(c).equals(0), False):
                        return (candidate,)
    continuous = not factor.has(sympy.log) and all(p.exp.is_integer for p in factor.atoms(sympy.Pow))
    if not continuous:
        return None
    values = _grid_values(factor)
    interior = np.array([0 not in p for p in _GRID])
    above = np.flatnonzero(interior & np.isfinite(values) & (values > 0))
    below = np.flatnonzero(interior & np.isfinite(values) & (values < 0))
    if above.size and below.size:
        a, b = ({s: sympy.Integer(v) for s, v in zip(CONFUSION_SYMBOLS, _GRID[i])} for i in (above[0], below[0]))
        va = run(0.3, lambda: exact_value(factor, a), None)
        vb = run(0.3, lambda: exact_value(factor, b), None)
        if va is not None and vb is not None and va > 0 > vb:
            return (a, b)
    return None


def describe_zero(factor: sympy.Expr, witness: tuple[dict, ...]) -> str:
    if len(witness) == 1:
        return f"{to_text(factor)} = 0 at {describe_batch(witness[0])}"
    return (f"{to_text(factor)} is positive at {describe_batch(witness[0])} and negative at "
            f"{describe_batch(witness[1])}, so it is 0 between them")


# -- divergence ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Family:
    """Batches depending on t along which the metric tends to ``limit`` (±∞) as t → ``toward``.

    Attributes:
        entries: (TP, FN, FP, TN) as expressions of t.
        toward: ``0`` (from above) or ``oo``.
        kind: "scale" (the whole batch scaled by t), "face" (entries → 0, onto a face where a
            denominator vanishes), "pole" (onto an interior zero of a denominator or logarithm),
            "sample" (from the centre of the batch domain toward a sampled extreme batch).
        limit: ``oo`` or ``-oo``, once proved.
    """

    entries: tuple[sympy.Expr, sympy.Expr, sympy.Expr, sympy.Expr]
    toward: sympy.Expr
    kind: str
    limit: sympy.Expr | None = None
    cause: str = "denominator"  # for "pole": what vanishes there ("denominator" or "logarithm")

    def substitution(self) -> dict:
        return dict(zip(CONFUSION_SYMBOLS, self.entries))

    def at(self, t) -> dict:
        """The batch at parameter value ``t`` (a number)."""
        return {s: sympy.sympify(e).xreplace({T: sympy.sympify(t)}) for s, e in zip(CONFUSION_SYMBOLS, self.entries)}

    def description(self) -> str:
        """E.g. ``f → +∞ along TP = t, FN = FP = TN = 0 as t → ∞``."""
        limit = "+∞" if self.limit == sympy.oo else "−∞"
        toward = "∞" if self.toward == sympy.oo else "0"
        entries = dict(zip(CONFUSION_SYMBOLS, self.entries))
        return f"f → {limit} along {describe_batch(entries)} as t → {toward}"


def _scale_families() -> list[Family]:
    """The whole batch scaled by t → ∞ or t → 0, from a few base batches."""
    bases = [(1, 0, 0, 0), (0, 0, 1, 0), (0, 1, 0, 0), (0, 0, 0, 1), (1, 1, 1, 1), (1, 0, 1, 0), (0, 1, 0, 1),
             (1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0)]
    return [Family(tuple(b * T for b in base), toward, "scale") for toward in (sympy.oo, sympy.Integer(0))
            for base in bases]


def _face_families(faces) -> list[Family]:
    """Onto each face: its entries t → 0, the others 1 (and 2, so that they differ)."""
    families = []
    for face in faces:
        for other in (1, 2):
            entries = tuple(T if s in face else sympy.Integer(other) for s in CONFUSION_SYMBOLS)
            families.append(Family(entries, sympy.Integer(0), "face"))
    return families


def _pole_families(zeros) -> list[Family]:
    """Onto each interior zero (factor, batch, what vanishes): one entry moves by ±t while the others stay."""
    families = []
    for factor, point, cause in zeros:
        for symbol in CONFUSION_SYMBOLS:
            if symbol not in factor.free_symbols:
                continue
            for step in (T, -T):
                entries = tuple(point[s] + (step if s == symbol else 0) for s in CONFUSION_SYMBOLS)
                families.append(Family(entries, sympy.Integer(0), "pole", cause=cause))
    return families


def _mp(value: sympy.Expr):
    """An exact rational as an mpmath number at the working precision (None for anything else)."""
    value = sympy.sympify(value)
    if value.is_Rational:
        return mpmath.mpf(int(value.p)) / int(value.q)
    if value.is_number and value.is_real:
        return mpmath.mpf(value.evalf(mpmath.mp.dps + 5))
    return None


def _screen(f_mp, family: Family) -> int:
    """+1 or −1 when f grows without bound in that direction along ``family`` numerically, else 0."""
    if family.toward == sympy.oo:
        far = (sympy.Integer(10**6), sympy.Integer(10**12))
    else:
        far = (sympy.Rational(1, 10**6), sympy.Rational(1, 10**12))
    values = []
    with mpmath.workdps(30):
        for t in far:
            point = [_mp(e.xreplace({T: t})) for e in family.entries]
            if any(p is None or p < 0 for p in point):
                return 0
            try:
                value = f_mp(*point)
            except (ZeroDivisionError, ValueError, OverflowError, TypeError):
                return 0
            if not isinstance(value, mpmath.mpf) or not mpmath.isfinite(value):
                return 0
            values.append(value)
    near, further = values
    if abs(further) > 10 and abs(further) > 1.5 * abs(near) and (near > 0) == (further > 0):
        return 1 if further > 0 else -1
    return 0


def divergent_families(f: sympy.Expr, defined, faces, zeros, homogeneous, run, wanted=(True, True),
                       extra=()) -> tuple[dict, int]:
    """({0: family with f → −∞, 1: family with f → +∞} for the sides found and ``wanted``, families tried).

    Args:
        f: the metric (parameters bound).
        defined: ``defined(point)`` is True where the written domain holds at an exact batch.
        faces: sets of entries whose vanishing zeroes a denominator or logarithm argument.
        zeros: (factor, point, "denominator" or "logarithm"): interior zeros found.
        homogeneous: whether f is scale-invariant (then scaling cannot diverge).
        run: the budgeted runner.
        wanted: which sides (below, above) to look for.
        extra: further families to try last.
    """
    families = (_face_families(faces) + _pole_families(zeros) + ([] if homogeneous is True else _scale_families())
                + list(extra))
    try:
        f_mp = sympy.lambdify(CONFUSION_SYMBOLS, f, modules="mpmath")
    except Exception:  # nothing to screen with: no divergence is claimed
        return {}, 0
    found: dict[int, Family] = {}
    tried = 0
    for family in families:
        side_wanted = [side for side in (0, 1) if wanted[side] and side not in found]
        if not side_wanted:
            break
        tried += 1
        direction = _screen(f_mp, family)
        side = 1 if direction > 0 else 0
        if not direction or side not in side_wanted:
            continue
        probe = family.at(sympy.Rational(1, 10**6) if family.toward == 0 else sympy.Integer(10**6))
        if not defined(probe):
            continue
        along = f.xreplace(family.substitution())
        limit = run(0.5, lambda along=along, family=family: sympy.limit(along, T, family.toward,
                                                                        "+" if family.toward == 0 else "-"), None)
        if limit == (sympy.oo if side else -sympy.oo):
            found[side] = dataclasses.replace(family, limit=limit)
    return found, tried


def fix_for(family: Family, f: sympy.Expr, degree, text: str) -> str:
    """How to change the metric so that it stays bounded along ``family``."""
    if family.kind == "scale":
        if family.toward == sympy.oo:
            if degree is not None and degree.is_number and degree > 0:
                power = "n" if degree == 1 else f"n**{to_text(degree)}"
                return (f"it counts, so it grows with the batch size: divide by {power} to make it a rate, "
                        f"as in {text}/{power}")
            return "it grows with the batch size: make every term a rate (divide counts by n or by P, N, PP, PN)"
        return ("it grows without bound as the whole batch shrinks (small sample weights): make every term a "
                "rate (a count over a sum of counts, such as TP/P), or add a constant to the denominator")
    if family.kind in ("face", "sample"):
        return ("a denominator vanishes on batches where the numerator does not: add a constant to the "
                "denominator, or include the numerator's terms in it (as TP/(TP + FP) does)")
    if family.cause == "logarithm":
        return ("a logarithm's argument vanishes inside the domain: take the logarithm of something positive "
                "on every batch, such as 1 + a rate")
    return ("a denominator changes sign inside the domain: divide by a sum of confusion entries "
            "(such as TP + FP), which vanishes only on batches where zero_division applies")


def proved_nonnegative(argument: sympy.Expr) -> bool:
    """``argument`` ≥ 0 wherever it is defined, by its sign structure."""
    return sign(argument) in ("+", "0")
