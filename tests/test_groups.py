"""Group entries and reductions: values and gradients against independent references.

* the Lagrangian and its gradient against autograd through the written text (tests/group_oracle.py) on random
  batches, with weights, several relaxations, float32, a group absent from the batch, free-g constraints;
* the hard limit: with a steep amplifier, the per-group table equals scikit-learn's per-group confusion matrices
  and the constraint values equal the metrics computed from them;
* bad input: group indices outside [0, G), groups missing or unexpected, a wrong shape or dtype.
"""

import warnings

import pytest
import torch

import metricc

from .group_oracle import lagrangian_value_and_grad
from .oracle import Relaxation

sklearn_metrics = pytest.importorskip("sklearn.metrics")

TPR = "TP[g]/(TP[g] + FN[g])"
PROBLEMS = {
    "recall_at_precision": dict(objective="recall", direction="maximize", groups=None,
                                constraints=[("precision", ">=", 0.9)]),
    "accuracy_tpr_gap": dict(objective="accuracy", direction="maximize", groups=3,
                             constraints=[(f"max_g({TPR}) - min_g({TPR})", "<=", 0.05)]),
    "accuracy_tpr_per_group": dict(objective="accuracy", direction="maximize", groups=3,
                                   constraints=[(f"{TPR} - TP/P", "<=", 0.1), ("FP/N", "<=", 0.2)]),
    "worst_group_fpr": dict(objective="max_g(FP[g]/(FP[g] + TN[g]))", direction="minimize", groups=4,
                            constraints=[]),
    "f1_demographic_parity": dict(objective="f1", direction="maximize", groups=2,
                                  constraints=[("max_g(abs(PP[g]/n[g] - PP/n))", "<=", 0.02)]),
    "mean_recall_with_rate": dict(objective="mean_g(recall[g])", direction="maximize", groups=3,
                                  constraints=[("sum_g(FP[g])/n", "<=", 0.1), ("min_g(precision[g])", ">=", 0.5)]),
}
RELAXATIONS = {"anyloss": Relaxation("sigmoid", L=73.0), "identity": Relaxation("identity", threshold=None),
               "linear": Relaxation("linear", threshold=0.5, delta=0.2)}


def _compile(case, relaxation="anyloss", **options):
    texts = [f"{text} {sense} {level}" for text, sense, level in case["constraints"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        return metricc.compile_metric(case["objective"], constraints=texts or None, groups=case["groups"],
                                      direction=case["direction"], relaxation=relaxation,
                                      multiplier_update="manual", **options)


def _batch(n, groups, seed, dtype=torch.float64, absent=None):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, generator=generator, dtype=torch.float64) * 0.08).to(dtype)  # near the threshold
    target = (torch.rand(n, generator=generator) < 0.4).to(dtype)
    ids = torch.randint(0, groups or 1, (n,), generator=generator)
    if absent is not None:
        ids[ids == absent] = (absent + 1) % groups
    weight = torch.rand(n, generator=generator, dtype=torch.float64).to(dtype) + 0.5
    return logits, target, ids, weight


