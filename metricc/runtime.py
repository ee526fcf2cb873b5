"""metricc's runtime: everything a compiled metric loss runs that is the same for every metric.

A generated loss module holds only what is particular to its metric: the metric and its two
per-sample gradient factors as functions of the soft confusion entries, and a
:class:`MetricDefinition` naming its relaxation and thresholds. This module does the rest:

* soft predictions (relaxations) and the soft confusion entries as four direct sums,
  TP = Σ w·y·ŷ, FN = Σ w·y·(1 − ŷ), FP = Σ w·(1 − y)·ŷ, TN = Σ w·(1 − y)·(1 − ŷ), with 1 − ŷ
  computed as its own value, so an entry whose label class is empty is exactly 0 and every
  entry keeps a small relative error (never a difference of sums);
* one (4, C, T) table of them per batch (C classes or labels, T thresholds), all-reduced in
  one collective under torch.distributed, optionally mixed into a running estimate;
* the metric per column, ``zero_division``, and the average over classes and thresholds;
* the closed-form backward: per column one factor for positives and one for negatives,
  times the relaxation's slope, times the chain rule to the logits (elementwise, or through
  the softmax Jacobian for multi-class), O(N·C·T) time, saving only the inputs.

It imports only torch (and the standard library's math and warnings), so
``metricc compile --standalone`` inlines this file verbatim.
"""

import math
import warnings

import torch

__all__ = [
    "MetricDefinition", "MetricLoss", "SigmoidAmplifier", "PiecewiseLinear", "Probabilistic", "ScoreOriented",
    "SoftmaxAmplifier", "TensorMath", "FloatMath", "MetricWarning", "CompileFallbackWarning",
]


class MetricWarning(UserWarning):
    """Base class of the warnings metricc emits (``metricc.MetricWarning``)."""


class CompileFallbackWarning(MetricWarning):
    """``compile=True`` was requested but torch.compile is unavailable or failed; eager code runs."""


CHUNK_ELEMENTS = 1 << 20  # elements of a (T, rows, C) block processed at once: memory stays O(N·C)
CURVE_NEEDS_SCORES = ("a metric of the threshold curve needs binary scores: use task='binary' or 'multilabel' "
                      "(one curve per label)")
SCALAR_PATH_COLUMNS = 64  # up to this many (class, threshold) columns, CPU metrics use Python floats
TASKS = ("binary", "multiclass", "multilabel")
AVERAGES = ("micro", "macro", "weighted")
ESTIMATORS = ("batch", "running")


# ---------------------------------------------------------------------------------------------
# The functions a generated metric calls: one namespace for tensors, one for Python floats.


def _extremum(args, pairwise, pick, bound):
    """Fold torch.minimum/maximum over the tensor arguments and clamp by the numbers (Python floats)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    numbers = [a for a in args if not isinstance(a, torch.Tensor)]
    if not tensors:
        return pick(numbers)
    result = tensors[0]
    for tensor in tensors[1:]:
        result = pairwise(result, tensor)
    return torch.clamp(result, **{bound: pick(numbers)}) if numbers else result


class TensorMath:
    """Elementwise functions on tensors (one value per class and threshold)."""

    sqrt = staticmethod(torch.sqrt)
    log = staticmethod(torch.log)
    exp = staticmethod(torch.exp)
    abs = staticmethod(torch.abs)
    sign = staticmethod(torch.sign)

    @staticmethod
    def minimum(*args):
        return _extremum(args, torch.minimum, min, "max")

    @staticmethod
    def maximum(*args):
        return _extremum(args, torch.maximum, max, "min")

    @staticmethod
    def heaviside(x):
        return 0.5 * (torch.sign(x) + 1)


def _float_sign(x: float) -> float:
    """torch.sign's convention on floats: sign(0) = 0."""
    return float((x > 0) - (x < 0))


class FloatMath:
    """The same on Python floats: the CPU path for a few columns, where ~25 operations on
    one-element tensors would cost more than the sums over a batch. Raises (ZeroDivisionError,
    ValueError, OverflowError) or returns a complex number where a value is undefined; the
    caller then takes the tensor path, which applies ``zero_division``."""

    sqrt = staticmethod(math.sqrt)
    log = staticmethod(math.log)
    exp = staticmethod(math.exp)
    abs = staticmethod(abs)
    sign = staticmethod(_float_sign)
    minimum = staticmethod(min)
    maximum = staticmethod(max)

    @staticmethod
    def heaviside(x):
        return 0.5 * (_float_sign(x) + 1)


# ---------------------------------------------------------------------------------------------
# Relaxations: a probability p becomes a soft prediction ŷ(p; t) in [0, 1].
#
# Binary and multi-label relaxations act elementwise. Each gives ŷ and 1 − ŷ as separate values
# (``soft_pair_``) and the slope dŷ/dp (``slope_``), in place in buffers the runtime owns.
# ``threshold`` is a float, or a (T, 1, 1) tensor that broadcasts a (rows, C) block to (T, rows, C).


class _ElementwiseRelaxation:
    #: whether soft_pair_ reads q = 1 − p (computed without cancellation, σ(−z) from logits)
    needs_complement = True
    #: the constant factor of the slope that mul_slope_at_tail_ leaves to the caller
    tail_slope_scale = 1.0

    @property
    def slope_symmetric_about_half(self) -> bool:
        """Whether dŷ/dp(p) = dŷ/dp(1 − p) at the relaxation's own threshold."""
        return self.slope_symmetric_at(self.threshold)

    def slope_symmetric_at(self, threshold) -> bool:
        """Whether dŷ/dp(p; t) = dŷ/dp(1 − p; t) at threshold t: then the backward takes the slope at
        q = min(p, 1 − p), which it computes anyway for dp/dz, instead of a second sigmoid for p. Every
        relaxation here is centred on its threshold, so that is t = 1/2, whatever its own threshold."""
        return threshold == 0.5

    def soft_pair_(self, p, q, threshold):
        """(ŷ, 1 − ŷ), overwriting p and q. Every relaxation here is symmetric, 1 − ŷ(p; t) = ŷ(1 − p; 1 − t),
        so the complement is the same function at q = 1 − p: no subtraction 1 − ŷ that could cancel."""
        return self.soft_(p, threshold), self.soft_(q, 1 - threshold)

    def mul_slope_at_tail_(self, grad, tail, threshold):
        """grad·(dŷ/dp)/tail_slope_scale at p, given q = min(p, 1 − p) in ``tail`` (overwritten), where the
        slope is symmetric about 1/2. In place in grad."""
        return grad.mul_(self.slope_(tail, threshold))


class SigmoidAmplifier(_ElementwiseRelaxation):
    """ŷ = σ(L·(p − t)): AnyLoss's amplifier (Han et al., KDD 2024, eq. 1), the soft-set paper's H^s."""

    needs_complement = False  # 1 − ŷ = σ(−L·(p − t)), from p alone

    def __init__(self, scale: float = 73.0, threshold: float = 0.5):
        self.scale = float(scale)
        self.threshold = float(threshold)
        self.tail_slope_scale = self.scale
        self._constants = {}  # 0-dim tensors by (value, dtype, device): one torch.full fewer per call

    def __repr__(self):
        return f"SigmoidAmplifier(scale={self.scale!r}, threshold={self.threshold!r})"

    def _argument_(self, p, threshold):
        """a = L·(p − t) in place. For a float t, L·p + (−L·t) in one pass: a fused multiply-add where
        the CPU has one, rounded once where L·t is exact (t = 1/2 by default)."""
        if isinstance(threshold, torch.Tensor):
            return p.sub_(threshold).mul_(self.scale)
        return torch.add(_constant(self._constants, -self.scale * threshold, p), p, alpha=self.scale, out=p)

    def soft_(self, p, threshold):
        return self._argument_(p, threshold).sigmoid_()

    def soft_pair_(self, p, q, threshold):
        if _is_compiling():
            return _sigmoid_pair((p - threshold) * self.scale)
        a = self._argument_(p, threshold)
        complement = torch.neg(a, out=q) if q is not None else torch.neg(a)
        return a.sigmoid_(), complement.sigmoid_()

    def slope_(self, p, threshold):
        """dŷ/dp = L·r·(1 − r), r = σ(−|a|) ≤ 1/2: keeps its precision where the amplifier saturates,
        where σ(a)·(1 − σ(a)) would round to 0 and stop learning (AnyLoss's "No More Update")."""
        if _is_compiling():  # L·v/(1 + v)², v = e^(−|a|): one exponential
            v = torch.exp(-torch.abs((p - threshold) * self.scale))
            return self.scale * v / torch.square(1 + v)
        r = p.sub_(threshold).abs_().mul_(-self.scale).sigmoid_()
        return _mul_sigmoid_slope_(_constant(self._constants, self.scale, r), r, out=r)

    def mul_slope_at_tail_(self, grad, tail, threshold):
        """grad·r·(1 − r) = grad·(dŷ/dp)/L: r = σ(L·(q − t)) is σ(−|a|) without an abs, as q ≤ t = 1/2."""
        return _mul_sigmoid_slope_(grad, self.soft_(tail, threshold))

    def shared_exponentials(self, thresholds):
        """For many thresholds from one exponential per sample: σ(L·(p − t_k)) = 1/(1 + E·c_k) with
        E = e^(L·(t₀ − p)) per sample and c_k = e^(L·(t_k − t₀)) per threshold, t₀ the grid's centre.
        Returns (t₀, c as a list), or None where E·c_k could leave float32's normal range."""
        centre = (max(thresholds) + min(thresholds)) / 2
        reach = self.scale * (max(centre, 1 - centre) + max(abs(t - centre) for t in thresholds))
        if reach > 80:  # e^80 ≈ 5.5e34 < float32's 3.4e38, and e^-80 above its smallest normal
            return None
        return centre, [math.exp(self.scale * (t - centre)) for t in thresholds]


def _mul_sigmoid_slope_(grad, s, out=None):
    """grad·s·(1 − s) in one pass, in place in grad (or into ``out``): sigmoid_backward is autograd's own
    kernel for σ."""
    return torch.ops.aten.sigmoid_backward.grad_input(grad, s, grad_input=grad if out is None else out)


def _constant(cache, value, like):
    """A 0-dim tensor holding ``value`` in like's dtype and device, made once."""
    if _is_compiling():
        return torch.full((), value, dtype=like.dtype, device=like.device)
    key = (value, like.dtype, like.device)
    tensor = cache.get(key)
    if tensor is None:
        tensor = cache[key] = torch.full((), value, dtype=like.dtype, device=like.device)
    return tensor


