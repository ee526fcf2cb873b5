"""Tests of the benchmark suite in metricc.experiments: baselines (focal, lee-fbeta), the tuned threshold,
the --losses grammar (user expressions, options, recipes), missing values, validation curves, the summary
and the command line over a directory of tables.

Oracles share no code with what they test: a brute-force threshold scan with scikit-learn, the focal
loss re-derived from probabilities, lee-fbeta's gradient written out by hand and its large-sample
identity checked with autograd through the plain Fβ formula.
"""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from metricc.cli import main  # noqa: E402
from metricc.experiments import datasets, evaluation, losses, summary  # noqa: E402
from metricc.experiments.protocol import ExperimentConfig, curve_epochs, run_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_metricc_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- evaluation from counts, and the tuned threshold ---------------------------------------------------------

def _labels_with_counts(tp, fn, fp, tn):
    y_true = np.array([1] * (tp + fn) + [0] * (fp + tn))
    y_pred = np.array([1] * tp + [0] * fn + [1] * fp + [0] * tn)
    return y_true, y_pred


@pytest.mark.parametrize("counts", [(5, 3, 2, 10), (0, 4, 0, 6), (4, 0, 6, 0), (0, 3, 5, 2), (3, 0, 0, 7),
                                    (1, 1, 1, 1), (0, 5, 0, 0), (0, 0, 0, 5)])
def test_vectorised_evaluators_agree_with_scikit_learn(counts):
    y_true, y_pred = _labels_with_counts(*counts)
    for name, evaluator in evaluation.EVALUATORS.items():
        if evaluator.from_scores:  # AUROC, average precision: metrics of scores, no confusion counts
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = evaluator.function(y_true, y_pred)
        if not math.isfinite(expected):
            continue  # scikit-learn's kappa is NaN on one-class data; ours is 0
        got = float(evaluator.from_counts(*counts))
        assert got == pytest.approx(expected, abs=1e-12), (name, counts)


def _brute_force_best(logits, y, evaluator):
    """Every cut between sorted distinct logits (and below/above all), scored with scikit-learn."""
    distinct = np.unique(logits)
    cuts = np.concatenate([[distinct[0] - 1], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1]])
    values = [evaluator.function(y, (logits > cut).astype(int)) for cut in cuts]
    return max(values) if evaluator.higher_is_better else min(values)


@pytest.mark.parametrize("metric", ["f1", "gmean", "balanced_accuracy", "mcc", "accuracy", "fpr", "f2"])
def test_tuned_threshold_maximises_the_training_metric_as_a_brute_force_scan_does(metric):
    rng = np.random.default_rng(3)
    evaluator = evaluation.EVALUATORS[metric]
    for trial in range(6):
        n = 40 + 10 * trial
        y = (rng.random(n) < 0.2).astype(int)
        y[:2] = [0, 1]
        logits = np.round(rng.normal(size=n) + 1.5 * y, 1)  # rounding makes ties between logits
        best = evaluation.tune_threshold(logits, y, evaluator)
        assert best.value == pytest.approx(_brute_force_best(logits, y, evaluator), abs=1e-12)
        achieved = evaluator.function(y, evaluation.predictions_at_cut(logits, best.cut))
        assert achieved == pytest.approx(best.value, abs=1e-12)
        assert not np.any(logits == best.cut)  # the cut never sits on a training score


def test_tuned_threshold_handles_separable_constant_and_extreme_scores():
    f1 = evaluation.EVALUATORS["f1"]
    separable = evaluation.tune_threshold(np.array([-3.0, -1.0, 2.0, 4.0]), np.array([0, 0, 1, 1]), f1)
    assert separable.value == 1.0 and -1.0 < separable.cut < 2.0
    constant = evaluation.tune_threshold(np.zeros(4), np.array([0, 1, 0, 1]), f1)
    assert constant.value == pytest.approx(2 / 3) and constant.cut < 0  # predict all: F1 = 2·2/(2·2 + 2)
    extreme = evaluation.tune_threshold(np.array([-1e308, -1e308, 1e308]), np.array([0, 1, 1]), f1)
    assert extreme.value == pytest.approx(0.8) and extreme.cut < -1e307
    diverged = evaluation.tune_threshold(np.array([np.nan, np.nan]), np.array([0, 1]), f1)
    assert diverged.value == pytest.approx(2 / 3)


