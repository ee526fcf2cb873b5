"""The multi-class and multi-label experiments: ``metricc experiment --task multiclass|multilabel``.

Protocol. A table with the source's train/test split (UCI optdigits, MULAN's multi-label tables) is
trained ``--repeats`` times on its training rows with different initial weights and batch orders and
scored on its test rows; a table without one is cross-validated (``--folds``, stratified for
multi-class). Within a run every loss starts from the same initial weights and sees the same batch order.
Features are imputed and standardized on the training rows only (images: one mean and scale). Models
end in one logit per class: ``mlp`` (Linear → BatchNorm → ReLU → Linear, ``--hidden`` units), ``slp``
(one linear layer) and ``resnet`` (the binary experiments' small ResNet with a C-way head; images only).
Defaults: Adam, 100 epochs and batches of 256 rows for the MLP, 30 epochs and 64 rows for the ResNet,
learning rate 3e-3 (MLP) and 1e-3 (ResNet), the same for every loss. Scores: :mod:`.multiclass_evaluation`.

``--probe`` also records, for every multi-class metric loss, how near its soft confusion matrix is to
the argmax one on the training rows along training (:func:`.multiclass_relaxations.closeness`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import check_writable, write_file
from .multiclass_data import DatasetError, TaskDataset, load_named, load_task_csv, runs
from .multiclass_evaluation import evaluation_rows, row_label, score
from .multiclass_losses import TaskLoss, TaskLossError, build_task_loss, parse_task_losses
from .multiclass_relaxations import PrototypeMetricLoss, SoftPrediction, closeness, parse_soft_prediction
from .training import TrainingError, TrainingRun, check_device, predict_logits

MODELS = ("slp", "mlp", "resnet")
EPOCHS = {"slp": 100, "mlp": 100, "resnet": 30}
LEARNING_RATE = {"slp": 3e-3, "mlp": 3e-3, "resnet": 1e-3}
BATCH_SIZE = {"slp": 256, "mlp": 256, "resnet": 64}
HIDDEN = 64


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What besides the data and the losses decides the numbers (None: the model's default)."""

    model: str = "mlp"
    folds: int = 5
    repeats: int = 3
    seed: int = 0
    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    hidden: int = HIDDEN
    dtype: torch.dtype = torch.float64
    device: str = "cpu"
    probe_epochs: tuple[int, ...] = ()

    def resolved(self) -> tuple[int, float, int]:
        return (self.epochs or EPOCHS[self.model], self.learning_rate or LEARNING_RATE[self.model],
                self.batch_size or BATCH_SIZE[self.model])


@dataclasses.dataclass
class RunResult:
    loss: str
    run: int
    label: str
    scores: dict[str, float]
    seconds: float  # training time (process CPU time of the optimisation steps)
    final_loss: float
    failed: str | None = None
    probes: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TaskResult:
    dataset: str
    summary: str
    task: str
    model: str
    losses: list[TaskLoss]
    rows: list[str]
    runs: list[RunResult]
    protocol: str

    def scores(self, loss: str, row: str) -> np.ndarray:
        return np.array([r.scores[row] for r in self.runs if r.loss == loss])


class MLP(nn.Module):
    """Linear → BatchNorm → ReLU → Linear: one logit per class (PyTorch's default initialisation)."""

    def __init__(self, n_features: int, num_classes: int, hidden: int = HIDDEN):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                    nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.layers(x)


def build_task_model(name: str, n_features: int, num_classes: int, image_shape=None, hidden: int = HIDDEN):
    if name == "slp":
        return nn.Linear(n_features, num_classes)
    if name == "mlp":
        return MLP(n_features, num_classes, hidden)
    if name == "resnet":
        from .models import ResNet

        if image_shape is None:
            raise ValueError("the resnet model needs image data (--datasets digits)")
        model = ResNet(image_shape)
        model.head = nn.Linear(model.head.in_features, num_classes)  # its forward's squeeze(-1) keeps (N, C)
        return model
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def _standardize(train: np.ndarray, test: np.ndarray, image: bool):
    from .datasets import impute_missing

    train, test = impute_missing(train, test)
    if image:
        mean, scale = train.mean(), train.std() or 1.0
    else:
        mean, scale = train.mean(0), train.std(0)
        scale = np.where(scale > 0, scale, 1.0)
    return (train - mean) / scale, (test - mean) / scale