class PiecewiseLinear(_ElementwiseRelaxation):
    """The soft-set paper's five-point piecewise-linear Heaviside H^l (eq. 5): three segments meet at
    (t − t_m/2, δ) and (t + t_m/2, 1 − δ), t_m = min(t, 1 − t); ŷ(0) = 0, ŷ(t) = 1/2, ŷ(1) = 1."""

    def __init__(self, threshold: float = 0.5, delta: float = 0.2):
        self.threshold = float(threshold)
        self.delta = float(delta)

    def __repr__(self):
        return f"PiecewiseLinear(threshold={self.threshold!r}, delta={self.delta!r})"

    def _pieces(self, threshold):
        """Inner knots t ∓ t_m/2 and the three slopes; floats or tensors."""
        half_width = (0.5 - abs(threshold - 0.5)) / 2
        lo, hi = threshold - half_width, threshold + half_width
        return lo, hi, self.delta / lo, (1 - 2 * self.delta) / (2 * half_width), self.delta / (1 - hi)

    def soft_(self, p, threshold):
        """m3·max(p − hi, 0) + m1·s + (m2 − m1)·max(s − lo, 0), s = min(p, hi): clamps are much faster
        than torch.where on the CPU, and one temporary suffices."""
        lo, hi, m1, m2, m3 = self._pieces(threshold)
        upper = torch.sub(p, hi).clamp_(min=0).mul_(m3)
        scaled = p.clamp_(max=hi).mul_(m1)
        upper.add_(scaled)
        middle = scaled.sub_(m1 * lo).clamp_(min=0).mul_((m2 - m1) / m1)
        return middle.add_(upper).clamp_(max=1.0)  # rounding at p = 1

    def slope_(self, p, threshold):
        """m1 below lo, m2 between the knots, m3 above hi (the means at the knots)."""
        lo, hi, m1, m2, m3 = self._pieces(threshold)
        below = (lo - p).sign_().add_(1).mul_((m1 - m2) / 2)
        return p.sub_(hi).sign_().add_(1).mul_((m3 - m2) / 2).add_(below).add_(m2)

    def mul_slope_at_tail_(self, grad, tail, threshold):
        """q ≤ t = 1/2 never reaches the upper knot: m1 below the lower knot, m2 above, their mean at it."""
        lo, _, m1, m2, _ = self._pieces(threshold)
        return grad.mul_(torch.sub(lo, tail, out=tail).sign_().mul_((m1 - m2) / 2).add_((m1 + m2) / 2))


class ScoreOriented(_ElementwiseRelaxation):
    """Marchetti et al.'s score-oriented loss: ŷ = P(τ < p) for a random threshold τ, uniform or raised
    cosine on [μ − δ, μ + δ]. Outside it ŷ is exactly 0 or 1 with slope 0: the method, not an accident."""

    def __init__(self, distribution: str = "uniform", mu: float = 0.5, delta: float = 0.5):
        if distribution not in ("uniform", "cosine"):
            raise ValueError(f"ScoreOriented: distribution must be 'uniform' or 'cosine', got {distribution!r}")
        self.distribution = distribution
        self.threshold = float(mu)
        self.delta = float(delta)

    def __repr__(self):
        return f"ScoreOriented(distribution={self.distribution!r}, mu={self.threshold!r}, delta={self.delta!r})"

    def soft_(self, p, threshold):
        """From v = (p − (μ − δ))/δ ∈ [0, 2], the distance to the lower end: uniform v/2; raised cosine
        (x − sin x)/(2π), x = π·v, which near 0 cancels to x³/6 and is summed as its series there."""
        v = p.sub_(threshold - self.delta).div_(self.delta).clamp_(0.0, 2.0)
        if self.distribution == "uniform":
            return v.mul_(0.5)
        x = v.mul_(math.pi)
        direct = torch.sub(x, torch.sin(x))
        return torch.where(x < 1, _x_minus_sin_x_series(x), direct).div_(2 * math.pi).clamp_(0.0, 1.0)

    def slope_(self, p, threshold):
        """The density of τ at p. (sign(p − lo) − sign(p − hi))/2 is the interval's indicator (1/2 at its
        ends), from the differences to each end, which are exact near it: a test of |p − μ| < δ rounds a p
        within an ulp of 1/2 from the end onto the end itself and halves the density there."""
        lo, hi = threshold - self.delta, threshold + self.delta
        upper = torch.sub(p, hi).sign_()
        if self.distribution == "uniform":
            return p.sub_(lo).sign_().sub_(upper).mul_(1 / (4 * self.delta))
        # (1 + cos(π(p − μ)/δ))/(2δ) = sin²(π·w/2)/δ, w = the distance in units of δ to the nearer end:
        # no 1 + cos(...) that cancels where the density is small.
        v = p.sub_(lo)
        inside = torch.sign(v).sub_(upper).mul_(0.5)
        v = v.div_(self.delta)
        w = torch.minimum(v, torch.sub(2, v)).clamp_(0.0, 1.0)
        return w.mul_(math.pi / 2).sin_().square_().mul_(inside).div_(self.delta)


def _x_minus_sin_x_series(x):
    """x − sin x = x³/3! − x⁵/5! + ... for |x| < 1, to float64 precision (nine terms: the tenth is below
    2⁻⁵³ of the first); x − sin x itself returns rounding noise where it is tiny."""
    square = x * x
    total = torch.full_like(x, 1.0 / math.factorial(19))
    for k in range(17, 1, -2):
        total = total.mul_(-square).add_(1.0 / math.factorial(k))
    return total.mul_(square).mul_(x)


class Probabilistic(_ElementwiseRelaxation):
    """ŷ = p: the expected confusion matrix under the predicted probabilities (any task)."""

    threshold = None

    def slope_symmetric_at(self, threshold) -> bool:
        return True  # dŷ/dp = 1

    def __repr__(self):
        return "Probabilistic()"

    def soft_(self, p, threshold):
        return p

    def soft_pair_(self, p, q, threshold):
        return p, q

    def slope_(self, p, threshold):
        return p.fill_(1.0)

    def mul_slope_at_tail_(self, grad, tail, threshold):
        return grad


class SoftmaxAmplifier:
    """Multi-class: ŷ = softmax(L/2 · p), p = softmax(z). As L grows ŷ tends to the one-hot argmax, so
    the soft confusion matrix tends to the one scikit-learn evaluates; for two classes ŷ₁ = σ(L·(p₁ − 1/2)),
    AnyLoss's binary amplifier."""

    threshold = None

    def __init__(self, scale: float = 73.0):
        self.scale = float(scale)

    def __repr__(self):
        return f"SoftmaxAmplifier(scale={self.scale!r})"


# ---------------------------------------------------------------------------------------------
# Soft predictions of a block of rows, and the labels as (w·y, w·(1 − y)).


def _probabilities(input, from_logits):
    """(p, q = 1 − p) as new buffers: σ(z) and σ(−z) from logits, so q keeps its precision where p rounds to 1."""
    if from_logits:
        if _is_compiling():
            return _sigmoid_pair(input)
        return torch.sigmoid(input), torch.sigmoid(torch.neg(input))
    return input.clone(), torch.sub(1, input)


def _sigmoid_pair(x):
    """(σ(x), σ(−x)) from one exponential, u = e^(−|x|): u/(1 + u) and 1/(1 + u), the larger one on x's side.
    The form for torch.compile, whose fused loop pays per exponential, not per pass."""
    u = torch.exp(-torch.abs(x))
    large = 1 / (1 + u)
    small = u * large
    positive = x >= 0
    return torch.where(positive, large, small), torch.where(positive, small, large)


def _softmax_pair_(a):
    """softmax(a) and 1 − softmax(a) along the last axis (a is overwritten), the complement as the other
    classes' share Σ_{k≠c} e^{a_k}/Σ_k e^{a_k}, never 1 − ŷ: a confident class keeps its small complement.

    With e = exp(a − max a), the largest e is exactly 1 and the others sum to s; then the largest class
    has ŷ = 1/(1 + s) and 1 − ŷ = s/(1 + s), and every other class 1 − ŷ = (1 + s − e)/(1 + s), where
    1 + s − e ≥ 1 cannot cancel."""
    top, index = a.max(-1, keepdim=True)
    e = a.sub_(top).exp_().scatter_(-1, index, 0.0)  # the largest e (exactly 1) left out of the sum
    others = e.sum(-1, keepdim=True)
    total = others + 1
    complement = torch.sub(total, e).scatter_(-1, index, others).div_(total)
    return e.div_(total).scatter_(-1, index, total.reciprocal()), complement


def _softmax_backward(s, grad):
    """∂/∂a of ⟨grad, softmax(a)⟩ given s = softmax(a): s ⊙ (grad − ⟨s, grad⟩), O(N·C)."""
    return grad.sub_((s * grad).sum(-1, keepdim=True)).mul_(s)


def _multiclass_pair(relaxation, input, from_logits):
    """(ŷ, 1 − ŷ) for a (rows, C) block of logits or probabilities."""
    if isinstance(relaxation, Probabilistic):
        if from_logits:
            return _softmax_pair_(input.clone())
        return input.clone(), torch.sub(1, input)
    amplified = torch.softmax(input, -1).mul_(relaxation.scale / 2) if from_logits else input * (relaxation.scale / 2)
    return _softmax_pair_(amplified)


def _label_block(target, rows, num_classes, dtype, weight):
    """(w·y, w·(1 − y)) for a block of rows as a (2, rows, C) tensor; class indices become one-hot rows."""
    target = target[rows]
    if target.dim() == 1:  # class indices
        y = torch.zeros((target.shape[0], num_classes), dtype=dtype, device=target.device)
        y.scatter_(1, target.unsqueeze(1), 1.0)
    else:
        y = target
    labels = torch.stack([y, torch.sub(1, y)])
    if weight is not None:
        labels.mul_(weight[rows].unsqueeze(1))
    return labels


def _row_blocks(rows_total, elements_per_row):
    """Slices of rows of at most CHUNK_ELEMENTS elements; one slice under torch.compile, which fuses the
    elementwise terms into the reductions and stores no block (and a loop would specialize on N)."""
    if _is_compiling():
        yield slice(None)
        return
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_row))
    for start in range(0, rows_total, step):
        yield slice(start, min(start + step, rows_total))


