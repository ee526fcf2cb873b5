"""Loss names for experiments: the baselines and the compiled metric losses.

Names, as given to ``--losses``:

* ``bce``: binary cross-entropy on the logit;
* ``mse``: mean squared error of σ(logit) against the label (the paper's delta-rule baseline);
* ``wbce``: BCE with the positives weighted by n_negative / n_positive of the training fold;
* ``<metric>``: a catalog metric compiled by metricc with the AnyLoss relaxation (L = 73, t = 0.5);
* ``sol-<metric>``: the same metric with the score-oriented relaxation in the AnyLoss paper's
  setting (raised cosine, μ = 0.5, δ = 0.1);
* ``<metric>@<relaxation>``: any relaxation metricc understands, e.g. ``f1@linear``,
  ``f1@sigmoid:L=30,threshold=0.4``, ``f1@sol:distribution=uniform``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

BASELINES = ("bce", "mse", "wbce")
SOL_PREFIX = "sol-"
PAPER_SOL = "sol:distribution=cosine,mu=0.5,delta=0.1"  # AnyLoss Tables 17/18: S(cosine/mu:0.5/delta=0.1)

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LossNameError(ValueError):
    """A loss name that is neither a baseline nor a catalog metric."""


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A parsed loss name.

    Attributes:
        name: the name as written (column header in the results).
        kind: ``"bce"``, ``"mse"``, ``"wbce"`` or ``"compiled"``.
        metric: the catalog metric a compiled loss targets (None for baselines).
        relaxation: the relaxation spec passed to ``metricc.compile_metric``.
        family: ``"anyloss"``, ``"sol"``, another relaxation name, or ``"baseline"``.
    """

    name: str
    kind: str
    metric: str | None = None
    relaxation: str | None = None
    family: str = "baseline"

    @property
    def setting_key(self) -> str:
        """The key of the paper's per-loss settings (learning rate, batch size) nearest to this loss."""
        if self.kind == "wbce":
            return "bce"
        if self.kind != "compiled":
            return self.kind
        return f"sol-{self.metric}" if self.family == "sol" else self.metric


def split_loss_list(text: str) -> list[str]:
    """Split ``--losses`` at commas, keeping relaxation options (``key=value``) with their loss.

    ``"bce,f1@sigmoid:L=30,threshold=0.4,f2"`` → ``["bce", "f1@sigmoid:L=30,threshold=0.4", "f2"]``.
    """
    names: list[str] = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        if "=" in part and "@" not in part and names and "@" in names[-1]:
            names[-1] = f"{names[-1]},{part}"
        else:
            names.append(part)
    return names


def catalog_names() -> list[str]:
    from metricc.catalog import catalog

    return list(catalog())


def valid_names_message() -> str:
    metrics = catalog_names()
    return (f"valid losses: {', '.join(BASELINES)}; a catalog metric ({', '.join(metrics)}); "
            f"sol-<metric> (e.g. sol-f1); or <metric>@<relaxation> (e.g. f1@linear)")


def parse_loss(name: str) -> LossSpec:
    """Parse one loss name; raises :class:`LossNameError` listing the valid names."""
    text = name.strip()
    lowered = text.lower()
    if lowered in BASELINES:
        return LossSpec(lowered, lowered)
    metric, at, relaxation = text.partition("@")
    metric = metric.strip()
    family = "anyloss"
    if metric.lower().startswith(SOL_PREFIX):
        if at:
            raise LossNameError(f"loss {name!r}: sol-<metric> already fixes the relaxation; "
                                f"write {metric[len(SOL_PREFIX):]}@sol:... instead")
        metric, relaxation, family = metric[len(SOL_PREFIX):], PAPER_SOL, "sol"
    elif at:
        relaxation = relaxation.strip()
        family = relaxation.partition(":")[0].strip().lower() or "anyloss"
        family = "sol" if family in ("sol", "score_oriented") else family
    else:
        relaxation = "anyloss"
    if metric not in catalog_names():
        raise LossNameError(f"unknown loss {name!r}; {valid_names_message()}")
    if at or family == "sol":
        from metricc.relax import resolve_relaxation

        try:
            resolve_relaxation(relaxation)
        except ValueError as exc:
            raise LossNameError(f"loss {name!r}: {exc}") from None
    return LossSpec(text, "compiled", metric=metric, relaxation=relaxation, family=family)


def parse_losses(text: str) -> list[LossSpec]:
    """Parse a comma-separated ``--losses`` value; duplicates are an error."""
    specs = [parse_loss(name) for name in split_loss_list(text)]
    if not specs:
        raise LossNameError(f"--losses is empty; {valid_names_message()}")
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise LossNameError(f"loss {spec.name!r} is listed twice")
        seen.add(spec.name)
    return specs


def build_loss(spec: LossSpec, y_train: torch.Tensor | None = None) -> tuple[LossFunction, float | None]:
    """The loss function (logits, targets) → scalar, and the threshold a compiled loss was compiled for.

    ``y_train`` (the training fold's labels) sets the positive weight of ``wbce``.
    Warnings from compiling (e.g. metricc's analysis) are returned to the caller's
    warning filters unchanged.
    """
    if spec.kind == "bce":
        return F.binary_cross_entropy_with_logits, None
    if spec.kind == "mse":
        return mse_on_probabilities, None
    if spec.kind == "wbce":
        if y_train is None:
            raise ValueError("wbce needs the training labels to set its class weight")
        positives = float(y_train.sum())
        weight = (float(y_train.numel()) - positives) / max(positives, 1.0)

        def weighted_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            pos_weight = torch.tensor(weight, dtype=logits.dtype, device=logits.device)
            return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pos_weight)

        return weighted_bce, None
    import metricc

    loss = metricc.compile_metric(spec.metric, relaxation=spec.relaxation)
    return loss, loss.relaxation.threshold


def mse_on_probabilities(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of (σ(z) − y)², the squared error of the perceptron's delta rule on the sigmoid output."""
    return torch.mean((torch.sigmoid(logits) - target.to(logits.dtype)) ** 2)