def _rows(loss_fn):
    return loss_fn.multipliers.numel()


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("relaxation", sorted(RELAXATIONS))
def test_the_lagrangian_and_its_gradient_equal_autograd_through_the_written_formula(name, relaxation):
    case = PROBLEMS[name]
    loss_fn = _compile(case, relaxation)
    count = case["groups"] or 1
    logits, target, ids, weight = _batch(60, count, seed=len(name))
    lambdas = torch.linspace(0.4, 1.7, _rows(loss_fn), dtype=torch.float64)
    loss_fn.multipliers.copy_(lambdas)
    for w in (None, weight):
        z = logits.clone().requires_grad_(True)
        value = loss_fn(z, target, w, groups=ids if case["groups"] else None)
        value.backward()
        expected, grad = lagrangian_value_and_grad(case["objective"], case["direction"], case["constraints"], lambdas,
                                                   RELAXATIONS[relaxation], logits, target, ids, count, w)
        torch.testing.assert_close(value.detach(), expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(z.grad, grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name", ["accuracy_tpr_gap", "accuracy_tpr_per_group", "mean_recall_with_rate"])
def test_a_group_absent_from_the_batch_is_left_out_of_reductions_and_its_rows_contribute_nothing(name):
    case = PROBLEMS[name]
    loss_fn = _compile(case)
    logits, target, ids, _ = _batch(50, case["groups"], seed=3, absent=1)
    lambdas = torch.full((_rows(loss_fn),), 0.9, dtype=torch.float64)
    loss_fn.multipliers.copy_(lambdas)
    z = logits.clone().requires_grad_(True)
    value = loss_fn(z, target, groups=ids)
    value.backward()
    expected, grad = lagrangian_value_and_grad(case["objective"], case["direction"], case["constraints"], lambdas,
                                               RELAXATIONS["anyloss"], logits, target, ids, case["groups"])
    torch.testing.assert_close(value.detach(), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(z.grad, grad, rtol=1e-7, atol=1e-12)
    if PROBLEMS[name]["constraints"][0][0].startswith("TP[g]"):  # the absent group's row is NaN, not a violation
        assert torch.isnan(loss_fn.constraint_values[1]) and torch.isfinite(loss_fn.constraint_values[0])


def test_float32_input_gives_the_float64_reference_within_float32_rounding():
    case = PROBLEMS["accuracy_tpr_gap"]
    loss_fn = _compile(case)
    logits, target, ids, weight = _batch(200, 3, seed=11, dtype=torch.float32)
    loss_fn.multipliers.fill_(1.1)
    z = logits.clone().requires_grad_(True)
    value = loss_fn(z, target, weight, groups=ids)
    value.backward()
    assert value.dtype == torch.float32 and z.grad.dtype == torch.float32
    expected, grad = lagrangian_value_and_grad(case["objective"], case["direction"], case["constraints"],
                                               loss_fn.multipliers.clone(), RELAXATIONS["anyloss"], logits.double(),
                                               target.double(), ids, 3, weight.double())
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad.double(), grad, rtol=1e-3, atol=1e-6 * grad.abs().max().item())


def test_dense_input_with_one_group_per_image_is_the_loss_of_its_pixels_each_in_its_image_group():
    """The tables come from the runtime's path on its segment axis: (N, H, W) logits with a group per image give
    the loss, the gradient and the multipliers' step of the N·H·W pixels, each carrying its image's group."""
    case = PROBLEMS["accuracy_tpr_gap"]
    dense, flat = _compile(case), _compile(case)
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 5, 4, generator=generator, dtype=torch.float64)
    target = (torch.rand(6, 5, 4, generator=generator) < 0.4).double()
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    dense.multipliers.fill_(0.7)
    flat.multipliers.fill_(0.7)
    z = logits.clone().requires_grad_(True)
    value = dense(z, target, groups=ids)
    value.backward()
    z_flat = logits.reshape(-1).clone().requires_grad_(True)
    expected = flat(z_flat, target.reshape(-1), groups=ids.repeat_interleave(20))
    expected.backward()
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z.grad.reshape(-1), z_flat.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(dense.multipliers, flat.multipliers, rtol=1e-12, atol=1e-12)


def _hard_rates(matrix):
    (tn, fp), (fn, tp) = matrix
    return dict(tpr=tp / (tp + fn), precision=tp / (tp + fp), fpr=fp / (fp + tn), rate=(tp + fp) / matrix.sum())


def test_in_the_hard_limit_the_group_table_is_scikit_learns_per_group_confusion_matrix():
    loss_fn = _compile(dict(objective="accuracy", direction="maximize", groups=3,
                            constraints=[(f"max_g({TPR}) - min_g({TPR})", "<=", 0.05),
                                         ("min_g(precision[g])", ">=", 0.5),
                                         ("PP[g]/n[g] - PP/n", "<=", 0.1)]),
                       relaxation=metricc.Sigmoid(L=2000.0))
    generator = torch.Generator().manual_seed(5)
    p = torch.rand(300, generator=generator, dtype=torch.float64) * 0.9 + 0.05
    p = torch.where((p - 0.5).abs() < 0.05, p + 0.1, p)  # no probability within 0.05 of the threshold
    logits = torch.logit(p)
    target = (torch.rand(300, generator=generator) < 0.4).double()
    ids = torch.randint(0, 3, (300,), generator=generator)
    with pytest.warns(metricc.SaturationWarning):  # L = 2000 on purpose: soft entries equal hard ones
        loss_fn(logits, target, groups=ids)
    predicted = (p > 0.5).long().numpy()
    matrices = [sklearn_metrics.confusion_matrix(target.long().numpy()[ids.numpy() == g], predicted[ids.numpy() == g],
                                                 labels=[0, 1]) for g in range(3)]
    table = loss_fn.last_table[:, :, 0]
    for g, matrix in enumerate(matrices):
        (tn, fp), (fn, tp) = matrix
        torch.testing.assert_close(table[:, g], torch.tensor([tp, fn, fp, tn], dtype=torch.float64), atol=1e-12,
                                   rtol=0)
    rates = [_hard_rates(m) for m in matrices]
    overall = sum(m.sum() for m in matrices)
    positive_rate = sum(m[0, 1] + m[1, 1] for m in matrices) / overall
    expected = [max(r["tpr"] for r in rates) - min(r["tpr"] for r in rates), min(r["precision"] for r in rates),
                *[r["rate"] - positive_rate for r in rates]]
    torch.testing.assert_close(loss_fn.constraint_values, torch.tensor(expected, dtype=torch.float64), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(loss_fn.relaxed_constraint_values, loss_fn.constraint_values, rtol=0, atol=1e-12)
    accuracy = sklearn_metrics.accuracy_score(target.long().numpy(), predicted)
    assert abs(loss_fn.objective_value.item() - accuracy) < 1e-12


def test_the_gap_example_of_the_issue_compiles_and_trains():
    gap = metricc.compile_metric("accuracy", groups=2,
                                 constraints=["max_g(TP[g]/(TP[g]+FN[g])) - min_g(TP[g]/(TP[g]+FN[g])) <= 0.05"])
    logits, target, sex, _ = _batch(40, 2, seed=1)
    z = logits.clone().requires_grad_(True)
    loss = gap(z, target, groups=sex)
    loss.backward()
    assert torch.isfinite(z.grad).all() and gap.constraint_values.shape == (1,)
    objective = metricc.compile_metric("max_g(FP[g]/(FP[g]+TN[g]))", groups=4, direction="minimize")
    logits, target, ids, _ = _batch(40, 4, seed=2)
    assert torch.isfinite(objective(logits, target, groups=ids))


@pytest.mark.parametrize("groups, message", [
    (torch.tensor([0, 1, 2, 1]), r"indices in \[0, 2\) \(compiled with groups=2\), but groups\[2\] = 2"),
    (torch.tensor([0, -1, 1, 1]), r"groups\[1\] = -1"),
    (torch.tensor([0.0, 1.0, 1.0, 0.0]), "integer group indices"),
    (torch.tensor([0, 1, 1]), r"groups must have shape \(4,\)"),
    (None, "pass groups=, an \\(N,\\) tensor"),
    ([0, 1, 1, 0], "must be a torch.Tensor"),
])
def test_bad_group_indices_are_refused_with_the_fix(groups, message):
    gap = _compile(PROBLEMS["f1_demographic_parity"])
    with pytest.raises((ValueError, TypeError), match=message):
        gap(torch.zeros(4), torch.tensor([0.0, 1.0, 1.0, 0.0]), groups=groups)


def test_groups_given_to_a_loss_without_group_terms_are_refused():
    loss_fn = _compile(PROBLEMS["recall_at_precision"])
    with pytest.raises(ValueError, match="reads no group entries"):
        loss_fn(torch.zeros(4), torch.tensor([0.0, 1.0, 1.0, 0.0]), groups=torch.tensor([0, 1, 0, 1]))
