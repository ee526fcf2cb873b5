"""``metricc experiment --task constrained|fairness``: the command line of the constraint experiments.

    metricc experiment --task constrained --data-dir ../shared/data --drop-columns id --objective recall \\
        --constraint "precision >= 0.8" --constraint "precision >= 0.9" --losses bce,wbce,focal --out results/c
    metricc experiment --task fairness --data ../shared/data/fairness/adult.csv --protected sex,race --gap eo,dp \\
        --levels 0.02,0.05,0.1 --out results/f

Options shared with the other tasks keep their meaning (``--folds``, ``--epochs``, ``--lr``, ``--optimizer``,
``--seed``, ``--out``, ``--force``); the Lagrangian's own are ``--relaxation``, ``--multiplier-lr``, ``--penalty``
and ``--constraint-rates``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR = 0, 2
DEFAULT_LOSSES = "bce,mse,f1,balanced_accuracy"  # runner.py's default for --losses


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("constraints and fairness (--task constrained|fairness; docs/constraints.md)")
    group.add_argument("--objective", default=None,
                       help="the metric maximised (--task constrained: default recall; fairness: accuracy)")
    group.add_argument("--constraint", action="append", default=[], metavar="EXPR",
                       help="--task constrained: a constraint such as 'precision >= 0.9' (repeatable: one run of the "
                            "Lagrangian per constraint)")
    group.add_argument("--protected", default="sex", metavar="COLUMNS",
                       help="--task fairness: comma-separated protected attribute columns (default sex)")
    group.add_argument("--gap", default="eo", metavar="KINDS",
                       help="--task fairness: eo (TPR gap, equal opportunity), dp (positive-rate gap, demographic "
                            "parity), or both comma-separated (default eo)")
    group.add_argument("--levels", default="0.02,0.05,0.1", metavar="EPS",
                       help="--task fairness: the gap bounds (default 0.02,0.05,0.1)")
    group.add_argument("--strengths", default="0.1,1,10", metavar="W",
                       help="--task fairness: fairret's strengths (default 0.1,1,10)")
    group.add_argument("--methods", default=None, metavar="NAMES",
                       help="--task fairness: bce, lagrangian, bce+constraints, fairlearn-eg, fairlearn-to, fairret "
                            "(default: all)")
    group.add_argument("--runs", type=int, default=3,
                       help="--task fairness: runs on random 80%% subsets of the training rows (default 3)")
    group.add_argument("--relaxation", default="anyloss", help="the Lagrangian's relaxation (default anyloss)")
    group.add_argument("--multiplier-lr", type=float, default=None, metavar="ETA",
                       help="the multipliers' step size (default: compile_metric's)")
    group.add_argument("--penalty", type=float, default=None, metavar="RHO",
                       help="augment the Lagrangian with a quadratic penalty (default: compile_metric's)")
    group.add_argument("--constraint-rates", choices=("hard", "relaxed"), default=None,
                       help="the rates the multipliers ascend (default: compile_metric's, hard)")


def _error(message: str) -> int:
    print(f"metricc experiment: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _numbers(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{flag} needs comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} is empty")
    return values


def _lagrangian_options(args) -> dict:
    from metricc.emit_problem import ProblemOptions

    defaults = ProblemOptions()
    return dict(relaxation=args.relaxation,
                multiplier_lr=defaults.multiplier_lr if args.multiplier_lr is None else args.multiplier_lr,
                penalty=defaults.penalty if args.penalty is None else args.penalty,
                **({} if args.constraint_rates is None else {"constraint_rates": args.constraint_rates}))


def _writable(paths, force: bool) -> None:
    for path in paths:
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists; pass --force to overwrite")


def run_from_args(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    command = " ".join(shlex.quote(part) for part in ["metricc", "experiment", *sys.argv[2:]])
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.summary_from:
            return _summary_only(args, out, command)
        if args.task == "constrained":
            return _constrained(args, out, command, progress)
        return _fairness(args, out, command, progress)
    except (ValueError, FileExistsError, OSError) as exc:
        return _error(str(exc))


def _summary_only(args, out: Path, command: str) -> int:
    """``--summary-from DIR ...``: the summary and plot of earlier runs' records, training nothing."""
    from .constrained import read_records
    from .constrained_report import constrained_summary, fairness_summary, plot_constrained, plot_fairness
    from .fairness import read_fairness_records

    constrained = args.task == "constrained"
    name = "constrained_folds.csv" if constrained else "fairness_runs.csv"
    records = []
    for directory in args.summary_from:
        path = Path(directory) / name
        if not path.is_file():
            raise ValueError(f"--summary-from: no {name} in {directory}")
        records += read_records(path) if constrained else read_fairness_records(path)
    stem = "constrained" if constrained else "fairness"
    paths = [out / f"{stem}_summary.md", out / f"{stem}.png"]
    _writable(paths, args.force)
    paths[0].write_text((constrained_summary if constrained else fairness_summary)(records, command),
                        encoding="utf-8")
    (plot_constrained if constrained else plot_fairness)(records, paths[1])
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK


