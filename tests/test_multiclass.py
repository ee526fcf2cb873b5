"""Multi-class and multi-label losses: scikit-learn in the hard limit for every average, gradients against
autograd through the plain formula (softmax amplifier written here from its definition), gradcheck,
the two-class case against the binary loss, and the options' errors."""

import warnings

import pytest
import torch
from sklearn.metrics import f1_score, fbeta_score, jaccard_score, precision_score, recall_score

import metricc

AVERAGES = ("macro", "micro", "weighted")
SKLEARN = {"f1": f1_score, "precision": precision_score, "recall": recall_score, "jaccard": jaccard_score}
# The plain formulas, written here from the usual definitions (no metricc parsing involved).
FORMULAS = {
    "f1": lambda tp, fn, fp, tn: 2 * tp / (2 * tp + fp + fn),
    "precision": lambda tp, fn, fp, tn: tp / (tp + fp),
    "recall": lambda tp, fn, fp, tn: tp / (tp + fn),
    "jaccard": lambda tp, fn, fp, tn: tp / (tp + fn + fp),
    "mcc": lambda tp, fn, fp, tn: (tp * tn - fp * fn) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)),
    "balanced_accuracy": lambda tp, fn, fp, tn: (tp / (tp + fn) + tn / (tn + fp)) / 2,
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def labels_and_predictions(n, classes, seed, absent=()):
    """Class indices and argmax predictions that are right 60 % of the time; ``absent`` classes never occur."""
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([c for c in range(classes) if c not in absent])
    labels = allowed[torch.randint(0, len(allowed), (n,), generator=generator)]
    guesses = torch.randint(0, classes, (n,), generator=generator)
    predictions = torch.where(torch.rand(n, generator=generator) < 0.6, labels, guesses)
    return labels, predictions


@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("name", list(SKLEARN) + ["fbeta"])
@pytest.mark.parametrize("absent", [(), (3,)], ids=["all_classes", "class_3_absent"])
def test_multiclass_hard_limit_is_scikit_learn(name, average, absent):
    """One-hot probabilities under the identity relaxation are the hard predictions: the loss is 1 − the
    score scikit-learn computes with labels=range(C) (every class counts, absent ones by zero_division)."""
    classes = 5
    labels, predictions = labels_and_predictions(300, classes, seed=len(name) + 7 * len(absent), absent=absent)
    params = {"beta": 2.0} if name == "fbeta" else None
    loss_fn = metricc.compile_metric(name, params=params, task="multiclass", num_classes=classes, average=average,
                                     relaxation="identity", from_logits=False, zero_division=0.0)
    value = 1 - loss_fn(torch.nn.functional.one_hot(predictions, classes).double(), labels).item()
    options = dict(average=average, labels=list(range(classes)), zero_division=0.0)
    if name == "fbeta":
        expected = fbeta_score(labels.numpy(), predictions.numpy(), beta=2.0, **options)
    else:
        expected = SKLEARN[name](labels.numpy(), predictions.numpy(), **options)
    assert value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("name", list(SKLEARN))
def test_multilabel_hard_limit_is_scikit_learn(name, average):
    generator = torch.Generator().manual_seed(len(name))
    target = (torch.rand(200, 6, generator=generator) < 0.3).long()
    predicted = torch.where(torch.rand(200, 6, generator=generator) < 0.7, target, 1 - target)
    predicted[:, 5] = 0  # a label never predicted: precision 0/0 there
    loss_fn = metricc.compile_metric(name, task="multilabel", num_classes=6, average=average, relaxation="identity",
                                     from_logits=False, zero_division=0.0)
    value = 1 - loss_fn(predicted.double(), target).item()
    expected = SKLEARN[name](target.numpy(), predicted.numpy(), average=average, zero_division=0.0)
    assert value == pytest.approx(expected, abs=1e-12)


def plain_multiclass_loss(name, logits, labels, average, scale=73.0, from_logits=True, class_weights=None):
    """The loss the obvious way: p = softmax(z), ŷ = softmax(L/2·p), one-vs-rest direct sums, autograd."""
    classes = logits.shape[1]
    p = torch.softmax(logits, 1) if from_logits else logits
    yhat = torch.softmax(scale / 2 * p, 1) if scale else p
    y = torch.nn.functional.one_hot(labels, classes).to(logits.dtype) if labels.dim() == 1 else labels.to(logits.dtype)
    tp, fn = (y * yhat).sum(0), (y * (1 - yhat)).sum(0)
    fp, tn = ((1 - y) * yhat).sum(0), ((1 - y) * (1 - yhat)).sum(0)
    if average == "micro":
        return 1 - FORMULAS[name](tp.sum(), fn.sum(), fp.sum(), tn.sum())
    values = FORMULAS[name](tp, fn, fp, tn)
    if class_weights is not None:
        shares = class_weights / class_weights.sum()
    elif average == "weighted":
        shares = y.sum(0) / y.sum()
    else:
        shares = torch.full((classes,), 1 / classes, dtype=logits.dtype)
    return (shares * (1 - values)).sum()


