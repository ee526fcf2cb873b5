"""Ranking baselines for AUROC and average precision: the WMW pairwise surrogates and the AUC-M loss.

Each maps (logits, 0/1 targets) to a scalar, like the other experiment losses; none is part of the core.

* :class:`PairwiseSigmoidLoss` (``wmw``): 1 − the Wilcoxon-Mann-Whitney statistic with the step
  replaced by a sigmoid, 1 − mean over (positive i, negative j) of σ(β·(z_i − z_j)) on the logits.
  Yan, Dodier, Mozer & Wolniewicz, "Optimizing Classifier Performance via an Approximation to the
  Wilcoxon-Mann-Whitney Statistic", ICML 2003 (the soft-set paper's reference [39]) start from this
  sigmoid form. Every pair of the batch while there are at most ``max_pairs`` of them; beyond, that
  many pairs drawn uniformly with replacement (an unbiased estimate of the all-pairs mean, from a
  seeded generator): O(min(n₊·n₋, max_pairs)) time and memory per call.
* :class:`PairwiseSquaredHingeLoss` (``wmw-hinge``): Yan et al.'s own surrogate R with p = 2,
  mean over all pairs of max(0, γ − (z_i − z_j))², computed exactly over *all* pairs in O(N log N):
  sort the negatives; for a positive with c = γ − z_i the pairs that count are the negatives above
  z_i − γ, and Σ (c + z_j)² = k·c² + 2c·Σ z_j + Σ z_j² over them (suffix sums at a binary-search
  index). The loss is C¹ (each term leaves with zero slope), so autograd through the sort, the suffix
  sums and the gathers is exact.
* :class:`AUCMarginLoss` (``auc-m``): LibAUC's AUC-M loss (Yuan, Yan, Sonka & Yang, "Large-scale
  Robust Deep AUC Maximization: A New Surrogate Loss and Empirical Studies on Medical Image
  Classification", ICCV 2021), the min-max margin form without the class prior (LibAUC's ``v2``),
  on h = σ(z):

      F(h; a, b, α) = E₊[(h − a)²] + E₋[(h − b)²] + 2α·(m − E₊[h] + E₋[h]) − α²

  minimised over the model and a, b, maximised over α ≥ 0 (at the saddle point: the two class
  variances plus the squared hinge max(0, m − (E₊h − E₋h))²). The model's gradient is F's at the
  current (a, b, α); then a, b take a gradient-descent step and α a projected ascent step with PESG's
  dual rule (α ← max(0, α + η·(2(m − a + b) − 2α)), from the running a, b), step size η.
"""

from __future__ import annotations

import torch

DEFAULT_MAX_PAIRS = 1 << 16  # 65,536 pairs: the mean of σ over them has a standard error below 0.002


