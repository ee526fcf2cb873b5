"""The analysis of catalog metrics: every stated property is checked against sampled batches."""

import math
import time
import warnings

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import metricc
from metricc.analyze import UNKNOWN, analyze, analyze_metric
from metricc.catalog import catalog
from metricc.metric import CONFUSION_SYMBOLS, FP

CATALOG = [name for name, entry in catalog().items() if not entry.is_curve]  # curves: test_curves.py


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
    assert report.cpu_seconds < 5  # CPU time: the budget's clock, whatever else the machine runs


# Segmentation metrics as users write them: focal Tversky as issue 24 spells it (its root's argument
# 1 - TP/(TP + ...) is proved >= 0 over one common denominator) and Sudre et al.'s generalized Dice of
# the two classes of a binary segmentation (foreground and background weighted 1/support^2).
SEGMENTATION_TEXTS = [
    "1 - (1 - TP/(TP + 0.3*FP + 0.7*FN))**0.75",
    pytest.param("2*(TP/P**2 + TN/N**2)/((2*TP + FP + FN)/P**2 + (2*TN + FN + FP)/N**2)",
                 marks=pytest.mark.slow),  # 3-7 s: its Lipschitz bound
]


@pytest.mark.parametrize("text", SEGMENTATION_TEXTS)
def test_segmentation_metrics_as_written_have_proved_range_and_direction(text):
    report = analyze(text)
    assert report.ok, report.problem()
    assert report.range == (0.0, 1.0) and report.direction == "maximize"


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


# The seven: what the gate says about each, and what it proves.
SEVEN = [
    ("TP - FP", (None, None), ["unbounded above and below", "TP = t, FN = FP = TN = 0 as t → ∞",
                               "divide by n to make it a rate, as in (TP - FP)/n"]),
    ("TP", (0.0, None), ["unbounded above", "as in TP/n"]),
    ("TP/FP", (0.0, None), ["unbounded above", "FP = t as t → 0", "add a constant to the denominator"]),
    ("8/TP", (0.0, None), ["unbounded above", "TP = t, FN = FP = TN = 1 as t → 0",
                           "add a constant to the denominator"]),
    ("1/(TP-FP)", (None, None), ["division by TP - FP: TP - FP = 0 at TP = FN = FP = TN = 1, inside the domain",
                                 "divide by a sum of confusion entries", "unbounded above and below"]),
    ("1+3*((TP+2*FP+3*FN)/TN)", (1.0, None), ["unbounded above", "TN = t as t → 0"]),
    ("log(TP-FP)", (None, None), ["logarithm of TP - FP, which is negative (-1) at TP = FN = TN = 1, FP = 2",
                                  "take the logarithm of something non-negative"]),
]


@pytest.mark.parametrize("text, bounds, fragments", SEVEN, ids=[text for text, _, _ in SEVEN])
def test_the_gate_refuses_unbounded_metrics_and_poles_with_a_proof_and_a_fix(text, bounds, fragments):
    report = analyze(text)
    assert not report.ok
    assert report.range == bounds
    for side, bound in zip(("below", "above"), bounds):
        assert (side in report.divergence) == (bound is None)  # every unbounded end comes with its family
    message = report.problem()
    for fragment in fragments:
        assert fragment in message, message
    assert "time budget" not in message  # nothing ran out: the message says what was tried instead
    with pytest.raises(metricc.MetricCheckError) as info:
        metricc.compile_metric(text)
    assert fragments[0] in str(info.value) and "check=False" in str(info.value)


