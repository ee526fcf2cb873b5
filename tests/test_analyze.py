"""The analysis of catalog metrics: every stated property is checked against sampled batches."""

import math
import time

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import metricc
from metricc.analyze import UNKNOWN, analyze
from metricc.catalog import catalog
from metricc.metric import CONFUSION_SYMBOLS

CATALOG = list(catalog())


def numeric(metric):
    return sympy.lambdify(CONFUSION_SYMBOLS, metric.bound_expr(), "math")


def safe(function, *cm):
    try:
        value = function(*cm)
    except (ZeroDivisionError, ValueError, OverflowError):
        return math.nan
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


@pytest.mark.parametrize("name", CATALOG)
def test_catalog_metrics_are_usable_and_their_direction_matches_the_catalog(name):
    report = analyze(name)
    assert report.ok, report.problem()
    assert report.direction == catalog()[name].direction
    assert report.homogeneous is True
    assert report.seconds < 5


@pytest.mark.parametrize("name", CATALOG)
def test_stated_range_and_direction_hold_on_sampled_batches(name):
    report = analyze(name)
    f = numeric(report.metric)
    rng = np.random.default_rng(0)
    lo, hi = report.range
    sign = 1 if report.direction == "maximize" else -1
    for _ in range(400):
        positives, negatives = rng.integers(0, 50, size=2)
        if positives + negatives == 0:
            continue
        tp, fp = rng.uniform(0, positives), rng.uniform(0, negatives)
        value = safe(f, tp, positives - tp, fp, negatives - fp)
        if math.isnan(value):
            continue
        if isinstance(lo, float):
            assert value >= lo - 1e-12
        if isinstance(hi, float):
            assert value <= hi + 1e-12
        # Along the batch: more TP (fewer FN) never hurts; more FP (fewer TN) never helps.
        step = 1e-3
        if tp + step <= positives:
            better = safe(f, tp + step, positives - tp - step, fp, negatives - fp)
            assert math.isnan(better) or sign * (better - value) >= -1e-12
        if fp + step <= negatives:
            worse = safe(f, tp, positives - tp, fp + step, negatives - fp - step)
            assert math.isnan(worse) or sign * (worse - value) <= 1e-12


@pytest.mark.parametrize("name", CATALOG)
def test_ranges_are_attained_where_stated(name):
    report = analyze(name)
    lo, hi = report.range
    seen_lo, seen_hi = report.observed_range
    if isinstance(lo, float):
        assert seen_lo == pytest.approx(lo, abs=1e-9)  # the bound is the true infimum, not a loose one
    if isinstance(hi, float):
        assert seen_hi == pytest.approx(hi, abs=1e-9)


@pytest.mark.parametrize("name", CATALOG)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_no_finite_difference_slope_exceeds_the_lipschitz_bound(name, data):
    report = analyze(name)
    if not isinstance(report.lipschitz, float):
        return  # no bound claimed (None: proved not to exist, checked elsewhere)
    f = numeric(report.metric)
    pi = report.min_prevalence
    prevalence = data.draw(st.floats(pi, 1 - pi))
    n = data.draw(st.integers(1, 10_000))
    positives, negatives = prevalence * n, (1 - prevalence) * n
    tp1, tp2 = (data.draw(st.floats(0, positives)) for _ in range(2))
    fp1, fp2 = (data.draw(st.floats(0, negatives)) for _ in range(2))
    distance = math.hypot((tp1 - tp2) / n, (fp1 - fp2) / n)
    if distance < 1e-9:
        return
    a = safe(f, tp1, positives - tp1, fp1, negatives - fp1)
    b = safe(f, tp2, positives - tp2, fp2, negatives - fp2)
    if math.isnan(a) or math.isnan(b):
        return
    assert abs(a - b) / distance <= report.lipschitz * (1 + 1e-9) + 1e-9


def test_lipschitz_bound_is_close_to_the_true_supremum_for_f1():
    report = analyze("f1")
    # sup |∇| is 2/π at TP = FP = 0 with prevalence π: F1's slope in TP/n there is 2/π.
    assert 2 / 0.01 <= report.lipschitz <= 1.1 * 2 / 0.01
    assert analyze("f1", min_prevalence=0.1).lipschitz < report.lipschitz