def probe_relaxation(spec: TaskLoss) -> SoftPrediction | None:
    """The soft prediction a multi-class compiled loss trains on (None for baselines)."""
    if not spec.is_compiled:
        return None
    relaxation = spec.relaxation.strip()
    if spec.is_prototype:
        return parse_soft_prediction(relaxation)
    kind, _, option = relaxation.partition(":")
    if kind in ("anyloss", "sigmoid"):
        scale = 73.0
        for item in option.split(","):
            key, _, value = item.partition("=")
            if key.strip() == "L":
                scale = float(value)
        return SoftPrediction("amplifier", scale)
    if kind == "identity":
        return SoftPrediction("identity")
    return None


def run_task_dataset(dataset: TaskDataset, losses: list[TaskLoss], config: TaskConfig,
                     progress=None) -> TaskResult:
    """Train and score every loss on every run (split repeat or fold) of ``dataset``."""
    say = progress or (lambda message: None)
    if config.model == "resnet" and dataset.image_shape is None:
        raise ValueError(f"the resnet model needs image data; {dataset.name} is a table")
    epochs, rate, batch = config.resolved()
    rows = evaluation_rows(dataset.task, [spec.target for spec in losses])
    protocol = (f"source split, {config.repeats} repeats" if dataset.test is not None
                else f"{config.folds}-fold cross-validation (seed {config.seed})")
    result = TaskResult(dataset.name, dataset.summary(), dataset.task, config.model, list(losses), rows, [],
                        protocol)
    label = f"[{dataset.name} | {config.model}]"
    say(f"{label} {dataset.summary()}; {protocol}; {len(losses)} losses, {epochs} epochs, lr {rate:g}, "
        f"batch {batch}")
    classes = dataset.num_classes
    for run in runs(dataset, config.folds, config.repeats, config.seed):
        X_train, X_test = _standardize(dataset.X[run.train], dataset.X[run.test], dataset.image_shape is not None)
        as_tensor = dict(dtype=config.dtype, device=config.device)
        X_train_t, X_test_t = torch.tensor(X_train, **as_tensor), torch.tensor(X_test, **as_tensor)
        y_train, y_test = dataset.y[run.train], dataset.y[run.test]
        if dataset.task == "multiclass":
            y_train_t = torch.tensor(y_train, dtype=torch.int64, device=config.device)
        else:
            y_train_t = torch.tensor(y_train, **as_tensor)
        for spec in losses:
            seed = config.seed * 1000 + run.index
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_task_model(config.model, dataset.n_features, classes, dataset.image_shape,
                                         config.hidden).to(config.dtype).to(config.device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss_fn = build_task_loss(spec, dataset.task, classes, y_train)
            training = TrainingRun(model, loss_fn, X_train_t, y_train_t, learning_rate=rate,
                                   batch_size=min(batch, len(run.train)),
                                   generator=torch.Generator().manual_seed(seed), optimizer="adam")
            soft = probe_relaxation(spec) if dataset.task == "multiclass" and config.probe_epochs else None
            table_loss = None
            if soft is not None:
                table_loss = PrototypeMetricLoss(spec.metric, classes, spec.average, soft).table_loss
            probes, failed, cpu = [], None, 0.0
            for epoch in range(1, epochs + 1):
                started = time.process_time()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        training.epoch()
                except TrainingError as exc:
                    failed = str(exc)
                    say(f"{label} {run.label} {spec.name}: {exc}; scored as it stands")
                    break
                cpu += time.process_time() - started
                if soft is not None and epoch in config.probe_epochs:
                    logits = predict_logits(model, X_train_t)
                    probes.append({"epoch": epoch, "rows": "train",
                                   **closeness(soft, logits, y_train_t, table_loss)})
            logits = predict_logits(model, X_test_t)
            if soft is not None:
                y_test_t = torch.tensor(y_test, dtype=torch.int64, device=config.device)
                probes.append({"epoch": len(training.losses), "rows": "test",
                               **closeness(soft, logits, y_test_t, table_loss)})
            scores = score(y_test, logits.cpu().numpy(), dataset.task, rows)
            final = training.losses[-1] if training.losses else math.nan
            result.runs.append(RunResult(spec.name, run.index, run.label, scores, cpu, final, failed, probes))
            shown = ", ".join(f"{row} {scores[row]:.3f}" for row in dict.fromkeys(rows[:2] + [spec.target or rows[0]]))
            say(f"{label} {run.label} {spec.name:<24} loss {final:.4f}: {shown} ({cpu:.2f} s CPU)")
    return result


# --- reports ---------------------------------------------------------------------------------------------------

def _mean_sd(values: np.ndarray) -> str:
    if len(values) == 0:
        return "–"
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{float(np.mean(values)):.3f} ± {spread:.3f}"


def markdown_table(result: TaskResult) -> str:
    """Rows = scores, columns = losses; mean ± standard deviation over runs; the best mean in bold."""
    names = [spec.name for spec in result.losses]
    lines = [f"### {result.dataset} ({result.model}; {result.protocol})", "", result.summary, "",
             "| score | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in result.rows:
        means = {name: float(np.mean(result.scores(name, row))) for name in names}
        best = max(round(v, 3) for v in means.values())
        cells = []
        for name in names:
            cell = _mean_sd(result.scores(name, row))
            cells.append(f"**{cell}**" if round(means[name], 3) == best else cell)
        lines.append(f"| {row_label(row)} | " + " | ".join(cells) + " |")
    seconds = [statistics.median([r.seconds for r in result.runs if r.loss == name]) for name in names]
    lines.append("| training CPU s (median) | " + " | ".join(f"{s:.1f}" for s in seconds) + " |")
    return "\n".join(lines) + "\n"


def comparison_lines(result: TaskResult) -> list[str]:
    """Each compiled loss against each baseline on its target and on macro-F1: the mean paired difference
    over runs ± its standard error; 'better'/'worse' beyond one standard error, else 'tie'."""
    lines = []
    baselines = [spec for spec in result.losses if not spec.is_compiled]
    for spec in result.losses:
        if not spec.is_compiled:
            continue
        for row in dict.fromkeys([spec.target, "macro-f1"]):
            for baseline in baselines:
                difference = result.scores(spec.name, row) - result.scores(baseline.name, row)
                mean = float(difference.mean())
                error = float(difference.std(ddof=1) / math.sqrt(len(difference))) if len(difference) > 1 else 0.0
                verdict = "tie" if abs(mean) <= error else ("better" if mean > 0 else "worse")
                lines.append(f"| {result.dataset} | {spec.name} | {row_label(row)} | {baseline.name} | "
                             f"{mean:+.3f} ± {error:.3f} | {verdict} |")
    return lines


def write_reports(results: list[TaskResult], out: Path, command: str, overwrite: bool) -> dict[str, Path]:
    """``multi_<task>_<model>.md`` (tables and comparisons), ``..._runs.csv`` (every run's scores) and, with
    probes, ``..._probes.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for key in sorted({(r.task, r.model) for r in results}):
        group = [r for r in results if (r.task, r.model) == key]
        stem = f"multi_{key[0]}_{key[1]}"
        paths = {"md": out / f"{stem}.md", "runs": out / f"{stem}_runs.csv"}
        if any(run.probes for r in group for run in r.runs):
            paths["probes"] = out / f"{stem}_probes.csv"
        check_writable(paths.values(), overwrite)
        parts = [f"# {key[0]} experiments, {key[1]}", "", f"`{command}`", ""]
        parts += [markdown_table(r) for r in group]
        comparison = [line for r in group for line in comparison_lines(r)]
        if comparison:
            parts += ["### Compiled losses against the baselines (mean paired difference ± standard error)", "",
                      "| dataset | loss | score | baseline | difference | verdict |", "|---|---|---|---|---:|---|",
                      *comparison, ""]
        write_file(paths["md"], "\n".join(parts), overwrite=overwrite)
        runs = io.StringIO(newline="")
        writer = csv.writer(runs)
        rows = sorted({row for r in group for row in r.rows})
        writer.writerow(["dataset", "model", "loss", "run", "split", "cpu_seconds", "final_loss", "failed", *rows])
        for r in group:
            for run in r.runs:
                writer.writerow([r.dataset, r.model, run.loss, run.run, run.label, f"{run.seconds:.3f}",
                                 f"{run.final_loss:.6g}", run.failed or "",
                                 *[f"{run.scores[row]:.6f}" if row in run.scores else "" for row in rows]])
        write_file(paths["runs"], runs.getvalue(), overwrite=overwrite)
        if "probes" in paths:
            probes = io.StringIO(newline="")
            writer = csv.writer(probes)
            fields = ["epoch", "rows", "mass_off_argmax", "entry_gap", "metric_gap", "soft_metric", "hard_metric",
                      "classes_predicted", "wrong_row_gradient"]
            writer.writerow(["dataset", "model", "loss", "run", *fields])
            for r in group:
                for run in r.runs:
                    for probe in run.probes:
                        writer.writerow([r.dataset, r.model, run.loss, run.run,
                                         *[probe[f] if isinstance(probe[f], (int, str)) else f"{probe[f]:.6g}"
                                           for f in fields]])
            write_file(paths["probes"], probes.getvalue(), overwrite=overwrite)
        written.update({f"{stem}.{k}": p for k, p in paths.items()})
    return written


# --- command line ----------------------------------------------------------------------------------------------

def _error(message: str) -> int:
    print(f"metricc experiment: error: {message}", file=sys.stderr)
    return 2


def load_task_datasets(args, task: str) -> list[TaskDataset]:
    from .datasets import csv_files_in

    names = [n.strip() for n in (args.datasets or "").split(",") if n.strip()]
    paths = list(args.data)
    for directory in args.data_dir:
        paths.extend(csv_files_in(directory))
    if not names and not paths:
        raise DatasetError(f"--task {task} needs data: --data, --data-dir or --datasets digits")
    drop = tuple(c.strip() for c in args.drop_columns.split(",") if c.strip())
    datasets = [load_named(name, task) for name in names]
    datasets += [load_task_csv(path, task, args.label_column, drop) for path in paths]
    seen = set()
    for dataset in datasets:
        if dataset.task != task:  # pragma: no cover - load_task_csv reads the task it is given
            raise DatasetError(f"{dataset.name} is a {dataset.task} table, not {task}")
        if dataset.name in seen:
            raise DatasetError(f"dataset {dataset.name!r} is given twice")
        seen.add(dataset.name)
    return datasets


def run_task_from_args(args) -> int:
    """``metricc experiment --task multiclass|multilabel ...``: 0 on success, 2 on bad input."""
    import shlex

    task = args.task
    unsupported = [flag for flag, value, default in (
        ("--threshold", args.threshold, 0.5), ("--summary-from", args.summary_from, []),
        ("--as-baseline", args.as_baseline, ""), ("--subsample", args.subsample, None),
        ("--output-init", args.output_init, None), ("--optimizer", args.optimizer, None),
        ("--param", args.param, [])) if value != default]
    if unsupported:
        return _error(f"{', '.join(unsupported)} apply to binary experiments only (--task binary)")
    models = [m for m in args.model]
    default_losses = "ce,wce,macro-f1,micro-f1" if task == "multiclass" else "bce,bce-pw,sigmoidf1,macro-f1,micro-f1"
    loss_text = default_losses if args.losses == "bce,mse,f1,balanced_accuracy" else args.losses
    try:
        losses = parse_task_losses(loss_text, task)
        datasets = load_task_datasets(args, task)
        if isinstance(args.batch_size, float):
            raise ValueError("--batch-size must be a number of rows for --task multiclass/multilabel")
        for model in models:
            if model == "resnet":
                tables = [d.name for d in datasets if d.image_shape is None]
                if tables:
                    raise ValueError(f"--model resnet needs image data; {', '.join(tables)} are tables")
        for model in models:  # fail before training, not after
            check_writable([Path(args.out) / f"multi_{task}_{model}{suffix}"
                            for suffix in (".md", "_runs.csv", "_probes.csv")], args.force)
        check_device(args.device)
    except (TaskLossError, DatasetError, ValueError, FileExistsError) as exc:
        return _error(str(exc))
    torch.set_num_threads(args.threads)
    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    probe = tuple(sorted({1, 2, 5, 10, 20, 50, 100, 200} | {args.epochs or 0} - {0})) if args.probe else ()
    results = []
    for model in models:
        config = TaskConfig(model=model, folds=args.folds, repeats=args.repeats, seed=args.seed,
                            epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                            hidden=args.hidden, dtype=getattr(torch, args.dtype), device=args.device,
                            probe_epochs=probe)
        results += [run_task_dataset(dataset, losses, config, progress) for dataset in datasets]
    parts = ["metricc", "experiment", "--task", task]
    if args.datasets:
        parts += ["--datasets", args.datasets]
    for path in args.data:
        parts += ["--data", str(path)]
    for directory in args.data_dir:
        parts += ["--data-dir", str(directory)]
    parts += ["--model", ",".join(models), "--losses", loss_text, "--folds", str(args.folds),
              "--repeats", str(args.repeats)]
    for flag, value in (("--epochs", args.epochs), ("--lr", args.lr), ("--batch-size", args.batch_size)):
        if value is not None:
            parts += [flag, str(value)]
    if args.hidden != HIDDEN:
        parts += ["--hidden", str(args.hidden)]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    if args.dtype != "float64":
        parts += ["--dtype", args.dtype]
    if args.probe:
        parts.append("--probe")
    parts += ["--out", str(args.out)]
    command = " ".join(shlex.quote(part) for part in parts)
    try:
        written = write_reports(results, Path(args.out), command, args.force)
    except FileExistsError as exc:
        return _error(str(exc))
    for result in results:
        print(markdown_table(result))
    for path in written.values():
        print(f"wrote {path}")
    return 0
