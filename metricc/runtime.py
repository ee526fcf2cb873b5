"""metricc's runtime: everything a compiled metric loss runs that is the same for every metric.

A generated loss module holds only what is particular to its metric: the metric and its two
per-sample gradient factors as functions of the soft confusion entries, and a
:class:`MetricDefinition` naming its relaxation and thresholds. This module does the rest. It
imports only torch (and the standard library's math and warnings), so ``metricc compile
--standalone`` inlines this file verbatim.

The statistics table
--------------------
A loss depends on its batch only through one table of soft confusion entries, shaped
``(4, S, C, T)``: the entries TP, FN, FP, TN; S segments; C classes or labels (1 for binary);
T thresholds. Each entry is a direct sum, TP = Σ w·y·ŷ, FN = Σ w·y·(1 − ŷ), FP = Σ w·(1 − y)·ŷ,
TN = Σ w·(1 − y)·(1 − ŷ), with 1 − ŷ computed as its own value (σ(−a), or the other classes'
share of a softmax), never as a difference of sums, so an entry whose label class is empty is
exactly 0. The backward needs per column two factors, one for positives and one for negatives
(``(2, S, C, T)``), times the relaxation's slope and the chain rule to the logits.

Inputs follow ``F.cross_entropy``'s layout: logits (N, C, d1, ..., dK) with the class axis in
place, and every reduction runs over the other axes (no copy to (N·d, C)); binary input is
(N, d1, ...) or (N, 1, d1, ...).

Segments (the extension point for per-image and per-group metrics)
------------------------------------------------------------------
The segment axis S says which samples' entries are summed together, and every segment is
evaluated by itself before the loss averages them:

* ``reduce="batch"``: S = 1, the whole batch (MONAI's ``batch=True``); under ``sync=True`` this
  table is all-reduced in one collective;
* ``reduce="image"``: S = N, each sample's entries summed over its own pixels (MONAI's default);
  segments are local to a rank, and the loss is the mean over images;
* groups (issue 26): S = G, each sample carrying an integer segment id given at call time.

A path (below) computes the table either for the whole batch or per sample (``per_sample=True``,
shape (4, N, C, T)); :class:`Segments` then folds per-sample tables into S segments with one
``index_add`` over the sample axis, and its backward gathers each sample's factors back with
``index_select`` (:meth:`Segments.sample_factors`), so every element's gradient uses its
segment's factors. To plug groups in:

1. ``MetricLoss._per_sample`` is True when groups are in use (routes then build per-sample paths);
2. ``MetricLoss._segments(batch)`` returns ``Segments(count=G, index=group_ids, local=False)``, the
   ids a (N,) integer tensor given at call time (one per sample; a per-pixel id would fold a
   (4, N·d, C, T) table the same way, at that memory);
3. :func:`evaluate` receives the (4, G, C, T) table; a metric that consumes the group axis (max_g or
   min_g of per-group rates) evaluates it whole and returns the loss and factors (2, G, C, T), each
   group's factors being ∂loss/∂(its entries), as the per-column metrics do now.

Nothing else changes: the paths, the autograd Function, ``sync`` (one all-reduce of the global
(4, G, C, T) table, as for the batch) and the running estimator (S = 1 only) stay as they are.
One cost to know: the multi-class path on flat (N, C) rows builds a (N, C, C) matrix per sample
when per_sample is on (fine for images, whose rows are pixels; for many flat samples with groups,
fold inside the path with ``index_add`` on ``group·C + class`` instead).

Paths: one per kind of input, chosen once
-----------------------------------------
A path is a forward table function and its backward gradient function, side by side:

* :class:`ElementwisePath`: binary and multi-label, one threshold (``elementwise``);
* :class:`ThresholdPath`: binary and multi-label, several thresholds, and curves (``thresholds``);
* :class:`ClassIndexPath`: multi-class with class-index targets (``class_indices``);
* :class:`ClassScorePath`: multi-class with one-hot or probability targets (``class_scores``).

:meth:`MetricLoss.forward` picks the path when the input's kind first appears (device, dtype, rank,
target kind, weight kind, and whether torch.compile is tracing) and keeps it; the per-call work
is the path's arithmetic plus the input checks that cannot be hoisted (shapes, label range). One
``autograd.Function`` (:class:`_MetricLossFunction`) runs every path.
"""

import math
import warnings

import torch

__all__ = [
    "MetricDefinition", "MetricLoss", "functional_loss", "SigmoidAmplifier", "PiecewiseLinear", "Probabilistic",
    "ScoreOriented", "SoftmaxAmplifier", "TensorMath", "FloatMath", "MetricWarning", "CompileFallbackWarning",
    "check_flag", "check_choice", "check_momentum", "check_task", "check_zero_division",
]


class MetricWarning(UserWarning):
    """Base class of the warnings metricc emits (``metricc.MetricWarning``)."""


class CompileFallbackWarning(MetricWarning):
    """``compile=True`` was requested but torch.compile is unavailable or failed; eager code runs."""


CHUNK_ELEMENTS = 1 << 20  # elements of a (T, rows, ...) block of several thresholds: memory stays O(N·C)
CURVE_NEEDS_SCORES = ("a metric of the threshold curve needs binary scores: use task='binary' or 'multilabel' "
                      "(one curve per label)")
SMALL_ELEMENTS = 1 << 14  # below, the elementwise path builds its forward buffers with one broadcast op each
# (launches dominate); above, with plain passes (broadcast kernels are slower per element): docs/performance.md
SCALAR_PATH_COLUMNS = 64  # up to this many (segment, class, threshold) columns, CPU metrics use Python floats
TASKS = ("binary", "multiclass", "multilabel")
AVERAGES = ("micro", "macro", "weighted")
ESTIMATORS = ("batch", "running")
REDUCES = ("batch", "image")
REDUCTIONS = ("mean", "sum", "none")
CLASS_WEIGHT_RULES = {"inverse_square": 2.0, "inverse": 1.0}  # weight 1/support**power, per segment (Sudre et al.)


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


def _number_sqrt(x):
    return math.sqrt(x) if x >= 0 else math.nan  # NaN fails the test too


def _number_log(x):
    if x > 0:
        return math.log(x)
    return -math.inf if x == 0 else math.nan


def _number_exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _tensor_or_number(on_tensor, on_number):
    """One function for both kinds of argument: sympy's cse can lift a term of parameters alone (sqrt(alpha) out
    of sqrt(TP*alpha)) into its own line, which then reaches the function as a Python number; it gets torch's
    values there (NaN, ±inf) rather than math's exceptions."""

    def apply(x):
        return on_tensor(x) if isinstance(x, torch.Tensor) else on_number(x)

    apply.__name__ = on_tensor.__name__
    return staticmethod(apply)


class TensorMath:
    """Elementwise functions on tensors (one value per segment, class and threshold), and on the numbers of
    terms that hold parameters only."""

    sqrt = _tensor_or_number(torch.sqrt, _number_sqrt)
    log = _tensor_or_number(torch.log, _number_log)
    exp = _tensor_or_number(torch.exp, _number_exp)
    abs = _tensor_or_number(torch.abs, abs)
    sign = _tensor_or_number(torch.sign, lambda x: _float_sign(x))

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
    """The same on Python floats: the CPU evaluation of a few columns, where ~25 operations on
    one-element tensors would cost more than the sums over a small batch (docs/performance.md).
    Raises (ZeroDivisionError, ValueError, OverflowError) or returns a complex number where a value
    is undefined; the caller then evaluates on tensors, which applies ``zero_division``."""

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
# ``threshold`` is a float, or a (T, 1, ...) tensor that broadcasts a block to (T, ...).
# ``public`` is how a user wrote the relaxation (metricc.Sigmoid(L=30) ...), for repr and messages;
# ``repr`` is the constructor a generated module calls.


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

    def soft_rows(self, input, threshold, from_logits, rows, small):
        """(ŷ, 1 − ŷ) as one new (2, ...) buffer. ``rows`` holds the constants (0, 1) and (1, −1) shaped to
        broadcast over it: (p, q) = σ(±z) from logits in one product and one sigmoid, or (p, 1 − p) from
        probabilities (one addcmul for a ``small`` batch, a copy and a subtraction otherwise); then the
        relaxation on each row, in place."""
        offsets, signs = rows
        pair = _pair_buffer(input)
        if from_logits:
            torch.mul(input, signs, out=pair).sigmoid_()
        elif small:
            torch.addcmul(offsets, signs, input, out=pair)
        else:
            pair[0].copy_(input)
            torch.sub(1, input, out=pair[1])
        predicted, complement = self.soft_pair_(pair[0], pair[1], threshold)
        _into(pair[0], predicted)
        _into(pair[1], complement)
        return pair

    # The same as values, for torch.compile, which fuses them into its loops instead of storing buffers.

    def soft_pair(self, p, q, threshold):
        return self.soft_pair_(p.clone(), q.clone(), threshold)

    def slope(self, p, threshold):
        return self.slope_(p.clone(), threshold)


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

    @property
    def public(self):
        return f"metricc.Sigmoid(L={self.scale:g}, threshold={self.threshold:g})"

    def _argument_(self, p, threshold):
        """a = L·(p − t) in place. For a float t, L·p + (−L·t) in one pass: a fused multiply-add where
        the CPU has one, rounded once where L·t is exact (t = 1/2 by default)."""
        if isinstance(threshold, torch.Tensor):
            return p.sub_(threshold).mul_(self.scale)
        return torch.add(_constant(self._constants, -self.scale * threshold, p), p, alpha=self.scale, out=p)

    def soft_(self, p, threshold):
        return self._argument_(p, threshold).sigmoid_()

    def soft_pair_(self, p, q, threshold):
        a = self._argument_(p, threshold)
        complement = torch.neg(a, out=q) if q is not None else torch.neg(a)
        return a.sigmoid_(), complement.sigmoid_()

    def soft_rows(self, input, threshold, from_logits, rows, small):
        """σ(a) and σ(−a), a = L·(p − t), then one sigmoid over both rows. For a ``small`` batch
        (a, −a) = (−L·t, L·t) + (L, −L)·p in one addcmul; otherwise a in one pass and −a in another (−a is
        rounded as a is, with FMA or without, in both)."""
        pair = _pair_buffer(input)
        if small:
            key = ("rows", threshold, rows[1].dtype, rows[1].device, rows[1].dim())
            constants = self._constants.get(key)
            if constants is None:
                scale = rows[1] * self.scale
                constants = self._constants[key] = (scale * -threshold, scale)
            p = torch.sigmoid(input) if from_logits else input
            return torch.addcmul(constants[0], constants[1], p, out=pair).sigmoid_()
        if from_logits:
            torch.sigmoid(input, out=pair[0])
        else:
            pair[0].copy_(input)
        torch.neg(self._argument_(pair[0], threshold), out=pair[1])
        return pair.sigmoid_()

    def slope_(self, p, threshold):
        """dŷ/dp = L·r·(1 − r), r = σ(−|a|) ≤ 1/2: keeps its precision where the amplifier saturates,
        where σ(a)·(1 − σ(a)) would round to 0 and stop learning (AnyLoss's "No More Update")."""
        r = p.sub_(threshold).abs_().mul_(-self.scale).sigmoid_()
        return _mul_sigmoid_slope_(_constant(self._constants, self.scale, r), r, out=r)

    def mul_slope_at_tail_(self, grad, tail, threshold):
        """grad·r·(1 − r) = grad·(dŷ/dp)/L: r = σ(L·(q − t)) is σ(−|a|) without an abs, as q ≤ t = 1/2."""
        return _mul_sigmoid_slope_(grad, self.soft_(tail, threshold))

    def soft_pair(self, p, q, threshold):
        return _sigmoid_pair((p - threshold) * self.scale)

    def slope(self, p, threshold):
        """L·v/(1 + v)², v = e^(−|a|): one exponential, where the compiled loop pays per exponential."""
        v = torch.exp(-torch.abs((p - threshold) * self.scale))
        return self.scale * v / torch.square(1 + v)

    def shared_exponentials(self, thresholds):
        """For many thresholds from one exponential per sample: σ(L·(p − t_k)) = 1/(1 + E·c_k) with
        E = e^(L·(t₀ − p)) per sample and c_k = e^(L·(t_k − t₀)) per threshold, t₀ the grid's centre.
        Returns (t₀, c as a list), or None where E·c_k could leave float32's normal range."""
        centre = (max(thresholds) + min(thresholds)) / 2
        reach = self.scale * (max(centre, 1 - centre) + max(abs(t - centre) for t in thresholds))
        if reach > 80:  # e^80 ≈ 5.5e34 < float32's 3.4e38, and e^-80 above its smallest normal
            return None
        return centre, [math.exp(self.scale * (t - centre)) for t in thresholds]