# ---------------------------------------------------------------------------------------------
# The plan: a loss's definition and options, resolved once, read by the autograd Function.


class MetricDefinition:
    """What a generated module defines for its metric.

    Args:
        name: the metric's name (a Python identifier).
        metric: ``metric(TP, FN, FP, TN, ops) -> (f, g+, g-)``: the metric and its per-sample
            derivatives g+ = ∂f/∂TP − ∂f/∂FN (a positive sample's ŷ) and g- = ∂f/∂FP − ∂f/∂TN,
            written once for tensors (``ops=TensorMath``) and Python floats (``FloatMath``).
        direction: ``"maximize"`` (loss = 1 − f) or ``"minimize"`` (loss = f).
        relaxation: a runtime relaxation (SigmoidAmplifier, PiecewiseLinear, ...).
        thresholds: thresholds to average over (elementwise relaxations), or () for none.
        multiclass_relaxation: the relaxation for ``task="multiclass"``; None where the relaxation has
            no multi-class form (the piecewise-linear and score-oriented ones).
        expression: the metric as text, for messages and ``repr``.
        curve: None for a metric of one confusion matrix; ``"area"`` or ``"sum"`` for a metric of the
            curve over the thresholds (``curve_area(Y, X)``, ``curve_sum(Y, X)``), whose ``metric``
            returns ``((Y, Y+, Y-), (X, X+, X-))``: the curve's coordinates per threshold and their
            per-sample derivatives.
        scale_invariant: whether f(λ·TP, λ·FN, λ·FP, λ·TN) = f(TP, FN, FP, TN) (ratio metrics; for a
            curve, both coordinates). Such a metric is evaluated at each column's entries divided by their
            total, and its factors divided by it (∂f/∂x scales as 1/λ): products and powers of entries then
            stay within the dtype's range whatever the weights' scale (all weights 1e-100 would underflow
            a square of a product of two).
    """

    def __init__(self, *, name, metric, direction, relaxation, thresholds=(), multiclass_relaxation=None,
                 expression="", curve=None, scale_invariant=False):
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        if curve not in (None, "area", "sum"):
            raise ValueError(f"curve must be None, 'area' or 'sum', got {curve!r}")
        self.curve = curve
        self.name = name
        self.metric = metric
        self.direction = direction
        self.relaxation = relaxation
        self.thresholds = tuple(float(t) for t in thresholds) or (0.5,)  # Probabilistic ignores its threshold
        if curve is not None:
            self.thresholds = tuple(sorted(set(self.thresholds)))  # the curve runs along ascending thresholds
        self.multiclass_relaxation = multiclass_relaxation
        self.expression = expression
        self.scale_invariant = bool(scale_invariant)
        self.loss_sign = -1.0 if direction == "maximize" else 1.0

    def __repr__(self):
        return f"MetricDefinition(name={self.name!r}, expression={self.expression!r}, direction={self.direction!r})"


class _Plan:
    """A loss's definition and options, checked once at construction."""

    def __init__(self, definition, *, task, num_classes, average, class_weights, from_logits, zero_division,
                 sync, process_group, grad_average, estimator, momentum):
        self.definition = definition
        self.task = task
        self.num_classes = num_classes
        self.average = average
        self.class_weights = class_weights
        self.from_logits = from_logits
        self.zero_division = zero_division
        self.sync = sync
        self.process_group = process_group
        self.grad_average = grad_average
        self.estimator = estimator
        self.momentum = momentum
        if task == "multiclass":
            if definition.curve is not None:
                raise ValueError(CURVE_NEEDS_SCORES)
            if definition.multiclass_relaxation is None:
                raise ValueError(f"relaxation {definition.relaxation!r} has no multi-class form; compile the metric "
                                 "with relaxation='anyloss' (a softmax amplifier) or 'identity' for task='multiclass'")
            self.relaxation, self.thresholds = definition.multiclass_relaxation, (0.5,)
        else:
            self.relaxation, self.thresholds = definition.relaxation, definition.thresholds

    @property
    def columns(self):
        return self.num_classes, len(self.thresholds)


# ---------------------------------------------------------------------------------------------
# Statistics: the (4, C, T) table of soft confusion entries TP, FN, FP, TN.


def soft_confusion(plan, input, target, weight):
    """The soft confusion entries of a batch as a (4, C, T) tensor, each a direct sum.

    ``input`` is (N, C) (binary: C = 1), ``target`` (N, C) labels in [0, 1] or (N,) class indices,
    ``weight`` (N,) or None. Rows are processed in blocks of at most CHUNK_ELEMENTS elements per
    threshold, written into one buffer that every block reuses (a fresh one costs page faults).
    """
    if input.dim() == 1:  # binary: (N,)
        if len(plan.thresholds) == 1 and not _is_compiling():
            return _binary_soft_confusion(plan, input, target, weight)
        shared = _shared_exponentials(plan, input)
        if shared is not None:
            return _shared_exponential_confusion(plan, input, target, weight, *shared)
        input, target = input.unsqueeze(1), target.unsqueeze(1)
    if _is_compiling() and plan.task != "multiclass":
        return _fused_soft_confusion(plan, input, target, weight)
    if plan.task == "multiclass" and target.dim() == 1 and not _is_compiling():
        return _class_index_confusion(plan, input, target, weight)
    classes, count = plan.columns
    table = input.new_zeros((2, 2, count, classes))  # (label, prediction, T, C)
    scratch = _Scratch()
    for rows in _row_blocks(input.shape[0], classes * count):
        labels = _label_block(target, rows, classes, input.dtype, weight)  # (2, rows, C)
        soft = _soft_block(plan, input[rows], scratch)  # (2, T, rows, C)
        table += _contract(labels, soft)
    return table.reshape(4, count, classes).transpose(1, 2)


class _Scratch:
    """One buffer reused by every block of a call; the last block is the smallest."""

    def __init__(self):
        self.buffer = None

    def take(self, shape, like):
        size = math.prod(shape)
        if _is_compiling():
            return like.new_empty(shape)
        if self.buffer is None or self.buffer.numel() < size:
            self.buffer = like.new_empty(size)
        return self.buffer[:size].view(shape)


def _contract(labels, soft):
    """Σ over rows of labels (2, rows, C) times soft predictions (2, T, rows, C): (2, 2, T, C)."""
    _, count, rows, classes = soft.shape
    if classes == 1 and not _is_compiling():  # one matrix product (compiled: products and sums fuse into a loop)
        return torch.mm(labels.view(2, rows), soft.view(2 * count, rows).t()).view(2, 2, count, 1)
    # Per class a column sum of products (einsum would batch tiny matrix products over the classes, slowly).
    return torch.stack([torch.stack([(label * predicted).sum(-2) for predicted in soft]) for label in labels])


def _soft_block(plan, input, scratch):
    """(ŷ, 1 − ŷ) of a (rows, C) block at every threshold: (2, T, rows, C)."""
    if plan.task == "multiclass":
        return torch.stack(_multiclass_pair(plan.relaxation, input, plan.from_logits)).unsqueeze(1)
    thresholds = plan.thresholds
    if _is_compiling():  # values, not buffers: the compiler fuses the chain into the reductions
        p, q = _probabilities(input, plan.from_logits)
        threshold = torch.tensor(thresholds, dtype=input.dtype, device=input.device).view(-1, 1, 1)
        shape = (len(thresholds), *input.shape)
        return torch.stack(plan.relaxation.soft_pair_(p.expand(shape).clone(), q.expand(shape).clone(), threshold))
    out = scratch.take((2, len(thresholds), *input.shape), input)
    predicted, complement = out[0], out[1]
    p, q = _probabilities(input, plan.from_logits)
    predicted.copy_(p.expand_as(predicted))
    complement.copy_(q.expand_as(complement))
    if len(thresholds) == 1:
        threshold = thresholds[0]
    else:
        threshold = torch.tensor(thresholds, dtype=input.dtype, device=input.device).view(-1, 1, 1)
    values = plan.relaxation.soft_pair_(predicted, complement, threshold)
    _into(predicted, values[0])
    _into(complement, values[1])
    return out


def _into(out, value):
    """Make sure ``value`` lies in ``out`` (a relaxation may return a new tensor instead of working in place)."""
    if value is out:
        return out
    if _is_compiling() or value.data_ptr() != out.data_ptr() or value.stride() != out.stride():
        out.copy_(value)
    return out


def _shared_exponentials(plan, input):
    """(t₀, c) of SigmoidAmplifier.shared_exponentials for several binary thresholds in eager float32/64
    code, else None."""
    shared = getattr(plan.relaxation, "shared_exponentials", None)
    if shared is None or len(plan.thresholds) < 2 or _is_compiling() or input.dtype not in (torch.float32,
                                                                                             torch.float64):
        return None
    return shared(plan.thresholds)


def _exponential_block(plan, input, centre, column, out):
    """E = e^(L·(t₀ − p)) for a block of logits (or probabilities), and ŷ = 1/(1 + E·c_k) into ``out`` (T, rows)."""
    p = torch.sigmoid(input) if plan.from_logits else input
    row = torch.sub(centre, p).mul_(plan.relaxation.scale).exp_()
    return row, torch.mul(column, row, out=out).add_(1).reciprocal_()


def _shared_exponential_confusion(plan, input, target, weight, centre, factors):
    """Binary entries at many sigmoid thresholds from one stored (T, rows) block per step, ŷ: with
    u = E·c_k, 1 − ŷ = u·ŷ, so Σ w·y·(1 − ŷ) = c_k·Σ (w·y·E)·ŷ, and all four sums are one matrix
    product of ŷ with (w·y, w·(1 − y), w·y·E, w·(1 − y)·E): no complement block, no subtraction."""
    column = torch.tensor(factors, dtype=input.dtype, device=input.device).unsqueeze(1)  # c_k, (T, 1)
    sums = input.new_zeros((4, len(factors)))
    scratch = _Scratch()
    for rows in _row_blocks(input.shape[0], len(factors)):
        out = scratch.take((len(factors), rows.stop - rows.start), input)
        row, predicted = _exponential_block(plan, input[rows], centre, column, out)
        labels = input.new_empty((4, rows.stop - rows.start))  # rows of (w·y, w·(1 − y), w·y·E, w·(1 − y)·E)
        labels[0].copy_(target[rows])
        torch.sub(1, target[rows], out=labels[1])
        if weight is not None:
            labels[:2].mul_(weight[rows])
        torch.mul(labels[:2], row, out=labels[2:])
        sums += labels @ predicted.t()  # (4, rows) @ (rows, T): the long axis contiguous in both
    tp, fp, fn_scaled, tn_scaled = sums
    table = torch.stack([tp, fn_scaled * column[:, 0], fp, tn_scaled * column[:, 0]])  # (4, T)
    return table.unsqueeze(1)


