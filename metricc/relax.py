"""Relaxations: how a probability p becomes a soft prediction ŷ in [0, 1].

A hard classifier predicts ŷ = [p > t]; its confusion matrix has no useful
gradient. A relaxation replaces the step with a smooth (or piecewise-linear)
function ŷ(p; t). Each relaxation here is the symbolic side (sympy: ŷ, dŷ/dp,
formulas for derivations and docs) of a class in :mod:`metricc.runtime`, which
computes it in PyTorch; :meth:`Relaxation.runtime` gives that object, and its
``repr`` is what a generated module writes.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sympy

from . import runtime
from .runtime import Probabilistic, SoftmaxAmplifier  # annotations: a method named runtime shadows the module

if TYPE_CHECKING:
    import torch

__all__ = [
    "Relaxation", "Sigmoid", "Linear", "Identity", "ScoreOriented", "resolve_relaxation",
    "valid_amplifier_range", "saturation_limit", "RELAXATION_NAMES",
]

_p = sympy.Symbol("p", real=True)
_t = sympy.Symbol("t", real=True)


def _number(value, what: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{owner}: {what} must be a finite number, got {value!r}")
    return float(value)


class Relaxation(abc.ABC):
    """Maps a probability p in [0, 1] to a soft prediction ŷ in [0, 1], non-decreasing."""

    #: short name used in generated docstrings and the CLI
    kind: str = ""

    @property
    @abc.abstractmethod
    def threshold(self) -> float | None:
        """The decision threshold this relaxation approximates (None: no threshold)."""

    @abc.abstractmethod
    def with_threshold(self, threshold: float) -> Relaxation:
        """The same relaxation around another threshold (for threshold averaging)."""

    @abc.abstractmethod
    def symbolic(self, p: sympy.Symbol = _p, t: sympy.Expr | None = None) -> sympy.Expr:
        """ŷ(p) as a sympy expression; ``t`` replaces the threshold when given."""

    def symbolic_derivative(self, p: sympy.Symbol = _p, t: sympy.Expr | None = None) -> sympy.Expr:
        """dŷ/dp, derived by sympy from :meth:`symbolic`."""
        return sympy.diff(self.symbolic(p, t), p)

    @abc.abstractmethod
    def runtime(self) -> Any:  # each subclass names its runtime class
        """The :mod:`metricc.runtime` object that computes this relaxation (binary and multi-label)."""

    def multiclass_runtime(self) -> SoftmaxAmplifier | Probabilistic | None:
        """The runtime relaxation for ``task="multiclass"``, or None where this relaxation has no multi-class form."""
        return None

    @abc.abstractmethod
    def formula(self, at: str | None = None) -> str:
        """One line of text describing ŷ(p) for docstrings; ``at`` names the threshold instead of its value
        (``"each t_k"`` where the loss is evaluated at several thresholds)."""

    @abc.abstractmethod
    def derivative_formula(self) -> str:
        """One line of text describing dŷ/dp for docstrings."""

    @abc.abstractmethod
    def latex_formula(self, at: str | None = None) -> str:
        """ŷ(p) as LaTeX, for ``metricc derive --latex``; ``at`` as in :meth:`formula`, in LaTeX."""

    def spec(self) -> str:
        """Text that :func:`resolve_relaxation` reads back to an equal relaxation."""
        fields = ",".join(f"{f.name}={getattr(self, f.name)!r}".replace("'", "")
                          for f in dataclasses.fields(self))  # type: ignore[arg-type]  # subclasses are dataclasses
        return f"{self.kind}:{fields}" if fields else self.kind


@dataclasses.dataclass(frozen=True)
class Sigmoid(Relaxation):
    """ŷ = σ(L·(p − t)): AnyLoss's amplifier (t = 0.5), the soft-set paper's H^s.

    Args:
        L: amplifying scale. AnyLoss uses 73, the largest integer that does not
            round ŷ to exactly 0 or 1 in float64 for p in [1e-15, 1 - 1e-15]
            (see :func:`valid_amplifier_range`; float32 saturates much earlier).
        threshold: the decision threshold t, in (0, 1).
    """

    L: float = 73.0
    threshold: float = 0.5
    kind = "sigmoid"

    def __post_init__(self):
        object.__setattr__(self, "L", _number(self.L, "L", "Sigmoid"))
        object.__setattr__(self, "threshold", _number(self.threshold, "threshold", "Sigmoid"))
        if self.L <= 0:
            raise ValueError(f"Sigmoid: L must be positive, got {self.L}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"Sigmoid: threshold must lie in (0, 1), got {self.threshold}")

    def with_threshold(self, threshold: float) -> Sigmoid:
        return Sigmoid(L=self.L, threshold=threshold)

    def symbolic(self, p: sympy.Symbol = _p, t: sympy.Expr | None = None) -> sympy.Expr:
        t = self.threshold if t is None else t
        return 1 / (1 + sympy.exp(-sympy.Float(self.L) * (p - t)))

    def formula(self, at: str | None = None) -> str:
        return f"ŷ = σ(L·(p − t)) with L = {self.L:g}, t = {at or f'{self.threshold:g}'}"

    def derivative_formula(self) -> str:
        return "dŷ/dp = L·σ(a)·σ(−a), a = L·(p − t)"

    def latex_formula(self, at: str | None = None) -> str:
        return rf"\hat y = \sigma\big(L\,(p - t)\big),\quad L = {self.L:g},\ t = {at or f'{self.threshold:g}'}"

    def runtime(self) -> runtime.SigmoidAmplifier:
        return runtime.SigmoidAmplifier(scale=self.L, threshold=self.threshold)

    def multiclass_runtime(self) -> SoftmaxAmplifier:
        """ŷ = softmax(L/2 · p): σ(L·(p₁ − 1/2)) for two classes, the amplifier's multi-class form."""
        return runtime.SoftmaxAmplifier(scale=self.L)


