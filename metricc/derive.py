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
from collections.abc import Sequence

import sympy

from . import curves
from .limits import call_budget
from .metric import CONFUSION_SYMBOLS, FN, FP, TN, TP, Metric, check_direction, differentiate, scale_degree, to_text
from .relax import Relaxation, resolve_relaxation
from .simplify import tidy


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A function of the confusion entries that the loss differentiates: the metric f, or a curve's Y or X.

    Attributes:
        name: ``"f"``, ``"Y"`` or ``"X"``.
        expr: the expression over TP, FN, FP, TN.
        partials: ``(symbol name, ∂expr/∂symbol)`` for TP, FN, FP, TN, simplified.
        positive: the derivative along one positive sample's soft prediction, ∂/∂TP − ∂/∂FN.
        negative: the derivative along one negative sample's, ∂/∂FP − ∂/∂TN.
    """

    name: str
    expr: sympy.Expr
    partials: tuple[tuple[str, sympy.Expr], ...]
    positive: sympy.Expr
    negative: sympy.Expr


@dataclasses.dataclass(frozen=True)
class Derivation:
    """Everything the code generator and the ``derive`` command print.

    Attributes:
        metric: the metric derived.
        relaxation: how probabilities become soft predictions.
        thresholds: the relaxation's threshold, several to average the metric over, or a curve's grid.
        direction: ``"maximize"`` (loss = 1 − f) or ``"minimize"`` (loss = f).
        quantities: the metric f, or a curve's coordinates Y and X, each with its derivatives.
        common_subexpressions: ``(temporary, expression)`` pairs from ``sympy.cse``.
        outputs: every quantity's value, positive and negative derivative, written with the temporaries.
        curve: None, or ``"area"``/``"sum"`` for a metric of the curve over the thresholds.
    """

    metric: Metric
    relaxation: Relaxation
    thresholds: tuple[float, ...]
    direction: str
    quantities: tuple[Quantity, ...]
    common_subexpressions: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    outputs: tuple[sympy.Expr, ...]
    curve: str | None = None

    @property
    def scale_invariant(self) -> bool:
        """Whether f(λ·CM) = f(CM) (for a curve: its coordinates Y and X), read off the expressions'
        structure (ratio metrics such as F1 or MCC, TPR and precision): the runtime may then evaluate them
        at the entries divided by their total, which keeps products and powers of entries in range
        whatever the scale of the weights."""
        return all(scale_degree(quantity.expr) == 0 for quantity in self.quantities)

    @property
    def partials(self) -> tuple[tuple[str, sympy.Expr], ...]:
        """∂f/∂TP, ... of the metric (of Y for a curve)."""
        return self.quantities[0].partials

    @property
    def positive_coefficient(self) -> sympy.Expr:
        """∂f/∂ŷ_i for a positive sample of unit weight, f_TP − f_FN."""
        return self.quantities[0].positive

    @property
    def negative_coefficient(self) -> sympy.Expr:
        """∂f/∂ŷ_i for a negative sample of unit weight, f_FP − f_TN."""
        return self.quantities[0].negative

    @property
    def loss_sign(self) -> float:
        """−1 when the loss is 1 − f (f maximized), +1 when it is f itself."""
        return -1.0 if self.direction == "maximize" else 1.0

    def loss_text(self, f: str = "f") -> str:
        """The loss in terms of the metric, e.g. ``"1 - f"``."""
        return f"1 - {f}" if self.direction == "maximize" else f

    def threshold_name(self, latex: bool = False) -> str | None:
        """How the relaxation's threshold is named in text: None (its value) for one threshold; ``t_k``, each
        threshold of the curve's grid or of the mean, where there are several."""
        if len(self.thresholds) <= 1:
            return None
        return r"t_k\ \text{(each threshold)}" if latex else "t_k (each threshold)"

    def text(self, task: str = "binary", average: str | None = None, num_classes: int | None = None) -> str:
        """A plain-text derivation, like the appendix of the AnyLoss paper; for multi-class and multi-label
        tasks followed by the averaged loss and its chain rule."""
        m = self.metric
        sign = "-" if self.direction == "maximize" else ""
        lines = [f"metric      f = {to_text(m.expr)}"]
        if m.params:
            lines.append("parameters  " + ", ".join(f"{k} = {v:g}" for k, v in m.params))
        lines += [
            f"loss        {self.loss_text()}   (f is {self.direction}d)",
            "",
            "soft confusion entries (w: sample weight, y: label, ŷ: soft prediction)",
            "            TP = Σ w·y·ŷ    FN = Σ w·y·(1-ŷ)    FP = Σ w·(1-y)·ŷ    TN = Σ w·(1-y)·(1-ŷ)",
            "",
        ]
        if self.curve is not None:
            lines += [f"curve over the thresholds t_1 < … < t_T = {', '.join(f'{t:g}' for t in self.thresholds)},",
                      "            from threshold 0 (all predicted positive) to 1 (all predicted negative):"]
            lines += ["            " + line for line in curves.formula(self.curve)]
            lines.append("")
        for quantity in self.quantities:
            name = quantity.name
            if self.curve is not None:
                lines.append(f"{name} at each threshold  {name} = {to_text(quantity.expr)}")
            lines.append(f"partial derivatives of {name}")
            for symbol, partial in quantity.partials:
                lines.append(f"            ∂{name}/∂{symbol} = {to_text(partial)}")
            if self.curve is not None:
                lines += [f"            {name}+ = ∂{name}/∂TP - ∂{name}/∂FN = {to_text(quantity.positive)}",
                          f"            {name}- = ∂{name}/∂FP - ∂{name}/∂TN = {to_text(quantity.negative)}", ""]
        if self.curve is None:
            lines += [
                "",
                "per-sample gradient of the loss",
                f"  y_i = 1:  ∂loss/∂ŷ_i = {sign}w_i·(∂f/∂TP - ∂f/∂FN) = {sign}w_i·g+,"
                f"  g+ = {to_text(self.positive_coefficient)}",
                f"  y_i = 0:  ∂loss/∂ŷ_i = {sign}w_i·(∂f/∂FP - ∂f/∂TN) = {sign}w_i·g-,"
                f"  g- = {to_text(self.negative_coefficient)}",
            ]
        else:
            lines += [
                "per-sample gradient of the loss at threshold t_k (ŷ_ik: sample i's soft prediction there)",
                f"  y_i = 1:  ∂loss/∂ŷ_ik = {sign}w_i·(∂f/∂Y_k·Y+ + ∂f/∂X_k·X+), Y+ and X+ at t_k",
                f"  y_i = 0:  ∂loss/∂ŷ_ik = {sign}w_i·(∂f/∂Y_k·Y- + ∂f/∂X_k·X-)",
            ]
        lines += [
            "",
            "chain rule to the logit z_i (p_i = σ(z_i))",
            "            ∂loss/∂z_i = Σ_t ∂loss/∂ŷ_it · dŷ/dp at t · σ(z_i)·σ(-z_i)" if len(self.thresholds) > 1 else
            "            ∂loss/∂z_i = ∂loss/∂ŷ_i · dŷ/dp · σ(z_i)·σ(-z_i)",
            f"relaxation  {self.relaxation.formula(at=self.threshold_name())}",
            f"            {self.relaxation.derivative_formula()}",
        ]
        if len(self.thresholds) > 1 and self.curve is None:
            lines.append("thresholds  loss = mean over t in (" + ", ".join(f"{t:g}" for t in self.thresholds)
                         + ") of the loss at t; gradients average likewise")
        if task != "binary":
            lines += [""] + averaging_text(self, task, average or "macro", num_classes)
        return "\n".join(lines)

    def latex(self) -> str:
        """The same derivation as LaTeX (an ``align*`` environment)."""
        f = sympy.Symbol("f")
        rows = [rf"f &= {sympy.latex(self.metric.expr)}"]
        sign = "-" if self.direction == "maximize" else ""
        for quantity in self.quantities:
            name = sympy.latex(sympy.Symbol(quantity.name))
            if self.curve is not None:
                rows.append(rf"{name} &= {sympy.latex(quantity.expr)}")
            for symbol, partial in quantity.partials:
                rows.append(rf"\frac{{\partial {name}}}{{\partial {sympy.latex(sympy.Symbol(symbol))}}} &= "
                            rf"{sympy.latex(partial)}")
        if self.curve is None:
            rows.append(rf"\frac{{\partial \mathcal{{L}}}}{{\partial \hat y_i}}\Big|_{{y_i=1}} &= {sign}w_i\left("
                        rf"{sympy.latex(self.positive_coefficient)}\right)")
            rows.append(rf"\frac{{\partial \mathcal{{L}}}}{{\partial \hat y_i}}\Big|_{{y_i=0}} &= {sign}w_i\left("
                        rf"{sympy.latex(self.negative_coefficient)}\right)")
        rows.append(rf"& {self.relaxation.latex_formula(at=self.threshold_name(latex=True))}")
        rows.append(rf"\mathcal{{L}} &= {'1 - ' if self.direction == 'maximize' else ''}{sympy.latex(f)}")
        return "\\begin{align*}\n" + " \\\\\n".join(rows) + "\n\\end{align*}"