def _shared_exponential_gradient(plan, input, target, weight, factors, centre, column_factors):
    """The backward of the same: dŷ/dp = L·ŷ·(1 − ŷ) = L·c_k·E·ŷ², so Σ_k factor_k·dŷ/dp at t_k is
    L·E·((factor ⊙ c) @ ŷ²), one (2, T) @ (T, rows) product per block; then dp/dz."""
    scale = plan.relaxation.scale
    column = torch.tensor(column_factors, dtype=input.dtype, device=input.device).unsqueeze(1)
    weighted = (factors[:, 0, :] * column[:, 0]).mul_(scale)  # (2, T): L·c_k·factor_k
    grad = torch.empty_like(input)
    scratch = _Scratch()
    for rows in _row_blocks(input.shape[0], len(column_factors)):
        out = scratch.take((len(column_factors), rows.stop - rows.start), input)
        row, predicted = _exponential_block(plan, input[rows], centre, column, out)
        positive, negative = (weighted @ predicted.square_()).mul_(row)  # Σ_k factor_k·dŷ/dp: positives, negatives
        _select_by_label(target[rows], positive, negative, out=grad[rows])
    if plan.from_logits:
        grad = _mul_sigmoid_slope_(grad, _tail_probability(input))
    return grad if weight is None else grad.mul_(weight)


def _fused_soft_confusion(plan, input, target, weight):
    """The (4, C, T) table written for torch.compile: per threshold four sums of elementwise terms, which
    the compiler fuses into one loop over the samples without storing a (T, N) block (the eager code's
    blocks and matrix products would make it store them)."""
    positives = target if weight is None else target * weight.unsqueeze(1)
    negatives = (1 - target) if weight is None else (1 - target) * weight.unsqueeze(1)
    p, q = _probabilities(input, plan.from_logits)
    columns = []
    for threshold in plan.thresholds:
        predicted, complement = plan.relaxation.soft_pair_(p.clone(), q.clone(), threshold)
        columns.append(torch.stack([(positives * predicted).sum(0), (positives * complement).sum(0),
                                    (negatives * predicted).sum(0), (negatives * complement).sum(0)]))
    return torch.stack(columns, -1)


def _fused_input_gradient(plan, input, target, weight, factors):
    """∂loss/∂input written for torch.compile: one elementwise term per threshold, fused into one loop."""
    positives = target if weight is None else target * weight.unsqueeze(1)
    negatives = (1 - target) if weight is None else (1 - target) * weight.unsqueeze(1)
    if plan.from_logits:
        p, q = _sigmoid_pair(input)
    else:
        p = input
    grad = 0
    for k, threshold in enumerate(plan.thresholds):
        by_label = positives * factors[0, :, k] + negatives * factors[1, :, k]  # exact for 0/1 labels
        grad = grad + by_label * plan.relaxation.slope_(p.clone(), threshold)
    return grad * (p * q) if plan.from_logits else grad


def _class_index_confusion(plan, input, target, weight):
    """Multi-class with class indices, by gathers and scatters instead of one-hot rows: the own class's
    ŷ and 1 − ŷ of each sample go to TP and FN (O(N)); the other classes', zeroed at the own class, are
    column sums for FP and TN."""
    classes = plan.num_classes
    table = input.new_zeros((4, classes))
    for rows in _row_blocks(input.shape[0], classes):
        labels = target[rows].unsqueeze(1)
        predicted, complement = _multiclass_pair(plan.relaxation, input[rows], plan.from_logits)
        own, own_complement = predicted.gather(1, labels)[:, 0], complement.gather(1, labels)[:, 0]
        weight_rows = None if weight is None else weight[rows]
        if weight_rows is not None:
            own, own_complement = own * weight_rows, own_complement * weight_rows
        table[0].index_add_(0, labels[:, 0], own)
        table[1].index_add_(0, labels[:, 0], own_complement)
        predicted.scatter_(1, labels, 0.0)
        complement.scatter_(1, labels, 0.0)
        if weight_rows is None:
            table[2] += predicted.sum(0)
            table[3] += complement.sum(0)
        else:
            table[2] += torch.mv(predicted.t(), weight_rows)
            table[3] += torch.mv(complement.t(), weight_rows)
    return table.unsqueeze(2)


def _binary_soft_confusion(plan, input, target, weight):
    """The common case, one binary threshold, in few passes over two buffers, ŷ and 1 − ŷ: TP and FN are
    dot products with w·y; then each buffer is multiplied by 1 − y in place as ŷ − y·ŷ (for 0/1 labels
    exactly 0 or ŷ; the product with 1 − y needs no third buffer), and FP and TN are its sums (with w)."""
    relaxation = plan.relaxation
    p = torch.sigmoid(input) if plan.from_logits else input.clone()
    q = None
    if relaxation.needs_complement:
        q = torch.neg(input).sigmoid_() if plan.from_logits else torch.sub(1, input)
    predicted, complement = relaxation.soft_pair_(p, q, plan.thresholds[0])
    positives = target if weight is None else target * weight
    tp, fn = torch.dot(predicted, positives), torch.dot(complement, positives)
    predicted = predicted.addcmul_(target, predicted, value=-1)
    complement = complement.addcmul_(target, complement, value=-1)
    if weight is None:
        fp, tn = predicted.sum(), complement.sum()
    else:
        fp, tn = torch.dot(predicted, weight), torch.dot(complement, weight)
    return torch.stack([tp, fn, fp, tn]).view(4, 1, 1)


# ---------------------------------------------------------------------------------------------
# The metric per column, zero_division, and the average: the loss and its per-column factors.


def evaluate(plan, table):
    """The loss and the per-column factors (2, C, T) for positives and negatives.

    ``table`` is the (4, C, T) table of soft confusion entries (of the batch, or the running
    estimate). Columns where the metric is undefined on finite entries take ``zero_division`` and
    contribute no gradient; non-finite entries (NaN or inf in the input or weights) make the loss NaN.
    """
    if plan.average == "micro":
        table = table.sum(1, keepdim=True)
    if plan.definition.curve is not None:
        result = None
        if table.device.type == "cpu" and table.shape[1] == 1 and table.shape[2] <= SCALAR_PATH_COLUMNS \
                and not _is_compiling():
            result = _evaluate_curve_floats(plan, table)
        loss, factors = _evaluate_curve(plan, table) if result is None else result
        if plan.average == "micro":
            factors = factors.expand(2, plan.num_classes, factors.shape[-1])
        return loss, factors
    weights = _column_weights(plan, table)
    result = None
    if table.device.type == "cpu" and table.shape[1] * table.shape[2] <= SCALAR_PATH_COLUMNS \
            and not _is_compiling():
        result = _evaluate_floats(plan, table, weights)
    if result is None:
        result = _evaluate_tensors(plan, table, weights)
    loss, factors = result
    if plan.average == "micro":
        factors = factors.expand(2, plan.num_classes, factors.shape[-1])
    return loss, factors


class FloatFactors(tuple):
    """(positive, negative) as Python floats: the one column of a binary loss on the CPU, kept as floats
    so that the backward needs no tensor operation to read them."""

    def tensor(self, like):
        return torch.tensor(self, dtype=like.dtype).view(2, 1, 1)

    def __mul__(self, scale):
        return FloatFactors(value * float(scale) for value in self)


def metric_values(plan, table):
    """The metric of every column of a (4, C, T) table, ``zero_division`` applied: (C, T), or (C, 1) for
    a metric of the curve over the thresholds."""
    if plan.definition.curve is not None:
        value, _ = _curve_columns(plan, table)
        return value.unsqueeze(1)
    value, _ = _metric_columns(plan, table)
    return value


def _class_shares(plan, table):
    """Each class's weight in the loss, summing to 1, as a (C,) tensor, or None where uniform.
    weighted: by support Σ w·y per class (scikit-learn's average='weighted')."""
    if plan.class_weights is not None and plan.average != "micro":
        weights = plan.class_weights.to(dtype=table.dtype, device=table.device)
    elif plan.average == "weighted" and table.shape[1] > 1:
        weights = table[0, :, 0] + table[1, :, 0]  # TP + FN = Σ w·y per class
    else:
        return None
    return weights / weights.sum()


def _column_weights(plan, table):
    """The weight of each (class, threshold) column in the loss, summing to 1, or None where uniform."""
    shares = _class_shares(plan, table)
    if shares is None:
        return None
    classes, count = table.shape[1], table.shape[2]
    return shares.unsqueeze(1).expand(classes, count) / count


def _evaluate_floats(plan, table, weights):
    """The CPU path on Python floats; None where a value is undefined or not finite."""
    definition = plan.definition
    single = table.shape[1] == 1 and table.shape[2] == 1
    rows = [[value[0][0]] for value in table.tolist()] if single else table.reshape(4, -1).tolist()
    column_weights = [1.0 / len(rows[0])] * len(rows[0]) if weights is None else weights.reshape(-1).tolist()
    loss, positives, negatives = 0.0, [], []
    try:
        for (tp, fn, fp, tn), share in zip(zip(*rows), column_weights):
            total = tp + fn + fp + tn if definition.scale_invariant else 0.0
            if total > 0 and math.isfinite(total):
                tp, fn, fp, tn = tp / total, fn / total, fp / total, tn / total
            else:
                total = 1.0
            value, positive, negative = definition.metric(tp, fn, fp, tn, FloatMath)
            positive, negative = positive / total, negative / total
            if not (math.isfinite(value) and math.isfinite(positive) and math.isfinite(negative)):
                return None
            loss += share * (1 - value if definition.loss_sign < 0 else value)
            positives.append(definition.loss_sign * share * positive)
            negatives.append(definition.loss_sign * share * negative)
    except (ArithmeticError, ValueError, TypeError):  # 1/0, sqrt(-1), a complex power, overflow
        return None
    positives, negatives = (_within_range(values, table.dtype) for values in (positives, negatives))
    if single and plan.task == "binary":
        factors = FloatFactors((positives[0], negatives[0]))
    else:
        factors = torch.tensor([positives, negatives], dtype=table.dtype).view(2, *table.shape[1:])
    return torch.tensor(loss, dtype=table.dtype), factors


