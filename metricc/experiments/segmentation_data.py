"""The nuclei set of the segmentation experiment, at reduced resolution, and its rare-foreground variant.

The data: BBBC038v1 (2018 Data Science Bowl) nuclei, 180 images of 256×256 with a 0/1 nucleus mask and a
seeded 70/30 train/test split by image (``../shared/data/segmentation/dsb2018_nuclei.npz``; provenance
and licence in its SOURCES.md). It is read where it lies, never copied.

* ``full``: every image reduced to ``size``×``size`` (area averaging; a mask pixel is foreground where at
  least half of the pixels it covers are), about 15 % foreground.
* ``rare``: crops of ``size``×``size`` from the images reduced to ``2·size``, at positions where nuclei
  cover at most ``RARE_MAX`` of the crop and at least ``RARE_MIN`` (so that every crop's Dice is defined
  and not decided by one pixel); up to ``CROPS_PER_IMAGE`` distinct crops of each image, chosen by a
  seeded generator. Images with no such crop drop out.

A seeded fifth of the training images (by source image, the same for every variant and training seed)
is the validation split on which learning rates are chosen; the test split is the source's.
Images are standardised per image (zero mean, unit variance over pixels and channels): fluorescence,
brightfield and histology images differ mostly in brightness and contrast.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATA_FILE = "dsb2018_nuclei.npz"
ENVIRONMENT = "METRICC_SEGMENTATION_DATA"
VARIANTS = ("full", "rare")
RARE_MAX, RARE_MIN = 0.05, 0.005
CROPS_PER_IMAGE = 3
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0  # the validation split and the crop positions: part of the data, not of a training run


class SegmentationDataError(ValueError):
    """The segmentation data is missing or not what the experiment reads."""


def default_data_path() -> Path | None:
    """``$METRICC_SEGMENTATION_DATA``, else ``shared/data/segmentation/dsb2018_nuclei.npz`` beside the
    repository or the working folder (the project's layout); None where none exists."""
    if os.environ.get(ENVIRONMENT):
        return Path(os.environ[ENVIRONMENT])
    repository = Path(__file__).resolve().parents[2]
    for root in (repository.parent, Path.cwd().parent, Path.cwd()):
        candidate = root / "shared" / "data" / "segmentation" / DATA_FILE
        if candidate.is_file():
            return candidate
    return None


@dataclasses.dataclass(frozen=True)
class SegmentationSet:
    """Images (n, 3, S, S) float32, masks (n, S, S) int64 0/1, each item's split ('train', 'val',
    'test') and source image index (crops of one image share it)."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor
    split: np.ndarray
    source: np.ndarray

    def part(self, which: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        chosen = np.flatnonzero(self.split == which)
        index = torch.as_tensor(chosen)
        return self.images[index], self.masks[index], self.source[chosen]

    def summary(self) -> str:
        counts = ", ".join(f"{which} {int((self.split == which).sum())}" for which in ("train", "val", "test"))
        foreground = float(self.masks.double().mean())
        return (f"{self.name}: {len(self.masks)} images of {self.masks.shape[-1]}×{self.masks.shape[-2]} "
                f"({counts}), {100 * foreground:.1f} % foreground")


def read_source(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the npz file, checked."""
    path = Path(path)
    if not path.is_file():
        raise SegmentationDataError(f"segmentation data {path} not found: pass --data PATH/{DATA_FILE} or set "
                                    f"{ENVIRONMENT} (the set is described in shared/data/segmentation/SOURCES.md)")
    with np.load(path, allow_pickle=False) as archive:
        missing = {"images", "masks", "split"} - set(archive.files)
        if missing:
            raise SegmentationDataError(f"{path} lacks the array(s) {', '.join(sorted(missing))}; it needs "
                                        "images (n, 3, H, W), masks (n, H, W) 0/1 and split ('train'/'test')")
        arrays = {key: archive[key] for key in ("images", "masks", "split")}
    images, masks, split = arrays["images"], arrays["masks"], arrays["split"].astype(str)
    if images.ndim != 4 or masks.ndim != 3 or images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[1:]:
        raise SegmentationDataError(f"{path}: images {images.shape} and masks {masks.shape} must be (n, C, H, W) "
                                    "and (n, H, W)")
    if not set(np.unique(masks).tolist()) <= {0, 1}:
        raise SegmentationDataError(f"{path}: masks must hold 0 and 1 only")
    if len(split) != len(masks) or not set(split.tolist()) <= {"train", "test"}:
        raise SegmentationDataError(f"{path}: split must name 'train' or 'test' for each of the {len(masks)} images")
    return {"images": images, "masks": masks, "split": split}


def _reduce(images: np.ndarray, masks: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.as_tensor(images, dtype=torch.float32) / 255.0
    reduced = F.interpolate(pixels, size=(size, size), mode="area")
    covered = F.interpolate(torch.as_tensor(masks, dtype=torch.float32)[:, None], size=(size, size), mode="area")
    return reduced, (covered[:, 0] >= 0.5).to(torch.int64)


def _standardise(images: torch.Tensor) -> torch.Tensor:
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    scale = images.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return (images - mean) / scale


def _validation_split(split: np.ndarray, fraction: float) -> np.ndarray:
    """'train' images, a seeded ``fraction`` of them relabelled 'val'."""
    split = split.copy()
    train = np.flatnonzero(split == "train")
    chosen = np.random.default_rng(SPLIT_SEED).choice(train, size=int(round(fraction * len(train))), replace=False)
    split[chosen] = "val"
    return split


def _rare_crops(masks: torch.Tensor, size: int, generator: np.random.Generator,
                crops: int) -> list[list[tuple[int, int]]]:
    """For each image, up to ``crops`` distinct (row, column) corners of size×size crops whose foreground
    fraction lies in [RARE_MIN, RARE_MAX], on a grid of stride size/8."""
    stride = max(1, size // 8)
    covered = F.avg_pool2d(masks[:, None].to(torch.float32), kernel_size=size, stride=stride)[:, 0]
    chosen = []
    for fractions in covered:
        rows, columns = torch.nonzero((fractions >= RARE_MIN) & (fractions <= RARE_MAX), as_tuple=True)
        corners = [(int(r) * stride, int(c) * stride) for r, c in zip(rows, columns)]
        picked = generator.choice(len(corners), size=min(crops, len(corners)), replace=False) if corners else []
        chosen.append([corners[i] for i in sorted(picked)])
    return chosen


def load_nuclei(path: Path, variant: str = "full", size: int = 64, crops_per_image: int = CROPS_PER_IMAGE,
                validation_fraction: float = VALIDATION_FRACTION, limit: int | None = None) -> SegmentationSet:
    """The set of ``variant`` at ``size``×``size``; ``limit`` keeps the first images of each source split
    (quick runs and tests)."""
    if variant not in VARIANTS:
        raise SegmentationDataError(f"unknown variant {variant!r}; choose {' or '.join(VARIANTS)}")
    if size < 8 or size % 8:
        raise SegmentationDataError(f"--image-size must be a multiple of 8 (the U-Net halves it three times), "
                                    f"got {size}")
    source = read_source(path)
    images, masks, split = source["images"], source["masks"], source["split"]
    if limit is not None:
        keep = np.concatenate([np.flatnonzero(split == which)[:limit] for which in ("train", "test")])
        images, masks, split = images[keep], masks[keep], split[keep]
    if 2 * size > masks.shape[-1] and variant == "rare":
        raise SegmentationDataError(f"the rare variant crops from images reduced to 2·size = {2 * size}; the "
                                    f"source has {masks.shape[-1]}")
    split = _validation_split(split, validation_fraction)
    if variant == "full":
        reduced, reduced_masks = _reduce(images, masks, size)
        return SegmentationSet("nuclei-full", _standardise(reduced), reduced_masks, split, np.arange(len(split)))
    reduced, reduced_masks = _reduce(images, masks, 2 * size)
    corners = _rare_crops(reduced_masks, size, np.random.default_rng(SPLIT_SEED), crops_per_image)
    crops, crop_masks, crop_split, crop_source = [], [], [], []
    for index, positions in enumerate(corners):
        for row, column in positions:
            crops.append(reduced[index, :, row:row + size, column:column + size])
            crop_masks.append(reduced_masks[index, row:row + size, column:column + size])
            crop_split.append(split[index])
            crop_source.append(index)
    if not crops:
        raise SegmentationDataError(f"no crop of {size}×{size} has nuclei on {100 * RARE_MIN:g}-{100 * RARE_MAX:g} % "
                                    "of its pixels")
    return SegmentationSet("nuclei-rare", _standardise(torch.stack(crops)), torch.stack(crop_masks),
                           np.array(crop_split), np.array(crop_source))
