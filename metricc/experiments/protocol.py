"""The experimental protocol: stratified k-fold cross-validation of every loss on every dataset.

Within a fold every loss starts from the same initial weights and sees the same
batch order (both seeded from ``seed`` and the fold number), so differences
between columns come from the losses; the losses train side by side, one epoch
each in turn, so that their epoch times are measured under the same load.
Missing values are imputed and standardization is fitted on the training fold
only. Scores are metrics of hard predictions on the held-out fold (AUROC and average
precision: of its scores, with no threshold), at a fixed
threshold (0.5, or a compiled loss's own) and at the threshold that maximises
each metric on the training fold ("tuned"); both are always recorded, and
``ExperimentConfig.threshold`` only picks which one the main tables show. The
held-out fold's metrics are also recorded at a few epochs along the way
(validation curves, at the fixed threshold).
"""

from __future__ import annotations

import dataclasses
import statistics
import warnings
from collections.abc import Callable

import numpy as np
import torch

from .datasets import Dataset, check_folds, impute_missing
from .evaluation import (
    EVALUATORS,
    Evaluator,
    counts_at_cut,
    evaluate,
    evaluation_rows,
    expression_evaluator,
    logit_cut,
    predictions_at_cut,
    tune_threshold,
)
from .losses import LossSpec, build_loss
from .models import build_model
from .settings import TrainingSettings, resolve
from .training import History, TrainingError, TrainingRun, predict_logits