def _within_range(values, dtype):
    """Factors as Python floats, each held within the dtype's finite range: a factor beyond it (float32:
    3.4e38, where ŷ of a saturated sample is tiny) stored as inf would make y·inf = NaN for the samples of
    the other label."""
    limit = torch.finfo(dtype).max
    return [min(max(value, -limit), limit) for value in values]


def _evaluate_tensors(plan, table, weights):
    definition = plan.definition
    value, factors = _metric_columns(plan, table)
    shares = torch.full_like(value, 1.0 / value.numel()) if weights is None else weights
    losses = 1 - value if definition.loss_sign < 0 else value
    loss = (losses * shares).sum()
    factors = factors * (shares * definition.loss_sign)
    if _is_compiling():
        # The compiler's partitioner saves a concatenation for the backward rather than recompute
        # the zero_division handling inside its loop (7-13 % of the loss's time).
        factors = torch.cat([factors[:1], factors[1:]])
    return loss, factors


def _metric_columns(plan, table):
    """The metric and its two factors per column of a (4, C, T) table, as tensors, zero_division applied."""
    definition = plan.definition
    finite_entries = torch.isfinite(table).all(0)
    total = None
    if definition.scale_invariant:  # f at the rates, ∂f/∂x divided by the total (see MetricDefinition)
        total = table.sum(0)
        total = torch.where((total > 0) & finite_entries, total, 1.0)
        table = table / total
    TP, FN, FP, TN = table
    value, positive, negative = (torch.as_tensor(x, dtype=table.dtype, device=table.device).expand_as(TP)
                                 for x in definition.metric(TP, FN, FP, TN, TensorMath))
    factors = torch.stack([positive, negative])
    if total is not None:
        factors = factors / total
    if plan.zero_division is not None:
        # Where the metric is undefined (recall on a batch without positives) it takes the value
        # zero_division and contributes no gradient, as in scikit-learn; where only its gradient is
        # (a root at 0), the column contributes no gradient either. Non-finite entries are not
        # "undefined": they come from NaN or inf input, and the loss must say so.
        undefined = ~torch.isfinite(value) & finite_entries
        value = torch.where(undefined, plan.zero_division, value)
        factors = torch.where(torch.isfinite(factors) | ~finite_entries, factors, 0.0)
        factors = factors.masked_fill(undefined, 0.0)
    value = torch.where(finite_entries, value, math.nan)
    factors = torch.where(finite_entries, factors, math.nan)
    return value, factors


def _evaluate_curve(plan, table):
    """Loss and factors of a metric of the curve over the thresholds: one value per class."""
    definition = plan.definition
    value, factors = _curve_columns(plan, table)  # (C,), (2, C, T)
    shares = _class_shares(plan, table)
    if shares is None:
        shares = torch.full_like(value, 1.0 / value.numel())
    losses = 1 - value if definition.loss_sign < 0 else value
    loss = (losses * shares).sum()
    return loss, factors * (shares * definition.loss_sign).unsqueeze(1)


def _evaluate_curve_floats(plan, table):
    """One curve on Python floats, the formulas of _curve_columns: some 30 tensor operations on a (4, 1, T)
    table would cost more than the sums over a small batch. None where a value is undefined or not finite;
    the tensor path then applies zero_division."""
    definition = plan.definition
    tp, fn, fp, tn = table[:, 0, :].tolist()
    positives, negatives = tp[0] + fn[0], fp[0] + tn[0]
    total = positives + negatives if definition.scale_invariant else 0.0  # every threshold's entries sum to it
    if total > 0 and math.isfinite(total):  # the curve at the rates (see MetricDefinition.scale_invariant)
        tp, fn, fp, tn = ([v / total for v in row] for row in (tp, fn, fp, tn))
        positives, negatives = positives / total, negatives / total
    else:
        total = 1.0
    points = [(positives, 0.0, negatives, 0.0), *zip(tp, fn, fp, tn), (0.0, positives, 0.0, negatives)]
    curve = []
    try:
        for index, point in enumerate(points):
            if definition.curve == "sum" and index == len(points) - 1:
                curve.append((0.0, 0.0, 0.0, 0.0, 0.0, 0.0))  # Y at threshold 1 is never used (0/0 for precision)
                continue
            (y, y_positive, y_negative), (x, x_positive, x_negative) = definition.metric(*point, FloatMath)
            curve.append((y, y_positive, y_negative, x, x_positive, x_negative))
    except (ArithmeticError, ValueError, TypeError):
        return None
    y, y_positive, y_negative, x, x_positive, x_negative = zip(*curve)
    steps = [x[k] - x[k + 1] for k in range(len(x) - 1)]
    if definition.curve == "area":
        value = sum(step * (y[k] + y[k + 1]) for k, step in enumerate(steps)) / 2
        by_y = [(x[k - 1] - x[k + 1]) / 2 for k in range(1, len(x) - 1)]
        by_x = [(y[k + 1] - y[k - 1]) / 2 for k in range(1, len(y) - 1)]
    else:
        value = sum(step * y[k] for k, step in enumerate(steps))
        by_y = steps[1:]
        by_x = [y[k] - y[k - 1] for k in range(1, len(y) - 1)]
    sign = definition.loss_sign / total
    positive = [sign * (a * y_positive[k + 1] + b * x_positive[k + 1]) for k, (a, b) in enumerate(zip(by_y, by_x))]
    negative = [sign * (a * y_negative[k + 1] + b * x_negative[k + 1]) for k, (a, b) in enumerate(zip(by_y, by_x))]
    numbers = (value, *positive, *negative)
    if any(isinstance(v, complex) for v in numbers) or not all(map(math.isfinite, numbers)):
        return None
    factors = [_within_range(values, table.dtype) for values in (positive, negative)]
    loss = 1 - value if definition.loss_sign < 0 else value
    return torch.tensor(loss, dtype=table.dtype), torch.tensor(factors, dtype=table.dtype).view(2, 1, -1)


def _curve_columns(plan, table):
    """The curve metric per class and its factors per (class, threshold), zero_division applied.

    The curve runs through the points (X_k, Y_k), k = 0 … T + 1: the thresholds in ascending order,
    between two fixed ends, threshold 0 (every sample predicted positive: TP = P, FP = N) and threshold 1
    (every sample predicted negative), whose entries depend on the labels only. With ΔX_k = X_k − X_{k+1},

        area  A = Σ_k ΔX_k·(Y_k + Y_{k+1})/2,   ∂A/∂Y_k = (X_{k−1} − X_{k+1})/2,  ∂A/∂X_k = (Y_{k+1} − Y_{k−1})/2
        sum   S = Σ_k ΔX_k·Y_k,                 ∂S/∂Y_k = ΔX_k,                   ∂S/∂X_k = Y_k − Y_{k−1}

    and a threshold's factor for positives is ∂A/∂Y_k·(Y_TP − Y_FN) + ∂A/∂X_k·(X_TP − X_FN) (negatives
    likewise), so the backward stays the elementwise one, O(N·T).
    """
    definition = plan.definition
    finite_entries = torch.isfinite(table).all(0).all(1)  # (C,)
    total = None
    if definition.scale_invariant:  # the curve at the rates, its factors divided by the total
        total = table[:, :, 0].sum(0)  # (C,): every threshold's entries sum to it
        total = torch.where((total > 0) & finite_entries, total, 1.0)
        table = table / total.view(1, -1, 1)
    TP, FN, FP, TN = table
    positives, negatives = TP[:, :1] + FN[:, :1], FP[:, :1] + TN[:, :1]
    zeros = torch.zeros_like(positives)
    start = torch.stack([positives, zeros, negatives, zeros])
    end = torch.stack([zeros, positives, zeros, negatives])
    points = torch.cat([start, table, end], dim=2)  # (4, C, T + 2)
    (y, y_positive, y_negative), (x, x_positive, x_negative) = (
        [torch.as_tensor(v, dtype=table.dtype, device=table.device).expand_as(points[0]) for v in quantity]
        for quantity in definition.metric(*points, TensorMath))
    if definition.curve == "sum":
        y = torch.cat([y[:, :-1], zeros], dim=1)  # Y at threshold 1 is never used (precision there is 0/0)
    steps = x[:, :-1] - x[:, 1:]  # ΔX_k, k = 0 … T
    if definition.curve == "area":
        value = (steps * (y[:, :-1] + y[:, 1:])).sum(1) / 2
        by_y, by_x = (x[:, :-2] - x[:, 2:]) / 2, (y[:, 2:] - y[:, :-2]) / 2
    else:
        value = (steps * y[:, :-1]).sum(1)
        by_y, by_x = steps[:, 1:], y[:, 1:-1] - y[:, :-2]
    inner = slice(1, -1)
    factors = torch.stack([by_y * y_positive[:, inner] + by_x * x_positive[:, inner],
                           by_y * y_negative[:, inner] + by_x * x_negative[:, inner]])
    if total is not None:
        factors = factors / total.view(1, -1, 1)
    if plan.zero_division is not None:
        # A curve with an undefined point (TPR of a class without positives: no ROC) is undefined.
        undefined = ~(torch.isfinite(value) & torch.isfinite(factors).all(0).all(1)) & finite_entries
        value = torch.where(undefined, plan.zero_division, value)
        factors = factors.masked_fill(undefined.unsqueeze(1), 0.0)
    value = torch.where(finite_entries, value, math.nan)
    factors = torch.where(finite_entries.unsqueeze(1), factors, math.nan)
    return value, factors


# ---------------------------------------------------------------------------------------------
# Backward: ∂loss/∂input from the per-column factors, saving only the inputs.