@dataclasses.dataclass(frozen=True)
class Linear(Relaxation):
    """The soft-set paper's five-point piecewise-linear Heaviside H^l (eq. 5).

    Three segments meet at (t − t_m/2, δ) and (t + t_m/2, 1 − δ), with
    t_m = min(t, 1 − t); ŷ(0) = 0, ŷ(t) = 1/2, ŷ(1) = 1. Every slope is positive,
    so the gradient never vanishes on [0, 1].

    Args:
        threshold: the decision threshold t, in (0, 1).
        delta: ŷ at the inner knots, in (0, 0.5); the paper uses 0.2 for t = 0.5.
    """

    threshold: float = 0.5
    delta: float = 0.2
    kind = "linear"

    def __post_init__(self):
        object.__setattr__(self, "threshold", _number(self.threshold, "threshold", "Linear"))
        object.__setattr__(self, "delta", _number(self.delta, "delta", "Linear"))
        if not 0 < self.threshold < 1:
            raise ValueError(f"Linear: threshold must lie in (0, 1), got {self.threshold}")
        if not 0 < self.delta < 0.5:
            raise ValueError(f"Linear: delta must lie in (0, 0.5), got {self.delta}")

    def with_threshold(self, threshold: float) -> Linear:
        return Linear(threshold=threshold, delta=self.delta)

    def symbolic(self, p: sympy.Symbol = _p, t: sympy.Expr | None = None) -> sympy.Expr:
        t = sympy.Float(self.threshold) if t is None else t
        delta = sympy.Float(self.delta)
        half = sympy.Min(t, 1 - t) / 2
        lo, hi = t - half, t + half
        return sympy.Piecewise(
            (p * delta / lo, p < lo),
            (1 - delta + (p - hi) * delta / (1 - hi), p > hi),
            (sympy.Rational(1, 2) + (p - t) * (1 - 2 * delta) / (2 * half), True),
        )

    def formula(self, at: str | None = None) -> str:
        return (f"ŷ = five-point piecewise-linear Heaviside H^l(p; t, δ) with t = {at or f'{self.threshold:g}'}, "
                f"δ = {self.delta:g}")

    def latex_formula(self, at: str | None = None) -> str:
        return (rf"\hat y = H^l(p;\,t,\delta)\ \text{{(piecewise linear, eq. 5)}},"
                rf"\quad t = {at or f'{self.threshold:g}'},\ \delta = {self.delta:g}")

    def derivative_formula(self) -> str:
        return ("dŷ/dp = δ/(t − t_m/2) below t − t_m/2, (1 − 2δ)/t_m between, δ/(1 − t − t_m/2) above "
                "t + t_m/2; t_m = min(t, 1 − t)")

    def runtime(self) -> runtime.PiecewiseLinear:
        return runtime.PiecewiseLinear(threshold=self.threshold, delta=self.delta)


@dataclasses.dataclass(frozen=True)
class Identity(Relaxation):
    """ŷ = p: the probabilistic confusion matrix (expected counts under p)."""

    kind = "identity"

    @property
    def threshold(self) -> None:
        return None

    def with_threshold(self, threshold: float) -> Identity:
        raise ValueError("Identity has no threshold, so thresholds= cannot average over it; "
                         "use Sigmoid, Linear or ScoreOriented")

    def symbolic(self, p: sympy.Symbol = _p, t: sympy.Expr | None = None) -> sympy.Expr:
        return p

    def formula(self, at: str | None = None) -> str:
        return "ŷ = p (probabilistic confusion matrix)"

    def derivative_formula(self) -> str:
        return "dŷ/dp = 1"

    def latex_formula(self, at: str | None = None) -> str:
        return r"\hat y = p"

    def runtime(self) -> runtime.Probabilistic:
        return runtime.Probabilistic()

    def multiclass_runtime(self) -> Probabilistic:
        """ŷ = softmax(z): the expected confusion matrix of the predicted class distribution."""
        return runtime.Probabilistic()


