"""torchmetrics as a second oracle beside scikit-learn: in the hard limit (a sharp relaxation, logits far from
the threshold) every catalog metric's loss is 1 − (or, minimized, exactly) torchmetrics' metric of the same
name on the hard predictions, for every task and average where torchmetrics defines that metric the same way.

Where the two libraries define a name differently, the test pins the relation instead (docs/torchmetrics.md):

* multi-class ``accuracy``, ``mcc`` and ``cohen_kappa``: metricc averages the one-vs-rest binary metric over
  classes (macro, weighted) or takes it of the summed one-vs-rest table (micro), as it does for every metric;
  torchmetrics' ``MulticlassAccuracy`` is per-class recall (its macro average is balanced accuracy, metricc's
  macro ``recall``), and its ``MulticlassMatthewsCorrCoef``/``MulticlassCohenKappa`` are the multi-class
  generalisations. The one-vs-rest values equal torchmetrics' binary metrics per column.
* ``mcc`` on a batch with one class: undefined, so metricc returns ``zero_division`` (0, as scikit-learn);
  torchmetrics substitutes its own values. Cohen's κ of a perfect one-class batch is 0/0 in hard counts:
  torchmetrics returns NaN; metricc's soft entries are never exactly 0 where a count is, and κ's value as
  the missing entry tends to 0 is 0, which metricc returns.

torchmetrics computes in float32, so agreement is to 1e-6.
"""

import math
import warnings

import pytest
import torch

import metricc
from metricc.catalog import catalog

from .oracle import catalog_direction

tmc = pytest.importorskip("torchmetrics.classification")

CLASSES = 4
TOLERANCE = 1e-6
# catalog name → (torchmetrics' name without the task prefix, its options); the binary, multi-label and
# multi-class classes are Binary<name>, Multilabel<name>, Multiclass<name>
SAME_NAME = {
    "accuracy": ("Accuracy", {}), "precision": ("Precision", {}), "recall": ("Recall", {}),
    "specificity": ("Specificity", {}), "npv": ("NegativePredictiveValue", {}), "f1": ("F1Score", {}),
    "fbeta": ("FBetaScore", {"beta": 1.0}), "f2": ("FBetaScore", {"beta": 2.0}), "f05": ("FBetaScore", {"beta": 0.5}),
    "jaccard": ("JaccardIndex", {}), "mcc": ("MatthewsCorrCoef", {}), "cohen_kappa": ("CohenKappa", {}),
    "error_rate": ("HammingDistance", {}),  # torchmetrics' name for the fraction of wrong labels
}
CURVES = {"auroc": "AUROC", "average_precision": "AveragePrecision"}
NO_COUNTERPART = {  # catalog metrics torchmetrics has no class for (scikit-learn's hard-limit test covers them)
    "fpr", "fnr", "dice", "threat_score", "tversky", "gmean", "balanced_accuracy", "informedness", "markedness",
    "fowlkes_mallows", "focal_tversky",
}
MULTILABEL = {"accuracy", "precision", "recall", "specificity", "npv", "f1", "fbeta", "f2", "f05", "jaccard"}
MULTICLASS_SAME = {"precision", "recall", "specificity", "npv", "f1", "fbeta", "f2", "f05", "jaccard"}
MULTICLASS_ONE_VS_REST = {"accuracy", "mcc", "cohen_kappa"}
AVERAGES = ("micro", "macro", "weighted")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # metricc's analysis findings, torchmetrics' zero-division notes
        yield


def _compile(metric, **options):
    """The loss, without the analysis gate (tests/test_analyze.py covers it; here only values count)."""
    return metricc.compile_metric(metric, check=False, **options)


def _torchmetrics(task, name, **options):
    prefix = {"binary": "Binary", "multilabel": "Multilabel", "multiclass": "Multiclass"}[task]
    label, extra = SAME_NAME.get(name, (CURVES.get(name), {}))
    return getattr(tmc, prefix + label)(**extra, **options)


def _metric(name, loss):
    return loss if catalog_direction(name) == "minimize" else 1 - loss


def _sharp(target, correct, generator):
    """Logits of magnitude 8 to 12, right where ``correct``: σ(73·(σ(z) − 1/2)) is within e^-36 of the step."""
    magnitude = 8 + 4 * torch.rand(target.shape, generator=generator, dtype=torch.float64)
    return torch.where(correct, 2.0 * target - 1, 1.0 - 2 * target) * magnitude