def averaging_text(derivation: Derivation, task: str, average: str, num_classes: int | None) -> list[str]:
    """How a multi-class or multi-label loss averages the per-class metric, and its chain rule."""
    classes = f"C = {num_classes}" if num_classes else "C"
    loss = derivation.loss_text("f_c")
    sign = "-" if derivation.direction == "maximize" else ""
    lines = [f"{task}, {classes} classes: one-vs-rest entries per class c (y_ic: sample i has class c)",
             "            TP_c = Σ w·y_c·ŷ_c    FN_c = Σ w·y_c·(1-ŷ_c)    FP_c = Σ w·(1-y_c)·ŷ_c    "
             "TN_c = Σ w·(1-y_c)·(1-ŷ_c)"]
    if average == "micro":
        lines += ["micro       loss = " + derivation.loss_text("f(Σ_c TP_c, Σ_c FN_c, Σ_c FP_c, Σ_c TN_c)"),
                  f"            ∂loss/∂ŷ_ic = {sign}w_i·(y_ic·g+ + (1-y_ic)·g-), g± at the summed entries"]
    else:
        share = "1/C" if average == "macro" else "s_c/Σ s, s_c = Σ w·y_c (support)"
        lines += [f"{average:<11} loss = Σ_c a_c·({loss}), a_c = {share}, f_c = f(TP_c, FN_c, FP_c, TN_c)",
                  f"            ∂loss/∂ŷ_ic = {sign}a_c·w_i·(y_ic·g+_c + (1-y_ic)·g-_c), g±_c at class c's entries"]
    if task == "multiclass":
        lines += ["chain rule  ŷ = softmax(L/2·p), p = softmax(z) (the amplifier; identity: ŷ = softmax(z)),",
                  "            through each softmax as ∂/∂a = s ⊙ (g − ⟨s, g⟩): O(N·C), never N·C·C"]
    else:
        lines.append("chain rule  each label as a binary output: ∂loss/∂z_ic = ∂loss/∂ŷ_ic · dŷ/dp · σ(z_ic)·σ(-z_ic)")
    return lines


