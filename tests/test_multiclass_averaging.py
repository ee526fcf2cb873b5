"""What averaging over classes keeps of a binary metric's analysis, and what it does not (docs/multiclass.md).

Kept, for macro, weighted and class_weights (a convex combination of per-class metrics) and for micro (the
metric of the summed one-vs-rest table, itself a confusion matrix):

* range: the averaged value lies in the metric's proved range [lo, hi];
* direction: moving a sample's predicted mass from a wrong class to its own class never lowers a metric
  that is proved to increase along a batch (TP up with FN down, FP down with TN up);
* Lipschitz bound: with K the metric's bound for prevalence in [π, 1 − π], every entry of ∂loss/∂ŷ
  (identity relaxation on probabilities, so ŷ is the input) is at most share_c·K/n (macro; share_c the
  class's weight in the mean, K at the smallest class prevalence), or K/(C·n) (micro, K at the summed
  table's prevalence), and a sample's entries sum to at most K/n in either case.

Not kept: the range's ends need not be reached (macro MCC cannot reach −1 for three or more classes); micro
F1 of a multi-class task is accuracy; and scikit-learn's multi-class MCC is Gorodkin's R_K, which is neither
average of one-vs-rest MCCs (equal only for two classes).
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import pytest
import torch

import metricc

METRICS = ("f1", "balanced_accuracy", "jaccard", "cohen_kappa")
RANGED = METRICS + ("mcc", "precision", "gmean", "accuracy")
AVERAGES = ("macro", "micro", "weighted")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def soft_batch(task, n, classes, seed):
    """Probabilities (multi-class rows summing to 1, or multi-label entries in (0, 1)) and labels in which every
    class has positives and negatives."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator, dtype=torch.float64) * 2
    if task == "multiclass":
        labels = torch.arange(n) % classes
        return torch.softmax(logits, 1), labels[torch.randperm(n, generator=generator)]
    target = (torch.rand(n, classes, generator=generator) < 0.35).double()
    target[0], target[1] = 1.0, 0.0
    return torch.sigmoid(logits), target


@functools.cache
def _cached_table_loss(metric, task, classes, average, class_weights):
    weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float64)
    return metricc.compile_metric(metric, task=task, num_classes=classes, average=average, relaxation="identity",
                                  from_logits=False, class_weights=weights, check=False)


def table_loss(metric, task, classes, average, class_weights=None):
    """The loss on probabilities under the identity relaxation: ŷ is the input (compiled once per configuration)."""
    weights = None if class_weights is None else tuple(float(w) for w in class_weights)
    return _cached_table_loss(metric, task, classes, average, weights)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("metric", RANGED)
def test_averaged_value_stays_in_the_metrics_range(task, metric):
    lo, hi = metricc.analyze(metric).range
    weights = torch.tensor([3.0, 0.0, 1.0, 0.5, 2.0], dtype=torch.float64)
    for seed, classes in itertools.product(range(3), (2, 3, 5)):
        p, y = soft_batch(task, 40, classes, seed)
        for average in AVERAGES + ("class_weights",):
            if average == "class_weights":
                loss_fn = table_loss(metric, task, classes, "macro", weights[:classes])
            else:
                loss_fn = table_loss(metric, task, classes, average)
            value = 1 - loss_fn(p, y).item()
            assert lo - 1e-12 <= value <= hi + 1e-12, (average, classes, seed, value)


@pytest.mark.parametrize("metric", RANGED)
@pytest.mark.parametrize("average", AVERAGES)
def test_mass_moved_to_the_true_class_never_lowers_the_metric(metric, average):
    assert metricc.analyze(metric).direction == "maximize"
    classes = 4
    for seed in range(3):
        p, y = soft_batch("multiclass", 24, classes, seed)
        loss_fn = table_loss(metric, "multiclass", classes, average)
        before = loss_fn(p, y).item()
        for sample in range(0, 24, 5):
            moved = p.clone()
            wrong = [c for c in range(classes) if c != y[sample]]
            source = max(wrong, key=lambda c: moved[sample, c].item())
            share = moved[sample, source] / 2
            moved[sample, source] -= share
            moved[sample, y[sample]] += share
            assert loss_fn(moved, y).item() <= before + 1e-12, (sample, seed)


def lipschitz(metric, prevalence):
    """K for prevalence in [π, 1 − π], π the given prevalence rounded down to a multiple of 0.05 (K only grows as π
    shrinks, so the bound stays sound, and few distinct analyses run)."""
    report = metricc.analyze(metric, min_prevalence=max(0.05, math.floor(prevalence * 20) / 20))
    assert isinstance(report.lipschitz, float), report.lipschitz
    return report.lipschitz


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("metric", ("f1", "balanced_accuracy", "jaccard"))
def test_gradient_within_the_averaged_lipschitz_bound(task, metric):
    classes, n = 4, 60
    for seed in range(3):
        p, y = soft_batch(task, n, classes, seed)
        onehot = torch.nn.functional.one_hot(y, classes).double() if task == "multiclass" else y
        prevalence = onehot.mean(0)
        for average in AVERAGES:
            loss_fn = table_loss(metric, task, classes, average)
            x = p.clone().requires_grad_(True)
            loss_fn(x, y).backward()
            grad = x.grad.abs()
            if average == "micro":
                # the summed table has n·C entries, of which Σ_c P_c positives
                bound = lipschitz(metric, min(prevalence.mean().item(), 1 - prevalence.mean().item()))
                per_entry = torch.full((classes,), bound / (classes * n), dtype=torch.float64)
            else:
                smallest = min(prevalence.min().item(), 1 - prevalence.max().item())
                bound = lipschitz(metric, smallest)
                shares = prevalence / prevalence.sum() if average == "weighted" else torch.full((classes,), 1 / classes)
                per_entry = shares.double() * bound / n
            assert bool((grad <= per_entry * (1 + 1e-9)).all()), (average, seed, (grad / per_entry).max().item())
            assert grad.sum(1).max().item() <= bound / n * (1 + 1e-9)