def _binary_batches():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (200,), generator=g)
    yield "mixed", _sharp(target.double(), torch.rand(200, generator=g) < 0.7, g), target
    ones, zeros = torch.ones(6, dtype=torch.long), torch.zeros(6, dtype=torch.long)
    yield "two samples", torch.tensor([10.0, -10.0], dtype=torch.float64), torch.tensor([0, 1])
    yield "all positive, all right", torch.full((6,), 10.0, dtype=torch.float64), ones
    yield "all negative, one wrong", torch.tensor([-10.0] * 5 + [10.0], dtype=torch.float64), zeros


def test_every_catalog_metric_is_compared_or_says_why():
    names = set(catalog())
    assert set(SAME_NAME) | set(CURVES) | NO_COUNTERPART == names, "a catalog metric without a torchmetrics entry"
    assert not NO_COUNTERPART & (set(SAME_NAME) | set(CURVES))


@pytest.mark.parametrize("name", sorted(SAME_NAME))
def test_binary_metrics_equal_torchmetrics(name):
    loss_fn = _compile(name)
    for batch, logits, target in _binary_batches():
        ours = _metric(name, loss_fn(logits, target).item())
        theirs = _torchmetrics("binary", name)((logits > 0).long(), target).item()
        if name == "mcc" and batch.startswith("all "):  # one class: undefined; zero_division vs torchmetrics' own
            assert ours == 0.0 and abs(theirs) > 0.5, (batch, theirs)
            continue
        if math.isnan(theirs):  # κ of a perfect one-class batch: 0/0 for hard counts; the soft entries' limit is 0
            assert ours == 0.0, batch
            continue
        assert ours == pytest.approx(theirs, abs=TOLERANCE), batch


@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("name", sorted(MULTILABEL))
def test_multilabel_metrics_equal_torchmetrics(name, average):
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 2, (150, CLASSES), generator=g)
    logits = _sharp(target.double(), torch.rand(150, CLASSES, generator=g) < 0.7, g)
    loss_fn = _compile(name, task="multilabel", num_classes=CLASSES, average=average)
    theirs = _torchmetrics("multilabel", name, num_labels=CLASSES, average=average)((logits > 0).long(), target)
    assert _metric(name, loss_fn(logits, target).item()) == pytest.approx(theirs.item(), abs=TOLERANCE)


def test_multilabel_micro_mcc_is_torchmetrics_multilabel_mcc():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 2, (150, CLASSES), generator=g)
    logits = _sharp(target.double(), torch.rand(150, CLASSES, generator=g) < 0.7, g)
    ours = 1 - _compile("mcc", task="multilabel", num_classes=CLASSES, average="micro")(logits, target)
    theirs = tmc.MultilabelMatthewsCorrCoef(num_labels=CLASSES)((logits > 0).long(), target)
    assert ours.item() == pytest.approx(theirs.item(), abs=TOLERANCE)


def _multiclass_batch():
    """Confident logits (the argmax 12 above the rest); every class is a target and a prediction somewhere."""
    g = torch.Generator().manual_seed(3)
    target = torch.randint(CLASSES, (160,), generator=g)
    target[:CLASSES] = torch.arange(CLASSES)
    predicted = torch.where(torch.rand(160, generator=g) < 0.7, target, torch.randint(CLASSES, (160,), generator=g))
    predicted[CLASSES:2 * CLASSES] = torch.arange(CLASSES)
    return torch.nn.functional.one_hot(predicted, CLASSES).to(torch.float64) * 12, predicted, target


def _multiclass_loss(name, average, logits, target):
    loss_fn = _compile(name, task="multiclass", num_classes=CLASSES, average=average,
                                     relaxation="anyloss")
    return _metric(name, loss_fn(logits, target).item())


@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("name", sorted(MULTICLASS_SAME))
def test_multiclass_metrics_equal_torchmetrics(name, average):
    logits, predicted, target = _multiclass_batch()
    theirs = _torchmetrics("multiclass", name, num_classes=CLASSES, average=average)(predicted, target).item()
    assert _multiclass_loss(name, average, logits, target) == pytest.approx(theirs, abs=TOLERANCE)


