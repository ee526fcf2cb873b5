"""Independent references the tests compare metricc against.

Nothing here imports metricc: a test states what it compiles (the metric's text or catalog name, the
relaxation, the direction, the thresholds) and passes the same statement to this module, so a mistake
in parsing, option resolution, derivation or code generation cannot cancel out on both sides.

* :class:`ReferenceMetric` evaluates the metric's *text* (catalog names are read from
  ``grammar/catalog.toml`` here, with tomllib) with one operation per syntax node, in torch (for
  autograd) or in 50-digit mpmath with forward-mode derivatives (:class:`Dual`).
* :class:`Relaxation` holds a relaxation's parameters as the papers state them; :func:`soft_pair`
  gives ŷ and 1 − ŷ in torch, each as its own value (the complement never as a difference that
  cancels), and :func:`mp_soft_pair` the same in mpmath with its slope.
* :func:`autograd_loss` is the loss written the obvious way: four direct sums, the metric of the text at
  them (in 50 digits, with its exact partial derivatives), autograd through the sums.
* :func:`mp_reference` is the loss and its gradient in 50-digit arithmetic, for degenerate batches.
* :func:`hard_confusion` counts a hard confusion matrix.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import operator
import tomllib
from pathlib import Path

import mpmath
import torch

CATALOG_FILE = Path(__file__).resolve().parent.parent / "grammar" / "catalog.toml"
DIGITS = 50
CONFUSION = ("TP", "FN", "FP", "TN")


# ---------------------------------------------------------------------------------------------
# The catalog, read from its file


@functools.cache
def catalog_entries() -> dict[str, dict]:
    """``{name: {"expression", "direction", "params"}}`` straight from grammar/catalog.toml.

    Metrics over the threshold curve (``curve_area``/``curve_sum``: AUROC, average precision) are left
    out: this oracle evaluates a metric of one confusion matrix; tests/test_curves.py has their references.
    """
    with CATALOG_FILE.open("rb") as handle:
        table = tomllib.load(handle)
    return {name: {"expression": entry["expression"], "direction": entry["direction"],
                   "params": dict(entry.get("params", {}))} for name, entry in table.items()
            if not entry["expression"].startswith(("curve_area(", "curve_sum("))}


def catalog_direction(name: str) -> str:
    return catalog_entries()[name]["direction"]


# ---------------------------------------------------------------------------------------------
# 50-digit numbers with forward-mode derivatives


class Undefined(ArithmeticError):
    """The metric has no value here (0/0, a root or log of a negative number, ...)."""


def _finite(x) -> bool:
    return bool(mpmath.isfinite(x))


def _quotient(a, b):
    """a/b for derivative parts, b ≥ 0: 0 where a = 0 (no change along that direction), ±inf where only
    b = 0 (a derivative may be infinite where the value is not, as for a root at 0)."""
    if a == 0:
        return mpmath.mpf(0)
    if b == 0:
        return mpmath.inf * mpmath.sign(a) if _finite(a) else mpmath.nan
    return a / b


class Dual:
    """A 50-digit number with its derivatives along a few directions (forward-mode differentiation).

    The value is exact to the working precision; a derivative may be ±inf or nan where the function is
    not differentiable (a root at 0). Operations that leave the real numbers raise :class:`Undefined`.
    """

    __slots__ = ("value", "grad")

    def __init__(self, value, grad=()):
        self.value = mpmath.mpf(value)
        self.grad = tuple(grad)

    @staticmethod
    def constant(value, size):
        return Dual(value, (mpmath.mpf(0),) * size)

    def _lift(self, other):
        return other if isinstance(other, Dual) else Dual.constant(other, len(self.grad))

    def __add__(self, other):
        other = self._lift(other)
        return Dual(self.value + other.value, (a + b for a, b in zip(self.grad, other.grad)))

    __radd__ = __add__

    def __neg__(self):
        return Dual(-self.value, (-a for a in self.grad))

    def __pos__(self):
        return self

    def __sub__(self, other):
        return self + (-self._lift(other))

    def __rsub__(self, other):
        return self._lift(other) - self

    def __mul__(self, other):
        other = self._lift(other)
        return Dual(self.value * other.value,
                    (_product(a, other.value) + _product(self.value, b) for a, b in zip(self.grad, other.grad)))

    __rmul__ = __mul__

    def __truediv__(self, other):
        other = self._lift(other)
        if other.value == 0:
            raise Undefined("division by zero")
        value = self.value / other.value
        return Dual(value, ((a - _product(value, b)) / other.value for a, b in zip(self.grad, other.grad)))

    def __rtruediv__(self, other):
        return self._lift(other) / self

    def __pow__(self, exponent):
        exponent = self._lift(exponent)
        if any(g != 0 for g in exponent.grad):  # x**y with y varying: exp(y·log x)
            return exp(exponent * log(self))
        c = exponent.value
        if self.value == 0 and c < 0:
            raise Undefined("0 to a negative power")
        if self.value < 0 and c != mpmath.floor(c):
            raise Undefined("a negative number to a fractional power")
        value = mpmath.power(self.value, c)
        if c == 0:
            return Dual.constant(1, len(self.grad))
        slope = c * mpmath.power(self.value, c - 1) if self.value != 0 or c >= 1 else mpmath.inf
        return Dual(value, (_product(slope, a) for a in self.grad))

    def __rpow__(self, base):
        return self._lift(base) ** self

    def __float__(self):
        return float(self.value)

    def __repr__(self):
        return f"Dual({mpmath.nstr(self.value, 20)}, {[mpmath.nstr(g, 20) for g in self.grad]})"


def _product(a, b):
    """a·b where 0·inf counts as 0: a zero derivative of an inner function wins over an infinite outer slope
    only where the inner one is exactly constant (as in the chain rule for a constant direction)."""
    if a == 0 or b == 0:
        return mpmath.mpf(0)
    return a * b


def sqrt(x: Dual) -> Dual:
    if x.value < 0:
        raise Undefined("square root of a negative number")
    root = mpmath.sqrt(x.value)
    return Dual(root, (_quotient(a, 2 * root) for a in x.grad))


def log(x: Dual) -> Dual:
    if x.value <= 0:
        raise Undefined("logarithm of a number that is not positive")
    return Dual(mpmath.log(x.value), (a / x.value for a in x.grad))


def exp(x: Dual) -> Dual:
    value = mpmath.exp(x.value)
    return Dual(value, (_product(value, a) for a in x.grad))


def absolute(x: Dual) -> Dual:
    sign = mpmath.sign(x.value)
    return Dual(abs(x.value), ((_product(sign, a) if sign != 0 else mpmath.nan) for a in x.grad))


def sin(x: Dual) -> Dual:
    slope = mpmath.cos(x.value)
    return Dual(mpmath.sin(x.value), (_product(slope, a) for a in x.grad))


def x_minus_sin(x: Dual) -> Dual:
    """x − sin x without cancellation (extra precision where x is small); slope 1 − cos x = 2·sin²(x/2)."""
    extra = 3 * max(0, -int(mpmath.mag(x.value))) + 20 if x.value != 0 else 0
    with mpmath.extraprec(extra):
        value = x.value - mpmath.sin(x.value)
        slope = 2 * mpmath.sin(x.value / 2) ** 2
    return Dual(+value, (_product(+slope, a) for a in x.grad))


def sigmoid(x: Dual) -> Dual:
    """1/(1 + e^−x), exact where it is close to 0 or 1 (mpmath's exponent range is unbounded)."""
    e = mpmath.exp(-x.value)
    value = 1 / (1 + e)
    slope = e / (1 + e) ** 2
    return Dual(value, (_product(slope, a) for a in x.grad))


# ---------------------------------------------------------------------------------------------
# The metric, from its text


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}


