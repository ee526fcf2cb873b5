"""The multipliers: their update rule, a toy problem whose optimum is known, the running estimate, checkpoints."""

import io
import pickle
import warnings

import pytest
import torch

import metricc

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def _batch(n, seed, separation=1.0):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=generator) < 0.4).double()
    logits = torch.randn(n, generator=generator, dtype=torch.float64) + separation * (2 * target - 1)
    return logits, target


def _precision(logits, target):
    return sklearn_metrics.precision_score(target.long().numpy(), (torch.sigmoid(logits) > 0.5).long().numpy())


def test_a_step_raises_each_multiplier_by_its_rate_times_the_slack_at_hard_predictions_and_clips_it():
    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.9", "FP/N <= 0.05"], multiplier_lr=0.3,
                                     multiplier_update="manual", max_multiplier=0.05)
    logits, target = _batch(80, 0)
    loss_fn(logits, target)
    assert torch.equal(loss_fn.multipliers, torch.zeros(2, dtype=torch.float64))  # manual: no step yet
    predicted = (torch.sigmoid(logits) > 0.5).long().numpy()
    (tn, fp), (fn, tp) = sklearn_metrics.confusion_matrix(target.long().numpy(), predicted)
    slacks = torch.tensor([0.9 - tp / (tp + fp), fp / (fp + tn) - 0.05], dtype=torch.float64)
    torch.testing.assert_close(loss_fn.violations, slacks, rtol=1e-12, atol=1e-12)
    used = loss_fn.step_multipliers()
    torch.testing.assert_close(used, slacks, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss_fn.multipliers, (0.3 * slacks).clamp(0, 0.05), rtol=1e-12, atol=0)


def test_auto_steps_after_every_training_call_not_in_eval_mode():
    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.99"], multiplier_lr=0.1)
    logits, target = _batch(50, 1)
    loss_fn.eval()
    loss_fn(logits, target)
    assert loss_fn.multipliers.item() == 0.0
    loss_fn.train()
    loss_fn(logits, target)
    first = loss_fn.multipliers.item()
    assert first == pytest.approx(0.1 * (0.99 - _precision(logits, target)), rel=1e-12)
    loss_fn(logits, target)
    assert loss_fn.multipliers.item() == pytest.approx(2 * first, rel=1e-12)


def test_a_manual_step_reads_every_call_since_the_last_one():
    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.95"], multiplier_update="manual",
                                     multiplier_lr=1.0)
    batches = [_batch(30, seed) for seed in (2, 3, 4)]
    for logits, target in batches:
        loss_fn(logits, target)
    loss_fn.step_multipliers()
    logits, target = (torch.cat(parts) for parts in zip(*batches))
    assert loss_fn.multipliers.item() == pytest.approx(0.95 - _precision(logits, target), rel=1e-12)


def test_a_row_undefined_at_hard_predictions_keeps_its_multiplier():
    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.9"], multiplier_update="manual")
    loss_fn.multipliers.fill_(0.7)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss_fn(torch.full((4,), -3.0), target)  # nothing predicted positive: precision is 0/0
    assert torch.isnan(loss_fn.constraint_values).all()
    loss_fn.step_multipliers()
    assert loss_fn.multipliers.item() == 0.7


def test_relaxed_rates_move_the_multipliers_by_the_soft_slack():
    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.99"], constraint_rates="relaxed",
                                     multiplier_lr=1.0)
    logits, target = _batch(40, 5)
    loss_fn(logits, target)
    expected = 0.99 - loss_fn.relaxed_constraint_values.item()
    assert loss_fn.multipliers.item() == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(0.99 - loss_fn.constraint_values.item())


def _threshold_problem():
    """Scores s with positives 3 higher; the model is a threshold b (logit 4·(s − b))."""
    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(400, generator=generator) < 0.3).double()
    scores = torch.randn(400, generator=generator, dtype=torch.float64) + 3.0 * target
    return scores, target


def _best_recall_at_precision(scores, target, level):
    """The largest recall of a threshold on the scores with precision ≥ level, by scanning every threshold."""
    best = 0.0
    for threshold in scores:
        predicted = scores >= threshold
        tp = (predicted & (target == 1)).sum().item()
        if tp / predicted.sum().item() >= level:
            best = max(best, tp / target.sum().item())
    return best


def test_the_multipliers_lead_a_threshold_model_to_the_known_optimum_of_recall_at_precision_090():
    """At the step size 0.5 the threshold keeps moving around the optimum (the last iterate depends on rounding),
    so the test reads what the experiments report: the best feasible iterate of the last 200 steps."""
    scores, target = _threshold_problem()
    optimum = _best_recall_at_precision(scores, target, 0.9)
    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.9"])  # defaults: eta 0.05, hard rates
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([b], lr=0.5)
    history, feasible = [], []
    for step in range(600):
        optimizer.zero_grad()
        loss_fn(4 * (scores - b), target).backward()
        optimizer.step()
        history.append(loss_fn.multipliers.item())
        predicted = scores > b.item()
        tp = (predicted & (target == 1)).sum().item()
        if step >= 400 and tp >= 0.9 * predicted.sum().item():
            feasible.append(tp / target.sum().item())
    assert len(feasible) >= 50  # the constraint holds at many iterates, not by chance once
    assert max(feasible) == pytest.approx(optimum, abs=1e-12)  # the optimum itself, not near it
    assert max(history[-100:]) - min(history[-100:]) < 0.01 and history[-1] > 0.5  # settled, and active