def _constrained(args, out: Path, command: str, progress) -> int:
    import torch

    from .constrained import ConstrainedConfig, run_constrained, write_records
    from .constrained_report import constrained_summary, plot_constrained
    from .losses import parse_losses
    from .runner import _load_datasets

    if not args.constraint:
        raise ValueError("--task constrained needs at least one --constraint, e.g. 'precision >= 0.9'")
    paths = [out / "constrained_folds.csv", out / "constrained_summary.md", out / "constrained.png"]
    _writable(paths, args.force)
    losses = parse_losses("bce,wbce,focal" if args.losses == DEFAULT_LOSSES else args.losses)
    config = ConstrainedConfig(objective=args.objective or "recall", constraints=tuple(args.constraint),
                               model=args.model[0], folds=args.folds, seed=args.seed, epochs=args.epochs or 1000,
                               learning_rate=args.lr or 0.01, optimizer=args.optimizer or "adam",
                               batch_size=args.batch_size, dtype=getattr(torch, args.dtype),
                               **_lagrangian_options(args))
    records = []
    for dataset in _load_datasets(args):
        records += run_constrained(dataset, losses, config, progress)
        write_records(records, paths[0])  # as it goes: a long run keeps what it finished
    paths[1].write_text(constrained_summary(records, command), encoding="utf-8")
    plot_constrained(records, paths[2])
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK


def _fairness(args, out: Path, command: str, progress) -> int:
    from .constrained_report import fairness_summary, plot_fairness
    from .fairness import METHODS, FairnessConfig, load_fairness_table, run_fairness, write_fairness_records

    if len(args.data) != 1:
        raise ValueError("--task fairness needs one --data table with a protected attribute and a split column, "
                         "e.g. --data ../shared/data/fairness/adult.csv")
    gaps = [g.strip() for g in args.gap.split(",") if g.strip()]
    if not gaps or set(gaps) - {"eo", "dp"}:
        raise ValueError(f"--gap takes eo, dp or both, got {args.gap!r}")
    methods = tuple(m.strip() for m in (args.methods or ",".join(METHODS)).split(",") if m.strip())
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    paths = [out / "fairness_runs.csv", out / "fairness_summary.md", out / "fairness.png"]
    _writable(paths, args.force)
    options = _lagrangian_options(args)
    options.pop("constraint_rates", None)
    records = []
    for protected in [p.strip() for p in args.protected.split(",") if p.strip()]:
        data = load_fairness_table(args.data[0], protected)
        for gap in gaps:
            config = FairnessConfig(protected=protected, gap=gap, objective=args.objective or "accuracy",
                                    levels=_numbers(args.levels, "--levels"),
                                    strengths=_numbers(args.strengths, "--strengths"), methods=methods,
                                    runs=args.runs, epochs=args.epochs or 500, learning_rate=args.lr or 0.01,
                                    seed=args.seed, **options)
            records += run_fairness(data, config, progress)
            write_fairness_records(records, paths[0])
    paths[1].write_text(fairness_summary(records, command), encoding="utf-8")
    plot_fairness(records, paths[2])
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK


__all__ = ["add_arguments", "run_from_args"]