class _TorchFunctions:
    sqrt, log, exp, abs = torch.sqrt, torch.log, torch.exp, torch.abs

    @staticmethod
    def constant(value, like):
        return torch.tensor(float(value), dtype=like.dtype)

    @staticmethod
    def exponent(value):
        return value.detach()


class _DualFunctions:
    sqrt, log, exp, abs = staticmethod(sqrt), staticmethod(log), staticmethod(exp), staticmethod(absolute)

    @staticmethod
    def constant(value, like):
        return Dual.constant(value, len(like.grad))

    @staticmethod
    def exponent(value):
        return value


class ReferenceMetric:
    """A metric evaluated straight from its text, one operation per syntax node.

    It shares no code with metricc: the text goes through Python's ``ast`` and a small tree walker.
    Called with torch tensors it builds an autograd graph; called with :class:`Dual` numbers it gives
    the 50-digit value and the partial derivatives. Every branch decision (the sign under ``abs``, the
    winner of ``min``/``max``) is recorded, so a caller can tell whether a batch sits on a kink, where
    one-sided derivatives differ and any subgradient is right.

    Args:
        text: an expression over TP FN FP TN (and P N PP PN n), or a catalog name.
        params: parameter values; a catalog name takes its defaults from the catalog file.
    """

    def __init__(self, text: str, params: dict | None = None):
        text, params = text.strip(), dict(params or {})
        entry = catalog_entries().get(text)
        self.direction = None
        if entry is not None:
            text, params = entry["expression"], {**entry["params"], **params}
            self.direction = entry["direction"]
        self.text = text
        self.tree = ast.parse(text, mode="eval").body
        self.params = params
        self.decisions, self.ties = [], False

    @classmethod
    def of(cls, expression) -> ReferenceMetric:
        """From a ``metricc.testing.MetricExpression`` (text, params)."""
        text, params = expression
        return cls(text, params)

    def __call__(self, tp, fn, fp, tn):
        self.decisions, self.ties = [], False
        functions = _DualFunctions if isinstance(tp, Dual) else _TorchFunctions
        names = {"TP": tp, "FN": fn, "FP": fp, "TN": tn, "P": tp + fn, "N": fp + tn, "PP": tp + fp, "PN": fn + tn,
                 "n": tp + fn + fp + tn}
        return self._evaluate(self.tree, names, tp, functions)

    def _evaluate(self, node, names, like, functions):
        if isinstance(node, ast.Constant):
            return functions.constant(node.value, like)
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            return functions.constant(self.params[node.id], like)
        if isinstance(node, ast.UnaryOp):
            value = self._evaluate(node.operand, names, like, functions)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left = self._evaluate(node.left, names, like, functions)
            right = self._evaluate(node.right, names, like, functions)
            if isinstance(node.op, ast.Pow):
                right = functions.exponent(right)
            return _BINARY[type(node.op)](left, right)
        assert isinstance(node, ast.Call), ast.dump(node)
        arguments = [self._evaluate(a, names, like, functions) for a in node.args]
        name = node.func.id
        if name in ("sqrt", "log", "exp", "abs"):
            if name == "abs":
                self._decide([float(arguments[0]), 0.0])
            return getattr(functions, name)(arguments[0])
        self._decide([float(a) for a in arguments])
        pick = min if name == "min" else max
        if functions is _DualFunctions:
            return pick(arguments, key=lambda a: a.value)
        result = arguments[0]
        for argument in arguments[1:]:
            result = (torch.minimum if name == "min" else torch.maximum)(result, argument)
        return result

    def _decide(self, values):
        order = sorted(range(len(values)), key=values.__getitem__)
        self.decisions.append(tuple(order))
        self.ties |= len(set(values)) < len(values)


