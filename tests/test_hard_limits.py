"""scikit-learn in the hard limit: with a sharp relaxation and logits far from the threshold, every catalog
metric's loss is 1 − (or, minimized, exactly) scikit-learn's metric of the hard predictions.

scikit-learn shares nothing with metricc; where it has no function of that name (G-mean, Tversky, NPV,
markedness), the metric is composed from its precision/recall scores or its confusion matrix, as the
metric's definition states. On batches where a metric is undefined, scikit-learn's ``zero_division``
and metricc's agree for the metrics that take one; balanced accuracy on a single-class batch is where
the two differ by design (see ``test_balanced_accuracy_on_a_single_class_batch``).
"""

import math
import warnings

import pytest
import torch

import metricc

from .oracle import catalog_direction, catalog_entries

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def _counts(y, p):
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix(y, p, labels=[0, 1]).ravel()
    return tp, fn, fp, tn


def _score(name, y, p, zero_division=0.0):
    """The catalog metric ``name`` of hard predictions ``p``, by scikit-learn."""
    m, zd = sklearn_metrics, dict(zero_division=zero_division)
    precision = m.precision_score(y, p, **zd)
    recall = m.recall_score(y, p, **zd)
    specificity = m.recall_score(y, p, pos_label=0, **zd)
    npv = m.precision_score(y, p, pos_label=0, **zd)
    tp, fn, fp, _ = _counts(y, p)
    return {
        "accuracy": m.accuracy_score(y, p),
        "error_rate": 1 - m.accuracy_score(y, p),
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "npv": npv,
        "fpr": 1 - specificity,
        "fnr": 1 - recall,
        "f1": m.f1_score(y, p, **zd),
        "dice": m.f1_score(y, p, **zd),
        "fbeta": m.fbeta_score(y, p, beta=1.0, **zd),
        "f2": m.fbeta_score(y, p, beta=2.0, **zd),
        "f05": m.fbeta_score(y, p, beta=0.5, **zd),
        "jaccard": m.jaccard_score(y, p, **zd),
        "threat_score": m.jaccard_score(y, p, **zd),
        "tversky": tp / (tp + 0.3 * fp + 0.7 * fn),  # alpha = 0.3, beta = 0.7, the catalog's defaults
        "focal_tversky": 1 - (1 - tp / (tp + 0.3 * fp + 0.7 * fn)) ** 0.75,  # and gamma = 4/3
        "gmean": math.sqrt(recall * specificity),
        "balanced_accuracy": m.balanced_accuracy_score(y, p),
        "informedness": m.balanced_accuracy_score(y, p, adjusted=True),
        "markedness": precision + npv - 1,
        "fowlkes_mallows": math.sqrt(precision * recall),
        "mcc": m.matthews_corrcoef(y, p),
        "cohen_kappa": m.cohen_kappa_score(y, p),
    }[name]


def _metric_of_loss(name, loss):
    return loss if catalog_direction(name) == "minimize" else 1 - loss


def _sharp_logits(target, correct, generator):
    """Logits of magnitude 8 to 12: σ(73·(σ(z) − 1/2)) is within e^-36 of the step."""
    magnitude = 8 + 4 * torch.rand(target.shape, generator=generator, dtype=torch.float64)
    sign = torch.where(correct, 2.0 * target - 1, 1.0 - 2 * target)
    return sign * magnitude


@pytest.mark.parametrize("name", sorted(catalog_entries()))
def test_every_catalog_metric_is_scikit_learns_in_the_hard_limit(name):
    loss_fn = metricc.compile_metric(name)
    generator = torch.Generator().manual_seed(11)
    for trial in range(4):
        target = (torch.rand(200, generator=generator) < (0.3, 0.05, 0.6, 0.5)[trial]).to(torch.float64)
        target[:2] = torch.tensor([1.0, 0.0])  # both classes, and both predicted below
        correct = torch.rand(200, generator=generator) < (0.8, 0.95, 0.5, 0.2)[trial]
        correct[:2] = torch.tensor([True, True])
        logits = _sharp_logits(target, correct, generator)
        predicted = (logits > 0).long()
        expected = _score(name, target.long().numpy(), predicted.numpy())
        got = _metric_of_loss(name, loss_fn(logits, target).item())
        assert got == pytest.approx(expected, abs=1e-9), f"trial {trial}: metricc {got!r}, scikit-learn {expected!r}"


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
@pytest.mark.parametrize("name", ["precision", "recall", "specificity", "npv", "f1", "f2", "jaccard"])
def test_zero_division_agrees_with_scikit_learns_where_the_metric_is_undefined(name, zero_division):
    """The same zero_division, the same value: no positives for recall/F/Jaccard (and none predicted),
    none predicted for precision, no negatives for specificity, none predicted negative for NPV. The
    score-oriented relaxation with δ = 0.1 makes ŷ exactly 0 or 1 at these logits, so the soft entries
    are the hard ones (a sigmoid's ŷ is never exactly 0: its soft precision of e^-36/e^-36 is defined)."""
    loss_fn = metricc.compile_metric(name, zero_division=zero_division, relaxation="sol:delta=0.1")
    all_positive = name in ("specificity", "npv")
    target = torch.ones(5, dtype=torch.float64) if all_positive else torch.zeros(5, dtype=torch.float64)
    if name == "precision":  # positives exist, none predicted
        target[:2] = 1.0
    logits = torch.full((5,), 9.0 if all_positive else -9.0, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(logits, target)
    loss.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _score(name, target.long().numpy(), (logits > 0).long().numpy(), zero_division)
    assert _metric_of_loss(name, loss.item()) == expected == zero_division
    assert (logits.grad == 0).all()  # an undefined metric contributes no gradient


def test_balanced_accuracy_on_a_single_class_batch():
    """The convention (issue 12): on a batch of one class, metricc's balanced accuracy is undefined (the
    other class's recall is 0/0), so it takes zero_division and contributes no gradient. scikit-learn
    instead averages the recall of the classes present (and warns): here 2/3. Both are stated choices;
    metricc's keeps the loss from rewarding a model for a class the batch does not contain."""
    target = torch.ones(3, dtype=torch.float64)
    logits = torch.tensor([9.0, -9.0, 10.0], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sklearn_value = sklearn_metrics.balanced_accuracy_score([1, 1, 1], [1, 0, 1])
    assert sklearn_value == pytest.approx(2 / 3)
    for zero_division in (0.0, 0.5):
        logits.grad = None
        loss = metricc.compile_metric("balanced_accuracy", zero_division=zero_division)(logits, target)
        loss.backward()
        assert loss.item() == 1 - zero_division
        assert (logits.grad == 0).all()
    # With both classes present the two agree again.
    two_classes = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    loss = metricc.compile_metric("balanced_accuracy")(torch.tensor([9.0, -9.0, 10.0, -8.0], dtype=torch.float64),
                                                       two_classes)
    expected = sklearn_metrics.balanced_accuracy_score([1, 1, 1, 0], [1, 0, 1, 0])
    assert 1 - loss.item() == pytest.approx(expected, abs=1e-9)