def _sigmoid_pair(x):
    """(σ(x), σ(−x)) from one exponential, u = e^(−|x|): u/(1 + u) and 1/(1 + u), the larger one on x's side.
    The form for torch.compile, whose fused loop pays per exponential, not per pass."""
    u = torch.exp(-torch.abs(x))
    large = 1 / (1 + u)
    small = u * large
    positive = x >= 0
    return torch.where(positive, large, small), torch.where(positive, small, large)


def _pair_buffer(like):
    """A contiguous (2, *like.shape) buffer: its rows flatten to the matrix the table's product reads, whatever
    like's layout (channels-last, a crop)."""
    return like.new_empty((2, *like.shape))  # new_empty is always contiguous


def _mul_sigmoid_slope_(grad, s, out=None):
    """grad·s·(1 − s) in one pass, in place in grad (or into ``out``): sigmoid_backward is autograd's own
    kernel for σ."""
    return torch.ops.aten.sigmoid_backward.grad_input(grad, s, grad_input=grad if out is None else out)


def _constant(cache, value, like):
    """A 0-dim tensor holding ``value`` in like's dtype and device, made once per (value, dtype, device)."""
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

    @property
    def public(self):
        return f"metricc.Linear(threshold={self.threshold:g}, delta={self.delta:g})"

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

    @property
    def public(self):
        return f"metricc.ScoreOriented({self.distribution!r}, mu={self.threshold:g}, delta={self.delta:g})"

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
    public = "metricc.Identity()"

    def slope_symmetric_at(self, threshold) -> bool:
        return True  # dŷ/dp = 1

    def __repr__(self):
        return "Probabilistic()"

    def soft_(self, p, threshold):
        return p

    def soft_pair_(self, p, q, threshold):
        return p, q

    def soft_pair(self, p, q, threshold):
        return p, q

    def slope_(self, p, threshold):
        return p.fill_(1.0)

    def slope(self, p, threshold):
        return torch.ones_like(p)

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

    @property
    def public(self):
        return f"metricc.Sigmoid(L={self.scale:g}) as a softmax amplifier"


def _public(relaxation):
    """How a user names the relaxation (metricc.Sigmoid(L=30, ...)), for repr and messages."""
    return getattr(relaxation, "public", None) or repr(relaxation)


# ---------------------------------------------------------------------------------------------
# What a generated module defines, and a loss's options resolved once.


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
            stay within the dtype's range whatever the weights' scale.
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

    def __init__(self, definition, *, task, num_classes, average, class_weights, reduce, reduction, ignore_index,
                 from_logits, zero_division, sync, process_group, grad_average, estimator, momentum):
        self.definition = definition
        self.task = task
        self.num_classes = num_classes
        self.average = average
        self.class_weights = class_weights  # None, a (C,) float64 tensor, or a CLASS_WEIGHT_RULES name
        self.reduce = reduce
        self.reduction = reduction
        self.ignore_index = ignore_index
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
                raise ValueError(f"relaxation {_public(definition.relaxation)} has no multi-class form; compile the "
                                 "metric with relaxation='anyloss' (a softmax amplifier) or 'identity' for "
                                 "task='multiclass'")
            self.relaxation, self.thresholds = definition.multiclass_relaxation, (0.5,)
        else:
            self.relaxation, self.thresholds = definition.relaxation, definition.thresholds
        if estimator == "running" and reduce != "batch":
            raise ValueError("estimator='running' carries one table of the whole batch across steps; reduce='image' "
                             "evaluates every image by itself, so there is no table to carry: use reduce='batch' "
                             "with the running estimator, or estimator='batch'")
        if isinstance(class_weights, str) and definition.curve is not None:
            raise ValueError(f"class_weights={class_weights!r} weighs the confusion entries of each class before "
                             "they are summed; a curve metric is evaluated per class: pass a tensor of class weights")

    @property
    def rule_weighted(self):
        """Whether the classes' entries are weighted by a rule of their support and summed (generalized Dice)."""
        return isinstance(self.class_weights, str)

    @property
    def summed_classes(self):
        """Whether the metric is evaluated at entries summed over classes (micro, or rule-weighted)."""
        return self.average == "micro" or self.rule_weighted


# ---------------------------------------------------------------------------------------------
# Segments: which samples' entries are summed together (see the module docstring).


class Segments:
    """The segment axis S of the table for one call.

    Args:
        count: S.
        index: (N,) long tensor of each sample's segment, or None: one segment per sample (``local``)
            or one for the whole batch (count 1).
        local: whether segments belong to one rank (images: the loss averages them over every rank's
            images, and the table is not all-reduced) or are shared by all ranks (the batch, groups).
    """

    __slots__ = ("count", "index", "local")

    def __init__(self, count, index=None, local=False):
        self.count, self.index, self.local = count, index, local

    @property
    def per_sample(self):
        """Whether the path computes a table per sample (then folded into segments), not one for the batch."""
        return self.local or self.index is not None

    def fold(self, table):
        """A per-sample table (4, N, C, T) summed into segments (4, S, C, T)."""
        if self.index is None:
            return table
        folded = table.new_zeros((table.shape[0], self.count, *table.shape[2:]))
        return folded.index_add_(1, self.index, table)

    def sample_factors(self, factors):
        """Factors per segment (2, S, C, T) as factors per sample (2, N, C, T): each sample its segment's."""
        if self.index is None or not isinstance(factors, torch.Tensor):
            return factors
        return factors.index_select(1, self.index)


_WHOLE_BATCH = Segments(1)


# ---------------------------------------------------------------------------------------------
# The batch: checked tensors in the runtime's layout.


class _Batch:
    """input (N, C, d1, ...) with C = 1 for binary; ``target`` labels of the same shape (elementwise tasks and
    class-score targets) or class indices (N, d1, ...); ``weight`` None or broadcastable to the input:
    (N, 1, ...) per sample, (N, 1, d1, ...) per element; ``shape`` the input's shape as the caller passed it."""

    __slots__ = ("input", "target", "weight", "dtype", "shape", "saved", "poison")

    def __init__(self, input, target, weight, dtype, shape, saved=(), poison=None):
        self.input, self.target, self.weight, self.dtype, self.shape = input, target, weight, dtype, shape
        self.saved = saved  # what a path's table keeps for its gradient (the softmax of class paths)
        self.poison = poison  # compiled checks: 0, or NaN where a logit is ±inf (see _Route._validate)

    @property
    def reduce_dims(self):
        """The axes summed within a segment per sample: every axis after the class axis."""
        return tuple(range(2, self.input.dim()))


def _factor_view(factors, like):
    """(S', C) factors viewed to broadcast over a (N, C, d1, ...) tensor (S' = 1 or N)."""
    return factors.view(*factors.shape, *([1] * (like.dim() - 2)))


# ---------------------------------------------------------------------------------------------
# Paths. Each is a forward table function and its backward gradient function, side by side.
# table(batch) -> (4, S', C, T), S' = N per sample or 1 for the whole batch;
# gradient(batch, factors) -> ∂loss/∂input in the input's layout, factors (2, S', C, T) or FloatFactors.


class _Path:
    name = ""

    compiled = False

    def __init__(self, plan, per_sample):
        self.plan = plan
        self.per_sample = per_sample
        self.relaxation = plan.relaxation
        self.thresholds = plan.thresholds
        self._row_constants = {}

    def __repr__(self):
        return f"<metricc path {self.name}{', per sample' if self.per_sample else ''}>"


def _probabilities_into(input, p, q, from_logits, needs_complement):
    """p = σ(z) and q = σ(−z) (or p = input, q = 1 − input for probabilities) into buffers: q keeps its
    precision where p rounds to 1; q is left alone where the relaxation makes its own complement."""
    if from_logits:
        torch.sigmoid(input, out=p)
        if needs_complement:
            torch.neg(input, out=q).sigmoid_()
    else:
        p.copy_(input)
        if needs_complement:
            torch.sub(1, input, out=q)


def _into(out, value):
    """Make sure ``value`` lies in ``out`` (a relaxation may return a new tensor instead of working in place)."""
    if value is not out:
        out.copy_(value)
    return out


def _label_pair(target, weight, shape, dtype):
    """(w·y, w·(1 − y)) as one contiguous (2, *shape) buffer; for 0/1 labels each element of one row is 0."""
    labels = torch.empty((2, *shape), dtype=dtype, device=target.device)
    if weight is None:
        labels[0].copy_(target)
        torch.sub(1, labels[0], out=labels[1])
    else:
        torch.sub(1, target, out=labels[1]).mul_(weight)
        torch.mul(target, weight, out=labels[0])
    return labels


def _contract(pred, target, weight, rows, per_sample, small):
    """The table (4, S', C, 1) from the predictions (ŷ, 1 − ŷ), a contiguous (2, N, C, d...) buffer, and the
    labels: Σ w·y·ŷ, Σ w·y·(1 − ŷ), Σ w·(1 − y)·ŷ, Σ w·(1 − y)·(1 − ŷ) over the reduced axes, in the table's order.

    Matrix products where the summed axis is long and contiguous (one pass, no temporary): for one binary
    column of a small batch one (2, n) @ (n, 2) product with the label rows (y, 1 − y) built by one broadcast
    addcmul; of a large batch (TP, FN) = pred @ w·y, then pred − y·pred in place (exactly 0 or ŷ for 0/1
    labels; for soft labels ŷ·(1 − y) to within an ulp of ŷ) and (FP, TN) = pred @ w: no label buffer, the
    fewest fresh pages per call. Otherwise one product per side, with y and 1 − y; products and sums where the
    summed axis is short (a flat multi-label (N, C) batch)."""
    _, n, classes = pred.shape[:3]
    inner = math.prod(pred.shape[3:])
    if not per_sample and classes == 1:
        flat = pred.view(2, -1)
        if small:
            labels = torch.addcmul(rows[0], rows[1], target, out=_pair_buffer(target))  # (y, 1 − y)
            if weight is not None:
                labels.mul_(weight)
            return torch.mm(labels.view(2, -1), flat.t()).view(4, 1, 1, 1)
        y = target.reshape(-1)
        w = None if weight is None else weight.expand_as(target).reshape(-1)
        positive = torch.mv(flat, y if w is None else y * w)  # TP, FN
        negative = flat.addcmul_(y, flat, value=-1)
        negative = negative.sum(1) if w is None else torch.mv(negative, w)  # FP, TN
        return torch.cat([positive, negative]).view(4, 1, 1, 1)
    positives = target if weight is None else target * weight
    negatives = torch.sub(1, target) if weight is None else torch.sub(1, target).mul_(weight)
    if per_sample or inner >= 16:
        a = pred.view(2, n * classes, inner).transpose(0, 1)  # (N·C, 2, d)
        sums = torch.stack([torch.bmm(a, side.expand_as(pred[0]).reshape(n * classes, inner, 1))
                            for side in (positives, negatives)])  # (2 labels, N·C, 2 predictions, 1)
        sums = sums.view(2, n, classes, 2).permute(0, 3, 1, 2).reshape(4, n, classes)
        return (sums if per_sample else sums.sum(1, keepdim=True)).unsqueeze(-1)
    dims = tuple(d for d in range(pred.dim() - 1) if d != 1)  # the sample and spatial axes of one row
    return torch.stack([(side * pred[j]).sum(dims) for side in (positives, negatives) for j in range(2)]
                       ).view(4, 1, classes, 1)


def _entries(sums):
    """(2 labels, 2 predictions, ...) sums -> the table (4, ...): TP, FN, FP, TN."""
    return sums.reshape(4, *sums.shape[2:])


def _sum(tensor, dims):
    """tensor summed over ``dims``; no axis at all is no sum (torch sums everything for dims=())."""
    return tensor.sum(dims) if dims else tensor


def _probabilities(input, from_logits):
    """(p, q = 1 − p) as new buffers: σ(z) and σ(−z) from logits, so q keeps its precision where p rounds to 1."""
    if from_logits:
        return torch.sigmoid(input), torch.sigmoid(torch.neg(input))
    return input, torch.sub(1, input)