def off_kinks(metric: ReferenceMetric, counts, relative: float) -> bool:
    """True when no branch decision changes as the counts move by ``relative`` times the batch size."""
    metric(*counts)
    decisions, ties = metric.decisions, metric.ties
    if ties:
        return False
    size = float(sum(counts))
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        shifts = relative * size * (2 * torch.rand(4, generator=generator, dtype=torch.float64) - 1)
        metric(*((c + s).clamp_min(0) for c, s in zip(counts, shifts)))
        if metric.decisions != decisions or metric.ties:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Relaxations, from the papers


@dataclasses.dataclass(frozen=True)
class Relaxation:
    """A relaxation's parameters as the papers state them.

    kind: ``"sigmoid"`` (AnyLoss's amplifier σ(L·(p − t))), ``"linear"`` (the soft-set paper's
    five-point H^l, eq. 5), ``"identity"`` (ŷ = p) or ``"sol"`` (the CDF of a threshold uniform or
    raised-cosine on [μ − δ, μ + δ], Marchetti et al.).
    """

    kind: str
    L: float = 73.0
    threshold: float | None = 0.5
    delta: float = 0.2
    distribution: str = "uniform"

    # The names a user writes, with the defaults of the papers (AnyLoss: L = 73, t = 1/2; soft sets:
    # δ = 0.2; SOL: uniform on [0, 1]).
    @staticmethod
    def from_spec(spec: str) -> Relaxation:
        name, _, arguments = spec.partition(":")
        options = dict(item.split("=") for item in arguments.split(",") if item)
        name = {"anyloss": "sigmoid", "softset": "linear", "probabilistic": "identity",
                "score_oriented": "sol"}.get(name, name)
        if name == "sigmoid":
            return Relaxation("sigmoid", L=float(options.get("L", 73.0)),
                              threshold=float(options.get("threshold", 0.5)))
        if name == "linear":
            return Relaxation("linear", threshold=float(options.get("threshold", 0.5)),
                              delta=float(options.get("delta", 0.2)))
        if name == "identity":
            return Relaxation("identity", threshold=None)
        if name == "sol":
            return Relaxation("sol", threshold=float(options.get("mu", 0.5)), delta=float(options.get("delta", 0.5)),
                              distribution=options.get("distribution", "uniform"))
        raise ValueError(spec)

    @staticmethod
    def of(instance) -> Relaxation:
        """From a metricc.relax instance a test built itself (its parameters, not what a loss resolved)."""
        kind = type(instance).__name__
        if kind == "Sigmoid":
            return Relaxation("sigmoid", L=instance.L, threshold=instance.threshold)
        if kind == "Linear":
            return Relaxation("linear", threshold=instance.threshold, delta=instance.delta)
        if kind == "Identity":
            return Relaxation("identity", threshold=None)
        if kind == "ScoreOriented":
            return Relaxation("sol", threshold=instance.mu, delta=instance.delta,
                              distribution=instance.distribution)
        raise TypeError(instance)

    def default_thresholds(self) -> list[float]:
        return [0.5 if self.threshold is None else self.threshold]


