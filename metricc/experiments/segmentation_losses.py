"""Losses of the segmentation experiment: the baselines a segmentation engineer uses and compiled metric losses.

Entries of ``--losses`` with ``--task segmentation`` (comma-separated); every loss takes the U-Net's logits
(N, C, H, W) and the 0/1 masks (N, H, W):

* ``ce``: cross-entropy over two channels (background, nucleus);
* ``bce``: binary cross-entropy on one channel;
* ``monai-dice``, ``monai-dicece``, ``monai-tversky``: MONAI's ``DiceLoss``, ``DiceCELoss`` (its CE term is
  BCE on one channel) and ``TverskyLoss`` (α = 0.3 on FP, β = 0.7 on FN: the catalog's ``tversky``), all with
  ``sigmoid=True`` on one channel and their default smoothing 1e-5;
* ``lovasz-softmax`` (two channels, classes present in the batch) and ``lovasz-hinge`` (one channel): Berman
  et al.'s losses, :mod:`.lovasz`;
* ``<catalog metric>[@<relaxation>]``: the metric compiled by metricc for the binary task over every pixel,
  one channel, e.g. ``dice@anyloss``, ``jaccard@identity``, ``tversky``, ``focal_tversky@identity``.

``reduce`` says where the Dice-type losses sum their pixels, as MONAI's ``batch=``: ``"image"`` (each image's
own loss, then the mean; MONAI's default ``batch=False``; Lovász per image) or ``"batch"`` (all pixels of the
batch at once). Cross-entropy and BCE are pixel means either way.

Compiled losses are called through :class:`CompiledPixelLoss`, on the runtime's dense layout (N, 1, H, W).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F

from .lovasz import lovasz_hinge, lovasz_softmax
from .multiclass_losses import first_repeated

REDUCTIONS = ("image", "batch")  # metricc.runtime.REDUCES, the study's default first
BASELINE_CHANNELS = {"ce": 2, "bce": 1, "monai-dice": 1, "monai-dicece": 1, "monai-tversky": 1,
                     "lovasz-softmax": 2, "lovasz-hinge": 1}
COMPILED_RELAXATIONS = ("anyloss", "identity", "linear", "sol", "sigmoid")
DEFAULT_LOSSES = ("ce,bce,monai-dice,monai-dicece,monai-tversky,lovasz-softmax,lovasz-hinge,"
                  "dice@anyloss,dice@identity,jaccard@anyloss,jaccard@identity,tversky@anyloss,tversky@identity,"
                  "focal_tversky@identity")
TVERSKY_ALPHA, TVERSKY_BETA = 0.3, 0.7  # the catalog's tversky defaults (alpha on FP, beta on FN)


class SegmentationLossError(ValueError):
    """A ``--losses`` entry that is not a segmentation loss."""


@dataclasses.dataclass(frozen=True)
class SegmentationLoss:
    """A parsed entry: a baseline's name as ``kind``, or ``"compiled"`` with the metric and relaxation."""

    name: str
    kind: str
    metric: str | None = None
    relaxation: str | None = None

    @property
    def is_compiled(self) -> bool:
        return self.kind == "compiled"

    @property
    def channels(self) -> int:
        return 1 if self.is_compiled else BASELINE_CHANNELS[self.kind]


def parse_segmentation_losses(text: str) -> list[SegmentationLoss]:
    """Parse ``--losses``; compiled entries are compiled once here, so a bad one fails before training."""
    specs = [parse_segmentation_loss(entry) for entry in text.split(",") if entry.strip()]
    if not specs:
        raise SegmentationLossError("--losses is empty")
    repeated = first_repeated(spec.name for spec in specs)
    if repeated is not None:
        raise SegmentationLossError(f"loss {repeated!r} is listed twice")
    return specs


def parse_segmentation_loss(entry: str) -> SegmentationLoss:
    from metricc.catalog import catalog

    text = entry.strip()
    if text.lower() in BASELINE_CHANNELS:
        return SegmentationLoss(text.lower(), text.lower())
    metric, at, relaxation = text.partition("@")
    metric = metric.strip()
    if metric not in catalog():
        raise SegmentationLossError(
            f"unknown loss {text!r}; valid: {', '.join(BASELINE_CHANNELS)}, or a catalog metric with an optional "
            "relaxation, e.g. dice@anyloss, jaccard@identity (metricc list)")
    relaxation = relaxation.strip() if at else "anyloss"
    if relaxation.partition(":")[0] not in COMPILED_RELAXATIONS:
        raise SegmentationLossError(f"loss {text!r}: relaxation {relaxation!r} is not one of "
                                    f"{', '.join(COMPILED_RELAXATIONS)}")
    spec = SegmentationLoss(f"{metric}@{relaxation}", "compiled", metric, relaxation)
    try:
        build_segmentation_loss(spec, "image")
    except (ValueError, TypeError) as exc:
        raise SegmentationLossError(f"loss {text!r}: {str(exc).strip().splitlines()[0]}") from None
    return spec


class CompiledPixelLoss:
    """A compiled binary metric loss over the pixels of logits (N, 1, H, W) and masks (N, H, W), through the
    runtime's dense layout: ``reduce="batch"`` sums the confusion entries over the whole batch (MONAI's
    ``batch=True``), ``"image"`` per image and averages the N losses (MONAI's default)."""

    def __init__(self, metric: str, relaxation: str, reduce: str):
        import metricc

        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metricc.MetricWarning)
            self.loss = metricc.compile_metric(metric, relaxation=relaxation, reduce=reduce)
        self.reduce = reduce

    def __call__(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, masks)


def _monai(kind: str, reduce: str):
    from monai import losses

    batch = reduce == "batch"
    if kind == "monai-dice":
        loss = losses.DiceLoss(sigmoid=True, batch=batch)
    elif kind == "monai-dicece":
        loss = losses.DiceCELoss(sigmoid=True, batch=batch)
    else:
        loss = losses.TverskyLoss(sigmoid=True, alpha=TVERSKY_ALPHA, beta=TVERSKY_BETA, batch=batch)
    return lambda logits, masks: loss(logits, masks[:, None].to(logits.dtype))


def build_segmentation_loss(spec: SegmentationLoss, reduce: str):
    """The loss (logits (N, spec.channels, H, W), masks (N, H, W)) → scalar."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    per_image = reduce == "image"
    if spec.kind == "ce":
        return F.cross_entropy
    if spec.kind == "bce":
        return lambda logits, masks: F.binary_cross_entropy_with_logits(logits[:, 0], masks.to(logits.dtype))
    if spec.kind.startswith("monai-"):
        return _monai(spec.kind, reduce)
    if spec.kind == "lovasz-softmax":
        return lambda logits, masks: lovasz_softmax(logits, masks, per_image=per_image)
    if spec.kind == "lovasz-hinge":
        return lambda logits, masks: lovasz_hinge(logits, masks, per_image=per_image)
    return CompiledPixelLoss(spec.metric, spec.relaxation, reduce)
