"""Tests of metricc.experiments: datasets, losses, models, evaluation, protocol, reports and the CLI.

Tiny configurations (few epochs, 2 folds, subsampled data) keep this file fast;
the one claim test (compiled F1 beats BCE on F1) runs the paper's SLP setting on
the full imbalanced ``random`` data, which takes a few seconds.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sympy
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from metricc.catalog import catalog  # noqa: E402
from metricc.cli import main  # noqa: E402
from metricc.experiments import datasets, evaluation, losses, models, settings, training  # noqa: E402
from metricc.experiments.protocol import ExperimentConfig, run_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_metricc_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread, as ``metricc experiment`` uses by default: these tiny models run many small ops,
    and with two threads on a busy two-core machine a 2-second run can take minutes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the core must not depend on the optional extra ---------------------------------------------------------

def test_core_and_cli_parser_do_not_import_sklearn_or_matplotlib():
    code = ("import sys, metricc, metricc.cli; metricc.cli.build_parser(); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'matplotlib')); "
            "print(bad); sys.exit(1 if bad else 0)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr


# --- datasets -------------------------------------------------------------------------------------------------

def test_random_dataset_is_the_papers_dataset_1():
    data = datasets.load_dataset("random")
    assert data.X.shape == (10_000, 2)
    assert 900 <= data.n_positive <= 1_100  # 9:1 up to make_classification's 1 % label noise
    assert set(np.unique(data.y)) == {0, 1}
    again = datasets.load_dataset("random")
    np.testing.assert_array_equal(data.X, again.X)  # fixed seed: the same data every time


def test_breast_cancer_is_made_ten_to_one_with_all_benign_rows():
    data = datasets.load_dataset("breast_cancer")
    assert data.X.shape == (393, 30)
    assert data.n_positive == 36
    assert data.n_samples - data.n_positive == 357
    from sklearn.datasets import load_breast_cancer

    full = load_breast_cancer()
    malignant_rows = {tuple(row) for row in full.data[full.target == 0]}
    assert all(tuple(row) in malignant_rows for row in data.X[data.y == 1])  # positives are malignant


def test_digits_positive_digit_and_image_shape():
    data = datasets.load_dataset("digits")
    assert data.X.shape == (1797, 64) and data.image_shape == (1, 8, 8)
    from sklearn.datasets import load_digits

    assert data.n_positive == int((load_digits().target == datasets.DEFAULT_POSITIVE_DIGIT).sum())
    three = datasets.load_dataset("digits:3")
    assert three.n_positive == int((load_digits().target == 3).sum())


@pytest.mark.parametrize("name", ["mnist", "digits:12", "random:1", ""])
def test_unknown_dataset_names_are_rejected(name):
    with pytest.raises(datasets.DatasetError, match="dataset|digit"):
        datasets.load_dataset(name)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_one_hot_encodes_text_columns_and_drops_columns(tmp_path):
    path = _write(tmp_path / "t.csv", "id,size,colour,label\n1,1.5,red,0\n2,2.5,blue,1\n3,0.5,red,0\n4,1.0,?,1\n")
    data = datasets.load_csv(path, drop_columns=("id",))
    assert data.feature_names == ("size", "colour=?", "colour=blue", "colour=red")
    np.testing.assert_array_equal(data.X[:, 0], [1.5, 2.5, 0.5, 1.0])
    np.testing.assert_array_equal(data.X[:, 1:].sum(axis=1), np.ones(4))
    np.testing.assert_array_equal(data.y, [0, 1, 0, 1])


@pytest.mark.parametrize("text, match", [
    ("a,b\n1,0\n2,1\n", "no label column 'label'; columns are a, b"),
    ("a,label\n1,0\n2,2\n", "labels must be 0 or 1"),
    ("a,label\n1,0\n2,yes\n", "labels must be 0 or 1"),
    ("a,label\n1,0\n2,\n", "missing label"),
    ("a,label\n?,0\n,1\n", "column 'a' has no value"),
    ("a,label\n1,1\n2,1\n", "needs both classes"),
    ("a,label\n1,0,5\n", "fields"),
])
def test_csv_errors_are_clear(tmp_path, text, match):
    with pytest.raises(datasets.DatasetError, match=match):
        datasets.load_csv(_write(tmp_path / "bad.csv", text))


def test_folds_need_enough_samples_of_each_class():
    data = datasets.Dataset("tiny", np.zeros((6, 1)), np.array([0, 0, 0, 0, 1, 1]), ("x",), "")
    datasets.check_folds(data, 2)
    with pytest.raises(datasets.DatasetError, match="fewer than 3 folds"):
        datasets.check_folds(data, 3)


# --- losses ---------------------------------------------------------------------------------------------------

def test_loss_names_parse_into_baselines_and_compiled_losses():
    specs = losses.parse_losses("bce,MSE,wbce,f1,sol-f1,f1@linear,f2@sigmoid:L=30,threshold=0.4,gmean")
    assert [s.name for s in specs] == ["bce", "mse", "wbce", "f1", "sol-f1", "f1@linear",
                                       "f2@sigmoid:L=30,threshold=0.4", "gmean"]
    assert [s.kind for s in specs[:4]] == ["bce", "mse", "wbce", "compiled"]
    assert specs[3].relaxation == "anyloss" and specs[3].family == "anyloss"
    assert specs[4].metric == "f1" and specs[4].family == "sol" and "cosine" in specs[4].relaxation
    assert specs[5].family == "linear" and specs[6].relaxation == "sigmoid:L=30,threshold=0.4"
    assert [s.setting_key for s in specs[:5]] == ["bce", "mse", "bce", "f1", "sol-f1"]


@pytest.mark.parametrize("text, match", [
    ("bce,hinge", r"unknown loss 'hinge'; valid losses: bce, mse, wbce, focal, lee-fbeta, wmw, wmw-hinge, auc-m; "
                  r"a catalog metric "
                  r"\(accuracy, "),
    ("f1,f1", "listed twice"),
    ("", "empty"),
    ("f1@nonsense", "unknown relaxation"),
    ("sol-f1@linear", "already fixes the relaxation"),
])
def test_bad_loss_names_list_the_valid_ones(text, match):
    with pytest.raises(losses.LossNameError, match=match):
        losses.parse_losses(text)


def test_baseline_losses_match_their_formulas():
    logits = torch.tensor([-2.0, 0.5, 3.0, -0.1], dtype=torch.float64)
    target = torch.tensor([0, 1, 1, 1])
    p, y = torch.sigmoid(logits), target.double()
    mse, _ = losses.build_loss(losses.parse_loss("mse"))
    assert torch.isclose(mse(logits, y), ((p - y) ** 2).mean())
    wbce, _ = losses.build_loss(losses.parse_loss("wbce"), y_train=torch.tensor([0.0, 0.0, 0.0, 1.0]))
    expected = -(3.0 * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()  # weight n_neg / n_pos = 3
    assert torch.isclose(wbce(logits, y), expected)


def test_compiled_loss_reports_its_threshold():
    _, threshold = losses.build_loss(losses.parse_loss("f1@sigmoid:L=30,threshold=0.3"))
    assert threshold == pytest.approx(0.3)
    _, threshold = losses.build_loss(losses.parse_loss("sol-f1"))
    assert threshold == pytest.approx(0.5)


# --- evaluation, independently of the compiler -----------------------------------------------------------------

def _catalog_value(entry, tp, fn, fp, tn):
    symbols = {name: sympy.Symbol(name) for name in ("TP", "FN", "FP", "TN")}
    symbols.update({name: sympy.Float(value) for name, value in entry.params})
    expr = sympy.sympify(entry.expression, locals=symbols)
    return float(expr.subs({symbols["TP"]: tp, symbols["FN"]: fn, symbols["FP"]: fp, symbols["TN"]: tn}))


def test_every_catalog_metric_has_an_evaluator_that_agrees_with_its_formula():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 200)
    y_pred = np.where(rng.random(200) < 0.8, y_true, 1 - y_true)
    tp = int(((y_pred == 1) & (y_true == 1)).sum())
    fn = int(((y_pred == 0) & (y_true == 1)).sum())
    fp = int(((y_pred == 1) & (y_true == 0)).sum())
    tn = int(((y_pred == 0) & (y_true == 0)).sum())
    for name, entry in catalog().items():
        if entry.is_curve:  # evaluated from scores, not a confusion matrix
            continue
        evaluator = evaluation.EVALUATORS[name]
        assert evaluator.higher_is_better == (entry.direction == "maximize"), name
        value = evaluator.function(y_true, y_pred)
        assert value == pytest.approx(_catalog_value(entry, tp, fn, fp, tn), abs=1e-12), name


def test_hard_predictions_threshold_the_probability():
    logits = np.array([-1000.0, -0.1, 0.0, 0.1, math.log(3), 1000.0])  # σ = 0, <.5, .5, >.5, .75, 1
    np.testing.assert_array_equal(evaluation.hard_predictions(logits), [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(evaluation.hard_predictions(logits, 0.8), [0, 0, 0, 0, 0, 1])


def test_rows_are_the_papers_four_then_each_compiled_metric():
    assert evaluation.evaluation_rows([None, "f1", "f2", "mcc", "f2"]) == [
        "accuracy", "f1", "gmean", "balanced_accuracy", "f2", "mcc"]


def test_undefined_scores_count_as_zero():
    y = np.array([0, 0, 1, 1])
    none = np.zeros(4, dtype=int)
    scores = evaluation.evaluate(y, none, ["f1", "gmean", "accuracy"])
    assert scores == {"f1": 0.0, "gmean": 0.0, "accuracy": 0.5}


# --- models and settings -------------------------------------------------------------------------------------

def test_models_output_one_logit_per_sample_and_start_at_p_half():
    x = torch.randn(7, 5)
    slp, mlp = models.build_model("slp", 5), models.build_model("mlp", 5)
    assert slp(x).shape == (7,) and torch.all(slp(x) == 0)
    assert mlp(x).shape == (7,) and torch.all(mlp(x) == 0)
    hidden = [m for m in mlp.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(hidden) == 1 and hidden[0].num_features == 2
    assert any(isinstance(m, torch.nn.Sigmoid) for m in mlp.modules())
    random_start = models.build_model("mlp", 5, zero_init_output=False)
    assert not torch.all(random_start(x) == 0)


def test_resnet_has_residual_blocks_with_batch_norm_and_takes_flat_rows():
    net = models.build_model("resnet", 64, (1, 8, 8), zero_init_output=False)
    blocks = [m for m in net.modules() if isinstance(m, models.BasicBlock)]
    assert len(blocks) >= 2
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in blocks[0].modules())
    flat = torch.randn(3, 64)
    torch.testing.assert_close(net.eval()(flat), net(flat.reshape(3, 1, 8, 8)))
    with pytest.raises(ValueError, match="image dataset"):
        models.build_model("resnet", 64)
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("vit", 64)


def test_paper_settings():
    assert settings.learning_rate("slp", "random", "bce") == (0.2, "Table 17")
    assert settings.learning_rate("mlp", "breast_cancer", "f1") == (1e-2, "Table 18")
    assert settings.learning_rate("slp", "breast_cancer", "sol-f1") == (1e-4, "Table 17")
    assert settings.learning_rate("slp", "random", "f1@linear".split("@")[0]) == (1e-2, "Table 17")
    assert settings.learning_rate("mlp", "adult", "gmean") == (1e-2, "Table 16")
    assert settings.learning_rate("slp", "adult", "mcc") == (settings.FALLBACK_LR["slp"], "default")
    assert settings.batch_size("slp", 900, "f1") == 900
    assert settings.batch_size("mlp", 9000, "f1") == 450
    assert settings.batch_size("mlp", 9000, "gmean") == 4500
    resolved = settings.resolve("mlp", "random", "f1", "f1", 1000, lr=0.3, epochs=7, batch=0.1)
    assert (resolved.learning_rate, resolved.epochs, resolved.batch_size, resolved.optimizer) == (0.3, 7, 100, "adam")
    assert settings.resolve("slp", "random", "bce", None, 1000).optimizer == "sgd"


def test_batches_never_leave_a_single_sample_for_batch_norm():
    chunks = training.batches(11, 5, torch.Generator().manual_seed(0))
    assert [c.numel() for c in chunks] == [5, 6]
    assert sorted(torch.cat(chunks).tolist()) == list(range(11))
    assert training.batches(11, 11, torch.Generator()) == [None]


def test_training_stops_with_a_clear_error_on_a_non_finite_loss():
    model = models.SLP(2).double()
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.tensor([0, 1] * 4, dtype=torch.float64)
    with pytest.raises(training.TrainingError, match="smaller learning rate"):
        training.train(model, lambda z, t: z.sum() * float("nan"), x, y, epochs=2, learning_rate=0.1,
                       batch_size=8, generator=torch.Generator())


# --- protocol --------------------------------------------------------------------------------------------------

def test_protocol_runs_every_fold_of_every_loss_and_records_curves():
    data = datasets.load_dataset("breast_cancer")
    specs = losses.parse_losses("bce,f1")
    result = run_dataset(data, specs, ExperimentConfig(model="mlp", folds=2, epochs=3))
    assert len(result.folds) == 4
    assert result.rows == ["accuracy", "f1", "gmean", "balanced_accuracy"]
    for run in result.folds:
        assert len(run.history.losses) == 3 and len(run.history.epoch_seconds) == 3
        assert all(0.0 <= value <= 1.0 for value in run.scores.values())
    assert result.scores("f1", "f1").shape == (2,)
    assert result.settings("bce").batch_size == int(len(data.y) / 2 * 0.05)


def test_compiled_f1_loss_beats_bce_on_f1_on_imbalanced_random_data():
    """The papers' claim, in the paper's SLP setting (1,000 epochs, full batch, Table 17 learning rates).

    The SLP starts from zero and trains full batch, so the only randomness is the
    fold split. At 10 folds the F1 loss scores 0.633 against BCE's 0.542
    (docs/reproduction.md); at 2 folds, split seeds 0-4 all gave 0.633-0.637 against
    0.541-0.546. The test uses seed 0 and asks for a margin of 0.03.
    """
    data = datasets.load_dataset("random")
    result = run_dataset(data, losses.parse_losses("bce,f1"), ExperimentConfig(model="slp", folds=2))
    f1_of_f1_loss = result.scores("f1", "f1").mean()
    f1_of_bce = result.scores("bce", "f1").mean()
    assert f1_of_f1_loss > f1_of_bce + 0.03, (f1_of_f1_loss, f1_of_bce)
    assert result.best("f1") == ["f1"]


# --- the command line, end to end ----------------------------------------------------------------------------

EXPECTED_FILES = ("scores_{m}.md", "scores_{m}.csv", "folds_{m}.csv", "learning_curves_{m}.png",
                  "learning_time_{m}.md", "learning_time_{m}.csv", "run_{m}.json",
                  "validation_curves_{m}/random.png", "summary.md", "summary.csv", "comparisons.csv", "summary.png")


def test_cli_experiment_writes_tables_plot_and_timing(tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["experiment", "--datasets", "random,breast_cancer", "--subsample", "400", "--model", "slp",
                 "--losses", "bce,mse,sol-f1,f2", "--folds", "2", "--epochs", "20", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    for pattern in EXPECTED_FILES:
        assert (out / pattern.format(m="slp")).stat().st_size > 0, pattern
    markdown = (out / "scores_slp.md").read_text()
    assert "| metric | bce | mse | sol-f1 | f2 |" in markdown
    assert "## random" in markdown and "## breast_cancer" in markdown
    assert "| F2 |" in markdown and "**" in markdown and "±" in markdown
    with open(out / "scores_slp.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["dataset"], r["metric"]) for r in rows[:5]] == [
        ("random", "accuracy"), ("random", "f1"), ("random", "gmean"), ("random", "balanced_accuracy"),
        ("random", "f2")]
    assert len(rows) == 10 and all(0 <= float(r["bce"]) <= 1 for r in rows)
    assert all(r["best"] for r in rows)
    with open(out / "folds_slp.csv", newline="") as handle:
        folds = list(csv.DictReader(handle))
    assert len(folds) == 2 * 4 * 2 * 5 * 2  # datasets × losses × folds × metrics × threshold rules
    assert {r["rule"] for r in folds} == {"fixed", "tuned"} and {r["model"] for r in folds} == {"slp"}
    assert (out / "learning_curves_slp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    timing = (out / "learning_time_slp.md").read_text()
    assert "| random | 1.00 |" in timing and "Achievement rate" in timing
    with open(out / "learning_time_slp.csv", newline="") as handle:
        timing_rows = list(csv.DictReader(handle))
    assert {r["loss"]: float(r["ratio_to_bce"]) for r in timing_rows if r["dataset"] == "random"}["bce"] == 1.0
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "F1" in stdout


def test_cli_experiment_on_a_csv_with_the_mlp(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = ["colour,x,y,target"]
    for _ in range(120):
        label = int(rng.random() < 0.25)
        lines.append(f"{rng.choice(['red', 'blue'])},{rng.normal() + 2 * label:.4f},{rng.normal():.4f},{label}")
    path = _write(tmp_path / "my_table.csv", "\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(["experiment", "--data", str(path), "--label-column", "target", "--model", "mlp",
                 "--losses", "bce,f1", "--folds", "2", "--epochs", "2", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    assert "## my_table" in (out / "scores_mlp.md").read_text()


def test_cli_experiment_trains_the_resnet_on_digits(tmp_path, capsys):
    code = main(["experiment", "--datasets", "digits", "--subsample", "300", "--model", "resnet",
                 "--losses", "bce,f1", "--folds", "2", "--epochs", "1", "--out", str(tmp_path), "-q"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "scores_resnet.md").exists()


@pytest.mark.parametrize("argv, message", [
    (["--data", "{bad}", "--label-column", "y"], "no label column 'y'"),
    (["--data", "{bad}"], "labels must be 0 or 1"),
    (["--data", "{nan}"], "column 'a' has no value in any row"),
    (["--data", "{missing_file}"], "no such CSV file"),
    (["--datasets", "mnist"], "unknown dataset 'mnist'"),
    (["--datasets", "random", "--losses", "bce,hinge"], "--losses: unknown loss 'hinge'; valid losses: bce, mse"),
    (["--datasets", "random", "--model", "resnet"], "needs image data"),
    (["--datasets", "breast_cancer", "--folds", "40"], "fewer than 40 folds"),
])
def test_cli_experiment_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, message):
    files = {"bad": _write(tmp_path / "bad.csv", "a,label\n1,0\n2,3\n3,1\n"),
             "nan": _write(tmp_path / "nan.csv", "a,label\n?,0\nNA,1\n,1\n"),
             "missing_file": tmp_path / "nope.csv"}
    argv = [arg.format(**files) for arg in argv]
    code = main(["experiment", *argv, "--out", str(tmp_path / "out"), "-q"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "scores_slp.md").exists()


def test_cli_experiment_does_not_overwrite_results_without_force(tmp_path, capsys):
    existing = tmp_path / "scores_slp.md"
    existing.write_text("keep me")
    argv = ["experiment", "--datasets", "breast_cancer", "--losses", "bce", "--folds", "2", "--epochs", "1",
            "--out", str(tmp_path), "-q"]
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err and existing.read_text() == "keep me"
    assert main([*argv, "--force"]) == 0
    assert existing.read_text() != "keep me"