def _linear_pieces(t, delta):
    """H^l's inner knots t ∓ t_m/2 (t_m = min(t, 1 − t)) and its three slopes."""
    tm = min(t, 1 - t)
    lo, hi = t - tm / 2, t + tm / 2
    return lo, hi, delta / lo, (1 - 2 * delta) / tm, delta / (1 - hi)


def _x_minus_sin_torch(x):
    """x − sin x, with its Taylor series where x < 1 (x³/3! − x⁵/5! + ..., 12 terms) to avoid cancellation."""
    series = torch.zeros_like(x)
    for k in range(12, 0, -1):  # Horner in x²: Σ (−1)^(k+1) x^(2k+1)/(2k+1)!
        series = series * x * x + (-1) ** (k + 1) / math.factorial(2 * k + 1)
    series = series * x ** 3
    small = x < 1
    return torch.where(small, series, x - torch.sin(torch.where(small, torch.ones_like(x), x)))


def soft_pair(relaxation: Relaxation, p, q, t):
    """(ŷ, 1 − ŷ) in torch from p and q = 1 − p (each computed without cancellation by the caller)."""
    kind = relaxation.kind
    if kind == "identity":
        return p, q
    if kind == "sigmoid":
        a = relaxation.L * (p - t)
        return 1 / (1 + torch.exp(-a)), 1 / (1 + torch.exp(a))
    if kind == "linear":
        lo, hi, m1, m2, m3 = _linear_pieces(t, relaxation.delta)
        d = relaxation.delta
        middle = 0.5 + (p - t) * m2
        predicted = torch.where(p < lo, p * m1, torch.where(p > hi, 1 - d + (p - hi) * m3, middle))
        complement = torch.where(p < lo, 1 - p * m1, torch.where(p > hi, q * m3, 1 - middle))
        return predicted, complement
    # SOL: with w = (p − (μ − δ))/δ and w' = (μ + δ − p)/δ = (q − (1 − μ − δ))/δ, both clamped to [0, 2]:
    # uniform ŷ = w/2, 1 − ŷ = w'/2; raised cosine ŷ = (πw − sin πw)/(2π), the same in w' for 1 − ŷ.
    mu, delta = t, relaxation.delta
    w = ((p - (mu - delta)) / delta).clamp(0, 2)
    w_complement = ((q - (1 - mu - delta)) / delta).clamp(0, 2)
    if relaxation.distribution == "uniform":
        return w / 2, w_complement / 2
    return (_x_minus_sin_torch(math.pi * w) / (2 * math.pi),
            _x_minus_sin_torch(math.pi * w_complement) / (2 * math.pi))