def _split(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of the positives and of the negatives (a target counts as positive where it is > 1/2)."""
    logits = logits.reshape(-1)
    positive = target.reshape(-1) > 0.5
    return logits[positive], logits[~positive]


def _no_pairs(logits: torch.Tensor) -> torch.Tensor:
    """The loss of a batch with one class: no pair ranks anything, so chance level (1/2) without gradient."""
    return logits.sum() * 0.0 + 0.5


class PairwiseSigmoidLoss:
    """1 − mean σ(β·(z_i − z_j)) over (positive i, negative j) pairs: the WMW statistic, smoothed.

    Args:
        scale: β, the sigmoid's slope on logit differences.
        max_pairs: all pairs of a batch up to this many; beyond, this many pairs drawn uniformly.
        seed: the generator of the drawn pairs (constant, so runs repeat).
    """

    def __init__(self, scale: float = 1.0, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0):
        if not scale > 0 or max_pairs < 1:
            raise ValueError("the WMW loss needs scale > 0 and max_pairs >= 1")
        self.scale, self.max_pairs = float(scale), int(max_pairs)
        self.generator = torch.Generator().manual_seed(seed)

    def pairs(self, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """z_i − z_j of every pair, or of ``max_pairs`` pairs drawn with replacement."""
        count_p, count_n = positives.numel(), negatives.numel()
        if count_p * count_n <= self.max_pairs:
            return (positives.unsqueeze(1) - negatives.unsqueeze(0)).reshape(-1)
        i = torch.randint(count_p, (self.max_pairs,), generator=self.generator).to(positives.device)
        j = torch.randint(count_n, (self.max_pairs,), generator=self.generator).to(positives.device)
        return positives[i] - negatives[j]

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positives, negatives = _split(logits, target)
        if positives.numel() == 0 or negatives.numel() == 0:
            return _no_pairs(logits)
        return torch.sigmoid(-self.scale * self.pairs(positives, negatives)).mean()  # σ(−x) = 1 − σ(x)


class PairwiseSquaredHingeLoss:
    """mean max(0, γ − (z_i − z_j))² over all (positive i, negative j) pairs, in O(N log N) (Yan et al.'s R, p = 2).

    The sums run in float64 whatever the input's dtype: k·c² + 2c·Σz + Σz² cancels where a pair sits near
    the hinge, and float32 suffix sums over a million samples would lose the small terms.
    """

    def __init__(self, margin: float = 1.0):
        if not margin > 0:
            raise ValueError("the squared-hinge WMW loss needs margin > 0")
        self.margin = float(margin)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positives, negatives = _split(logits, target)
        if positives.numel() == 0 or negatives.numel() == 0:
            return _no_pairs(logits)
        x, s = positives.double(), torch.sort(negatives.double()).values
        zero = s.new_zeros(1)
        # suffix[k] = Σ_{j ≥ k} s_j (and of s_j²), summed from the top: no difference of two large sums.
        suffix1 = torch.cat([torch.flip(torch.cumsum(torch.flip(s, (0,)), 0), (0,)), zero])
        suffix2 = torch.cat([torch.flip(torch.cumsum(torch.flip(s * s, (0,)), 0), (0,)), zero])
        start = torch.searchsorted(s.detach(), (x - self.margin).detach(), right=True)
        count = (s.numel() - start).to(x.dtype)
        c = self.margin - x
        total = (count * c * c + 2 * c * suffix1[start] + suffix2[start]).sum()
        return (total / (x.numel() * s.numel())).to(logits.dtype)


class AUCMarginLoss:
    """LibAUC's AUC-M loss (v2, no class prior) on h = σ(z), with its variables a, b, α updated at each call.

    The variables start at 0, as LibAUC's do. A call with gradients enabled (training) returns F at the
    current (a, b, α) and then moves them: a and b by a gradient-descent step of size ``step`` on F (towards
    the batch's class means of h), α by PESG's projected ascent step. A class missing from the batch keeps
    its running mean (a or b) in the margin term, so the other class still gets a gradient. Calls without
    gradients (evaluation) leave the variables alone.

    Args:
        margin: m, on the scale of h ∈ [0, 1] (LibAUC's default 1.0).
        step: η, the step size of a, b and α (PESG's default learning rate 0.1).
    """

    def __init__(self, margin: float = 1.0, step: float = 0.1):
        if not margin > 0 or not 0 < step <= 0.5:
            raise ValueError("the AUC-M loss needs margin > 0 and 0 < step <= 0.5")
        self.margin, self.step = float(margin), float(step)
        self.a = self.b = self.alpha = 0.0

    def objective(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float | None,
                                                                             float | None]:
        """F at the current (a, b, α), and the batch's class means of h (None for a class it lacks)."""
        h = torch.sigmoid(logits.reshape(-1))
        positive = target.reshape(-1) > 0.5
        h_positive, h_negative = h[positive], h[~positive]
        loss = h.new_zeros(())
        mean_positive = mean_negative = None
        if h_positive.numel():
            loss = loss + ((h_positive - self.a) ** 2).mean()
            mean_positive = h_positive.mean()
        if h_negative.numel():
            loss = loss + ((h_negative - self.b) ** 2).mean()
            mean_negative = h_negative.mean()
        gap = ((self.a if mean_positive is None else mean_positive)
               - (self.b if mean_negative is None else mean_negative))
        loss = loss + 2 * self.alpha * (self.margin - gap) - self.alpha ** 2
        return (loss, None if mean_positive is None else float(mean_positive.detach()),
                None if mean_negative is None else float(mean_negative.detach()))

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss, mean_positive, mean_negative = self.objective(logits, target)
        if torch.is_grad_enabled():
            self.update(mean_positive, mean_negative)
        return loss

    def update(self, mean_positive: float | None, mean_negative: float | None) -> None:
        """One step of a, b (descent: ∂F/∂a = −2(E₊h − a)) and α (PESG's ascent, projected on α ≥ 0)."""
        if mean_positive is not None:
            self.a += 2 * self.step * (mean_positive - self.a)
        if mean_negative is not None:
            self.b += 2 * self.step * (mean_negative - self.b)
        self.alpha = max(0.0, self.alpha + self.step * (2 * (self.margin - self.a + self.b) - 2 * self.alpha))


def ranking_loss(kind: str, options: dict[str, float]):
    """The loss of a ranking baseline (``wmw``, ``wmw-hinge``, ``auc-m``) with its options; ValueError if invalid."""
    if kind == "wmw":
        max_pairs = options.get("max_pairs", DEFAULT_MAX_PAIRS)
        if max_pairs != int(max_pairs):
            raise ValueError(f"max_pairs must be a whole number, got {max_pairs:g}")
        return PairwiseSigmoidLoss(scale=options.get("scale", 1.0), max_pairs=int(max_pairs))
    if kind == "wmw-hinge":
        return PairwiseSquaredHingeLoss(margin=options.get("margin", 1.0))
    if kind == "auc-m":
        return AUCMarginLoss(margin=options.get("margin", 1.0), step=options.get("step", 0.1))
    raise ValueError(f"unknown ranking loss {kind!r}")