@dataclasses.dataclass(frozen=True)
class ScoreOriented(Relaxation):
    """Marchetti et al.'s score-oriented loss: ŷ = F(p), the CDF of a random threshold.

    The threshold τ is drawn from a distribution on [mu − delta, mu + delta] and
    ŷ = P(τ < p). Outside that interval ŷ is exactly 0 or 1 and its gradient is
    exactly 0: that is the method, not a numerical accident.

    Args:
        distribution: ``"uniform"`` or ``"cosine"`` (raised cosine).
        mu: centre of the threshold distribution (the threshold averaged over).
        delta: half-width, positive.
    """

    distribution: str = "uniform"
    mu: float = 0.5
    delta: float = 0.5
    kind = "sol"

    def __post_init__(self):
        if self.distribution not in ("uniform", "cosine"):
            raise ValueError(f"ScoreOriented: distribution must be 'uniform' or 'cosine', got {self.distribution!r}")
        object.__setattr__(self, "mu", _number(self.mu, "mu", "ScoreOriented"))
        object.__setattr__(self, "delta", _number(self.delta, "delta", "ScoreOriented"))
        if not 0 < self.mu < 1:
            raise ValueError(f"ScoreOriented: mu must lie in (0, 1), got {self.mu}")
        if self.delta <= 0:
            raise ValueError(f"ScoreOriented: delta must be positive, got {self.delta}")

    @property
    def threshold(self) -> float:
        return self.mu

    def with_threshold(self, threshold: float) -> ScoreOriented:
        return ScoreOriented(distribution=self.distribution, mu=threshold, delta=self.delta)

    def symbolic(self, p: sympy.Symbol = _p, t: sympy.Expr | None = None) -> sympy.Expr:
        mu = sympy.Float(self.mu) if t is None else t
        delta = sympy.Float(self.delta)
        u = (p - mu) / delta
        inside = ((u + 1) / 2 if self.distribution == "uniform"
                  else (1 + u + sympy.sin(sympy.pi * u) / sympy.pi) / 2)
        return sympy.Piecewise((0, p <= mu - delta), (1, p >= mu + delta), (inside, True))

    def formula(self, at: str | None = None) -> str:
        return (f"ŷ = CDF of a {self.distribution} threshold on [μ − δ, μ + δ] at p, μ = {at or f'{self.mu:g}'}, "
                f"δ = {self.delta:g}")

    def latex_formula(self, at: str | None = None) -> str:
        return (rf"\hat y = F_{{\mathrm{{{self.distribution}}}}}(p),\ \tau \sim \mathrm{{{self.distribution}}}"
                rf"[\mu - \delta, \mu + \delta],\quad \mu = {at or f'{self.mu:g}'},\ \delta = {self.delta:g}")

    def derivative_formula(self) -> str:
        density = "1/(2δ)" if self.distribution == "uniform" else "(1 + cos(π(p − μ)/δ))/(2δ)"
        return f"dŷ/dp = {density} for |p − μ| < δ, else 0"

    def runtime(self) -> runtime.ScoreOriented:
        return runtime.ScoreOriented(distribution=self.distribution, mu=self.mu, delta=self.delta)


RELAXATION_NAMES: dict[str, Callable[..., Relaxation]] = {
    "anyloss": lambda **kw: Sigmoid(**{"L": 73.0, "threshold": 0.5, **kw}),
    "sigmoid": Sigmoid,
    "linear": Linear,
    "softset": Linear,
    "identity": Identity,
    "probabilistic": Identity,
    "sol": ScoreOriented,
    "score_oriented": ScoreOriented,
}


def default_relaxation(task: str = "binary") -> str:
    """The relaxation a task gets when none is named: AnyLoss's amplifier for binary and multi-label
    scores; for multi-class the identity, ŷ = softmax(z), which trained better than the softmax
    amplifier on every table measured (docs/multiclass.md: the amplifier saturates classes that fall
    behind, and the network sharpens its own softmax)."""
    return "identity" if task == "multiclass" else "anyloss"


