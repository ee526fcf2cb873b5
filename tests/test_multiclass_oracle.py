"""task="multiclass" and task="multilabel" against the independent oracle.

One-vs-rest direct sums per class, averaged as scikit-learn does.

References: tests/oracle.py's class_autograd_loss (the metric of each class's four sums from the text, the
softmax or per-column relaxation, the average, autograd), and scikit-learn's averaged scores in the hard
limit. Batches hold every class, so every per-class metric is defined.
"""

import warnings

import pytest
import torch

import metricc

from .oracle import ReferenceMetric, Relaxation, catalog_direction, class_autograd_loss

sklearn_metrics = pytest.importorskip("sklearn.metrics")
CLASSES = 3


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def _batch(task, n=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, CLASSES, generator=generator, dtype=torch.float64) * 1.5
    if task == "multiclass":
        target = torch.randint(CLASSES, (n,), generator=generator)
        target[:CLASSES] = torch.arange(CLASSES)  # every class present
    else:
        target = (torch.rand(n, CLASSES, generator=generator) < 0.35).long()
        target[0], target[1] = 1, 0  # every label has both values
    weight = torch.rand(n, generator=generator, dtype=torch.float64) + 0.2
    return logits, target, weight


def _run(loss_fn, logits, target, weight):
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, target, weight)
    loss.backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("task, relaxation", [("multiclass", "anyloss"), ("multiclass", "identity"),
                                              ("multilabel", "anyloss"), ("multilabel", "linear"),
                                              ("multilabel", "sol:distribution=cosine")])
@pytest.mark.parametrize("name", ["f1", "mcc", "balanced_accuracy", "precision"])
def test_per_class_metrics_and_their_average_against_autograd(name, task, relaxation, average):
    loss_fn = metricc.compile_metric(name, task=task, num_classes=CLASSES, average=average, relaxation=relaxation)
    for seed, weighted in ((1, False), (2, True)):
        logits, target, weight = _batch(task, seed=seed)
        weight = weight if weighted else None
        loss, grad = _run(loss_fn, logits, target, weight)
        z = logits.clone().requires_grad_(True)
        reference = class_autograd_loss(ReferenceMetric(name), Relaxation.from_spec(relaxation),
                                        catalog_direction(name), z, target, task=task, average=average,
                                        weight=weight)
        reference.backward()
        assert loss.shape == () and grad.shape == logits.shape
        torch.testing.assert_close(loss, reference.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, z.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_class_weights_weigh_the_per_class_losses(task):
    class_weights = [1.0, 2.0, 0.5]
    loss_fn = metricc.compile_metric("f1", task=task, num_classes=CLASSES, class_weights=class_weights,
                                     relaxation="anyloss")
    logits, target, weight = _batch(task, seed=3)
    loss, grad = _run(loss_fn, logits, target, weight)
    z = logits.clone().requires_grad_(True)
    reference = class_autograd_loss(ReferenceMetric("f1"), Relaxation.from_spec("anyloss"), "maximize", z, target,
                                    task=task, weight=weight, class_weights=class_weights)
    reference.backward()
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, z.grad, rtol=1e-8, atol=1e-12)


def test_multilabel_threshold_averaging_against_autograd():
    thresholds = [0.3, 0.5, 0.7]
    loss_fn = metricc.compile_metric("f1", task="multilabel", num_classes=CLASSES, relaxation="linear",
                                     thresholds=thresholds)
    logits, target, _ = _batch("multilabel", seed=4)
    loss, grad = _run(loss_fn, logits, target, None)
    z = logits.clone().requires_grad_(True)
    reference = class_autograd_loss(ReferenceMetric("f1"), Relaxation.from_spec("linear"), "maximize", z, target,
                                    task="multilabel", thresholds=thresholds)
    reference.backward()
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, z.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("name, score", [("f1", "f1_score"), ("precision", "precision_score"),
                                         ("recall", "recall_score"), ("jaccard", "jaccard_score")])
