"""Closed-form gradients of a metric loss, derived with sympy.

With soft predictions ŷ_i, label y_i and weight w_i, the soft confusion entries are
TP = Σ w·y·ŷ, FN = Σ w·y·(1 − ŷ), FP = Σ w·(1 − y)·ŷ, TN = Σ w·(1 − y)·(1 − ŷ).
So for any metric f,

    ∂f/∂ŷ_i = w_i · (f_TP − f_FN)   if y_i = 1,
    ∂f/∂ŷ_i = w_i · (f_FP − f_TN)   if y_i = 0,

one number for all positives and one for all negatives. The backward pass is that
number times dŷ/dp (the relaxation) times dp/dz (the sigmoid), elementwise. This
module derives the two numbers, simplifies them within a time budget (``sympy.simplify``
only on expressions it finishes well within it, so that the emitted form does not hinge
on the machine's speed), and shares common subexpressions between them and the metric
with ``sympy.cse``.
"""

from __future__ import annotations

import dataclasses

import sympy

from .metric import CONFUSION_SYMBOLS, FN, FP, TN, TP, Metric, differentiate, to_text
from .relax import Relaxation, resolve_relaxation
from .simplify import tidy


@dataclasses.dataclass(frozen=True)
class Derivation:
    """Everything the code generator and the ``derive`` command print.

    Attributes:
        metric: the metric derived.
        relaxation: how probabilities become soft predictions.
        thresholds: the relaxation's threshold, or several to average the metric over.
        direction: ``"maximize"`` (loss = 1 − f) or ``"minimize"`` (loss = f).
        partials: ``(symbol name, ∂f/∂symbol)`` for TP, FN, FP, TN, simplified.
        positive_coefficient: ∂f/∂ŷ_i for a positive sample of unit weight, f_TP − f_FN.
        negative_coefficient: ∂f/∂ŷ_i for a negative sample of unit weight, f_FP − f_TN.
        common_subexpressions: ``(temporary, expression)`` pairs from ``sympy.cse``.
        outputs: f, positive and negative coefficient, written with the temporaries.
    """

    metric: Metric
    relaxation: Relaxation
    thresholds: tuple[float, ...]
    direction: str
    partials: tuple[tuple[str, sympy.Expr], ...]
    positive_coefficient: sympy.Expr
    negative_coefficient: sympy.Expr
    common_subexpressions: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    outputs: tuple[sympy.Expr, sympy.Expr, sympy.Expr]

    @property
    def loss_sign(self) -> float:
        """−1 when the loss is 1 − f (f maximized), +1 when it is f itself."""
        return -1.0 if self.direction == "maximize" else 1.0

    def loss_text(self, f: str = "f") -> str:
        """The loss in terms of the metric, e.g. ``"1 - f"``."""
        return f"1 - {f}" if self.direction == "maximize" else f

    def text(self) -> str:
        """A plain-text derivation, like the appendix of the AnyLoss paper."""
        m = self.metric
        sign = "-" if self.direction == "maximize" else ""
        lines = [
            f"metric      f = {to_text(m.expr)}",
        ]
        if m.params:
            lines.append("parameters  " + ", ".join(f"{k} = {v:g}" for k, v in m.params))
        lines += [
            f"loss        {self.loss_text()}   (f is {self.direction}d)",
            "",
            "soft confusion entries (w: sample weight, y: label, ŷ: soft prediction)",
            "            TP = Σ w·y·ŷ    FN = Σ w·y·(1-ŷ)    FP = Σ w·(1-y)·ŷ    TN = Σ w·(1-y)·(1-ŷ)",
            "",
            "partial derivatives of f",
        ]
        for name, partial in self.partials:
            lines.append(f"            ∂f/∂{name} = {to_text(partial)}")
        lines += [
            "",
            "per-sample gradient of the loss",
            f"  y_i = 1:  ∂loss/∂ŷ_i = {sign}w_i·(∂f/∂TP - ∂f/∂FN) = {sign}w_i·g+,"
            f"  g+ = {to_text(self.positive_coefficient)}",
            f"  y_i = 0:  ∂loss/∂ŷ_i = {sign}w_i·(∂f/∂FP - ∂f/∂TN) = {sign}w_i·g-,"
            f"  g- = {to_text(self.negative_coefficient)}",
            "",
            "chain rule to the logit z_i (p_i = σ(z_i))",
            "            ∂loss/∂z_i = ∂loss/∂ŷ_i · dŷ/dp · σ(z_i)·σ(-z_i)",
            f"relaxation  {self.relaxation.formula()}",
            f"            {self.relaxation.derivative_formula()}",
        ]
        if len(self.thresholds) > 1:
            lines.append("thresholds  loss = mean over t in (" + ", ".join(f"{t:g}" for t in self.thresholds)
                         + ") of the loss at t; gradients average likewise")
        return "\n".join(lines)

    def latex(self) -> str:
        """The same derivation as LaTeX (an ``align*`` environment)."""
        f = sympy.Symbol("f")
        rows = [rf"f &= {sympy.latex(self.metric.expr)}"]
        for name, partial in self.partials:
            symbol = sympy.Symbol(name)
            rows.append(rf"\frac{{\partial f}}{{\partial {sympy.latex(symbol)}}} &= {sympy.latex(partial)}")
        sign = "-" if self.direction == "maximize" else ""
        rows.append(rf"\frac{{\partial \mathcal{{L}}}}{{\partial \hat y_i}}\Big|_{{y_i=1}} &= {sign}w_i\left("
                    rf"{sympy.latex(self.positive_coefficient)}\right)")
        rows.append(rf"\frac{{\partial \mathcal{{L}}}}{{\partial \hat y_i}}\Big|_{{y_i=0}} &= {sign}w_i\left("
                    rf"{sympy.latex(self.negative_coefficient)}\right)")
        rows.append(rf"& {self.relaxation.latex_formula()}")
        rows.append(rf"\mathcal{{L}} &= {'1 - ' if self.direction == 'maximize' else ''}{sympy.latex(f)}")
        return "\\begin{align*}\n" + " \\\\\n".join(rows) + "\n\\end{align*}"