def multiclass_relaxation_for(relaxation: Relaxation, named: bool) -> Relaxation:
    """The relaxation whose multi-class form a compiled loss uses for task="multiclass": the one the user
    named, else the multi-class default (:func:`default_relaxation`), whatever task it was compiled for. The
    one owner of that default for compile_metric and for the modules ``metricc compile`` writes."""
    return relaxation if named else resolve_relaxation(default_relaxation("multiclass"))


def resolve_relaxation(spec) -> Relaxation:
    """A relaxation from an instance, a name, or ``"name:key=value,..."`` text.

    Examples: ``"anyloss"``, ``"linear"``, ``"sigmoid:L=30,threshold=0.4"``,
    ``"sol:distribution=cosine"``. Values are read with ``float()``, never evaluated.
    """
    if isinstance(spec, Relaxation):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"relaxation must be a Relaxation or a name, not {type(spec).__name__}")
    name, _, arguments = spec.strip().partition(":")
    factory = RELAXATION_NAMES.get(name.strip().lower())
    if factory is None:
        raise ValueError(f"unknown relaxation {name!r}; choose one of {', '.join(RELAXATION_NAMES)} "
                         "or pass an instance such as metricc.Sigmoid(L=30.0)")
    kwargs = {}
    for item in filter(None, (part.strip() for part in arguments.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"relaxation option {item!r} must look like key=value")
        key = key.strip()
        if key in kwargs:  # the last one would silently win
            raise ValueError(f"relaxation option {key!r} is given twice in {spec!r}; give it once")
        try:
            kwargs[key] = float(value) if key != "distribution" else value.strip()
        except ValueError:
            raise ValueError(f"relaxation option {key}={value!r} needs a number") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"relaxation {name!r} does not take these options: {exc}") from None


def _mantissa_bits(dtype) -> int:
    """Significand precision of a floating dtype (53 for float64, 24 for float32)."""
    import torch

    return int(round(1 - math.log2(torch.finfo(dtype).eps)))


def valid_amplifier_range(precision: float = 1e-3, dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Range of L for which σ(L·(p − 0.5)) is a valid amplifier on [t, 1 − t].

    Condition 1 (amplifier, AnyLoss eq. 2): ŷ(t) ≤ t, which needs
    L ≥ ln((1 − t)/t) / (0.5 − t). Condition 2 (no exact 0/1, eq. 3): ŷ(1 − t)
    must stay below 1 in the dtype, i.e. e^{−L(0.5 − t)} must exceed the dtype's
    rounding gap below 1, 2^{−p} for a p-bit significand, so L ≤ p·ln 2 / (0.5 − t).
    For float64 (p = 53) this reproduces Table 1 of the AnyLoss paper.

    Args:
        precision: the accuracy level t in (0, 0.5): inputs p lie in [t, 1 − t].
        dtype: a torch floating dtype (default: float64, as in the paper).

    Returns:
        ``(L_min, L_max)``; L_min > L_max means no valid L exists at that level.
    """
    import torch

    if isinstance(precision, bool) or not isinstance(precision, (int, float)) or not 0 < precision < 0.5:
        raise ValueError(f"precision must lie in (0, 0.5), got {precision!r}")
    dtype = torch.float64 if dtype is None else dtype
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a torch floating dtype, got {dtype!r}")
    t = float(precision)
    lower = math.log((1 - t) / t) / (0.5 - t)
    upper = _mantissa_bits(dtype) * math.log(2) / (0.5 - t)
    return lower, upper


def describe_amplifier_range(precision: float = 1e-3, dtype: torch.dtype | None = None) -> str:
    """:func:`valid_amplifier_range` in words: "valid L in float32 for p in [0.001, 0.999]: 13.84..33.29",
    or that no valid L exists where the lower bound exceeds the upper one (bfloat16, half)."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    low, high = valid_amplifier_range(precision, dtype)
    where = f"for p in [{precision:g}, {1 - precision:g}]"
    if low > high:
        return (f"no valid L in {dtype} {where}: the amplifier needs L ≥ {low:.2f}, but L ≤ {high:.2f} keeps ŷ "
                "below 1")
    return f"valid L in {dtype} {where}: {low:.2f}..{high:.2f}"


def saturation_limit(relaxation: Relaxation, dtype) -> float | None:
    """Largest |p − t| on [0, 1] for which a Sigmoid's ŷ stays strictly inside (0, 1) in ``dtype``.

    Returns None when the relaxation never saturates within [0, 1] (or is not a Sigmoid).
    """
    if not isinstance(relaxation, Sigmoid):
        return None
    reach = _mantissa_bits(dtype) * math.log(2) / relaxation.L
    farthest = max(relaxation.threshold, 1 - relaxation.threshold)
    return None if reach >= farthest else reach
