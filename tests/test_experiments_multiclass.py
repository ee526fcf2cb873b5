"""Tests of the multi-class and multi-label experiments: the CSV readers (tiny temporary files), splits,
baselines (sigmoidF1 against a plain re-derivation and a hand-computed batch, class and positive weights),
the prototype relaxations (the amplifier and identity against the runtime's own loss, the margin against
the binary amplifier for two classes), the closeness measures, the scores against scikit-learn, and the
command line end to end on tiny tables."""

from __future__ import annotations

import csv
import math
import re
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn import metrics as skm  # noqa: E402
from sklearn.utils.class_weight import compute_class_weight  # noqa: E402

import metricc  # noqa: E402
from metricc.cli import main  # noqa: E402
from metricc.experiments import multiclass_data as data  # noqa: E402
from metricc.experiments import multiclass_evaluation as evaluation  # noqa: E402
from metricc.experiments import multiclass_losses as losses  # noqa: E402
from metricc.experiments import multiclass_protocol as protocol  # noqa: E402
from metricc.experiments import multiclass_relaxations as relaxations  # noqa: E402
from metricc.experiments.datasets import DatasetError  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- readers ---------------------------------------------------------------------------------------------------

def test_multiclass_csv_reader(tmp_path):
    path = write_csv(tmp_path / "three.csv", ["a", "colour", "label", "split"],
                     [[1.5, "red", 0, "train"], [2, "blue", 2, "train"], ["?", "red", 1, "test"],
                      [4, "blue", 2, "TEST"]])
    table = data.load_task_csv(path)
    assert table.task == "multiclass" and table.num_classes == 3 and table.name == "three"
    assert table.y.tolist() == [0, 2, 1, 2]
    assert table.test.tolist() == [False, False, True, True]
    # a: the number and its missing indicator; colour: one-hot (blue, red); no label or split column
    assert table.feature_names == ("a", "a=missing", "colour=blue", "colour=red")
    assert np.isnan(table.X[2, 0]) and table.X[2, 1] == 1.0
    assert table.support().tolist() == [1, 1, 2]


def test_multilabel_csv_reader_and_task_detection(tmp_path):
    path = write_csv(tmp_path / "tags.csv", ["x", "label_sea", "label_sky", "split"],
                     [[0.1, 1, 0, "train"], [0.2, 1, 1, "train"], [0.3, 0, 0, "test"]])
    table = data.load_task_csv(path)
    assert table.task == "multilabel" and table.class_names == ("sea", "sky")
    assert table.y.tolist() == [[1, 0], [1, 1], [0, 0]] and table.feature_names == ("x",)
    assert table.support().tolist() == [2, 1]


@pytest.mark.parametrize("header, rows, task, message", [
    (["x", "label"], [[1, 0], [2, 2]], "multiclass", "no rows of class(es) 1"),
    (["x", "label"], [[1, 0], [2, 1.5]], "multiclass", "whole numbers"),
    (["x", "label"], [[1, -1], [2, 1]], "multiclass", "0 or more"),
    (["x", "label"], [[1, 0], [2, 0]], "multiclass", "two or more classes"),
    (["x", "y"], [[1, 0], [2, 1]], "multiclass", "no label column 'label'"),
    (["x", "label_a", "label_b"], [[1, 0, 2], [2, 1, 0]], "multilabel", "0 or 1"),
    (["x", "label_a"], [[1, 0], [2, 1]], "multilabel", "two or more"),
    (["x", "label", "split"], [[1, 0, "train"], [2, 1, "valid"]], "multiclass", "'train' or 'test'"),
    (["x", "label", "split"], [[1, 0, "train"], [2, 1, "train"]], "multiclass", "both train and test"),
    (["label"], [[0], [1]], "multiclass", "no feature columns"),
])
def test_reader_errors(tmp_path, header, rows, task, message):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DatasetError, match=re.escape(message)):
        data.load_task_csv(path, task)


