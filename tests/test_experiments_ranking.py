"""Ranking baselines and score metrics of the experiments: the WMW surrogates against brute-force double loops,
AUC-M against its formula worked by hand (and against LibAUC where it is installed), AUROC and average precision
rows against scikit-learn, and a tiny cross-validation run through the protocol."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

from metricc.experiments import datasets, evaluation, losses  # noqa: E402
from metricc.experiments.protocol import ExperimentConfig, run_dataset  # noqa: E402
from metricc.experiments.ranking import (  # noqa: E402
    AUCMarginLoss,
    PairwiseSigmoidLoss,
    PairwiseSquaredHingeLoss,
    ranking_loss,
)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def tiny_batch(n=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=generator, dtype=torch.float64) * 1.5
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0, 0][:n])
    return logits, labels


def brute_force_pairwise(logits, labels, pair_loss) -> float:
    """mean of pair_loss(z_i − z_j) over every (positive i, negative j), by a double loop over Python floats."""
    z, y = logits.tolist(), labels.tolist()
    total, count = 0.0, 0
    for zi, yi in zip(z, y):
        for zj, yj in zip(z, y):
            if yi == 1 and yj == 0:
                total += pair_loss(zi - zj)
                count += 1
    return total / count


# --- WMW surrogates -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_wmw_sigmoid_equals_the_double_loop_over_pairs(scale):
    logits, labels = tiny_batch()
    loss = PairwiseSigmoidLoss(scale=scale)(logits, labels)
    expected = brute_force_pairwise(logits, labels, lambda d: 1.0 / (1.0 + math.exp(scale * d)))
    assert loss.item() == pytest.approx(expected, rel=1e-13)
    z = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: PairwiseSigmoidLoss(scale=scale)(x, labels), (z,))


def test_wmw_sigmoid_draws_pairs_beyond_max_pairs_and_the_estimate_is_unbiased():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(400, generator=generator, dtype=torch.float64)
    labels = (torch.rand(400, generator=generator) < 0.3).long()
    exact = PairwiseSigmoidLoss()(logits, labels).item()  # 400 rows: about 34,000 pairs, all of them
    sampled = PairwiseSigmoidLoss(max_pairs=2000, seed=5)
    estimates = [sampled(logits, labels).item() for _ in range(50)]
    assert len(set(estimates)) == 50  # fresh pairs each call
    # the mean of 50 estimates of 2,000 pairs: standard error about 0.25/sqrt(100,000) < 1e-3
    assert np.mean(estimates) == pytest.approx(exact, abs=3e-3)
    again = PairwiseSigmoidLoss(max_pairs=2000, seed=5)
    assert again(logits, labels).item() == estimates[0]  # seeded: runs repeat


def test_wmw_hinge_sorted_equals_the_double_loop_with_ties_and_pairs_on_the_margin():
    logits = torch.tensor([0.3, 1.3, -0.2, 0.3, 2.0, -1.0, 0.8, 0.3, 1.3], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 0, 1, 0, 1, 0, 1])  # 2.0 − 1.0 = margin exactly; 0.3 tied across classes
    loss = PairwiseSquaredHingeLoss(margin=1.0)(logits, labels)
    expected = brute_force_pairwise(logits, labels, lambda d: max(0.0, 1.0 - d) ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("margin", [0.5, 2.0])
def test_wmw_hinge_gradient_equals_autograd_of_the_all_pairs_matrix(margin):
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(60, generator=generator, dtype=torch.float64)
    labels = (torch.rand(60, generator=generator) < 0.4).long()
    a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    PairwiseSquaredHingeLoss(margin=margin)(a, labels).backward()
    pairs = b[labels == 1].unsqueeze(1) - b[labels == 0].unsqueeze(0)
    torch.clamp(margin - pairs, min=0).pow(2).mean().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss_fn", [PairwiseSigmoidLoss(), PairwiseSquaredHingeLoss(), AUCMarginLoss()])
def test_a_batch_with_one_class_gives_no_nan(loss_fn):
    logits = torch.randn(6, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(logits, torch.zeros(6))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


# --- AUC-M ------------------------------------------------------------------------------------------------------

def test_auc_m_equals_its_formula_by_hand_and_steps_its_variables():
    logits = torch.tensor([0.0, math.log(3.0), math.log(1 / 3), -math.log(3.0), math.log(3.0)], dtype=torch.float64)
    labels = torch.tensor([1, 1, 0, 0, 0])
    # h = σ(z) = 0.5, 0.75 (positives); 0.25, 0.25, 0.75 (negatives)
    loss_fn = AUCMarginLoss(margin=1.0, step=0.1)
    loss_fn.a, loss_fn.b, loss_fn.alpha = 0.6, 0.2, 0.5
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, labels)
    positive_part = ((0.5 - 0.6) ** 2 + (0.75 - 0.6) ** 2) / 2  # 0.01625
    negative_part = ((0.25 - 0.2) ** 2 * 2 + (0.75 - 0.2) ** 2) / 3  # 0.10250
    margin_part = 2 * 0.5 * (1.0 - 0.625 + 1.25 / 3) - 0.25  # mean h: 0.625 and 0.41667
    assert loss.item() == pytest.approx(positive_part + negative_part + margin_part, rel=1e-14)
    loss.backward()
    h = torch.sigmoid(logits)
    slope = h * (1 - h)
    expected = torch.tensor([(2 * (0.5 - 0.6) - 2 * 0.5) / 2, (2 * (0.75 - 0.6) - 2 * 0.5) / 2,
                             (2 * (0.25 - 0.2) + 2 * 0.5) / 3, (2 * (0.25 - 0.2) + 2 * 0.5) / 3,
                             (2 * (0.75 - 0.2) + 2 * 0.5) / 3], dtype=torch.float64) * slope
    torch.testing.assert_close(z.grad, expected, rtol=1e-13, atol=0)
    # one descent step on a, b (∂F/∂a = −2(0.625 − a)), then PESG's projected ascent on α from the new a, b
    a = 0.6 + 0.2 * (0.625 - 0.6)
    b = 0.2 + 0.2 * (1.25 / 3 - 0.2)
    assert (loss_fn.a, loss_fn.b) == (pytest.approx(a, rel=1e-14), pytest.approx(b, rel=1e-14))
    assert loss_fn.alpha == pytest.approx(0.5 + 0.1 * (2 * (1.0 - a + b) - 2 * 0.5), rel=1e-14)
    with torch.no_grad():
        loss_fn(logits, labels)
    assert loss_fn.a == pytest.approx(a, rel=1e-14)  # evaluation leaves the variables alone


def test_auc_m_at_step_one_half_reaches_the_saddle_point_of_the_batch():
    """η = 1/2 moves a, b to the class means and α to max(0, m − gap): F is then the class variances plus the
    squared hinge on the mean gap, the objective the min-max form stands for."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(50, generator=generator, dtype=torch.float64)
    labels = (torch.rand(50, generator=generator) < 0.3).long()
    loss_fn = AUCMarginLoss(margin=0.8, step=0.5)
    loss_fn(logits.clone().requires_grad_(True), labels)
    value = loss_fn(logits.clone().requires_grad_(True), labels).item()
    h = torch.sigmoid(logits)
    hp, hn = h[labels == 1], h[labels == 0]
    saddle = hp.var(unbiased=False) + hn.var(unbiased=False) + max(0.0, 0.8 - float(hp.mean() - hn.mean())) ** 2
    assert value == pytest.approx(float(saddle), rel=1e-12)