def _fused_table(path, batch):
    """The (4, S', C, T) table written for torch.compile: per threshold four sums of elementwise terms, which
    the compiler fuses into one loop over the elements without storing a block (the eager code's buffers and
    matrix products would make it store them)."""
    input, target, weight, plan = batch.input, batch.target, batch.weight, path.plan
    positives = target if weight is None else target * weight
    negatives = (1 - target) if weight is None else (1 - target) * weight
    p, q = _sigmoid_pair(input) if plan.from_logits else (input, 1 - input)
    dims = batch.reduce_dims if path.per_sample else (0, *batch.reduce_dims)
    columns = []
    for threshold in path.thresholds:
        predicted, complement = path.relaxation.soft_pair(p, q, threshold)
        sums = [_sum(label * value, dims) for value in (predicted, complement) for label in (positives, negatives)]
        columns.append(torch.stack([sums[0], sums[2], sums[1], sums[3]]))  # TP, FN, FP, TN
    table = torch.stack(columns, -1)
    return table if path.per_sample else table.unsqueeze(1)


def _fused_gradient(path, batch, factors):
    """∂loss/∂input written for torch.compile: one elementwise term per threshold, fused into one loop."""
    input, target, weight, plan = batch.input, batch.target, batch.weight, path.plan
    positives = target if weight is None else target * weight
    negatives = (1 - target) if weight is None else (1 - target) * weight
    if plan.from_logits:
        p, q = _sigmoid_pair(input)
    else:
        p = input
    # One threshold: a slope symmetric about 1/2 taken at the tail σ(−|z|), as ElementwisePath's backward does
    # (where σ(z) rounds to 1, the tail does not); several: at p, as ThresholdPath's.
    tail = torch.minimum(p, q) if plan.from_logits and len(path.thresholds) == 1 else None
    grad = 0
    for k, threshold in enumerate(path.thresholds):
        positive, negative = (_factor_view(f, input) for f in factors[..., k])
        by_label = positives * positive + negatives * negative  # exact for 0/1 labels: one term is 0
        at = tail if tail is not None and path.relaxation.slope_symmetric_at(threshold) else p
        grad = grad + by_label * path.relaxation.slope(at, threshold)
    return grad * (p * q) if plan.from_logits else grad


class ElementwisePath(_Path):
    """Binary and multi-label with one threshold: ŷ and 1 − ŷ into one (2, N, C, ...) buffer, the labels
    (w·y, w·(1 − y)) into another, and the four entries as one matrix product of the two; the backward in a
    few in-place passes, the relaxation's slope taken at q = σ(−|z|) where it is symmetric."""

    name = "elementwise"

    def table(self, batch):
        input = batch.input
        small = input.numel() < SMALL_ELEMENTS
        rows = self._rows(input)
        pred = self.relaxation.soft_rows(input, self.thresholds[0], self.plan.from_logits, rows, small)
        return _contract(pred, batch.target, batch.weight, rows, self.per_sample, small)

    def _rows(self, like):
        """The constants (0, 1) and (1, −1) as (2, 1, ...) tensors in like's dtype, device and rank, made once."""
        key = (like.dtype, like.device, like.dim())
        rows = self._row_constants.get(key)
        if rows is None:
            shape = (2, *([1] * like.dim()))
            rows = self._row_constants[key] = (torch.tensor([0.0, 1.0], dtype=like.dtype, device=like.device)
                                               .view(shape),
                                               torch.tensor([1.0, -1.0], dtype=like.dtype, device=like.device)
                                               .view(shape))
        return rows

    def gradient(self, batch, factors):
        if isinstance(factors, FloatFactors):
            positive, negative = factors
        else:
            positive, negative = (_factor_view(f, batch.input) for f in factors[..., 0])
        grad = _elementwise_input_gradient(self.plan, self.relaxation, self.thresholds[0], batch.input, batch.target,
                                           positive, negative)
        return grad if batch.weight is None else grad.mul_(batch.weight)

    compiled_table, compiled_gradient = _fused_table, _fused_gradient


def _elementwise_input_gradient(plan, relaxation, threshold, input, target, positive, negative):
    """(y·positive + (1 − y)·negative)·dŷ/dp·dp/dz in few in-place passes: label factors first, into the one
    new buffer, then dp/dz and the relaxation's slope multiplied in, each in one pass."""
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


def _tail_probability(input, out=None):
    """q = σ(−|z|) = min(p, 1 − p) ≤ 1/2, one sigmoid: dp/dz = q·(1 − q) from it never rounds to 0
    where σ(z) rounds to 1 (σ(z)·(1 − σ(z)) would, and learning would stop)."""
    return torch.abs(input, out=out).neg_().sigmoid_()


def _select_by_label(target, positive, negative, out):
    """y·positive + (1 − y)·negative, written into ``out``: exact for 0/1 labels (one term is exactly 0),
    unlike negative + y·(positive − negative), which loses a positive factor much smaller than the
    negative one; linear in y, so soft labels get the interpolated factor. Factors are Python floats or
    tensors that broadcast to the target."""
    if not isinstance(negative, torch.Tensor):
        # Two passes with Python numbers (a three-operand addcmul with a one-element operand is not
        # vectorized on the CPU): −negative·y + negative = negative·(1 − y), then + positive·y.
        torch.mul(target, -negative, out=out).add_(negative)
        return out.add_(target, alpha=positive)
    torch.mul(target, negative, out=out)
    torch.sub(negative, out, out=out)
    return out.addcmul_(target, positive)


class ThresholdPath(_Path):
    """Binary and multi-label with several thresholds (and the metrics of the curve over them): blocks of
    samples of at most CHUNK_ELEMENTS elements per threshold, written into one buffer every block reuses.
    One binary column of the sigmoid amplifier shares one exponential per sample between all thresholds."""

    name = "thresholds"

    def __init__(self, plan, per_sample):
        super().__init__(plan, per_sample)
        shared = getattr(self.relaxation, "shared_exponentials", None)
        self.shared = None if shared is None or per_sample or plan.num_classes != 1 else shared(self.thresholds)

    def _uses_shared(self, batch):
        return self.shared is not None and batch.input.dtype in (torch.float32, torch.float64)

    def table(self, batch):
        if self._uses_shared(batch):
            return _shared_exponential_confusion(self.plan, batch, *self.shared)
        input, target, weight = batch.input, batch.target, batch.weight
        count = len(self.thresholds)
        threshold = torch.tensor(self.thresholds, dtype=input.dtype, device=input.device)
        threshold = threshold.view(-1, *([1] * input.dim()))
        # a block's products are (T, rows, C, d...): sum the spatial axes, and the rows unless per sample
        dims = tuple(range(3, input.dim() + 1)) if self.per_sample else (1, *range(3, input.dim() + 1))
        blocks = []
        scratch = _Scratch()
        for rows in _row_blocks(input.shape[0], count * math.prod(input.shape[1:])):
            block = input[rows]
            out = scratch.take((2, count, *block.shape), block)
            p, q = _probabilities(block, self.plan.from_logits)
            out[0].copy_(p.expand_as(out[0]))
            out[1].copy_(q.expand_as(out[1]))
            predicted, complement = self.relaxation.soft_pair_(out[0], out[1], threshold)
            _into(out[0], predicted)
            _into(out[1], complement)
            labels = _label_pair(target[rows], None if weight is None else weight[rows], block.shape, block.dtype)
            blocks.append(torch.stack([torch.stack([_sum(labels[i] * out[j], dims) for j in range(2)])
                                       for i in range(2)]))  # (2 labels, 2 predictions, T, [rows,] C)
        if not blocks:  # an empty batch (another rank holds the samples under sync)
            return input.new_zeros((4, 0 if self.per_sample else 1, input.shape[1], count))
        sums = torch.cat(blocks, dim=3) if self.per_sample else torch.stack(blocks).sum(0).unsqueeze(3)
        return _entries(sums.permute(0, 1, 3, 4, 2))  # (4, S', C, T)

    def gradient(self, batch, factors):
        if self._uses_shared(batch):
            return _shared_exponential_gradient(self.plan, batch, factors, *self.shared)
        input, target = batch.input, batch.target
        grad = torch.empty_like(input)
        count = len(self.thresholds)
        threshold = torch.tensor(self.thresholds, dtype=input.dtype, device=input.device)
        threshold = threshold.view(-1, *([1] * input.dim()))
        scratch = _Scratch()
        # (2, T, S', C, 1, ...): each threshold's factors broadcast over a block's (rows, C, d...)
        by_threshold = factors.permute(0, 3, 1, 2).reshape(2, count, *factors.shape[1:3], *([1] * (input.dim() - 2)))
        for rows in _row_blocks(input.shape[0], count * math.prod(input.shape[1:])):
            block = input[rows]
            p = torch.sigmoid(block) if self.plan.from_logits else block
            slopes = scratch.take((count, *block.shape), block)
            slopes.copy_(p.expand_as(slopes))
            slopes = self.relaxation.slope_(slopes, threshold)  # (T, rows, C, d...)
            block_factors = by_threshold[:, :, rows] if self.per_sample else by_threshold
            positive = (block_factors[0] * slopes).sum(0)
            negative = (block_factors[1] * slopes).sum(0)
            by_label = _select_by_label(target[rows], positive, negative, out=torch.empty_like(positive))
            if self.plan.from_logits:
                by_label = _mul_sigmoid_slope_(by_label, _tail_probability(block))
            grad[rows] = by_label
        return grad if batch.weight is None else grad.mul_(batch.weight)

    compiled_table, compiled_gradient = _fused_table, _fused_gradient


class _Scratch:
    """One buffer reused by every block of a call; the last block is the smallest."""

    def __init__(self):
        self.buffer = None

    def take(self, shape, like):
        size = math.prod(shape)
        if self.buffer is None or self.buffer.numel() < size:
            self.buffer = like.new_empty(size)
        return self.buffer[:size].view(shape)


def _row_blocks(rows_total, elements_per_row):
    """Slices of rows of at most CHUNK_ELEMENTS elements."""
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_row))
    for start in range(0, rows_total, step):
        yield slice(start, min(start + step, rows_total))


def _exponential_block(plan, input, centre, column, out):
    """E = e^(L·(t₀ − p)) for a block of logits (or probabilities), and ŷ = 1/(1 + E·c_k) into ``out`` (T, rows)."""
    p = torch.sigmoid(input) if plan.from_logits else input
    row = torch.sub(centre, p).mul_(plan.relaxation.scale).exp_()
    return row, torch.mul(column, row, out=out).add_(1).reciprocal_()


def _flat(tensor, like):
    """A per-sample or per-element tensor as one value per element of ``like``, flat."""
    return tensor.expand_as(like).reshape(-1)


def _shared_exponential_confusion(plan, batch, centre, factors):
    """Binary entries at many sigmoid thresholds from one stored (T, rows) block per step, ŷ: with
    u = E·c_k, 1 − ŷ = u·ŷ, so Σ w·y·(1 − ŷ) = c_k·Σ (w·y·E)·ŷ, and all four sums are one matrix
    product of ŷ with (w·y, w·(1 − y), w·y·E, w·(1 − y)·E): no complement block, no subtraction."""
    input = batch.input.reshape(-1)
    target = batch.target.reshape(-1)
    weight = None if batch.weight is None else _flat(batch.weight, batch.input)
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
    return table.view(4, 1, 1, -1)


def _shared_exponential_gradient(plan, batch, factors, centre, column_factors):
    """The backward of the same: dŷ/dp = L·ŷ·(1 − ŷ) = L·c_k·E·ŷ², so Σ_k factor_k·dŷ/dp at t_k is
    L·E·((factor ⊙ c) @ ŷ²), one (2, T) @ (T, rows) product per block; then dp/dz."""
    input = batch.input.reshape(-1)
    target = batch.target.reshape(-1)
    scale = plan.relaxation.scale
    column = torch.tensor(column_factors, dtype=input.dtype, device=input.device).unsqueeze(1)
    weighted = (factors[:, 0, 0, :] * column[:, 0]).mul_(scale)  # (2, T): L·c_k·factor_k
    grad = torch.empty_like(input)
    scratch = _Scratch()
    for rows in _row_blocks(input.shape[0], len(column_factors)):
        out = scratch.take((len(column_factors), rows.stop - rows.start), input)
        row, predicted = _exponential_block(plan, input[rows], centre, column, out)
        positive, negative = (weighted @ predicted.square_()).mul_(row)  # Σ_k factor_k·dŷ/dp: positives, negatives
        _select_by_label(target[rows], positive, negative, out=grad[rows])
    if plan.from_logits:
        grad = _mul_sigmoid_slope_(grad, _tail_probability(input))
    grad = grad.view(batch.input.shape)
    return grad if batch.weight is None else grad.mul_(batch.weight)


