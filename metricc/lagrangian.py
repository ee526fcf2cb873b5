"""The runtime of constrained and grouped metric losses: the Lagrangian over a per-group table, and its multipliers.

A generated module for ``compile_metric("recall", constraints=["precision >= 0.9"])`` (or with ``groups=``)
defines, like any metricc module, only what is particular to its metric: one function per quantity (the
objective f, each constraint c_k, each reduced group term h) returning its value and per-sample derivatives
(:mod:`metricc.derive_problem`), and a :class:`ProblemDefinition`. This module does the rest, importing only torch
and :mod:`metricc.runtime`:

* the soft confusion table with a group axis, (4, G, K) (K columns: one per threshold, one here), computed by
  the runtime's own path on the runtime's segment axis (:class:`metricc.runtime.Segments`: each sample's table
  folded into its group with one ``index_add``, and each group's factors gathered back in the backward), and the
  same table at hard predictions ([p > t]) for the multipliers; under ``sync=True`` both travel in one
  all-reduce. Inputs are the runtime's binary layouts, (N,), (N, 1) or dense (N, [1,] d1, ...) with one group per
  sample;
* the group reductions (max, min, mean, sum over the groups where their argument is defined) and their weights;
* the Lagrangian L = loss(f) + Σ λ_k·h_k and its per-group factors (2, G, K), which the backward gathers by each
  sample's group and label (one elementwise pass, as for every metricc loss);
* the multipliers λ (a buffer: in ``state_dict``, identical on every rank), raised by projected gradient ascent
  on the slacks h_k, λ ← min(max(λ + η·h, 0), λ_max), after every training step or when
  :meth:`ConstrainedMetricLoss.step_multipliers` is called.

The slacks that move λ are read at hard predictions by default (``constraint_rates="hard"``): the
proxy-Lagrangian of Cotter, Jiang, Sridharan (JMLR 2019), where the model descends relaxed rates, which have a
gradient, and the multipliers ascend the rates the constraint is about. ``"relaxed"`` reads them at the soft
predictions (the plain Lagrangian). docs/constraints.md measures both.
"""

import math

import torch

from . import runtime as _runtime
from .runtime import TensorMath

CONSTRAINT_RATES = ("hard", "relaxed")
MULTIPLIER_UPDATES = ("auto", "manual")
KINDS = ("max", "min", "mean", "sum")


class Quantity:
    """One function a generated module defines: the objective, a constraint or a reduced group term.

    Args:
        name: ``"f"``, ``"c_1"``, … or ``"h_1"``.
        function: ``function(TP, FN, FP, TN, TP_g, FN_g, FP_g, TN_g, r, ops)`` → ``(value, positive, negative,
            group_positive, group_negative, by_reduction)``: the value, its derivatives along one positive
            (negative) sample's ŷ through the batch's entries and through its own group's entries, and its
            derivatives by each reduction's value r_j (a tuple). The batch's entries arrive with shape (1, K),
            the groups' with (G, K).
        per_group: whether the value differs per group (g is free): a constraint with one row per group.
        expression: the quantity as text.
        sense, level: for a constraint, ``"<="`` or ``">="`` and its bound.
    """

    def __init__(self, *, name, function, per_group=False, expression="", sense=None, level=None):
        if sense not in (None, "<=", ">="):
            raise ValueError(f"sense must be '<=' or '>=', got {sense!r}")
        self.name, self.function, self.per_group = name, function, bool(per_group)
        self.expression, self.sense = expression, sense
        self.level = None if level is None else float(level)

    def __repr__(self):
        return f"Quantity(name={self.name!r}, expression={self.expression!r})"


