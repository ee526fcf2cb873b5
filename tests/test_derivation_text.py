"""The derivation `metricc derive` prints (and every generated module's docstring carries) is the right math.

Each printed formula is read back (sympy parses the printed text here, in the test) and evaluated at
random confusion entries against the oracle: the partial derivatives of the metric's text in 50 digits.
The loss line, the sign of the per-sample gradient and the averaging text follow the direction.
"""

import re

import mpmath
import pytest
import sympy
import torch

import metricc

from .oracle import DIGITS, Dual, ReferenceMetric, catalog_direction, catalog_entries

ENTRIES = {name: sympy.Symbol(name) for name in ("TP", "FN", "FP", "TN")}


def _printed(text, label, params=None):
    """The right-hand side printed after ``label`` (e.g. "∂f/∂TP =" or "g+ ="), parsed by sympy, with the
    parameters' values (from the catalog file) for their names."""
    match = re.search(re.escape(label) + r"\s*(.+?)\s*$", text, re.MULTILINE)
    assert match, f"no {label!r} in\n{text}"
    names = {**ENTRIES, **{k: sympy.Float(v) for k, v in (params or {}).items()}}
    return sympy.sympify(match.group(1).split(",  ")[0], locals=names)


def _oracle_partials(name, counts):
    with mpmath.workdps(DIGITS):
        value = ReferenceMetric(name)(*(Dual(c, tuple(int(i == k) for i in range(4))) for k, c in enumerate(counts)))
        return [float(g) for g in value.grad]


CASES = [(name, catalog_direction(name)) for name in sorted(catalog_entries())] + \
    [("f1", "minimize"), ("error_rate", "maximize"), ("mcc", "minimize")]


@pytest.mark.parametrize("name, direction", CASES)
def test_printed_partials_and_per_sample_factors_are_the_metrics_derivatives(name, direction):
    # The loss's own derivation is what is under test here (what `metricc derive` and the module print).
    derivation = metricc.compile_metric(name, direction=direction, check=False).derivation
    text = derivation.text()
    params = catalog_entries()[name]["params"]
    partials = {entry: _printed(text, f"∂f/∂{entry} =", params) for entry in ENTRIES}
    positive, negative = _printed(text, "g+ =", params), _printed(text, "g- =", params)
    generator = torch.Generator().manual_seed(sorted(catalog_entries()).index(name))
    points = torch.cat([torch.rand(1, 4, generator=generator, dtype=torch.float64) * 50 + 1,
                        torch.rand(2, 4, generator=generator, dtype=torch.float64) * 9 + 0.5])
    for counts in points.tolist():
        point = dict(zip(ENTRIES.values(), counts))
        expected = _oracle_partials(name, counts)
        for k, entry in enumerate(ENTRIES):
            assert float(partials[entry].subs(point)) == pytest.approx(expected[k], rel=1e-12, abs=1e-14), entry
        assert float(positive.subs(point)) == pytest.approx(expected[0] - expected[1], rel=1e-10, abs=1e-14)
        assert float(negative.subs(point)) == pytest.approx(expected[2] - expected[3], rel=1e-10, abs=1e-14)
    sign = "-" if direction == "maximize" else ""
    assert f"loss        {'1 - f' if direction == 'maximize' else 'f'}   (f is {direction}d)" in text
    assert f"∂loss/∂ŷ_i = {sign}w_i·(∂f/∂TP - ∂f/∂FN) = {sign}w_i·g+," in text
    assert f"∂loss/∂ŷ_i = {sign}w_i·(∂f/∂FP - ∂f/∂TN) = {sign}w_i·g-," in text
    assert derivation.loss_text("f1") == ("1 - f1" if direction == "maximize" else "f1")
    assert derivation.loss_sign == (-1.0 if direction == "maximize" else 1.0)
    latex = derivation.latex()
    assert latex.startswith("\\begin{align*}\n") and latex.endswith("\n\\end{align*}")
    assert latex.count(f"&= {sign}w_i\\left(") == 2
    assert latex.rstrip().endswith(("\\mathcal{L} &= 1 - f" if direction == "maximize" else "\\mathcal{L} &= f")
                                   + "\n\\end{align*}")


def test_parameters_relaxation_and_thresholds_are_stated():
    derivation = metricc.derive(metricc.parse("fbeta", {"beta": 2.0}), "linear:threshold=0.3", thresholds=[0.3, 0.6])
    text = derivation.text()
    assert "parameters  beta = 2" in text
    # several thresholds: the relaxation's t is each of them, not the first one's value
    assert "relaxation  ŷ = five-point piecewise-linear Heaviside H^l(p; t, δ) with t = t_k (each threshold), δ = 0.2" \
        in text and "t = 0.3" not in text
    one = metricc.derive(metricc.parse("f1"), "linear:threshold=0.3").text()
    assert f"relaxation  {metricc.Linear(threshold=0.3).formula()}" in one and "t = 0.3, δ = 0.2" in one
    assert "thresholds  loss = mean over t in (0.3, 0.6) of the loss at t; gradients average likewise" in text
    assert "thresholds  " not in metricc.derive(metricc.parse("f1")).text()  # one threshold: no mean


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_averaging_text_states_each_average(task, direction):
    derivation = metricc.derive(metricc.parse("f1"), direction=direction)
    sign = "-" if direction == "maximize" else ""
    loss = "1 - f_c" if direction == "maximize" else "f_c"
    texts = {average: derivation.text(task=task, average=average, num_classes=4)
             for average in ("macro", "micro", "weighted")}
    for text in texts.values():
        assert f"{task}, C = 4 classes: one-vs-rest entries per class c" in text
    assert f"macro       loss = Σ_c a_c·({loss}), a_c = 1/C," in texts["macro"]
    assert f"weighted    loss = Σ_c a_c·({loss}), a_c = s_c/Σ s, s_c = Σ w·y_c (support)," in texts["weighted"]
    micro_loss = derivation.loss_text("f(Σ_c TP_c, Σ_c FN_c, Σ_c FP_c, Σ_c TN_c)")
    assert f"micro       loss = {micro_loss}" in texts["micro"]
    assert f"∂loss/∂ŷ_ic = {sign}w_i·(y_ic·g+ + (1-y_ic)·g-), g± at the summed entries" in texts["micro"]
    assert f"∂loss/∂ŷ_ic = {sign}a_c·w_i·(y_ic·g+_c + (1-y_ic)·g-_c)" in texts["macro"]
    chain = "softmax(L/2·p)" if task == "multiclass" else "each label as a binary output"
    assert all(chain in text for text in texts.values())
    assert derivation.text(task=task).count("C classes") == 1  # no num_classes: "C"


def test_catalog_directions_are_the_derivations_default():
    for name in ("f1", "error_rate", "fpr"):
        assert metricc.derive(metricc.parse(name)).direction == catalog_direction(name)
