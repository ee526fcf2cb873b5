"""The running estimator: the metric of a running estimate of the confusion entries across steps.

The reference is written here from its definition (an exponential moving average of the entries as rates,
debiased, evaluated at the current batch's size, with the gradient factors of the estimate applied to the
current batch's samples), with autograd through the plain F1 formula for the factors.
"""

import io
import warnings

import pytest
import torch

import metricc


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def batches(count, n=16, seed=0, prevalence=0.2, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(n + k % 3, generator=generator, dtype=dtype),
             (torch.rand(n + k % 3, generator=generator) < prevalence).to(dtype)) for k in range(count)]


def f1(tp, fn, fp, tn):
    return 2 * tp / (2 * tp + fp + fn)


def soft_entries(z, y):
    a = 73.0 * (torch.sigmoid(z) - 0.5)
    yhat, complement = torch.sigmoid(a), torch.sigmoid(-a)
    return torch.stack([(y * yhat).sum(), (y * complement).sum(), ((1 - y) * yhat).sum(),
                        ((1 - y) * complement).sum()])


def reference_steps(steps, momentum):
    """(loss, gradient) per step: f1 at the debiased moving average of the rates, scaled to the batch's size;
    the gradient is the factors there times the batch's own soft entries' Jacobian."""
    rates, total, results = torch.zeros(4, dtype=torch.float64), 0.0, []
    for z, y in steps:
        z = z.clone().requires_grad_(True)
        entries = soft_entries(z, y)
        size = float(len(y))
        rates = momentum * rates + (1 - momentum) * entries.detach() / size
        total = momentum * total + (1 - momentum)
        estimate = (rates / total * size).requires_grad_(True)
        loss = 1 - f1(*estimate)
        (factors,) = torch.autograd.grad(loss, estimate)
        (grad,) = torch.autograd.grad(entries, z, grad_outputs=factors)
        results.append((loss.detach(), grad))
    return results