def test_shared_tables_read_as_documented():
    """The project's tables, where they are: row, class and label counts of their SOURCES.md."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (root / "multiclass" / "ecoli.csv").exists():
        root = pathlib.Path("/work/shared/data")
    if not (root / "multiclass" / "ecoli.csv").exists():
        pytest.skip("the shared data folder is not here")
    ecoli = data.load_task_csv(root / "multiclass" / "ecoli.csv")
    assert (ecoli.n_samples, ecoli.n_features, ecoli.num_classes) == (336, 7, 8)
    assert ecoli.support().tolist() == [143, 77, 2, 2, 35, 20, 5, 52]
    emotions = data.load_task_csv(root / "multilabel" / "emotions.csv")
    assert (emotions.n_samples, emotions.n_features, emotions.num_classes) == (593, 72, 6)
    assert int((~emotions.test).sum()) == 391 and int(emotions.y.sum()) == 1108


def test_runs_use_the_source_split_or_cross_validate():
    X = np.arange(40, dtype=float).reshape(20, 2)
    y = np.array([0, 1, 2, 3] * 5)
    test = np.arange(20) >= 15
    split = data.TaskDataset("s", "multiclass", X, y, ("0", "1", "2", "3"), ("a", "b"), "", test=test)
    runs = list(data.runs(split, folds=5, repeats=3))
    assert [r.index for r in runs] == [0, 1, 2]
    assert all(r.test.tolist() == list(range(15, 20)) and r.train.tolist() == list(range(15)) for r in runs)
    folds = list(data.runs(data.TaskDataset("f", "multiclass", X, y, ("0", "1", "2", "3"), ("a", "b"), ""),
                           folds=5, repeats=3))
    assert len(folds) == 5
    assert sorted(np.concatenate([r.test for r in folds]).tolist()) == list(range(20))
    assert all(sorted(y[r.test].tolist()) == [0, 1, 2, 3] for r in folds)  # stratified: one of each per fold


def test_digits_has_ten_classes_and_the_resnet_gives_ten_logits():
    digits = data.digits_dataset()
    assert digits.num_classes == 10 and digits.X.shape == (1797, 64) and digits.image_shape == (1, 8, 8)
    model = protocol.build_task_model("resnet", 64, 10, digits.image_shape).double()
    assert model(torch.tensor(digits.X[:3])).shape == (3, 10)
    assert protocol.build_task_model("mlp", 7, 8)(torch.randn(4, 7)).shape == (4, 8)


# --- losses ----------------------------------------------------------------------------------------------------

def plain_sigmoid_f1(logits, target, beta=1.0, eta=0.0):
    """sigmoidF1 re-derived with Python floats, label by label."""
    total = 0.0
    for c in range(len(logits[0])):
        s = [1 / (1 + math.exp(-beta * (row[c] + eta))) for row in logits]
        tp = sum(si * t[c] for si, t in zip(s, target))
        fp = sum(si * (1 - t[c]) for si, t in zip(s, target))
        fn = sum((1 - si) * t[c] for si, t in zip(s, target))
        total += 2 * tp / (2 * tp + fn + fp)
    return 1 - total / len(logits[0])


@pytest.mark.parametrize("beta, eta", [(1.0, 0.0), (2.5, -0.3)])
def test_sigmoid_f1_against_a_plain_rederivation(beta, eta):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(30, 4, generator=generator, dtype=torch.float64) * 2
    target = (torch.rand(30, 4, generator=generator) < 0.4).double()
    value = losses.SigmoidF1(beta, eta)(logits, target)
    assert value.item() == pytest.approx(plain_sigmoid_f1(logits.tolist(), target.tolist(), beta, eta), rel=1e-12)


def test_sigmoid_f1_by_hand_and_against_metricc():
    """Two samples, two labels, labels 1 then 0 in each. First label: S = σ(0) = 1/2 and σ(ln 3) = 3/4, so
    tp = 1/2, fp = 3/4, fn = 1/2 and F1 = 1/(1/2 + 1/2 + 3/4 + 1/2)·1 = 4/9. Second: S = σ(1), σ(−1), so
    tp = σ(1), fn = fp = σ(−1) and F1 = σ(1). With β = 1, η = 0 sigmoidF1 is metricc's macro F1 on σ(z)
    (identity relaxation), gradients included."""
    logits = torch.tensor([[0.0, 1.0], [math.log(3.0), -1.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    sigma_1 = 1 / (1 + math.exp(-1))
    assert losses.SigmoidF1()(logits, target).item() == pytest.approx(1 - (4 / 9 + sigma_1) / 2, rel=1e-12)
    z = torch.randn(25, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = (torch.rand(25, 3, generator=torch.Generator().manual_seed(2)) < 0.5).double()
    compiled = metricc.compile_metric("f1", task="multilabel", num_classes=3, average="macro", relaxation="identity")
    a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    losses.SigmoidF1()(a, y).backward()
    compiled(b, y).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-14)


def test_class_and_positive_weights():
    y = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(losses.balanced_class_weights(y, 3),
                               compute_class_weight("balanced", classes=np.arange(3), y=y))
    assert losses.balanced_class_weights(y, 4)[3] == 1.0  # a class without training rows
    Y = np.array([[1, 0], [0, 0], [0, 1], [0, 0]])
    loss = losses.build_task_loss(losses.parse_task_loss("bce-pw", "multilabel"), "multilabel", 2, Y)
    z = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.2, 1.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor(Y, dtype=torch.float64)
    weight = torch.tensor([3.0, 3.0], dtype=torch.float64)  # 3 negatives per positive in each label
    expected = -(weight * y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(torch.sigmoid(-z))).mean()
    assert loss(z, y).item() == pytest.approx(expected.item(), rel=1e-12)


def test_loss_names():
    parsed = losses.parse_task_losses("ce,wce,macro-f1,micro-mcc@identity,weighted-jaccard,recall@margin:L=30",
                                      "multiclass")
    assert [s.name for s in parsed] == ["ce", "wce", "macro-f1", "micro-mcc@identity", "weighted-jaccard",
                                        "macro-recall@margin:L=30"]
    assert [s.target for s in parsed] == [None, None, "macro-f1", "micro-mcc", "weighted-jaccard", "macro-recall"]
    assert parsed[-1].is_prototype and not parsed[3].is_prototype
    parsed = losses.parse_task_losses("bce,sigmoidf1:beta=2,eta=0.5,macro-f1", "multilabel")
    assert [s.name for s in parsed] == ["bce", "sigmoidf1:beta=2,eta=0.5", "macro-f1"]
    assert dict(parsed[1].options) == {"beta": 2.0, "eta": 0.5} and parsed[1].target == "macro-f1"
    for text, task, message in [("ce", "multilabel", "multi-class baseline"), ("bce", "multiclass", "multi-label"),
                                ("macro-nope", "multiclass", "unknown loss"), ("f1@tempered:beta=2", "multilabel",
                                                                               "multi-class relaxations"),
                                ("sigmoidf1:gamma=1", "multilabel", "must be one of"), ("f1,f1", "multiclass", "twice"),
                                ("f1@linear", "multiclass", "no multi-class form")]:
        with pytest.raises(losses.TaskLossError, match=message):
            losses.parse_task_losses(text, task)


# --- prototype relaxations ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("relaxation, prototype", [("anyloss", "amplifier:L=73"), ("sigmoid:L=20", "amplifier:L=20"),
                                                   ("identity", "identity")])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_prototype_loss_is_the_runtime_loss(relaxation, prototype, average):
    """The prototype path (ŷ written plainly, the table loss's closed-form gradient, autograd through ŷ) gives the
    runtime's multi-class loss: so the relaxation study compares relaxations, not implementations."""
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(50, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 5, (50,), generator=generator)
    runtime = metricc.compile_metric("f1", task="multiclass", num_classes=5, average=average, relaxation=relaxation)
    soft = relaxations.parse_soft_prediction(prototype)
    prototype_loss = relaxations.PrototypeMetricLoss("f1", 5, average, soft)
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    expected, value = runtime(a, labels), prototype_loss(b, labels)
    expected.backward()
    value.backward()
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-8, atol=1e-13)