def test_user_expression_evaluator_counts_undefined_as_zero_and_follows_its_formula():
    import metricc

    metric = metricc.parse("(1+b**2)*TP/((1+b**2)*TP+b**2*FN+FP)", {"b": 2.0}, name="myf2")
    evaluator = evaluation.expression_evaluator("myf2", metric, True)
    y_true, y_pred = _labels_with_counts(3, 2, 4, 5)
    assert evaluator.function(y_true, y_pred) == pytest.approx(evaluation.EVALUATORS["f2"].function(y_true, y_pred))
    assert float(evaluator.from_counts(0, 0, 0, 5)) == 0.0  # 0/0


# --- focal loss and lee-fbeta -----------------------------------------------------------------------------------

def test_focal_loss_matches_the_papers_formula_and_known_values():
    focal = losses.FocalLoss(gamma=2.0, alpha=0.25)
    # One positive at p = 1/2: α (1 − p)^γ (−log p) = 0.25 · 0.25 · ln 2, normalised by 1 positive.
    value = focal(torch.zeros(1, dtype=torch.float64), torch.ones(1))
    assert float(value) == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-12)
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5, 6.0], dtype=torch.float64)
    target = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    alpha_t = torch.where(target == 1, 0.25, 0.75)
    plain = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).sum() / target.sum()
    assert float(focal(logits, target)) == pytest.approx(float(plain), rel=1e-12)
    # γ = 0, α = 1/2: half of BCE's sum over the positives' count.
    half_bce = losses.FocalLoss(gamma=0.0, alpha=0.5)(logits, target)
    bce_sum = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    assert float(half_bce) == pytest.approx(float(0.5 * bce_sum / 3), rel=1e-12)


def test_focal_loss_stays_finite_with_a_gradient_at_extreme_logits_in_float32():
    logits = torch.tensor([-60.0, 60.0, -60.0, 60.0], requires_grad=True)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    value = losses.FocalLoss()(logits, target)
    value.backward()
    assert torch.isfinite(value) and float(value) > 0
    assert torch.all(torch.isfinite(logits.grad)) and logits.grad[0] < 0 and logits.grad[1] > 0


def test_lee_fbeta_gradient_equals_its_hand_derived_form():
    """∂loss/∂z: −(1 − p)/P for a positive; p(1 − p)/((c + p)·N) for a negative (c = β² P/N)."""
    torch.manual_seed(0)
    logits = torch.randn(12, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0], dtype=torch.float64)
    P, N, beta = 3.0, 9.0, 2.0
    loss_fn = losses.LeeFbetaLoss(beta=beta, positive_to_negative=P / N)
    loss_fn(logits, target).backward()
    p, c = torch.sigmoid(logits.detach()), beta ** 2 * P / N
    expected = torch.where(target == 1, -(1 - p) / P, p * (1 - p) / ((c + p) * N))
    torch.testing.assert_close(logits.grad, expected, rtol=1e-12, atol=1e-14)
    value = loss_fn(logits.detach(), target)
    plain = -(torch.log(p) * target).sum() / P + (torch.log(c + p) * (1 - target)).sum() / N
    assert float(value) == pytest.approx(float(plain), rel=1e-12)
    sample_mean = losses.LeeFbetaLoss(beta=beta, positive_to_negative=P / N, per_class=False)
    expected_mean = torch.mean(-torch.log(p) * target + torch.log(c + p) * (1 - target))
    assert float(sample_mean(logits.detach(), target)) == pytest.approx(float(expected_mean), rel=1e-12)


