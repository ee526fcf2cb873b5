"""Lovász-softmax and Lovász-hinge: the segmentation experiment's IoU baselines, from the paper's formulas.

Berman, Rannen Triki, Blaschko, *The Lovász-Softmax loss: a tractable surrogate for the optimization of
the intersection-over-union measure in neural networks*, CVPR 2018 (arXiv:1705.08790).

The Jaccard loss of a class as a set function of the mispredicted pixels M (section 3.1, eq. 3),

    Δ_J(M) = |M| / |G ∪ M|  =  1 − |G ∖ M| / |G ∪ (M ∖ G)|,     G = the class's ground-truth pixels,

is submodular, and its Lovász extension (eq. 8-9) is a convex, piecewise-linear function of a vector of
pixel errors m ≥ 0 that equals Δ_J on 0/1 vectors: with m sorted in decreasing order (permutation π),

    Δ̄_J(m) = Σ_i m_π(i) · g_i,     g_i = Δ_J({π(1), …, π(i)}) − Δ_J({π(1), …, π(i−1)}).

* Lovász-hinge (binary, section 3.1): logits F_i, signs s_i = ±1, hinge errors m_i = max(1 − F_i s_i, 0).
* Lovász-softmax (section 3.2): probabilities f_i(c) = softmax, errors m_i(c) = |y_i(c) − f_i(c)|, the
  loss averaged over classes (by default over the classes present in the ground truth, as the
  authors' released code does: an absent class has Δ_J = 1 for any error, so it would only push every
  pixel's largest error of that class down).

``per_image=True`` computes the loss of each image and averages (as MONAI's ``batch=False``); the
default treats the batch as one image, as the paper's Lovász-softmax does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLASS_CHOICES = ("present", "all")


def jaccard_loss_increments(sorted_labels: torch.Tensor) -> torch.Tensor:
    """g_i = Δ_J(first i pixels) − Δ_J(first i − 1 pixels), for pixels in the order of decreasing error.

    ``sorted_labels`` is 1 where the pixel belongs to the class (a false negative once mispredicted), 0
    where it does not (a false positive). With k class pixels among the first i, the intersection left is
    |G| − k and the union |G| + (i − k).
    """
    labels = sorted_labels.to(torch.float64)
    total = labels.sum()
    in_class = labels.cumsum(0)
    intersection = total - in_class
    union = total + (torch.arange(1, len(labels) + 1, dtype=torch.float64, device=labels.device) - in_class)
    loss = 1.0 - intersection / union  # union ≥ 1 for every prefix of at least one pixel
    increments = torch.cat([loss[:1], loss[1:] - loss[:-1]])
    return increments.to(sorted_labels.dtype)


def lovasz_extension(errors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Δ̄_J(errors) for one class: ``errors`` ≥ 0 and ``labels`` 0/1, both flat (p,); differentiable in
    ``errors`` (the order is a constant of the linear piece the errors lie on)."""
    if errors.numel() == 0:
        return errors.sum()
    ordered, permutation = torch.sort(errors, descending=True)
    return torch.dot(ordered, jaccard_loss_increments(labels[permutation].to(errors.dtype)))


def _check_binary(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() == target.dim() + 1 and logits.shape[1] == 1:
        logits = logits.squeeze(1)
    if logits.shape != target.shape:
        raise ValueError(f"lovasz_hinge: logits {tuple(logits.shape)} and target {tuple(target.shape)} must have "
                         "the same shape, (N, H, W) or logits (N, 1, H, W)")
    return logits, target


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """Binary Lovász-hinge of logits (N, [1,] *spatial) against 0/1 targets (N, *spatial)."""
    logits, target = _check_binary(logits, target)

    def one(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.reshape(-1).to(z.dtype)
        signs = 2.0 * y - 1.0
        errors = F.relu(1.0 - z.reshape(-1) * signs)
        return lovasz_extension(errors, y)

    if per_image:
        return torch.stack([one(z, y) for z, y in zip(logits, target)]).mean()
    return one(logits, target)


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, per_image: bool = False,
                   classes: str = "present") -> torch.Tensor:
    """Lovász-softmax of logits (N, C, *spatial) against class indices (N, *spatial)."""
    if classes not in CLASS_CHOICES:
        raise ValueError(f"lovasz_softmax: classes must be one of {CLASS_CHOICES}, got {classes!r}")
    if logits.dim() != target.dim() + 1 or logits.shape[2:] != target.shape[1:] or logits.shape[0] != target.shape[0]:
        raise ValueError(f"lovasz_softmax: logits (N, C, *spatial) {tuple(logits.shape)} do not match class "
                         f"indices (N, *spatial) {tuple(target.shape)}")
    probabilities = logits.softmax(dim=1)

    def one(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = p.reshape(p.shape[0], -1)
        y = y.reshape(-1)
        losses = []
        for c in range(p.shape[0]):
            labels = (y == c).to(p.dtype)
            if classes == "present" and not bool(labels.any()):
                continue
            losses.append(lovasz_extension((labels - p[c]).abs(), labels))
        if not losses:  # no class present: nothing to learn from this image
            return p.sum() * 0.0
        return torch.stack(losses).mean()

    if per_image:
        return torch.stack([one(p, y) for p, y in zip(probabilities, target)]).mean()
    return one(probabilities.transpose(0, 1), target)
