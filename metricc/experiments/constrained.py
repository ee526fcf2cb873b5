"""Objective subject to constraints on binary tables: ``metricc experiment --task constrained``.

"The highest recall at precision ≥ 0.9" is judged on held-out data by two numbers, the objective and whether the
constraint still holds there. Per table and stratified fold, every baseline (BCE, class-weighted BCE, focal loss,
...) is trained once and given, for each constraint level, the threshold that satisfies the constraint on the
training fold with the best training objective (the practitioner's rule: train a probability, then pick the
operating point on the training data); the compiled Lagrangian (``compile_metric(objective,
constraints=[...])``) is trained once per level and scored at its own threshold and with the same rule. Every
score is recorded on the training fold and on the held-out fold: the objective, each constraint's value and its
violation. :mod:`metricc.experiments.constrained_report` turns the records into tables and plots.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from .datasets import Dataset, check_folds
from .evaluation import counts_at_cut, logit_cut
from .losses import LossSpec, build_loss
from .models import build_model
from .protocol import _standardize, fold_seed
from .training import TrainingError, TrainingRun, predict_logits

LAGRANGIAN = "lagrangian"
HOLD_TOLERANCE = 0.02  # the goal: the constraint holds on test within 0.02 of its level


@dataclasses.dataclass(frozen=True)
class ConstrainedConfig:
    """How every method is trained (the same for all, so that only the loss differs) and the Lagrangian's options."""

    objective: str = "recall"
    constraints: tuple[str, ...] = ("precision >= 0.9",)
    model: str = "slp"
    folds: int = 5
    seed: int = 0
    epochs: int = 2000
    learning_rate: float = 0.01
    optimizer: str = "adam"
    batch_size: int | float | None = None  # None: the whole training fold
    relaxation: str = "sigmoid:L=10"
    multiplier_lr: float = 0.05
    constraint_rates: str = "hard"
    penalty: float = 0.0
    estimator: str = "batch"
    dtype: torch.dtype = torch.float64


@dataclasses.dataclass(frozen=True)
class Record:
    """One method's scores on one fold for one constraint, at one threshold rule.

    ``rule``: ``"own"`` (0.5, the threshold the Lagrangian was trained at, last iterate), ``"best"`` (0.5, the
    iterate that satisfied the constraint on the training fold with the best objective: Cotter et al.'s choice
    among iterates; the last one where none did) or ``"picked"`` (the training fold's best threshold satisfying
    the constraint). ``train_*``/``test_*``: the objective and the constraint's value;
    ``holds``: the test value is on the right side of the level, within ``HOLD_TOLERANCE``.
    """

    dataset: str
    fold: int
    method: str
    constraint: str
    level: float
    sense: str
    rule: str
    threshold: float
    train_objective: float
    train_value: float
    test_objective: float
    test_value: float
    seconds: float
    multiplier: float = math.nan

    @property
    def test_violation(self) -> float:
        """By how much the test value misses the level (0 where it holds; NaN where undefined)."""
        return _violation(self.test_value, self.sense, self.level)

    @property
    def train_violation(self) -> float:
        return _violation(self.train_value, self.sense, self.level)

    @property
    def holds(self) -> bool:
        return bool(self.test_violation <= HOLD_TOLERANCE)


def _violation(value: float, sense: str, level: float) -> float:
    if not math.isfinite(value):
        return math.nan
    return max(0.0, (level - value) if sense == ">=" else (value - level))


class CountsMetric:
    """A metric of hard confusion counts (numpy arrays), from its parsed expression; NaN where undefined."""

    def __init__(self, metric):
        import sympy

        from ..metric import CONFUSION_SYMBOLS

        self.function = sympy.lambdify(CONFUSION_SYMBOLS, metric.bound_expr(), modules="numpy")

    def __call__(self, tp, fn, fp, tn):
        with np.errstate(all="ignore"):
            values = self.function(*(np.asarray(x, dtype=np.float64) for x in (tp, fn, fp, tn)))
        return np.broadcast_to(np.asarray(values, dtype=np.float64), np.broadcast(tp, fn, fp, tn).shape)


