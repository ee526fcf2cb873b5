"""Accuracy under a fairness constraint on a table with a protected attribute: ``metricc experiment --task fairness``.

Every method gets the same features (the table's columns without the label, the split column, the protected
attributes and ``fnlwgt``, a census sampling weight; text one-hot encoded, standardised on the training rows) and
is scored on the table's official test rows by accuracy and by the gap of a rate across the protected groups,
max_g − min_g, at hard predictions:

* ``eo`` (equal opportunity): the true-positive rate TP[g]/P[g];
* ``dp`` (demographic parity): the positive-prediction rate PP[g]/n[g].

Methods, each at several constraint levels ε where it has one (a Pareto curve):

* ``bce``: logistic regression trained with BCE (the same linear model as the others), no constraint;
* ``lagrangian``: ``compile_metric("accuracy", groups=G, constraints=["max_g(...) - min_g(...) <= ε"])``;
* ``bce+constraints``: BCE plus ``compile_constraints(["max_g(...) - min_g(...) <= ε"], groups=G)``, the
  constraints' term alone with its multipliers;
* ``fairlearn-eg``: fairlearn's ExponentiatedGradient around scikit-learn's LogisticRegression, with
  TruePositiveRateParity or DemographicParity(difference_bound=ε) (each group against the whole, so a gap of
  max − min up to 2ε satisfies it);
* ``fairlearn-to``: fairlearn's ThresholdOptimizer (group-specific thresholds on the logistic regression's
  probabilities, randomised between two), with ``tol=ε``;
* ``fairret``: BCE plus fairret's NormLoss of the statistic's violation, weighted by a strength (its "level").

Runs repeat on random 80 % subsets of the training rows (seeded), so that how often a constraint holds on test is
a frequency over runs.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .datasets import DatasetError, load_csv, read_csv

GAPS = {"eo": "TP[g]/(TP[g] + FN[g])", "dp": "PP[g]/n[g]"}
GAP_NAMES = {"eo": "equal opportunity (TPR gap)", "dp": "demographic parity (positive-rate gap)"}
METHODS = ("bce", "lagrangian", "bce+constraints", "fairlearn-eg", "fairlearn-to", "fairret")
ALWAYS_DROPPED = ("fnlwgt",)
HOLD_TOLERANCE = 0.02


@dataclasses.dataclass(frozen=True)
class FairnessConfig:
    protected: str = "sex"
    gap: str = "eo"
    objective: str = "accuracy"
    levels: tuple[float, ...] = (0.02, 0.05, 0.1)
    strengths: tuple[float, ...] = (0.1, 1.0, 10.0)  # fairret's weights
    methods: tuple[str, ...] = METHODS
    runs: int = 3
    train_fraction: float = 0.8
    epochs: int = 500
    learning_rate: float = 0.01
    relaxation: str = "anyloss"
    multiplier_lr: float = 0.05
    penalty: float = 0.0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class FairnessRecord:
    """One method at one level (NaN where it has none) on one run: accuracy and gap on training and test rows."""

    protected: str
    gap: str
    method: str
    level: float
    run: int
    train_accuracy: float
    train_gap: float
    test_accuracy: float
    test_gap: float
    seconds: float

    @property
    def holds(self) -> bool:
        """The test gap within the level plus HOLD_TOLERANCE (False for methods without a level)."""
        return bool(math.isfinite(self.level) and self.test_gap <= self.level + HOLD_TOLERANCE)


@dataclasses.dataclass(frozen=True)
class FairnessData:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # group index per row
    group_names: tuple[str, ...]
    train: np.ndarray  # boolean mask of the official training rows
    name: str


def load_fairness_table(path, protected: str, all_protected=("sex", "race"), split_column="split") -> FairnessData:
    """The table's features, labels, group indices for ``protected`` and its official split."""
    path = Path(path)
    header, rows = read_csv(path)
    for column in (protected, split_column):
        if column not in header:
            raise DatasetError(f"{path}: no column {column!r}; columns are {', '.join(header)}")
    drop = tuple(c for c in (split_column, *all_protected, *ALWAYS_DROPPED) if c in header)
    table = load_csv(path, "label", drop)
    split = np.array([row[header.index(split_column)].strip() for row in rows])
    if set(split) - {"train", "test"}:
        raise DatasetError(f"{path}: column {split_column!r} must hold 'train' or 'test'")
    values = [row[header.index(protected)].strip() for row in rows]
    names = tuple(sorted(set(values)))
    groups = np.array([names.index(v) for v in values], dtype=np.int64)
    return FairnessData(table.X, table.y, groups, names, split == "train", path.stem)


