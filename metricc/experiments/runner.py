"""``metricc experiment``: the command line of the experiments.

Imported by ``metricc.cli`` to build its parser, so this module imports nothing
heavy at load time: scikit-learn, matplotlib and the training code are imported
inside :func:`run_from_args`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR = 0, 2
DTYPES = ("float64", "float32")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a positive number, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"needs a positive number, got {text!r}")
    return value


def _batch_size(text: str) -> int | float:
    """A whole number of rows (at least 2: batch norm), or a fraction of the training fold in (0, 1]."""
    if any(mark in text for mark in ".eE"):
        value = _positive_float(text)
        if value > 1:
            raise argparse.ArgumentTypeError(f"a fractional batch size must lie in (0, 1], got {text!r}")
        return value
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("a batch needs at least 2 rows (batch normalization)")
    return value


def _threshold(text: str) -> float | str:
    if text.strip().lower() == "compiled":
        return "compiled"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number in (0, 1) or 'compiled', got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"needs a number in (0, 1) or 'compiled', got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the experiment options to ``parser`` (the ``experiment`` subcommand)."""
    parser.description = (
        "Cross-validate models trained with baseline and compiled metric losses and write score tables "
        "(Markdown, CSV), learning curves (PNG) and a learning-time table into --out. Defaults follow "
        "the AnyLoss paper (KDD 2024): per-loss learning rates, SLP 1,000 epochs full batch, MLP 100 "
        "epochs, 10 folds. Needs the optional extra: pip install 'metricc[experiments]'.")
    data = parser.add_argument_group("data")
    data.add_argument("--datasets", default=None, metavar="NAMES",
                      help="comma-separated named datasets: random, breast_cancer, digits, digits:N "
                           "(default: random unless --data is given)")
    data.add_argument("--data", action="append", type=Path, default=[], metavar="CSV",
                      help="a CSV file with a header and a 0/1 label column (repeatable)")
    data.add_argument("--label-column", default="label", help="label column of --data files (default: label)")
    data.add_argument("--drop-columns", default="", metavar="COLS",
                      help="comma-separated columns of --data files to ignore, e.g. an id column")
    data.add_argument("--subsample", type=_positive_int, default=None, metavar="N",
                      help="use a stratified random subset of N rows of each dataset (quick runs)")
    training = parser.add_argument_group("training")
    training.add_argument("--model", choices=("slp", "mlp", "resnet"), default="slp",
                          help="slp (one linear layer), mlp (2 hidden sigmoid nodes, batch norm), "
                               "resnet (image data only) (default: slp)")
    training.add_argument("--losses", default="bce,mse,f1,balanced_accuracy", metavar="NAMES",
                          help="comma-separated: bce, mse, wbce, a catalog metric (AnyLoss relaxation), "
                               "sol-<metric> (score-oriented, the paper's setting), or <metric>@<relaxation> "
                               "(e.g. f1@linear) (default: bce,mse,f1,balanced_accuracy)")
    training.add_argument("--folds", type=_positive_int, default=10, help="stratified k-fold splits (default 10)")
    training.add_argument("--epochs", type=_positive_int, default=None,
                          help="epochs for every loss (default: the paper's: SLP 1000, MLP 100; ResNet 15)")
    training.add_argument("--lr", type=_positive_float, default=None,
                          help="learning rate for every loss (default: the paper's per-loss rates)")
    training.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|FRACTION",
                          help="rows per batch, or a fraction of the training fold such as 0.05 "
                               "(default: SLP full batch; MLP 5%%, 50%% for gmean/balanced_accuracy; ResNet 64)")
    training.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                          help="default: sgd (plain gradient descent) for the SLP, adam otherwise, as the "
                               "paper's authors did")
    training.add_argument("--output-init", choices=("zero", "random"), default=None,
                          help="initial weights of the MLP/ResNet output layer: zero (every loss starts at "
                               "p = 0.5; the MLP's default) or random (Glorot uniform as Keras for the MLP, "
                               "PyTorch's default for the ResNet, whose default it is)")
    training.add_argument("--seed", type=int, default=0, help="seed of the folds, initial weights, batches")
    training.add_argument("--dtype", choices=DTYPES, default="float64",
                          help="float64 (default; AnyLoss's L = 73 saturates in float32) or float32")
    training.add_argument("--device", default="cpu", help="torch device (default cpu)")
    training.add_argument("--threads", type=_positive_int, default=1,
                          help="torch CPU threads (default 1: these small models gain nothing from more, and "
                               "per-epoch timings stay stable on a shared machine)")
    evaluation = parser.add_argument_group("evaluation and output")
    evaluation.add_argument("--threshold", type=_threshold, default=0.5, metavar="T|compiled",
                            help="threshold on σ(logit) for hard predictions (default 0.5); 'compiled': each "
                                 "compiled loss at the threshold it was compiled for, baselines at 0.5")
    evaluation.add_argument("--out", type=Path, default=Path("results"),
                            help="output folder, created if missing (default: results)")
    evaluation.add_argument("--force", action="store_true", help="overwrite result files already in --out")
    evaluation.add_argument("--progress-every", type=int, default=0, metavar="EPOCHS",
                            help="also print the training loss every this many epochs (default: per fold only)")
    evaluation.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def _error(message: str) -> int:
    print(f"metricc experiment: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _load_datasets(args) -> list:
    from .datasets import load_csv, load_dataset

    datasets = []
    names = [n.strip() for n in (args.datasets or "").split(",") if n.strip()]
    if not names and not args.data:
        names = ["random"]
    datasets.extend(load_dataset(name) for name in names)
    drop = tuple(c.strip() for c in args.drop_columns.split(",") if c.strip())
    datasets.extend(load_csv(path, args.label_column, drop) for path in args.data)
    if args.subsample:
        datasets = [d.subsample(args.subsample) for d in datasets]
    seen = set()
    for dataset in datasets:
        if dataset.name in seen:
            raise ValueError(f"dataset {dataset.name!r} is given twice")
        seen.add(dataset.name)
    return datasets


def run_from_args(args) -> int:
    """Run ``metricc experiment``; 0 on success, 2 on bad input (message on stderr)."""
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        return _error(f"experiments need the optional extra: pip install 'metricc[experiments]' ({exc})")
    import torch

    from .datasets import DatasetError, check_folds
    from .losses import LossNameError, parse_losses
    from .protocol import ExperimentConfig, run_dataset
    from .report import ensure_writable, output_paths, write_all
    from .training import TrainingError

    try:
        losses = parse_losses(args.losses)
        datasets = _load_datasets(args)
        for dataset in datasets:
            check_folds(dataset, args.folds)
            if args.model == "resnet" and dataset.image_shape is None:
                raise DatasetError(f"--model resnet needs image data; {dataset.name} is a table "
                                   "(use --model slp or mlp, or --datasets digits)")
        paths = output_paths(args.out, args.model)
        ensure_writable(paths, args.force)  # fail before training, not after
    except (LossNameError, DatasetError, FileExistsError, ValueError) as exc:
        return _error(str(exc))
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        return _error(f"--device: {exc}")
    torch.set_num_threads(args.threads)
    config = ExperimentConfig(model=args.model, folds=args.folds, seed=args.seed, epochs=args.epochs,
                              learning_rate=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
                              zero_init_output=None if args.output_init is None else args.output_init == "zero",
                              threshold=args.threshold, dtype=getattr(torch, args.dtype), device=str(device),
                              progress_every=args.progress_every)
    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    command = command_line(args)
    try:
        results = [run_dataset(dataset, losses, config, progress) for dataset in datasets]
    except TrainingError as exc:
        return _error(str(exc))
    written = write_all(results, config, args.out, command=command, overwrite=args.force)
    _print_summary(results, written)
    return EXIT_OK


def command_line(args) -> str:
    """The command that reproduces this run, every setting spelled out (for the result files)."""
    parts = ["metricc", "experiment"]
    if args.datasets:
        parts += ["--datasets", args.datasets]
    for path in args.data:
        parts += ["--data", str(path)]
    if args.data:
        parts += ["--label-column", args.label_column]
        if args.drop_columns:
            parts += ["--drop-columns", args.drop_columns]
    if args.subsample:
        parts += ["--subsample", str(args.subsample)]
    parts += ["--model", args.model, "--losses", args.losses, "--folds", str(args.folds)]
    for option, value in (("--epochs", args.epochs), ("--lr", args.lr), ("--batch-size", args.batch_size),
                          ("--optimizer", args.optimizer)):
        if value is not None:
            parts += [option, str(value)]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    if args.output_init is not None:
        parts += ["--output-init", args.output_init]
    if args.threads != 1:
        parts += ["--threads", str(args.threads)]
    if args.dtype != "float64":
        parts += ["--dtype", args.dtype]
    if args.threshold != 0.5:
        parts += ["--threshold", str(args.threshold)]
    parts += ["--out", str(args.out)]
    return " ".join(shlex.quote(part) for part in parts)


def _print_summary(results, written) -> None:
    """The headline on standard output: each row's mean per loss, best marked."""
    from .evaluation import EVALUATORS

    for result in results:
        print(f"{result.dataset} ({result.summary})")
        for row in result.rows:
            best = set(result.best(row))
            cells = [f"{spec.name} {result.scores(spec.name, row).mean():.3f}{'*' if spec.name in best else ''}"
                     for spec in result.losses]
            print(f"  {EVALUATORS[row].label:<18} " + "  ".join(cells))
    for path in written.values():
        print(f"wrote {path}")