def _softmax_pair(plan, batch):
    """ŷ over the class axis 1 of logits (or probabilities): softmax(z), or the amplifier softmax(L/2·p). The
    softmax of logits is kept in ``batch.saved`` for the gradient (one softmax fewer per call; CE keeps one too)."""
    relaxation = plan.relaxation
    input = batch.input
    if plan.from_logits:
        p = torch.softmax(input, 1)
        batch.saved = (p,)
    else:
        p = input
    if isinstance(relaxation, Probabilistic):
        return p
    return torch.softmax(p * (relaxation.scale / 2), 1)


def _softmax_chain(plan, batch, grad):
    """∂loss/∂input from ∂loss/∂ŷ through the softmax Jacobian(s), s ⊙ (g − ⟨s, g⟩) along the class axis:
    O(N·C), never N·C·C; autograd's own softmax backward kernel."""
    relaxation = plan.relaxation
    p = batch.saved[0] if plan.from_logits else batch.input
    if not isinstance(relaxation, Probabilistic):
        amplified = torch.softmax(p * (relaxation.scale / 2), 1)
        grad = torch._softmax_backward_data(grad, amplified, 1, grad.dtype).mul_(relaxation.scale / 2)
    if not plan.from_logits:
        return grad
    return torch._softmax_backward_data(grad, p, 1, grad.dtype)


def _confusion_entries(matrix):
    """The (4, ..., C) entries from soft confusion matrices M (..., C true, C predicted), M[j, k] = Σ over the
    samples of class j of ŷ_k. With ŷ summing to 1 over the classes, each entry is a sum of M's elements, all
    non-negative, none subtracted: TP = M[c, c], FN = Σ_{k≠c} M[c, k] (the other classes' share of a class-c
    sample: its 1 − ŷ_c without cancellation), FP = Σ_{j≠c} M[j, c], TN = Σ_{j≠c, k≠c} M[j, k]."""
    classes = matrix.shape[-1]
    off = 1 - torch.eye(classes, dtype=matrix.dtype, device=matrix.device)
    off_diagonal = matrix * off
    tp = torch.diagonal(matrix, dim1=-2, dim2=-1)
    fn = off_diagonal.sum(-1)
    fp = off_diagonal.sum(-2)
    tn = (torch.matmul(off, matrix) * off).sum(-1)  # row c: Σ_{j≠c} Σ_{k≠c} M[j, k]
    return torch.stack([tp, fn, fp, tn])


class ClassIndexPath(_Path):
    """Multi-class with class indices: ŷ = softmax over the class axis in place (N, C, d...), then per segment
    the soft confusion matrix M by one ``index_add`` of each image's ŷ into the columns of its pixels'
    classes, and the entries from M (:func:`_confusion_entries`). The backward: ∂loss/∂ŷ is each class's
    negative factor with the own class's entry replaced by its positive one, then the softmax's Jacobian."""

    name = "class_indices"

    def table(self, batch):
        input, indices, weight = batch.input, batch.target, batch.weight
        classes = input.shape[1]
        predicted = _softmax_pair(self.plan, batch)
        if weight is not None:
            predicted = predicted * weight
        n = input.shape[0]
        if input.dim() == 2:  # (N, C): rows
            if self.per_sample:
                matrix = torch.zeros((n, classes, classes), dtype=input.dtype, device=input.device)
                matrix[torch.arange(n, device=input.device), indices] = predicted
            else:
                matrix = torch.zeros((classes, classes), dtype=input.dtype, device=input.device)
                matrix.index_add_(0, indices, predicted)
        else:
            flat = predicted.reshape(n, classes, -1)
            labels = indices.reshape(n, -1)
            transposed = torch.zeros((n if self.per_sample else 1, classes, classes), dtype=input.dtype,
                                     device=input.device)  # M transposed: [predicted k, true j]
            for image in range(n):
                transposed[image if self.per_sample else 0].index_add_(1, labels[image], flat[image])
            matrix = transposed.transpose(-1, -2)
        entries = _confusion_entries(matrix)
        if not self.per_sample:
            entries = entries.reshape(4, 1, classes)
        return entries.unsqueeze(-1)

    def gradient(self, batch, factors):
        input, indices, weight = batch.input, batch.target, batch.weight
        if isinstance(factors, FloatFactors):
            factors = factors.tensor(input).expand(2, 1, input.shape[1], 1)
        positive, negative = factors[..., 0]  # (S', C)
        shape = input.shape
        # table[s, j, k]: ∂loss/∂ŷ_k of a sample of class j in segment s, the negative factor of class k but the
        # own class's positive one (exact, no 0·x + 1·y); each sample's row is gathered from it.
        table = negative.unsqueeze(1).expand(-1, shape[1], -1).clone()
        table.diagonal(dim1=1, dim2=2).copy_(positive)
        if input.dim() == 2:
            grad = table[0].index_select(0, indices) if not self.per_sample else \
                table[torch.arange(shape[0], device=indices.device), indices]
        else:
            grad = torch.empty(shape, dtype=input.dtype, device=input.device)
            by_predicted = table.transpose(1, 2).contiguous()  # [s, predicted k, true j]
            labels = indices.reshape(shape[0], -1)
            for image in range(shape[0]):  # one gather per image, straight into the (C, d...) layout
                torch.index_select(by_predicted[image if self.per_sample else 0], 1, labels[image],
                                   out=grad[image].view(shape[1], -1))
        if weight is not None:
            grad.mul_(weight)
        return _in_layout(_softmax_chain(self.plan, batch, grad), input)

    def compiled_table(self, batch):
        """For torch.compile: M from one-hot rows by a matrix product (a loop over images would unroll)."""
        predicted = _softmax_pair(self.plan, batch)
        if batch.weight is not None:
            predicted = predicted * batch.weight
        truth = _one_hot(batch.target, batch.input.shape[1], batch.input)
        return _confusion_entries(_soft_confusion_matrix(truth, predicted, self.per_sample)).unsqueeze(-1)

    def compiled_gradient(self, batch, factors):
        input, indices, weight = batch.input, batch.target, batch.weight
        positive, negative = (_factor_view(f, input) for f in factors[..., 0])
        own = _one_hot(indices, input.shape[1], input) > 0
        grad = torch.where(own, positive, negative)  # exact: no 0·x + 1·y
        if weight is not None:
            grad = grad * weight
        return _softmax_chain(self.plan, batch, grad)


def _soft_confusion_matrix(truth, predicted, per_sample):
    """M[j, k] = Σ truth_j·ŷ_k over the reduced axes, (S', C, C), from (N, C, d...) rows: one batched matrix
    product per image (or one product of the flat (N, C) rows)."""
    n, classes = predicted.shape[:2]
    truth, guess = truth.reshape(n, classes, -1), predicted.reshape(n, classes, -1)
    if not per_sample and guess.shape[-1] == 1:
        return torch.mm(truth[..., 0].t(), guess[..., 0]).unsqueeze(0)
    matrix = torch.bmm(truth, guess.transpose(1, 2))  # (N, C true, C predicted)
    return matrix if per_sample else matrix.sum(0, keepdim=True)


def _one_hot(indices, classes, like):
    """(N, d...) class indices as one-hot rows (N, C, d...) in like's dtype, the class axis in place."""
    shape = (1, classes, *([1] * (indices.dim() - 1)))
    return (indices.unsqueeze(1) == torch.arange(classes, device=indices.device).view(shape)).to(like.dtype)


def _in_layout(grad, input):
    """The gradient in the input's memory layout (channels-last in, channels-last out; a crop's gradient is
    contiguous, as empty_like makes it)."""
    if grad.stride() == input.stride():
        return grad
    like = torch.empty_like(input)
    return grad if like.stride() == grad.stride() else like.copy_(grad)


class ClassScorePath(_Path):
    """Multi-class with one-hot or probability targets y (N, C, d...), each row a distribution: the soft
    confusion matrix M = Σ y ⊗ ŷ per segment by one batched matrix product, the entries from M; the backward
    (w·y·g+ + w·(1 − y)·g-) through the softmax's Jacobian."""

    name = "class_scores"

    def table(self, batch):
        predicted = _softmax_pair(self.plan, batch)
        if batch.weight is not None:
            predicted = predicted * batch.weight
        return _confusion_entries(_soft_confusion_matrix(batch.target, predicted, self.per_sample)).unsqueeze(-1)

    def gradient(self, batch, factors):
        input, target, weight = batch.input, batch.target, batch.weight
        if isinstance(factors, FloatFactors):
            factors = factors.tensor(input).expand(2, 1, input.shape[1], 1)
        positive, negative = (_factor_view(f, input) for f in factors[..., 0])
        grad = _select_by_label(target, positive, negative, out=torch.empty_like(input))
        if weight is not None:
            grad.mul_(weight)
        return _in_layout(_softmax_chain(self.plan, batch, grad), input)

    compiled_table = table

    def compiled_gradient(self, batch, factors):
        input, target, weight = batch.input, batch.target, batch.weight
        positive, negative = (_factor_view(f, input) for f in factors[..., 0])
        grad = target * positive + (1 - target) * negative  # exact for 0/1 labels: one term is 0
        if weight is not None:
            grad = grad * weight
        return _softmax_chain(self.plan, batch, grad)


def _compiled_flavour(path):
    """The path with its forms for torch.compile (values the compiler fuses, no buffers or loops over images)."""
    return type(f"Compiled{path.__name__}", (path,), {"compiled": True, "table": path.compiled_table,
                                                       "gradient": path.compiled_gradient})


_PATHS = {path: (path, _compiled_flavour(path)) for path in (ElementwisePath, ThresholdPath, ClassIndexPath,
                                                             ClassScorePath)}


def _choose_path(plan, index_targets, per_sample, compiled):
    """The path for a kind of input: fixed by the task, the target's kind and the thresholds."""
    if plan.task == "multiclass":
        path = ClassIndexPath if index_targets else ClassScorePath
    elif len(plan.thresholds) > 1 or plan.definition.curve is not None:
        path = ThresholdPath
    else:
        path = ElementwisePath
    return _PATHS[path][compiled](plan, per_sample)


# ---------------------------------------------------------------------------------------------
# The metric per column, zero_division, and the averages over classes, thresholds and segments.


class FloatFactors(tuple):
    """(positive, negative) as Python floats: the one column of a binary loss on the CPU, kept as floats
    so that the backward needs no tensor operation to read them."""

    def tensor(self, like):
        return torch.tensor(self, dtype=like.dtype, device=like.device).view(2, 1, 1, 1)

    def __mul__(self, scale):
        scale = float(scale)
        return FloatFactors((self[0] * scale, self[1] * scale))


def _support(table):
    """Σ w·y per (segment, class): TP + FN at any threshold (they depend on the labels only)."""
    return table[0, :, :, 0] + table[1, :, :, 0]


def _rule_weights(plan, table):
    """Each class's weight 1/support**power within its segment (S, C); a class absent from a segment takes the
    largest weight of the segment's present classes, as MONAI's GeneralizedDiceLoss does (Sudre et al. 2017
    leave it open), and a segment without any class weighs nothing."""
    support = _support(table)
    weights = torch.reciprocal(support ** CLASS_WEIGHT_RULES[plan.class_weights])
    infinite = torch.isinf(weights)
    weights = weights.masked_fill(infinite, 0.0)
    return weights + infinite * weights.amax(1, keepdim=True)


def _columns(plan, table):
    """The columns the metric is evaluated at, (4, S, C', T), and the classes' weights in them (S, C) where
    they are summed with weights (generalized Dice), else None. micro: the entries summed over classes."""
    if plan.rule_weighted:
        weights = _rule_weights(plan, table)
        return (table * weights.unsqueeze(-1)).sum(2, keepdim=True), weights
    if plan.average == "micro":
        return table.sum(2, keepdim=True), None
    return table, None


def _class_shares(plan, table, columns):
    """Each column's class weight within its segment (S, C'), rows summing to 1, or None where uniform; and
    the segments whose weights are all 0 (average='weighted' without any positive), or None."""
    if plan.class_weights is not None and not plan.rule_weighted:
        weights = plan.class_weights.to(dtype=table.dtype, device=table.device).expand(columns.shape[1], -1)
        return weights / weights.sum(1, keepdim=True), None
    if plan.average == "weighted" and columns.shape[2] > 1:
        support = _support(table)
        total = support.sum(1, keepdim=True)
        empty = (total == 0).squeeze(1)
        return support / torch.where(total == 0, 1.0, total), empty
    return None, None


