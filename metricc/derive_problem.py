"""Closed-form gradients of a constrained (and grouped) metric loss: the Lagrangian, derived with sympy.

With multipliers λ_k ≥ 0 and each constraint written as a slack h_k = c_k − expr_k (for ``expr_k >= c_k``) or
expr_k − c_k (for ``<=``), which holds where h_k ≤ 0, the model minimises the Lagrangian

    L = loss(f) + Σ_k λ_k·h_k,      loss(f) = 1 − f (f maximised) or f,

and the multipliers rise where their constraint is violated (projected gradient ascent, :mod:`metricc.lagrangian`).
L is a function of the soft confusion entries, so its gradient keeps the shape of every metricc loss: one factor
per label, now per group too. For a sample of group s, ŷ moves TP[s] and the batch's TP = Σ_g TP[g] together, so

    ∂Q/∂ŷ_i (y_i = 1) = Q+ + Q+_g(s) + Σ_j ∂Q/∂r_j · (w_j(s)·h_j+_g(s) + Σ_g w_j(g)·h_j+(g))

for every quantity Q (the objective, each constraint), where Q+ = ∂Q/∂TP − ∂Q/∂FN over the batch's entries,
Q+_g = ∂Q/∂TP[g] − ∂Q/∂FN[g] over group g's (only where g is free), r_j = max_g/min_g/mean_g/sum_g of h_j, and
w_j(g) = ∂r_j/∂h_j(g): 1 at the extreme group (split between ties), 1/G' for a mean over the G' groups where h_j is
defined, 1 for a sum. Negatives alike with FP and TN. This module derives Q±, Q±_g, ∂Q/∂r_j and the h_j's
derivatives, shares subexpressions with ``sympy.cse``, and prints it all, as :mod:`metricc.derive` does for a metric.
"""

from __future__ import annotations

import dataclasses

import sympy

from . import groups as _groups
from .constraints import Constraint
from .derive import normalize_thresholds
from .metric import FN, FP, TN, TP, differentiate, to_text
from .problem import Problem
from .relax import Relaxation, resolve_relaxation
from .simplify import tidy

TP_G, FN_G, FP_G, TN_G = _groups.GROUP_SYMBOLS

_WEIGHTS = {"max": "1 at the group(s) with the largest h (split evenly between ties), 0 elsewhere",
            "min": "1 at the group(s) with the smallest h (split evenly between ties), 0 elsewhere",
            "mean": "1/G' for each of the G' groups where h is defined",
            "sum": "1 for each group where h is defined"}


@dataclasses.dataclass(frozen=True)
class QuantityDerivation:
    """One function of the table the loss differentiates: the objective f, a constraint c_k or a reduced h_j.

    Attributes:
        name: ``"f"``, ``"c_1"``, … or ``"h_1"``, ….
        expr: the expression with each reduction replaced by its placeholder r_j.
        value, positive, negative: the value and Q± = ∂Q/∂TP − ∂Q/∂FN, ∂Q/∂FP − ∂Q/∂TN (the batch's entries).
        group_positive, group_negative: the same over group g's entries (0 unless g is free in ``expr``).
        by_reduction: ∂Q/∂r_j for every reduction of the problem (0 where Q does not read r_j).
        common_subexpressions, outputs: ``sympy.cse`` of the values above, in that order.
    """

    name: str
    expr: sympy.Expr
    positive: sympy.Expr
    negative: sympy.Expr
    group_positive: sympy.Expr
    group_negative: sympy.Expr
    by_reduction: tuple[sympy.Expr, ...]
    common_subexpressions: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    outputs: tuple[sympy.Expr, ...]

    @property
    def per_group(self) -> bool:
        return bool(self.expr.free_symbols & set(_groups.GROUP_SYMBOLS))