@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("name", ["f1", "mcc", "balanced_accuracy", "precision"])
def test_multiclass_gradient_equals_autograd_of_the_plain_formula(name, average):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(60, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (60,), generator=generator)
    loss_fn = metricc.compile_metric(name, task="multiclass", num_classes=4, average=average, relaxation="anyloss")
    z, z_plain = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    loss = loss_fn(z, labels)
    loss.backward()
    expected = plain_multiclass_loss(name, z_plain, labels, average)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(z.grad, z_plain.grad, rtol=1e-9, atol=1e-13)


def test_multiclass_one_hot_and_probability_targets_and_class_weights():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    soft_targets = torch.softmax(torch.randn(40, 3, generator=generator, dtype=torch.float64) * 3, 1)
    class_weights = torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)
    loss_fn = metricc.compile_metric("f1", task="multiclass", num_classes=3, class_weights=class_weights,
                                     relaxation="identity")
    z, z_plain = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    loss_fn(z, soft_targets).backward()
    plain_multiclass_loss("f1", z_plain, soft_targets, "macro", scale=None, class_weights=class_weights).backward()
    torch.testing.assert_close(z.grad, z_plain.grad, rtol=1e-9, atol=1e-13)
    labels = soft_targets.argmax(1)
    one_hot = torch.nn.functional.one_hot(labels, 3)
    assert torch.equal(loss_fn(logits, labels), loss_fn(logits, one_hot))


@pytest.mark.parametrize("relaxation, from_logits", [("anyloss", True), ("identity", True), ("anyloss", False)])
def test_multiclass_gradcheck(relaxation, from_logits):
    generator = torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    logits = torch.randn(7, 3, generator=generator, dtype=torch.float64) / 3
    inputs = logits if from_logits else torch.softmax(logits, 1)
    loss_fn = metricc.compile_metric("mcc", task="multiclass", num_classes=3, relaxation=relaxation,
                                     from_logits=from_logits, average="macro")
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, labels), (inputs.requires_grad_(True),), eps=1e-6,
                                    atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("average", AVERAGES)
