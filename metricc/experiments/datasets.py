"""Binary classification datasets for the experiments, all loadable offline.

The three named datasets are the AnyLoss paper's (Han et al., KDD 2024) that can
be rebuilt without a download: ``random`` (its dataset #1), ``breast_cancer``
(its #3, made 10:1 as in the paper) and ``digits`` (its ResNet/MNIST experiment in
miniature, scikit-learn's 8×8 digits). Any CSV with a 0/1 label column works too.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

# The dataset itself is fixed; the training seed is a separate knob (see protocol.py).
DATA_SEED = 0
DEFAULT_POSITIVE_DIGIT = 8  # the hardest-to-separate digit; imbalanced-learn's optical_digits uses 8 too
NAMED_DATASETS = ("random", "breast_cancer", "digits")
_MISSING = {"", "?", "na", "nan", "n/a", "null", "none"}  # cells that mean "no value"


class DatasetError(ValueError):
    """A dataset that cannot be loaded or is not a binary classification table."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Features ``X`` (float64, one row per sample) and labels ``y`` (0/1 int64).

    ``image_shape`` is set for image data, (channels, height, width), so that a
    convolutional model can reshape the flat rows.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    description: str
    image_shape: tuple[int, int, int] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_positive(self) -> int:
        return int(self.y.sum())

    def summary(self) -> str:
        ratio = (self.n_samples - self.n_positive) / max(self.n_positive, 1)
        return (f"{self.name}: {self.n_samples} rows, {self.n_features} features, "
                f"{self.n_positive} positives ({ratio:.1f}:1)")

    def subsample(self, n: int, seed: int = DATA_SEED) -> Dataset:
        """A stratified random subset of ``n`` rows (for quick runs and tests)."""
        if n >= self.n_samples:
            return self
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(np.arange(self.n_samples), train_size=n, stratify=self.y, random_state=seed)
        keep = np.sort(keep)
        return dataclasses.replace(self, X=self.X[keep], y=self.y[keep],
                                   description=f"{self.description}; stratified subsample of {n} rows")


def load_dataset(name: str) -> Dataset:
    """A named dataset: ``random``, ``breast_cancer``, ``digits`` or ``digits:N`` (digit N positive).

    Raises:
        DatasetError: the name is unknown.
    """
    key, _, option = name.strip().partition(":")
    key = key.lower()
    if key == "random" and not option:
        return random_dataset()
    if key == "breast_cancer" and not option:
        return breast_cancer_dataset()
    if key == "digits":
        if not option:
            return digits_dataset()
        if option.isdigit() and 0 <= int(option) <= 9:
            return digits_dataset(int(option))
        raise DatasetError(f"digits:N needs a digit 0-9, got {option!r}")
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(NAMED_DATASETS)} "
                       "(or digits:N), or pass a CSV file with --data")


def random_dataset(n_samples: int = 10_000) -> Dataset:
    """AnyLoss dataset #1: 10,000 rows, 2 features, 9:1, generated as in the authors' notebooks.

    The paper only says "make_classification, 10,000 × 2, 9:1"; the authors' code
    (doheonhan/anyloss_extension, "[Section 3.3] AnyLoss_org - Learning Curves.ipynb")
    draws 5 features (3 informative, 1 redundant, class_sep=1.2, random_state=0)
    and keeps the first 2 principal components. We do the same.
    """
    from sklearn.datasets import make_classification
    from sklearn.decomposition import PCA

    X, y = make_classification(n_samples=n_samples, n_classes=2, weights=[0.9, 0.1], class_sep=1.2,
                               n_features=5, n_informative=3, n_redundant=1, n_clusters_per_class=1,
                               random_state=DATA_SEED)
    X = PCA(n_components=2).fit_transform(X)
    return Dataset("random", X.astype(np.float64), y.astype(np.int64), ("pc0", "pc1"),
                   f"make_classification(n_samples={n_samples}, weights=[0.9, 0.1], class_sep=1.2, n_features=5, "
                   f"n_informative=3, n_redundant=1, n_clusters_per_class=1, random_state={DATA_SEED}) "
                   "projected on its first 2 principal components (the AnyLoss authors' recipe)")