@dataclasses.dataclass(frozen=True)
class ProblemDerivation:
    """Everything the code generator and ``metricc derive`` print for a problem.

    Attributes:
        problem: the objective, constraints and group count.
        relaxation, thresholds: as for a metric (one threshold: the constraints are read at it).
        direction: the objective's, ``"maximize"`` (loss = 1 − f) or ``"minimize"``.
        reductions: the distinct group reductions r_j = kind_g(h) over all quantities.
        terms: the distinct arguments h of the reductions, derived (their ``by_reduction`` is empty).
        reduction_terms: for each reduction, the index of its argument in ``terms`` (max_g(h) - min_g(h)
            computes h once).
        objective: f, derived.
        constraints: c_k, derived, in the order of ``problem.constraints``.
    """

    problem: Problem
    relaxation: Relaxation
    thresholds: tuple[float, ...]
    direction: str
    reductions: tuple[_groups.Reduction, ...]
    terms: tuple[QuantityDerivation, ...]
    reduction_terms: tuple[int, ...]
    objective: QuantityDerivation
    constraints: tuple[QuantityDerivation, ...]

    @property
    def metric(self):
        return self.problem.objective

    @property
    def loss_sign(self) -> float:
        return -1.0 if self.direction == "maximize" else 1.0

    def loss_text(self, f: str = "f") -> str:
        return f"1 - {f}" if self.direction == "maximize" else f

    @property
    def scale_invariant(self) -> bool:
        """Whether every quantity is unchanged by scaling the whole table (the batch's and every group's entries):
        the runtime may then evaluate them at the table divided by its total."""
        exprs = [self.problem.objective.expr] + [c.metric.expr for c in self.problem.constraints]
        return all(_groups.joint_degree(e) == 0 for e in exprs)

    def text(self) -> str:
        """A plain-text derivation: the problem, the Lagrangian, each quantity's derivatives, the per-sample
        gradient per label and group, and the chain rule."""
        problem = self.problem
        sign = "-" if self.direction == "maximize" else ""
        if problem.has_objective:
            lines = [f"objective   f = {to_text(problem.objective.expr)}   ({self.direction}d: "
                     f"loss = {self.loss_text()})"]
        else:
            lines = ["objective   none (f = 0): the loss is the constraints' term, to add to your own loss"]
        if problem.objective.params:
            lines.append("parameters  " + ", ".join(f"{k} = {v:g}" for k, v in problem.objective.params))
        for index, constraint in enumerate(problem.constraints, 1):
            free = "   for every group g" if constraint.per_group else ""
            lines.append(f"constraint  c_{index} = {to_text(constraint.metric.expr)} {constraint.sense} "
                         f"{constraint.level:g}, slack h = {_slack_text(constraint, index)} ≤ 0{free}")
        if problem.constraints:
            terms = " + ".join(f"λ_{k}·({_slack_text(c, k)})" for k, c in enumerate(problem.constraints, 1))
            lines += [f"Lagrangian  L = {self.loss_text()} + {terms},   λ ≥ 0 (one per constraint"
                      + (", per group where g is free)" if any(c.per_group for c in problem.constraints) else ")"),
                      "            the model descends L; each λ ascends its slack at hard predictions, "
                      "λ ← min(max(λ + η·h, 0), λ_max)"]
        else:
            lines.append(f"loss        L = {self.loss_text()}")
        lines += ["", "soft confusion entries (w: sample weight, y: label, ŷ: soft prediction)",
                  "            TP = Σ w·y·ŷ    FN = Σ w·y·(1-ŷ)    FP = Σ w·(1-y)·ŷ    TN = Σ w·(1-y)·(1-ŷ)"]
        if problem.grouped:
            lines += [f"groups      G = {problem.groups}; TP[g] = Σ over group g's samples (FN[g], FP[g], TN[g] "
                      "alike), TP = Σ_g TP[g]"]
        lines.append("")
        for term in self.terms:
            lines.append(f"group term  {term.name}(g) = {to_text(term.expr)}")
            lines += _quantity_lines(term, term.name)
        for reduction, index in zip(self.reductions, self.reduction_terms):
            name = self.terms[index].name
            lines += [f"reduction   {reduction.symbol} = {reduction.kind}_g {name}(g),   w(g) = ∂{reduction.symbol}/∂"
                      f"{name}(g) = {_WEIGHTS[reduction.kind].replace(' h', ' ' + name)}"]
        if self.reductions:
            lines.append("")
        for quantity in (self.objective, *self.constraints):
            lines.append(f"{quantity.name:<11} = {to_text(quantity.expr)}")
            lines += _quantity_lines(quantity, quantity.name)
            lines.append("")
        lines.append("per-sample gradient of L, sample i of label y_i and group s (Q± as above, all at this batch)")
        for label, symbol in (("1", "+"), ("0", "-")):
            text = f"{sign}{self._part(self.objective, symbol)}"
            for k, (c, q) in enumerate(zip(problem.constraints, self.constraints), 1):
                text += f" {'+' if c.sense == '<=' else '−'} λ_{k}·{self._part(q, symbol)}"
            lines.append(f"  y_i = {label}:  ∂L/∂ŷ_i = w_i·({text})")
        if self.reductions:
            lines.append("            with ∂r/∂ŷ_i = w(s)·h±_g(s) + Σ_g w(g)·h±(g) for r = kind_g h")
        lines += ["", "chain rule to the logit z_i (p_i = σ(z_i))",
                  "            ∂L/∂z_i = ∂L/∂ŷ_i · dŷ/dp · σ(z_i)·σ(-z_i)",
                  f"relaxation  {self.relaxation.formula()}",
                  f"            {self.relaxation.derivative_formula()}"]
        return "\n".join(lines)

    def _part(self, quantity: QuantityDerivation, symbol: str) -> str:
        name = quantity.name
        pieces = [f"{name}{symbol}"]
        if quantity.per_group:
            pieces.append(f"{name}{symbol}_g(s)")
        pieces += [f"∂{name}/∂{r.symbol}·∂{r.symbol}/∂ŷ_i" for r, d in zip(self.reductions, quantity.by_reduction)
                   if d != 0]
        return pieces[0] if len(pieces) == 1 else "(" + " + ".join(pieces) + ")"

    def latex(self) -> str:
        """The problem, its Lagrangian and every derivative as LaTeX (an ``align*`` environment)."""
        names = {s: sympy.Symbol(s.name.replace("[g]", "_g")) for s in _groups.GROUP_SYMBOLS}

        def tex(expr):
            return sympy.latex(expr.xreplace(names))

        problem = self.problem
        rows = [rf"f &= {tex(problem.objective.expr)}"]
        for index, constraint in enumerate(problem.constraints, 1):
            relation = r"\le" if constraint.sense == "<=" else r"\ge"
            rows.append(rf"c_{{{index}}} &= {tex(constraint.metric.expr)} {relation} {constraint.level:g}")
        loss = "1 - f" if self.direction == "maximize" else "f"
        slacks = " + ".join(rf"\lambda_{{{k}}}\,({tex(c.slack().subs(c.metric.expr, sympy.Symbol(f'c_{k}')))})"
                            for k, c in enumerate(problem.constraints, 1))
        rows.append(rf"\mathcal{{L}} &= {loss}" + (f" + {slacks}" if slacks else ""))
        for reduction in self.reductions:
            operator = rf"\{reduction.kind}" if reduction.kind in ("max", "min") else rf"\mathrm{{{reduction.kind}}}"
            rows.append(rf"{reduction.symbol} &= {operator}_g\, {tex(reduction.inner)}")
        for quantity in (*self.terms, self.objective, *self.constraints):
            base, _, number = quantity.name.partition("_")
            name = f"{base}_{{{number}}}" if number else base
            grouped = f"{base}_{{{number + ',' if number else ''}g}}"
            rows.append(rf"{name}^{{+}} &= {tex(quantity.positive)}")
            rows.append(rf"{name}^{{-}} &= {tex(quantity.negative)}")
            if quantity.group_positive != 0 or quantity.group_negative != 0:
                rows.append(rf"{grouped}^{{+}} &= {tex(quantity.group_positive)}")
                rows.append(rf"{grouped}^{{-}} &= {tex(quantity.group_negative)}")
            for reduction, derivative in zip(self.reductions, quantity.by_reduction):
                if derivative != 0:
                    rows.append(rf"\frac{{\partial {name}}}{{\partial {reduction.symbol}}} &= {tex(derivative)}")
        rows.append(rf"& {self.relaxation.latex_formula()}")
        return "\\begin{align*}\n" + " \\\\\n".join(rows) + "\n\\end{align*}"