def input_gradient(plan, input, target, weight, factors):
    """∂loss/∂input for an (N, C) or binary (N,) input, given factors (2, C, T) (positive and negative per
    column) or, for one binary column, FloatFactors."""
    if input.dim() == 1:  # binary
        if isinstance(factors, FloatFactors) or (len(plan.thresholds) == 1 and not _is_compiling()):
            positive, negative = factors if isinstance(factors, FloatFactors) else factors.view(2).unbind(0)
            grad = _binary_input_gradient(plan, input, target, positive, negative)
            return grad if weight is None else grad.mul_(weight)
        shared = _shared_exponentials(plan, input)
        if shared is not None:
            return _shared_exponential_gradient(plan, input, target, weight, factors, *shared)
        return input_gradient(plan, input.unsqueeze(1), target.unsqueeze(1), weight, factors).view(-1)
    if _is_compiling() and plan.task != "multiclass":
        return _fused_input_gradient(plan, input, target, weight, factors)
    grad = torch.empty_like(input)
    classes, count = plan.columns
    scratch = _Scratch()
    index_targets = plan.task == "multiclass" and target.dim() == 1 and not _is_compiling()
    for rows in _row_blocks(input.shape[0], classes * count):
        if index_targets:
            grad[rows] = _multiclass_block_gradient(plan, input[rows], None, factors[:, :, 0], target[rows],
                                                    None if weight is None else weight[rows])
            continue
        labels = _label_block(target, rows, classes, input.dtype, weight)  # (2, rows, C)
        if plan.task == "multiclass":
            block = _multiclass_block_gradient(plan, input[rows], labels, factors[:, :, 0])
        else:
            block = _elementwise_block_gradient(plan, input[rows], labels, factors, scratch)
        if _is_compiling():
            grad = block
        else:
            grad[rows] = block
    return grad


def _elementwise_block_gradient(plan, input, labels, factors, scratch):
    """Σ_t (w·y·positive + w·(1 − y)·negative)·dŷ/dp at t, times dp/dz, for a (rows, C) block."""
    chain = None
    if plan.from_logits and _is_compiling():  # p and dp/dz = p·(1 − p) from one exponential
        p, q = _sigmoid_pair(input)
        chain = p * q
    else:
        p = torch.sigmoid(input) if plan.from_logits else input
    thresholds = plan.thresholds
    slopes = scratch.take((len(thresholds), *p.shape), p) if not _is_compiling() else None
    if len(thresholds) == 1:
        threshold = thresholds[0]
    else:
        threshold = torch.tensor(thresholds, dtype=p.dtype, device=p.device).view(-1, 1, 1)
    if slopes is None:  # compiled: a value the compiler fuses, not a buffer
        slopes = plan.relaxation.slope_(p.expand(len(thresholds), *p.shape).clone(), threshold)
    else:
        slopes.copy_(p.expand_as(slopes))
        slopes = plan.relaxation.slope_(slopes, threshold)  # (T, rows, C)
    count, rows, classes = slopes.shape
    if classes == 1 and not _is_compiling():  # Σ_t factor·slope as one matrix product: (2, T) @ (T, rows)
        by_label = torch.mm(factors[:, 0, :], slopes.view(count, rows)).unsqueeze(-1)
    elif count == 1:
        by_label = factors[:, :, 0].unsqueeze(1) * slopes  # (2, rows, C)
    else:
        by_label = (factors.transpose(1, 2).unsqueeze(2) * slopes).sum(1)  # Σ_t: (2, T, rows, C) → (2, rows, C)
    grad = (labels * by_label).sum(0)  # exact for 0/1 labels: one term of the two is 0
    if chain is not None:
        return grad * chain
    if plan.from_logits:
        grad = _mul_sigmoid_slope_(grad, _tail_probability(input))
    return grad


def _multiclass_block_gradient(plan, input, labels, factors, indices=None, weight=None):
    """Through the softmax Jacobian(s), p ⊙ (g − ⟨p, g⟩): O(rows·C), never rows·C·C. The labels come as
    (w·y, w·(1 − y)) rows, or as class ``indices`` (and weights): then ∂loss/∂ŷ is the negative factor
    with the own class's entry replaced by the positive one (exact, no 0·x + 1·y)."""
    if indices is None:
        grad = (labels * factors.unsqueeze(1)).sum(0)  # ∂loss/∂ŷ: (rows, C)
    else:
        positive, negative = factors
        grad = negative.expand(indices.shape[0], -1).clone()
        grad.scatter_(1, indices.unsqueeze(1), positive[indices].unsqueeze(1))
        if weight is not None:
            grad.mul_(weight.unsqueeze(1))
    relaxation = plan.relaxation
    if isinstance(relaxation, Probabilistic):
        if plan.from_logits:
            return _softmax_backward(torch.softmax(input, -1), grad)
        return grad
    p = torch.softmax(input, -1) if plan.from_logits else input
    amplified = torch.softmax(p * (relaxation.scale / 2), -1)
    grad = _softmax_backward(amplified, grad).mul_(relaxation.scale / 2)
    return _softmax_backward(p, grad) if plan.from_logits else grad


def _tail_probability(input, out=None):
    """q = σ(−|z|) = min(p, 1 − p) ≤ 1/2, one sigmoid: dp/dz = q·(1 − q) from it never rounds to 0
    where σ(z) rounds to 1 (σ(z)·(1 − σ(z)) would, and learning would stop)."""
    return torch.abs(input, out=out).neg_().sigmoid_()


def _binary_input_gradient(plan, input, target, positive, negative):
    """The common case in few in-place passes: label factors first, into the one new buffer, then dp/dz
    and the relaxation's slope multiplied in, each in one pass."""
    relaxation, threshold = plan.relaxation, plan.thresholds[0]
    if not plan.from_logits:
        grad = relaxation.slope_(input.clone(), threshold)
        return grad.mul_(_select_by_label(target, positive, negative, out=torch.empty_like(grad)))
    tail = _tail_probability(input)
    if relaxation.slope_symmetric_at(threshold):
        # dŷ/dp(p) = dŷ/dp(1 − p): the slope at p = σ(z) is the slope at q = min(p, 1 − p), which the
        # backward has already; its constant factor (L for the amplifier) is folded into the factors.
        scale = relaxation.tail_slope_scale
        if scale != 1.0:
            positive, negative = positive * scale, negative * scale
        grad = _select_by_label(target, positive, negative, out=torch.empty_like(tail))
        return relaxation.mul_slope_at_tail_(_mul_sigmoid_slope_(grad, tail), tail, threshold)
    grad = _mul_sigmoid_slope_(relaxation.slope_(torch.sigmoid(input), threshold), tail)
    return grad.mul_(_select_by_label(target, positive, negative, out=tail))  # tail is free again


def _select_by_label(target, positive, negative, out):
    """y·positive + (1 − y)·negative, written into ``out``: exact for 0/1 labels (one term is exactly 0),
    unlike negative + y·(positive − negative), which loses a positive factor much smaller than the
    negative one; linear in y, so soft labels get the interpolated factor."""
    if isinstance(negative, torch.Tensor) and out.device.type == "cpu" and negative.numel() == 1 \
            and not _is_compiling():
        negative, positive = negative.item(), positive.item()
    if not isinstance(negative, torch.Tensor):
        # Two passes with Python numbers (a three-operand addcmul with a one-element operand is not
        # vectorized on the CPU): −negative·y + negative = negative·(1 − y), then + positive·y.
        torch.mul(target, -negative, out=out).add_(negative)
        return out.add_(target, alpha=positive)
    torch.mul(target, negative, out=out)
    torch.sub(negative, out, out=out)
    return out.addcmul_(target, positive)


# ---------------------------------------------------------------------------------------------
# torch.distributed and torch.compile


def _world_size(process_group):
    """Ranks that share the statistics; 1 without an initialized process group."""
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return 1
    return distributed.get_world_size(process_group)


# Whether torch.compile is tracing: looked up once (a getattr chain per call costs on small batches).
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)


# ---------------------------------------------------------------------------------------------
# The autograd Function


def _forward(input, target, weight, plan, running):
    """The loss, the per-column factors (2, C, T) and the table the metric was evaluated at."""
    table = soft_confusion(plan, input, target, weight)
    grad_scale = 1.0
    if plan.sync:
        world = _world_size(plan.process_group)
        if world > 1:
            table = table.contiguous()
            torch.distributed.all_reduce(table, group=plan.process_group)
            # DDP averages gradients over ranks; scaling by the world size makes that
            # average equal the gradient of the loss on the global batch.
            grad_scale = float(world) if plan.grad_average else 1.0
    if running is not None:
        table = running.update(table)
    loss, factors = evaluate(plan, table)
    if grad_scale != 1.0:
        factors = factors * grad_scale
    return loss, factors, table


def _backward(plan, input, target, weight, factors, grad_loss):
    with torch.no_grad():
        scale = grad_loss.item() if isinstance(factors, FloatFactors) else grad_loss
        grad = input_gradient(plan, input, target, weight, factors * scale)
    if torch.is_grad_enabled() and input.requires_grad:  # create_graph=True, or a torch.func transform
        grad = _FirstDerivativeOnly.apply(grad, input)
    return grad, None, None, None, None


class _MetricLossFunction(torch.autograd.Function):
    """Forward: the (4, C, T) table, the metric and the per-column factors. Backward: elementwise.

    Written with setup_context, as torch.func transforms (grad, functional_call) need."""

    @staticmethod
    def forward(input, target, weight, plan, running):
        loss, factors, table = _forward(input, target, weight, plan, running)
        if isinstance(factors, FloatFactors):
            factors = factors.tensor(loss)
        return loss, factors, table

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, plan, _ = inputs
        _, factors, _ = output
        ctx.plan = plan
        ctx.save_for_backward(input, target, weight, factors)
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx, grad_loss, grad_factors, grad_table):
        return _backward(ctx.plan, *ctx.saved_tensors, grad_loss)

    @staticmethod
    def vmap(info, in_dims, *args):
        raise RuntimeError("a metricc loss couples every sample of its batch through the confusion entries, so it "
                           "cannot be vmapped over a batch of batches; call it once per batch and torch.stack the "
                           "losses")


class _EagerMetricLossFunction(torch.autograd.Function):
    """The same with the forward taking ctx: Function.apply binds the arguments of a setup_context-style
    forward with inspect.signature on every call, some 20 µs that a small batch's loss cannot afford."""

    @staticmethod
    def forward(ctx, input, target, weight, plan, running):
        loss, factors, table = _forward(input, target, weight, plan, running)
        ctx.plan = plan
        ctx.set_materialize_grads(False)  # no zero tensors for the outputs that take no gradient
        if isinstance(factors, FloatFactors):
            ctx.float_factors = factors
            ctx.save_for_backward(input, target, weight)
            ctx.mark_non_differentiable(table)
            return loss, None, table
        ctx.float_factors = None
        ctx.save_for_backward(input, target, weight, factors)
        ctx.mark_non_differentiable(factors, table)
        return loss, factors, table

    @staticmethod
    def backward(ctx, grad_loss, grad_factors, grad_table):
        if grad_loss is None:  # only outputs that take no gradient were differentiated
            return None, None, None, None, None
        if ctx.float_factors is not None:
            return _backward(ctx.plan, *ctx.saved_tensors, ctx.float_factors, grad_loss)
        return _backward(ctx.plan, *ctx.saved_tensors, grad_loss)