def mp_soft_pair(relaxation: Relaxation, p: Dual, q: Dual, t):
    """(ŷ, 1 − ŷ) as Dual numbers (value and slope), from p and q = 1 − p, in 50-digit arithmetic."""
    kind = relaxation.kind
    t = None if t is None else mpmath.mpf(t)
    if kind == "identity":
        return p, q
    if kind == "sigmoid":
        a = (p - t) * relaxation.L
        return sigmoid(a), sigmoid(-a)
    if kind == "linear":
        lo, hi, m1, m2, m3 = _linear_pieces(t, mpmath.mpf(relaxation.delta))
        if p.value < lo:
            return p * m1, 1 - p * m1
        if p.value > hi:
            return (p - hi) * m3 + (1 - mpmath.mpf(relaxation.delta)), q * m3
        middle = (p - t) * m2 + mpmath.mpf(1) / 2
        return middle, 1 - middle
    mu, delta = t, mpmath.mpf(relaxation.delta)
    pair = []
    for w in ((p - (mu - delta)) / delta, (q - (1 - mu - delta)) / delta):
        if w.value <= 0:
            w = Dual.constant(0, len(w.grad))
        elif w.value >= 2:
            w = Dual.constant(2, len(w.grad))
        if relaxation.distribution == "uniform":
            pair.append(w / 2)
        else:
            pair.append(x_minus_sin(w * mpmath.pi) / (2 * mpmath.pi))
    return tuple(pair)


# ---------------------------------------------------------------------------------------------
# The loss written the obvious way, differentiated by autograd


def probabilities(input, from_logits=True):
    """(p, q = 1 − p) as e^−softplus(−z) and e^−softplus(z): each keeps its digits where the other rounds to 1,
    and so do their autograd slopes p·q (1 − σ(z) from a rounded σ(z) would not), finite for any finite z."""
    if from_logits:
        softplus = torch.nn.functional.softplus
        return torch.exp(-softplus(-input)), torch.exp(-softplus(input))
    return input, 1 - input


def working_bits(values) -> int:
    """Bits for exact sums and differences of these numbers: 50 digits relative to the smallest of them, so
    that 1 + 4.5e-44 − 1 is 4.5e-44 to 50 digits (at a flat 50 digits it would keep 7)."""
    magnitudes = [int(mpmath.mag(mpmath.mpf(v))) for v in values if v != 0 and math.isfinite(v)]
    span = max(magnitudes) - min(magnitudes) if magnitudes else 0
    return 2 * span + 4 * DIGITS


