"""Evaluation metrics from hard predictions, computed with scikit-learn, independently of metricc.

The compiled losses optimise soft counts; what the tables report is the metric
of thresholded predictions, as a user would deploy them. Keeping this code
separate from the compiler means a wrong derivation cannot mark its own homework.
Undefined ratios (no predicted positives, ...) count as 0, as in scikit-learn's
``zero_division=0``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

STANDARD_ROWS = ("accuracy", "f1", "gmean", "balanced_accuracy")  # the rows of AnyLoss Tables 17/18


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """One evaluation metric: a label for tables, the function, and whether higher is better."""

    label: str
    function: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True


def _counts(y_true, y_pred) -> tuple[int, int, int, int]:
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return int(tp), int(fn), int(fp), int(tn)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _recall(y, p):
    return skm.recall_score(y, p, zero_division=0)


def _specificity(y, p):
    return skm.recall_score(y, p, pos_label=0, zero_division=0)


def _precision(y, p):
    return skm.precision_score(y, p, zero_division=0)


def _npv(y, p):
    return skm.precision_score(y, p, pos_label=0, zero_division=0)


def _tversky(y, p, alpha: float = 0.3, beta: float = 0.7):
    tp, fn, fp, _ = _counts(y, p)
    return _ratio(tp, tp + alpha * fp + beta * fn)


def _fbeta(beta: float) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, p: skm.fbeta_score(y, p, beta=beta, zero_division=0)


EVALUATORS: dict[str, Evaluator] = {
    "accuracy": Evaluator("accuracy", skm.accuracy_score),
    "error_rate": Evaluator("error rate", skm.zero_one_loss, higher_is_better=False),
    "precision": Evaluator("precision", _precision),
    "recall": Evaluator("recall", _recall),
    "specificity": Evaluator("specificity", _specificity),
    "npv": Evaluator("NPV", _npv),
    "fpr": Evaluator("FPR", lambda y, p: 1.0 - _specificity(y, p), higher_is_better=False),
    "fnr": Evaluator("FNR", lambda y, p: 1.0 - _recall(y, p), higher_is_better=False),
    "f1": Evaluator("F1", lambda y, p: skm.f1_score(y, p, zero_division=0)),
    "fbeta": Evaluator("F-beta (beta=1)", _fbeta(1.0)),
    "f2": Evaluator("F2", _fbeta(2.0)),
    "f05": Evaluator("F0.5", _fbeta(0.5)),
    "dice": Evaluator("Dice", lambda y, p: skm.f1_score(y, p, zero_division=0)),
    "jaccard": Evaluator("Jaccard", lambda y, p: skm.jaccard_score(y, p, zero_division=0)),
    "threat_score": Evaluator("threat score", lambda y, p: skm.jaccard_score(y, p, zero_division=0)),
    "tversky": Evaluator("Tversky (0.3, 0.7)", _tversky),
    "gmean": Evaluator("G-mean", lambda y, p: math.sqrt(_recall(y, p) * _specificity(y, p))),
    "balanced_accuracy": Evaluator("balanced accuracy", skm.balanced_accuracy_score),
    "informedness": Evaluator("informedness", lambda y, p: skm.balanced_accuracy_score(y, p, adjusted=True)),
    "markedness": Evaluator("markedness", lambda y, p: _precision(y, p) + _npv(y, p) - 1.0),
    "fowlkes_mallows": Evaluator("Fowlkes-Mallows", lambda y, p: math.sqrt(_precision(y, p) * _recall(y, p))),
    "mcc": Evaluator("MCC", skm.matthews_corrcoef),
    "cohen_kappa": Evaluator("Cohen's kappa", skm.cohen_kappa_score),
}


def evaluation_rows(metrics_of_losses: list[str | None]) -> list[str]:
    """The table rows: accuracy, F1, G-mean, balanced accuracy, then each compiled loss's own metric."""
    rows = list(STANDARD_ROWS)
    for metric in metrics_of_losses:
        if metric is not None and metric not in rows:
            rows.append(metric)
    unknown = [row for row in rows if row not in EVALUATORS]
    if unknown:
        raise ValueError(f"no evaluator for metric(s) {', '.join(unknown)}")
    return rows


def hard_predictions(logits: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """1 where σ(logit) > threshold, else 0 (compared on the logit scale, so nothing overflows)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    cut = math.log(threshold / (1.0 - threshold))
    return (np.asarray(logits, dtype=np.float64) > cut).astype(np.int64)


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, rows: list[str]) -> dict[str, float]:
    """Each row's metric of the hard predictions ``y_pred``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return {row: float(EVALUATORS[row].function(y_true, y_pred)) for row in rows}