class _BinaryLossFunction(torch.autograd.Function):
    """The common case in a straight line: one binary column on the CPU, eager, the batch's own table (no
    sync, no running estimate). The same functions as the general path (_binary_soft_confusion,
    _evaluate_floats, input_gradient), without the forward's per-call dispatch: 5–8 % of a call at
    n = 64 … 1024 (docs/performance.md), bit for bit the same loss and gradient (tests/test_emit.py)."""

    @staticmethod
    def forward(ctx, input, target, weight, plan):
        table = _binary_soft_confusion(plan, input, target, weight)
        result = _evaluate_floats(plan, table, None)
        loss, factors = _evaluate_tensors(plan, table, None) if result is None else result
        ctx.plan, ctx.factors = plan, factors
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, weight)
        ctx.mark_non_differentiable(table)
        return loss, table

    @staticmethod
    def backward(ctx, grad_loss, grad_table):
        if grad_loss is None:
            return None, None, None, None
        if torch.is_grad_enabled():  # create_graph=True: the general backward says why it cannot
            return _backward(ctx.plan, *ctx.saved_tensors, ctx.factors, grad_loss)[:4]
        factors = ctx.factors
        scale = grad_loss.item() if isinstance(factors, FloatFactors) else grad_loss
        return input_gradient(ctx.plan, *ctx.saved_tensors, factors * scale), None, None, None


def _under_functorch():
    """Whether a torch.func transform (grad, vmap, ...) is active."""
    level = getattr(torch._C._functorch, "maybe_current_level", None)
    return level is not None and level() is not None


class _FirstDerivativeOnly(torch.autograd.Function):
    """The gradient itself, with a clear error where something differentiates it once more."""

    @staticmethod
    def forward(grad, input):
        return grad

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_grad):
        raise RuntimeError("metricc losses have a closed-form first derivative only: a second derivative "
                           "(differentiating the gradient after backward(create_graph=True), torch.func.hessian, "
                           "...) is not supported; use autograd through the plain formula for that")


# ---------------------------------------------------------------------------------------------
# The running estimator


class _RunningEstimate:
    """Mixes a batch's table into the running estimate held in a module's buffers.

    The estimate is an exponential moving average of the entries as rates (entries / Σ w), debiased
    as Adam's moments are, and evaluated at the current batch's size, so the metric and its factors
    are those of a batch as large as this one whose rates are the running estimate. With momentum 0
    that is the batch itself.
    """

    def __init__(self, rates, total, momentum, update):
        self.rates, self.total, self.momentum, self.store = rates, total, momentum, update

    def update(self, table):
        if table.device != self.rates.device:
            raise ValueError(f"the running estimate is on {self.rates.device} but input is on {table.device}; "
                             "move the loss with loss_fn.to(device)")
        if table.numel() == 4 and table.device.type == "cpu" and not _is_compiling():
            return self._update_floats(table)
        batch = table.to(self.rates.dtype)  # the estimate accumulates in float64
        size = batch[:, :1, :1].sum()  # Σ w: every column's four entries add up to it
        # A batch without weight (every weight 0) carries no rates: it leaves the estimate as it is and is
        # evaluated as itself, all zeros, so its metric is 0/0 (zero_division), as with the batch estimator.
        weighed = size != 0
        if self.momentum == 0:
            if self.store:
                self.rates.copy_(torch.where(weighed, batch / size, self.rates))
                self.total.copy_(torch.where(weighed, 1.0, self.total))
            return table
        share = 1.0 - self.momentum
        rates = torch.where(weighed, self.rates * self.momentum + batch * (share / size), self.rates)
        total = torch.where(weighed, self.total * self.momentum + share, self.total)
        if self.store:
            self.rates.copy_(rates)
            self.total.copy_(total)
        return torch.where(weighed, rates * (size / total), batch).to(table.dtype)

    def _update_floats(self, table):
        """The same for one column on the CPU, on Python floats (float64, as the buffers): some 13 tensor
        operations on four numbers would cost more than the batch's sums at small n."""
        entries = table.view(4).tolist()
        size = entries[0] + entries[1] + entries[2] + entries[3]
        if size == 0:
            return table  # no weight: the estimate stays, the batch is evaluated as itself (see update)
        if self.momentum == 0:
            if self.store:
                self.rates.copy_(torch.tensor([entry / size for entry in entries], dtype=self.rates.dtype)
                                 .view_as(self.rates))
                self.total.fill_(1.0)
            return table
        share = 1.0 - self.momentum
        rates = [rate * self.momentum + entry * (share / size)
                 for rate, entry in zip(self.rates.view(4).tolist(), entries)]
        total = self.total.item() * self.momentum + share
        if self.store:
            self.rates.copy_(torch.tensor(rates, dtype=self.rates.dtype).view_as(self.rates))
            self.total.fill_(total)
        return torch.tensor([rate * (size / total) for rate in rates], dtype=table.dtype).view_as(table)


# ---------------------------------------------------------------------------------------------
# Input checks and formats


def _check_tensor(value, what):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(value).__name__}")


def _compute_dtype(dtype):
    """Statistics and factors in float32 for half-precision input; the gradient returns in the input's dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _raise_or_assert(bad, message):
    """Raise ValueError(message) where ``bad`` (a 0-dim bool tensor) is true; under torch.compile the
    check is compiled into the graph (torch._assert_async), so a traced loss still refuses bad input."""
    if _is_compiling():
        torch._assert_async(~bad, message)
    elif bool(bad):
        raise ValueError(message)


class _Batch:
    """The checked batch in the runtime's layout: input (N, C), target (N, C) or class indices (N,)."""

    def __init__(self, input, target, weight, dtype):
        self.input, self.target, self.weight, self.dtype = input, target, weight, dtype


def _prepare(plan, input, target, weight, validate, allow_empty):
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    kind = "logits" if plan.from_logits else "probabilities"
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor of {kind}, got dtype {input.dtype}")
    dtype = input.dtype
    compute = _compute_dtype(dtype)
    if plan.task == "binary":
        if input.dim() == 2 and input.shape[1] == 1:
            input = input[:, 0]
        if input.dim() != 1:
            raise ValueError(f"input must have shape (N,) or (N, 1) for task='binary', got {tuple(input.shape)}; "
                             "for one column per class pass task='multiclass' or task='multilabel'")
        target = _flat_target(target, input)
    else:
        _check_columns(plan, input)
        target = _class_target(plan, target, input, validate)
    if weight is not None:
        _check_tensor(weight, "weight")
        if weight.dim() == 2 and weight.shape[1] == 1:
            weight = weight[:, 0]
        if weight.dim() != 1 or weight.shape[0] != input.shape[0]:
            raise ValueError(f"weight must have shape ({input.shape[0]},), one per sample, got {tuple(weight.shape)}")
        _same_device(weight, input, "weight")
    if input.shape[0] == 0 and not allow_empty:
        raise ValueError("the batch is empty: a confusion-matrix metric needs at least one sample")
    input = input.to(compute)
    if plan.task != "multiclass" or target.dim() == 2:
        target = target.to(compute)
    if weight is not None:
        weight = weight.to(compute)
    if validate and not _validate(plan, input, target, weight):
        # ±inf logits: σ would take them as certain predictions and the loss would stay finite. x + (x − x)
        # is x where x is finite and NaN where it is not, with gradient 1: the loss and its gradient are
        # NaN, as with NaN input (and as AMP's GradScaler needs to skip the step).
        input = input + (input - input)
    return _Batch(input, target, weight, dtype)


def _flat_target(target, input):
    if target.dim() == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.dim() != 1:
        raise ValueError(f"target must have shape (N,) or (N, 1), got {tuple(target.shape)}")
    if target.shape[0] != input.shape[0]:
        raise ValueError(f"input holds {input.shape[0]} samples but target holds {target.shape[0]}; they must match")
    _same_device(target, input, "target")
    return target


def _check_columns(plan, input):
    noun = "classes" if plan.task == "multiclass" else "labels"
    if input.dim() != 2 or input.shape[1] != plan.num_classes:
        raise ValueError(f"input must have shape (N, {plan.num_classes}) for task={plan.task!r} with "
                         f"{plan.num_classes} {noun}, got {tuple(input.shape)}")


def _class_target(plan, target, input, validate):
    _same_device(target, input, "target")
    if target.shape[0] != input.shape[0]:
        raise ValueError(f"input holds {input.shape[0]} samples but target holds {target.shape[0]}; they must match")
    if plan.task == "multiclass" and target.dim() == 1:
        if target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(f"target of shape (N,) must hold class indices (an integer dtype), got {target.dtype}; "
                             f"or pass one-hot or probability rows of shape (N, {plan.num_classes})")
        if validate and target.numel():
            low, high = target.min(), target.max()
            _raise_or_assert((low < 0) | (high >= plan.num_classes),
                             f"target must hold class indices in [0, {plan.num_classes - 1}]")
        return target
    if target.dim() != 2 or target.shape[1] != plan.num_classes:
        expected = f"(N,) class indices or (N, {plan.num_classes})" if plan.task == "multiclass" else \
            f"(N, {plan.num_classes})"
        raise ValueError(f"target must have shape {expected} for task={plan.task!r}, got {tuple(target.shape)}")
    return target


def _same_device(tensor, input, what):
    if tensor.device != input.device:
        raise ValueError(f"{what} is on {tensor.device} but input is on {input.device}; move it first")