@call_budget("derive")
def derive(metric: Metric, relaxation: str | Relaxation = "anyloss", *, direction: str | None = None,
           thresholds: float | Sequence[float] | None = None) -> Derivation:
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
    direction = check_direction(direction)
    parts = curves.curve_parts(metric.expr)
    if parts is None:
        thresholds = normalize_thresholds(relaxation, thresholds)
        quantities: tuple[Quantity, ...] = (_quantity("f", metric.expr),)
    else:
        thresholds = normalize_curve_thresholds(relaxation, thresholds)
        quantities = (_quantity("Y", parts[1]), _quantity("X", parts[2]))
    expressions = [e for q in quantities for e in (q.expr, q.positive, q.negative)]
    replacements, outputs = sympy.cse(expressions, symbols=sympy.numbered_symbols("_c", real=True), order="none")
    return Derivation(
        metric=metric,
        relaxation=relaxation,
        thresholds=thresholds,
        direction=direction,
        quantities=quantities,
        common_subexpressions=tuple(replacements),
        outputs=tuple(outputs),
        curve=None if parts is None else parts[0],
    )


def _quantity(name: str, expr: sympy.Expr) -> Quantity:
    """``expr`` with its partial derivatives and the two per-sample derivatives, simplified."""
    raw = {s: differentiate(expr, s) for s in CONFUSION_SYMBOLS}
    partials = tuple((s.name, tidy(raw[s])) for s in CONFUSION_SYMBOLS)
    return Quantity(name=name, expr=expr, partials=partials, positive=tidy(raw[TP] - raw[FN]),
                    negative=tidy(raw[FP] - raw[TN]))


def normalize_curve_thresholds(relaxation: Relaxation, thresholds) -> tuple[float, ...]:
    """The grid of a curve metric, ascending: by default 0.05, 0.10, …, 0.95. Thresholds 0 and 1 are the
    curve's fixed ends, so ``torch.linspace(0, 1, 33)`` gives its 31 inner thresholds."""
    if relaxation.threshold is None:
        raise ValueError(f"a metric of the curve over the thresholds needs a relaxation with a threshold; "
                         f"{relaxation.spec()!r} has none: use 'anyloss', 'linear' or 'sol'")
    if thresholds is None:
        return curves.DEFAULT_CURVE_THRESHOLDS
    if isinstance(thresholds, (int, float)):
        thresholds = [thresholds]
    inner = []
    for value in thresholds:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= 1:
            raise ValueError(f"thresholds of a curve must be numbers in [0, 1], got {value!r}")
        if 0 < float(value) < 1:
            inner.append(float(value))
    if not inner:
        raise ValueError("thresholds= holds no threshold strictly between 0 and 1; a curve needs at least one")
    return tuple(sorted(set(inner)))


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