class _ExactMetric(torch.autograd.Function):
    """The metric of four float64 entries, evaluated from its text in 50 digits, with its 50-digit partial
    derivatives as the backward: autograd differentiates the sums, the metric itself is exact at them. (The
    text evaluated in float64 can cancel where its own order of operations does, (FP − n)/TN with TN ≈ 1e-11,
    and the reference would then be the inaccurate side.) NaN where the metric is undefined."""

    @staticmethod
    def forward(ctx, metric, *entries):
        with mpmath.workprec(working_bits([e.item() for e in entries])):
            seeds = [Dual(mpmath.mpf(e.item()), tuple(int(i == k) for i in range(4))) for k, e in enumerate(entries)]
            try:
                result = metric(*seeds)
                value, partials = float(result.value), [float(g) for g in result.grad]
            except (Undefined, ZeroDivisionError):
                value, partials = math.nan, [math.nan] * 4
        ctx.partials = partials
        return entries[0].new_tensor(value)

    @staticmethod
    def backward(ctx, grad):
        return (None, *(grad * partial for partial in ctx.partials))


def exact_metric(metric: ReferenceMetric, tp, fn, fp, tn):
    """:class:`_ExactMetric`: the metric's 50-digit value at the entries, differentiable by autograd."""
    return _ExactMetric.apply(metric, tp, fn, fp, tn)


def tied(predicted, complement):
    """The complement's value, with the derivative −dŷ: d(1 − ŷ) = −dŷ exactly. Autograd then forms a sample's
    derivative as (f_TP − f_FN)·dŷ in one subtraction, instead of f_TP·dŷ + f_FN·d(1 − ŷ) from two slopes
    rounded apart, which leaves noise of f_TP·ε where f_TP = f_FN are huge (P/TN with TN ≈ 1e-16)."""
    return complement.detach() + (predicted.detach() - predicted)


def autograd_loss(metric: ReferenceMetric, relaxation: Relaxation, direction: str, input, target, weight=None,
                  thresholds=None, from_logits=True, with_counts=False):
    """The mean over thresholds of 1 − f (maximize) or f (minimize), f of the four direct sums
    TP = Σ w·y·ŷ, FN = Σ w·y·(1 − ŷ), FP = Σ w·(1 − y)·ŷ, TN = Σ w·(1 − y)·(1 − ŷ)."""
    p, q = probabilities(input, from_logits)
    y = target.to(input.dtype)
    w = torch.ones_like(input) if weight is None else weight.to(input.dtype)
    losses, counts = [], []
    for t in thresholds or relaxation.default_thresholds():
        predicted, complement = soft_pair(relaxation, p, q, t)
        complement = tied(predicted, complement)
        entries = ((w * y * predicted).sum(), (w * y * complement).sum(), (w * (1 - y) * predicted).sum(),
                   (w * (1 - y) * complement).sum())
        value = exact_metric(metric, *entries)
        counts.append(entries)
        losses.append(1 - value if direction == "maximize" else value)
    loss = torch.stack(losses).mean()
    return (loss, counts) if with_counts else loss


def autograd_value_and_grad(metric, relaxation, direction, input, target, weight=None, thresholds=None,
                            from_logits=True):
    """(loss, ∂loss/∂input) of :func:`autograd_loss` in float64."""
    z = input.detach().to(torch.float64).requires_grad_(True)
    weight = None if weight is None else weight.detach().to(torch.float64)
    loss = autograd_loss(metric, relaxation, direction, z, target, weight, thresholds, from_logits)
    if not loss.requires_grad:  # a metric constant along the batch
        return loss.detach(), torch.zeros_like(z)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


# ---------------------------------------------------------------------------------------------
# The loss and its gradient in 50-digit arithmetic


@dataclasses.dataclass
class MpResult:
    """The 50-digit reference: ``loss``, ``grad`` (one mpf per sample), ``metric`` (per threshold, None where
    undefined), ``undefined`` (whether the metric was undefined at some threshold) and ``slopes`` (per sample,
    the smallest non-zero |dŷ/dinput| over the thresholds: a gradient is a factor times it)."""

    loss: mpmath.mpf
    grad: list
    metric: list
    undefined: bool
    slopes: list

    def loss_float(self) -> float:
        return float(self.loss)

    def grad_floats(self) -> list[float]:
        return [float(g) for g in self.grad]


