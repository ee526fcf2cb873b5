"""An optimisation problem: an objective metric, constraints on other metrics, and the number of groups.

``compile_metric("recall", constraints=["precision >= 0.9"])`` and ``compile_metric("accuracy", groups=2,
constraints=["max_g(TP[g]/P[g]) - min_g(TP[g]/P[g]) <= 0.05"])`` build a :class:`Problem`; :func:`check_problem`
checks it before anything is derived: the objective as any metric (it must serve as a loss), each constraint as a
metric whose range must be proved (a constraint the analysis cannot bound has no meaningful multiplier) and whose
level must lie within that range (``precision >= 1.5`` can never hold; ``precision >= 0`` always does and is
reported as having no effect). A constraint needs no direction: its sense says which way is better.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING

import sympy

from . import groups as _groups
from .constraints import Constraint, parse_constraints, split_problem
from .errors import ConstraintWarning, MetricCheckError, MetricSyntaxError, Option, Part, Spelling, render
from .metric import Metric, to_text
from .parse import parse

if TYPE_CHECKING:
    from .analyze import Report

MAX_GROUPS = 1024  # a group axis longer than this is a mistake (an id column, not a protected attribute)
# The objective of compile_constraints: none, so that the loss is the constraints' term alone, to be added to the
# user's own loss (BCE, cross-entropy, ...): the constraints then regularise a model trained on that loss.
NO_OBJECTIVE = Metric(expr=sympy.Integer(0), name="constraints", source="", direction="minimize",
                      description="no objective: the constraints' term, to add to your own loss")


@dataclasses.dataclass(frozen=True)
class Problem:
    """Minimise the loss of ``objective`` subject to ``constraints``, over ``groups`` groups of samples.

    Attributes:
        objective: the metric the loss is made of (1 − f where f is maximised).
        constraints: the constraints; each holds where its slack h ≤ 0.
        groups: G, the number of groups (1 where nothing reads group entries).
    """

    objective: Metric
    constraints: tuple[Constraint, ...] = ()
    groups: int = 1

    @property
    def has_objective(self) -> bool:
        """False for :func:`metricc.compile_constraints`: the loss is the constraints' term alone."""
        return self.objective is not NO_OBJECTIVE and self.objective != NO_OBJECTIVE

    @property
    def grouped(self) -> bool:
        """Whether the loss needs each sample's group index."""
        return _groups.has_group_entries(self.objective.expr) or any(
            _groups.has_group_entries(c.metric.expr) for c in self.constraints)

    @property
    def rows(self) -> int:
        """Constraint rows, one multiplier each: a constraint with a free g holds for every group."""
        return sum(self.groups if c.per_group else 1 for c in self.constraints)

    def row_names(self) -> list[str]:
        """A label per constraint row, e.g. ``precision >= 0.9`` or ``TP[g]/P[g] - TP/P <= 0.05 (g = 1)``."""
        names = []
        for constraint in self.constraints:
            text = constraint.text or constraint.describe()
            if constraint.per_group:
                names += [f"{text} (g = {group})" for group in range(self.groups)]
            else:
                names.append(text)
        return names


def make_problem(metric, *, constraints=None, groups: int | None = None, params=None,
                 name: str | None = None) -> Problem:
    """Parse the objective (which may say "subject to ...") and the constraints; check the group count.

    Raises:
        MetricSyntaxError: text outside the grammar, or group entries without ``groups``.
        ValueError: a bad ``groups``.
    """
    written = split_problem(metric, params)
    if written is not None:
        metric, inline = written
    else:
        inline = ()
    if metric is None:
        if not constraints:
            raise MetricSyntaxError("compile_constraints() needs at least one constraint, such as 'precision >= 0.9'")
        objective = NO_OBJECTIVE
    else:
        objective = parse(metric, params, name=name)
    extra = parse_constraints(constraints, params)
    all_constraints = parse_constraints([*inline, *extra])  # numbered in order: the inline ones first
    count = _check_groups(groups)
    problem = Problem(objective, all_constraints, 1 if count is None else count)
    if _groups.free_group_entries(objective.expr):
        raise MetricSyntaxError(["the objective reads TP[g] … outside a group reduction, so it has one value per "
                                 "group: reduce it over the groups with max_g(...), min_g(...), mean_g(...) or "
                                 "sum_g(...) (a constraint may leave g free: it then holds for every group)"])
    if problem.grouped and count is None:
        raise MetricSyntaxError(["the metric or a constraint reads group entries (TP[g] …): pass ",
                                 Option("groups"), " with the number of groups G, and give each sample's group "
                                 "index in [0, G) when calling the loss (loss_fn(input, target, groups=...))"])
    return problem