class ProblemDefinition:
    """What a generated module defines for an objective with constraints and groups.

    Args:
        name: the objective's name.
        direction: ``"maximize"`` (loss = 1 − f) or ``"minimize"``.
        objective: the objective's :class:`Quantity`.
        constraints: one :class:`Quantity` per constraint, with sense and level.
        terms: the reduced group terms h.
        reductions: ``(kind, term index)`` per reduction r_1, r_2, …: ``kind`` in max, min, mean, sum.
        groups: G (1 where nothing reads group entries).
        grouped: whether a call needs each sample's group index.
        relaxation: a runtime relaxation (SigmoidAmplifier, …); ``threshold``: where it is read.
        scale_invariant: whether every quantity is unchanged by scaling the whole table; it is then evaluated
            at the table divided by its total (see metricc.runtime.MetricDefinition).
        row_names: a label per constraint row, for logging.
    """

    def __init__(self, *, name, direction, objective, constraints=(), terms=(), reductions=(), groups=1,
                 grouped=False, relaxation, threshold=0.5, scale_invariant=False, row_names=(), expression=""):
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        for kind, index in reductions:
            if kind not in KINDS or not 0 <= index < len(terms):
                raise ValueError(f"a reduction must be (kind in {KINDS}, a term index), got {(kind, index)!r}")
        self.name, self.direction, self.objective = name, direction, objective
        self.constraints, self.terms, self.reductions = tuple(constraints), tuple(terms), tuple(reductions)
        self.groups, self.grouped = int(groups), bool(grouped)
        self.relaxation, self.threshold = relaxation, float(threshold)
        self.scale_invariant = bool(scale_invariant)
        self.expression = expression
        self.loss_sign = -1.0 if direction == "maximize" else 1.0
        self.rows = sum(self.groups if c.per_group else 1 for c in self.constraints)
        self.row_names = tuple(row_names) or tuple(f"constraint {k}" for k in range(self.rows))

    def __repr__(self):
        return f"ProblemDefinition(name={self.name!r}, constraints={len(self.constraints)}, groups={self.groups})"


# ---------------------------------------------------------------------------------------------
# Evaluation: the Lagrangian and its factors from a (4, G, K) table


def reduce_groups(kind, values, defined):
    """A reduction over the groups (dim 0) where ``defined``, and its weights ∂r/∂h(g) (0 where not defined).

    max/min give each tied extreme group an equal share (the midpoint subgradient); where no group is defined
    the value is NaN (the quantities reading it are then undefined: zero_division)."""
    count = defined.sum(0)
    anywhere = count > 0
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    if kind in ("max", "min"):
        fill = -math.inf if kind == "max" else math.inf
        masked = torch.where(defined, values, fill)
        extreme = masked.amax(0) if kind == "max" else masked.amin(0)
        at = defined & (masked == extreme)
        weights = at.to(values.dtype) / at.sum(0).clamp(min=1)
        value = extreme
    else:
        weights = defined.to(values.dtype)
        if kind == "mean":
            weights = weights / count.clamp(min=1)
        value = torch.where(defined, values, zero).mul(weights).sum(0) if kind == "mean" else \
            torch.where(defined, values, zero).sum(0)
    return torch.where(anywhere, value, math.nan), weights


def _call(quantity, pooled, table, reduced):
    """The quantity's six outputs as tensors of shape (G, K) (by_reduction: a list of them)."""
    outputs = quantity.function(*pooled, *table, reduced, TensorMath)
    shape = table.shape[1:]

    def full(x):
        return torch.as_tensor(x, dtype=table.dtype, device=table.device).expand(shape)

    value, positive, negative, group_positive, group_negative, by_reduction = outputs
    return (full(value), full(positive), full(negative), full(group_positive), full(group_negative),
            [full(d) for d in by_reduction])


def _finite_or_zero(x):
    return torch.where(torch.isfinite(x), x, 0.0)


class Evaluation:
    """One evaluation of the problem at a table: values, and (with gradients) the Lagrangian and its factors.

    Attributes:
        objective: the objective's value f (zero_division applied), a 0-dim tensor.
        constraint_values: (rows,) each constraint row's expression value (NaN where undefined).
        slacks: (rows,) h = expr − c (``<=``) or c − expr (``>=``): > 0 where violated (NaN where undefined).
        loss: the Lagrangian loss(f) + Σ λ·h over the defined rows (with gradients only).
        factors: (2, G, K) ∂L/∂ŷ for a positive (row 0) and a negative (row 1) sample of each group.
    """

    def __init__(self, objective, constraint_values, slacks, loss=None, factors=None):
        self.objective, self.constraint_values, self.slacks = objective, constraint_values, slacks
        self.loss, self.factors = loss, factors


