"""The segmentation experiment's protocol: train the U-Net with each loss, choose its learning rate, score.

For each variant of the data (:mod:`.segmentation_data`) and each loss:

1. **Learning rate, chosen the same way for every loss.** The U-Net is trained with seed ``seed`` at each
   rate of the grid on the training split, and the rate with the best mean per-image Dice on the
   validation split is kept (ties: the smaller rate).
2. **Seeds.** At that rate, ``repeats`` runs (seeds ``seed``, ``seed + 1``, …; the first is step 1's run)
   are scored on the test split: per-image Dice and IoU of the hard masks (logit > 0 for one channel,
   argmax for two).

Within a seed every loss starts from the same weights (the one- and two-channel U-Nets differ only in
their 1×1 head, built last) and sees the same batches and augmentations (the eight flips and quarter
turns, drawn per image). Adam, ``steps`` steps of ``batch_size`` images, float32.

Each run is stored under ``out/runs/`` as JSON with its settings (and its test predictions as packed bits
for the figures), so an interrupted study resumes where it stopped and a rerun with other losses reuses
what it shares; a stored run whose settings differ is trained again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .segmentation_data import SegmentationSet
from .segmentation_losses import SegmentationLoss, build_segmentation_loss
from .segmentation_model import WIDTHS, UNet

LEARNING_RATES = (1e-3, 3e-3, 1e-2)
STEPS = 400
BATCH_SIZE = 8
REPEATS = 3
FORMAT = 1  # of the stored runs; a change of the protocol that changes numbers bumps it


@dataclasses.dataclass(frozen=True)
class SegmentationConfig:
    """What besides the data and the loss decides a run's numbers."""

    steps: int = STEPS
    batch_size: int = BATCH_SIZE
    learning_rates: tuple[float, ...] = LEARNING_RATES
    repeats: int = REPEATS
    seed: int = 0
    reduce: str = "image"
    widths: tuple[int, ...] = WIDTHS

    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.repeats)]


@dataclasses.dataclass
class RunRecord:
    """One trained U-Net: its settings, validation and test scores per image, and its cost."""

    variant: str
    loss: str
    learning_rate: float
    seed: int
    val_dice: list[float]
    val_iou: list[float]
    test_dice: list[float]
    test_iou: list[float]
    cpu_seconds: float
    final_loss: float
    failed: str | None = None
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def val_score(self) -> float:
        return float(np.mean(self.val_dice)) if self.val_dice else math.nan


@dataclasses.dataclass
class LossResult:
    """A loss's runs at every rate tried (first seed), the rate chosen, and its seeds' runs at that rate."""

    spec: SegmentationLoss
    learning_rate: float
    trials: dict[float, RunRecord]
    runs: list[RunRecord]

    @property
    def validation(self) -> dict[float, float]:
        return {rate: run.val_score for rate, run in self.trials.items()}


@dataclasses.dataclass
class VariantResult:
    dataset: SegmentationSet
    results: list[LossResult]
    predictions: dict[str, np.ndarray]  # loss name → the first seed's test masks (n, H, W) bool


def hard_masks(logits: torch.Tensor) -> torch.Tensor:
    """0/1 masks (N, H, W): logit > 0 for one channel, the argmax for several."""
    return (logits[:, 0] > 0) if logits.shape[1] == 1 else (logits.argmax(dim=1) == 1)