def is_problem(metric, constraints=None, groups=None, params=None) -> bool:
    """Whether ``metric`` (with these options) is more than one metric: constraints, groups, "subject to" in
    its text, or group entries in it."""
    if constraints is not None or groups is not None or split_problem(metric, params) is not None:
        return True
    if isinstance(metric, Metric):
        return _groups.has_group_entries(metric.expr)
    return isinstance(metric, str) and _groups.has_group_entries(parse(metric, params).expr)


def _check_groups(groups) -> int | None:
    if groups is None:
        return None
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= MAX_GROUPS:
        raise ValueError(f"groups must be the number of groups, a whole number in [1, {MAX_GROUPS}], got {groups!r}")
    return groups


@dataclasses.dataclass
class ConstraintCheck:
    """What the analysis found about one constraint.

    Attributes:
        constraint: the constraint.
        report: the analysis of its expression as a metric.
        problems: why it cannot be used, as message parts (empty when it can).
        findings: (warning class, message) for what may surprise (a constraint that always holds).
    """

    constraint: Constraint
    report: Report
    problems: list = dataclasses.field(default_factory=list)
    findings: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self, index: int = 1, spell: Spelling = Option.python) -> str:
        """What was found, as aligned rows (options in problems spelt by ``spell``)."""
        constraint = self.constraint
        lo, hi = self.report.range
        verdict = "ok" if not self.problems else "NOT OK: " + "; ".join(render(p, spell) for p in self.problems)
        rows = [(f"constraint {index}", constraint.text or constraint.describe()),
                ("verdict", verdict),
                ("expression", f"{to_text(constraint.metric.expr)}"
                               + ("   (g free: one constraint per group)" if constraint.per_group else "")),
                ("range", f"[{_show(lo)}, {_show(hi)}]"),
                ("slack", f"h = {to_text(constraint.slack())}, holds where h ≤ 0")]
        rows += [("singular", s) for s in self.report.singularities]
        rows += [("proof", p) for p in self.report.proofs]
        rows += [("warning", f"{render(parts, spell)} ({category.__name__})") for category, parts in self.findings]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