def breast_cancer_dataset(n_malignant: int = 36) -> Dataset:
    """AnyLoss dataset #3: Wisconsin diagnostic data made 10:1 (357 benign + 36 malignant drawn with a fixed seed).

    Malignant is the positive class (scikit-learn codes it as 0, so the labels are flipped).
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    malignant = np.flatnonzero(bunch.target == 0)
    benign = np.flatnonzero(bunch.target == 1)
    rng = np.random.default_rng(DATA_SEED)
    drawn = rng.choice(malignant, size=n_malignant, replace=False)
    keep = np.sort(np.concatenate([benign, drawn]))
    X = bunch.data[keep].astype(np.float64)
    y = (bunch.target[keep] == 0).astype(np.int64)
    return Dataset("breast_cancer", X, y, tuple(bunch.feature_names),
                   f"scikit-learn load_breast_cancer: all {benign.size} benign + {n_malignant} of "
                   f"{malignant.size} malignant (numpy default_rng({DATA_SEED})); malignant = 1")


def digits_dataset(positive_digit: int = DEFAULT_POSITIVE_DIGIT) -> Dataset:
    """scikit-learn's 8×8 digit images, ``positive_digit`` against the rest (about 1:9)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = bunch.data.astype(np.float64)
    y = (bunch.target == positive_digit).astype(np.int64)
    name = "digits" if positive_digit == DEFAULT_POSITIVE_DIGIT else f"digits:{positive_digit}"
    return Dataset(name, X, y, tuple(f"px{i}" for i in range(X.shape[1])),
                   f"scikit-learn load_digits, digit {positive_digit} = 1, others = 0", image_shape=(1, 8, 8))


def load_csv(path: str | Path, label_column: str = "label", drop_columns: tuple[str, ...] = (),
             name: str | None = None, *, require_drop_columns: bool = True) -> Dataset:
    """A CSV table with a header row and a 0/1 label column.

    Numeric columns are kept as they are. A column with any text besides numbers and
    missing markers is categorical and one-hot encoded (every distinct text, ``?`` included,
    is a category). Missing cells (``?``, empty, NA, NaN, ...) in a numeric column stay NaN
    here and get an indicator column ``<column>=missing``; the protocol imputes them with the
    training fold's median, so no statistic of a test fold leaks into training.
    ``require_drop_columns=False`` ignores ``drop_columns`` the file does not have (for a
    directory of tables of which only some have, e.g., an ``id`` column).

    Raises:
        DatasetError: missing file, label column or rows; labels other than 0/1; a numeric
            column without any value.
    """
    path = Path(path)
    header, rows = read_csv(path)
    if label_column not in header:
        raise DatasetError(f"{path}: no label column {label_column!r}; columns are {', '.join(header)} "
                           "(choose one with --label-column)")
    unknown = [column for column in drop_columns if column not in header]
    if unknown and require_drop_columns:
        raise DatasetError(f"{path}: cannot drop missing column(s) {', '.join(unknown)}")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}, line {number}: {len(row)} fields, the header has {len(header)}")
    if not rows:
        raise DatasetError(f"{path} has a header but no rows")
    columns = {column: [row[i].strip() for row in rows] for i, column in enumerate(header)}
    y = _binary_labels(columns[label_column], f"{path}, column {label_column!r}")
    features = [c for c in header if c != label_column and c not in drop_columns]
    if not features:
        raise DatasetError(f"{path}: no feature columns left besides {label_column!r}")
    blocks, names, notes = [], [], []
    for column in features:
        block, block_names, note = _encode_column(column, columns[column], path)
        blocks.append(block)
        names.extend(block_names)
        if note:
            notes.append(note)
    X = np.concatenate(blocks, axis=1)
    description = f"{path} (label column {label_column!r})"
    if notes:
        description += "; " + "; ".join(notes)
    return Dataset(name or path.stem, X, y, tuple(names), description)


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header (names stripped) and the non-empty rows of a UTF-8 CSV file, or a DatasetError that
    says what is wrong with it."""
    if not path.is_file():
        raise DatasetError(f"no such CSV file: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path} is empty")
            header = [column.strip() for column in header]
            for index, column in enumerate(header):  # a dict of columns would silently keep the last one
                if column in header[:index]:
                    raise DatasetError(f"{path}: the header names column {column!r} twice (columns "
                                       f"{header.index(column) + 1} and {index + 1}); rename one")
            return header, [row for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path} is not a readable UTF-8 CSV file ({exc})") from None


def csv_files_in(directory: str | Path) -> list[Path]:
    """The ``*.csv`` files directly in ``directory`` (not in subfolders), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"no such directory: {directory}")
    files = sorted(p for p in directory.glob("*.csv") if p.is_file())
    if not files:
        raise DatasetError(f"{directory} holds no .csv files")
    return files