def _representable(x, dtype) -> mpmath.mpf:
    """x rounded to ``dtype`` and back: the soft prediction a floating-point loss can hold at best (an
    entry of e^−800 is 0 in float64, and no float64 code can tell it from 0)."""
    return mpmath.mpf(torch.tensor(float(x), dtype=torch.float64).to(dtype).item())


def mp_reference(metric: ReferenceMetric, relaxation: Relaxation, direction: str, logits, target, weight=None,
                 thresholds=None, zero_division=0.0, from_logits=True, dtype=torch.float64) -> MpResult:
    """The loss and ∂loss/∂input in 50-digit arithmetic.

    The inputs are taken as the exact numbers they hold. Each sample's ŷ and 1 − ŷ are computed in 50
    digits from the papers' formulas and rounded to ``dtype`` (what any floating-point loss must store
    at best); the four entries are exact sums of those; the metric is evaluated from its text with
    forward-mode derivatives; the gradient is the chain rule through the four sums, with the slopes of
    ŷ and 1 − ŷ in 50 digits. Where the metric is undefined (0/0, ...) the value is ``zero_division``
    and the gradient 0; where its derivative along a positive (or negative) sample is not finite, such
    samples get no gradient from that threshold (the runtime's documented convention).
    """
    with mpmath.workdps(DIGITS):
        inputs = [mpmath.mpf(float(v)) for v in logits.tolist()]
        labels = [mpmath.mpf(float(v)) for v in target.tolist()]
        weights = [mpmath.mpf(1)] * len(inputs) if weight is None else [mpmath.mpf(float(v)) for v in weight.tolist()]
        thresholds = list(thresholds or relaxation.default_thresholds())
        share = mpmath.mpf(1) / len(thresholds)
        sign = -1 if direction == "maximize" else 1
        loss, grad, values, undefined = mpmath.mpf(0), [mpmath.mpf(0)] * len(inputs), [], False
        slopes = [mpmath.inf] * len(inputs)
        for t in thresholds:
            pairs = []
            for x in inputs:
                z = Dual(x, (1,))
                p, q = (sigmoid(z), sigmoid(-z)) if from_logits else (z, 1 - z)
                pairs.append(mp_soft_pair(relaxation, p, q, t))
                if pairs[-1][0].grad[0] != 0:
                    slopes[len(pairs) - 1] = min(slopes[len(pairs) - 1], abs(pairs[-1][0].grad[0]))
            terms = [[] for _ in range(4)]
            for (predicted, complement), y, w in zip(pairs, labels, weights):
                hat, rest = _representable(predicted.value, dtype), _representable(complement.value, dtype)
                for k, term in enumerate((y * hat, y * rest, (1 - y) * hat, (1 - y) * rest)):
                    terms[k].append(w * term)
            # Exact sums of the rounded terms, and the metric at them with bits to spare for cancellation.
            bits = working_bits([float(t) for entry in terms for t in entry] + [float(w) for w in weights])
            try:
                with mpmath.workprec(bits):
                    entries = [mpmath.fsum(entry) for entry in terms]
                    seeds = [Dual(e, tuple(int(i == k) for i in range(4))) for k, e in enumerate(entries)]
                    value = metric(*seeds)
                if not _finite(value.value):
                    raise Undefined("not finite")
            except (Undefined, ZeroDivisionError):
                undefined = True
                values.append(None)
                loss += share * (1 - zero_division if direction == "maximize" else zero_division)
                continue
            values.append(value.value)
            loss += share * (1 - value.value if direction == "maximize" else value.value)
            f_tp, f_fn, f_fp, f_tn = value.grad
            # A positive sample moves TP by w·dŷ and FN by w·d(1 − ŷ); a negative one FP and TN.
            for i, ((predicted, complement), y, w) in enumerate(zip(pairs, labels, weights)):
                slope, complement_slope = predicted.grad[0], complement.grad[0]
                for label_share, along, against in ((y, f_tp, f_fn), (1 - y, f_fp, f_tn)):
                    if label_share == 0 or w == 0:
                        continue
                    if not _finite(along - against):
                        continue  # no finite derivative along such a sample: no gradient
                    derivative = _product(along, slope) + _product(against, complement_slope)
                    grad[i] += sign * share * w * label_share * derivative
        return MpResult(loss, grad, values, undefined, [s if s != mpmath.inf else mpmath.mpf(0) for s in slopes])