@dataclasses.dataclass
class ProblemReport:
    """The objective's report and each constraint's check."""

    problem: Problem
    objective: Report | None
    constraints: list[ConstraintCheck]

    def problem_parts(self, direction: str | None = None) -> list[tuple[Part, ...]]:
        parts = [] if self.objective is None else [tuple(p) for p in self.objective.problem_parts(direction)]
        for check in self.constraints:
            parts += [(f"constraint '{check.constraint.text or check.constraint.describe()}': ", *p)
                      for p in check.problems]
        return parts

    @property
    def ok(self) -> bool:
        return not self.problem_parts()

    def error(self, direction: str | None = None) -> MetricCheckError | None:
        problems = self.problem_parts(direction)
        if not problems:
            return None
        owner = f"metric {self.problem.objective.name!r} with its constraints" if self.problem.has_objective else \
            "the constraints"
        parts: list[Part] = [f"{owner} cannot serve as a loss: "]
        for index, problem in enumerate(problems):
            parts += (["; "] if index else []) + list(problem)
        parts += ["; pass ", Option("check", False), " to compile it anyway"]
        return MetricCheckError(parts, self)

    def warn(self, stacklevel: int = 2, *, zero_division: float | None = None) -> None:
        if self.objective is not None:
            self.objective.warn(stacklevel=stacklevel + 1, zero_division=zero_division)
        for check in self.constraints:
            for category, parts in check.findings:
                warnings.warn(category((f"constraint '{check.constraint.text}': ", *parts)), stacklevel=stacklevel)

    def table(self, spell: Spelling = Option.python, direction: str | None = None) -> str:
        """The objective's table, then one section per constraint."""
        sections = [] if self.objective is None else [self.objective.table(spell, direction)]
        sections += [check.table(index, spell) for index, check in enumerate(self.constraints, 1)]
        return "\n\n".join(sections)

    def to_dict(self) -> dict:
        return {"objective": None if self.objective is None else self.objective.to_dict(), "ok": self.ok,
                "constraints": [{"constraint": c.constraint.text, "expression": to_text(c.constraint.metric.expr),
                                 "sense": c.constraint.sense, "level": c.constraint.level,
                                 "per_group": c.constraint.per_group, "range": list(c.report.range),
                                 "problems": [render(p) for p in c.problems],
                                 "warnings": [render(p) for _, p in c.findings]} for c in self.constraints],
                "groups": self.problem.groups}


def _show(value) -> str:
    if value is None:
        return "unbounded"
    return f"{value:g}" if isinstance(value, float) else str(value)


def analyze_any(metric: Metric, groups: int, min_prevalence: float = 0.01):
    """The analysis of a metric, through the group composition where it reads group entries."""
    if _groups.has_group_entries(metric.expr):
        from .analyze_groups import analyze_group_metric

        return analyze_group_metric(metric, groups, min_prevalence)
    from .analyze import analyze_metric

    return analyze_metric(metric, min_prevalence)


def check_constraint(constraint: Constraint, groups: int, min_prevalence: float = 0.01) -> ConstraintCheck:
    """Range, singular batches and feasibility of one constraint's level."""
    report = analyze_any(constraint.metric, groups, min_prevalence)
    check = ConstraintCheck(constraint, report)
    check.problems += [tuple(p) for p in report.domain_problems]
    check.problems += [tuple(p) for p in report.range_problems]
    lo, hi = report.range
    if check.problems or not all(isinstance(v, (int, float)) for v in (lo, hi)):
        if not check.problems:
            check.problems.append(("could not bound it, so no multiplier could weigh it",))
        return check
    text = to_text(constraint.metric.expr)
    level, inside = constraint.level, f"[{lo:g}, {hi:g}]"
    never = level > hi if constraint.sense == ">=" else level < lo
    always = level <= lo if constraint.sense == ">=" else level >= hi
    if never:
        check.problems.append((f"it can never hold: {text} lies in {inside} on every batch, so it is never "
                               f"{constraint.sense} {level:g}; choose a level within {inside}",))
    elif always:
        check.findings.append((ConstraintWarning, (f"it always holds ({text} lies in {inside}), so it has no effect",)))
    elif level == (hi if constraint.sense == ">=" else lo):
        check.findings.append((ConstraintWarning, (f"it holds only where {text} takes its extreme value {level:g}: "
                                                   "soft predictions approach it but never reach it",)))
    return check


def check_problem(problem: Problem, min_prevalence: float = 0.01) -> ProblemReport:
    """Analyse the objective and every constraint (see the module)."""
    objective = analyze_any(problem.objective, problem.groups, min_prevalence) if problem.has_objective else None
    checks = [check_constraint(c, problem.groups, min_prevalence) for c in problem.constraints]
    return ProblemReport(problem, objective, checks)


__all__ = ["ConstraintCheck", "Problem", "ProblemReport", "check_constraint", "check_problem", "is_problem",
           "make_problem"]