def test_multilabel_gradcheck_with_weights_and_thresholds(average):
    generator = torch.Generator().manual_seed(6)
    target = (torch.rand(9, 3, generator=generator) < 0.4).long()
    target[0] = 1  # every label present: weighted averaging divides by the supports
    weight = torch.rand(9, generator=generator, dtype=torch.float64) + 0.5
    loss_fn = metricc.compile_metric("f1", task="multilabel", num_classes=3, average=average,
                                     relaxation=metricc.Sigmoid(L=10.0), thresholds=[0.3, 0.5, 0.7])
    logits = (torch.randn(9, 3, generator=generator, dtype=torch.float64) / 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, target, weight), (logits,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_two_classes_are_the_binary_loss_of_the_logit_difference():
    """softmax(L/2·p)₁ = σ(L·(p₁ − 1/2)) with p₁ = σ(z₁ − z₀): class 1's column is the binary loss's table."""
    generator = torch.Generator().manual_seed(8)
    logits = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    labels = (torch.rand(50, generator=generator) < 0.3).long()
    multiclass = metricc.compile_metric("f1", task="multiclass", num_classes=2, class_weights=[0.0, 1.0],
                                        relaxation="anyloss")
    binary = metricc.compile_metric("f1")
    z = logits.clone().requires_grad_(True)
    d = (logits[:, 1] - logits[:, 0]).requires_grad_(True)
    loss, expected = multiclass(z, labels), binary(d, labels)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(z.grad[:, 1], d.grad, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(z.grad[:, 0], -d.grad, rtol=1e-9, atol=1e-14)


def test_softmax_amplifier_complement_keeps_its_precision():
    """1 − ŷ for a confident class is the other classes' share, not a difference that rounds to 0."""
    loss_fn = metricc.compile_metric("recall", task="multiclass", num_classes=3, average="micro")
    logits = torch.tensor([[40.0, 0.0, 0.0]] * 4, dtype=torch.float32)
    labels = torch.tensor([0, 0, 0, 0])
    loss_fn(logits, labels)
    _, fn, _, _ = loss_fn.last_table.sum(1)[:, 0]
    assert 0 < fn.item() < 1e-6  # FN = Σ (1 − ŷ) over the positives: tiny, yet not 0


def test_per_class_values_are_the_metric_of_each_class():
    classes = 4
    labels, predictions = labels_and_predictions(100, classes, seed=9)
    loss_fn = metricc.compile_metric("f1", task="multiclass", num_classes=classes, relaxation="identity",
                                     from_logits=False)
    assert loss_fn.per_class is None
    loss_fn(torch.nn.functional.one_hot(predictions, classes).double(), labels)
    expected = f1_score(labels.numpy(), predictions.numpy(), average=None, labels=list(range(classes)))
    torch.testing.assert_close(loss_fn.per_class, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


def test_a_class_absent_from_the_batch_follows_zero_division_and_gets_no_gradient_from_its_recall():
    loss_fn = metricc.compile_metric("recall", task="multiclass", num_classes=3, average="macro", zero_division=1.0)
    logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])  # class 2 absent: its recall is 0/0
    loss_fn(logits, labels).backward()
    assert loss_fn.per_class[2].item() == 1.0
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("call, message", [
    (lambda: metricc.compile_metric("f1", task="multiclass"), "needs num_classes"),
    (lambda: metricc.compile_metric("f1", task="multiclass", num_classes=3, average="samples"), "average must be"),
    (lambda: metricc.compile_metric("f1", task="multiclass", num_classes=3, relaxation="linear"),
     "no multi-class form"),
    (lambda: metricc.compile_metric("f1", task="multiclass", num_classes=3, thresholds=[0.3, 0.5]),
     "has none"),
    (lambda: metricc.compile_metric("f1", task="multiclass", num_classes=3, average="micro", class_weights=[1, 2, 3]),
     "summed entries"),
    (lambda: metricc.compile_metric("f1", task="multiclass", num_classes=3, class_weights=[1, 2]), "3 finite"),
    (lambda: metricc.compile_metric("f1", num_classes=3), "apply to task='multiclass'"),
    (lambda: metricc.compile_metric("f1", task="ordinal"), "task must be one of"),
    (lambda: metricc.compile_metric("auroc", task="multiclass", num_classes=3), "needs binary scores"),
    (lambda: metricc.compile_metric("f1", relaxation="sol").module.F1Loss(task="multiclass", num_classes=3),
     "has no multi-class form"),
])
def test_option_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("task, input, target, message", [
    ("multiclass", torch.zeros(4, 2), torch.tensor([0, 1, 2, 0]), r"shape \(N, 3\)"),
    ("multiclass", torch.zeros(4, 3), torch.tensor([0, 1, 3, 0]), r"class indices in \[0, 2\]"),
    ("multiclass", torch.zeros(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), "integer dtype"),
    ("multiclass", torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), "4 samples but target holds 3"),
    ("multilabel", torch.zeros(4, 3), torch.zeros(4), r"target must have shape \(N, 3\)"),
    ("multilabel", torch.zeros(4, 3), torch.full((4, 3), 2.0), r"labels in \[0, 1\].*target\[0, 0\] = 2"),
])
def test_bad_batches_get_clear_errors(task, input, target, message):
    loss_fn = metricc.compile_metric("f1", task=task, num_classes=3)
    with pytest.raises(ValueError, match=message):
        loss_fn(input, target)


def test_the_generated_module_bakes_the_task_and_documents_the_average():
    loss_fn = metricc.compile_metric("f1", task="multilabel", num_classes=14, average="micro")
    assert "task='multilabel'" in loss_fn.source and "num_classes=14" in loss_fn.source
    assert "micro       loss = 1 - f(Σ_c TP_c, Σ_c FN_c, Σ_c FP_c, Σ_c TN_c)" in loss_fn.source
    module_loss = loss_fn.module.F1Loss()
    assert module_loss.task == "multilabel" and module_loss.num_classes == 14 and module_loss.average == "micro"


def test_the_default_relaxation_is_the_identity_for_multiclass_and_the_amplifier_elsewhere():
    """docs/multiclass.md measured the softmax amplifier saturating classes that fall behind; the identity
    (ŷ = softmax(z)) trained better on every table, so it is the multi-class default."""
    generator = torch.Generator().manual_seed(9)
    logits, labels = torch.randn(30, 3, generator=generator, dtype=torch.float64), torch.arange(30) % 3
    default = metricc.compile_metric("f1", task="multiclass", num_classes=3)
    identity = metricc.compile_metric("f1", task="multiclass", num_classes=3, relaxation="identity")
    amplifier = metricc.compile_metric("f1", task="multiclass", num_classes=3, relaxation="anyloss")
    assert torch.equal(default(logits, labels), identity(logits, labels))
    assert not torch.equal(default(logits, labels), amplifier(logits, labels))
    assert metricc.compile_metric("f1", task="multilabel", num_classes=3).relaxation == metricc.Sigmoid()
    assert metricc.compile_metric("f1").relaxation == metricc.Sigmoid()