def evaluate(plan, table, allow_floats=False):
    """The loss and the factors (2, S, C, T) for positives and negatives of a (4, S, C, T) table.

    Columns where the metric is undefined on finite entries take ``zero_division`` and contribute no
    gradient; non-finite entries (NaN or inf in the input or weights) make the loss NaN. The loss is the mean
    over segments of the class average of the mean over thresholds (``reduction="mean"``), that times the
    number of (segment, class) entries (``"sum"``), or the (S, C') losses per entry (``"none"``).
    ``allow_floats``: a CPU table outside torch.compile, whose few columns may be evaluated on Python floats.
    """
    classes = table.shape[2]
    columns, weights = _columns(plan, table)
    if plan.definition.curve is not None:
        if allow_floats and plan.reduction != "none" and columns.shape[1] * columns.shape[2] == 1 \
                and plan.class_weights is None:
            result = _evaluate_curve_floats(plan, columns)
            if result is not None:
                loss, factors = result
                return loss, _spread(factors, weights, classes)
        value, factors = _curve_columns(plan, columns)  # (S, C'), (2, S, C', T)
        count = 1
    else:
        if allow_floats and plan.reduction != "none" and columns.numel() <= 4 * SCALAR_PATH_COLUMNS \
                and plan.class_weights is None and (plan.average != "weighted" or columns.shape[2] == 1):
            result = _evaluate_floats(plan, columns)
            if result is not None:
                loss, factors = result
                return loss, factors if isinstance(factors, FloatFactors) else _spread(factors, weights, classes)
        value, factors = _metric_columns(plan, columns)  # (S, C', T), (2, S, C', T)
        count = value.shape[-1]
        value = value.mean(-1)
    factors = factors / count
    sign = plan.definition.loss_sign
    losses = 1 - value if sign < 0 else value  # (S, C')
    if plan.reduction == "none":
        return losses, _spread(factors * sign, weights, classes)
    shares, empty = _class_shares(plan, table, columns)
    segments = value.shape[0]
    if shares is None:
        shares = torch.full_like(value, 1.0 / value.shape[1])
    segment_value = (value * shares).sum(1)
    factors = factors * shares.unsqueeze(-1)
    if empty is not None:  # average='weighted' where no class has support: zero_division, no gradient
        fill = math.nan if plan.zero_division is None else plan.zero_division
        segment_value = torch.where(empty, fill, segment_value)
        factors = factors.masked_fill(empty.view(1, -1, 1, 1), 0.0)
    segment_losses = 1 - segment_value if sign < 0 else segment_value
    scale = 1.0 / segments if plan.reduction == "mean" else float(value.shape[1])
    loss = segment_losses.sum() * scale
    return loss, _spread(factors * (sign * scale), weights, classes)


def _spread(factors, weights, classes):
    """Factors of the evaluated columns (2, S, C', T) as factors per class (2, S, C, T): a sum over classes
    passes its factor to every class, times the class's weight where the sum is weighted."""
    if weights is not None:
        return factors * weights.view(1, *weights.shape, 1)
    if factors.shape[2] != classes:
        return factors.expand(-1, -1, classes, -1)
    return factors


def metric_values(plan, table):
    """The metric of every column of a (4, S, C, T) table, ``zero_division`` applied: (S, C, T), or (S, C, 1)
    for a metric of the curve over the thresholds."""
    if plan.definition.curve is not None:
        value, _ = _curve_columns(plan, table)
        return value.unsqueeze(-1)
    value, _ = _metric_columns(plan, table)
    return value


def _evaluate_floats(plan, columns):
    """Python floats for a few columns on the CPU, uniform shares; None where a value is undefined or not
    finite (the tensor evaluation then applies zero_division)."""
    definition = plan.definition
    rows = columns.reshape(4, -1).tolist()
    count = columns.shape[-1]
    share = 1.0 / len(rows[0]) if plan.reduction == "mean" else 1.0 / count
    sign = definition.loss_sign
    loss, positives, negatives = 0.0, [], []
    try:
        for tp, fn, fp, tn in zip(*rows):
            total = tp + fn + fp + tn if definition.scale_invariant else 0.0
            if total > 0 and math.isfinite(total):
                tp, fn, fp, tn = tp / total, fn / total, fp / total, tn / total
            else:
                total = 1.0
            value, positive, negative = definition.metric(tp, fn, fp, tn, FloatMath)
            positive, negative = positive / total, negative / total
            if not (math.isfinite(value) and math.isfinite(positive) and math.isfinite(negative)):
                return None
            loss += share * (1 - value if sign < 0 else value)
            positives.append(sign * share * positive)
            negatives.append(sign * share * negative)
    except (ArithmeticError, ValueError, TypeError):  # 1/0, sqrt(-1), a complex power, overflow
        return None
    positives, negatives = (_within_range(values, columns.dtype) for values in (positives, negatives))
    if len(positives) == 1:
        factors = FloatFactors((positives[0], negatives[0]))
    else:
        factors = torch.tensor([positives, negatives], dtype=columns.dtype).view(2, *columns.shape[1:])
    return torch.tensor(loss, dtype=columns.dtype), factors


def _within_range(values, dtype):
    """Factors as Python floats, each held within the dtype's finite range: a factor beyond it (float32:
    3.4e38, where ŷ of a saturated sample is tiny) stored as inf would make y·inf = NaN for the samples of
    the other label."""
    limit = _LARGEST.get(dtype) or _LARGEST.setdefault(dtype, torch.finfo(dtype).max)
    return [min(max(value, -limit), limit) for value in values]


_LARGEST = {}  # torch.finfo(dtype).max by dtype


def _metric_columns(plan, table):
    """The metric and its two factors per column of a (4, ...) table, as tensors, zero_division applied."""
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


def _evaluate_curve_floats(plan, table):
    """One curve (a (4, 1, 1, T) table) on Python floats, the formulas of _curve_columns: some 30 tensor
    operations would cost more than the sums over a small batch (docs/performance.md). None where a value is
    undefined or not finite; the tensor evaluation then applies zero_division."""
    definition = plan.definition
    tp, fn, fp, tn = table[:, 0, 0, :].tolist()
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
    return torch.tensor(loss, dtype=table.dtype), torch.tensor(factors, dtype=table.dtype).view(2, 1, 1, -1)


def _curve_columns(plan, table):
    """The curve metric per (segment, class) column (S, C) and its factors per threshold (2, S, C, T),
    zero_division applied.

    The curve runs through the points (X_k, Y_k), k = 0 … T + 1: the thresholds in ascending order,
    between two fixed ends, threshold 0 (every sample predicted positive: TP = P, FP = N) and threshold 1
    (every sample predicted negative), whose entries depend on the labels only. With ΔX_k = X_k − X_{k+1},

        area  A = Σ_k ΔX_k·(Y_k + Y_{k+1})/2,   ∂A/∂Y_k = (X_{k−1} − X_{k+1})/2,  ∂A/∂X_k = (Y_{k+1} − Y_{k−1})/2
        sum   S = Σ_k ΔX_k·Y_k,                 ∂S/∂Y_k = ΔX_k,                   ∂S/∂X_k = Y_k − Y_{k−1}

    and a threshold's factor for positives is ∂A/∂Y_k·(Y_TP − Y_FN) + ∂A/∂X_k·(X_TP − X_FN) (negatives
    likewise), so the backward stays the elementwise one, O(N·T).
    """
    definition = plan.definition
    segments, classes = table.shape[1:3]
    table = table.reshape(4, segments * classes, -1)
    finite_entries = torch.isfinite(table).all(0).all(1)  # (S·C,)
    total = None
    if definition.scale_invariant:  # the curve at the rates, its factors divided by the total
        total = table[:, :, 0].sum(0)  # every threshold's entries sum to it
        total = torch.where((total > 0) & finite_entries, total, 1.0)
        table = table / total.view(1, -1, 1)
    TP, FN, FP, TN = table
    positives, negatives = TP[:, :1] + FN[:, :1], FP[:, :1] + TN[:, :1]
    zeros = torch.zeros_like(positives)
    start = torch.stack([positives, zeros, negatives, zeros])
    end = torch.stack([zeros, positives, zeros, negatives])
    points = torch.cat([start, table, end], dim=2)  # (4, S·C, T + 2)
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
    return value.view(segments, classes), factors.view(2, segments, classes, -1)


# ---------------------------------------------------------------------------------------------
# torch.distributed, torch.compile and torch.func


def _world_size(process_group):
    """Ranks that share the statistics; 1 without an initialized process group."""
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return 1
    return distributed.get_world_size(process_group)


# Whether torch.compile is tracing: looked up once (a getattr chain per call costs on small batches).
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)


def _under_functorch():
    """Whether a torch.func transform (grad, vmap, ...) is active."""
    level = getattr(torch._C._functorch, "maybe_current_level", None)
    return level is not None and level() is not None


# ---------------------------------------------------------------------------------------------
# The autograd Function


def _forward(route, batch, segments, running):
    """The loss, the table the metric was evaluated at, and the factors."""
    plan = route.plan
    table = segments.fold(route.path.table(batch))
    grad_scale = 1.0
    world = _world_size(plan.process_group) if plan.sync else 1
    if world > 1 and not segments.local:
        table = table.contiguous()
        torch.distributed.all_reduce(table, group=plan.process_group)
        # DDP averages gradients over ranks; scaling by the world size makes that
        # average equal the gradient of the loss on the global batch.
        grad_scale = float(world) if plan.grad_average else 1.0
    if running is not None:
        table = running.update(table)
    loss, factors = evaluate(plan, table, allow_floats=route.floats)
    if world > 1 and segments.local and plan.reduction != "none":
        loss, factors = _global_mean_over_images(plan, loss, factors, segments.count)
    if grad_scale != 1.0:
        factors = factors * grad_scale
    return loss, table, factors


def _global_mean_over_images(plan, loss, factors, images):
    """With reduce='image' and sync: every image's entries are its own, so only the loss crosses ranks, in one
    all-reduce of (Σ losses, number of images); the loss is the mean over every rank's images."""
    if isinstance(factors, FloatFactors):
        factors = factors.tensor(loss)
    local_sum = loss * images if plan.reduction == "mean" else loss
    totals = torch.stack([local_sum.reshape(()) if images else torch.zeros_like(loss),
                          torch.tensor(float(images), dtype=loss.dtype, device=loss.device)])
    torch.distributed.all_reduce(totals, group=plan.process_group)
    world = float(_world_size(plan.process_group)) if plan.grad_average else 1.0
    if plan.reduction == "mean":
        return totals[0] / totals[1], factors * (images / totals[1] * world)
    return totals[0], factors * world


def _backward(route, batch, segments, factors, grad_loss):
    if torch.is_autocast_enabled(batch.input.device.type):  # the gradient in the compute dtype, as the forward
        with torch.autocast(batch.input.device.type, enabled=False):
            return _backward(route, batch, segments, factors, grad_loss)
    if torch.is_grad_enabled():  # create_graph=True, or a torch.func transform
        with torch.no_grad():
            grad = _gradient(route, batch, segments, factors, grad_loss)
        return _FirstDerivativeOnly.apply(grad, batch.input) if batch.input.requires_grad else grad
    return _gradient(route, batch, segments, factors, grad_loss)


def _gradient(route, batch, segments, factors, grad_loss):
    if isinstance(factors, FloatFactors):
        factors = factors * grad_loss.item()
    elif grad_loss.dim() == 0:
        factors = factors * grad_loss
    else:  # reduction='none': one gradient per (segment, class) entry
        entries = grad_loss.reshape(factors.shape[1], -1)
        factors = factors * entries.unsqueeze(0).unsqueeze(-1)
    return route.path.gradient(batch, segments.sample_factors(factors))


