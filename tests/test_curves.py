"""Metrics of the curve over the thresholds (AUROC, average precision): scikit-learn as the grid refines and
the relaxation sharpens, gradients against autograd through a plain trapezoid written here, gradcheck,
single-class batches, weights, multi-label macro AUROC, torch.compile."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import metricc

AUROC, AVERAGE_PRECISION = "auroc", "average_precision"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def scores_and_labels(n=2000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=generator) < 0.3).long()
    scores = torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float64) + 1.2 * labels)
    return scores, labels


def curve_value(name, scores, labels, scale, inner):
    loss_fn = metricc.compile_metric(name, relaxation=metricc.Sigmoid(L=float(scale)),
                                     thresholds=np.linspace(0, 1, inner + 2).tolist(), from_logits=False)
    return 1 - loss_fn(scores, labels).item()


def test_auroc_converges_to_scikit_learn_as_the_grid_refines_and_the_relaxation_sharpens():
    """Trapezoids between thresholds count pairs inside one cell as ties (1/2), right on average for smooth
    score densities, and the sigmoid's smoothing is symmetric: the error falls about as h² + 1/L² (measured
    in docs/curves.md), to below 1e-4 at 39 inner thresholds and L = 800."""
    scores, labels = scores_and_labels()
    exact = roc_auc_score(labels, scores)
    coarse = abs(curve_value(AUROC, scores, labels, 50, 9) - exact)
    finer = abs(curve_value(AUROC, scores, labels, 200, 19) - exact)
    fine = abs(curve_value(AUROC, scores, labels, 800, 39) - exact)
    assert coarse > finer > fine
    assert fine < 1e-4


def test_average_precision_converges_to_scikit_learn_at_the_rate_of_its_step_rule():
    """The step sum takes each recall step's precision at its lower threshold: an O(h) bias that halves
    with the grid spacing (docs/curves.md)."""
    scores, labels = scores_and_labels()
    exact = average_precision_score(labels, scores)
    errors = [abs(curve_value(AVERAGE_PRECISION, scores, labels, 800, inner) - exact) for inner in (19, 39, 79)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] / errors[2] > 1.5 and errors[2] < 1e-2


def plain_auroc_loss(logits, labels, thresholds, scale, weight=None):
    """1 − trapezoid area of (FPR, TPR) over the thresholds between (1, 1) and (0, 0), the obvious way."""
    p = torch.sigmoid(logits)
    y = labels.to(logits.dtype)
    w = torch.ones_like(p) if weight is None else weight
    tpr, fpr = [torch.ones((), dtype=p.dtype)], [torch.ones((), dtype=p.dtype)]
    for t in sorted(thresholds):
        yhat = torch.sigmoid(scale * (p - t))
        tpr.append((w * y * yhat).sum() / (w * y).sum())
        fpr.append((w * (1 - y) * yhat).sum() / (w * (1 - y)).sum())
    tpr.append(torch.zeros((), dtype=p.dtype))
    fpr.append(torch.zeros((), dtype=p.dtype))
    area = sum((fpr[k] - fpr[k + 1]) * (tpr[k] + tpr[k + 1]) / 2 for k in range(len(tpr) - 1))
    return 1 - area


@pytest.mark.parametrize("weighted", [False, True])
def test_auroc_gradient_equals_autograd_of_the_plain_trapezoid(weighted):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(80, generator=generator, dtype=torch.float64)
    labels = (torch.rand(80, generator=generator) < 0.3).long()
    weight = torch.rand(80, generator=generator, dtype=torch.float64) + 0.5 if weighted else None
    thresholds = [0.7, 0.2, 0.5, 0.35]  # any order: the curve runs along ascending thresholds
    loss_fn = metricc.compile_metric(AUROC, relaxation=metricc.Sigmoid(L=12.0), thresholds=thresholds)
    z, z_plain = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    loss = loss_fn(z, labels, weight)
    loss.backward()
    expected = plain_auroc_loss(z_plain, labels, thresholds, 12.0, weight)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(z.grad, z_plain.grad, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("name", [AUROC, AVERAGE_PRECISION])
@pytest.mark.parametrize("relaxation", ["sigmoid:L=10", "linear"])
def test_curve_gradcheck(name, relaxation):
    generator = torch.Generator().manual_seed(4)
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0, 1, 0])
    logits = (torch.randn(10, generator=generator, dtype=torch.float64) / 2).requires_grad_(True)
    loss_fn = metricc.compile_metric(name, relaxation=relaxation, thresholds=[0.2, 0.4, 0.6, 0.8])
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, labels), (logits,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_a_batch_with_one_class_has_no_roc_and_gets_zero_division_without_gradient():
    loss_fn = metricc.compile_metric(AUROC, zero_division=0.5)
    logits = torch.randn(12, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(logits, torch.zeros(12))
    loss.backward()
    assert loss.item() == 0.5 and (logits.grad == 0).all()


def test_multilabel_macro_auroc_approaches_scikit_learn():
    generator = torch.Generator().manual_seed(5)
    labels = (torch.rand(1500, 4, generator=generator) < 0.3).long()
    scores = torch.sigmoid(torch.randn(1500, 4, generator=generator, dtype=torch.float64) + labels * 1.5)
    loss_fn = metricc.compile_metric(AUROC, task="multilabel", num_classes=4, average="macro", from_logits=False,
                                     relaxation=metricc.Sigmoid(L=800.0), thresholds=np.linspace(0, 1, 161).tolist())
    value = 1 - loss_fn(scores, labels).item()
    assert value == pytest.approx(roc_auc_score(labels, scores, average="macro"), abs=2e-4)
    per_label = [roc_auc_score(labels[:, k], scores[:, k]) for k in range(4)]
    torch.testing.assert_close(loss_fn.per_class, torch.tensor(per_label, dtype=torch.float64), atol=5e-4, rtol=0)


def test_compiled_curve_loss_equals_eager():
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(64, generator=generator, dtype=torch.float64)
    labels = (torch.rand(64, generator=generator) < 0.4).long()
    compiled = metricc.compile_metric(AVERAGE_PRECISION, compile=True)
    eager = metricc.compile_metric(AVERAGE_PRECISION)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    la, lb = compiled(a, labels), eager(b, labels)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-15)


def test_curve_thresholds_keep_the_inner_ones_and_need_a_threshold():
    loss_fn = metricc.compile_metric(AUROC, thresholds=torch.linspace(0, 1, 33).tolist(), relaxation="linear")
    assert len(loss_fn.derivation.thresholds) == 31 and loss_fn.derivation.thresholds[0] == pytest.approx(1 / 32)
    with pytest.raises(ValueError, match="has none"):
        metricc.compile_metric(AUROC, relaxation="identity")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        metricc.compile_metric(AUROC, thresholds=[0.5, 1.5])


def test_curve_grid_is_sorted_unique_and_a_single_number_is_one_threshold():
    assert metricc.compile_metric(AUROC).derivation.thresholds == tuple(round(0.05 * k, 2) for k in range(1, 20))
    assert metricc.compile_metric(AUROC, thresholds=[0.7, 0.2, 0.7, 0.0, 1.0]).derivation.thresholds == (0.2, 0.7)
    assert metricc.compile_metric(AUROC, thresholds=0.4).derivation.thresholds == (0.4,)
    for bad in ([0.0, 1.0], [True], ["0.5"]):
        with pytest.raises(ValueError, match=r"strictly between 0 and 1|in \[0, 1\]"):
            metricc.compile_metric(AUROC, thresholds=bad)


def test_the_derivation_of_a_curve_prints_both_coordinates_and_their_factors():
    """metricc derive auroc: the grid, Y = TPR and X = FPR at each threshold with their partials and the
    per-label factors Y+, Y-, X+, X-, which the runtime applies per threshold column."""
    derivation = metricc.compile_metric(AUROC, thresholds=[0.25, 0.5, 0.75]).derivation
    assert derivation.curve == "area" and metricc.compile_metric("average_precision").derivation.curve == "sum"
    assert [quantity.name for quantity in derivation.quantities] == ["Y", "X"]
    text = derivation.text()
    assert "curve over the thresholds t_1 < … < t_T = 0.25, 0.5, 0.75," in text
    assert "Y at each threshold  Y = TP/(FN + TP)" in text and "X at each threshold  X = FP/(FP + TN)" in text
    assert "Y+ = ∂Y/∂TP - ∂Y/∂FN = 1/(FN + TP)" in text and "Y- = ∂Y/∂FP - ∂Y/∂TN = 0" in text
    assert "X+ = ∂X/∂TP - ∂X/∂FN = 0" in text and "X- = ∂X/∂FP - ∂X/∂TN = 1/(FP + TN)" in text
    assert "∂loss/∂ŷ_ik = -w_i·(∂f/∂Y_k·Y+ + ∂f/∂X_k·X+)" in text
    latex = derivation.latex()
    assert r"Y &= \frac{TP}{FN + TP} \\" in latex and r"X &= \frac{FP}{FP + TN} \\" in latex


@pytest.mark.parametrize("name", ["auroc", "average_precision"])
@pytest.mark.parametrize("relaxation", ["anyloss", "linear", "sol"])
def test_the_cpu_path_on_python_floats_equals_the_tensor_path(name, relaxation):
    """One binary curve on the CPU is evaluated on Python floats (runtime._evaluate_curve_floats), the
    tensor path's formulas; where a point is undefined it returns None and the tensor path applies
    zero_division."""
    from metricc import runtime

    loss_fn = metricc.compile_metric(name, relaxation=relaxation)
    plan = loss_fn.plan
    for seed, dtype in ((0, torch.float64), (1, torch.float64), (2, torch.float32)):
        generator = torch.Generator().manual_seed(seed)
        logits = torch.randn(150, generator=generator, dtype=dtype) * 2
        labels = (torch.rand(150, generator=generator) < 0.2).to(dtype)
        weight = torch.rand(150, generator=generator, dtype=dtype) if seed == 1 else None
        loss_fn(logits, labels, weight)
        table = loss_fn.segment_table  # (4, 1, 1, T)
        loss, factors = runtime._evaluate_curve_floats(plan, table)
        expected_loss, expected_factors = runtime.evaluate(plan, table, allow_floats=False)
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        assert loss.dtype == dtype and factors.shape == expected_factors.shape == (2, 1, 1, table.shape[-1])
        torch.testing.assert_close(loss, expected_loss, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(factors, expected_factors, rtol=tolerance, atol=tolerance * factors.abs().max())
    loss_fn(logits, torch.zeros_like(labels))
    assert runtime._evaluate_curve_floats(plan, loss_fn.segment_table) is None


@pytest.mark.parametrize("name", ["auroc", "average_precision"])
@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_a_curve_does_not_depend_on_the_scale_of_the_weights(name, task):
    """TPR, FPR and precision are ratios: the curve is evaluated at the rates (scale_invariant), so weights
    of 1e-160 or 1e200 give the loss and gradient of unit weights; on the raw sums average precision's
    factors underflowed (loss 1, no gradient) or lost precision."""
    loss_fn = metricc.compile_metric(name, task=task, num_classes=None if task == "binary" else 2)
    assert "scale_invariant=True" in loss_fn.source
    generator = torch.Generator().manual_seed(8)
    shape = (50,) if task == "binary" else (50, 2)
    logits = torch.randn(*shape, generator=generator, dtype=torch.float64)
    labels = (torch.rand(*shape, generator=generator) < 0.3).double()
    results = []
    for scale in (1.0, 1e-160, 1e200):
        z = logits.clone().requires_grad_(True)
        loss = loss_fn(z, labels, torch.full((50,), scale, dtype=torch.float64))
        loss.backward()
        results.append((loss.detach(), z.grad))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-10, atol=0)