def test_auc_m_agrees_with_libauc_where_it_is_installed_but_for_its_v2_margin_term():
    """LibAUC 2.0.1's AUCMLoss(version="v2") takes the mean of h·1[y=0] − E₊h over the whole batch in its margin
    term, i.e. E₋h·n₋/N where its docstring (and the paper) have E₋h: its value is ours less 2α·E₋h·n₊/N."""
    libauc_losses = pytest.importorskip("libauc.losses")
    logits, labels = tiny_batch(seed=4)
    ours = AUCMarginLoss(margin=0.7)
    ours.a, ours.b, ours.alpha = 0.55, 0.3, 0.4
    theirs = libauc_losses.AUCMLoss(margin=0.7, version="v2", device=torch.device("cpu"))
    with torch.no_grad():
        theirs.a.fill_(0.55)
        theirs.b.fill_(0.3)
        theirs.alpha.fill_(0.4)
        h = torch.sigmoid(logits)
        value = theirs(h.float().unsqueeze(1), labels.unsqueeze(1)).item()
        shortfall = 2 * 0.4 * h[labels == 0].mean().item() * (labels == 1).sum().item() / labels.numel()
        assert ours(logits, labels).item() == pytest.approx(value + shortfall, rel=1e-6)


# --- parsing ------------------------------------------------------------------------------------------------

def test_ranking_baselines_parse_with_options_and_target_auroc():
    specs = losses.parse_losses("wmw:scale=2,max_pairs=100,wmw-hinge:margin=0.5,auc-m:margin=0.8,step=0.2,bce")
    assert [s.kind for s in specs] == ["wmw", "wmw-hinge", "auc-m", "bce"]
    assert dict(specs[0].options) == {"scale": 2.0, "max_pairs": 100.0}
    assert dict(specs[2].options) == {"margin": 0.8, "step": 0.2}
    assert [s.target for s in specs] == ["auroc", "auroc", "auroc", None]
    assert {s.setting_key for s in specs} == {"bce"}
    built, threshold = losses.build_loss(specs[2], torch.tensor([0.0, 1.0]))
    assert isinstance(built, AUCMarginLoss) and (built.margin, built.step, threshold) == (0.8, 0.2, None)
    assert isinstance(ranking_loss("wmw", {"max_pairs": 100.0}), PairwiseSigmoidLoss)