class _MetricLossFunction(torch.autograd.Function):
    """Forward: the route's table, the metric and its factors. Backward: the route's gradient. Saves the inputs
    only (and the factors). Written with setup_context, as torch.func transforms need; eager calls skip
    Function.apply's per-call argument binding (see _apply)."""

    @staticmethod
    def forward(input, target, weight, poison, route, segments, running):
        batch = _Batch(input, target, weight, input.dtype, input.shape)
        loss, table, factors = _forward(route, batch, segments, running)
        if poison is not None:  # 0, or NaN where a logit is ±inf (compiled code; see _Route._validate)
            loss, factors = loss + poison, factors + poison
        return loss, table, factors, *batch.saved

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, _, route, segments, _ = inputs
        _, table, factors, *saved = output
        ctx.route, ctx.segments = route, segments
        ctx.set_materialize_grads(False)  # no zero tensors for the outputs that take no gradient
        if isinstance(factors, torch.Tensor):
            ctx.float_factors = None
            ctx.save_for_backward(input, target, weight, factors, *saved)
            ctx.mark_non_differentiable(table, factors, *saved)
        else:
            ctx.float_factors = factors
            ctx.save_for_backward(input, target, weight, *saved)
            ctx.mark_non_differentiable(table, *saved)

    @staticmethod
    def backward(ctx, grad_loss, *_):
        if grad_loss is None:  # only outputs that take no gradient were differentiated
            return None, None, None, None, None, None, None
        if ctx.float_factors is None:
            input, target, weight, factors, *saved = ctx.saved_tensors
        else:
            (input, target, weight, *saved), factors = ctx.saved_tensors, ctx.float_factors
        batch = _Batch(input, target, weight, input.dtype, input.shape, tuple(saved))
        return _backward(ctx.route, batch, ctx.segments, factors, grad_loss), None, None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, *args):
        raise RuntimeError("a metricc loss couples every sample of its batch through the confusion entries, so it "
                           "cannot be vmapped over a batch of batches; call it once per batch and torch.stack the "
                           "losses")


# Function.apply binds a setup_context-style forward's arguments with inspect.signature on every call, which
# a small batch cannot afford (docs/performance.md says how much); without torch.func transforms and outside
# torch.compile's tracing, the C++ apply underneath it does the same work.
_FAST_APPLY = super(torch.autograd.Function, _MetricLossFunction).apply