Progress = Callable[[str], None]
THRESHOLD_RULES = ("fixed", "tuned")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything besides the data and the losses that decides the numbers.

    ``threshold`` is the evaluation threshold on σ(logit) of the main tables; ``"compiled"``:
    each compiled loss at the threshold its relaxation was compiled for (baselines at 0.5);
    ``"tuned"``: every loss at the threshold that maximises each metric on its training
    fold. ``epochs``, ``learning_rate`` and ``batch_size`` override the paper's per-loss
    settings (``batch_size`` as a float is a fraction of the fold). ``curve_points``: how
    many epochs (evenly spaced, the last included) the held-out metrics are recorded at.
    ``task`` is a placeholder (only ``binary`` exists). ``estimator`` is how compiled metric losses
    estimate the confusion matrix: ``"batch"`` (each batch's) or ``"running"`` (a moving average of
    the rates with ``momentum``; docs/minibatch.md), kept across epochs (``reset_estimate="never"``)
    or forgotten at the start of each (``"epoch"``). Each run has its own loss, so its own estimate:
    runs, folds and losses never share one.
    """

    model: str = "slp"
    folds: int = 10
    seed: int = 0
    epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | float | None = None
    optimizer: str | None = None
    zero_init_output: bool | None = None  # None: the model's default (see models.build_model)
    threshold: float | str = 0.5
    dtype: torch.dtype = torch.float64
    device: str = "cpu"
    progress_every: int = 0  # print the training loss every this many epochs (0: per fold only)
    curve_points: int = 50
    task: str = "binary"
    estimator: str = "batch"
    momentum: float = 0.9
    reset_estimate: str = "never"

    @property
    def main_rule(self) -> str:
        """Which recorded scores the main tables show: ``"tuned"`` or ``"fixed"``."""
        return "tuned" if self.threshold == "tuned" else "fixed"


@dataclasses.dataclass(frozen=True)
class FoldResult:
    """One loss trained on one fold.

    ``scores`` are at the fixed threshold ``threshold``; ``tuned`` at ``tuned_thresholds``
    (one per metric, tuned on the training fold). ``curve`` holds the held-out metrics at
    ``curve_epochs`` (1-based), at the fixed threshold. ``failed`` says why training
    stopped early (a non-finite loss); the model is then scored as it was.
    """

    loss: str
    fold: int
    scores: dict[str, float]
    threshold: float
    settings: TrainingSettings
    history: History
    seconds: float  # training time, all epochs
    tuned: dict[str, float] = dataclasses.field(default_factory=dict)
    tuned_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    curve_epochs: tuple[int, ...] = ()
    curve: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    failed: str | None = None

    def values(self, rule: str) -> dict[str, float]:
        return self.tuned if rule == "tuned" else self.scores


@dataclasses.dataclass
class DatasetResult:
    """All folds of all losses on one dataset."""

    dataset: str
    summary: str
    losses: list[LossSpec]
    rows: list[str]
    folds: list[FoldResult]
    notes: list[str]
    model: str = "slp"
    evaluators: dict[str, Evaluator] = dataclasses.field(default_factory=lambda: dict(EVALUATORS))
    main_rule: str = "fixed"

    def scores(self, loss: str, row: str, rule: str | None = None) -> np.ndarray:
        rule = rule or self.main_rule
        return np.array([f.values(rule)[row] for f in self.folds if f.loss == loss])

    def runs(self, loss: str) -> list[FoldResult]:
        return [f for f in self.folds if f.loss == loss]

    def settings(self, loss: str) -> TrainingSettings:
        """The settings of the loss's first fold (folds differ only in batch size by a row or two)."""
        return self.runs(loss)[0].settings

    def median_epoch_seconds(self, loss: str) -> float:
        return statistics.median(s for f in self.runs(loss) for s in f.history.epoch_seconds)

    def mean_curve(self, loss: str) -> np.ndarray:
        curves = [f.history.losses for f in self.runs(loss)]
        length = min(len(c) for c in curves)  # a failed run stops early
        return np.mean([c[:length] for c in curves], axis=0)

    def mean_validation_curve(self, loss: str, row: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, mean over folds of the held-out metric at those epochs); folds that stopped early drop out."""
        runs = self.runs(loss)
        epochs = max((r.curve_epochs for r in runs), key=len)
        values = np.full((len(runs), len(epochs)), np.nan)
        for index, run in enumerate(runs):
            values[index, :len(run.curve_epochs)] = run.curve.get(row, ())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(epochs), np.nanmean(values, axis=0)

    def best(self, row: str, rule: str | None = None) -> list[str]:
        """The loss(es) with the best mean score on ``row`` (ties at 3 decimals share it)."""
        means = {spec.name: round(float(self.scores(spec.name, row, rule).mean()), 3) for spec in self.losses}
        pick = max if self.evaluators[row].higher_is_better else min
        target = pick(means.values())
        return [name for name, value in means.items() if value == target]


def _standardize(train: np.ndarray, test: np.ndarray, image: bool) -> tuple[np.ndarray, np.ndarray]:
    """Training-fold median imputation, then StandardScaler per feature for tables; one mean and scale for images."""
    train, test = impute_missing(train, test)
    if image:
        mean, scale = train.mean(), train.std() or 1.0
        return (train - mean) / scale, (test - mean) / scale
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def fold_seed(seed: int, fold: int) -> int:
    return seed * 1000 + fold


def curve_epochs(epochs: int, points: int) -> tuple[int, ...]:
    """About ``points`` evenly spaced epochs in 1..epochs, always the first and the last."""
    if points <= 0:
        return ()
    return tuple(sorted({int(round(e)) for e in np.linspace(1, epochs, min(points, epochs))}))


def loss_evaluators(losses: list[LossSpec]) -> dict[str, Evaluator]:
    """The built-in evaluators plus one per user's expression (its formula on hard counts)."""
    import metricc

    evaluators = dict(EVALUATORS)
    for spec in losses:
        if spec.label is not None:
            metric = metricc.parse(spec.metric, dict(spec.params) or None, name=spec.label)
            direction = metric.direction or metricc.analyze(metric).direction
            evaluators[spec.label] = expression_evaluator(spec.label, metric, direction != "minimize")
    return evaluators