# ---------------------------------------------------------------------------------------------
# Hard confusion matrices


def hard_confusion(predicted: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float, float]:
    predicted, target = predicted.bool(), target.bool()
    return (float((predicted & target).sum()), float((~predicted & target).sum()),
            float((predicted & ~target).sum()), float((~predicted & ~target).sum()))


# ---------------------------------------------------------------------------------------------
# Multi-class and multi-label: one-vs-rest direct sums per class, averaged as scikit-learn does


def class_soft_pairs(task: str, relaxation: Relaxation, logits, threshold, from_logits=True):
    """(ŷ, 1 − ŷ), each (N, C). Multi-class: ŷ = softmax(z) (identity) or softmax(L/2 · softmax(z)) (the
    amplifier), from probability rows p: ŷ = p or softmax(L/2 · p); 1 − ŷ_c as the other classes' share
    Σ_{k≠c} ŷ_k. Multi-label: each column as a binary one."""
    if task == "multilabel":
        p, q = probabilities(logits, from_logits)
        return soft_pair(relaxation, p, q, threshold)
    p = torch.softmax(logits, -1) if from_logits else logits
    if relaxation.kind == "identity":
        predicted = p
    else:
        predicted = torch.softmax(p * (relaxation.L / 2), -1)
    classes = logits.shape[1]
    complement = torch.stack([predicted[:, [k for k in range(classes) if k != c]].sum(-1) for c in range(classes)],
                             -1)
    return predicted, complement


def class_autograd_loss(metric: ReferenceMetric, relaxation: Relaxation, direction: str, logits, target, *,
                        task: str, average: str = "macro", weight=None, class_weights=None, thresholds=None,
                        from_logits=True):
    """The loss of a (N, C) batch: the metric of each class's one-vs-rest direct sums, averaged over classes
    as scikit-learn's ``average=`` (macro: the mean; weighted: by support Σ w·y; micro: the metric of the
    summed sums) or with ``class_weights``, then over thresholds (multi-label)."""
    classes = logits.shape[1]
    y = torch.nn.functional.one_hot(target, classes).to(logits.dtype) if target.dim() == 1 else target.to(logits.dtype)
    w = (torch.ones(logits.shape[0], dtype=logits.dtype) if weight is None else weight.to(logits.dtype))[:, None]
    positives, negatives = w * y, w * (1 - y)
    losses = []
    for t in (thresholds or relaxation.default_thresholds()) if task == "multilabel" else [None]:
        predicted, complement = class_soft_pairs(task, relaxation, logits, t, from_logits)
        complement = tied(predicted, complement)
        entries = [(positives * predicted).sum(0), (positives * complement).sum(0), (negatives * predicted).sum(0),
                   (negatives * complement).sum(0)]
        if average == "micro":
            value = exact_metric(metric, *(e.sum() for e in entries))
            losses.append(1 - value if direction == "maximize" else value)
            continue
        values = torch.stack([exact_metric(metric, *(e[c] for e in entries)) for c in range(classes)])
        if class_weights is not None:
            shares = torch.as_tensor(class_weights, dtype=logits.dtype)
        elif average == "weighted":
            shares = positives.sum(0)
        else:
            shares = torch.ones(classes, dtype=logits.dtype)
        shares = shares / shares.sum()
        losses.append(((1 - values if direction == "maximize" else values) * shares).sum())
    return torch.stack(losses).mean()
