"""Multi-class and multi-label tables for the experiments, and how they are split.

* A **multi-class** CSV has an integer ``label`` column holding the class, 0 … C − 1 (every class
  present at least once), as ``../shared/data/multiclass/*.csv`` do.
* A **multi-label** CSV has one 0/1 column per label, named ``label_<name>``, as the MULAN tables in
  ``../shared/data/multilabel/`` do.
* Either may have a ``split`` column (``train``/``test``): the source's own split (UCI's optdigits,
  MULAN's standard split), which the protocol then uses instead of cross-validation.

Features are read as the binary reader reads them (numbers kept, text one-hot encoded, missing
cells NaN with an indicator column, imputed per training fold). ``digits`` is scikit-learn's
8×8 digit images with all ten classes (offline), for the ResNet.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..runtime import TASKS as RUNTIME_TASKS
from .datasets import DatasetError, _encode_column, read_csv

TASKS = tuple(task for task in RUNTIME_TASKS if task != "binary")  # the tasks with a class axis
LABEL_PREFIX = "label_"
SPLIT_COLUMN = "split"
NAMED = ("digits",)


@dataclasses.dataclass(frozen=True, eq=False)
class TaskDataset:
    """Features ``X`` (float64) and targets: class indices ``y`` (N,) for ``multiclass``, 0/1 rows (N, C) for
    ``multilabel``. ``test`` marks the source's test rows where it has a split (else None)."""

    name: str
    task: str
    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    description: str
    test: np.ndarray | None = None
    image_shape: tuple[int, int, int] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def support(self) -> np.ndarray:
        """Rows per class (multi-class) or positives per label (multi-label)."""
        if self.task == "multiclass":
            return np.bincount(self.y, minlength=self.num_classes)
        return self.y.sum(0)

    def summary(self) -> str:
        support = self.support()
        noun = "classes" if self.task == "multiclass" else "labels"
        split = "" if self.test is None else f", split {int((~self.test).sum())}/{int(self.test.sum())}"
        return (f"{self.name}: {self.n_samples} rows, {self.n_features} features, {self.num_classes} {noun} "
                f"(support {int(support.min())}-{int(support.max())}){split}")


def load_task_csv(path: str | Path, task: str | None = None, label_column: str = "label",
                  drop_columns: tuple[str, ...] = (), name: str | None = None) -> TaskDataset:
    """A multi-class or multi-label table; ``task=None`` decides from the columns (``label_*`` columns:
    multi-label, else multi-class with ``label_column``).

    Raises:
        DatasetError: missing file or columns, labels that are not 0 … C − 1 (multi-class) or 0/1
            (multi-label), a split column with values other than train/test.
    """
    path = Path(path)
    header, columns = _read_columns(path)
    label_columns = [c for c in header if c.startswith(LABEL_PREFIX)]
    if task is None:
        task = "multilabel" if label_columns else "multiclass"
    if task not in TASKS:
        raise DatasetError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    unknown = [c for c in drop_columns if c not in header]
    if unknown:
        raise DatasetError(f"{path}: cannot drop missing column(s) {', '.join(unknown)}")
    if task == "multiclass":
        if label_column not in header:
            raise DatasetError(f"{path}: no label column {label_column!r} for a multi-class table; columns are "
                               f"{', '.join(header[:12])}{' ...' if len(header) > 12 else ''}")
        y, class_names = _class_indices(columns[label_column], f"{path}, column {label_column!r}")
        used = {label_column}
    else:
        if len(label_columns) < 2:
            raise DatasetError(f"{path}: a multi-label table needs two or more 0/1 columns named "
                               f"{LABEL_PREFIX}<name>, found {len(label_columns)}")
        y = np.stack([_binary_column(columns[c], f"{path}, column {c!r}") for c in label_columns], axis=1)
        class_names = tuple(c[len(LABEL_PREFIX):] for c in label_columns)
        used = set(label_columns)
    test = None
    if SPLIT_COLUMN in header:
        test = _split(columns[SPLIT_COLUMN], f"{path}, column {SPLIT_COLUMN!r}")
        used.add(SPLIT_COLUMN)
    features = [c for c in header if c not in used and c not in drop_columns]
    if not features:
        raise DatasetError(f"{path}: no feature columns left")
    blocks, names, notes = [], [], []
    for column in features:
        block, block_names, note = _encode_column(column, columns[column], path)
        blocks.append(block)
        names.extend(block_names)
        if note:
            notes.append(note)
    description = f"{path} ({task}{', source split' if test is not None else ''})"
    if notes:
        description += "; " + "; ".join(notes)
    return TaskDataset(name or path.stem, task, np.concatenate(blocks, axis=1), y, class_names, tuple(names),
                       description, test)


