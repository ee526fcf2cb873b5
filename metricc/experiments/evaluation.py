"""Evaluation metrics of hard predictions and of scores, computed independently of metricc; threshold tuning.

The compiled losses optimise soft counts; what the tables report is the metric
of thresholded predictions, as a user would deploy them. Keeping this code
separate from the compiler means a wrong derivation cannot mark its own homework:
the final scores come from scikit-learn. Each evaluator also has a vectorised
form over confusion counts (numpy, written here, tested against scikit-learn),
which the threshold scan and the per-epoch validation curves use, where calling
scikit-learn for every candidate threshold or epoch would dominate the run.
Undefined ratios (no predicted positives, ...) count as 0, as in scikit-learn's
``zero_division=0``. AUROC and average precision are metrics of the scores themselves
(scikit-learn's ``roc_auc_score`` and ``average_precision_score`` of the logits): no
threshold, so their fixed and tuned values are one number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

STANDARD_ROWS = ("accuracy", "f1", "gmean", "balanced_accuracy")  # the rows of AnyLoss Tables 17/18

Counts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # TP, FN, FP, TN, each of one shape
CountsFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """One evaluation metric: a label for tables, the function, and whether higher is better.

    ``function(y_true, y_pred)`` gives the reported score; ``counts(TP, FN, FP, TN)``
    the same metric, vectorised over arrays of confusion counts (same zero-division rule).
    A metric of the scores themselves (AUROC, average precision: ``from_scores`` is set) has
    no threshold: ``function(y_true, logits)`` takes the logits, and there is nothing to tune.
    """

    label: str
    function: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool = True
    counts: CountsFunction | None = None
    from_scores: bool = False

    def from_counts(self, tp, fn, fp, tn) -> np.ndarray:
        """The metric of confusion counts (arrays of one shape), undefined values as 0."""
        arrays = [np.asarray(a, dtype=np.float64) for a in (tp, fn, fp, tn)]
        if self.counts is None:  # pragma: no cover - every evaluator defined here has one
            raise ValueError(f"{self.label} has no vectorised form")
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.asarray(self.counts(*arrays), dtype=np.float64)
        return np.where(np.isfinite(values), values, 0.0)


def _counts(y_true, y_pred) -> tuple[int, int, int, int]:
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return int(tp), int(fn), int(fp), int(tn)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _div(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    out = np.zeros(numerator.shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


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


# Vectorised forms over counts (TP, FN, FP, TN), written from the definitions, not from metricc's catalog.
def _c_recall(tp, fn, fp, tn):
    return _div(tp, tp + fn)


def _c_specificity(tp, fn, fp, tn):
    return _div(tn, tn + fp)


def _c_precision(tp, fn, fp, tn):
    return _div(tp, tp + fp)


def _c_npv(tp, fn, fp, tn):
    return _div(tn, tn + fn)


def _c_fbeta(beta: float) -> CountsFunction:
    b2 = beta * beta
    return lambda tp, fn, fp, tn: _div((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)


def _c_accuracy(tp, fn, fp, tn):
    return _div(tp + tn, tp + fn + fp + tn)


def _c_jaccard(tp, fn, fp, tn):
    return _div(tp, tp + fn + fp)


def _c_balanced_accuracy(tp, fn, fp, tn):
    """The mean recall over the classes present, as scikit-learn computes it."""
    has_positives, has_negatives = (tp + fn) > 0, (tn + fp) > 0
    total = _c_recall(tp, fn, fp, tn) * has_positives + _c_specificity(tp, fn, fp, tn) * has_negatives
    return _div(total, has_positives.astype(float) + has_negatives)


def _c_mcc(tp, fn, fp, tn):
    return _div(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))


def _c_kappa(tp, fn, fp, tn):
    n = tp + fn + fp + tn
    observed = _div(tp + tn, n)
    expected = _div((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn), n * n)
    return _div(observed - expected, 1 - expected)


EVALUATORS: dict[str, Evaluator] = {
    "accuracy": Evaluator("accuracy", skm.accuracy_score, counts=_c_accuracy),
    "error_rate": Evaluator("error rate", skm.zero_one_loss, higher_is_better=False,
                            counts=lambda *c: 1.0 - _c_accuracy(*c)),
    "precision": Evaluator("precision", _precision, counts=_c_precision),
    "recall": Evaluator("recall", _recall, counts=_c_recall),
    "specificity": Evaluator("specificity", _specificity, counts=_c_specificity),
    "npv": Evaluator("NPV", _npv, counts=_c_npv),
    "fpr": Evaluator("FPR", lambda y, p: 1.0 - _specificity(y, p), higher_is_better=False,
                     counts=lambda *c: 1.0 - _c_specificity(*c)),
    "fnr": Evaluator("FNR", lambda y, p: 1.0 - _recall(y, p), higher_is_better=False,
                     counts=lambda *c: 1.0 - _c_recall(*c)),
    "f1": Evaluator("F1", lambda y, p: skm.f1_score(y, p, zero_division=0), counts=_c_fbeta(1.0)),
    "fbeta": Evaluator("F-beta (beta=1)", _fbeta(1.0), counts=_c_fbeta(1.0)),
    "f2": Evaluator("F2", _fbeta(2.0), counts=_c_fbeta(2.0)),
    "f05": Evaluator("F0.5", _fbeta(0.5), counts=_c_fbeta(0.5)),
    "dice": Evaluator("Dice", lambda y, p: skm.f1_score(y, p, zero_division=0), counts=_c_fbeta(1.0)),
    "jaccard": Evaluator("Jaccard", lambda y, p: skm.jaccard_score(y, p, zero_division=0), counts=_c_jaccard),
    "threat_score": Evaluator("threat score", lambda y, p: skm.jaccard_score(y, p, zero_division=0),
                              counts=_c_jaccard),
    "tversky": Evaluator("Tversky (0.3, 0.7)", _tversky,
                         counts=lambda tp, fn, fp, tn: _div(tp, tp + 0.3 * fp + 0.7 * fn)),
    "focal_tversky": Evaluator("focal Tversky (0.3, 0.7, 4/3)", lambda y, p: 1.0 - (1.0 - _tversky(y, p)) ** 0.75,
                               counts=lambda tp, fn, fp, tn: 1.0 - (1.0 - _div(tp, tp + 0.3 * fp + 0.7 * fn)) ** 0.75),
    "gmean": Evaluator("G-mean", lambda y, p: math.sqrt(_recall(y, p) * _specificity(y, p)),
                       counts=lambda *c: np.sqrt(_c_recall(*c) * _c_specificity(*c))),
    "balanced_accuracy": Evaluator("balanced accuracy", skm.balanced_accuracy_score, counts=_c_balanced_accuracy),
    "informedness": Evaluator("informedness", lambda y, p: skm.balanced_accuracy_score(y, p, adjusted=True),
                              counts=lambda *c: 2 * _c_balanced_accuracy(*c) - 1),
    "markedness": Evaluator("markedness", lambda y, p: _precision(y, p) + _npv(y, p) - 1.0,
                            counts=lambda *c: _c_precision(*c) + _c_npv(*c) - 1),
    "fowlkes_mallows": Evaluator("Fowlkes-Mallows", lambda y, p: math.sqrt(_precision(y, p) * _recall(y, p)),
                                 counts=lambda *c: np.sqrt(_c_precision(*c) * _c_recall(*c))),
    "mcc": Evaluator("MCC", skm.matthews_corrcoef, counts=_c_mcc),
    "cohen_kappa": Evaluator("Cohen's kappa", skm.cohen_kappa_score, counts=_c_kappa),
}


def _finite_scores(logits) -> np.ndarray:
    """Logits scikit-learn accepts, in the same order: NaN (a diverged model) ranks as −∞; where any score is
    infinite, the ranks themselves (ties kept tied, so neither AUROC nor average precision changes)."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    z = np.where(np.isnan(z), -np.inf, z)
    if np.isfinite(z).all():
        return z
    from scipy.stats import rankdata

    return rankdata(z, method="min").astype(np.float64)


