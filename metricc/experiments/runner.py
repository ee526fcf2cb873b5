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

from ..runtime import ESTIMATORS, TASKS

EXIT_OK, EXIT_ERROR = 0, 2
DTYPES = ("float64", "float32")
MODELS = ("slp", "mlp", "resnet")  # as in models.py, which imports torch
TIE_RULES = ("se", "wilcoxon")  # as in summary.py
RESETS = ("never", "epoch")  # as in protocol.py
DEFAULT_MOMENTUM = 0.9  # as in metricc.compile_metric
EXPERIMENT_TASKS = (*TASKS, "segmentation", "constrained", "fairness")  # the runtime's tasks, the U-Net
# experiment (segmentation_cli.py) and the constraint experiments (constrained_runner.py)


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
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"needs a finite positive number, got {text!r}")
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


def _momentum(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"needs a number in [0, 1), got {text!r}")
    return value


def _threshold(text: str) -> float | str:
    if text.strip().lower() in ("compiled", "tuned"):
        return text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number in (0, 1), 'compiled' or 'tuned', got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"needs a number in (0, 1), 'compiled' or 'tuned', got {text!r}")
    return value


def _models(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(MODELS)} (comma-separated), got {text!r}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a model is listed twice in {text!r}")
    return names


def _param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"needs NAME=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name.strip()} needs a number, got {value!r}") from None
    return name.strip(), number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the experiment options to ``parser`` (the ``experiment`` subcommand)."""
    parser.description = (
        "Cross-validate models trained with baseline and compiled metric losses and write score tables "
        "(Markdown, CSV), learning and validation curves (PNG), a learning-time table and, over many "
        "datasets, a summary of wins/ties/losses against each baseline into --out. Defaults follow "
        "the AnyLoss paper (KDD 2024): per-loss learning rates, SLP 1,000 epochs full batch, MLP 100 "
        "epochs, 10 folds. Needs the optional extra: pip install 'metricc[experiments]'.")
    data = parser.add_argument_group("data")
    data.add_argument("--datasets", default=None, metavar="NAMES",
                      help="comma-separated named datasets: random, breast_cancer, digits, digits:N "
                           "(default: random unless --data or --data-dir is given)")
    data.add_argument("--data", action="append", type=Path, default=[], metavar="CSV",
                      help="a CSV file with a header and a 0/1 label column (repeatable); text columns are "
                           "one-hot encoded, missing numbers ('?', empty, NA) imputed per training fold")
    data.add_argument("--data-dir", action="append", type=Path, default=[], metavar="DIR",
                      help="every *.csv directly in DIR (not in subfolders), as if each were given with --data "
                           "(repeatable)")
    data.add_argument("--label-column", default="label", help="label column of the CSV files (default: label)")
    data.add_argument("--drop-columns", default="", metavar="COLS",
                      help="comma-separated columns of the CSV files to ignore, e.g. an id column; each must "
                           "exist in at least one file")
    data.add_argument("--subsample", type=_positive_int, default=None, metavar="N",
                      help="use a stratified random subset of N rows of each dataset (quick runs)")
    training = parser.add_argument_group("training")
    training.add_argument("--model", type=_models, default=["slp"], metavar="MODELS",
                          help="slp (one linear layer), mlp (2 hidden sigmoid nodes, batch norm), "
                               "resnet (image data only), or several comma-separated, e.g. slp,mlp (default: slp)")
    training.add_argument("--losses", default="bce,mse,f1,balanced_accuracy", metavar="NAMES",
                          help="comma-separated: bce, mse, wbce, focal[:gamma=G,alpha=A], lee-fbeta[:beta=B], "
                               "the ranking baselines wmw[:scale=S,max_pairs=K], wmw-hinge[:margin=M], "
                               "auc-m[:margin=M,step=E], "
                               "a catalog metric (AnyLoss relaxation), sol-<metric>, <metric>@<relaxation> "
                               "(e.g. f1@sigmoid:L=30,threshold=0.4), or name=expression "
                               "(e.g. myf=2*TP/(2*TP+FP+FN)); any entry may end in a recipe "
                               "[mix=0.5,warmup=10,lr=...,batch=...,epochs=...]; separate entries with ';' "
                               "instead of ',' where a name could be read as an option "
                               "(default: bce,mse,f1,balanced_accuracy)")
    training.add_argument("--param", "-p", action="append", type=_param, default=[], metavar="NAME=VALUE",
                          help="a parameter value of the name=expression entries in --losses (repeatable)")
    training.add_argument("--folds", type=_positive_int, default=10, help="stratified k-fold splits (default 10)")
    training.add_argument("--epochs", type=_positive_int, default=None,
                          help="epochs for every loss (default: the paper's: SLP 1000, MLP 100; ResNet 15)")
    training.add_argument("--lr", type=_positive_float, default=None,
                          help="learning rate for every loss (default: the paper's per-loss rates)")
    training.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|FRACTION",
                          help="rows per batch, or a fraction of the training fold such as 0.05 "
                               "(default: SLP full batch; MLP 5%%, 50%% for gmean/balanced_accuracy; ResNet 64)")
    training.add_argument("--estimator", choices=ESTIMATORS, default="batch",
                          help="how compiled metric losses estimate the confusion matrix: batch (each batch's "
                               "own; default) or running (a moving average of the rates across steps, for small "
                               "batches; see docs/minibatch.md); baselines are unaffected")
    training.add_argument("--momentum", type=_momentum, default=None, metavar="M",
                          help=f"the running estimate's momentum in [0, 1) (default {DEFAULT_MOMENTUM:g}; needs "
                               "--estimator running)")
    training.add_argument("--reset-estimate", choices=RESETS, default="never",
                          help="forget the running estimate at the start of every epoch (epoch) or keep it "
                               "across epochs (never; default); needs --estimator running")
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
    tasks = parser.add_argument_group("multi-class and multi-label (docs/multiclass.md)")
    tasks.add_argument("--task", choices=EXPERIMENT_TASKS, default="binary",
                       help="binary (default); multiclass: CSV files with an integer label column 0..C-1 (or "
                            "--datasets digits, all ten digits); multilabel: CSV files with 0/1 label_* columns. "
                            "A 'split' column (train/test) is used as the split. Losses: ce, wce (multiclass), "
                            "bce, bce-pw, sigmoidf1 (multilabel), [macro-|micro-|weighted-]<metric>[@relaxation]; "
                            "segmentation: a U-Net on nuclei images (options below); constrained: an objective "
                            "subject to --constraint, against baselines with thresholds picked on the training data; "
                            "fairness: accuracy under a gap bound across --protected "
                            "groups (docs/constraints.md)")
    tasks.add_argument("--repeats", type=_positive_int, default=3,
                       help="--task multiclass/multilabel: training runs on a table's own train/test split "
                            "(different initial weights and batch orders; default 3)")
    tasks.add_argument("--hidden", type=_positive_int, default=64,
                       help="--task multiclass/multilabel: hidden units of the MLP (default 64)")
    tasks.add_argument("--probe", action="store_true",
                       help="--task multiclass: record how near each metric loss's soft confusion matrix is to "
                            "the argmax one along training")
    from .constrained_runner import add_arguments as add_constraint_arguments

    add_constraint_arguments(parser)
    from .segmentation_cli import add_arguments as add_segmentation_arguments

    add_segmentation_arguments(parser)
    evaluation = parser.add_argument_group("evaluation and output")
    evaluation.add_argument("--threshold", type=_threshold, default=0.5, metavar="T|compiled|tuned",
                            help="threshold on σ(logit) for the main tables' hard predictions (default 0.5); "
                                 "'compiled': each compiled loss at the threshold it was compiled for, baselines "
                                 "at 0.5; 'tuned': every loss at the threshold that maximises each metric on its "
                                 "training fold. Scores at 0.5 and tuned are recorded either way (folds CSV, "
                                 "summary)")
    evaluation.add_argument("--tie-rule", choices=TIE_RULES, default="se",
                            help="when a dataset counts as a tie in the summary: se (default: the mean paired "
                                 "fold difference within one standard error of 0) or wilcoxon (signed-rank "
                                 "test over folds, p >= 0.05; needs 6 or more folds to ever decide)")
    evaluation.add_argument("--as-baseline", default="", metavar="NAMES",
                            help="comma-separated compiled losses the summary counts as baselines, e.g. f1 to "
                                 "compare recipes such as f1[warmup=10] with the default loss")
    evaluation.add_argument("--curve-points", type=int, default=50, metavar="N",
                            help="record the held-out metrics at about N evenly spaced epochs (validation "
                                 "curves; default 50, 0: none)")
    evaluation.add_argument("--summary-from", action="append", type=Path, default=[], metavar="DIR",
                            help="train nothing: rebuild summary.md/.csv/.png in --out from the folds_*.csv "
                                 "files in DIR (repeatable; e.g. an SLP run and an MLP run made in parallel)")
    evaluation.add_argument("--out", type=Path, default=Path("results"),
                            help="output folder, created if missing (default: results)")
    evaluation.add_argument("--force", action="store_true", help="overwrite result files already in --out")
    evaluation.add_argument("--progress-every", type=int, default=0, metavar="EPOCHS",
                            help="also print the training loss every this many epochs (default: per fold only)")
    evaluation.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def _error(message: str) -> int:
    print(f"metricc experiment: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _csv_paths(args) -> list[Path]:
    from .datasets import csv_files_in

    paths = list(args.data)
    for directory in args.data_dir:
        paths.extend(csv_files_in(directory))
    return paths


def _load_datasets(args) -> list:
    """The named datasets and the CSV tables; raises DatasetError (with the flag in the message)."""
    from .datasets import DatasetError, load_csv, load_dataset

    datasets = []
    names = [n.strip() for n in (args.datasets or "").split(",") if n.strip()]
    try:
        paths = _csv_paths(args)
    except DatasetError as exc:
        raise DatasetError(f"--data-dir: {exc}") from None
    if not names and not paths:
        names = ["random"]
    for name in names:
        try:
            datasets.append(load_dataset(name))
        except DatasetError as exc:
            raise DatasetError(f"--datasets: {exc}") from None
    drop = tuple(c.strip() for c in args.drop_columns.split(",") if c.strip())
    for path in paths:
        try:
            datasets.append(load_csv(path, args.label_column, drop, require_drop_columns=len(paths) == 1))
        except DatasetError as exc:
            raise DatasetError(f"--data: {exc}") from None
    if drop and len(paths) > 1:
        known = set()
        for path in paths:
            with open(path, encoding="utf-8") as handle:
                known.update(column.strip() for column in handle.readline().strip().split(","))
        missing = [column for column in drop if column not in known]
        if missing:
            raise DatasetError(f"--drop-columns: no CSV file has column(s) {', '.join(missing)}")
    if args.subsample:
        datasets = [d.subsample(args.subsample) for d in datasets]
    seen = set()
    for dataset in datasets:
        if dataset.name in seen:
            raise DatasetError(f"--data: dataset {dataset.name!r} is given twice")
        seen.add(dataset.name)
    return datasets


def run_from_args(args) -> int:
    """Run ``metricc experiment``; 0 on success, 2 on bad input (message on stderr)."""
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        return _error(f"experiments need the optional extra: pip install 'metricc[experiments]' ({exc})")
    if args.task in ("constrained", "fairness"):
        from .constrained_runner import run_from_args as run_constraint_task

        return run_constraint_task(args)
    if args.task == "segmentation":
        from .segmentation_cli import run_from_args as run_segmentation_from_args

        return run_segmentation_from_args(args)
    if args.task != "binary":
        from .multiclass_protocol import run_task_from_args

        return run_task_from_args(args)
    if args.summary_from:
        return _summary_only(args)
    import torch

    from ..cli import unique_params
    from .datasets import DatasetError, check_folds
    from .losses import LossNameError, parse_losses
    from .protocol import ExperimentConfig, run_dataset
    from .report import ensure_writable, output_paths, write_all
    from .summary import ScoreTable, summary_paths, write_summary
    from .training import check_device

    if args.estimator != "running" and (args.momentum is not None or args.reset_estimate != "never"):
        option = "--momentum" if args.momentum is not None else "--reset-estimate"
        return _error(f"{option} applies to the running estimator; add --estimator running")
    try:
        params = unique_params(args.param)
    except ValueError as exc:  # a --param given twice
        return _error(str(exc))
    try:
        losses = parse_losses(args.losses, params)
    except LossNameError as exc:
        message = str(exc)
        return _error(message if message.startswith("--") else f"--losses: {message}")
    unknown = [name for name in _names(args.as_baseline) if name not in {spec.name for spec in losses}]
    if unknown:
        return _error(f"--as-baseline: {', '.join(unknown)} is not in --losses")
    try:
        datasets = _load_datasets(args)
        for dataset in datasets:
            try:
                check_folds(dataset, args.folds)
            except DatasetError as exc:
                raise DatasetError(f"--folds: {exc}") from None
            if "resnet" in args.model and dataset.image_shape is None:
                raise DatasetError(f"--model resnet needs image data; {dataset.name} is a table "
                                   "(use --model slp or mlp, or --datasets digits)")
        for model in args.model:  # fail before training, not after
            ensure_writable(output_paths(args.out, model), args.force)
        if _wants_summary(losses):
            ensure_writable(summary_paths(args.out), args.force)
    except (DatasetError, FileExistsError, ValueError) as exc:
        return _error(str(exc))
    try:
        device = check_device(args.device)
    except ValueError as exc:
        return _error(str(exc))
    torch.set_num_threads(args.threads)
    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    command = command_line(args)
    all_results = []
    for model in args.model:
        config = ExperimentConfig(model=model, folds=args.folds, seed=args.seed, epochs=args.epochs,
                                  learning_rate=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
                                  zero_init_output=None if args.output_init is None else args.output_init == "zero",
                                  threshold=args.threshold, dtype=getattr(torch, args.dtype), device=str(device),
                                  progress_every=args.progress_every, curve_points=args.curve_points,
                                  **_estimator_options(args))
        results = [run_dataset(dataset, losses, config, progress) for dataset in datasets]
        written = write_all(results, config, args.out, command=command, overwrite=args.force)
        _print_summary(results, written)
        all_results.extend(results)
    if _wants_summary(losses):
        main_rule = "tuned" if args.threshold == "tuned" else "fixed"
        table = ScoreTable.from_results(all_results).counting_as_baselines(_names(args.as_baseline))
        written = write_summary(table, args.out, args.tie_rule, command=command,
                                main_rule=main_rule, overwrite=args.force)
        for path in written.values():
            print(f"wrote {path}")
    return EXIT_OK


def _estimator_options(args) -> dict:
    """ExperimentConfig's estimator fields from the command line."""
    if args.estimator != "running":
        return {}
    momentum = DEFAULT_MOMENTUM if args.momentum is None else args.momentum
    return {"estimator": "running", "momentum": momentum, "reset_estimate": args.reset_estimate}


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _wants_summary(losses) -> bool:
    """A summary needs at least one compiled loss and one baseline."""
    return any(spec.is_compiled for spec in losses) and any(not spec.is_compiled for spec in losses)


