"""Independent reference implementations the tests compare generated code against.

Nothing here uses metricc's emitter, derivation or generated code: relaxations are
written from the papers' formulas, confusion entries are plain sums, the metric is
sympy's own ``lambdify`` of the parsed expression, and autograd differentiates it.
"""

import math

import sympy
import torch

from metricc.metric import CONFUSION_SYMBOLS
from metricc.relax import Identity, Linear, ScoreOriented, Sigmoid


def soft_prediction(relaxation, p: torch.Tensor, threshold: float) -> torch.Tensor:
    """ŷ(p) straight from the papers' definitions."""
    if isinstance(relaxation, Sigmoid):
        return 1 / (1 + torch.exp(-relaxation.L * (p - threshold)))
    if isinstance(relaxation, Linear):
        t, d = threshold, relaxation.delta
        tm = min(t, 1 - t)
        m1, m2, m3 = d / (t - tm / 2), (1 - 2 * d) / tm, d / (1 - t - tm / 2)
        return torch.where(p < t - tm / 2, p * m1,
                           torch.where(p > t + tm / 2, p * m3 + (1 - d - m3 * (t + tm / 2)), p * m2 + (0.5 - m2 * t)))
    if isinstance(relaxation, Identity):
        return p
    if isinstance(relaxation, ScoreOriented):
        mu, d = threshold, relaxation.delta
        u = ((p - mu) / d).clamp(-1, 1)
        if relaxation.distribution == "uniform":
            return (u + 1) / 2
        return (1 + u + torch.sin(math.pi * u) / math.pi) / 2
    raise TypeError(relaxation)


def metric_function(metric):
    """The metric as a torch function of (TP, FN, FP, TN), via sympy.lambdify."""
    return sympy.lambdify(CONFUSION_SYMBOLS, metric.bound_expr(), modules="torch")


def plain_loss(metric, relaxation, direction, logits, target, weight=None, thresholds=None, from_logits=True):
    """The loss written the obvious way; autograd gives its gradient."""
    f = metric_function(metric)
    p = torch.sigmoid(logits) if from_logits else logits
    target = target.to(logits.dtype)
    w = torch.ones_like(logits) if weight is None else weight.to(logits.dtype)
    thresholds = thresholds or [relaxation.threshold if relaxation.threshold is not None else 0.5]
    losses = []
    for t in thresholds:
        yhat = soft_prediction(relaxation, p, t)
        tp = (w * target * yhat).sum()
        fn = (w * target * (1 - yhat)).sum()
        fp = (w * (1 - target) * yhat).sum()
        tn = (w * (1 - target) * (1 - yhat)).sum()
        value = f(tp, fn, fp, tn)
        value = value if torch.is_tensor(value) else torch.as_tensor(value, dtype=logits.dtype)
        losses.append(1 - value if direction == "maximize" else value)
    return torch.stack(losses).mean()


def hard_confusion(predicted: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float, float]:
    predicted, target = predicted.bool(), target.bool()
    return (float((predicted & target).sum()), float((~predicted & target).sum()),
            float((predicted & ~target).sum()), float((~predicted & ~target).sum()))