def _score_metric(function) -> Callable[[np.ndarray, np.ndarray], float]:
    """A scikit-learn metric of (labels, scores); NaN where the labels hold one class only (no ranking)."""

    def metric(y_true, logits) -> float:
        y = np.asarray(y_true).ravel()
        if np.unique(y).size < 2:
            return math.nan
        return float(function(y, _finite_scores(logits)))

    return metric


SCORE_ROWS = ("auroc", "average_precision")  # rows of the scores themselves; one brings the other into a table
EVALUATORS["auroc"] = Evaluator("AUROC", _score_metric(skm.roc_auc_score), from_scores=True)
EVALUATORS["average_precision"] = Evaluator("average precision", _score_metric(skm.average_precision_score),
                                            from_scores=True)


def fbeta_row(beta: float) -> str:
    """The evaluation row of F-beta: ``f1``, ``f2``, ``f05``, else ``fbeta=<beta>`` (registered on first use)."""
    named = {1.0: "f1", 2.0: "f2", 0.5: "f05"}
    if float(beta) in named:
        return named[float(beta)]
    row = f"fbeta={float(beta):g}"
    if row not in EVALUATORS:
        EVALUATORS[row] = Evaluator(f"F-beta (beta={float(beta):g})", _fbeta(float(beta)), counts=_c_fbeta(beta))
    return row