def group_gap(y: np.ndarray, predicted: np.ndarray, groups: np.ndarray, count: int, gap: str) -> float:
    """max_g − min_g of the TPR (``eo``) or the positive-prediction rate (``dp``) over the groups where it exists."""
    rates = []
    for g in range(count):
        mask = groups == g
        if gap == "eo":
            mask = mask & (y == 1)
        if mask.any():
            rates.append(float(predicted[mask].mean()))
    return max(rates) - min(rates) if rates else math.nan


def _standardized(data: FairnessData, train_rows: np.ndarray):
    from .protocol import _standardize

    test_rows = ~data.train
    X_train, X_test = _standardize(data.X[train_rows], data.X[test_rows], False)
    return X_train, X_test


def _slp(features: int) -> torch.nn.Linear:
    model = torch.nn.Linear(features, 1).double()
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    return model


def _train_torch(loss, X, epochs, learning_rate):
    """Full-batch Adam on a zero-initialised linear model; ``loss(logits)`` → scalar."""
    model = _slp(X.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss(model(X).squeeze(-1)).backward()
        optimizer.step()
    return model


def _predict(model, X) -> np.ndarray:
    with torch.no_grad():
        return (model(X).squeeze(-1) > 0).numpy().astype(np.int64)


def run_fairness(data: FairnessData, config: FairnessConfig, progress=None) -> list[FairnessRecord]:
    """Every method at every level on ``config.runs`` training subsets; see the module docstring."""
    say = progress or (lambda message: None)
    count = len(data.group_names)
    records = []
    for run in range(config.runs):
        rng = np.random.default_rng(config.seed + run)
        official = np.flatnonzero(data.train)
        chosen = np.sort(rng.choice(official, size=int(config.train_fraction * official.size), replace=False))
        train_rows = np.zeros(data.y.size, dtype=bool)
        train_rows[chosen] = True
        X_train, X_test = _standardized(data, train_rows)
        y_train, y_test = data.y[train_rows], data.y[~data.train]
        g_train, g_test = data.groups[train_rows], data.groups[~data.train]

        for method in config.methods:
            for level, fit in _fits(method, config, count):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    predict = fit(X_train, y_train, g_train, run)
                seconds = time.perf_counter() - start
                on_train, on_test = predict(X_train, g_train), predict(X_test, g_test)
                label = method if method not in ("lagrangian", "bce+constraints") or config.relaxation == "anyloss" \
                    else f"{method}@{config.relaxation}"
                record = FairnessRecord(
                    config.protected, config.gap, label, level, run, float((on_train == y_train).mean()),
                    group_gap(y_train, on_train, g_train, count, config.gap), float((on_test == y_test).mean()),
                    group_gap(y_test, on_test, g_test, count, config.gap), seconds)
                records.append(record)
                say(f"[{data.name} {config.protected} {config.gap}] run {run + 1}/{config.runs} {label} level "
                    f"{level:g}: test accuracy {record.test_accuracy:.4f}, gap {record.test_gap:.4f} "
                    f"({seconds:.1f} s)")
    return records


def _fits(method: str, config: FairnessConfig, count: int):
    """(level, fit) pairs; fit(X, y, groups, run) returns predict(X, groups) → hard predictions."""
    if method == "bce":
        return [(math.nan, lambda *a: _fit_bce(config, *a))]
    if method == "lagrangian":
        return [(level, lambda *a, level=level: _fit_lagrangian(config, count, level, *a)) for level in config.levels]
    if method == "bce+constraints":
        return [(level, lambda *a, level=level: _fit_lagrangian(config, count, level, *a, with_bce=True))
                for level in config.levels]
    if method == "fairlearn-eg":
        return [(level, lambda *a, level=level: _fit_exponentiated_gradient(config, level, *a))
                for level in config.levels]
    if method == "fairlearn-to":
        return [(level, lambda *a, level=level: _fit_threshold_optimizer(config, level, *a)) for level in config.levels]
    if method == "fairret":
        return [(strength, lambda *a, strength=strength: _fit_fairret(config, count, strength, *a))
                for strength in config.strengths]
    raise ValueError(f"unknown fairness method {method!r}; choose from {', '.join(METHODS)}")


def _torch_predictor(model):
    return lambda X, groups: _predict(model, torch.tensor(X))


def _fit_bce(config, X, y, groups, run):
    X_t, y_t = torch.tensor(X), torch.tensor(y, dtype=torch.float64)
    model = _train_torch(lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, y_t), X_t, config.epochs,
                         config.learning_rate)
    return _torch_predictor(model)