def _validate(plan, input, target, weight):
    """Labels in [0, 1] (0/1, or soft labels for label smoothing and distillation); probabilities in
    [0, 1] with from_logits=False; weights non-negative. NaN in input or weights is not an error:
    it propagates to the loss, as binary_cross_entropy_with_logits does and AMP's GradScaler needs.

    Returns whether the logits are free of ±inf (checked with the labels' range, in one synchronization);
    always False while torch.compile traces, where the check cannot read values (the caller's remedy
    fuses into the first elementwise kernel there)."""
    check_labels = target.is_floating_point() and target.numel() > 0
    check_logits = plan.from_logits and input.numel() > 0
    bounds = [*(torch.aminmax(target) if check_labels else ()), *(torch.aminmax(input) if check_logits else ())]
    finite_logits = True
    if bounds and _is_compiling():
        if check_labels:
            torch._assert_async((bounds[0] >= 0) & (bounds[1] <= 1), "target must hold labels in [0, 1]")
        finite_logits = not check_logits
    elif bounds:
        values = torch.stack(bounds).tolist()
        finite_logits = not check_logits or (math.isfinite(values[-2]) and math.isfinite(values[-1]))
        if check_labels and not (values[0] >= 0 and values[1] <= 1):  # NaN fails both
            position = ((target < 0) | (target > 1) | torch.isnan(target)).nonzero()[0].tolist()
            value = target[tuple(position)].item()
            where = ", ".join(str(i) for i in (position[:1] if plan.task == "binary" else position))
            raise ValueError(f"target must hold labels in [0, 1] (0/1, or soft labels), but target[{where}] = "
                             f"{value:g}")
    if not plan.from_logits and input.numel():
        _raise_or_assert(((input < 0) | (input > 1)).any(),
                         "from_logits=False expects probabilities in [0, 1]; pass logits with from_logits=True")
    if weight is not None and weight.numel():
        _raise_or_assert((weight < 0).any(), "weight must be non-negative")
    return finite_logits


# ---------------------------------------------------------------------------------------------
# The loss module


class MetricLoss(torch.nn.Module):
    """A confusion-matrix metric as a loss: ``loss_fn(input, target, weight=None)`` → a 0-dim tensor.

    Args:
        definition: the :class:`MetricDefinition` of a generated module.
        task: ``"binary"`` (input (N,) or (N, 1), target 0/1), ``"multiclass"`` (input (N, C),
            target (N,) class indices or (N, C) one-hot or probability rows) or ``"multilabel"``
            (input (N, C), target (N, C) of 0/1).
        num_classes: C, for multiclass and multilabel.
        average: how per-class metrics combine (multiclass, multilabel), as scikit-learn's
            ``average=``: ``"micro"`` (the metric of the summed entries), ``"macro"`` (their mean)
            or ``"weighted"`` (weighted by each class's support Σ w·y).
        class_weights: a weight per class for the mean (instead of ``average``'s).
        from_logits: whether ``input`` holds logits (default) or probabilities.
        zero_division: the metric's value on a batch where it is undefined on finite input (a
            zero denominator, e.g. recall without positives); such a column contributes no
            gradient. None lets NaN through.
        estimator: ``"batch"`` (the metric of each batch) or ``"running"`` (of a running estimate
            of the entries across steps, for small batches; see docs/minibatch.md).
        momentum: the running estimate's momentum (weight of the past).
        sync: all-reduce the (4, C, T) table over ``process_group``: every rank computes the loss of
            the global batch (torch.distributed; a no-op without it).
        process_group: the group to reduce over; None is the default group.
        grad_average: with sync, scale gradients for DDP's averaging over ranks (True) or for
            summing them yourself (False).
        validate: check targets, probabilities and weights at every call.
        compile: run the loss through ``torch.compile`` (input checks stay eager).

    ``weight`` (call time) is per **sample**, not per class as torch's ``CrossEntropyLoss(weight=)``;
    per-class weights are ``class_weights``.

    Shape:
        - ``input``: (N,) or (N, 1) (binary), (N, C) (multiclass, multilabel).
        - ``target``: N 0/1 labels (binary), (N,) class indices or (N, C) rows (multiclass), (N, C) 0/1
          (multilabel); ``weight``: (N,). Output: ``()``.

    Example::

        >>> import torch, metricc
        >>> loss_fn = metricc.compile_metric("f1")   # a MetricLoss over a generated module's DEFINITION
        >>> isinstance(loss_fn, MetricLoss), type(loss_fn.module.F1Loss()).__mro__[1] is MetricLoss
        (True, True)
        >>> round(loss_fn(torch.tensor([2.0, -1.0, 0.5, -3.0]), torch.tensor([1, 0, 1, 1])).item(), 4)
        0.2
    """

    def __init__(self, definition, *, task="binary", num_classes=None, average=None, class_weights=None,
                 from_logits=True, zero_division=0.0, estimator="batch", momentum=0.9, sync=False,
                 process_group=None, grad_average=True, validate=True, compile=False):
        super().__init__()
        task, num_classes, average, class_weights = _check_task(task, num_classes, average, class_weights)
        for name, value in (("from_logits", from_logits), ("sync", sync), ("grad_average", grad_average),
                            ("validate", validate), ("compile", compile)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        _check_zero_division(zero_division)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
        self.definition = definition
        self.plan = _Plan(definition, task=task, num_classes=num_classes, average=average,
                          class_weights=class_weights, from_logits=from_logits, zero_division=zero_division,
                          sync=sync, process_group=process_group, grad_average=grad_average,
                          estimator=estimator, momentum=float(momentum))
        self.validate = validate
        self._last = {}  # the last call's table (a plain dict: nn.Module.__setattr__ costs on every call)
        if estimator == "running":
            classes, count = self.plan.columns
            self.register_buffer("running_rates", torch.zeros(4, classes, count, dtype=torch.float64))
            self.register_buffer("running_weight", torch.zeros((), dtype=torch.float64))
        self._compile = compile
        self._compiled = None
        # One binary column and nothing to mix into the table: the straight-line Function may serve.
        self._straight = (task == "binary" and len(self.plan.thresholds) == 1 and definition.curve is None
                          and not sync and not compile)

    # Options read as attributes, as on torch.nn losses.
    task = property(lambda self: self.plan.task)
    num_classes = property(lambda self: self.plan.num_classes)
    average = property(lambda self: self.plan.average)
    from_logits = property(lambda self: self.plan.from_logits)
    zero_division = property(lambda self: self.plan.zero_division)
    sync = property(lambda self: self.plan.sync)
    process_group = property(lambda self: self.plan.process_group)
    grad_average = property(lambda self: self.plan.grad_average)
    estimator = property(lambda self: self.plan.estimator)
    momentum = property(lambda self: self.plan.momentum)

    def forward(self, input, target, weight=None):
        plan = self.plan
        allow_empty = plan.sync and _world_size(plan.process_group) > 1  # other ranks may hold the batch
        batch = _prepare(plan, input, target, weight, self.validate, allow_empty)
        running = None
        if plan.estimator == "running" and self.training:  # eval(): the batch alone, no update
            running = _RunningEstimate(self.running_rates, self.running_weight, plan.momentum, update=True)
        if self._straight and running is None and batch.input.device.type == "cpu" and not _is_compiling() \
                and not _under_functorch():
            loss, table = _BinaryLossFunction.apply(batch.input, batch.target, batch.weight, plan)
        else:
            function = self._compiled_core() if self._compile else _apply
            loss, table = function(batch.input, batch.target, batch.weight, plan, running)
        self._last["table"] = table
        return loss  # in the input's dtype, float32 for half-precision input (as autocast keeps losses)

    @property
    def per_class(self):
        """The last call's metric value per class (the mean over thresholds), for logging; None before a call."""
        table = self._last.get("table")
        return None if table is None else metric_values(self.plan, table).mean(-1)

    @property
    def last_table(self):
        """The (4, C, T) table of soft confusion entries (TP, FN, FP, TN) the last call evaluated the metric at:
        the batch's, or the running estimate's; None before a call."""
        return self._last.get("table")

    def reset(self):
        """Forget the running estimate (e.g. at the start of an epoch)."""
        if self.plan.estimator == "running":
            self.running_rates.zero_()
            self.running_weight.zero_()

    def _compiled_core(self):
        if self._compiled is None:
            self._compiled = _compile_function(_apply)
        return self._compiled

    def extra_repr(self):
        parts = [f"metric={self.definition.name!r}", f"relaxation={self.plan.relaxation!r}"]
        if self.plan.task != "binary":
            parts += [f"task={self.plan.task!r}", f"num_classes={self.plan.num_classes}",
                      f"average={self.plan.average!r}"]
        parts += [f"from_logits={self.plan.from_logits}", f"zero_division={self.plan.zero_division}"]
        if self.plan.estimator != "batch":
            parts.append(f"estimator={self.plan.estimator!r}, momentum={self.plan.momentum}")
        if self.plan.sync:
            parts.append("sync=True")
        return ", ".join(parts)

    def __prepare_scriptable__(self):
        raise RuntimeError("a metricc loss cannot be compiled with torch.jit.script: its forward is Python "
                           "code over a closed-form autograd.Function; use torch.compile (compile=True) instead")


def _apply(input, target, weight, plan, running):
    """The loss, and the table the metric was evaluated at."""
    eager = not _is_compiling() and not _under_functorch()
    function = _EagerMetricLossFunction if eager else _MetricLossFunction
    loss, _, table = function.apply(input, target, weight, plan, running)
    return loss, table


def _check_task(task, num_classes, average, class_weights):
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "binary":
        if num_classes not in (None, 1) or average is not None or class_weights is not None:
            raise ValueError("num_classes, average and class_weights apply to task='multiclass' or "
                             "task='multilabel'; task='binary' has one class")
        return task, 1, None, None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"task={task!r} needs num_classes, a whole number of at least 2, got {num_classes!r}")
    average = "macro" if average is None else average
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if class_weights is not None:
        if average == "micro":
            raise ValueError("class_weights weigh per-class metrics; average='micro' has one metric of the "
                             "summed entries")
        class_weights = torch.as_tensor(class_weights, dtype=torch.float64).detach().reshape(-1)
        if class_weights.shape[0] != num_classes or not bool(torch.isfinite(class_weights).all()) \
                or bool((class_weights < 0).any()) or not bool(class_weights.sum() > 0):
            raise ValueError(f"class_weights must hold {num_classes} finite non-negative numbers, not all 0")
    return task, num_classes, average, class_weights


def _check_zero_division(value):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"zero_division must be a finite number (the metric's value on batches where it is "
                         f"undefined) or None (let NaN through), got {value!r}")


def _compile_function(function):
    """torch.compile(function), or the function itself where the compiler is unavailable or fails."""
    compiled = torch.compile(function)
    state = {"fallback": False}

    def run(*args):
        if state["fallback"]:
            return function(*args)
        try:
            return compiled(*args)
        except (ValueError, TypeError):
            raise
        except Exception as exc:  # a compiler that is missing or fails (no C++ toolchain, ...)
            state["fallback"] = True
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "running the eager code instead", CompileFallbackWarning, stacklevel=3)
            return function(*args)

    return run