def expression_evaluator(label: str, metric, higher_is_better: bool) -> Evaluator:
    """An evaluator for a user's metric: its formula (a :class:`metricc.Metric`) on the hard confusion counts.

    The formula is evaluated with numpy from the parsed expression (``sympy.lambdify``);
    undefined values (0/0, ...) count as 0, as for the built-in metrics.
    """
    import sympy

    symbols = sympy.symbols("TP FN FP TN", nonnegative=True)
    by_name = {symbol.name: symbol for symbol in metric.expr.free_symbols}
    expr = metric.expr.subs({by_name[name]: value for name, value in metric.params if name in by_name})
    expr = expr.subs({by_name[s.name]: s for s in symbols if s.name in by_name})
    compiled = sympy.lambdify(symbols, expr, modules="numpy")

    def counts(tp, fn, fp, tn):
        return np.broadcast_to(compiled(tp, fn, fp, tn), np.broadcast(tp, fn, fp, tn).shape)

    evaluator = Evaluator(label, lambda y, p: 0.0, higher_is_better, counts)

    def function(y_true, y_pred) -> float:
        return float(evaluator.from_counts(*_counts(y_true, y_pred)))

    return dataclasses.replace(evaluator, function=function)


def evaluation_rows(targets: list[str | None], extra: dict[str, Evaluator] | None = None) -> list[str]:
    """The table rows: accuracy, F1, G-mean, balanced accuracy, then each loss's target metric.

    ``extra`` holds evaluators of rows that are not built in (users' expressions).
    """
    rows = list(STANDARD_ROWS)
    for metric in targets:
        if metric is not None and metric not in rows:
            rows.append(metric)
    if any(row in SCORE_ROWS for row in rows):
        rows += [row for row in SCORE_ROWS if row not in rows]
    known = {**EVALUATORS, **(extra or {})}
    unknown = [row for row in rows if row not in known]
    if unknown:
        raise ValueError(f"no evaluator for metric(s) {', '.join(unknown)}")
    return rows