def sweep_counts(logits: np.ndarray, y: np.ndarray):
    """Every distinct decision on these logits: the cuts (predict logit > cut) and their (TP, FN, FP, TN), from
    predicting nothing to predicting everything, by one sort and cumulative sums."""
    z = np.where(np.isnan(logits), -np.inf, np.asarray(logits, dtype=np.float64))
    labels = np.asarray(y) == 1
    order = np.argsort(-z, kind="stable")
    z_sorted, y_sorted = z[order], labels[order]
    ends = np.flatnonzero(np.append(z_sorted[1:] != z_sorted[:-1], True))
    tp = np.concatenate([[0], np.cumsum(y_sorted)[ends]])
    fp = np.concatenate([[0], np.cumsum(~y_sorted)[ends]])
    positives, negatives = int(labels.sum()), int((~labels).sum())
    distinct = z_sorted[ends]
    cuts = np.empty(len(distinct) + 1)
    cuts[0] = distinct[0] + 1.0 if np.isfinite(distinct[0]) else math.inf
    cuts[1:-1] = (distinct[:-1] + distinct[1:]) / 2
    cuts[-1] = distinct[-1] - 1.0 if np.isfinite(distinct[-1]) else -math.inf
    return cuts, (tp, positives - tp, fp, negatives - fp)


def pick_threshold(logits, y, objective: CountsMetric, maximize: bool, constraint: CountsMetric, sense: str,
                   level: float) -> float:
    """The cut on the training logits with the best objective among those where the constraint holds; where none
    holds, the one closest to holding (the least violation, then the best objective)."""
    cuts, counts = sweep_counts(logits, y)
    values, goals = constraint(*counts), objective(*counts)
    goals = np.where(np.isfinite(goals), goals, -math.inf if maximize else math.inf)
    score = goals if maximize else -goals
    violation = np.where(np.isfinite(values), np.maximum(0.0, (level - values) if sense == ">=" else
                                                         (values - level)), math.inf)
    feasible = violation == 0
    if feasible.any():
        candidates = np.flatnonzero(feasible)
        best = candidates[np.argmax(score[candidates])]  # the first (highest cut) among equals
    else:
        least = violation.min()
        candidates = np.flatnonzero(violation == least)
        best = candidates[np.argmax(score[candidates])]
    return float(cuts[best])


def _scores(model, X, y, cut, objective, constraint):
    logits = predict_logits(model, X).cpu().numpy()
    counts = counts_at_cut(y, logits, cut)
    return float(objective(*counts)), float(constraint(*counts)), logits


def _train(model, loss_fn, X, y, config: ConstrainedConfig, fold: int, track=None):
    """Train for ``config.epochs``; returns the seconds it took and, with ``track`` = (objective, maximize,
    measure, constraint), the state of the best iterate on the training data: after each epoch, the model whose
    hard predictions at 0.5 satisfy the constraint with the best objective (Cotter et al.'s choice among the
    iterates), or None where no iterate satisfied it."""
    n = X.shape[0]
    batch = n if config.batch_size is None else (max(2, int(n * config.batch_size))
                                                 if isinstance(config.batch_size, float) else config.batch_size)
    run = TrainingRun(model, loss_fn, X, y, learning_rate=config.learning_rate, batch_size=min(batch, n),
                      generator=torch.Generator().manual_seed(fold_seed(config.seed, fold)),
                      optimizer=config.optimizer)
    labels = y.cpu().numpy()
    best, best_value = None, -math.inf
    start = time.perf_counter()
    for _ in range(config.epochs):
        try:
            run.epoch()
        except TrainingError:
            break
        if track is not None:
            objective, maximize, measure, constraint = track
            counts = counts_at_cut(labels, predict_logits(model, X).cpu().numpy(), 0.0)
            if _violation(float(measure(*counts)), constraint.sense, constraint.level) == 0:
                value = float(objective(*counts)) * (1 if maximize else -1)
                if value > best_value:
                    best, best_value = copy.deepcopy(model.state_dict()), value
            model.train()
    return time.perf_counter() - start, best


def _fresh_model(dataset: Dataset, config: ConstrainedConfig, fold: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fold_seed(config.seed, fold))
        return build_model(config.model, dataset.n_features, dataset.image_shape).to(config.dtype)