def _apply(input, target, weight, poison, route, segments, running):
    if torch.is_autocast_enabled(input.device.type):  # the table's matrix products stay in the compute dtype
        with torch.autocast(input.device.type, enabled=False):
            return _apply(input, target, weight, poison, route, segments, running)
    if route.compiled or _under_functorch():
        return _MetricLossFunction.apply(input, target, weight, poison, route, segments, running)
    return _FAST_APPLY(input, target, weight, poison, route, segments, running)


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
    that is the batch itself. One segment (reduce='batch'): the table is (4, 1, C, T).
    """

    def __init__(self, rates, total, momentum, update):
        self.rates, self.total, self.momentum, self.store = rates, total, momentum, update

    def update(self, table):
        if table.device != self.rates.device:
            raise ValueError(f"the running estimate is on {self.rates.device} but input is on {table.device}; "
                             "move the loss with loss_fn.to(device)")
        if table.numel() == 4 and table.device.type == "cpu" and not _is_compiling():
            return self._update_floats(table)
        batch = table[:, 0].to(self.rates.dtype)  # the estimate accumulates in float64
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
        return torch.where(weighed, rates * (size / total), batch).to(table.dtype).unsqueeze(1)

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


def _fingerprint(text):
    """A stable 63-bit FNV-1a hash of ``text`` (hashlib would be one more import in standalone modules)."""
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value >> 1


# ---------------------------------------------------------------------------------------------
# Input checks and the runtime's layout


def _check_tensor(value, what):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(value).__name__}")


def _compute_dtype(dtype):
    """Statistics and factors in float32 for half-precision input; the gradient returns in the input's dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class _Route:
    """What one kind of input gets (device, dtypes and ranks of input, target and weight, and whether
    torch.compile is tracing), decided when the kind first appears: the path, whether the evaluation may run
    on Python floats, and which layout checks each call still needs."""

    def __init__(self, plan, input, target, weight, compiled, per_sample):
        _check_tensor(input, "input")
        _check_tensor(target, "target")
        if weight is not None:
            _check_tensor(weight, "weight")
        kind = "logits" if plan.from_logits else "probabilities"
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor of {kind}, got dtype {input.dtype}")
        for tensor, what in ((target, "target"), (weight, "weight")):
            if tensor is not None and tensor.device != input.device:
                raise ValueError(f"{what} is on {tensor.device} but input is on {input.device}; move it first")
        self.plan = plan
        self.compiled = compiled
        self.source_dtype = input.dtype
        self.compute = _compute_dtype(input.dtype)
        self.floats = input.device.type == "cpu" and not compiled
        task = plan.task
        if task == "binary":
            if input.dim() == 0:
                raise ValueError("input must have shape (N,), (N, 1) or (N, [1,] d1, ...) for task='binary', got a "
                                 "0-dim tensor")
            self.index_targets = False
        else:
            noun = "classes" if task == "multiclass" else "labels"
            if input.dim() < 2:
                raise ValueError(f"input must have shape (N, {plan.num_classes}) or (N, {plan.num_classes}, d1, ...) "
                                 f"for task={task!r} with {plan.num_classes} {noun}, got {_shape(input.shape)}")
            self.index_targets = task == "multiclass" and target.dim() == input.dim() - 1
            if self.index_targets and (target.is_floating_point() or target.dtype == torch.bool):
                raise ValueError(f"target of shape (N, d1, ...) must hold class indices (an integer dtype), got "
                                 f"{target.dtype}; or pass one-hot or probability rows of input's shape "
                                 f"(N, {plan.num_classes}, d1, ...)")
            if task == "multiclass" and not self.index_targets and plan.ignore_index is not None:
                raise ValueError(f"ignore_index={plan.ignore_index} applies to class-index targets of shape "
                                 "(N, d1, ...); these targets are one-hot or probability rows (N, C, d1, ...): give "
                                 "ignored pixels weight 0 instead (weight of shape (N, d1, ...))")
            if task == "multilabel" and plan.ignore_index is not None and target.is_floating_point():
                raise ValueError(f"ignore_index={plan.ignore_index} marks integer labels; these targets are floats: "
                                 "give ignored elements weight 0 instead")
        if task == "binary" and plan.ignore_index is not None and target.is_floating_point():
            raise ValueError(f"ignore_index={plan.ignore_index} marks integer labels (0, 1 or the ignored value); "
                             "these targets are floats: pass integer labels, or give ignored pixels weight 0 instead")
        spatial_rank = max(input.dim() - (1 if task == "binary" else 2), 0)
        if plan.reduce == "image" and spatial_rank == 0 and not (task == "binary" and input.dim() == 2):
            raise ValueError(f"reduce='image' evaluates the metric per sample over its pixels, but input of shape "
                             f"{_shape(input.shape)} has no spatial axes (each image would be one pixel): pass dense "
                             "input (N, C, d1, ...), or use reduce='batch'")
        self.path = _choose_path(plan, self.index_targets, per_sample, compiled)
        self.checks = self._checks(target.dtype, weight is not None)  # fixed here: no cache filled while tracing

    # -- per call: shapes, dtypes, ignore_index and the value checks --------------------------------

    def prepare(self, input, target, weight, validate, allow_empty):
        plan = self.plan
        shape = input.shape
        if plan.task == "binary":
            if input.dim() >= 2 and shape[1] == 1:
                canonical = input
            else:
                canonical = input.unsqueeze(1)
            spatial = canonical.shape[2:]
            if target.shape == canonical.shape:
                labels = target
            elif target.shape == (shape[0], *spatial):
                labels = target.unsqueeze(1)
            else:
                raise ValueError(self._target_message(target, shape, spatial))
        else:
            classes = plan.num_classes
            if shape[1] != classes:
                noun = "classes" if plan.task == "multiclass" else "labels"
                raise ValueError(f"input must have shape (N, {classes}) or (N, {classes}, d1, ...) for "
                                 f"task={plan.task!r} with {classes} {noun}, got {_shape(shape)}")
            canonical, spatial = input, shape[2:]
            expected = (shape[0], *spatial) if self.index_targets else shape
            if target.shape != expected:
                raise ValueError(self._target_message(target, shape, spatial))
            labels = target
        if shape[0] == 0 and not allow_empty:
            raise ValueError("the batch is empty: a confusion-matrix metric needs at least one sample")
        if (target.requires_grad or (weight is not None and weight.requires_grad)) and torch.is_grad_enabled():
            what = "target" if target.requires_grad else "weight"
            raise ValueError(f"{what} requires grad, but a metricc loss differentiates the predictions only "
                             f"(its closed form has no derivative with respect to the {what}): pass "
                             f"{what}.detach()")
        if weight is not None:
            weight = self._weight_view(weight, canonical, spatial)
        compute = self.compute
        if canonical.dtype != compute:
            canonical = canonical.to(compute)
        if plan.ignore_index is not None:
            ignored = labels == plan.ignore_index
            labels = labels.masked_fill(ignored, 0)
            kept = (~ignored).to(compute)
            kept = kept.unsqueeze(1) if self.index_targets else kept
            weight = kept if weight is None else weight * kept
        poison = None
        if validate:
            canonical, weight, poison = self._validate(canonical, labels, weight)
        if self.index_targets:
            labels = labels.long()
        elif labels.dtype != compute:
            labels = labels.to(compute)
        if weight is not None and weight.dtype != compute:
            weight = weight.to(compute)
        return _Batch(canonical, labels, weight, input.dtype, shape, poison=poison)

    def _target_message(self, target, shape, spatial):
        plan = self.plan
        if target.dim() and target.shape[0] != shape[0]:
            return f"input holds {shape[0]} samples but target holds {target.shape[0]}; they must match"
        if plan.task == "binary":
            if not spatial:
                return f"target must have shape (N,) or (N, 1), got {_shape(target.shape)}"
            return (f"target must have input's shape {_shape(shape)} or (N, d1, ...) = "
                    f"{_shape((shape[0], *spatial))}, got {_shape(target.shape)}; nothing is broadcast")
        classes = plan.num_classes
        if plan.task == "multiclass":
            dense = f" or {_shape((shape[0], *spatial))} class indices" if spatial else ""
            return (f"target must have shape (N,) class indices or (N, {classes}) for task='multiclass', got "
                    f"{_shape(target.shape)}" if not spatial else
                    f"target must have input's shape {_shape(shape)} (one-hot or probability rows){dense} for "
                    f"task='multiclass', got {_shape(target.shape)}; nothing is broadcast")
        return (f"target must have shape (N, {classes}) for task='multilabel', got {_shape(target.shape)}"
                if not spatial else
                f"target must have input's shape {_shape(shape)} for task='multilabel', got "
                f"{_shape(target.shape)}; nothing is broadcast")

    def _weight_view(self, weight, canonical, spatial):
        """weight per sample (N,) or per element (N, d1, ...) (or with the class axis of size 1), viewed to
        broadcast over the (N, C, d1, ...) input."""
        _check_tensor(weight, "weight")
        n = canonical.shape[0]
        if weight.shape == (n,):
            return weight.view(n, *([1] * (canonical.dim() - 1)))
        if weight.shape == (n, *spatial):
            return weight.unsqueeze(1)
        if weight.shape == (n, 1, *spatial):
            return weight
        per_element = f" or per element {_shape((n, *spatial))}" if spatial else ""
        raise ValueError(f"weight must have shape ({n},), one per sample{per_element}, got {_shape(weight.shape)}; "
                         "a weight per class is class_weights=")

    def _checks(self, labels_dtype, weighted):
        """The value checks of this kind of input, fixed once: (statistic, lower, upper, NaN passes, message)."""
        plan = self.plan
        checks = []
        if self.index_targets:
            ignore = "" if plan.ignore_index is None else f" or ignore_index={plan.ignore_index}"
            checks.append(("labels", 0, plan.num_classes - 1, False,
                           f"target must hold class indices in [0, {plan.num_classes - 1}]{ignore}"))
        elif labels_dtype != torch.bool:
            checks.append(("labels", 0, 1, False, "target must hold labels in [0, 1]"))
        tolerance = self._tolerance(plan.num_classes)
        if plan.task == "multiclass" and not self.index_targets:
            checks.append(("label rows", 1 - tolerance if labels_dtype.is_floating_point else 1,
                           1 + tolerance if labels_dtype.is_floating_point else 1, False,
                           "target rows (one-hot or probabilities over the class axis 1) must each sum to 1, the "
                           "distribution over classes this loss's entries assume; multi-hot rows are "
                           "task='multilabel'"))
        if not plan.from_logits:
            checks.append(("input", 0, 1, False,
                           "from_logits=False expects probabilities in [0, 1]; pass logits with from_logits=True"))
            if plan.task == "multiclass":
                checks.append(("input rows", 1 - tolerance, 1 + tolerance, False,
                               "from_logits=False expects class probabilities that sum to 1 over the class axis 1 "
                               "(a softmax's output); pass logits with from_logits=True"))
        if weighted:
            checks.append(("weight", 0, None, True, "weight must be non-negative"))
        return checks

    def _rescaled(self, weight, largest, elements):
        """Weights so large that their sum over the batch would overflow the dtype (float32 weights of 3e38)
        divided by a power of two, exactly, where the metric does not depend on their scale (a ratio metric);
        the loss and gradient are unchanged, the table is in the rescaled units. Not under sync: ranks would
        rescale differently."""
        limit = torch.finfo(weight.dtype).max / 16
        if not (math.isfinite(largest) and largest * elements > limit) or self.plan.sync \
                or not self.plan.definition.scale_invariant:
            return weight
        return weight * 2.0 ** -math.ceil(math.log2(largest * elements / limit))

    def _tolerance(self, classes):
        """How far from 1 a sum over the class axis may be: rounding (a few units in the last place per class of
        the caller's dtype), and at least 1e-3, which lets finite differences (gradcheck) probe near the simplex
        while logits, scores or multi-hot rows passed as distributions are refused."""
        return max(1e-3, 16 * classes * torch.finfo(self.source_dtype).eps)

    def _validate(self, input, labels, weight):
        """Labels in [0, 1] (0/1, or soft labels) or class indices in [0, C); one-hot/probability target rows
        and probability input rows that sum to 1 (multi-class); probabilities in [0, 1]; weights non-negative.
        NaN in input or weights is not an error: it propagates to the loss, as binary_cross_entropy_with_logits
        does and AMP's GradScaler needs. ±inf logits make the loss NaN (the returned input).

        Every bound is read in one transfer; under torch.compile the checks are compiled in (_assert_async)."""
        checks = self.checks
        statistics = []
        for name, *_ in checks:
            if name == "labels":
                statistics.append(torch.aminmax(labels) if labels.numel() else None)
            elif name == "label rows":
                statistics.append(torch.aminmax(labels.sum(1, dtype=self.compute)) if labels.numel() else None)
            elif name == "input":
                statistics.append(torch.aminmax(input) if input.numel() else None)
            elif name == "input rows":
                statistics.append(torch.aminmax(input.sum(1)) if input.numel() else None)
            else:
                statistics.append(torch.aminmax(weight) if weight.numel() else None)
        logit_sum = input.sum() if self.plan.from_logits and input.numel() else None
        if self.compiled:
            for (_, lower, upper, nan_passes, text), values in zip(checks, statistics):
                if values is not None:
                    low, high = values[0], values[-1]
                    fine = ~(low < lower) if nan_passes else low >= lower
                    torch._assert_async(fine if upper is None else fine & (high <= upper), text)
            # ±inf logits would be taken as certain predictions: a 0-dim poison, 0 or NaN, added to the loss and
            # the factors makes both NaN (not x + (x − x), a new input the compiled graph would have to store)
            # (explicit: the compiler may fold x·0 to 0)
            return input, weight, (None if logit_sum is None else
                                   torch.where(torch.isfinite(logit_sum), 0.0, math.nan).to(input.dtype))
        flat = [value for values in statistics if values is not None for value in values]
        if logit_sum is not None:
            flat.append(logit_sum)
        values = torch.stack(flat).tolist() if flat else []
        position = 0
        for (name, lower, upper, nan_passes, text), statistic in zip(checks, statistics):
            if statistic is None:
                continue
            low, high = values[position], values[position + len(statistic) - 1]
            position += len(statistic)
            if (not low < lower if nan_passes else low >= lower) and (upper is None or high <= upper):
                continue
            if name == "labels":
                raise ValueError(self._index_message(labels) if self.index_targets else self._label_message(labels))
            raise ValueError(text)
        if weight is not None and weight.numel():
            weight = self._rescaled(weight, values[position - 1], input.numel() // input.shape[1])
        if logit_sum is not None and not math.isfinite(values[-1]) and bool(torch.isinf(input).any()):
            # ±inf logits: σ would take them as certain predictions and the loss would stay finite. x + (x − x)
            # is x where x is finite and NaN where it is not, with gradient 1: the loss and its gradient are
            # NaN, as with NaN input (and as AMP's GradScaler needs to skip the step).
            input = input + (input - input)
        return input, weight, None

    def _label_message(self, labels):
        bad = (labels < 0) | (labels > 1)
        if labels.is_floating_point():
            bad |= torch.isnan(labels)
        position = bad.nonzero()[0].tolist()
        value = labels[tuple(position)].item()
        if self.plan.task == "binary":
            position = position[:1] if labels[0].numel() == 1 else position[:1] + position[2:]
        where = ", ".join(str(i) for i in position)
        text = f"target must hold labels in [0, 1] (0/1, or soft labels), but target[{where}] = {value:g}"
        if self.plan.ignore_index is not None:
            text += f" (and ignore_index={self.plan.ignore_index})"
        return text

    def _index_message(self, labels):
        classes = self.plan.num_classes
        position = ((labels < 0) | (labels >= classes)).nonzero()[0].tolist()
        value = labels[tuple(position)].item()
        where = ", ".join(str(i) for i in position)
        ignore = "" if self.plan.ignore_index is None else f" or ignore_index={self.plan.ignore_index}"
        return f"target must hold class indices in [0, {classes - 1}]{ignore}, but target[{where}] = {value}"


# ---------------------------------------------------------------------------------------------
# The loss module


class MetricLoss(torch.nn.Module):
    """A confusion-matrix metric as a loss: ``loss_fn(input, target, weight=None)`` → a 0-dim tensor.

    Shapes follow ``F.cross_entropy``: logits (N, C) or (N, C, d1, ..., dK) with the class axis 1 kept in place;
    binary input (N,), (N, d1, ...) or (N, 1, d1, ...).

    Args:
        definition: the :class:`MetricDefinition` of a generated module.
        task: ``"binary"`` (target 0/1 of the input's shape, with or without the class axis of size 1),
            ``"multiclass"`` (target (N, d1, ...) class indices, or (N, C, d1, ...) one-hot or probability rows,
            each summing to 1) or ``"multilabel"`` (target (N, C, d1, ...) of 0/1).
        num_classes: C, for multiclass and multilabel; ``num_labels`` is the same for multilabel.
        average: how per-class metrics combine (multiclass, multilabel), as scikit-learn's
            ``average=``: ``"micro"`` (the metric of the summed entries), ``"macro"`` (their mean)
            or ``"weighted"`` (weighted by each class's support Σ w·y; where no class has any, zero_division).
        class_weights: a weight per class for the mean (instead of ``average``'s); or ``"inverse_square"``
            (``"inverse"``): each class's entries weighted by 1/support² (1/support) within its segment and
            summed over classes before the metric: Sudre et al.'s generalized Dice for the Dice metric.
            (torch's ``weight=`` is per class; here ``weight`` at call time is per sample or per pixel.)
        reduce: where entries are summed: ``"batch"`` (over the whole batch; MONAI's ``batch=True``) or
            ``"image"`` (per sample over its pixels, the metric per image, then averaged; MONAI's default).
        reduction: ``"mean"`` (default), ``"sum"`` (the mean times the number of (image, class) entries) or
            ``"none"``: the loss per class (C,), per image and class (N, C) with reduce="image"; one entry per
            segment where classes are summed (micro).
        ignore_index: a target value whose pixels contribute nothing (class indices, binary labels).
        from_logits: whether ``input`` holds logits (default) or probabilities.
        zero_division: the metric's value on a batch where it is undefined on finite input (a
            zero denominator, e.g. recall without positives); such a column contributes no
            gradient. None lets NaN through.
        estimator: ``"batch"`` (the metric of each batch) or ``"running"`` (of a running estimate
            of the entries across steps, for small batches; see docs/minibatch.md); reduce="batch" only.
        momentum: the running estimate's momentum (weight of the past).
        sync: all-reduce the table over ``process_group``: every rank computes the loss of the global
            batch (torch.distributed; a no-op without it). With reduce="image" only the loss's sum and the
            number of images cross ranks.
        process_group: the group to reduce over; None is the default group.
        grad_average: with sync, scale gradients for DDP's averaging over ranks (True) or for
            summing them yourself (False).
        validate: check targets, probabilities and weights at every call.
        compile: run the whole call through ``torch.compile`` (checks compiled in as ``_assert_async``).

    ``weight`` (call time) is per **sample** (N,) or per **pixel** (N, d1, ...), not per class as torch's
    ``CrossEntropyLoss(weight=)``; per-class weights are ``class_weights``.

    Shape:
        - ``input``: (N,), (N, 1) or (N, [1,] d1, ...) (binary); (N, C) or (N, C, d1, ...) (multiclass,
          multilabel), the class axis 1 as in ``F.cross_entropy``.
        - ``target``: 0/1 labels of the input's shape (binary, with or without the axis of size 1;
          multilabel); (N, d1, ...) class indices or the input's shape of rows (multiclass).
        - ``weight``: (N,) or (N, d1, ...). Output: ``()``; with ``reduction="none"``, (C,), or (N, C)
          with ``reduce="image"``.

    Example::

        >>> import torch, metricc
        >>> loss_fn = metricc.compile_metric("f1")   # a MetricLoss over a generated module's DEFINITION
        >>> isinstance(loss_fn, MetricLoss), type(loss_fn.module.F1Loss()).__mro__[1] is MetricLoss
        (True, True)
        >>> round(loss_fn(torch.tensor([2.0, -1.0, 0.5, -3.0]), torch.tensor([1, 0, 1, 1])).item(), 4)
        0.2
        >>> dice = metricc.compile_metric("dice", task="multiclass", num_classes=3, reduce="image")
        >>> logits, labels = torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
        >>> round(dice(logits, labels).item(), 4)   # per image: class 0 at 1/3 everywhere, classes 1, 2 absent
        0.8333
    """

    def __init__(self, definition, *, task="binary", num_classes=None, num_labels=None, average=None,
                 class_weights=None, reduce="batch", reduction="mean", ignore_index=None, from_logits=True,
                 zero_division=0.0, estimator="batch", momentum=0.9, sync=False, process_group=None,
                 grad_average=True, validate=True, compile=False):
        super().__init__()
        num_classes = _check_num_labels(task, num_classes, num_labels)
        task, num_classes, average, class_weights = check_task(task, num_classes, average, class_weights)
        for name, value in (("from_logits", from_logits), ("sync", sync), ("grad_average", grad_average),
                            ("validate", validate), ("compile", compile)):
            check_flag(name, value)
        check_zero_division(zero_division)
        check_choice("estimator", estimator, ESTIMATORS)
        check_choice("reduce", reduce, REDUCES)
        check_choice("reduction", reduction, REDUCTIONS)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f"ignore_index must be an integer (a target value to ignore) or None, "
                             f"got {ignore_index!r}")
        check_momentum(momentum)
        self.definition = definition
        self.plan = _Plan(definition, task=task, num_classes=num_classes, average=average,
                          class_weights=class_weights, reduce=reduce, reduction=reduction, ignore_index=ignore_index,
                          from_logits=from_logits, zero_division=zero_division, sync=sync,
                          process_group=process_group, grad_average=grad_average, estimator=estimator,
                          momentum=float(momentum))
        if task != "binary" and isinstance(ignore_index, int) and 0 <= ignore_index < num_classes \
                and task == "multiclass":
            raise ValueError(f"ignore_index={ignore_index} is a class of the {num_classes}: pick a value outside "
                             f"[0, {num_classes - 1}] (255 or -100 are usual)")
        if task == "binary" and ignore_index in (0, 1):
            raise ValueError(f"ignore_index={ignore_index} is a binary label: pick another value (255 or -100)")
        self.validate = validate
        # the last call's table: a plain dict (nn.Module.__setattr__ costs on every call) whose key exists from the
        # start (a compiled call that added it would be recompiled on the next, guarding on its absence)
        self._last = {"table": None}
        self._routes = {}
        if estimator == "running":
            classes, count = num_classes, len(self.plan.thresholds)
            self.register_buffer("running_rates", torch.zeros(4, classes, count, dtype=torch.float64))
            self.register_buffer("running_weight", torch.zeros((), dtype=torch.float64))
            self.register_buffer("running_metric", torch.tensor(self._identity(), dtype=torch.int64))
        self._compile = compile
        self._compiled = None

    # Options read as attributes, as on torch.nn losses.
    task = property(lambda self: self.plan.task)
    num_classes = property(lambda self: self.plan.num_classes)
    num_labels = property(lambda self: self.plan.num_classes if self.plan.task == "multilabel" else None)
    average = property(lambda self: self.plan.average)
    reduce = property(lambda self: self.plan.reduce)
    reduction = property(lambda self: self.plan.reduction)
    ignore_index = property(lambda self: self.plan.ignore_index)
    from_logits = property(lambda self: self.plan.from_logits)
    zero_division = property(lambda self: self.plan.zero_division)
    sync = property(lambda self: self.plan.sync)
    process_group = property(lambda self: self.plan.process_group)
    grad_average = property(lambda self: self.plan.grad_average)
    estimator = property(lambda self: self.plan.estimator)
    momentum = property(lambda self: self.plan.momentum)

    def forward(self, input, target, weight=None):
        compiling = _is_compiling()
        if self._compile and not compiling:
            return self._compiled_call()(input, target, weight, self._route(input, target, weight, True))
        return self._call(input, target, weight, self._route(input, target, weight, compiling))

    def _route(self, input, target, weight, compiled):
        """The route for this kind of input, built when the kind first appears."""
        try:
            key = (input.dtype, input.device, input.ndim, target.dtype, target.device, target.ndim, compiled,
                   None if weight is None else (weight.dtype, weight.device))
        except AttributeError:  # not tensors: the route's checks say which and what to pass
            key = None
        route = self._routes.get(key)
        if route is None:
            route = _Route(self.plan, input, target, weight, compiled, self._per_sample)
            if key is not None:
                self._routes[key] = route
        return route

    @property
    def _per_sample(self):
        """Whether the paths compute a table per sample (then folded into segments): per image; groups too."""
        return self.plan.reduce == "image"

    def _segments(self, batch):
        """The segment axis of this call (the extension point for groups; see the module docstring)."""
        return Segments(batch.input.shape[0], local=True) if self.plan.reduce == "image" else _WHOLE_BATCH

    def _call(self, input, target, weight, route):
        plan = self.plan
        allow_empty = plan.sync and _world_size(plan.process_group) > 1  # other ranks may hold the batch
        batch = route.prepare(input, target, weight, self.validate, allow_empty)
        segments = _WHOLE_BATCH if plan.reduce == "batch" and not self._per_sample else self._segments(batch)
        running = None
        if plan.estimator == "running" and self.training:  # eval(): the batch alone, no update
            running = _RunningEstimate(self.running_rates, self.running_weight, plan.momentum, update=True)
        loss, table = _apply(batch.input, batch.target, batch.weight, batch.poison, route, segments, running)[:2]
        self._last["table"] = table
        if plan.reduction == "none" and plan.reduce == "batch":
            loss = loss[0]
        return loss  # in the input's dtype, float32 for half-precision input (as autocast keeps losses)

    @property
    def per_class(self):
        """The last call's metric value per class (the mean over thresholds and images), for logging; None
        before a call."""
        table = self._last.get("table")
        return None if table is None else metric_values(self.plan, table).mean(-1).mean(0)

    @property
    def last_table(self):
        """The (4, C, T) table of soft confusion entries (TP, FN, FP, TN) the last call evaluated the metric at:
        the batch's (summed over its images with reduce="image"), or the running estimate's; None before a
        call. ``segment_table`` keeps the segment axis."""
        table = self._last.get("table")
        return None if table is None else table.sum(1)

    @property
    def segment_table(self):
        """The last call's table with its segment axis, (4, S, C, T): S = 1 (reduce="batch") or N (per image)."""
        return self._last.get("table")

    def reset(self):
        """Forget the running estimate (e.g. at the start of an epoch)."""
        if self.plan.estimator == "running":
            self.running_rates.zero_()
            self.running_weight.zero_()

    def _compiled_call(self):
        if self._compiled is None:
            def eager(input, target, weight, route):
                return self._call(input, target, weight, self._route(input, target, weight, False))

            self._compiled = _compile_function(self._call, eager)
        return self._compiled

    def extra_repr(self):
        plan = self.plan
        parts = [f"metric={self.definition.name!r}", f"relaxation={_public(plan.relaxation)}"]
        if plan.task != "binary":
            parts += [f"task={plan.task!r}", f"num_classes={plan.num_classes}", f"average={plan.average!r}"]
        if isinstance(plan.class_weights, str):
            parts.append(f"class_weights={plan.class_weights!r}")
        if plan.reduce != "batch":
            parts.append(f"reduce={plan.reduce!r}")
        if plan.reduction != "mean":
            parts.append(f"reduction={plan.reduction!r}")
        if plan.ignore_index is not None:
            parts.append(f"ignore_index={plan.ignore_index}")
        parts += [f"from_logits={plan.from_logits}", f"zero_division={plan.zero_division}"]
        if plan.estimator != "batch":
            parts.append(f"estimator={plan.estimator!r}, momentum={plan.momentum}")
        if plan.sync:
            parts.append("sync=True")
        return ", ".join(parts)

    def __prepare_scriptable__(self):
        raise RuntimeError("a metricc loss cannot be compiled with torch.jit.script: its forward is Python "
                           "code over a closed-form autograd.Function; use torch.compile (compile=True) instead")

    # -- the running estimate's state -------------------------------------------------------------

    def _identity(self):
        """A fingerprint of what the running estimate's rates mean: the metric, task, classes, thresholds."""
        plan = self.plan
        return _fingerprint(f"{self.definition.name}|{self.definition.expression}|{plan.task}|{plan.num_classes}|"
                            f"{plan.thresholds}")

    def _apply(self, fn, recurse=True):
        """.half(), .float(), .to(dtype) keep the running estimate in float64 (the precision it accumulates in);
        .to(device) moves it."""
        if self.plan.estimator != "running":
            return super()._apply(fn, recurse)
        kept = {name: self._buffers[name] for name in ("running_rates", "running_weight")}
        result = super()._apply(fn, recurse)
        for name, before in kept.items():
            after = self._buffers[name]
            if after.dtype != before.dtype:
                self._buffers[name] = before.to(device=after.device)
        return result

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if self.plan.estimator == "running":
            problem = self._check_running_state(state_dict, prefix)
            if problem is not None:
                error_msgs.append(f"{prefix or 'the loss'}: {problem}")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if f"{prefix}running_metric" not in state_dict and f"{prefix}running_metric" in missing_keys:
            missing_keys.remove(f"{prefix}running_metric")  # a checkpoint from before the fingerprint

    def _check_running_state(self, state_dict, prefix):
        """Why a running estimate cannot be loaded, or None: it must be this metric's, finite, non-negative,
        and its rates consistent (each column's four rates sum to the estimate's weight, at most 1)."""
        metric = state_dict.get(f"{prefix}running_metric")
        if metric is not None and int(metric) != self._identity():
            return (f"this running estimate belongs to another metric, task, class count or thresholds than "
                    f"{self.definition.name!r} ({self.definition.expression}); load it into the loss it was saved from")
        rates, total = state_dict.get(f"{prefix}running_rates"), state_dict.get(f"{prefix}running_weight")
        if rates is None or total is None:
            return None  # torch reports the missing keys
        rates, total = rates.double(), total.double()
        if not (bool(torch.isfinite(rates).all()) and bool(torch.isfinite(total).all())):
            return "running_rates and running_weight must be finite"
        if bool((rates < 0).any()) or not 0 <= float(total) <= 1:
            return "running_rates must be non-negative and running_weight in [0, 1]"
        if rates.dim() and rates.shape[0] == 4:
            sums = rates.sum(0)
            tolerance = 1e-9 * max(1.0, float(total))
            if bool(((sums - total).abs() > tolerance).any()):
                return ("inconsistent running_rates: each (class, threshold) column's four rates must sum to "
                        "running_weight, as the estimator writes them")
        return None