def evaluate_problem(definition, table, multipliers=None, zero_division=0.0, gradients=True, penalty=0.0):
    """The problem at a (4, G, K) table of soft (or hard) confusion entries; see :class:`Evaluation`.

    With ``penalty`` ρ > 0 the Lagrangian is augmented (the method of multipliers): each row adds
    ψ(h) = (max(0, λ + ρ·h)² − λ²)/(2ρ) instead of λ·h, which pulls a violated constraint back at once (weight
    λ + ρ·h) and damps the multipliers' oscillation; ρ = 0 is the plain Lagrangian."""
    finite_table = bool(torch.isfinite(table).all())
    total = None
    if definition.scale_invariant:
        total = table.sum(dim=(0, 1))  # (K,): the grand total of every column
        total = torch.where((total > 0) & torch.isfinite(total), total, 1.0)
        table = table / total
    pooled = table.sum(1, keepdim=True)  # (4, 1, K)
    groups = table.shape[1]
    terms = [_call(term, pooled, table, ()) for term in definition.terms]
    reduced, weights = [], []
    for kind, index in definition.reductions:
        value = terms[index][0]
        r, w = reduce_groups(kind, value, torch.isfinite(value))
        reduced.append(r.unsqueeze(0))
        weights.append(w)
    objective = _call(definition.objective, pooled, table, reduced)
    constraints = [_call(c, pooled, table, reduced) for c in definition.constraints]

    # Objective value, zero_division where undefined on finite entries.
    f = objective[0][0]  # (K,)
    f_defined = torch.isfinite(f)
    if zero_division is not None:
        f_value = torch.where(f_defined, f, float(zero_division))
    else:
        f_value = f
    values, slacks, rows = [], [], []
    for quantity, outputs in zip(definition.constraints, constraints):
        value = outputs[0] if quantity.per_group else outputs[0][:1]
        sign = 1.0 if quantity.sense == "<=" else -1.0
        values.append(value.mean(-1))
        slacks.append(sign * (value.mean(-1) - quantity.level))
        rows.append((quantity, outputs, sign))
    constraint_values = torch.cat(values) if values else table.new_zeros(0)
    slack = torch.cat(slacks) if slacks else table.new_zeros(0)
    objective_value = f_value.mean()
    if not finite_table:
        objective_value = objective_value * math.nan
    if not gradients:
        return Evaluation(objective_value, constraint_values, slack)

    # Coefficients of each quantity's rows in the Lagrangian, 0 where a row is undefined.
    loss_sign = definition.loss_sign
    columns = table.shape[-1]
    objective_coefficient = torch.where(f_defined, loss_sign / columns, 0.0).unsqueeze(0)  # (1, K)
    coefficients = [(objective_coefficient, objective, False)]
    lam = multipliers.to(table.dtype) if multipliers is not None else table.new_zeros(definition.rows)
    start = 0
    loss = (1 - f_value).mean() if loss_sign < 0 else f_value.mean()
    for quantity, outputs, sign in rows:
        count = groups if quantity.per_group else 1
        row_lambda = lam[start:start + count].unsqueeze(-1)  # (count, 1)
        value = outputs[0][:count]
        defined = torch.isfinite(value)
        slack = sign * (value - quantity.level)
        if penalty > 0:  # augmented: ψ(h) = (max(0, λ + ρ·h)² − λ²)/(2ρ), ∂ψ/∂h = max(0, λ + ρ·h)
            weight = torch.clamp(row_lambda + penalty * slack, min=0.0)
            term = (weight * weight - row_lambda * row_lambda) / (2 * penalty)
        else:
            weight, term = row_lambda, row_lambda * slack
        coefficient = torch.where(defined, weight * sign / columns, 0.0)  # (count, K)
        loss = loss + torch.where(defined, term, 0.0).sum() / columns
        coefficients.append((coefficient, outputs, quantity.per_group))
        start += count

    # Factors per group s: Σ_rows a·(Q± + [per group] δ·Q±_g + Σ_j ∂Q/∂r_j·(w_j(s)·h±_g(s) + Σ_g w_j(g)·h±(g))).
    factors = table.new_zeros((2, groups, columns))
    by_reduction_total = [table.new_zeros(columns) for _ in definition.reductions]
    for coefficient, outputs, per_group in coefficients:
        rows_here = coefficient.shape[0]
        _, positive, negative, group_positive, group_negative, by_reduction = outputs
        pooled_part = torch.stack([(coefficient * _finite_or_zero(positive[:rows_here])).sum(0),
                                   (coefficient * _finite_or_zero(negative[:rows_here])).sum(0)])  # (2, K)
        factors += pooled_part.unsqueeze(1)
        if per_group:
            factors += torch.stack([coefficient * _finite_or_zero(group_positive),
                                    coefficient * _finite_or_zero(group_negative)])
        for j, derivative in enumerate(by_reduction):
            by_reduction_total[j] += (coefficient * _finite_or_zero(derivative[:rows_here])).sum(0)
    for j, (_, index) in enumerate(definition.reductions):
        _, positive, negative, group_positive, group_negative, _ = terms[index]
        w = weights[j]
        used = w > 0
        own = torch.stack([torch.where(used, w * group_positive, 0.0), torch.where(used, w * group_negative, 0.0)])
        shared = torch.stack([torch.where(used, w * positive, 0.0).sum(0),
                              torch.where(used, w * negative, 0.0).sum(0)])
        factors += by_reduction_total[j] * (_finite_or_zero(own) + _finite_or_zero(shared).unsqueeze(1))
    if total is not None:
        factors = factors / total
    if not finite_table:
        loss, factors = loss * math.nan, factors * math.nan
    return Evaluation(objective_value, constraint_values, slack, loss, factors)