def derive(metric: Metric, relaxation="anyloss", *, direction: str | None = None,
           thresholds=None) -> Derivation:
    """Differentiate a metric and prepare its gradient for code generation.

    Args:
        metric: a parsed metric.
        relaxation: a ``Relaxation`` or its name (``"anyloss"``, ``"linear"``, ...).
        direction: ``"maximize"`` or ``"minimize"``; by default the metric's own
            (catalog) direction, else the one :func:`metricc.analyze.infer_direction` finds.
        thresholds: thresholds to average the metric over; by default the
            relaxation's own threshold.

    Returns:
        A :class:`Derivation`.
    """
    relaxation = resolve_relaxation(relaxation)
    if direction is None:
        direction = metric.direction
    if direction is None:
        from .analyze import infer_direction

        direction = infer_direction(metric)
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    thresholds = normalize_thresholds(relaxation, thresholds)

    f = metric.expr
    raw = {s: differentiate(f, s) for s in CONFUSION_SYMBOLS}
    partials = tuple((s.name, tidy(raw[s])) for s in CONFUSION_SYMBOLS)
    positive = tidy(raw[TP] - raw[FN])
    negative = tidy(raw[FP] - raw[TN])
    replacements, outputs = sympy.cse([f, positive, negative],
                                      symbols=sympy.numbered_symbols("_c", real=True), order="none")
    return Derivation(
        metric=metric,
        relaxation=relaxation,
        thresholds=thresholds,
        direction=direction,
        partials=partials,
        positive_coefficient=positive,
        negative_coefficient=negative,
        common_subexpressions=tuple(replacements),
        outputs=tuple(outputs),
    )


def normalize_thresholds(relaxation: Relaxation, thresholds) -> tuple[float, ...]:
    """Check the thresholds to average over; default: the relaxation's own threshold."""
    if thresholds is None:
        return (relaxation.threshold,) if relaxation.threshold is not None else ()
    if isinstance(thresholds, (int, float)):
        thresholds = [thresholds]
    values = []
    for value in thresholds:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < 1:
            raise ValueError(f"thresholds must be numbers in (0, 1), got {value!r}")
        values.append(float(value))
    if not values:
        raise ValueError("thresholds= is empty; give at least one threshold in (0, 1)")
    if relaxation.threshold is None:
        relaxation.with_threshold(values[0])  # raises the relaxation's own explanation
    return tuple(values)