def run_dataset(dataset: Dataset, losses: list[LossSpec], config: ExperimentConfig,
                progress: Progress | None = None) -> DatasetResult:
    """Cross-validate every loss on ``dataset``; returns per-fold scores, curves and epoch times."""
    from sklearn.model_selection import StratifiedKFold

    check_folds(dataset, config.folds)
    if config.model == "resnet" and dataset.image_shape is None:
        raise ValueError(f"the resnet model needs an image dataset; {dataset.name} is a table "
                         "(use --model slp or mlp, or --datasets digits)")
    say = progress or (lambda message: None)
    evaluators = loss_evaluators(losses)
    rows = evaluation_rows([spec.target for spec in losses], evaluators)
    result = DatasetResult(dataset.name, dataset.summary(), list(losses), rows, [], [], model=config.model,
                           evaluators=evaluators, main_rule=config.main_rule)
    splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    label = f"[{dataset.name} | {config.model}]"
    say(f"{label} {dataset.summary()}; {config.folds} folds × {len(losses)} losses")
    caught_messages: dict[str, set[str]] = {}
    for fold, (train_index, test_index) in enumerate(splitter.split(dataset.X, dataset.y)):
        X_train, X_test = _standardize(dataset.X[train_index], dataset.X[test_index],
                                       dataset.image_shape is not None)
        as_tensor = dict(dtype=config.dtype, device=config.device)
        X_train_t, X_test_t = torch.tensor(X_train, **as_tensor), torch.tensor(X_test, **as_tensor)
        y_train_t = torch.tensor(dataset.y[train_index], **as_tensor)
        y_train, y_test = dataset.y[train_index], dataset.y[test_index]
        runs = []
        for spec in losses:
            settings = _settings(config, dataset, spec, len(train_index))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runs.append(_start_run(dataset, spec, settings, config, fold, X_train_t, y_train_t))
            caught_messages.setdefault(spec.name, set()).update(str(w.message) for w in caught)
        # Interleave the losses epoch by epoch: their epoch times then share the machine's load.
        for epoch in range(max(run.settings.epochs for run in runs)):
            for run in runs:
                if epoch >= run.settings.epochs or run.failed:
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        loss = run.training.epoch()
                    except TrainingError as exc:
                        run.failed = f"fold {fold + 1}: {exc}"
                        say(f"{label} fold {fold + 1}/{config.folds} {run.spec.name}: {exc}; "
                            "scored as it stands")
                        continue
                if caught:
                    caught_messages[run.spec.name].update(str(w.message) for w in caught)
                if epoch + 1 in run.curve_at:
                    _record_curve(run, X_test_t, y_test, rows, evaluators)
                if config.progress_every and (epoch + 1) % config.progress_every == 0:
                    say(f"{label} fold {fold + 1}/{config.folds} {run.spec.name}: epoch {epoch + 1}/"
                        f"{run.settings.epochs} loss {loss:.5f}")
        for run in runs:
            folded = _finish_run(run, config, fold, X_train_t, y_train, X_test_t, y_test, rows, evaluators)
            result.folds.append(folded)
            if folded.failed:
                caught_messages[run.spec.name].add(f"training stopped early ({folded.failed})")
            spec, settings = run.spec, run.settings
            shown_rows = dict.fromkeys(rows[:2] + ([spec.target] if spec.target else []))
            shown = ", ".join(f"{evaluators[r].label} {folded.scores[r]:.3f}" for r in shown_rows)
            curve = folded.history.losses
            trained = f"loss {curve[0]:.4f} → {curve[-1]:.4f}" if curve else "no finite loss"
            say(f"{label} fold {fold + 1}/{config.folds} {spec.name:<12} lr={settings.learning_rate:g} "
                f"epochs={settings.epochs} batch={settings.batch_size}: {trained}; "
                f"{shown} ({folded.seconds:.1f} s training)")
    for name, messages in caught_messages.items():
        for message in sorted(messages):
            note = message if message.startswith(f"{name}:") else f"{name}: {message}"
            result.notes.append(note)
            say(f"{label} note: {note}")
    return result


def _settings(config: ExperimentConfig, dataset: Dataset, spec: LossSpec, n_train: int) -> TrainingSettings:
    """The paper's settings for this loss, the command line's overrides, then the loss's own recipe."""
    recipe = dict(spec.recipe)
    batch = recipe.get("batch", config.batch_size)
    if isinstance(batch, float) and batch >= 2 and batch == int(batch):
        batch = int(batch)
    epochs = recipe.get("epochs", config.epochs)
    return resolve(config.model, dataset.name, spec.setting_key, spec.catalog_metric, n_train,
                   lr=recipe.get("lr", config.learning_rate), epochs=None if epochs is None else int(epochs),
                   batch=batch, optimizer=config.optimizer,
                   lr_source="recipe" if "lr" in recipe else None)