# --- what averaging does not keep --------------------------------------------------------------------------------

def lowest_macro_mcc(labels, classes):
    """The smallest macro MCC over every hard prediction of the batch (brute force)."""
    loss_fn, target = table_loss("mcc", "multiclass", classes, "macro"), torch.tensor(labels)
    guesses = torch.tensor(list(itertools.product(range(classes), repeat=len(labels))))
    rows = torch.nn.functional.one_hot(guesses, classes).double()
    return min(1 - loss_fn(row, target).item() for row in rows)


def test_macro_mcc_cannot_reach_minus_one_with_three_classes():
    """Every one-vs-rest MCC is −1 only if each class's samples are all predicted elsewhere and every other sample
    is predicted as it: impossible for two classes c ≠ k at once when a third exists. Brute force over every hard
    prediction of a balanced batch of six samples."""
    lowest = lowest_macro_mcc([0, 0, 1, 1, 2, 2], 3)
    assert lowest == pytest.approx(-0.5441518440112252, abs=1e-12)
    assert lowest_macro_mcc([0, 0, 1, 1], 2) == pytest.approx(-1.0)  # with two classes the end is reached


def test_micro_f1_of_a_multiclass_task_is_accuracy_and_rk_is_not_macro_mcc():
    pytest.importorskip("sklearn")
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    generator = torch.Generator().manual_seed(11)
    labels = torch.randint(0, 4, (50,), generator=generator)
    guesses = torch.where(torch.rand(50, generator=generator) < 0.6, labels, torch.randint(0, 4, (50,),
                                                                                           generator=generator))
    hard = torch.nn.functional.one_hot(guesses, 4).double()
    micro = 1 - table_loss("f1", "multiclass", 4, "micro")(hard, labels).item()
    assert micro == pytest.approx(accuracy_score(labels, guesses), abs=1e-12)
    macro_mcc = 1 - table_loss("mcc", "multiclass", 4, "macro")(hard, labels).item()
    micro_mcc = 1 - table_loss("mcc", "multiclass", 4, "micro")(hard, labels).item()
    rk = matthews_corrcoef(labels, guesses)
    assert abs(macro_mcc - rk) > 1e-3 and abs(micro_mcc - rk) > 1e-3
    binary_labels, binary_guesses = labels % 2, guesses % 2
    two = torch.nn.functional.one_hot(binary_guesses, 2).double()
    for average in ("macro", "micro"):  # two classes: the one-vs-rest MCCs of both classes equal R_K
        value = 1 - table_loss("mcc", "multiclass", 2, "macro")(two, binary_labels).item()
        assert value == pytest.approx(matthews_corrcoef(binary_labels, binary_guesses), abs=1e-12), average


def test_balanced_accuracy_one_vs_rest_is_not_scikit_learns_and_macro_recall_is():
    pytest.importorskip("sklearn")
    from sklearn.metrics import balanced_accuracy_score

    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    guesses = torch.tensor([0, 1, 0, 1, 2, 2, 2, 0, 2, 1])
    hard = torch.nn.functional.one_hot(guesses, 3).double()
    recall = 1 - table_loss("recall", "multiclass", 3, "macro")(hard, labels).item()
    balanced = 1 - table_loss("balanced_accuracy", "multiclass", 3, "macro")(hard, labels).item()
    assert recall == pytest.approx(balanced_accuracy_score(labels, guesses), abs=1e-12)
    assert balanced > recall + 0.05  # (TPR + TNR)/2 per class also counts the easy one-vs-rest negatives


def test_every_micro_metric_of_a_multiclass_task_is_a_function_of_accuracy():
    """With one class per sample the summed one-vs-rest table is (a·n, (1 − a)·n, (1 − a)·n, (C − 2 + a)·n), a the
    accuracy: micro MCC = (C·a − 1)/(C − 1), and the macro mean of one-vs-rest accuracies is 1 − 2(1 − a)/C."""
    generator = torch.Generator().manual_seed(12)
    labels = torch.randint(0, 5, (40,), generator=generator)
    guesses = torch.where(torch.rand(40, generator=generator) < 0.5, labels, torch.randint(0, 5, (40,),
                                                                                           generator=generator))
    hard = torch.nn.functional.one_hot(guesses, 5).double()
    accuracy = (labels == guesses).double().mean().item()
    micro_mcc = 1 - table_loss("mcc", "multiclass", 5, "micro")(hard, labels).item()
    assert micro_mcc == pytest.approx((5 * accuracy - 1) / 4, abs=1e-12)
    macro_accuracy = 1 - table_loss("accuracy", "multiclass", 5, "macro")(hard, labels).item()
    assert macro_accuracy == pytest.approx(1 - 2 * (1 - accuracy) / 5, abs=1e-12)