# ---------------------------------------------------------------------------------------------
# Tables: soft and hard entries per group


def hard_table(batch, threshold, from_logits, segments):
    """The (4, G, 1) table at hard predictions [p > t] of the runtime's checked binary batch (input, labels and
    weights (N, 1, d...)): each sample's entries summed over its pixels, then into its segment (group)."""
    input, target, weight = batch.input, batch.target, batch.weight
    p = torch.sigmoid(input) if from_logits else input
    predicted = (p > threshold).to(input.dtype)
    positives = target if weight is None else target * weight
    negatives = (1 - target) if weight is None else (1 - target) * weight
    terms = torch.stack([positives * predicted, positives * (1 - predicted), negatives * predicted,
                         negatives * (1 - predicted)]).expand(4, *input.shape)
    per_sample = terms.reshape(4, input.shape[0], -1).sum(-1)  # (4, N)
    if segments.index is None:
        return per_sample.sum(1, keepdim=True).unsqueeze(-1)
    return per_sample.new_zeros((4, segments.count)).index_add_(1, segments.index, per_sample).unsqueeze(-1)


class _RunningRates:
    """An exponential moving average of a table's entries as rates (entries / Σ w), debiased as Adam's moments
    are, and read back at the current batch's size (see metricc.runtime's running estimator)."""

    def __init__(self, rates, total, momentum):
        self.rates, self.total, self.momentum = rates, total, momentum

    def update(self, table):
        batch = table.to(self.rates.dtype)
        size = batch.sum() / batch.shape[-1]  # Σ w: every column's entries add up to it
        if not bool(size > 0):
            return table
        share = 1.0 - self.momentum
        self.rates.mul_(self.momentum).add_(batch / size, alpha=share)
        self.total.mul_(self.momentum).add_(share)
        return (self.rates * (size / self.total)).to(table.dtype)


def _check_groups(groups, input, definition):
    if groups is None:
        if definition.grouped:
            raise ValueError(f"this loss reads group entries (TP[g] …): pass groups=, an (N,) tensor of each sample's "
                             f"group index in [0, {definition.groups}), as loss_fn(input, target, groups=group_ids)")
        return None
    if not isinstance(groups, torch.Tensor):
        raise TypeError(f"groups must be a torch.Tensor of group indices, got {type(groups).__name__}")
    if not definition.grouped:
        raise ValueError("groups= was given, but this loss reads no group entries: compile it with groups=G and a "
                         "metric or constraint over TP[g] …, or leave groups out")
    if groups.dim() == 2 and groups.shape[1] == 1:
        groups = groups[:, 0]
    if groups.dim() != 1 or groups.shape[0] != input.shape[0]:
        raise ValueError(f"groups must have shape ({input.shape[0]},), one group index per sample, got "
                         f"{tuple(groups.shape)}")
    if groups.is_floating_point() or groups.dtype == torch.bool or groups.is_complex():
        raise ValueError(f"groups must hold integer group indices, got dtype {groups.dtype}")
    if groups.device != input.device:
        raise ValueError(f"groups is on {groups.device} but input is on {input.device}; move it first")
    if groups.numel():
        low, high = groups.min().item(), groups.max().item()
        if low < 0 or high >= definition.groups:
            bad = ((groups < 0) | (groups >= definition.groups)).nonzero()[0].item()
            raise ValueError(f"groups must hold indices in [0, {definition.groups}) (compiled with "
                             f"groups={definition.groups}), but groups[{bad}] = {groups[bad].item()}")
    return groups.long()


