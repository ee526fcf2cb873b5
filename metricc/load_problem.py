"""``compile_metric`` for an objective with constraints or groups: parse → check → derive → emit → load.

:func:`metricc.compile_metric` hands over here when it is given ``constraints=`` or ``groups=``, or text that says
"subject to" or reads group entries (``TP[g]``); the result runs the very source ``metricc compile`` writes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from .derive_problem import ProblemDerivation, derive_problem
from .emit_problem import ProblemOptions, emit_problem
from .lagrangian import ConstrainedMetricLoss
from .load import _caller_stacklevel, load_module, warn_if_saturating
from .problem import Problem, ProblemReport, check_problem, make_problem
from .relax import default_relaxation, resolve_relaxation

MULTIPLIER_OPTIONS = ("multiplier_lr", "max_multiplier", "multiplier_update", "constraint_rates", "penalty")


@functools.lru_cache(maxsize=128)
def _cached_derivation(problem: Problem, relaxation, thresholds, direction) -> ProblemDerivation:
    return derive_problem(problem, relaxation, direction=direction, thresholds=thresholds)


class CompiledConstrainedLoss(ConstrainedMetricLoss):
    """A constrained (or grouped) loss compiled by metricc: the generated module's loss, with where it came from.

    Attributes:
        source: the generated Python source.
        problem: the :class:`metricc.problem.Problem` (objective, constraints, groups).
        metric: the objective's :class:`metricc.Metric`.
        derivation: the :class:`metricc.derive_problem.ProblemDerivation` (``print(loss_fn.derivation.text())``).
        report: the :class:`metricc.problem.ProblemReport`, or None with ``check=False``.
    """

    def __init__(self, source: str, problem: Problem, derivation: ProblemDerivation, report=None, *,
                 options: ProblemOptions | None = None, **overrides):
        module = load_module(source, problem.objective.name)
        super().__init__(module.DEFINITION, **{**module.OPTIONS, **overrides})
        self.source, self.problem, self.derivation, self.report = source, problem, derivation, report
        self.metric = problem.objective
        self.relaxation = derivation.relaxation
        self.module = module
        self.options = options or ProblemOptions()
        self._overrides = overrides
        self._dtypes_checked: set[torch.dtype] = set()

    def standalone_source(self) -> str:
        """The same module with metricc's runtime and lagrangian inlined: a file that imports only torch."""
        return emit_problem(self.derivation, self.options, standalone=True)

    def forward(self, input, target, weight=None, *, groups=None):
        dtype = getattr(input, "dtype", None)
        if dtype is not None and dtype not in self._dtypes_checked:
            self._dtypes_checked.add(dtype)
            warn_if_saturating(self.relaxation, dtype)
        return super().forward(input, target, weight, groups=groups)

    def __reduce__(self):
        return (_rebuild, (self.source, self.problem, self.derivation, self.report, self.options, self._overrides,
                           self.state_dict(), self.training))


def _rebuild(source, problem, derivation, report, options, overrides, state, training):
    loss = CompiledConstrainedLoss(source, problem, derivation, report, options=options, **overrides)
    loss.load_state_dict(state)
    return loss.train(training)


def compile_problem(metric, *, constraints=None, groups=None, params=None, name=None, relaxation=None,
                    thresholds=None, direction=None, task="binary", from_logits=True, zero_division=0.0,
                    estimator="batch", momentum=0.9, sync=False, process_group=None, grad_average=True,
                    validate=True, check=True, min_prevalence=0.01, multiplier_lr=0.05, max_multiplier=100.0,
                    multiplier_update="auto", constraint_rates="hard", penalty=0.0) -> CompiledConstrainedLoss:
    """The problem's loss (arguments as :func:`metricc.compile_metric`'s; see its docstring)."""
    if task != "binary":
        raise ValueError("constraints and groups support task='binary' (one logit per sample) for now; "
                         f"got task={task!r}")
    problem = make_problem(metric, constraints=constraints, groups=groups, params=params, name=name)
    relaxation = resolve_relaxation(default_relaxation(task) if relaxation is None else relaxation)
    options = ProblemOptions(from_logits=from_logits, zero_division=zero_division, estimator=estimator,
                             momentum=momentum, sync=sync, grad_average=grad_average, validate=validate,
                             multiplier_lr=multiplier_lr, max_multiplier=max_multiplier,
                             multiplier_update=multiplier_update, constraint_rates=constraint_rates,
                             penalty=penalty)
    report: ProblemReport | None = None
    if check:
        report = check_problem(problem, min_prevalence)
        refusal = report.error(direction or problem.objective.direction)
        if refusal is not None:
            raise refusal
        report.warn(stacklevel=_caller_stacklevel(), zero_division=zero_division)
    analysed = report.objective if report is not None else None
    direction = direction or problem.objective.direction or (analysed.direction if analysed is not None else None)
    if direction not in ("maximize", "minimize"):
        direction = None
    thresholds = None if thresholds is None else tuple(thresholds if not isinstance(thresholds, (int, float))
                                                       else [thresholds])
    derivation = _cached_derivation(problem, relaxation, thresholds, direction)
    source = emit_problem(derivation, options)
    return CompiledConstrainedLoss(source, problem, derivation, report, options=options,
                                   process_group=process_group)




def compile_constraints(constraints: str | Sequence[str], *, groups: int | None = None,
                        **options: Any) -> CompiledConstrainedLoss:
    """The constraints' term alone, Σ_k λ_k·h_k with its multipliers, to add to a loss of your own.

    ``loss = F.binary_cross_entropy_with_logits(z, y) + fair(z, y, groups=sex)`` with
    ``fair = metricc.compile_constraints(["max_g(TP[g]/P[g]) - min_g(TP[g]/P[g]) <= 0.05"], groups=2)``: the model
    keeps the loss it trains well with, and the multipliers add the constraints' gradients as much as it takes to
    meet them (in training mode they step after every call, as for compile_metric). Options as
    :func:`metricc.compile_metric`'s.
    """
    return compile_problem(None, constraints=constraints, groups=groups, **options)


__all__ = ["CompiledConstrainedLoss", "compile_constraints", "compile_problem"]