@dataclasses.dataclass
class _Run:
    spec: LossSpec
    settings: TrainingSettings
    training: TrainingRun
    compiled_threshold: float | None
    fixed_threshold: float
    curve_at: frozenset[int]
    curve_epochs: list[int] = dataclasses.field(default_factory=list)
    curve: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    failed: str | None = None


def _start_run(dataset, spec, settings, config, fold, X_train, y_train) -> _Run:
    """A fresh model (the same initial weights and batch order for every loss of a fold) and its loss."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fold_seed(config.seed, fold))
        model = build_model(config.model, dataset.n_features, dataset.image_shape,
                            zero_init_output=config.zero_init_output).to(config.dtype)
    model = model.to(config.device)
    loss_fn, compiled_threshold = build_loss(spec, y_train, task=config.task, estimator=config.estimator,
                                             momentum=config.momentum,
                                             reset_each_epoch=config.reset_estimate == "epoch")
    generator = torch.Generator().manual_seed(fold_seed(config.seed, fold))
    training = TrainingRun(model, loss_fn, X_train, y_train, learning_rate=settings.learning_rate,
                           batch_size=settings.batch_size, generator=generator, optimizer=settings.optimizer)
    if config.threshold == "compiled":
        fixed = compiled_threshold if compiled_threshold is not None else 0.5
    elif config.threshold == "tuned":
        fixed = 0.5
    else:
        fixed = float(config.threshold)
    return _Run(spec, settings, training, compiled_threshold, fixed,
                frozenset(curve_epochs(settings.epochs, config.curve_points)))


def _record_curve(run: _Run, X_test, y_test, rows, evaluators) -> None:
    logits = predict_logits(run.training.model, X_test).cpu().numpy()
    counts = counts_at_cut(y_test, logits, logit_cut(run.fixed_threshold))
    run.curve_epochs.append(len(run.training.losses))
    for row in rows:
        evaluator = evaluators[row]
        value = evaluator.function(y_test, logits) if evaluator.from_scores else evaluator.from_counts(*counts)
        run.curve.setdefault(row, []).append(float(value))


def _finish_run(run: _Run, config, fold, X_train, y_train, X_test, y_test, rows, evaluators) -> FoldResult:
    """Scores of the trained model's hard predictions on the held-out fold, at the fixed and the tuned threshold."""
    logits = predict_logits(run.training.model, X_test).cpu().numpy()
    cut = logit_cut(run.fixed_threshold)
    scores = evaluate(y_test, predictions_at_cut(logits, cut), rows, evaluators, logits=logits)
    train_logits = predict_logits(run.training.model, X_train).cpu().numpy()
    tuned, thresholds = {}, {}
    for row in rows:
        if evaluators[row].from_scores:  # AUROC, average precision: no threshold to tune
            tuned[row], thresholds[row] = scores[row], float("nan")
            continue
        best = tune_threshold(train_logits, y_train, evaluators[row])
        tuned[row] = evaluate(y_test, predictions_at_cut(logits, best.cut), [row], evaluators)[row]
        thresholds[row] = best.threshold
    history = run.training.history()
    return FoldResult(run.spec.name, fold, scores, run.fixed_threshold, run.settings, history,
                      sum(history.epoch_seconds), tuned, thresholds, tuple(run.curve_epochs),
                      {row: tuple(values) for row, values in run.curve.items()}, run.failed)


def run_experiment(datasets: list[Dataset], losses: list[LossSpec], config: ExperimentConfig,
                   progress: Progress | None = None) -> list[DatasetResult]:
    """:func:`run_dataset` for each dataset in turn."""
    return [run_dataset(dataset, losses, config, progress) for dataset in datasets]