@pytest.mark.parametrize("name", ["precision", "gmean", "mcc", "fowlkes_mallows", "npv", "markedness"])
def test_metrics_with_singular_gradients_have_no_lipschitz_bound_and_warn(name):
    report = analyze(name)
    assert report.lipschitz is None
    assert any("Lipschitz" in warning for warning in report.warnings)
    with pytest.warns(metricc.NonLipschitzWarning):
        metricc.compile_metric(name)


def test_singularities_name_the_batches_that_cause_them():
    recall = analyze("recall").singularities
    assert any("TP + FN = 0 (batch without positives)" in line and "zero_division" in line for line in recall)
    precision = analyze("precision").singularities
    assert any("TP + FP = 0 (no predicted positives)" in line and "exactly 0 or 1" in line for line in precision)
    gmean = analyze("gmean").singularities
    assert any(line.startswith("root at 0: unbounded gradient when TP = 0") for line in gmean)
    assert any("kink" in line for line in analyze("min(TP/P, TN/N)").singularities)


def test_linear_fractional_class():
    for name in ("accuracy", "f1", "fbeta", "jaccard", "precision", "tversky"):
        assert analyze(name).linear_fractional is True, name
    for name in ("gmean", "mcc", "balanced_accuracy", "cohen_kappa"):
        assert analyze(name).linear_fractional is False, name


@pytest.mark.parametrize("text, problem", [
    ("(TP + TN)/(FP + FN)", "unbounded above"),
    ("TP*FN/n**2", "not monotone"),
    ("TP/n - FP/n*FN/n", None),
])
def test_metrics_that_cannot_serve_as_losses_are_refused(text, problem):
    report = analyze(text)
    if problem is None:
        return
    assert not report.ok and problem in report.problem()
    with pytest.raises(metricc.MetricCheckError, match=problem):
        metricc.compile_metric(text)
    metricc.compile_metric(text, check=False, direction="maximize")  # the user's call


def test_minimize_direction_and_negative_ranges():
    assert analyze("error_rate").direction == "minimize"
    assert analyze("fpr").monotone == {"TP": 0, "FP": 1}
    assert analyze("mcc").range == (-1.0, 1.0)
    assert analyze("cohen_kappa").range == (-1.0, 1.0)


def test_unprovable_claims_say_unknown_not_a_guess():
    report = analyze("TP/n + 1/(1 + exp(FP - TN))")  # depends on the batch size, not only on rates
    assert report.homogeneous is False
    assert report.lipschitz == UNKNOWN
    assert any("batch size" in warning for warning in report.warnings)


def test_analysis_of_hostile_but_valid_expressions_stays_within_budget():
    texts = ["(" * 40 + "TP/(TP+FN)" + ")" * 40,
             "+".join(f"sqrt(TP/(TP+{k}*FN))" for k in range(1, 30)),
             "(TP*TN - FP*FN)**7/((TP+FP)*(TP+FN)*(TN+FP)*(TN+FN))**(7/2)",
             "min(" + ", ".join(f"TP/(TP + {k}*FP + FN)" for k in range(1, 15)) + ")",
             "max(" + ", ".join(f"TP/(TP + {k}*FP + FN)" for k in range(1, 25)) + ")"]
    for text in texts:
        started = time.perf_counter()
        analyze(text)
        assert time.perf_counter() - started < 5.0, text


def test_report_renders_as_table_and_json():
    report = analyze("gmean")
    table = report.table()
    assert "direction" in table and "maximize" in table and "unbounded" in table
    data = report.to_dict()
    assert data["range"] == [0.0, 1.0] and data["lipschitz"] is None and data["ok"] is True
    import json

    assert json.loads(report.to_json())["metric"] == "gmean"


def test_compiled_loss_carries_its_report():
    loss_fn = metricc.compile_metric("f1")
    assert loss_fn.report.direction == "maximize" and loss_fn.report.range == (0.0, 1.0)
    assert metricc.compile_metric("f1", check=False).report is None


def test_bad_prevalence_is_refused():
    with pytest.raises(ValueError, match="min_prevalence"):
        analyze("f1", min_prevalence=0.6)