def _summary_only(args) -> int:
    """``--summary-from DIR ...``: rebuild the summary from folds CSV files, training nothing."""
    from .report import ensure_writable
    from .summary import ScoreTable, summary_paths, write_summary

    paths = []
    for directory in args.summary_from:
        found = sorted(Path(directory).glob("folds_*.csv")) if Path(directory).is_dir() else []
        if not found:
            return _error(f"--summary-from: no folds_*.csv files in {directory}")
        paths.extend(found)
    try:
        table = ScoreTable.from_folds_csv(paths).counting_as_baselines(_names(args.as_baseline))
        ensure_writable(summary_paths(args.out), args.force)
    except (ValueError, KeyError, FileExistsError) as exc:
        return _error(f"--summary-from: {exc}" if not isinstance(exc, FileExistsError) else str(exc))
    command = " ".join(shlex.quote(part) for part in ["metricc", "experiment", *[
        item for directory in args.summary_from for item in ("--summary-from", str(directory))],
        *(["--as-baseline", args.as_baseline] if args.as_baseline else []), "--tie-rule", args.tie_rule,
        "--out", str(args.out)])
    main_rule = "tuned" if args.threshold == "tuned" else "fixed"
    written = write_summary(table, args.out, args.tie_rule, command=command, main_rule=main_rule,
                            overwrite=args.force)
    for path in written.values():
        print(f"wrote {path}")
    return EXIT_OK