def test_lee_fbeta_gradient_is_parallel_to_the_large_sample_fbeta_gradient():
    """With p constant within each class (a one-feature model x = y), ∇loss = s·(−∇Fβ), s = (1+β²)/(F(1+β²−F))."""
    P, N, beta = 7, 93, 1.5
    y = torch.cat([torch.ones(P), torch.zeros(N)]).double()
    for u0, v0 in [(0.0, 0.0), (1.2, -0.4), (-0.7, -2.0)]:
        weights = torch.tensor([u0, v0], dtype=torch.float64, requires_grad=True)
        logits = weights[0] * y + weights[1] * (1 - y)  # positives at u, negatives at v
        loss = losses.LeeFbetaLoss(beta=beta, positive_to_negative=P / N)(logits, y)
        (grad_loss,) = torch.autograd.grad(loss, weights, retain_graph=True)
        p = torch.sigmoid(logits)
        tp, fp = (y * p).sum(), ((1 - y) * p).sum()
        fbeta = (1 + beta ** 2) * tp / (beta ** 2 * P + tp + fp)
        (grad_f,) = torch.autograd.grad(fbeta, weights)
        f = float(fbeta)
        scale = (1 + beta ** 2) / (f * (1 + beta ** 2 - f))
        torch.testing.assert_close(grad_loss, -scale * grad_f, rtol=1e-10, atol=1e-12)


def test_weighted_bce_and_lee_fbeta_take_their_class_ratio_from_the_training_fold():
    y_train = torch.tensor([0.0] * 8 + [1.0] * 2)
    spec = losses.parse_loss("lee-fbeta:beta=2")
    loss_fn, _ = losses.build_loss(spec, y_train)
    assert loss_fn.offset == pytest.approx(4 * 2 / 8)
    assert spec.target == "f2" and spec.setting_key == "bce"
    assert losses.parse_loss("lee-fbeta:beta=3").target == "fbeta=3"
    assert evaluation.EVALUATORS["fbeta=3"].function(np.array([1, 0]), np.array([1, 1])) == pytest.approx(
        10 / (10 + 1))


# --- the --losses grammar ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, entries", [
    ("bce,myf=2*TP/(2*TP+FP+FN)", ["bce", "myf=2*TP/(2*TP+FP+FN)"]),
    ("f1@sigmoid:L=30,threshold=0.4,myf=2*TP/(2*TP+FP+FN),f2",
     ["f1@sigmoid:L=30,threshold=0.4", "myf=2*TP/(2*TP+FP+FN)", "f2"]),
    ("m=max(TP,FN)/(TP+FN+FP),bce", ["m=max(TP,FN)/(TP+FN+FP)", "bce"]),
    ("focal:gamma=1,alpha=0.5,lee-fbeta:beta=2,f1[mix=0.5,warmup=3]",
     ["focal:gamma=1,alpha=0.5", "lee-fbeta:beta=2", "f1[mix=0.5,warmup=3]"]),
    ("f1@linear:threshold=0.3,delta=0.1,gamma=TP/(TP+FN)", ["f1@linear:threshold=0.3,delta=0.1", "gamma=TP/(TP+FN)"]),
    ("f1@sigmoid:L=30,threshold=0.4; threshold=TP/(TP+FN)", ["f1@sigmoid:L=30,threshold=0.4", "threshold=TP/(TP+FN)"]),
    ("f1@sol:distribution=cosine,mu=0.4", ["f1@sol:distribution=cosine,mu=0.4"]),
    ("f1,  ,gmean,", ["f1", "gmean"]),
])
def test_losses_are_split_by_an_unambiguous_rule(text, entries):
    assert losses.split_loss_list(text) == entries


