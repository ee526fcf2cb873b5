"""Scores of hard multi-class and multi-label predictions, computed independently of metricc.

Hard predictions are the argmax of the logits (multi-class) and logit > 0, i.e. σ(z) > 1/2, per label
(multi-label). Rows:

* ``macro-f1``, ``micro-f1``, ``weighted-f1``: scikit-learn's ``f1_score`` with that ``average``;
* ``<average>-<metric>`` for any other catalog metric a compiled loss targets: the metric of each
  class's one-vs-rest confusion counts (``evaluation.EVALUATORS[metric].counts``, written from the
  definitions and tested against scikit-learn), averaged as scikit-learn averages F1: ``macro`` the
  mean, ``weighted`` weighted by support, ``micro`` the metric of the summed counts;
* ``mcc_rk`` (multi-class): scikit-learn's ``matthews_corrcoef``, Gorodkin's R_K statistic, which is
  not an average of one-vs-rest MCCs (docs/multiclass.md).

Classes: for multi-class, the classes present in the test rows' labels or predictions (scikit-learn's
default ``labels=None``), for multi-label every label; undefined ratios count as 0 (``zero_division=0``).
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from .evaluation import EVALUATORS

F1_ROWS = ("macro-f1", "micro-f1")
LABELS = {"macro-f1": "macro-F1", "micro-f1": "micro-F1", "weighted-f1": "weighted-F1",
          "mcc_rk": "MCC (scikit-learn, R_K)"}


def predictions(logits: np.ndarray, task: str) -> np.ndarray:
    """Argmax class indices (multi-class) or 0/1 rows, 1 where the logit is positive (multi-label)."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == "multiclass":
        return np.argmax(np.where(np.isnan(logits), -np.inf, logits), axis=1)
    return (logits > 0).astype(np.int64)


def one_vs_rest_counts(y_true: np.ndarray, y_pred: np.ndarray, task: str,
                       labels: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """(TP, FN, FP, TN), each an array with one entry per class, of the one-vs-rest confusion matrices."""
    if task == "multiclass":
        labels = class_labels(y_true, y_pred) if labels is None else labels
        truth = np.asarray(y_true)[:, None] == labels[None, :]
        guess = np.asarray(y_pred)[:, None] == labels[None, :]
    else:
        truth, guess = np.asarray(y_true) == 1, np.asarray(y_pred) == 1
    tp = (truth & guess).sum(0)
    fn = (truth & ~guess).sum(0)
    fp = (~truth & guess).sum(0)
    tn = (~truth & ~guess).sum(0)
    return tuple(a.astype(np.float64) for a in (tp, fn, fp, tn))


def class_labels(y_true, y_pred) -> np.ndarray:
    """scikit-learn's default label set: the classes in the labels or the predictions, sorted."""
    return np.union1d(np.asarray(y_true), np.asarray(y_pred))


def averaged(metric: str, average: str, counts: tuple[np.ndarray, ...]) -> float:
    """A catalog metric of one-vs-rest counts, averaged as scikit-learn averages F1."""
    evaluator = EVALUATORS[metric]
    if average == "micro":
        return float(evaluator.from_counts(*(c.sum() for c in counts)))
    values = evaluator.from_counts(*counts)
    if average == "macro":
        return float(values.mean())
    support = counts[0] + counts[1]
    return float((values * support).sum() / support.sum()) if support.sum() > 0 else 0.0


def evaluation_rows(task: str, targets: list[str | None]) -> list[str]:
    """macro-F1, micro-F1, each loss's target, and for multi-class scikit-learn's MCC (R_K)."""
    rows = list(F1_ROWS)
    for target in targets:
        if target is not None and target not in rows:
            average, _, metric = target.partition("-")
            if metric not in EVALUATORS:
                raise ValueError(f"no evaluator for metric {metric!r}")
            rows.append(target)
    if task == "multiclass" and "mcc_rk" not in rows:
        rows.append("mcc_rk")
    return rows


def row_label(row: str) -> str:
    if row in LABELS:
        return LABELS[row]
    average, _, metric = row.partition("-")
    return f"{average} {EVALUATORS[metric].label}"


def score(y_true: np.ndarray, logits: np.ndarray, task: str, rows: list[str]) -> dict[str, float]:
    """Every row's score of the hard predictions of ``logits``."""
    y_pred = predictions(logits, task)
    counts = one_vs_rest_counts(y_true, y_pred, task)
    scores = {}
    for row in rows:
        if row == "mcc_rk":
            scores[row] = float(skm.matthews_corrcoef(y_true, y_pred))
            continue
        average, _, metric = row.partition("-")
        if metric == "f1":
            scores[row] = float(skm.f1_score(y_true, y_pred, average=average, zero_division=0))
        else:
            scores[row] = averaged(metric, average, counts)
    return scores