def test_multiclass_losses_are_scikit_learns_averaged_scores_in_the_hard_limit(name, score, average):
    """Confident logits (the argmax 12 above the rest): softmax(36.5 · p) is one-hot to e^-30."""
    loss_fn = metricc.compile_metric(name, task="multiclass", num_classes=CLASSES, average=average,
                                     relaxation="anyloss")
    generator = torch.Generator().manual_seed(5)
    target = torch.randint(CLASSES, (120,), generator=generator)
    target[:CLASSES] = torch.arange(CLASSES)
    predicted = torch.where(torch.rand(120, generator=generator) < 0.7, target,
                            torch.randint(CLASSES, (120,), generator=generator))
    predicted[CLASSES:2 * CLASSES] = torch.arange(CLASSES)  # every class predicted somewhere
    logits = torch.nn.functional.one_hot(predicted, CLASSES).to(torch.float64) * 12
    expected = getattr(sklearn_metrics, score)(target.numpy(), predicted.numpy(), average=average)
    assert 1 - loss_fn(logits, target).item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("task, relaxation", [("multiclass", "anyloss"), ("multiclass", "identity"),
                                              ("multilabel", "linear")])
def test_probabilities_as_input(task, relaxation):
    """from_logits=False: rows of class probabilities (multi-class) or per-label probabilities."""
    loss_fn = metricc.compile_metric("f1", task=task, num_classes=CLASSES, relaxation=relaxation, from_logits=False)
    logits, target, weight = _batch(task, seed=7)
    probabilities = torch.softmax(logits, -1) if task == "multiclass" else torch.sigmoid(logits)
    loss, grad = _run(loss_fn, probabilities, target, weight)
    p = probabilities.clone().requires_grad_(True)
    reference = class_autograd_loss(ReferenceMetric("f1"), Relaxation.from_spec(relaxation), "maximize", p, target,
                                    task=task, weight=weight, from_logits=False)
    reference.backward()
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, p.grad, rtol=1e-8, atol=1e-12)


def test_multiclass_targets_as_indices_and_as_one_hot_rows_agree():
    loss_fn = metricc.compile_metric("mcc", task="multiclass", num_classes=CLASSES)
    logits, target, weight = _batch("multiclass", seed=6)
    one_hot = torch.nn.functional.one_hot(target, CLASSES)
    by_index, by_row = _run(loss_fn, logits, target, weight), _run(loss_fn, logits, one_hot, weight)
    torch.testing.assert_close(by_index[0], by_row[0], rtol=1e-14, atol=0)
    torch.testing.assert_close(by_index[1], by_row[1], rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("options, message", [
    (dict(task="multiclass"), "needs num_classes"),
    (dict(task="multiclass", num_classes=1), "needs num_classes, a whole number of at least 2"),
    (dict(task="multiclass", num_classes=3, average="samples"), "average must be one of"),
    (dict(task="multiclass", num_classes=3, average="micro", class_weights=[1, 1, 1]), "class_weights weigh"),
    (dict(task="multiclass", num_classes=3, class_weights=[1, -1, 1]), "finite non-negative"),
    (dict(task="multiclass", num_classes=3, relaxation="linear"), "has no multi-class form"),
    (dict(task="multiclass", num_classes=3, thresholds=[0.3, 0.5]), "task='multiclass' predicts the argmax"),
    (dict(task="binary", num_classes=3), "task='binary' has one class"),
    (dict(task="ordinal"), "task must be one of"),
])
def test_bad_task_options_get_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        metricc.compile_metric("f1", **options)


@pytest.mark.parametrize("task, logits, target, message", [
    ("multiclass", torch.zeros(4, 2), torch.tensor([0, 1, 2, 0]), r"input must have shape \(N, 3\)"),
    ("multiclass", torch.zeros(4, 3), torch.tensor([0, 1, 3, 0]), r"class indices in \[0, 2\]"),
    ("multiclass", torch.zeros(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), "must hold class indices"),
    ("multilabel", torch.zeros(4, 3), torch.zeros(4, 2), r"target must have shape \(N, 3\)"),
    ("multilabel", torch.zeros(4, 3), torch.full((4, 3), 2.0), r"labels in \[0, 1\]"),
    ("multiclass", torch.zeros(4, 3), torch.tensor([0, 1, 2]), "^input holds 4 samples but target holds 3; they must "
                                                              "match$"),
    ("multilabel", torch.zeros(4, 3), torch.zeros(3, 3), "^input holds 4 samples but target holds 3"),
    ("multiclass", torch.zeros(4, 3), torch.tensor([0, 1, 2, 0], device="meta"),
     "^target is on meta but input is on cpu; move it first$"),
    ("multilabel", torch.zeros(4, 3), torch.zeros(4, 3, device="meta"), "^target is on meta but input is on cpu"),
])
def test_bad_class_batches_get_clear_errors(task, logits, target, message):
    loss_fn = metricc.compile_metric("f1", task=task, num_classes=CLASSES)
    with pytest.raises(ValueError, match=message):
        loss_fn(logits, target)