def _binary_labels(values: list[str], where: str) -> np.ndarray:
    numbers = []
    for row, value in enumerate(values, start=2):
        if value.lower() in _MISSING:
            raise DatasetError(f"{where}: missing label on line {row}")
        try:
            number = float(value)
        except ValueError:
            raise DatasetError(f"{where}: labels must be 0 or 1, found {value!r} on line {row}") from None
        if number not in (0.0, 1.0):
            raise DatasetError(f"{where}: labels must be 0 or 1 (binary), found {value!r} on line {row}")
        numbers.append(number)
    y = np.asarray(numbers, dtype=np.int64)
    if y.min() == y.max():
        raise DatasetError(f"{where}: every label is {y[0]}; a binary task needs both classes")
    return y


MAX_FEATURE = 1e150  # its square, summed over a million rows, stays finite in float64


def _as_number(value: str) -> float | None:
    """The number in a cell; NaN for a missing marker or a non-finite number; None for text."""
    if value.lower() in _MISSING:
        return math.nan
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else math.nan


def _encode_column(column: str, values: list[str], path: Path) -> tuple[np.ndarray, list[str], str | None]:
    numbers = [_as_number(value) for value in values]
    if all(number is not None for number in numbers):
        array = np.asarray(numbers, dtype=np.float64)
        missing = np.isnan(array)
        if missing.all():
            raise DatasetError(f"{path}: column {column!r} has no value in any row; drop it (--drop-columns)")
        largest = int(np.nanargmax(np.abs(array)))
        if abs(array[largest]) > MAX_FEATURE:  # standardising squares the values: 1e308 trained into NaN
            raise DatasetError(f"{path}: column {column!r} holds {array[largest]:g} (line {largest + 2}); features "
                               f"beyond ±{MAX_FEATURE:g} cannot be standardised in float64 (their squares overflow): "
                               "rescale the column")
        if not missing.any():
            return array[:, None], [column], None
        block = np.stack([array, missing.astype(np.float64)], axis=1)
        return block, [column, f"{column}=missing"], f"{int(missing.sum())} missing in {column!r} imputed"
    from sklearn.preprocessing import OneHotEncoder

    encoder = OneHotEncoder(sparse_output=False, dtype=np.float64)
    block = encoder.fit_transform(np.asarray(values, dtype=object)[:, None])
    return block, [f"{column}={category}" for category in encoder.categories_[0]], None


def impute_missing(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace NaN in each column by the training rows' median of that column (0 if the fold has none)."""
    if not (np.isnan(train).any() or np.isnan(test).any()):
        return train, test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column without any value in this fold
        median = np.nanmedian(train, axis=0)
    median = np.where(np.isnan(median), 0.0, median)
    return np.where(np.isnan(train), median, train), np.where(np.isnan(test), median, test)


def check_folds(dataset: Dataset, folds: int) -> None:
    """Stratified k-fold needs at least ``folds`` samples of each class."""
    if folds < 2:
        raise DatasetError(f"--folds must be at least 2, got {folds}")
    smallest = min(dataset.n_positive, dataset.n_samples - dataset.n_positive)
    if smallest < folds:
        raise DatasetError(f"{dataset.name}: {smallest} samples in the smaller class, fewer than {folds} folds")