def _fit_lagrangian(config, count, level, X, y, groups, run, with_bce=False):
    import metricc

    gap = GAPS[config.gap]
    constraint = f"max_g({gap}) - min_g({gap}) <= {level}"
    options = dict(groups=count, relaxation=config.relaxation, multiplier_lr=config.multiplier_lr,
                   penalty=config.penalty)
    X_t, y_t, g_t = torch.tensor(X), torch.tensor(y, dtype=torch.float64), torch.tensor(groups)
    if with_bce:
        term = metricc.compile_constraints([constraint], **options)

        def loss(z):
            return torch.nn.functional.binary_cross_entropy_with_logits(z, y_t) + term(z, y_t, groups=g_t)
    else:
        objective = metricc.compile_metric(config.objective, constraints=[constraint], **options)

        def loss(z):
            return objective(z, y_t, groups=g_t)
    return _torch_predictor(_train_torch(loss, X_t, config.epochs, config.learning_rate))


def _fit_fairret(config, count, strength, X, y, groups, run):
    from fairret.loss import NormLoss
    from fairret.statistic import PositiveRate, TruePositiveRate

    statistic = TruePositiveRate() if config.gap == "eo" else PositiveRate()
    fairness = NormLoss(statistic)
    X_t, y_t = torch.tensor(X), torch.tensor(y, dtype=torch.float64)
    sens = torch.nn.functional.one_hot(torch.tensor(groups), count).double()

    def loss(z):
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y_t)
        labels = (y_t.unsqueeze(-1),) if config.gap == "eo" else ()  # the positive rate takes no labels
        return bce + strength * fairness(z.unsqueeze(-1), sens, *labels)

    return _torch_predictor(_train_torch(loss, X_t, config.epochs, config.learning_rate))


def _logistic_regression():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000)


def _fit_exponentiated_gradient(config, level, X, y, groups, run):
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient, TruePositiveRateParity

    moment = TruePositiveRateParity(difference_bound=level) if config.gap == "eo" else \
        DemographicParity(difference_bound=level)
    model = ExponentiatedGradient(_logistic_regression(), moment)
    model.fit(X, y, sensitive_features=groups)
    return lambda X_new, groups_new: np.asarray(model.predict(X_new, random_state=run), dtype=np.int64)


def _fit_threshold_optimizer(config, level, X, y, groups, run):
    from fairlearn.postprocessing import ThresholdOptimizer

    constraint = "true_positive_rate_parity" if config.gap == "eo" else "demographic_parity"
    model = ThresholdOptimizer(estimator=_logistic_regression(), constraints=constraint, tol=level,
                               predict_method="predict_proba")
    model.fit(X, y, sensitive_features=groups)
    return lambda X_new, groups_new: np.asarray(model.predict(X_new, sensitive_features=groups_new,
                                                              random_state=run), dtype=np.int64)


FIELDS = [field.name for field in dataclasses.fields(FairnessRecord)] + ["holds"]


def write_fairness_records(records, path) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for record in records:
            writer.writerow([getattr(record, name) for name in FIELDS])


def read_fairness_records(path) -> list[FairnessRecord]:
    import csv

    fields = dataclasses.fields(FairnessRecord)
    with open(path, encoding="utf-8") as handle:
        return [FairnessRecord(**{f.name: (int(row[f.name]) if f.type == "int" else float(row[f.name])
                                           if f.type == "float" else row[f.name]) for f in fields})
                for row in csv.DictReader(handle)]


__all__ = ["FairnessConfig", "FairnessRecord", "GAPS", "METHODS", "group_gap", "load_fairness_table",
           "read_fairness_records", "run_fairness", "write_fairness_records"]