@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_running_loss_and_gradient_follow_the_definition(momentum):
    steps = batches(5)
    loss_fn = metricc.compile_metric("f1", estimator="running", momentum=momentum)
    for (z, y), (expected_loss, expected_grad) in zip(steps, reference_steps(steps, momentum)):
        z = z.clone().requires_grad_(True)
        loss = loss_fn(z, y)
        loss.backward()
        torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(z.grad, expected_grad, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("options", [{}, {"thresholds": [0.3, 0.5, 0.7], "relaxation": "linear"},
                                     {"task": "multiclass", "num_classes": 3}])
def test_momentum_zero_is_the_batch_estimator_exactly(options):
    running = metricc.compile_metric("mcc", estimator="running", momentum=0.0, **options)
    batch = metricc.compile_metric("mcc", **options)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        if options.get("task") == "multiclass":
            z, y = torch.randn(12, 3, generator=generator, dtype=torch.float64), torch.randint(0, 3, (12,))
        else:
            z, y = torch.randn(12, generator=generator, dtype=torch.float64), torch.tensor([1, 0] * 6)
        weight = torch.rand(12, generator=generator, dtype=torch.float64) + 0.5
        a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        la, lb = running(a, y, weight), batch(b, y, weight)
        la.backward()
        lb.backward()
        assert torch.equal(la, lb) and torch.equal(a.grad, b.grad)


def test_a_checkpoint_restored_mid_training_gives_the_same_next_step():
    """The running state lives in buffers: it checkpoints with state_dict and the next step is identical."""
    torch.manual_seed(0)
    steps = batches(6, seed=2)
    model = torch.nn.Linear(1, 1).double()
    loss_fn = metricc.compile_metric("f1", estimator="running", momentum=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def step(model, loss_fn, optimizer, z, y):
        optimizer.zero_grad()
        loss = loss_fn(model(z.unsqueeze(1)).squeeze(1), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for z, y in steps[:3]:
        step(model, loss_fn, optimizer, z, y)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict()},
               buffer)
    # running_metric: the fingerprint of the metric the rates belong to (issue 22: load_state_dict checks it)
    assert set(loss_fn.state_dict()) == {"running_rates", "running_weight", "running_metric"}
    expected = [step(model, loss_fn, optimizer, z, y) for z, y in steps[3:]]
    buffer.seek(0)
    saved = torch.load(buffer)
    restored_model = torch.nn.Linear(1, 1).double()
    restored_model.load_state_dict(saved["model"])
    restored_loss = metricc.compile_metric("f1", estimator="running", momentum=0.9)
    restored_loss.load_state_dict(saved["loss"])
    restored_optimizer = torch.optim.SGD(restored_model.parameters(), lr=0.5)
    restored_optimizer.load_state_dict(saved["optimizer"])
    got = [step(restored_model, restored_loss, restored_optimizer, z, y) for z, y in steps[3:]]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert all(torch.equal(a, b) for a, b in zip(restored_model.parameters(), model.parameters()))


def test_eval_mode_uses_the_batch_alone_and_updates_nothing_and_reset_forgets():
    steps = batches(3, seed=3)
    loss_fn = metricc.compile_metric("f1", estimator="running", momentum=0.9)
    for z, y in steps[:2]:
        loss_fn(z, y)
    state = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    loss_fn.eval()
    z, y = steps[2]
    assert torch.equal(loss_fn(z, y), metricc.compile_metric("f1")(z, y))
    assert all(torch.equal(v, loss_fn.state_dict()[k]) for k, v in state.items())
    loss_fn.train()
    loss_fn.reset()
    assert not loss_fn.running_rates.any() and loss_fn.running_weight.item() == 0
    assert torch.equal(loss_fn(z, y), metricc.compile_metric("f1")(z, y))  # debiased: the first step is the batch


def test_batches_without_positives_still_get_a_gradient_from_the_estimate():
    """At batch 16 and 5 % prevalence most batches hold no positive: balanced accuracy is undefined on them (no
    gradient from the batch estimator), but defined at the running estimate once a positive has been seen."""
    running = metricc.compile_metric("balanced_accuracy", estimator="running", momentum=0.9)
    batch = metricc.compile_metric("balanced_accuracy")
    running(torch.randn(16, dtype=torch.float64), torch.tensor([1.0] + [0.0] * 15))
    z = torch.randn(16, dtype=torch.float64)
    a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    running(a, torch.zeros(16)).backward()
    batch(b, torch.zeros(16)).backward()
    assert (b.grad == 0).all()
    assert (a.grad != 0).any()


def test_compile_true_equals_eager_and_keeps_the_same_state():
    steps = batches(4, seed=4)
    compiled = metricc.compile_metric("f1", estimator="running", momentum=0.9, compile=True)
    eager = metricc.compile_metric("f1", estimator="running", momentum=0.9)
    for z, y in steps:
        a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        la, lb = compiled(a, y), eager(b, y)
        la.backward()
        lb.backward()
        torch.testing.assert_close(la, lb, rtol=1e-12, atol=0)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(compiled.running_rates, eager.running_rates, rtol=1e-12, atol=0)


def test_the_estimate_accumulates_in_float64_whatever_the_input_dtype():
    loss_fn = metricc.compile_metric("f1", estimator="running", momentum=0.9)
    for z, y in batches(3, seed=5, dtype=torch.float32):
        loss = loss_fn(z, y)
        assert loss.dtype == torch.float32
    assert loss_fn.running_rates.dtype == torch.float64


@pytest.mark.parametrize("momentum, message", [(1.0, r"\[0, 1\)"), (-0.1, r"\[0, 1\)"), (True, r"\[0, 1\)")])
def test_bad_momentum_and_estimator(momentum, message):
    with pytest.raises(ValueError, match=message):
        metricc.compile_metric("f1", estimator="running", momentum=momentum)
    with pytest.raises(ValueError, match="estimator must be one of"):
        metricc.compile_metric("f1", estimator="moving")


@pytest.mark.parametrize("options", [{}, {"task": "multilabel", "num_classes": 2}])
def test_a_batch_without_weight_leaves_the_estimate_and_gets_zero_division(options):
    """Every weight 0 (a masked-out batch): no rates to mix in. The estimate stays as it was (it used to
    become NaN for good), the loss is the metric's zero_division value with no gradient, as with the batch
    estimator, and the next batch continues from the estimate."""
    loss_fn = metricc.compile_metric("f1", estimator="running", momentum=0.9, **options)
    reference = metricc.compile_metric("f1", estimator="running", momentum=0.9, **options)
    generator = torch.Generator().manual_seed(7)
    shape = (16,) if not options else (16, 2)
    steps = [(torch.randn(*shape, generator=generator, dtype=torch.float64),
              (torch.rand(*shape, generator=generator) < 0.4).double()) for _ in range(3)]
    for z, y in steps[:2]:
        loss_fn(z, y)
        reference(z, y)
    before = loss_fn.running_rates.clone(), loss_fn.running_weight.clone()
    z = steps[2][0].clone().requires_grad_(True)
    loss = loss_fn(z, steps[2][1], torch.zeros(16, dtype=torch.float64))
    loss.backward()
    assert loss.item() == 1.0 and (z.grad == 0).all()
    assert torch.equal(loss_fn.running_rates, before[0]) and torch.equal(loss_fn.running_weight, before[1])
    torch.testing.assert_close(loss_fn(*steps[2]), reference(*steps[2]), rtol=1e-12, atol=0)
