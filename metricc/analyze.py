"""Whether a metric can serve as a loss (placeholder: direction only; see issue 3)."""

from __future__ import annotations

import numpy as np
import sympy

from .errors import MetricCheckError
from .metric import FN, FP, TN, TP, Metric


def infer_direction(metric: Metric, samples: int = 512, seed: int = 0) -> str:
    """"maximize" when f grows along a batch as TP rises and FP falls; "minimize" when the reverse."""
    f = metric.bound_expr()
    up = sympy.lambdify((TP, FN, FP, TN), sympy.diff(f, TP) - sympy.diff(f, FN), "numpy")
    down = sympy.lambdify((TP, FN, FP, TN), sympy.diff(f, FP) - sympy.diff(f, TN), "numpy")
    rng = np.random.default_rng(seed)
    cm = rng.dirichlet(np.ones(4), size=samples).T * 100
    with np.errstate(all="ignore"):
        a = np.broadcast_to(np.asarray(up(*cm), dtype=float), (samples,))
        b = np.broadcast_to(np.asarray(down(*cm), dtype=float), (samples,))
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size and np.all(a >= 0) and np.all(b <= 0) and (np.any(a > 0) or np.any(b < 0)):
        return "maximize"
    if a.size and np.all(a <= 0) and np.all(b >= 0) and (np.any(a < 0) or np.any(b > 0)):
        return "minimize"
    raise MetricCheckError(
        f"cannot tell whether {metric.name!r} should be maximized or minimized: it is not monotone "
        "in TP and FP along a batch; pass direction='maximize' or 'minimize'")


import dataclasses


@dataclasses.dataclass
class Report:
    direction: str
    ok: bool = True

    def problem(self):
        return ""

    def warn(self, stacklevel=2):
        pass


def analyze_metric(metric, min_prevalence=0.01):
    try:
        return Report(infer_direction(metric) if metric.direction is None else metric.direction)
    except MetricCheckError:
        return Report("neither", ok=False)