def test_the_running_estimate_gives_the_multipliers_the_rates_of_many_small_batches():
    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.9"], estimator="running", momentum=0.5,
                                     multiplier_update="manual")
    batches = [_batch(8, seed) for seed in (6, 7, 8)]
    rates, total = torch.zeros(4, dtype=torch.float64), 0.0
    for logits, target in batches:
        loss_fn(logits, target)
        predicted = (torch.sigmoid(logits) > 0.5).double()
        entries = torch.stack([(target * predicted).sum(), (target * (1 - predicted)).sum(),
                               ((1 - target) * predicted).sum(), ((1 - target) * (1 - predicted)).sum()])
        rates, total = 0.5 * rates + 0.5 * entries / 8, 0.5 * total + 0.5
    expected_precision = (rates[0] / (rates[0] + rates[2])).item()
    assert loss_fn.constraint_values.item() == pytest.approx(expected_precision, rel=1e-12)
    assert loss_fn.step_multipliers().item() == pytest.approx(0.9 - expected_precision, rel=1e-12)


def _train(loss_fn, steps, model_state=None, seed=9):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    if model_state is not None:
        model.load_state_dict(model_state)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(60, 3, generator=generator, dtype=torch.float64)
    y = (x[:, 0] + 0.3 * torch.randn(60, generator=generator, dtype=torch.float64) > 0.3).double()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(x).squeeze(-1), y).backward()
        optimizer.step()
    return model.state_dict()


def test_multipliers_are_saved_and_restored_with_the_state_dict_and_training_resumes_exactly():
    constraints = ["precision >= 0.95", "FP/N <= 0.02"]
    uninterrupted = metricc.compile_metric("recall", constraints=constraints, estimator="running")
    final = _train(uninterrupted, 20)
    first = metricc.compile_metric("recall", constraints=constraints, estimator="running")
    halfway = _train(first, 10)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    assert {"multipliers", "running_hard_rates", "pending_table"} <= set(first.state_dict())
    assert first.multipliers.abs().sum() > 0
    resumed = metricc.compile_metric("recall", constraints=constraints, estimator="running")
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    torch.testing.assert_close(resumed.multipliers, first.multipliers, rtol=0, atol=0)
    resumed_final = _train(resumed, 10, halfway)
    torch.testing.assert_close(resumed.multipliers, uninterrupted.multipliers, rtol=0, atol=0)
    for name, value in final.items():
        torch.testing.assert_close(resumed_final[name], value, rtol=0, atol=0)
    copy = pickle.loads(pickle.dumps(resumed))
    torch.testing.assert_close(copy.multipliers, resumed.multipliers, rtol=0, atol=0)
    assert copy.training and copy.estimator == "running"


@pytest.mark.parametrize("options, message", [
    (dict(multiplier_lr=0.0), "multiplier_lr must be a positive finite number"),
    (dict(max_multiplier=float("inf")), "max_multiplier must be a positive finite number"),
    (dict(multiplier_update="sometimes"), "multiplier_update must be one of"),
    (dict(constraint_rates="soft"), "constraint_rates must be one of"),
])
def test_bad_multiplier_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        metricc.compile_metric("recall", constraints=["precision >= 0.9"], **options)


def test_multiplier_options_without_constraints_are_refused():
    with pytest.raises(TypeError, match="only with constraints="):
        metricc.compile_metric("recall", multiplier_lr=0.1)


def test_numpy_option_values_reach_the_generated_module_as_plain_numbers():
    """Options are written into the module with repr(): np.float64(0.5) would not run there (issue 22)."""
    import numpy as np

    loss_fn = metricc.compile_metric("recall", constraints=["precision >= 0.9"], zero_division=np.float64(0.5),
                                     multiplier_lr=np.float32(0.25), momentum=np.float64(0.5), estimator="running",
                                     penalty=np.float64(1.0))
    assert "np." not in loss_fn.source and "numpy" not in loss_fn.source
    logits, target = _batch(16, 3)
    assert torch.isfinite(loss_fn(logits, target))
    assert (loss_fn.multiplier_lr, loss_fn.momentum, loss_fn.penalty) == (0.25, 0.5, 1.0)


@pytest.mark.parametrize("option", [dict(reduce="image"), dict(reduction="sum"), dict(ignore_index=255),
                                    dict(num_labels=3), dict(class_weights="inverse_square"), dict(average="macro")])
def test_options_of_other_tasks_are_refused_with_constraints_not_ignored(option):
    name = next(iter(option))
    with pytest.raises(ValueError, match=f"{name}= does not apply to a loss with constraints or groups"):
        metricc.compile_metric("recall", constraints=["precision >= 0.9"], **option)