@pytest.mark.parametrize("text, fragment", [
    ("(TP-FP)/(TP-FP)*TP/P", "the expression as written divides by TP - FP (in (TP-FP)/(TP-FP), which "
                             "simplification removed): TP - FP = 0 at"),
    ("sqrt(TP/n - FP/n)**2", "takes a root or logarithm of TP - FP (in sqrt(TP/n - FP/n), which simplification "
                             "removed), which is negative"),
    ("sqrt(TP/n - FP/n)", "root of TP/(FN + FP + TN + TP) - FP/(FN + FP + TN + TP), which is negative"),
    ("TP/(TP - FP + FN)", "division by FN + TP - FP: FN + TP - FP = 0 at"),
    ("log(1/2 + TP/n - FP/n)", "logarithm of 1/2 + TP/(FN + FP + TN + TP) - FP/(FN + FP + TN + TP), which is "
                               "negative"),
])
def test_poles_and_invalid_arguments_inside_the_domain_are_refused_even_when_the_range_is_finite(text, fragment):
    report = analyze(text)
    assert not report.ok and report.domain_problems
    assert fragment in report.problem(), report.problem()


def test_a_logarithm_that_vanishes_only_on_a_face_is_refused_for_its_unbounded_range_not_as_a_pole():
    # 1 + TP/n - FP/n is (2*TP + FN + TN)/n over a common denominator: >= 0 everywhere, 0 only where every
    # sample is a false positive; the log then diverges toward that corner, which is what the gate says.
    report = analyze("log(1 + TP/n - FP/n)")
    assert not report.ok and not report.domain_problems
    assert report.range[0] is None and report.direction == "maximize"
    assert "unbounded below" in report.problem()


@pytest.mark.parametrize("text", ["TP/(TP + 1)", "1 + TP/P", "(FP/FP)*TP/(TP+FN)", "TP/P*exp(-FP/N)", "log(1 + TP/P)",
                                  "sqrt(TP/P)", "exp(-FP/N)", "TP/(TP + FN + 1)"])
def test_bounded_metrics_defined_except_on_faces_pass(text):
    report = analyze(text)
    assert report.ok, report.problem()
    assert all(isinstance(bound, float) for bound in report.range)


@pytest.mark.parametrize("text, bounds", [("min(TP/P, TN/N)", (0.0, 1.0)), ("max(TP/P, TN/N)/2", (0.0, 0.5)),
                                          ("abs(TP/P - TN/N)", (0.0, 1.0)), ("1 - abs(TP/P - TN/N)", (0.0, 1.0))])
def test_ranges_through_min_max_and_abs_are_proved_term_by_term(text, bounds):
    # hi − min(a, b) ≥ 0 because hi − a ≥ 0; hi − |x| ≥ 0 because hi − x and hi + x are.
    assert analyze(text).range == bounds


def test_the_gate_gives_the_same_verdicts_outside_the_main_thread():
    import threading

    analyze_metric.cache_clear()
    verdicts = {}
    thread = threading.Thread(target=lambda: verdicts.update({name: analyze(name).ok for name in ("mcc", "8/TP")}))
    thread.start()
    thread.join()
    analyze_metric.cache_clear()
    assert verdicts == {"mcc": True, "8/TP": False}


def test_parameter_values_that_divide_by_zero_everywhere_are_refused_not_crashed_on():
    metric = metricc.parse(metricc.parse("TP/P/(alpha - beta)", {"alpha": 1.0, "beta": 0.5}), {"alpha": 0.5})
    report = analyze(metric)  # the parser refuses this text with these values; a Metric can still carry them
    assert not report.ok and "divides by zero on every batch" in report.problem()


def test_faces_where_zero_division_applies_do_not_block():
    # recall is undefined at P = 0, a face of the domain: zero_division handles it.
    report = analyze("recall")
    assert report.ok and report.zero_division_batches == ["TP + FN = 0 (batch without positives)"]


def test_sign_changes_are_witnessed_only_where_the_metric_is_defined():
    # d/dTP log(TP - FP) = 1/(TP - FP) is negative at TP < FP, where the metric has no value.
    assert analyze("log(TP-FP)").direction != "neither"


def test_monotonicity_of_a_count_metric_is_proved_at_every_batch_size_not_only_n_1():
    # Increasing in TP while TP < 1 (every batch with n = 1), decreasing beyond.
    report = analyze("TP/(1 + TP**2)")
    assert report.direction == "neither" and not report.ok


