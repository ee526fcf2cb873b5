"""Metrics of the curve over the thresholds: ``curve_area(Y, X)`` and ``curve_sum(Y, X)``.

A confusion-matrix metric looks at one threshold; ROC AUC and average precision look at all of them.
With the soft confusion entries at thresholds t_1 < … < t_T (the soft-set paper's AUROC, section 3),
Y and X are two ordinary metrics evaluated at every threshold, and the curve runs through the points
(X_k, Y_k) between two fixed ends: threshold 0, where every sample is predicted positive (TP = P,
FP = N), and threshold 1, where every sample is predicted negative. Then

    curve_area(Y, X) = Σ_k (X_k − X_{k+1})·(Y_k + Y_{k+1})/2     trapezoids: ROC AUC = curve_area(TPR, FPR)
    curve_sum(Y, X)  = Σ_k (X_k − X_{k+1})·Y_k                   steps: average precision = curve_sum(precision, recall)

as scikit-learn's ``roc_auc_score`` and ``average_precision_score`` sum over their thresholds. Partial AUC
and similar ranking metrics are the same forms of other coordinates, e.g. ``curve_area(TP/P, min(10*FP/N, 1))``.
"""

from __future__ import annotations

import sympy


class CurveArea(sympy.Function):
    """curve_area(Y, X): the trapezoid area under the points (X_k, Y_k) over the thresholds."""

    nargs = 2
    kind = "area"
    text = "curve_area"


class CurveSum(sympy.Function):
    """curve_sum(Y, X): the step sum Σ (X_k − X_{k+1})·Y_k over the thresholds (average precision's form)."""

    nargs = 2
    kind = "sum"
    text = "curve_sum"


CURVE_FUNCTIONS: dict[str, type[sympy.Function]] = {"curve_area": CurveArea, "curve_sum": CurveSum}
DEFAULT_CURVE_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05, 0.10, …, 0.95


def curve_parts(expr: sympy.Expr) -> tuple[str, sympy.Expr, sympy.Expr] | None:
    """("area" or "sum", Y, X) where ``expr`` is a curve metric, else None."""
    if isinstance(expr, (CurveArea, CurveSum)):
        y, x = expr.args
        return type(expr).kind, y, x
    return None


def is_curve(expr: sympy.Expr) -> bool:
    return curve_parts(expr) is not None


def formula(kind: str) -> list[str]:
    """The closed form over the grid and its derivatives, as lines for derivations and docs."""
    if kind == "area":
        return ["f = Σ_k (X_k − X_{k+1})·(Y_k + Y_{k+1})/2 over the points k = 0 … T+1",
                "∂f/∂Y_k = (X_{k−1} − X_{k+1})/2,  ∂f/∂X_k = (Y_{k+1} − Y_{k−1})/2"]
    return ["f = Σ_k (X_k − X_{k+1})·Y_k over the points k = 0 … T+1",
            "∂f/∂Y_k = X_k − X_{k+1},  ∂f/∂X_k = Y_k − Y_{k−1}"]