def test_margin_is_the_binary_amplifier_for_two_classes_and_tends_to_argmax():
    z = torch.randn(40, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    p1 = torch.softmax(z, 1)[:, 1]
    margin = relaxations.parse_soft_prediction("margin:L=73")(z)
    torch.testing.assert_close(margin[:, 1], torch.sigmoid(73 * (p1 - 0.5)), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(margin[:, 0], torch.sigmoid(-73 * (p1 - 0.5)), rtol=1e-9, atol=1e-15)
    wide = torch.randn(30, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 5
    steep = relaxations.parse_soft_prediction("margin:L=100000")(wide)
    torch.testing.assert_close(steep, torch.nn.functional.one_hot(wide.argmax(1), 6).double(), rtol=0, atol=1e-6)


def test_margins_against_a_loop():
    p = torch.softmax(torch.randn(12, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64), 1)
    expected = torch.tensor([[p[i, c] - max(p[i, k] for k in range(5) if k != c) for c in range(5)]
                             for i in range(12)], dtype=torch.float64)
    torch.testing.assert_close(relaxations.margins(p), expected)
    assert (relaxations.margins(p) > 0).sum(1).tolist() == [1] * 12


def test_closeness_measures():
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    confident = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 1, 0]), 3).double() * 60
    table_loss = relaxations.PrototypeMetricLoss("f1", 3, "macro", relaxations.SoftPrediction("identity")).table_loss
    near = relaxations.closeness(relaxations.SoftPrediction("identity"), confident, labels, table_loss)
    assert near["mass_off_argmax"] < 1e-20 and abs(near["metric_gap"]) < 1e-12
    assert near["hard_metric"] == pytest.approx(skm.f1_score(labels, [0, 1, 2, 1, 1, 0], average="macro"))
    assert near["classes_predicted"] == 3 and near["wrong_row_gradient"] >= 0
    moderate = confident / 30  # logits 2 apart: p = 0.79 on the argmax
    pushed = [relaxations.closeness(relaxations.SoftPrediction(*kind), moderate, labels, table_loss)
              ["wrong_row_gradient"] for kind in (("identity",), ("amplifier", 73.0))]
    assert pushed[0] == pytest.approx(0.7222, abs=1e-3) and pushed[1] == pytest.approx(0.5630, abs=1e-3)
    uniform = torch.zeros(6, 3, dtype=torch.float64)  # ties: argmax is class 0
    far = relaxations.closeness(relaxations.SoftPrediction("identity"), uniform, labels, table_loss)
    assert far["mass_off_argmax"] == pytest.approx(2 / 3) and far["entry_gap"] == pytest.approx(2 / 3)
    ovr = relaxations.SoftPrediction("ovr", 73.0)(uniform)  # p = 1/3 < 1/2 everywhere: no class predicted
    assert float(ovr.max()) < 1e-5