@dataclasses.dataclass
class _Fold:
    """One fold's standardised data, and how its records are scored."""

    dataset: Dataset
    fold: int
    X_train: torch.Tensor
    X_test: torch.Tensor
    y_train: np.ndarray
    y_test: np.ndarray
    objective: CountsMetric
    maximize: bool
    records: list

    def picked(self, train_logits, constraint, measure) -> list[tuple[str, float]]:
        return [("picked", pick_threshold(train_logits, self.y_train, self.objective, self.maximize, measure,
                                          constraint.sense, constraint.level))]

    def own_and_picked(self, train_logits, constraint, measure) -> list[tuple[str, float]]:
        return [("own", logit_cut(0.5)), *self.picked(train_logits, constraint, measure)]

    def score(self, method, model, seconds, rules, constraints, multiplier=math.nan) -> None:
        """Records of ``model`` for each (constraint, its measure), at the cuts ``rules`` gives."""
        train_logits = predict_logits(model, self.X_train).cpu().numpy()
        for constraint, measure in constraints:
            for rule, cut in rules(train_logits, constraint, measure):
                train = counts_at_cut(self.y_train, train_logits, cut)
                test_objective, test_value, _ = _scores(model, self.X_test, self.y_test, cut, self.objective, measure)
                self.records.append(Record(
                    self.dataset.name, self.fold, method, constraint.text, constraint.level, constraint.sense, rule,
                    1 / (1 + math.exp(-cut)) if cut > -700 else 0.0, float(self.objective(*train)),
                    float(measure(*train)), test_objective, test_value, seconds, multiplier))


def run_constrained(dataset: Dataset, baselines: list[LossSpec], config: ConstrainedConfig,
                    progress=None) -> list[Record]:
    """Every baseline and the Lagrangian on every fold of ``dataset``, scored for every constraint."""
    import metricc
    from metricc.constraints import parse_constraint

    say = progress or (lambda message: None)
    check_folds(dataset, config.folds)
    objective_metric = metricc.parse(config.objective)
    direction = objective_metric.direction or metricc.analyze(objective_metric).direction
    constraints = [parse_constraint(text)[0] for text in config.constraints]
    measured = [(c, CountsMetric(c.metric)) for c in constraints]
    records: list[Record] = []
    splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    for fold, (train_index, test_index) in enumerate(splitter.split(dataset.X, dataset.y)):
        X_train, X_test = _standardize(dataset.X[train_index], dataset.X[test_index], False)
        data = _Fold(dataset, fold, torch.tensor(X_train, dtype=config.dtype), torch.tensor(X_test, dtype=config.dtype),
                     dataset.y[train_index], dataset.y[test_index], CountsMetric(objective_metric),
                     direction == "maximize", records)
        y_train = torch.tensor(data.y_train, dtype=config.dtype)
        for spec in baselines:
            model = _fresh_model(dataset, config, fold)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss_fn, _ = build_loss(spec, y_train)
            seconds, _ = _train(model, loss_fn, data.X_train, y_train, config, fold)
            data.score(spec.name, model, seconds, data.picked, measured)
            say(f"[{dataset.name}] fold {fold + 1}/{config.folds} {spec.name}: {seconds:.1f} s")
        for constraint, measure in measured:
            model = _fresh_model(dataset, config, fold)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss_fn = metricc.compile_metric(config.objective, constraints=[constraint.text],
                                                 relaxation=config.relaxation, multiplier_lr=config.multiplier_lr,
                                                 constraint_rates=config.constraint_rates,
                                                 estimator=config.estimator, penalty=config.penalty)
            track = (data.objective, data.maximize, measure, constraint)
            seconds, best = _train(model, loss_fn, data.X_train, y_train, config, fold, track)
            multiplier = float(loss_fn.multipliers[0])
            data.score(LAGRANGIAN, model, seconds, data.own_and_picked, [(constraint, measure)], multiplier)
            if best is not None:
                model.load_state_dict(best)
            data.score(LAGRANGIAN, model, seconds, lambda *_: [("best", logit_cut(0.5))], [(constraint, measure)],
                       multiplier)
            say(f"[{dataset.name}] fold {fold + 1}/{config.folds} {LAGRANGIAN} ({constraint.text}): {seconds:.1f} s, "
                f"λ = {multiplier:.3g}")
    return records


FIELDS = [field.name for field in dataclasses.fields(Record)] + ["train_violation", "test_violation", "holds"]


def write_records(records: list[Record], path) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for record in records:
            writer.writerow([getattr(record, name) for name in FIELDS])


def read_records(path) -> list[Record]:
    import csv

    names = [field.name for field in dataclasses.fields(Record)]
    types = {field.name: field.type for field in dataclasses.fields(Record)}
    records = []
    with open(path, encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            values = {}
            for name in names:
                text = row[name]
                values[name] = int(text) if types[name] == "int" else float(text) if types[name] == "float" else text
            records.append(Record(**values))
    return records


__all__ = ["ConstrainedConfig", "HOLD_TOLERANCE", "LAGRANGIAN", "Record", "pick_threshold", "read_records",
           "run_constrained", "sweep_counts", "write_records"]