@pytest.mark.parametrize("text", ["wmw:scale=0", "wmw:max_pairs=2.5", "auc-m:step=0.7", "wmw-hinge:margin=-1",
                                  "auc-m:gamma=1"])
def test_invalid_ranking_options_are_refused(text):
    with pytest.raises(losses.LossNameError, match=text.partition(":")[0]):
        losses.parse_losses(text)


# --- evaluation ---------------------------------------------------------------------------------------------

def test_score_rows_are_scikit_learns_metrics_of_the_logits():
    generator = np.random.default_rng(0)
    y = (generator.random(300) < 0.2).astype(int)
    logits = generator.normal(size=300) + y
    scores = evaluation.evaluate(y, (logits > 0).astype(int), ["f1", "auroc", "average_precision"], logits=logits)
    assert scores["auroc"] == roc_auc_score(y, logits)
    assert scores["average_precision"] == average_precision_score(y, logits)
    with pytest.raises(ValueError, match="needs logits"):
        evaluation.evaluate(y, y, ["auroc"])


def test_score_rows_rank_nan_lowest_keep_infinite_ties_and_are_nan_for_one_class():
    y = np.array([1, 0, 1, 0, 0, 1])
    logits = np.array([np.inf, 0.5, np.nan, -np.inf, 0.5, 2.0])
    finite = np.array([10.0, 0.5, -10.0, -10.0, 0.5, 2.0])  # the same order and ties (NaN ranks as −∞)
    for row, function in (("auroc", roc_auc_score), ("average_precision", average_precision_score)):
        assert evaluation.EVALUATORS[row].function(y, logits) == pytest.approx(function(y, finite), rel=1e-15)
        assert math.isnan(evaluation.EVALUATORS[row].function(np.zeros(6, int), finite))


def test_one_score_row_brings_the_other():
    assert evaluation.evaluation_rows(["auroc"])[-2:] == ["auroc", "average_precision"]
    assert "auroc" in evaluation.evaluation_rows(["average_precision"])
    assert "auroc" not in evaluation.evaluation_rows(["f1"])


def test_cross_validation_reports_auroc_and_average_precision_untuned():
    torch.set_num_threads(1)
    data = datasets.load_dataset("breast_cancer").subsample(200)
    specs = losses.parse_losses("bce,wmw,auc-m,auroc")
    config = ExperimentConfig(model="slp", folds=2, epochs=15, learning_rate=0.05, optimizer="adam",
                              curve_points=3)
    result = run_dataset(data, specs, config)
    assert result.rows[-2:] == ["auroc", "average_precision"]
    for fold in result.folds:
        assert fold.tuned["auroc"] == fold.scores["auroc"] and math.isnan(fold.tuned_thresholds["auroc"])
        assert 0.8 < fold.scores["auroc"] <= 1.0  # breast cancer ranks well after a few epochs, every loss
        assert len(fold.curve["average_precision"]) == 3


def test_ranking_summary_pairs_every_loss_with_every_baseline_on_both_score_metrics():
    from metricc.experiments.ranking_summary import report, tallies
    from metricc.experiments.summary import ScoreTable

    table = ScoreTable()
    folds = {"bce": [0.80, 0.82, 0.81], "wmw": [0.78, 0.80, 0.79], "auroc": [0.85, 0.86, 0.84]}
    for dataset, shift in (("a", 0.0), ("b", 0.05)):
        for loss, values in folds.items():
            kind = "compiled" if loss == "auroc" else loss
            for fold, value in enumerate(values):
                for metric in ("auroc", "average_precision"):
                    label = {"auroc": "AUROC", "average_precision": "average precision"}[metric]
                    table.add("slp", dataset, loss, kind, "auroc", "fixed", metric, fold, value + shift, True, label)
    found = tallies(table, "average_precision", "slp")
    assert set(found) == {("wmw", "bce"), ("auroc", "bce"), ("bce", "wmw"), ("auroc", "wmw")}
    assert (found[("auroc", "bce")]["wins"], found[("auroc", "bce")]["better"]) == (2, 2)
    assert found[("wmw", "bce")]["losses"] == 2  # 0.02 below in every fold: beyond one standard error (0)
    text = report(table)
    assert "SLP: average precision, mean over folds" in text and "| a | 0.810 | 0.790 | **0.850** |" in text