def logit_cut(threshold: float) -> float:
    """The logit z with σ(z) = threshold: hard predictions compare logits, so nothing overflows."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    return math.log(threshold / (1.0 - threshold))


def hard_predictions(logits: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """1 where σ(logit) > threshold, else 0 (compared on the logit scale, so nothing overflows)."""
    return predictions_at_cut(logits, logit_cut(threshold))


def predictions_at_cut(logits: np.ndarray, cut: float) -> np.ndarray:
    """1 where logit > cut, else 0; a NaN logit (a diverged model) predicts 0."""
    return (np.asarray(logits, dtype=np.float64) > cut).astype(np.int64)


def counts_at_cut(y_true: np.ndarray, logits: np.ndarray, cut: float) -> tuple[int, int, int, int]:
    """(TP, FN, FP, TN) of the predictions logit > cut, with numpy (no scikit-learn call)."""
    y = np.asarray(y_true) == 1
    predicted = predictions_at_cut(logits, cut) == 1
    tp = int(np.count_nonzero(predicted & y))
    fp = int(np.count_nonzero(predicted & ~y))
    positives = int(np.count_nonzero(y))
    return tp, positives - tp, fp, int(y.size - positives - fp)


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, rows: list[str],
             evaluators: dict[str, Evaluator] | None = None, logits: np.ndarray | None = None) -> dict[str, float]:
    """Each row's metric of the hard predictions ``y_pred`` (``evaluators`` default to the built-in ones);
    rows of the scores themselves (AUROC, average precision) take ``logits``."""
    evaluators = evaluators or EVALUATORS
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    scores = {}
    for row in rows:
        evaluator = evaluators[row]
        if evaluator.from_scores:
            if logits is None:
                raise ValueError(f"{evaluator.label} is a metric of the scores: evaluate() needs logits=")
            scores[row] = float(evaluator.function(y_true, logits))
        else:
            scores[row] = float(evaluator.function(y_true, y_pred))
    return scores


@dataclasses.dataclass(frozen=True)
class TunedThreshold:
    """The cut on the logit that optimises a metric on the data it was tuned on.

    Attributes:
        cut: predict positive where logit > cut.
        value: the metric there, on the tuning data.
        threshold: σ(cut), the same cut as a probability (for tables; it may round to 0 or 1).
    """

    cut: float
    value: float

    @property
    def threshold(self) -> float:
        return float(1.0 / (1.0 + math.exp(-self.cut))) if self.cut > -700 else 0.0


def tune_threshold(logits: np.ndarray, y_true: np.ndarray, evaluator: Evaluator) -> TunedThreshold:
    """The cut on the logits that maximises (or minimises) ``evaluator``'s metric on (logits, y_true).

    Every distinct decision is tried: predict nothing, predict everything, and each cut
    halfway between two neighbouring distinct logits (so a cut never sits on a training
    score). Counts come from one sort and cumulative sums, O(n log n). Among equally good
    cuts the highest (fewest predicted positives) wins. NaN logits count as −∞.
    The plug-in rule (Koyejo et al. 2014; Lipton et al. 2014): for linear-fractional
    metrics such as F1, thresholding a calibrated score optimally is Bayes-optimal.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(y_true).ravel() == 1
    if z.shape != y.shape or z.size == 0:
        raise ValueError("logits and labels must be non-empty and of one length")
    z = np.where(np.isnan(z), -np.inf, z)
    order = np.argsort(-z, kind="stable")
    z_sorted, y_sorted = z[order], y[order]
    # The last index of each run of equal logits: cutting below it predicts the whole run positive.
    ends = np.flatnonzero(np.append(z_sorted[1:] != z_sorted[:-1], True))
    tp = np.concatenate([[0], np.cumsum(y_sorted)[ends]])
    fp = np.concatenate([[0], np.cumsum(~y_sorted)[ends]])
    positives, negatives = int(y.sum()), int((~y).sum())
    values = evaluator.from_counts(tp, positives - tp, fp, negatives - fp)
    best = int(np.argmax(values) if evaluator.higher_is_better else np.argmin(values))
    distinct = z_sorted[ends]
    if best == 0:
        cut = _above(distinct[0])
    elif best == len(distinct):
        cut = _below(distinct[-1])
    else:
        upper, lower = distinct[best - 1], distinct[best]
        cut = _between(lower, upper)
    return TunedThreshold(float(cut), float(values[best]))


def _above(value: float) -> float:
    """A cut well above ``value`` (+∞ past the float range: predict nothing)."""
    return math.inf if not math.isfinite(value) or abs(value) > 1e307 else value + max(1.0, abs(value))


def _below(value: float) -> float:
    """A cut well below ``value`` (−∞ past the float range: predict every finite logit positive)."""
    return -math.inf if not math.isfinite(value) or abs(value) > 1e307 else value - max(1.0, abs(value))


def _between(lower: float, upper: float) -> float:
    """A cut with lower <= cut < upper: the midpoint, or the lower value where the gap does not resolve one."""
    if not np.isfinite(lower):
        return _below(upper) if np.isfinite(upper) else -math.inf
    if not np.isfinite(upper):
        return _above(lower)
    middle = lower / 2 + upper / 2
    return middle if lower <= middle < upper else lower
