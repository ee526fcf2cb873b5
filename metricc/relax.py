"""Relaxations: how a probability p becomes a soft prediction ŷ in [0, 1].

A hard classifier predicts ŷ = [p > t]; its confusion matrix has no useful
gradient. A relaxation replaces the step with a smooth (or piecewise-linear)
function ŷ(p; t). Each relaxation here gives ŷ and dŷ/dp twice: symbolically
(sympy, for derivations and for tests) and as PyTorch source (for the
generated loss). The generated functions take a tensor ``threshold`` that
broadcasts against ``p``, so one code path serves a single threshold and the
soft-set paper's mean over several.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import textwrap

import sympy

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


# Shared by the block sources: p repeated once per threshold, into the reused buffer when given.
_ROWS_PER_THRESHOLD_SOURCE = textwrap.dedent('''\
    def _rows_per_threshold(p, thresholds, out):
        shape = (thresholds.shape[0], p.shape[0])
        return p.expand(shape).clone() if out is None else out.copy_(p.expand(shape))


    ''')


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
    def torch_source(self) -> str:
        """Source of ``soft_prediction_(p, threshold)`` and ``soft_prediction_slope_(p, threshold)``.

        Both overwrite ``p``, a buffer the generated code owns, with ŷ(p) or dŷ/dp and
        return it: in-place ops halve the memory traffic of the eager loss. ``threshold``
        is a float, or a tensor of thresholds broadcasting along p's last dimension.
        """

    @property
    def slope_symmetric_about_half(self) -> bool:
        """Whether dŷ/dp(p) = dŷ/dp(1 − p) for every p (a relaxation centred on 1/2).

        Then the eager backward takes the slope at q = σ(−|z|) = min(p, 1 − p), which it
        computes anyway for dp/dz, instead of a second sigmoid for p.
        """
        return False

    def tail_slope_source(self) -> str:
        """Source of ``mul_soft_prediction_slope_at_tail_(grad, tail, threshold)`` and ``TAIL_SLOPE_SCALE``.

        The function multiplies ``grad`` in place by dŷ/dp at p divided by TAIL_SLOPE_SCALE,
        given q = min(p, 1 − p) in ``tail``, which it may overwrite. The backward folds
        TAIL_SLOPE_SCALE, a constant factor of the slope, into its per-label factors, where
        it costs nothing. Emitted only where :attr:`slope_symmetric_about_half`.
        """
        return textwrap.dedent('''\
            TAIL_SLOPE_SCALE = 1.0


            def mul_soft_prediction_slope_at_tail_(grad, tail, threshold):
                """grad·dŷ/dp at p, the slope taken at q = min(p, 1 − p): equal, as it is symmetric
                about 1/2. In place in grad; overwrites tail."""
                return grad.mul_(soft_prediction_slope_(tail, threshold))
            ''')

    def fused_slope_source(self) -> str:
        """Source of ``soft_prediction_slope(p, threshold)``: dŷ/dp out of place, for the code
        that ``torch.compile`` fuses into one loop, where the count of exponentials (not of
        passes over memory) sets the cost. By default the in-place form on a copy."""
        return textwrap.dedent('''\
            def soft_prediction_slope(p, threshold):
                """dŷ/dp, out of place (the form torch.compile fuses)."""
                return soft_prediction_slope_(p.clone(), threshold)
            ''')

    def block_torch_source(self, thresholds: tuple[float, ...]) -> str:
        """Source of ``soft_prediction_block(p, thresholds, out=None)`` and ``soft_prediction_slope_block``.

        They take a block of probabilities (rows,) and a (T, 1) column of thresholds and
        return (T, rows), thresholds along the first axis so that the long axis stays
        contiguous: the soft-set paper's average over thresholds without an N×T matrix.
        ``out``, a (T, rows) buffer, is reused from block to block: a fresh one each time
        would cost page faults. This default copies p and applies the elementwise functions.
        """
        return _ROWS_PER_THRESHOLD_SOURCE + textwrap.dedent('''\
            def soft_prediction_block(p, thresholds, out=None):
                """ŷ at every threshold for a block of rows: shape (T, rows)."""
                return soft_prediction_(_rows_per_threshold(p, thresholds, out), thresholds)


            def soft_prediction_slope_block(p, thresholds, out=None):
                """dŷ/dp at every threshold for a block of rows: shape (T, rows)."""
                return soft_prediction_slope_(_rows_per_threshold(p, thresholds, out), thresholds)
            ''')

    @abc.abstractmethod
    def formula(self) -> str:
        """One line of text describing ŷ(p) for docstrings."""

    @abc.abstractmethod
    def derivative_formula(self) -> str:
        """One line of text describing dŷ/dp for docstrings."""

    @abc.abstractmethod
    def latex_formula(self) -> str:
        """ŷ(p) as LaTeX, for ``metricc derive --latex``."""

    def spec(self) -> str:
        """Text that :func:`resolve_relaxation` reads back to an equal relaxation."""
        fields = ",".join(f"{f.name}={getattr(self, f.name)!r}".replace("'", "")
                          for f in dataclasses.fields(self))
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

    @property
    def slope_symmetric_about_half(self) -> bool:
        return self.threshold == 0.5  # L·σ(a)·σ(−a) depends on |a| = L·|p − t| only

    def symbolic(self, p=_p, t=None):
        t = self.threshold if t is None else t
        return 1 / (1 + sympy.exp(-sympy.Float(self.L) * (p - t)))

    def block_torch_source(self, thresholds: tuple[float, ...]) -> str:
        """One exp per sample for all thresholds: σ(L·(p − t_k)) = 1/(1 + E·c_k).

        With E = exp(L·(t₀ − p)) per sample and c_k = exp(L·(t_k − t₀)) per threshold
        (t₀ the middle threshold), a block needs an outer product and a reciprocal
        instead of T sigmoids, and the slope L·σ(a)σ(−a) = L/(2 + E·c_k + 1/(E·c_k))
        needs no subtraction that could round to 0. Used where neither exponent can
        overflow float32 (else the default, and always for half precision).
        """
        centre = (max(thresholds) + min(thresholds)) / 2
        reach = self.L * max(max(centre, 1 - centre), max(abs(t - centre) for t in thresholds))
        if reach > 80:  # exp(80) ≈ 5.5e34 < float32's 3.4e38
            return super().block_torch_source(thresholds)
        return _ROWS_PER_THRESHOLD_SOURCE + textwrap.dedent(f'''\
            SHARED_EXP_CENTRE = {centre!r}


            def _shared_exp_factors(p, thresholds):
                row = torch.sub(SHARED_EXP_CENTRE, p).mul_(AMPLIFIER_SCALE).exp_()  # E, one per sample
                column = torch.sub(thresholds, SHARED_EXP_CENTRE).mul_(AMPLIFIER_SCALE).exp_()  # c_k, (T, 1)
                return row, column


            def soft_prediction_block(p, thresholds, out=None):
                """ŷ = 1/(1 + E·c_k) at every threshold for a block of rows: shape (T, rows)."""
                if p.dtype not in (torch.float32, torch.float64):
                    return soft_prediction_(_rows_per_threshold(p, thresholds, out), thresholds)
                row, column = _shared_exp_factors(p, thresholds)
                return torch.mul(column, row, out=out).add_(1).reciprocal_()


            def soft_prediction_slope_block(p, thresholds, out=None):
                """dŷ/dp = L/(2 + E·c_k + 1/(E·c_k)) at every threshold: shape (T, rows)."""
                if p.dtype not in (torch.float32, torch.float64):
                    return soft_prediction_slope_(_rows_per_threshold(p, thresholds, out), thresholds)
                row, column = _shared_exp_factors(p, thresholds)
                column = column.div_(AMPLIFIER_SCALE)  # divide the denominator by L: the slope needs no extra pass
                denominator = torch.mul(column, row, out=out).add_(2 / AMPLIFIER_SCALE)
                inverse_column = column.reciprocal_().div_(AMPLIFIER_SCALE ** 2)  # 1/(L·c_k)
                return denominator.addcmul_(inverse_column, row.reciprocal_()).reciprocal_()
            ''')

    def formula(self) -> str:
        return f"ŷ = σ(L·(p − t)) with L = {self.L:g}, t = {self.threshold:g}"

    def derivative_formula(self) -> str:
        return "dŷ/dp = L·σ(a)·σ(−a), a = L·(p − t)"

    def latex_formula(self) -> str:
        return rf"\hat y = \sigma\big(L\,(p - t)\big),\quad L = {self.L:g},\ t = {self.threshold:g}"

    def torch_source(self) -> str:
        return textwrap.dedent(f'''\
            AMPLIFIER_SCALE = {self.L!r}


            def soft_prediction_(p, threshold):
                """ŷ = σ(L·(p − t)), AnyLoss's amplifier (Han et al., KDD 2024, eq. 1); in place in p.

                L·(p − t) is taken as L·p + (−L·t) in one pass instead of two: a fused multiply-add
                where the CPU has one, so rounded once where L·t is exact (t = 1/2 by default).
                """
                if isinstance(threshold, torch.Tensor):
                    offset = threshold * -AMPLIFIER_SCALE
                else:
                    offset = torch.full((), -AMPLIFIER_SCALE * threshold, dtype=p.dtype, device=p.device)
                return torch.add(offset, p, alpha=AMPLIFIER_SCALE, out=p).sigmoid_()


            def soft_prediction_slope_(p, threshold):
                """dŷ/dp = L·σ(a)·σ(−a) = L·r·(1 − r), r = σ(−|a|), a = L·(p − t); in place in p.

                One sigmoid, and r ≤ 1/2, so r·(1 − r) keeps its precision where the amplifier
                saturates; σ(a)·(1 − σ(a)) would round to 0 there and stop learning ("No More Update").
                """
                r = p.sub_(threshold).abs_().mul_(-AMPLIFIER_SCALE).sigmoid_()
                return _scaled_sigmoid_slope_(r)


            def _scaled_sigmoid_slope_(r):
                """L·r·(1 − r) in one pass, in place: sigmoid_backward is autograd's kernel for σ, g·s·(1 − s)."""
                scale = torch.full((), AMPLIFIER_SCALE, dtype=r.dtype, device=r.device)
                return torch.ops.aten.sigmoid_backward.grad_input(scale, r, grad_input=r)
            ''')

    def tail_slope_source(self) -> str:
        return textwrap.dedent('''\
            TAIL_SLOPE_SCALE = AMPLIFIER_SCALE  # dŷ/dp = L·r·(1 − r): the backward folds L into its factors


            def mul_soft_prediction_slope_at_tail_(grad, tail, threshold):
                """grad·r·(1 − r) = grad·(dŷ/dp)/L at p, from q = min(p, 1 − p) and t = 1/2, in place in
                grad, in two passes: r = σ(L·(q − t)) is σ(−|a|) without an abs, as q ≤ t, and needs no
                second sigmoid of the logit for p. Overwrites tail with r."""
                r = soft_prediction_(tail, threshold)
                return torch.ops.aten.sigmoid_backward.grad_input(grad, r, grad_input=grad)
            ''')

    def fused_slope_source(self) -> str:
        return textwrap.dedent('''\
            def soft_prediction_slope(p, threshold):
                """dŷ/dp = L·σ(a)·σ(−a) = L·v/(1 + v)², v = e^(−|a|): one exponential, not two
                sigmoids, in the loop torch.compile fuses; exact where the amplifier saturates."""
                v = torch.exp(-torch.abs(AMPLIFIER_SCALE * (p - threshold)))
                return AMPLIFIER_SCALE * v / torch.square(1 + v)
            ''')


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

    @property
    def slope_symmetric_about_half(self) -> bool:
        return self.threshold == 0.5  # knots at 1/4 and 3/4, outer slopes δ/(1/4) on both sides

    def symbolic(self, p=_p, t=None):
        t = sympy.Float(self.threshold) if t is None else t
        delta = sympy.Float(self.delta)
        half = sympy.Min(t, 1 - t) / 2
        lo, hi = t - half, t + half
        return sympy.Piecewise(
            (p * delta / lo, p < lo),
            (1 - delta + (p - hi) * delta / (1 - hi), p > hi),
            (sympy.Rational(1, 2) + (p - t) * (1 - 2 * delta) / (2 * half), True),
        )

    def formula(self) -> str:
        return (f"ŷ = five-point piecewise-linear Heaviside H^l(p; t, δ) with t = {self.threshold:g}, "
                f"δ = {self.delta:g}")

    def latex_formula(self) -> str:
        return (rf"\hat y = H^l(p;\,t,\delta)\ \text{{(piecewise linear, eq. 5)}},\quad t = {self.threshold:g},"
                rf"\ \delta = {self.delta:g}")

    def derivative_formula(self) -> str:
        return ("dŷ/dp = δ/(t − t_m/2) below t − t_m/2, (1 − 2δ)/t_m between, δ/(1 − t − t_m/2) above "
                "t + t_m/2; t_m = min(t, 1 − t)")

    def torch_source(self) -> str:
        return textwrap.dedent(f'''\
            LINEAR_DELTA = {self.delta!r}


            def _linear_pieces(threshold):
                """Inner knots t ∓ t_m/2 (t_m = min(t, 1 − t)) and the three slopes; floats or tensors."""
                half_width = (0.5 - abs(threshold - 0.5)) / 2
                lo, hi = threshold - half_width, threshold + half_width
                return lo, hi, LINEAR_DELTA / lo, (1 - 2 * LINEAR_DELTA) / (2 * half_width), LINEAR_DELTA / (1 - hi)


            def soft_prediction_(p, threshold):
                """ŷ = H^l(p; t, δ), the soft-set paper's piecewise-linear Heaviside (eq. 5); in place in p.

                Written as m3·max(p − hi, 0) + m1·s + (m2 − m1)·max(s − lo, 0) with s = min(p, hi):
                clamps are much faster than torch.where on the CPU, and one temporary suffices.
                """
                lo, hi, m1, m2, m3 = _linear_pieces(threshold)
                upper = torch.sub(p, hi).clamp_(min=0).mul_(m3)
                scaled = p.clamp_(max=hi).mul_(m1)  # m1·s
                upper.add_(scaled)
                middle = scaled.sub_(m1 * lo).clamp_(min=0).mul_((m2 - m1) / m1)  # (m2 − m1)·max(s − lo, 0)
                return middle.add_(upper).clamp_(max=1.0)  # rounding at p = 1


            def soft_prediction_slope_(p, threshold):
                """dŷ/dp: m1 below lo, m2 between the knots, m3 above hi (means at the knots); in place in p."""
                lo, hi, m1, m2, m3 = _linear_pieces(threshold)
                below = (lo - p).sign_().add_(1).mul_((m1 - m2) / 2)  # (m1 − m2) where p < lo
                return p.sub_(hi).sign_().add_(1).mul_((m3 - m2) / 2).add_(below).add_(m2)
            ''')

    def tail_slope_source(self) -> str:
        return textwrap.dedent('''\
            TAIL_SLOPE_SCALE = 1.0


            def mul_soft_prediction_slope_at_tail_(grad, tail, threshold):
                """grad·dŷ/dp from q = min(p, 1 − p) ≤ t = 1/2: m1 below the lower knot, m2 above it, their
                mean at it (five passes; the general slope would also test the upper knot, q never
                reaches). In place in grad; overwrites tail."""
                lo, _, m1, m2, _ = _linear_pieces(threshold)
                return grad.mul_(torch.sub(lo, tail, out=tail).sign_().mul_((m1 - m2) / 2).add_((m1 + m2) / 2))
            ''')


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

    @property
    def slope_symmetric_about_half(self) -> bool:
        return True  # dŷ/dp = 1

    def symbolic(self, p=_p, t=None):
        return p

    def formula(self) -> str:
        return "ŷ = p (probabilistic confusion matrix)"

    def derivative_formula(self) -> str:
        return "dŷ/dp = 1"

    def latex_formula(self) -> str:
        return r"\hat y = p"

    def torch_source(self) -> str:
        return textwrap.dedent('''\
            def soft_prediction_(p, threshold):
                """ŷ = p: the expected confusion matrix under the predicted probabilities."""
                return p


            def soft_prediction_slope_(p, threshold):
                """dŷ/dp = 1; in place in p."""
                return p.fill_(1.0)
            ''')

    def tail_slope_source(self) -> str:
        return textwrap.dedent('''\
            TAIL_SLOPE_SCALE = 1.0


            def mul_soft_prediction_slope_at_tail_(grad, tail, threshold):
                """grad·dŷ/dp = grad: the slope is 1."""
                return grad
            ''')


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

    @property
    def slope_symmetric_about_half(self) -> bool:
        return self.mu == 0.5  # both densities are even functions of p − μ

    def symbolic(self, p=_p, t=None):
        mu = sympy.Float(self.mu) if t is None else t
        delta = sympy.Float(self.delta)
        u = (p - mu) / delta
        inside = ((u + 1) / 2 if self.distribution == "uniform"
                  else (1 + u + sympy.sin(sympy.pi * u) / sympy.pi) / 2)
        return sympy.Piecewise((0, p <= mu - delta), (1, p >= mu + delta), (inside, True))

    def formula(self) -> str:
        return (f"ŷ = CDF of a {self.distribution} threshold on [μ − δ, μ + δ] at p, μ = {self.mu:g}, "
                f"δ = {self.delta:g}")

    def latex_formula(self) -> str:
        return (rf"\hat y = F_{{\mathrm{{{self.distribution}}}}}(p),\ \tau \sim \mathrm{{{self.distribution}}}"
                rf"[\mu - \delta, \mu + \delta],\quad \mu = {self.mu:g},\ \delta = {self.delta:g}")

    def derivative_formula(self) -> str:
        density = "1/(2δ)" if self.distribution == "uniform" else "(1 + cos(π(p − μ)/δ))/(2δ)"
        return f"dŷ/dp = {density} for |p − μ| < δ, else 0"

    def torch_source(self) -> str:
        if self.distribution == "uniform":
            return textwrap.dedent(f'''\
                SOL_DELTA = {self.delta!r}


                def soft_prediction_(p, threshold):
                    """ŷ = P(τ < p), τ uniform on [μ − δ, μ + δ] (score-oriented loss, Marchetti et al.); in place."""
                    return p.sub_(threshold - SOL_DELTA).mul_(1 / (2 * SOL_DELTA)).clamp_(0.0, 1.0)


                def soft_prediction_slope_(p, threshold):
                    """dŷ/dp = 1/(2δ) inside (μ − δ, μ + δ), exactly 0 outside; in place in p."""
                    # (1 + sign(δ − |p − μ|))/2 is the indicator of the interval (1/2 at its ends).
                    return p.sub_(threshold).abs_().neg_().add_(SOL_DELTA).sign_().add_(1).mul_(1 / (4 * SOL_DELTA))
                ''')
        return textwrap.dedent(f'''\
            SOL_DELTA = {self.delta!r}


            def soft_prediction_(p, threshold):
                """ŷ = P(τ < p), τ raised-cosine on [μ − δ, μ + δ] (score-oriented loss); in place in p."""
                u = p.sub_(threshold).div_(SOL_DELTA).clamp_(-1.0, 1.0)
                wave = torch.mul(u, math.pi).sin_().div_(math.pi)
                return u.add_(wave).add_(1).mul_(0.5).clamp_(0.0, 1.0)  # the clamp absorbs sin(±π) ≠ 0


            def soft_prediction_slope_(p, threshold):
                """dŷ/dp = (1 + cos(π(p − μ)/δ))/(2δ) inside (μ − δ, μ + δ), exactly 0 outside; in place in p."""
                u = p.sub_(threshold).div_(SOL_DELTA)
                inside = torch.abs(u).neg_().add_(1).sign_().add_(1).mul_(0.5)
                return u.clamp_(-1.0, 1.0).mul_(math.pi).cos_().add_(1).mul_(inside).div_(2 * SOL_DELTA)
            ''')


RELAXATION_NAMES = {
    "anyloss": lambda **kw: Sigmoid(**{"L": 73.0, "threshold": 0.5, **kw}),
    "sigmoid": Sigmoid,
    "linear": Linear,
    "softset": Linear,
    "identity": Identity,
    "probabilistic": Identity,
    "sol": ScoreOriented,
    "score_oriented": ScoreOriented,
}


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


def valid_amplifier_range(precision: float = 1e-3, dtype=None) -> tuple[float, float]:
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


def saturation_limit(relaxation: Relaxation, dtype) -> float | None:
    """Largest |p − t| on [0, 1] for which a Sigmoid's ŷ stays strictly inside (0, 1) in ``dtype``.

    Returns None when the relaxation never saturates within [0, 1] (or is not a Sigmoid).
    """
    if not isinstance(relaxation, Sigmoid):
        return None
    reach = _mantissa_bits(dtype) * math.log(2) / relaxation.L
    farthest = max(relaxation.threshold, 1 - relaxation.threshold)
    return None if reach >= farthest else reach