def command_line(args) -> str:
    """The command that reproduces this run, every setting spelled out (for the result files)."""
    parts = ["metricc", "experiment"]
    if args.datasets:
        parts += ["--datasets", args.datasets]
    for path in args.data:
        parts += ["--data", str(path)]
    for path in args.data_dir:
        parts += ["--data-dir", str(path)]
    if args.data or args.data_dir:
        parts += ["--label-column", args.label_column]
        if args.drop_columns:
            parts += ["--drop-columns", args.drop_columns]
    if args.subsample:
        parts += ["--subsample", str(args.subsample)]
    parts += ["--model", ",".join(args.model), "--losses", args.losses]
    for name, value in args.param:
        parts += ["--param", f"{name}={value:g}"]
    parts += ["--folds", str(args.folds)]
    for option, value in (("--epochs", args.epochs), ("--lr", args.lr), ("--batch-size", args.batch_size),
                          ("--optimizer", args.optimizer)):
        if value is not None:
            parts += [option, str(value)]
    if args.estimator != "batch":
        parts += ["--estimator", args.estimator, "--momentum", f"{_estimator_options(args)['momentum']:g}"]
        if args.reset_estimate != "never":
            parts += ["--reset-estimate", args.reset_estimate]
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
    if args.tie_rule != "se":
        parts += ["--tie-rule", args.tie_rule]
    if args.as_baseline:
        parts += ["--as-baseline", args.as_baseline]
    if args.curve_points != 50:
        parts += ["--curve-points", str(args.curve_points)]
    parts += ["--out", str(args.out)]
    return " ".join(shlex.quote(part) for part in parts)


def _print_summary(results, written) -> None:
    """The headline on standard output: each row's mean per loss, best marked."""
    for result in results:
        print(f"{result.dataset} [{result.model}] ({result.summary})")
        for row in result.rows:
            best = set(result.best(row))
            cells = [f"{spec.name} {result.scores(spec.name, row).mean():.3f}{'*' if spec.name in best else ''}"
                     for spec in result.losses]
            print(f"  {result.evaluators[row].label:<18} " + "  ".join(cells))
    for path in written.values():
        print(f"wrote {path}")