class _ProblemLossFunction(torch.autograd.Function):
    """The Lagrangian's value forward; backward, the runtime path's gradient with each sample's group factors."""

    @staticmethod
    def forward(ctx, input, value, target, weight, factors, route, segments):
        ctx.save_for_backward(input, target, weight, factors)
        ctx.route, ctx.segments = route, segments
        return value.clone()

    @staticmethod
    def backward(ctx, grad_loss):
        input, target, weight, factors = ctx.saved_tensors
        batch = _runtime._Batch(input, target, weight, input.dtype, input.shape)
        with torch.no_grad():
            grad = ctx.route.path.gradient(batch, ctx.segments.sample_factors(factors * grad_loss))
        return grad, None, None, None, None, None, None


class ConstrainedMetricLoss(torch.nn.Module):
    """An objective metric's loss with constraints and groups: ``loss_fn(input, target, weight=None, groups=None)``.

    The call returns the Lagrangian L = loss(f) + Σ λ_k·h_k (a 0-dim tensor) with its closed-form gradient; in
    training mode (``multiplier_update="auto"``) it then raises each λ_k by η·h_k, its constraint's slack read at
    hard predictions (``constraint_rates="hard"``), and clips it to [0, λ_max].

    Args:
        definition: the :class:`ProblemDefinition` of a generated module.
        from_logits: whether input holds logits (default) or probabilities.
        zero_division: the objective's value where it is undefined (recall without positives); such a batch
            gives it no gradient. Undefined constraint rows contribute nothing and leave their λ as it is.
        estimator: ``"batch"`` or ``"running"`` (a moving average of the soft and the hard table's rates across
            steps: for small batches, the constraint's rate over many batches); ``momentum``: its weight of the past.
        sync: all-reduce the soft and hard tables (one collective): every rank evaluates the global batch.
            Without it, only the hard table is all-reduced under torch.distributed, so that every rank takes the
            same multiplier step.
        process_group, grad_average: as for metricc.runtime.MetricLoss.
        multiplier_lr: η, the multipliers' step size.
        max_multiplier: λ_max, the bound of the projection.
        multiplier_update: ``"auto"`` (a step after every training call) or ``"manual"`` (call
            :meth:`step_multipliers`, which uses the hard entries of every call since the last step).
        constraint_rates: ``"hard"`` (proxy-Lagrangian) or ``"relaxed"`` rates for the multipliers' step.
        penalty: ρ ≥ 0; ρ > 0 augments the Lagrangian (the method of multipliers): the model's gradient weighs
            each constraint by max(0, λ + ρ·h) at the relaxed slack h instead of λ (see evaluate_problem).
        validate: check labels, probabilities and weights as metricc.runtime does.
    """

    def __init__(self, definition, *, task="binary", from_logits=True, zero_division=0.0, estimator="batch",
                 momentum=0.9, sync=False, process_group=None, grad_average=True, validate=True,
                 multiplier_lr=0.05, max_multiplier=100.0, multiplier_update="auto", constraint_rates="hard",
                 penalty=0.0):
        super().__init__()
        if task != "binary":
            raise ValueError("constraints and groups support task='binary' (one logit per sample) for now; "
                             f"got task={task!r}")
        for name, value in (("from_logits", from_logits), ("sync", sync), ("grad_average", grad_average),
                            ("validate", validate)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        _runtime.check_zero_division(zero_division)
        _runtime.check_choice("estimator", estimator, _runtime.ESTIMATORS)
        _runtime.check_momentum(momentum)
        check_multiplier_options(multiplier_lr, max_multiplier, multiplier_update, constraint_rates, penalty)
        self.definition = definition
        self.from_logits, self.zero_division, self.validate = from_logits, zero_division, validate
        self.estimator, self.momentum = estimator, float(momentum)
        self.sync, self.process_group, self.grad_average = sync, process_group, grad_average
        self.multiplier_lr, self.max_multiplier = float(multiplier_lr), float(max_multiplier)
        self.multiplier_update, self.constraint_rates = multiplier_update, constraint_rates
        self.penalty = float(penalty)
        shape = (4, definition.groups, 1)
        self.register_buffer("multipliers", torch.zeros(definition.rows, dtype=torch.float64))
        # The hard (or relaxed) entries since the last multiplier step: a manual step reads them all.
        self.register_buffer("pending_table", torch.zeros(shape, dtype=torch.float64))
        if estimator == "running":
            for kind in ("soft", "hard"):
                self.register_buffer(f"running_{kind}_rates", torch.zeros(shape, dtype=torch.float64))
                self.register_buffer(f"running_{kind}_weight", torch.zeros((), dtype=torch.float64))
        self._last = {}
        # The runtime's plan of a binary loss with this relaxation and threshold: its input checks and its path
        # compute the soft table and the gradient; the problem's evaluation replaces the metric's.
        metric = _runtime.MetricDefinition(name=definition.name, metric=None, direction=definition.direction,
                                           relaxation=definition.relaxation, thresholds=(definition.threshold,),
                                           expression=definition.expression,
                                           scale_invariant=definition.scale_invariant)
        self._plan = _runtime._Plan(metric, task="binary", num_classes=1, average=None, class_weights=None,
                                    reduce="batch", reduction="mean", ignore_index=None, from_logits=from_logits,
                                    zero_division=zero_division, sync=sync, process_group=process_group,
                                    grad_average=grad_average, estimator="batch", momentum=momentum)
        self._routes = {}

    @property
    def rows(self) -> int:
        return self.definition.rows

    @property
    def constraint_names(self) -> tuple:
        """A label per constraint row (and per group where the constraint's g is free)."""
        return self.definition.row_names

    @property
    def constraint_values(self):
        """The last call's value of each constraint row's expression at hard predictions ([p > t]) over the table
        the multipliers read (the batch, or the running estimate); NaN where undefined; None before a call."""
        return self._last.get("hard_values")

    @property
    def relaxed_constraint_values(self):
        """The same at the soft predictions the model is trained on."""
        return self._last.get("soft_values")

    @property
    def violations(self):
        """The last call's slack per row at hard predictions: > 0 where the constraint is violated, by how much."""
        return self._last.get("hard_slacks")

    @property
    def objective_value(self):
        """The last call's objective metric f at the soft predictions (zero_division applied)."""
        return self._last.get("objective")

    @property
    def last_table(self):
        """The (4, G, 1) soft table the last call evaluated (TP, FN, FP, TN per group)."""
        return self._last.get("table")

    def _route(self, input, target, weight, grouped):
        """The runtime's route for this kind of input (its checks and path), made when the kind first appears."""
        key = (input.device, input.dtype, input.dim(), target.dtype, weight is None, grouped)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = _runtime._Route(self._plan, input, target, weight, compiled=False,
                                                        per_sample=grouped)
        return route

    def forward(self, input, target, weight=None, *, groups=None):
        if isinstance(input, torch.Tensor) and torch.is_autocast_enabled(input.device.type):
            with torch.autocast(input.device.type, enabled=False):  # the tables in the compute dtype
                return self.forward(input, target, weight, groups=groups)
        definition = self.definition
        _runtime._check_tensor(input, "input")
        world = _runtime._world_size(self.process_group)
        groups = _check_groups(groups, input, definition)
        route = self._route(input, target, weight, groups is not None)
        batch = route.prepare(input, target, weight, self.validate, allow_empty=world > 1)
        segments = _runtime.Segments(definition.groups, groups) if groups is not None else _runtime._WHOLE_BATCH
        threshold = definition.threshold
        with torch.no_grad():
            soft = segments.fold(route.path.table(batch))[..., 0]  # (4, G, 1)
            hard = hard_table(batch, threshold, self.from_logits, segments)
            grad_scale = 1.0
            if world > 1:
                if self.sync:  # both tables in one collective
                    both = torch.stack([soft, hard]).contiguous()
                    torch.distributed.all_reduce(both, group=self.process_group)
                    soft, hard = both[0], both[1]
                    grad_scale = float(world) if self.grad_average else 1.0
                else:  # the multipliers' entries alone, so that every rank takes the same step
                    hard = hard.contiguous()
                    torch.distributed.all_reduce(hard, group=self.process_group)
            updating = self.training
            if self.estimator == "running" and updating:
                soft = _RunningRates(self.running_soft_rates, self.running_soft_weight, self.momentum).update(soft)
                hard = _RunningRates(self.running_hard_rates, self.running_hard_weight, self.momentum).update(hard)
            evaluation = evaluate_problem(definition, soft, self.multipliers, self.zero_division,
                                          penalty=self.penalty)
            hard_evaluation = evaluate_problem(definition, hard, None, self.zero_division, gradients=False)
            factors = evaluation.factors * grad_scale if grad_scale != 1.0 else evaluation.factors
        self._last.update(table=soft, objective=evaluation.objective, soft_values=evaluation.constraint_values,
                          hard_values=hard_evaluation.constraint_values, hard_slacks=hard_evaluation.slacks)
        if updating and definition.rows:
            pending = hard if self.constraint_rates == "hard" else soft
            if self.estimator == "running":
                self.pending_table.copy_(pending)  # the running estimate already spans many steps
            else:
                self.pending_table.add_(pending.to(self.pending_table.dtype))
            if self.multiplier_update == "auto":
                self.step_multipliers()
        loss = _ProblemLossFunction.apply(batch.input, evaluation.loss.detach(), batch.target, batch.weight,
                                          factors.unsqueeze(2), route, segments)  # factors (2, G, 1, 1)
        return loss.to(_runtime._compute_dtype(batch.dtype))

    @torch.no_grad()
    def step_multipliers(self):
        """λ ← min(max(λ + η·h, 0), λ_max), h each row's slack at the entries gathered since the last step (the
        hard ones by default); rows undefined there keep their λ. Returns the slacks used."""
        if not self.definition.rows:
            return self.multipliers.new_zeros(0)
        evaluation = evaluate_problem(self.definition, self.pending_table, None, self.zero_division, gradients=False)
        slacks = evaluation.slacks.to(self.multipliers.dtype)
        step = torch.where(torch.isfinite(slacks), slacks * self.multiplier_lr, 0.0)
        self.multipliers.add_(step).clamp_(0.0, self.max_multiplier)
        self.pending_table.zero_()
        return slacks

    def reset(self):
        """Forget the running estimates and the pending entries (the multipliers stay: reset_multipliers())."""
        self.pending_table.zero_()
        if self.estimator == "running":
            for kind in ("soft", "hard"):
                getattr(self, f"running_{kind}_rates").zero_()
                getattr(self, f"running_{kind}_weight").zero_()

    def reset_multipliers(self):
        self.multipliers.zero_()

    def extra_repr(self):
        parts = [f"objective={self.definition.name!r}", f"constraints={list(self.definition.row_names)!r}"]
        if self.definition.grouped:
            parts.append(f"groups={self.definition.groups}")
        parts += [f"multiplier_lr={self.multiplier_lr}", f"constraint_rates={self.constraint_rates!r}"]
        return ", ".join(parts)


def check_multiplier_options(multiplier_lr, max_multiplier, multiplier_update, constraint_rates, penalty=0.0):
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0 <= penalty < math.inf:
        raise ValueError(f"penalty must be a finite number >= 0 (0: the plain Lagrangian), got {penalty!r}")
    for name, value in (("multiplier_lr", multiplier_lr), ("max_multiplier", max_multiplier)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if multiplier_update not in MULTIPLIER_UPDATES:
        raise ValueError(f"multiplier_update must be one of {MULTIPLIER_UPDATES}, got {multiplier_update!r}")
    if constraint_rates not in CONSTRAINT_RATES:
        raise ValueError(f"constraint_rates must be one of {CONSTRAINT_RATES}, got {constraint_rates!r}")


__all__ = ["ConstrainedMetricLoss", "Evaluation", "ProblemDefinition", "Quantity", "evaluate_problem", "hard_table",
           "reduce_groups"]