# --- scores ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_one_vs_rest_scores_are_scikit_learns(task, average):
    rng = np.random.default_rng(3)
    if task == "multiclass":
        y_true = rng.integers(0, 5, 80)
        y_pred = np.where(rng.random(80) < 0.6, y_true, rng.integers(0, 4, 80))  # class 4 never predicted
    else:
        y_true = (rng.random((80, 4)) < 0.3).astype(int)
        y_pred = np.where(rng.random((80, 4)) < 0.7, y_true, 1 - y_true)
    counts = evaluation.one_vs_rest_counts(y_true, y_pred, task)
    for metric, function in (("f1", skm.f1_score), ("precision", skm.precision_score),
                             ("recall", skm.recall_score), ("jaccard", skm.jaccard_score)):
        expected = function(y_true, y_pred, average=average, zero_division=0)
        assert evaluation.averaged(metric, average, counts) == pytest.approx(expected, abs=1e-12)


def test_score_rows():
    y_true = np.array([0, 1, 2, 2, 1, 0, 2])
    logits = np.eye(3)[[0, 2, 2, 2, 1, 1, 2]] * 3.0
    rows = evaluation.evaluation_rows("multiclass", ["macro-f1", "macro-mcc", None, "micro-recall"])
    assert rows == ["macro-f1", "micro-f1", "macro-mcc", "micro-recall", "mcc_rk"]
    scores = evaluation.score(y_true, logits, "multiclass", rows)
    y_pred = logits.argmax(1)
    assert scores["mcc_rk"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    assert scores["micro-f1"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert scores["micro-recall"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    ovr = [skm.matthews_corrcoef(y_true == c, y_pred == c) for c in range(3)]
    assert scores["macro-mcc"] == pytest.approx(np.mean(ovr))
    assert scores["macro-mcc"] != pytest.approx(scores["mcc_rk"])  # R_K is not the mean of one-vs-rest MCCs
    multilabel = evaluation.score(np.array([[1, 0], [0, 1]]), np.array([[2.0, 0.5], [-1.0, -0.1]]), "multilabel",
                                  ["macro-f1"])
    assert multilabel["macro-f1"] == pytest.approx(0.5)  # label 0 right (F1 1), label 1 one FP and one FN (F1 0)


# --- the command line --------------------------------------------------------------------------------------------

def blobs(path, task, n=90, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    if task == "multiclass":
        y = np.arange(n) % classes
        X = rng.normal(size=(n, 2)) + np.stack([np.cos(y * 2.1), np.sin(y * 2.1)], 1) * 3
        return write_csv(path, ["x0", "x1", "label"], [[*x, label] for x, label in zip(X, y)])
    X = rng.normal(size=(n, 3))
    Y = (X[:, :classes] + 0.3 * rng.normal(size=(n, classes)) > 0).astype(int)
    split = np.where(np.arange(n) < 2 * n // 3, "train", "test")
    header = ["x0", "x1", "x2", *[f"label_{c}" for c in range(classes)], "split"]
    return write_csv(path, header, [[*x, *y, s] for x, y, s in zip(X, Y, split)])


def test_cli_multiclass_end_to_end(tmp_path, capsys):
    path = blobs(tmp_path / "blobs.csv", "multiclass")
    out = tmp_path / "out"
    code = main(["experiment", "--task", "multiclass", "--data", str(path), "--model", "mlp", "--losses",
                 "ce,wce,macro-f1,micro-f1,macro-mcc,macro-f1@margin:L=73", "--folds", "2", "--epochs", "30",
                 "--hidden", "8", "--batch-size", "16", "--probe", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    text = (out / "multi_multiclass_mlp.md").read_text()
    assert "| macro-F1 |" in text and "| macro MCC |" in text and "MCC (scikit-learn, R_K)" in text
    assert "--task multiclass" in text and "2-fold cross-validation" in text
    with open(out / "multi_multiclass_mlp_runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {r["loss"] for r in rows} == {"ce", "wce", "macro-f1", "micro-f1", "macro-mcc",
                                                             "macro-f1@margin:L=73"}
    assert all(float(r["macro-f1"]) > 0.8 for r in rows if r["loss"] == "ce")  # separable blobs
    with open(out / "multi_multiclass_mlp_probes.csv") as handle:
        probes = list(csv.DictReader(handle))
    assert {p["loss"] for p in probes} == {"macro-f1", "micro-f1", "macro-mcc", "macro-f1@margin:L=73"}
    assert {p["rows"] for p in probes} == {"train", "test"}
    # again without --force: refused before any training
    assert main(["experiment", "--task", "multiclass", "--data", str(path), "--model", "mlp", "--losses", "ce",
                 "--out", str(out), "-q"]) == 2
    assert "exists" in capsys.readouterr().err


def test_cli_multilabel_end_to_end(tmp_path, capsys):
    path = blobs(tmp_path / "tags.csv", "multilabel")
    out = tmp_path / "out"
    code = main(["experiment", "--task", "multilabel", "--data", str(path), "--model", "slp", "--losses",
                 "bce,bce-pw,sigmoidf1,macro-f1,micro-f1", "--repeats", "2", "--epochs", "5", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    text = (out / "multi_multilabel_slp.md").read_text()
    assert "source split, 2 repeats" in text and "sigmoidf1" in text and "mcc_rk" not in text
    assert "| tags | macro-f1 | macro-F1 | bce |" in text  # the comparison table


@pytest.mark.parametrize("flags, message", [
    (["--threshold", "tuned"], "binary experiments only"),
    (["--model", "resnet"], "needs image data"),
    (["--losses", "bce"], "multi-label baseline"),
    (["--batch-size", "0.5"], "number of rows"),
])
def test_cli_refusals(tmp_path, capsys, flags, message):
    path = blobs(tmp_path / "blobs.csv", "multiclass")
    code = main(["experiment", "--task", "multiclass", "--data", str(path), "--out", str(tmp_path / "o"), "-q",
                 *flags])
    assert code == 2 and message in capsys.readouterr().err