def per_image_scores(predicted: torch.Tensor, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice 2|P∩G|/(|P|+|G|) and IoU |P∩G|/|P∪G| of boolean masks (N, H, W); 1 where both are
    empty (no image of the sets used is)."""
    predicted, truth = predicted.reshape(len(predicted), -1).bool(), truth.reshape(len(truth), -1).bool()
    intersection = (predicted & truth).sum(1).double()
    sizes = predicted.sum(1).double() + truth.sum(1).double()
    union = sizes - intersection
    dice = torch.where(sizes > 0, 2 * intersection / sizes.clamp_min(1), torch.ones_like(sizes))
    iou = torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))
    return dice.numpy(), iou.numpy()


def dihedral(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """Each image (and its mask) turned by a random multiple of 90° and, with probability 1/2, mirrored."""
    turns = torch.randint(0, 4, (len(images),), generator=generator).tolist()
    flips = torch.randint(0, 2, (len(images),), generator=generator).tolist()
    out_images, out_masks = [], []
    for image, mask, turn, flip in zip(images, masks, turns, flips):
        image, mask = torch.rot90(image, turn, (1, 2)), torch.rot90(mask, turn, (0, 1))
        if flip:
            image, mask = image.flip(2), mask.flip(1)
        out_images.append(image)
        out_masks.append(mask)
    return torch.stack(out_images), torch.stack(out_masks)


def predict(model: torch.nn.Module, images: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([hard_masks(model(images[i:i + chunk])) for i in range(0, len(images), chunk)])


def train_and_score(dataset: SegmentationSet, spec: SegmentationLoss, learning_rate: float, seed: int,
                    config: SegmentationConfig) -> tuple[RunRecord, np.ndarray]:
    """Train one U-Net and score it on the validation and test splits; also returns its test masks."""
    train_images, train_masks, _ = dataset.part("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(train_images.shape[1], spec.channels, config.widths)
    loss_fn = build_segmentation_loss(spec, config.reduce)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses, failed = [], None
    started = time.process_time()
    model.train()
    for step in range(config.steps):
        if len(order) < config.batch_size:
            order += torch.randperm(len(train_images), generator=generator).tolist()
        chosen, order = order[:config.batch_size], order[config.batch_size:]
        images, masks = dihedral(train_images[chosen], train_masks[chosen], generator)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), masks)
        if not torch.isfinite(loss):
            failed = f"the loss is {loss.item()} at step {step + 1}"
            break
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    cpu = time.process_time() - started
    scores = {}
    predictions = None
    for which in ("val", "test"):
        images, masks, _ = dataset.part(which)
        predicted = predict(model, images) if len(images) else torch.zeros(0, dtype=torch.bool)
        scores[which] = per_image_scores(predicted, masks) if len(images) else (np.zeros(0), np.zeros(0))
        if which == "test":
            predictions = predicted.numpy().astype(bool)
    final = float(np.mean(losses[-20:])) if losses else math.nan
    record = RunRecord(dataset.name, spec.name, learning_rate, seed, scores["val"][0].tolist(),
                       scores["val"][1].tolist(), scores["test"][0].tolist(), scores["test"][1].tolist(), cpu, final,
                       failed)
    return record, predictions


def run_settings(dataset: SegmentationSet, spec: SegmentationLoss, learning_rate: float, seed: int,
                 config: SegmentationConfig) -> dict:
    """Everything a stored run must share with the one asked for to stand in for it."""
    fingerprint = hashlib.sha256()
    for tensor in (dataset.images, dataset.masks):
        fingerprint.update(tensor.contiguous().numpy().tobytes())
    fingerprint.update("|".join(dataset.split.tolist()).encode())
    return {"format": FORMAT, "data": fingerprint.hexdigest()[:16], "variant": dataset.name, "loss": spec.name,
            "learning_rate": learning_rate, "seed": seed, "steps": config.steps, "batch_size": config.batch_size,
            "reduce": config.reduce, "widths": list(config.widths), "torch": torch.__version__.split("+")[0]}


def _run_paths(store: Path, settings: dict) -> tuple[Path, Path]:
    """The run's JSON record and its packed test predictions."""
    slug = "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in settings["loss"])
    stem = store / settings["variant"] / slug / f"lr{settings['learning_rate']:g}_seed{settings['seed']}"
    return stem.parent / f"{stem.name}.json", stem.parent / f"{stem.name}.npz"


def stored_or_trained(dataset: SegmentationSet, spec: SegmentationLoss, learning_rate: float, seed: int,
                      config: SegmentationConfig, store: Path | None,
                      say: Callable[[str], None]) -> tuple[RunRecord, np.ndarray]:
    settings = run_settings(dataset, spec, learning_rate, seed, config)
    record_path, predictions_path = _run_paths(store, settings) if store is not None else (None, None)
    if record_path is not None and record_path.is_file() and predictions_path.is_file():
        stored = json.loads(record_path.read_text())
        if stored.get("settings") == settings:
            with np.load(predictions_path) as archive:
                shape = tuple(archive["shape"])
                predictions = np.unpackbits(archive["bits"])[:int(np.prod(shape))].reshape(shape).astype(bool)
            return RunRecord(**stored), predictions
    record, predictions = train_and_score(dataset, spec, learning_rate, seed, config)
    record.settings = settings
    say(f"[{dataset.name}] {spec.name:<18} lr {learning_rate:<6g} seed {seed}: val Dice {record.val_score:.3f}, "
        f"test Dice {np.mean(record.test_dice):.3f} IoU {np.mean(record.test_iou):.3f} "
        f"({record.cpu_seconds:.0f} s CPU){'; ' + record.failed if record.failed else ''}")
    if record_path is not None:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(predictions_path, bits=np.packbits(predictions.reshape(-1)),
                            shape=np.array(predictions.shape))
        record_path.write_text(json.dumps(dataclasses.asdict(record)))
    return record, predictions


def choose_learning_rate(validation: dict[float, float]) -> float:
    """The rate with the best validation Dice; the smaller rate on a tie; a failed run (NaN) never wins."""
    finite = {rate: score for rate, score in validation.items() if math.isfinite(score)}
    if not finite:
        return min(validation)
    best = max(finite.values())
    return min(rate for rate, score in finite.items() if score == best)


def run_variant(dataset: SegmentationSet, losses: list[SegmentationLoss], config: SegmentationConfig,
                store: Path | None, say: Callable[[str], None] = lambda message: None) -> VariantResult:
    """Every loss on ``dataset``: learning rate on the validation split, then ``repeats`` seeds."""
    say(f"{dataset.summary()}; {len(losses)} losses, rates {', '.join(f'{r:g}' for r in config.learning_rates)}, "
        f"{config.steps} steps of {config.batch_size}, seeds {config.seeds()}, reduce={config.reduce}")
    results, predictions = [], {}
    first, *others = config.seeds()
    for spec in losses:
        trials = {rate: stored_or_trained(dataset, spec, rate, first, config, store, say)
                  for rate in config.learning_rates}
        validation = {rate: record.val_score for rate, (record, _) in trials.items()}
        rate = choose_learning_rate(validation)
        record, predicted = trials[rate]
        runs = [record] + [stored_or_trained(dataset, spec, rate, seed, config, store, say)[0] for seed in others]
        predictions[spec.name] = predicted
        results.append(LossResult(spec, rate, {rate: run for rate, (run, _) in trials.items()}, runs))
    return VariantResult(dataset, results, predictions)