_FUNCTIONAL_MODULES = {}  # (loss class, options) -> the module a functional form reuses
_FUNCTIONAL_LIMIT = 64


def functional_loss(loss_class, input, target, weight, options):
    """``loss_class(**options)(input, target, weight)`` with the module built once per distinct options (a
    module per call costs more than the loss at small batches). Options that keep state across calls
    (``estimator="running"``, also as the class's default) are refused: the state would be shared by every
    caller; build the module. Options that cannot be hashed (a tensor of class weights) build a module per call."""
    try:
        key = (loss_class, tuple(sorted((name, tuple(value) if isinstance(value, list) else value)
                                        for name, value in options.items())))
        module = _FUNCTIONAL_MODULES.get(key)
    except TypeError:  # an unhashable option
        key, module = None, None
    if module is None:
        module = loss_class(**options)
        if module.plan.estimator != "batch":
            raise ValueError(f"estimator={module.plan.estimator!r} keeps a running estimate across calls, which a "
                             f"functional form cannot own: build the module once, loss_fn = "
                             f"{loss_class.__name__}(...), and call it")
        if key is not None:
            if len(_FUNCTIONAL_MODULES) >= _FUNCTIONAL_LIMIT:
                _FUNCTIONAL_MODULES.pop(next(iter(_FUNCTIONAL_MODULES)))
            _FUNCTIONAL_MODULES[key] = module
    return module(input, target, weight)


# The option checks: one owner, here (a standalone module must carry them); emit.py and the API call them.


def check_flag(name, value):
    """A boolean option is True or False: 1 or "false" would silently mean something else."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_momentum(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"momentum must be a number in [0, 1), got {value!r}")



def _check_num_labels(task, num_classes, num_labels):
    """``num_labels`` (torchmetrics' and Hugging Face's name for multi-label) as num_classes."""
    if num_labels is None:
        return num_classes
    if task != "multilabel":
        raise ValueError(f"num_labels is the number of labels of task='multilabel'; task={task!r} takes num_classes")
    if num_classes is not None and num_classes != num_labels:
        raise ValueError(f"num_labels={num_labels!r} and num_classes={num_classes!r} disagree; pass one of them")
    return num_labels


def check_task(task, num_classes, average, class_weights):
    """The task, class count, average and class weights checked together; returns them normalized."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "binary":
        if num_classes not in (None, 1) or average is not None or class_weights is not None:
            raise ValueError("num_classes, average and class_weights apply to task='multiclass' or "
                             "task='multilabel'; task='binary' has one class")
        return task, 1, None, None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"task={task!r} needs num_classes, a whole number of at least 2, got {num_classes!r}")
    if isinstance(class_weights, str):
        if class_weights not in CLASS_WEIGHT_RULES:
            raise ValueError(f"class_weights must be one weight per class or one of {tuple(CLASS_WEIGHT_RULES)}, "
                             f"got {class_weights!r}")
        if average not in (None, "micro"):
            raise ValueError(f"class_weights={class_weights!r} weighs each class's entries and sums them over classes "
                             f"before the metric (generalized Dice): leave average unset, not {average!r}")
        return task, num_classes, "micro", class_weights
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


def check_zero_division(value):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"zero_division must be a finite number (the metric's value on batches where it is "
                         f"undefined) or None (let NaN through), got {value!r}")


def _compile_function(function, eager):
    """torch.compile(function), or ``eager`` (the same call on the eager route) where the compiler is unavailable
    or fails. A check compiled in as _assert_async fails as a RuntimeError; the eager call then raises its
    ValueError with the offending position."""
    compiled = torch.compile(_own_entry(function))
    state = {"fallback": False}

    def run(*args):
        if state["fallback"]:
            return eager(*args)
        try:
            return compiled(*args)
        except (ValueError, TypeError):
            raise
        except RuntimeError as exc:
            if any(phrase in str(exc) for phrase in _CHECK_PHRASES):
                return eager(*args)  # raises the check's ValueError, with where
            state["fallback"] = True
            _warn_fallback(exc)
            return eager(*args)
        except Exception as exc:  # a compiler that is missing or fails (no C++ toolchain, ...)
            state["fallback"] = True
            _warn_fallback(exc)
            return eager(*args)

    return run


_ENTRIES = [0]  # compiled entries made so far, for their names


def _own_entry(function):
    """``function`` behind an entry with its own code object. torch.compile keeps its cache, and its limit of
    recompiles (8), per code object: every compiled loss shares MetricLoss._call, so the ninth loss (or kind
    of input) would silently run uncompiled; each loss's entry gets its own."""
    def entry(input, target, weight, route):
        return function(input, target, weight, route)

    _ENTRIES[0] += 1
    code = entry.__code__.replace(co_name=f"metricc_compiled_call_{_ENTRIES[0]}")
    return type(entry)(code, entry.__globals__, code.co_name, entry.__defaults__, entry.__closure__)


_CHECK_PHRASES = ("target must hold", "must each sum to 1", "from_logits=False expects", "weight must be non-negative")


def _warn_fallback(exc):
    warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                  "running the eager code instead", CompileFallbackWarning, stacklevel=4)