def test_user_expressions_are_compiled_losses_named_by_their_label():
    specs = losses.parse_losses("bce,myf=2*TP/(2*TP+FP+FN),fb=(1+b**2)*TP/((1+b**2)*TP+b**2*FN+FP)@linear[mix=0.2]",
                                {"b": 2.0})
    myf, fb = specs[1], specs[2]
    assert (myf.name, myf.kind, myf.label, myf.target, myf.relaxation) == ("myf", "compiled", "myf", "myf",
                                                                          "anyloss")
    assert myf.metric == "2*TP/(2*TP+FP+FN)" and myf.params == () and myf.setting_key == "user-metric"
    assert fb.name == "fb@linear[mix=0.2]" and fb.params == (("b", 2.0),) and fb.recipe == (("mix", 0.2),)
    assert fb.source.startswith("fb=(1+b**2)")


@pytest.mark.parametrize("text, params, match", [
    ("myf=2*TP/(2*TP+FP+FX)", {}, r"loss 'myf=2\*TP/\(2\*TP\+FP\+FX\)': unknown name 'FX'"),
    ("myf=(1+b**2)*TP/((1+b**2)*TP+b**2*FN+FP)", {}, "parameter 'b' has no value"),
    ("myf=2*TP/(2*TP+FP+FN)", {"b": 2.0}, "--param b: no name=expression entry"),
    ("f1=2*TP/(2*TP+FP+FN)", {}, "the name 'f1' is taken"),
    ("bce=TP/(TP+FN)", {}, "the name 'bce' is taken"),
    ("2*TP/(2*TP+FP+FN)", {}, "unknown loss"),
    ("myf=", {}, "no expression"),
    ("c=TP+1-TP", {}, "no confusion symbol"),
    ("focal:beta=2", {}, "option 'beta=2' must be one of gamma=..., alpha=..."),
    ("focal:gamma=x", {}, "gamma needs a number"),
    ("bce:gamma=2", {}, "bce takes no options"),
    ("f1[mix=2]", {}, "mix must lie in"),
    ("f1[warmup=2.5]", {}, "whole number"),
    ("f1[speed=1]", {}, "option 'speed=1' must be one of mix="),
    ("myf=2*TP/(2*TP+FP+FN),myf=TP/(TP+FN)", {}, "listed twice"),
    ("f1@nonsense", {}, "unknown relaxation"),
])
def test_bad_loss_entries_get_one_line_messages(text, params, match):
    with pytest.raises(losses.LossNameError, match=match) as caught:
        losses.parse_losses(text, params)
    assert "\n" not in str(caught.value)


def test_recipes_mix_with_bce_and_warm_start_on_bce():
    logits = torch.tensor([-1.0, 0.5, 2.0, -0.2], dtype=torch.float64)
    target = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, target))
    f1_loss, _ = losses.build_loss(losses.parse_loss("f1"))
    f1_value = float(f1_loss(logits, target))
    mixed, _ = losses.build_loss(losses.parse_loss("f1[mix=0.25]"))
    assert float(mixed(logits, target)) == pytest.approx(0.75 * f1_value + 0.25 * bce)
    warm, _ = losses.build_loss(losses.parse_loss("f1[warmup=2]"))
    values = []
    for epoch in range(4):
        warm.set_epoch(epoch)
        values.append(float(warm(logits, target)))
    assert values == pytest.approx([bce, bce, f1_value, f1_value])


# --- data: missing values -----------------------------------------------------------------------------------