def digits_dataset() -> TaskDataset:
    """scikit-learn's 8×8 digit images (1,797), all ten classes: the ResNet's multi-class data."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return TaskDataset("digits", "multiclass", bunch.data.astype(np.float64), bunch.target.astype(np.int64),
                       tuple(str(d) for d in range(10)), tuple(f"px{i}" for i in range(64)),
                       "scikit-learn load_digits, 10 classes", image_shape=(1, 8, 8))


def load_named(name: str, task: str) -> TaskDataset:
    key = name.strip().lower()
    if key == "digits" and task == "multiclass":
        return digits_dataset()
    raise DatasetError(f"unknown {task} dataset {name!r}; named: {', '.join(NAMED)} (multi-class); "
                       "pass CSV files with --data or --data-dir")


def _read_columns(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    header, rows = read_csv(path)
    if len(set(header)) != len(header):
        raise DatasetError(f"{path}: the header names a column twice")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}, line {number}: {len(row)} fields, the header has {len(header)}")
    if not rows:
        raise DatasetError(f"{path} has a header but no rows")
    return header, {column: [row[i].strip() for row in rows] for i, column in enumerate(header)}


def _integer(value: str, where: str, line: int) -> int:
    try:
        number = float(value)
    except ValueError:
        raise DatasetError(f"{where}: labels must be whole numbers, found {value!r} on line {line}") from None
    if not math.isfinite(number) or number != int(number):
        raise DatasetError(f"{where}: labels must be whole numbers, found {value!r} on line {line}")
    return int(number)


def _class_indices(values: list[str], where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    y = np.asarray([_integer(v, where, line) for line, v in enumerate(values, start=2)], dtype=np.int64)
    if y.min() < 0:
        raise DatasetError(f"{where}: class indices must be 0 or more, found {y.min()}")
    classes = int(y.max()) + 1
    present = set(y.tolist())
    # Every class needs rows, so C ≤ the number of rows; the first missing classes lie below len(present) + 10
    # (never build range(C): a label of 10**9 made a set of a billion numbers).
    missing = [c for c in range(min(classes, len(present) + 10)) if c not in present]
    if missing:
        largest = f" (the largest label, {classes - 1}, makes C = {classes})" if classes > len(y) else ""
        raise DatasetError(f"{where}: classes must be numbered 0 … C − 1 with rows in each{largest}; no rows of "
                           f"class(es) {', '.join(map(str, missing[:10]))}")
    if classes < 2:
        raise DatasetError(f"{where}: every row has class 0; a multi-class task needs two or more classes")
    return y, tuple(str(c) for c in range(classes))


def _binary_column(values: list[str], where: str) -> np.ndarray:
    y = np.asarray([_integer(v, where, line) for line, v in enumerate(values, start=2)], dtype=np.int64)
    if not np.isin(y, (0, 1)).all():
        bad = int(y[~np.isin(y, (0, 1))][0])
        raise DatasetError(f"{where}: labels must be 0 or 1, found {bad}")
    return y


def _split(values: list[str], where: str) -> np.ndarray:
    lowered = np.asarray([v.lower() for v in values])
    bad = sorted(set(lowered.tolist()) - {"train", "test"})
    if bad:
        raise DatasetError(f"{where}: values must be 'train' or 'test', found {bad[0]!r}")
    test = lowered == "test"
    if test.all() or not test.any():
        raise DatasetError(f"{where}: needs both train and test rows")
    return test


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: the rows it trains and tests on, and its index (seeds the model and batch order)."""

    index: int
    train: np.ndarray
    test: np.ndarray
    label: str


def runs(dataset: TaskDataset, folds: int, repeats: int, seed: int = 0) -> Iterator[Run]:
    """The source's split repeated ``repeats`` times (different initial weights and batch orders), or
    ``folds``-fold cross-validation where the table has no split: stratified for multi-class, plain
    shuffled k-fold for multi-label (scikit-learn has no multi-label stratification)."""
    import warnings

    from sklearn.model_selection import KFold, StratifiedKFold

    if dataset.test is not None:
        train, test = np.flatnonzero(~dataset.test), np.flatnonzero(dataset.test)
        for index in range(repeats):
            yield Run(index, train, test, f"source split, repeat {index + 1}/{repeats}")
        return
    if folds < 2:
        raise DatasetError(f"--folds must be at least 2, got {folds}")
    if dataset.task == "multiclass":
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes with fewer rows than folds (ecoli has two of 2)
        pieces = list(splitter.split(dataset.X, dataset.y if dataset.task == "multiclass" else None))
    for index, (train, test) in enumerate(pieces):
        yield Run(index, train, test, f"fold {index + 1}/{folds}")