def _slack_text(constraint: Constraint, index: int) -> str:
    return f"c_{index} - {constraint.level:g}" if constraint.sense == "<=" else f"{constraint.level:g} - c_{index}"


def _quantity_lines(quantity: QuantityDerivation, name: str) -> list[str]:
    lines = [f"            {name}+ = {to_text(quantity.positive)}",
             f"            {name}- = {to_text(quantity.negative)}"]
    if quantity.group_positive != 0 or quantity.group_negative != 0:
        lines += [f"            {name}+_g = {to_text(quantity.group_positive)}",
                  f"            {name}-_g = {to_text(quantity.group_negative)}"]
    for index, derivative in enumerate(quantity.by_reduction, 1):
        if derivative != 0:
            lines.append(f"            ∂{name}/∂r{index} = {to_text(derivative)}")
    return lines


def derive_problem(problem: Problem, relaxation="anyloss", *, direction: str | None = None,
                   thresholds=None) -> ProblemDerivation:
    """Derive the Lagrangian of ``problem`` (see the module).

    Args:
        problem: from :func:`metricc.problem.make_problem`.
        relaxation: a ``Relaxation`` or its name.
        direction: the objective's; by default its catalog direction, else the analysis's.
        thresholds: one threshold at most (the relaxation's by default): constraints are read at it.
    """
    relaxation = resolve_relaxation(relaxation)
    direction = direction or problem.objective.direction
    if direction is None and problem.has_objective:
        from .problem import analyze_any

        direction = analyze_any(problem.objective, problem.groups).direction
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize' (the analysis could not tell: pass "
                         f"direction=), got {direction!r}")
    thresholds = normalize_thresholds(relaxation, thresholds)
    if len(thresholds) > 1:
        raise ValueError("a loss with constraints or groups reads them at one threshold; thresholds= gives "
                         f"{len(thresholds)}: pass one, or a relaxation with the threshold you want")
    exprs = [problem.objective.bound_expr()] + [c.metric.bound_expr() for c in problem.constraints]
    outers, reductions = _groups.split_reductions([_exact(e) for e in exprs])
    symbols = [r.symbol for r in reductions]
    inners = list(dict.fromkeys(r.inner for r in reductions))
    terms = tuple(_quantity(f"h_{index}", inner, []) for index, inner in enumerate(inners, 1))
    objective = _quantity("f", outers[0], symbols)
    constraints = tuple(_quantity(f"c_{index}", outer, symbols) for index, outer in enumerate(outers[1:], 1))
    return ProblemDerivation(problem=problem, relaxation=relaxation, thresholds=thresholds, direction=direction,
                             reductions=reductions, terms=terms,
                             reduction_terms=tuple(inners.index(r.inner) for r in reductions),
                             objective=objective, constraints=constraints)


def _exact(expr: sympy.Expr) -> sympy.Expr:
    """Bound parameter values as exact rationals (0.3, not its binary approximation)."""
    return expr.xreplace({f: sympy.Rational(repr(float(f))) for f in expr.atoms(sympy.Float)})


def _quantity(name: str, expr: sympy.Expr, reduction_symbols) -> QuantityDerivation:
    def along(up, down):
        return tidy(differentiate(expr, up) - differentiate(expr, down))

    positive, negative = along(TP, FN), along(FP, TN)
    group_positive, group_negative = along(TP_G, FN_G), along(FP_G, TN_G)
    by_reduction = tuple(tidy(differentiate(expr, symbol)) for symbol in reduction_symbols)
    expressions = [expr, positive, negative, group_positive, group_negative, *by_reduction]
    replacements, outputs = sympy.cse(expressions, symbols=sympy.numbered_symbols("_c", real=True), order="none")
    return QuantityDerivation(name=name, expr=expr, positive=positive, negative=negative,
                              group_positive=group_positive, group_negative=group_negative,
                              by_reduction=by_reduction, common_subexpressions=tuple(replacements),
                              outputs=tuple(outputs))


__all__ = ["ProblemDerivation", "QuantityDerivation", "derive_problem"]
