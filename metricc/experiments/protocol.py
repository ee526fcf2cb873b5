"""The experimental protocol: stratified k-fold cross-validation of every loss on every dataset.

Within a fold every loss starts from the same initial weights and sees the same
batch order (both seeded from ``seed`` and the fold number), so differences
between columns come from the losses; the losses train side by side, one epoch
each in turn, so that their epoch times are measured under the same load. Standardization is fitted on the training
fold only. Scores are metrics of hard predictions on the held-out fold.
"""

from __future__ import annotations

import dataclasses
import statistics
import warnings
from collections.abc import Callable

import numpy as np
import torch

from .datasets import Dataset, check_folds
from .evaluation import EVALUATORS, evaluate, evaluation_rows, hard_predictions
from .losses import LossSpec, build_loss
from .models import build_model
from .settings import TrainingSettings, resolve
from .training import History, TrainingRun, predict_logits

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything besides the data and the losses that decides the numbers.

    ``threshold`` is the evaluation threshold on σ(logit), or ``"compiled"``: each
    compiled loss is evaluated at the threshold its relaxation was compiled for
    (the baselines at 0.5). ``epochs``, ``learning_rate`` and ``batch_size`` override
    the paper's per-loss settings (``batch_size`` as a float is a fraction of the fold).
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


@dataclasses.dataclass(frozen=True)
class FoldResult:
    """One loss trained on one fold."""

    loss: str
    fold: int
    scores: dict[str, float]
    threshold: float
    settings: TrainingSettings
    history: History
    seconds: float  # training time, all epochs


@dataclasses.dataclass
class DatasetResult:
    """All folds of all losses on one dataset."""

    dataset: str
    summary: str
    losses: list[LossSpec]
    rows: list[str]
    folds: list[FoldResult]
    notes: list[str]

    def scores(self, loss: str, row: str) -> np.ndarray:
        return np.array([f.scores[row] for f in self.folds if f.loss == loss])

    def runs(self, loss: str) -> list[FoldResult]:
        return [f for f in self.folds if f.loss == loss]

    def settings(self, loss: str) -> TrainingSettings:
        """The settings of the loss's first fold (folds differ only in batch size by a row or two)."""
        return self.runs(loss)[0].settings

    def median_epoch_seconds(self, loss: str) -> float:
        return statistics.median(s for f in self.runs(loss) for s in f.history.epoch_seconds)

    def mean_curve(self, loss: str) -> np.ndarray:
        return np.mean([f.history.losses for f in self.runs(loss)], axis=0)

    def best(self, row: str) -> list[str]:
        """The loss(es) with the best mean score on ``row`` (ties at 3 decimals share it)."""
        means = {spec.name: round(float(self.scores(spec.name, row).mean()), 3) for spec in self.losses}
        pick = max if EVALUATORS[row].higher_is_better else min
        target = pick(means.values())
        return [name for name, value in means.items() if value == target]


def _standardize(train: np.ndarray, test: np.ndarray, image: bool) -> tuple[np.ndarray, np.ndarray]:
    """StandardScaler per feature for tables; one mean and scale for all pixels of images."""
    if image:
        mean, scale = train.mean(), train.std() or 1.0
        return (train - mean) / scale, (test - mean) / scale
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def fold_seed(seed: int, fold: int) -> int:
    return seed * 1000 + fold


