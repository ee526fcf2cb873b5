"""``metricc experiment --task segmentation``: options and entry point (docs/segmentation.md).

The options are added to the ``experiment`` parser by :func:`add_arguments`, which imports nothing heavy;
the run itself (:func:`run_from_args`) imports torch, MONAI and matplotlib. Options shared with the other
experiments keep their meaning: ``--data`` (the npz file), ``--losses``, ``--repeats`` (seeds), ``--lr`` (one
rate instead of the grid), ``--batch-size``, ``--seed``, ``--threads``, ``--out``, ``--force``, ``--quiet``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .runner import _positive_int

VARIANTS = ("full", "rare")  # as in segmentation_data.py, which imports torch
REDUCTIONS = ("image", "batch")  # as in segmentation_losses.py
DEFAULTS = {"image_size": 64, "steps": 400, "lr_grid": (1e-3, 3e-3, 1e-2)}  # as in segmentation_protocol.py


def _variants(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in VARIANTS for name in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(VARIANTS)} (comma-separated), got {text!r}")
    return names


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs comma-separated numbers, got {text!r}") from None
    if not rates or any(not rate > 0 for rate in rates):
        raise argparse.ArgumentTypeError(f"needs positive learning rates, got {text!r}")
    return tuple(sorted(set(rates)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "segmentation (--task segmentation; docs/segmentation.md)",
        "A small U-Net on the BBBC038 nuclei set (--data, default ../shared/data/segmentation/dsb2018_nuclei.npz); "
        "losses: ce, bce, monai-dice, monai-dicece, monai-tversky, lovasz-softmax, lovasz-hinge and catalog "
        "metrics with a relaxation (dice@anyloss, jaccard@identity, ...); the learning rate of every loss chosen "
        "on a validation split from --lr-grid; --repeats seeds")
    group.add_argument("--variants", type=_variants, default=list(VARIANTS), metavar="NAMES",
                       help="full (whole images reduced to --image-size) and/or rare (crops where nuclei cover "
                            "0.5-5 %% of the pixels); default full,rare")
    group.add_argument("--image-size", type=_positive_int, default=DEFAULTS["image_size"], metavar="S",
                       help=f"images are S×S pixels, a multiple of 8 (default {DEFAULTS['image_size']})")
    group.add_argument("--steps", type=_positive_int, default=DEFAULTS["steps"],
                       help=f"optimisation steps per run (default {DEFAULTS['steps']})")
    group.add_argument("--lr-grid", type=_rates, default=DEFAULTS["lr_grid"], metavar="R1,R2,...",
                       help="learning rates tried for every loss; the best validation Dice wins (default "
                            f"{','.join(f'{r:g}' for r in DEFAULTS['lr_grid'])}; --lr fixes one)")
    group.add_argument("--reduce", choices=REDUCTIONS, default="image",
                       help="Dice-type losses per image, then averaged (MONAI's batch=False; default), or over "
                            "the whole batch (batch=True)")
    group.add_argument("--limit-images", type=_positive_int, default=None, metavar="N",
                       help="use only the first N images of each source split (quick runs)")


def _error(message: str) -> int:
    print(f"metricc experiment: error: {message}", file=sys.stderr)
    return 2


def command_line(args, losses: str, rates: tuple[float, ...]) -> str:
    parts = ["metricc", "experiment", "--task", "segmentation"]
    for path in args.data:
        parts += ["--data", str(path)]
    parts += ["--variants", ",".join(args.variants), "--losses", losses, "--repeats", str(args.repeats),
              "--image-size", str(args.image_size), "--steps", str(args.steps),
              "--lr-grid", ",".join(f"{r:g}" for r in rates), "--reduce", args.reduce]
    if args.batch_size is not None:
        parts += ["--batch-size", str(args.batch_size)]
    if args.limit_images:
        parts += ["--limit-images", str(args.limit_images)]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    if args.threads != 1:
        parts += ["--threads", str(args.threads)]
    parts += ["--out", str(args.out)]
    return " ".join(shlex.quote(part) for part in parts)


def run_from_args(args) -> int:
    """``metricc experiment --task segmentation ...``: 0 on success, 2 on bad input."""
    unsupported = [flag for flag, value, default in (
        ("--datasets", args.datasets, None), ("--data-dir", args.data_dir, []), ("--model", args.model, ["slp"]),
        ("--epochs", args.epochs, None), ("--summary-from", args.summary_from, []),
        ("--threshold", args.threshold, 0.5), ("--subsample", args.subsample, None)) if value != default]
    if unsupported:
        return _error(f"{', '.join(unsupported)} do not apply to --task segmentation (it trains a U-Net on --data; "
                      "--steps sets the training length, --limit-images a quick subset)")
    if len(args.data) > 1:
        return _error("--task segmentation reads one --data file (the nuclei npz)")
    if isinstance(args.batch_size, float):
        return _error("--batch-size must be a number of images for --task segmentation")
    try:
        import monai  # noqa: F401
        import torch
    except ImportError as exc:
        return _error(f"--task segmentation needs MONAI: pip install 'metricc[experiments]' ({exc})")
    from .segmentation_data import SegmentationDataError, default_data_path, load_nuclei
    from .segmentation_losses import DEFAULT_LOSSES, SegmentationLossError, parse_segmentation_losses
    from .segmentation_protocol import BATCH_SIZE, SegmentationConfig, run_variant
    from .segmentation_report import markdown, write_csv, write_masks_figure, write_scores_figure

    losses_text = DEFAULT_LOSSES if args.losses == "bce,mse,f1,balanced_accuracy" else args.losses
    rates = (args.lr,) if args.lr is not None else args.lr_grid
    out = Path(args.out)
    reports = [out / name for name in ("segmentation.md", "segmentation_runs.csv", "segmentation_images.csv",
                                        "segmentation_differences.csv", "segmentation_scores.png")]
    reports += [out / f"segmentation_masks_{variant}.png" for variant in args.variants]
    try:
        losses = parse_segmentation_losses(losses_text)
        path = args.data[0] if args.data else default_data_path()
        if path is None:
            raise SegmentationDataError("segmentation data not found beside the repository "
                                        "(shared/data/segmentation/dsb2018_nuclei.npz): pass --data PATH")
        datasets = [load_nuclei(path, variant, args.image_size, limit=args.limit_images) for variant in args.variants]
        existing = [p for p in reports if p.exists()]
        if existing and not args.force:
            raise FileExistsError(f"{existing[0]} exists; pass --force to overwrite the reports (runs stored in "
                                  f"{out / 'runs'} are reused either way)")
    except (SegmentationLossError, SegmentationDataError, FileExistsError) as exc:
        return _error(str(exc))
    torch.set_num_threads(args.threads)
    config = SegmentationConfig(steps=args.steps, batch_size=args.batch_size or BATCH_SIZE, learning_rates=rates,
                                repeats=args.repeats, seed=args.seed, reduce=args.reduce)
    say = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    variants = [run_variant(dataset, losses, config, out / "runs", say) for dataset in datasets]
    command = command_line(args, losses_text, rates)
    text = markdown(variants, command)
    (out / "segmentation.md").write_text(text)
    written = [out / "segmentation.md", *write_csv(variants, out).values(),
               write_scores_figure(variants, out / "segmentation_scores.png")]
    for variant, name in zip(variants, args.variants):
        written.append(write_masks_figure(variant, out / f"segmentation_masks_{name}.png"))
    print(text)
    for path in written:
        print(f"wrote {path}")
    return 0