@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("name", sorted(MULTICLASS_ONE_VS_REST))
def test_multiclass_accuracy_mcc_and_kappa_average_torchmetrics_one_vs_rest_binary_metrics(name, average):
    logits, predicted, target = _multiclass_batch()
    columns = torch.nn.functional.one_hot(predicted, CLASSES), torch.nn.functional.one_hot(target, CLASSES)
    if average == "micro":  # the metric of the summed one-vs-rest table: the binary metric of all columns at once
        expected = _torchmetrics("binary", name)(columns[0].reshape(-1), columns[1].reshape(-1)).item()
    else:
        per_class = torch.tensor([_torchmetrics("binary", name)(columns[0][:, c], columns[1][:, c]).item()
                                  for c in range(CLASSES)], dtype=torch.float64)
        support = columns[1].sum(0).double()
        weights = torch.ones(CLASSES, dtype=torch.float64) if average == "macro" else support
        expected = float((per_class * weights).sum() / weights.sum())
    assert _multiclass_loss(name, average, logits, target) == pytest.approx(expected, abs=TOLERANCE)


def test_torchmetrics_multiclass_accuracy_is_metriccs_recall():
    """What to compile for torchmetrics' MulticlassAccuracy: its macro is balanced accuracy (mean recall)."""
    logits, predicted, target = _multiclass_batch()
    for average in ("micro", "macro", "weighted"):
        theirs = tmc.MulticlassAccuracy(num_classes=CLASSES, average=average)(predicted, target).item()
        assert _multiclass_loss("recall", average, logits, target) == pytest.approx(theirs, abs=TOLERANCE)
    one_vs_rest = _multiclass_loss("accuracy", "macro", logits, target)
    assert abs(one_vs_rest - tmc.MulticlassAccuracy(num_classes=CLASSES, average="macro")(predicted, target)) > 0.05


def _curve_batch(task):
    """Scores between the points of metricc's default grid (0.05, ..., 0.95), informative of the labels."""
    g = torch.Generator().manual_seed(4)
    shape = (300,) if task == "binary" else (300, CLASSES)
    target = torch.randint(0, 2, shape, generator=g)
    bins = torch.clamp(torch.randint(0, 20, shape, generator=g) + 4 * target - 2, 0, 19)
    return (bins.double() * 0.05 + 0.025).clamp(0.001, 0.999), target


@pytest.mark.parametrize("name", sorted(CURVES))
@pytest.mark.parametrize("task, average", [("binary", None)] + [("multilabel", a) for a in AVERAGES])
def test_curve_metrics_equal_torchmetrics_at_the_same_thresholds(name, task, average):
    """A step sharp against the grid's spacing (L = 5000); torchmetrics binned at the grid with its ends."""
    scores, target = _curve_batch(task)
    options = {} if task == "binary" else {"task": task, "num_classes": CLASSES, "average": average}
    loss_fn = _compile(name, relaxation=metricc.Sigmoid(L=5000.0), from_logits=False, **options)
    grid = torch.tensor([0.0] + [round(0.05 * k, 2) for k in range(1, 20)] + [1.0])
    extra = {} if task == "binary" else {"num_labels": CLASSES, "average": average}
    theirs = _torchmetrics(task, name, thresholds=grid, **extra)(scores.float(), target).item()
    assert 1 - loss_fn(scores, target).item() == pytest.approx(theirs, abs=TOLERANCE)


def test_a_class_absent_from_targets_and_predictions_counts_in_the_macro_mean_as_in_scikit_learn():
    """torchmetrics leaves such a class out of its macro mean; metricc, like scikit-learn, gives it zero_division."""
    target, predicted = torch.tensor([0, 1, 0, 1, 0, 1]), torch.tensor([0, 1, 1, 1, 0, 0])  # class 2 absent
    logits = torch.nn.functional.one_hot(predicted, 3).to(torch.float64) * 12
    loss_fn = _compile("f1", task="multiclass", num_classes=3, average="macro", relaxation="anyloss")
    per_present = [2 / 3, 2 / 3]  # F1 of classes 0 and 1
    assert 1 - loss_fn(logits, target).item() == pytest.approx(sum(per_present) / 3, abs=1e-9)
    theirs = tmc.MulticlassF1Score(num_classes=3, average="macro")(predicted, target).item()
    assert theirs == pytest.approx(sum(per_present) / 2, abs=TOLERANCE)