def test_unknown_says_what_was_tried_and_names_the_time_budget_only_when_it_ran_out():
    analyze_metric.cache_clear()
    plenty = analyze("TP/(1 + TP**2)")
    unknown = next(p for p in plenty.problems if p.startswith("could not prove an upper bound"))
    assert "a sign proof of hi − f ≥ 0 with hi = 0.5 (inconclusive)" in unknown
    assert "not applicable: f depends on the batch size" in unknown and "time budget" not in unknown
    analyze_metric.cache_clear()
    sympy.core.cache.clear_cache()  # the first analysis's cached sympy results would let this one finish in time
    starved = analyze("TP/(1 + TP**2)", seconds=0.005)
    assert any("not proved within the time budget" in p for p in starved.problems)
    assert "cut short by the time budget" in starved.problem()
    analyze_metric.cache_clear()


def test_the_report_says_what_simplification_changed_in_the_written_domain():
    report = analyze("(FP/FP)*TP/(TP+FN)")
    expected = "simplified FP/FP: the metric is undefined where FP = 0, which the generated loss keeps"
    assert any(line.startswith(expected) for line in report.singularities)
    assert any(expected in warning for warning in report.warnings)
    assert report.ok and report.metric.domain == (FP,)
    with pytest.warns(metricc.DomainWarning, match="simplified FP/FP"):
        report.warn()


def test_each_kind_of_finding_warns_with_its_own_class():
    assert issubclass(metricc.RangeWarning, metricc.MetricWarning)
    assert issubclass(metricc.BatchSizeWarning, metricc.MetricWarning)
    assert issubclass(metricc.DomainWarning, metricc.MetricWarning)
    cases = [("gmean", metricc.NonLipschitzWarning), ("TP/(TP + 1)", metricc.BatchSizeWarning),
             ("1 + TP/P", metricc.RangeWarning), ("(FP/FP)*TP/(TP+FN)", metricc.DomainWarning)]
    for text, category in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            analyze(text).warn(zero_division=0.0)
        classes = {type(w.message) for w in caught}
        assert classes == {category}, (text, classes)
    # Only Lipschitz findings are NonLipschitzWarnings: filtering them leaves the others.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", metricc.NonLipschitzWarning)
        analyze("TP/(TP + 1)").warn()
        analyze("gmean").warn()
    assert [type(w.message) for w in caught] == [metricc.BatchSizeWarning]


def test_a_zero_division_outside_the_range_warns_only_when_it_is_outside():
    report = analyze("1 + TP/P")  # range [1, 2], undefined without positives
    assert report.range == (1.0, 2.0)
    with pytest.warns(metricc.RangeWarning, match=r"zero_division=0.0 lies outside .*pass zero_division=1.0"):
        report.warn(zero_division=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.warn(zero_division=1.5)
        report.warn()  # without the loss's zero_division there is nothing to compare
        analyze("recall").warn(zero_division=0.0)
    assert any("zero_division=0.0 lies outside" in w for w in report.warnings)  # the report shows the default's


def test_the_refusal_carries_its_options_as_data_for_each_interface():
    error = analyze("8/TP").error()
    assert isinstance(error, metricc.MetricCheckError) and error.report is not None
    assert "pass check=False to compile it anyway" in str(error)
    assert "pass --no-check" in error.render(lambda option: "--no-check" if option.name == "check" else "?")
    assert analyze("f1").error() is None
    unproved = analyze("TP/n + 1/(1 + exp(FP - TN))")
    if unproved.direction == UNKNOWN:
        assert "direction='maximize' or direction='minimize'" in unproved.problem()


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
        started = time.process_time()
        analyze(text)
        assert time.process_time() - started < 5.0, text


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


def test_the_penalty_form_of_a_constraint_compiles_with_its_range_and_direction():
    # recall - 10*max(0.9 - precision, 0): the derivative of precision along a batch is -FP/PP**2 only over
    # a common denominator; with it the sign structure proves the direction and the corner limits the range.
    report = analyze("TP/P - 10*max(0.9 - TP/(TP+FP), 0)")
    assert report.ok and report.direction == "maximize" and report.range == (-9.0, 1.0)