def test_missing_numbers_get_an_indicator_and_the_training_folds_median(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,b,label\n1,x,0\n?,y,1\n3,?,0\n,x,1\n5,y,0\n", encoding="utf-8")
    data = datasets.load_csv(path)
    assert data.feature_names == ("a", "a=missing", "b=?", "b=x", "b=y")
    np.testing.assert_array_equal(data.X[:, 1], [0, 1, 0, 1, 0])
    assert "2 missing in 'a' imputed" in data.description
    train, test = datasets.impute_missing(data.X[[0, 1, 2]], data.X[[3, 4]])
    assert train[1, 0] == 2.0 and test[0, 0] == 2.0  # the median of the training rows 1 and 3
    assert test[1, 0] == 5.0


# --- protocol: tuned scores and validation curves -----------------------------------------------------------------

def test_protocol_records_tuned_scores_and_validation_curves_that_end_at_the_final_scores():
    data = datasets.load_dataset("breast_cancer")
    specs = losses.parse_losses("bce,wbce,focal,lee-fbeta,f1,m=TP/(TP+FN+FP)")
    config = ExperimentConfig(model="slp", folds=2, epochs=12, curve_points=5)
    result = run_dataset(data, specs, config)
    assert result.rows[-2:] == ["jaccard", "m"] or result.rows[-1] == "m"
    for run in result.folds:
        assert run.curve_epochs == curve_epochs(12, 5) == (1, 4, 6, 9, 12)
        for row in result.rows:
            assert run.curve[row][-1] == pytest.approx(run.scores[row], abs=1e-12)  # numpy counts = sklearn
            assert 0 <= run.tuned[row] <= 1 and 0 <= run.tuned_thresholds[row] <= 1
    m_scores = result.scores("m", "m", "fixed")
    np.testing.assert_allclose(m_scores, [r.scores["m"] for r in result.runs("m")])
    tuned_config = ExperimentConfig(model="slp", folds=2, epochs=12, curve_points=0, threshold="tuned")
    tuned = run_dataset(data, specs[:2], tuned_config)
    np.testing.assert_allclose(tuned.scores("bce", "f1"), [r.tuned["f1"] for r in tuned.runs("bce")])


def test_a_diverging_loss_is_scored_as_it_stands_and_noted_instead_of_stopping_the_suite():
    data = datasets.load_dataset("breast_cancer").subsample(120)
    specs = losses.parse_losses("bce[lr=1e308],wbce")
    result = run_dataset(data, specs, ExperimentConfig(model="slp", folds=2, epochs=5, curve_points=0))
    failed = [r for r in result.runs("bce[lr=1e308]") if r.failed]
    assert failed and all(r.failed is None for r in result.runs("wbce"))
    assert any("training stopped early" in note for note in result.notes)


# --- summary ---------------------------------------------------------------------------------------------------

def test_paired_outcomes_under_both_tie_rules():
    assert summary.paired_outcome(np.array([0.1, 0.12, 0.09, 0.11, 0.1]))[0] == "win"
    assert summary.paired_outcome(np.array([-0.1, -0.12, -0.09, -0.11, -0.1]))[0] == "loss"
    assert summary.paired_outcome(np.array([0.1, -0.12, 0.09, -0.11, 0.02]))[0] == "tie"
    assert summary.paired_outcome(np.zeros(5))[0] == "tie"
    assert summary.paired_outcome(np.full(5, 0.01))[0] == "win"  # zero spread: the sign decides
    # Wilcoxon over 5 folds cannot reach p < 0.05 (smallest two-sided p = 1/16); over 10 it can.
    assert summary.paired_outcome(np.full(5, 0.1) + np.arange(5) * 1e-3, "wilcoxon")[0] == "tie"
    assert summary.paired_outcome(np.full(10, 0.1) + np.arange(10) * 1e-3, "wilcoxon")[0] == "win"


def _synthetic_table(differences: dict[str, float], folds: int = 5) -> summary.ScoreTable:
    table = summary.ScoreTable()
    rng = np.random.default_rng(0)
    for dataset, shift in differences.items():
        noise = rng.normal(scale=0.01, size=folds)
        for fold in range(folds):
            base = 0.6 + noise[fold]
            for loss, kind, value in (("bce", "bce", base - 0.1), ("mse", "mse", base - 0.2), ("wbce", "wbce", base),
                                      ("focal", "focal", base - 0.3), ("f1", "compiled", base + shift)):
                target = "f1" if kind == "compiled" else None
                for rule, offset in (("fixed", 0.0), ("tuned", 0.05 if kind != "compiled" else 0.0)):
                    table.add("slp", dataset, loss, kind, target, rule, "f1", fold, value + offset, True, "F1")
    return table


def test_summary_counts_wins_ties_losses_and_the_goal():
    table = _synthetic_table({"a": 0.05, "b": 0.0, "c": -0.05, "d": 0.2})
    comparisons = summary.compare(table)
    tallies = {(t.rule, t.baseline): t for t in summary.tally(comparisons)}
    assert tallies[("fixed", "wbce")].cell == "2/1/1" and tallies[("fixed", "wbce")].better_mean == 2
    assert tallies[("fixed", "bce")].cell == "4/0/0"  # BCE is 0.1 below wbce: even c's −0.05 beats it
    assert tallies[("tuned", "wbce+tuned")].cell == "1/1/2"  # the baselines gain 0.05 when tuned, f1 does not
    best = [c for c in comparisons if c.rule == "fixed" and c.baseline == summary.goal_name("fixed")]
    assert {c.dataset: c.chosen for c in best} == {d: "wbce" for d in "abcd"}  # wbce > bce+tuned > focal
    lines = {(g.rule, g.loss): g for g in summary.goal(comparisons)}
    fixed = lines[("fixed", "f1")]
    assert (fixed.cases, fixed.beats_bce_mse, fixed.at_least_best) == (4, 4, 3)
    text = summary.summary_markdown(table, comparisons, "se")
    assert "| slp | f1 (F1) |" in text and "## Goal" in text and "AnyLoss's form" in text


def test_a_compiled_loss_can_count_as_a_baseline_to_compare_recipes_with_it():
    table = _synthetic_table({"a": 0.05, "b": 0.0})
    for dataset, shift in (("a", 0.08), ("b", -0.02)):
        for fold in range(5):
            base = table.values[("slp", dataset, "f1", "fixed", "f1")][fold]
            for rule in ("fixed", "tuned"):
                table.add("slp", dataset, "f1[mix=0.5]", "compiled", "f1", rule, "f1", fold, base + shift, True,
                          "F1")
    with pytest.raises(ValueError, match="no loss named 'f2'"):
        table.counting_as_baselines(["f2"])
    both = table.counting_as_baselines(["f1"])
    assert both.compiled == ["f1[mix=0.5]"] and "f1" in both.baselines
    versus = {c.dataset: c.outcome for c in summary.compare(both) if c.baseline == "f1" and c.rule == "fixed"}
    assert versus == {"a": "win", "b": "loss"}


def test_summary_from_folds_csv_equals_summary_from_results(tmp_path):
    data = datasets.load_dataset("breast_cancer").subsample(150)
    specs = losses.parse_losses("bce,mse,wbce,focal,f1")
    result = run_dataset(data, specs, ExperimentConfig(model="slp", folds=2, epochs=4, curve_points=0))
    from metricc.experiments import report

    (tmp_path / "folds_slp.csv").write_text(report.folds_csv([result]), encoding="utf-8")
    from_csv = summary.compare(summary.ScoreTable.from_folds_csv([tmp_path / "folds_slp.csv"]))
    direct = summary.compare(summary.ScoreTable.from_results([result]))
    assert [(c.baseline, c.outcome, round(c.difference, 9)) for c in from_csv] == [
        (c.baseline, c.outcome, round(c.difference, 9)) for c in direct]


# --- the command line over a directory of tables -------------------------------------------------------------------

def _table(path, rng, rows=90, with_id=False, text=False):
    header = (["id"] if with_id else []) + ["x1", "x2"] + (["colour"] if text else []) + ["label"]
    lines = [",".join(header)]
    for i in range(rows):
        y = int(rng.random() < 0.25)
        cells = ([str(i)] if with_id else []) + [f"{rng.normal() + 1.5 * y:.3f}", "?" if i % 17 == 0 else
                                                 f"{rng.normal():.3f}"]
        cells += [str(rng.choice(["red", "blue", "?"]))] if text else []
        lines.append(",".join(cells + [str(y)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_cli_suite_over_a_directory_writes_the_summary_and_rebuilds_it_from_folds(tmp_path, capsys):
    rng = np.random.default_rng(1)
    folder = tmp_path / "tables"
    folder.mkdir()
    _table(folder / "a.csv", rng, with_id=True)
    _table(folder / "b.csv", rng, text=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "ignored.csv").write_text("nothing", encoding="utf-8")
    out = tmp_path / "out"
    code = main(["experiment", "--data-dir", str(folder), "--drop-columns", "id", "--model", "slp,mlp",
                 "--losses", "bce,mse,wbce,focal,f1,myf=2*TP/(2*TP+FP+FN)", "--folds", "2", "--epochs", "3",
                 "--curve-points", "3", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    text = (out / "summary.md").read_text()
    assert "2 datasets (a, b); models: slp, mlp" in text and "| mlp | myf (myf) |" in text
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "validation_curves_mlp" / "b.png").exists()
    with open(out / "summary.csv", newline="") as handle:
        counts = list(csv.DictReader(handle))
    assert {r["baseline"] for r in counts} >= {"bce", "wbce+tuned", "best of (wbce, focal, bce+tuned)"}
    run_json = (out / "run_slp.json").read_text()
    assert '"entry": "myf=2*TP/(2*TP+FP+FN)"' in run_json
    again = tmp_path / "again"
    assert main(["experiment", "--summary-from", str(out), "--out", str(again), "-q"]) == 0
    assert sorted((again / "summary.csv").read_text().splitlines()) == sorted(
        (out / "summary.csv").read_text().splitlines())


def test_cli_threshold_tuned_shows_the_tuned_scores_in_the_main_tables(tmp_path, capsys):
    rng = np.random.default_rng(4)
    _table(tmp_path / "t.csv", rng, rows=80)
    out = tmp_path / "out"
    code = main(["experiment", "--data", str(tmp_path / "t.csv"), "--losses", "bce,f1", "--folds", "2", "--epochs", "3",
                 "--threshold", "tuned", "--curve-points", "0", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    assert "maximises each row's metric on the training fold" in (out / "scores_slp.md").read_text()
    with open(out / "folds_slp.csv", newline="") as handle:
        tuned = {(r["loss"], r["fold"]): float(r["value"]) for r in csv.DictReader(handle)
                 if r["rule"] == "tuned" and r["metric"] == "f1"}
    with open(out / "scores_slp.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["metric"] == "f1")
    assert float(row["bce"]) == pytest.approx(np.mean([tuned[("bce", "1")], tuned[("bce", "2")]]), abs=1e-6)
    assert "(the main tables' rule)" in (out / "summary.md").read_text().split("## Compiled loss at the tuned")[1]


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "{nowhere}"], "--data-dir: no such directory"),
    (["--data-dir", "{empty}"], "--data-dir: "),
    (["--data-dir", "{tables}", "--drop-columns", "nope"], "--drop-columns: no CSV file has column(s) nope"),
    (["--data-dir", "{tables}", "--losses", "bce,myf=2*TP/(TP+FX)"], "--losses: loss 'myf=2*TP/(TP+FX)': unknown"),
    (["--data-dir", "{tables}", "--losses", "bce,f1", "--param", "b=2"], "--param b: no name=expression"),
    (["--data", "{nolabel}"], "--data: "),
    (["--data-dir", "{tables}", "--losses", "bce,f1", "--as-baseline", "f2"], "--as-baseline: f2 is not in --losses"),
    (["--summary-from", "{empty}"], "--summary-from: no folds_*.csv files"),
])
def test_cli_suite_bad_input_exits_2_with_a_one_line_message(tmp_path, capsys, argv, message):
    rng = np.random.default_rng(2)
    (tmp_path / "tables").mkdir()
    (tmp_path / "empty").mkdir()
    _table(tmp_path / "tables" / "a.csv", rng)
    _table(tmp_path / "tables" / "b.csv", rng)
    (tmp_path / "nolabel.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    names = {"nowhere": tmp_path / "nowhere", "empty": tmp_path / "empty", "tables": tmp_path / "tables",
             "nolabel": tmp_path / "nolabel.csv"}
    argv = [arg.format(**names) for arg in argv]
    code = main(["experiment", *argv, "--folds", "2", "--epochs", "1", "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