def run_dataset(dataset: Dataset, losses: list[LossSpec], config: ExperimentConfig,
                progress: Progress | None = None) -> DatasetResult:
    """Cross-validate every loss on ``dataset``; returns per-fold scores, curves and epoch times."""
    from sklearn.model_selection import StratifiedKFold

    check_folds(dataset, config.folds)
    if config.model == "resnet" and dataset.image_shape is None:
        raise ValueError(f"the resnet model needs an image dataset; {dataset.name} is a table "
                         "(use --model slp or mlp, or --datasets digits)")
    say = progress or (lambda message: None)
    rows = evaluation_rows([spec.metric for spec in losses])
    result = DatasetResult(dataset.name, dataset.summary(), list(losses), rows, [], [])
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
        y_test = dataset.y[test_index]
        runs = []
        for spec in losses:
            settings = resolve(config.model, dataset.name, spec.setting_key, spec.metric, len(train_index),
                               lr=config.learning_rate, epochs=config.epochs, batch=config.batch_size,
                               optimizer=config.optimizer)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runs.append(_start_run(dataset, spec, settings, config, fold, X_train_t, y_train_t))
            caught_messages.setdefault(spec.name, set()).update(str(w.message) for w in caught)
        # Interleave the losses epoch by epoch: their epoch times then share the machine's load.
        for epoch in range(max(run.settings.epochs for run in runs)):
            for run in runs:
                if epoch >= run.settings.epochs:
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    loss = run.training.epoch()
                if caught:
                    caught_messages[run.spec.name].update(str(w.message) for w in caught)
                if config.progress_every and (epoch + 1) % config.progress_every == 0:
                    say(f"{label} fold {fold + 1}/{config.folds} {run.spec.name}: epoch {epoch + 1}/"
                        f"{run.settings.epochs} loss {loss:.5f}")
        for run in runs:
            folded = _finish_run(run, config, fold, X_test_t, y_test, rows)
            result.folds.append(folded)
            spec, settings = run.spec, run.settings
            shown_rows = dict.fromkeys(rows[:2] + ([spec.metric] if spec.metric else []))
            shown = ", ".join(f"{EVALUATORS[r].label} {folded.scores[r]:.3f}" for r in shown_rows)
            curve = folded.history.losses
            say(f"{label} fold {fold + 1}/{config.folds} {spec.name:<12} lr={settings.learning_rate:g} "
                f"epochs={settings.epochs} batch={settings.batch_size}: loss {curve[0]:.4f} → {curve[-1]:.4f}; "
                f"{shown} ({folded.seconds:.1f} s training)")
    for name, messages in caught_messages.items():
        for message in sorted(messages):
            note = message if message.startswith(f"{name}:") else f"{name}: {message}"
            result.notes.append(note)
            say(f"{label} note: {note}")
    return result


@dataclasses.dataclass
class _Run:
    spec: LossSpec
    settings: TrainingSettings
    training: TrainingRun
    compiled_threshold: float | None


def _start_run(dataset, spec, settings, config, fold, X_train, y_train) -> _Run:
    """A fresh model (the same initial weights and batch order for every loss of a fold) and its loss."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fold_seed(config.seed, fold))
        model = build_model(config.model, dataset.n_features, dataset.image_shape,
                            zero_init_output=config.zero_init_output).to(config.dtype)
    model = model.to(config.device)
    loss_fn, compiled_threshold = build_loss(spec, y_train)
    generator = torch.Generator().manual_seed(fold_seed(config.seed, fold))
    training = TrainingRun(model, loss_fn, X_train, y_train, learning_rate=settings.learning_rate,
                           batch_size=settings.batch_size, generator=generator, optimizer=settings.optimizer)
    return _Run(spec, settings, training, compiled_threshold)


def _finish_run(run: _Run, config, fold, X_test, y_test, rows) -> FoldResult:
    """Scores of the trained model's hard predictions on the held-out fold."""
    if config.threshold == "compiled":
        threshold = run.compiled_threshold if run.compiled_threshold is not None else 0.5
    else:
        threshold = float(config.threshold)
    logits = predict_logits(run.training.model, X_test).cpu().numpy()
    scores = evaluate(y_test, hard_predictions(logits, threshold), rows)
    history = run.training.history()
    return FoldResult(run.spec.name, fold, scores, threshold, run.settings, history, sum(history.epoch_seconds))


def run_experiment(datasets: list[Dataset], losses: list[LossSpec], config: ExperimentConfig,
                   progress: Progress | None = None) -> list[DatasetResult]:
    """:func:`run_dataset` for each dataset in turn."""
    return [run_dataset(dataset, losses, config, progress) for dataset in datasets]
