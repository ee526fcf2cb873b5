"""The batches that break losses, as plain examples, for every catalog metric and every relaxation.

One class only, one or two samples, logits saturated both ways (±30, ±40, ±800), tiny weights, float32
and float64. The reference is the loss from the metric's text in 50-digit arithmetic, its gradient by
forward-mode differentiation in the same arithmetic (tests/oracle.py: nothing of metricc's parser,
derivation, emitter or runtime). Required accuracy (issue 12): float64 value and gradient within 1e-10
relative to the largest of the reference; float32 gradients non-zero wherever the float64 ones are.
Where the metric is undefined on a batch the reference is ``zero_division`` with a zero gradient.

Also here: NaN/inf propagation, half-precision inputs, soft labels, ``validate=False`` and device checks.
"""

import warnings

import pytest
import torch

import metricc

from .oracle import (
    ReferenceMetric,
    Relaxation,
    autograd_value_and_grad,
    catalog_direction,
    catalog_entries,
    mp_reference,
)

CATALOG = sorted(catalog_entries())
RELAXATIONS = ["anyloss", "sigmoid:L=30,threshold=0.4", "linear", "identity", "sol", "sol:distribution=cosine"]
RTOL = 1e-10  # issue 12: relative to the largest of the 50-digit reference
UNDERFLOW = 2.0 ** -990  # gradients this small are below what float64 can carry through a product of slopes
FLOAT32_RTOL = 1e-4  # float32 against its own 50-digit reference (rounding of the entries and factors)
FLOAT32_VISIBLE = 2.0 ** -100  # an exact gradient this large must not be 0 in float32 ...
FLOAT32_TINY = torch.finfo(torch.float32).tiny  # ... where the slope dŷ/dz itself is a float32 number


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def _batches():
    """(name, logits, target, weight): every logit is exact in float32, so both dtypes see the same numbers."""
    cases = []
    for label in (0, 1):  # one sample
        for z in (0.375, -1.25, 4.5, 30.0, -30.0, 40.0, -40.0, 800.0, -800.0):
            cases.append((f"n1_y{label}_z{z:g}", [z], [label], None))
    pairs = [(0.375, -1.25), (2.5, 0.0625), (30.0, -30.0), (40.0, 40.0), (-40.0, -40.0), (800.0, -800.0),
             (-800.0, 800.0), (30.0, 800.0)]
    for labels in ((1, 1), (0, 0), (1, 0)):  # one class only, and both: confidently right and wrong
        for pair in pairs:
            cases.append((f"n2_y{labels[0]}{labels[1]}_z{pair[0]:g},{pair[1]:g}", list(pair), list(labels), None))
    for labels, weight in (((1, 1), (1e-30, 1e-30)), ((1, 0), (1e-30, 1e-30)), ((1, 0), (2.0 ** -100, 1.0)),
                           ((0, 0), (1e-30, 3.0)), ((1, 0), (0.0, 1e-30)), ((0, 1), (1e-60, 1e-60))):
        cases.append((f"n2_y{labels[0]}{labels[1]}_w{weight[0]:g},{weight[1]:g}", [1.5, -0.75], list(labels),
                      list(weight)))
    return cases


BATCHES = _batches()


def _tensors(logits, target, weight, dtype):
    return (torch.tensor(logits, dtype=dtype), torch.tensor(target, dtype=dtype),
            None if weight is None else torch.tensor(weight, dtype=dtype))


def _run(loss_fn, logits, target, weight):
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, target, weight)
    loss.backward()
    return loss.detach(), z.grad


def _compile(name, spec, **options):
    return metricc.compile_metric(name, relaxation=spec, **options)


def _describe(name, spec, batch_name, logits, target, weight, dtype):
    return (f"metricc.compile_metric({name!r}, relaxation={spec!r})(torch.tensor({logits!r}, dtype={dtype}), "
            f"torch.tensor({target!r}), {None if weight is None else f'torch.tensor({weight!r})'})  [{batch_name}]")


@pytest.mark.parametrize("spec", RELAXATIONS)
@pytest.mark.parametrize("name", CATALOG)
def test_degenerate_batches_against_50_digit_arithmetic(name, spec):
    loss_fn = _compile(name, spec)
    metric, relaxation, direction = ReferenceMetric(name), Relaxation.from_spec(spec), catalog_direction(name)
    failures = []
    for batch_name, logits, target, weight in BATCHES:
        where = _describe(name, spec, batch_name, logits, target, weight, torch.float64)
        z64, y64, w64 = _tensors(logits, target, weight, torch.float64)
        reference = mp_reference(metric, relaxation, direction, z64, y64, w64)
        loss, grad = _run(loss_fn, z64, y64, w64)
        expected_grad = torch.tensor(reference.grad_floats(), dtype=torch.float64)
        scale = max([abs(reference.loss_float())] + [abs(float(v)) for v in reference.metric if v is not None])
        if not abs(loss.item() - reference.loss_float()) <= RTOL * scale + UNDERFLOW:
            failures.append(f"{where}: loss {loss.item()!r} != {reference.loss_float()!r}")
        largest = expected_grad.abs().max().item()
        error = (grad - expected_grad).abs().max().item()
        if not error <= RTOL * largest + UNDERFLOW:
            failures.append(f"{where}: gradient {grad.tolist()!r} != {expected_grad.tolist()!r}")

        # float32: the same numbers; its gradient must not vanish where float64's does not (unless the
        # slope dŷ/dz, a factor of every gradient, is itself below float32's range, as σ'(±40)·ŷ' can be).
        where = _describe(name, spec, batch_name, logits, target, weight, torch.float32)
        z32, y32, w32 = _tensors(logits, target, weight, torch.float32)
        loss32, grad32 = _run(loss_fn, z32, y32, w32)
        reference32 = mp_reference(metric, relaxation, direction, z32, y32, w32, dtype=torch.float32)
        expected32 = torch.tensor(reference32.grad_floats(), dtype=torch.float64)
        slopes = torch.tensor([float(s) for s in reference32.slopes], dtype=torch.float64)
        visible = (expected_grad.abs() >= FLOAT32_VISIBLE) & (expected32.abs() >= FLOAT32_VISIBLE) \
            & (slopes >= FLOAT32_TINY)
        if (grad32.double()[visible] == 0).any():
            failures.append(f"{where}: gradient {grad32.tolist()!r} is 0 where float64's is "
                            f"{expected_grad.tolist()!r}")
        scale32 = max([abs(reference32.loss_float())] + [abs(float(v)) for v in reference32.metric if v is not None])
        if not abs(loss32.item() - reference32.loss_float()) <= FLOAT32_RTOL * scale32 + 1e-30:
            failures.append(f"{where}: loss {loss32.item()!r} != {reference32.loss_float()!r}")
        if not (grad32.double() - expected32).abs().max().item() <= FLOAT32_RTOL * expected32.abs().max().item() \
                + 1e-30:
            failures.append(f"{where}: gradient {grad32.tolist()!r} != {expected32.tolist()!r}")
    assert not failures, f"{len(failures)} of {len(BATCHES)} batches differ:\n" + "\n".join(failures[:12])


# -- bugs the thorough profile found, kept as plain tests ----------------------------------------------------

@pytest.mark.parametrize("dtype, z", [(torch.float64, 40.0), (torch.float32, 30.0)])
@pytest.mark.parametrize("spec", ["sol", "sol:distribution=cosine"])
def test_score_oriented_gradient_at_saturated_logits(spec, dtype, z):
    loss_fn = _compile("accuracy", spec)
    logits, target = torch.tensor([z, -z], dtype=dtype), torch.tensor([1.0, 1.0], dtype=dtype)
    _, grad = _run(loss_fn, logits, target, None)
    reference = mp_reference(ReferenceMetric("accuracy"), Relaxation.from_spec(spec), "maximize", logits, target,
                             dtype=dtype)
    expected = torch.tensor(reference.grad_floats(), dtype=torch.float64)
    assert expected.abs().min() > 0
    torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=0)


def test_float32_gradient_is_not_nan_where_a_factor_overflows():
    """F1 with the raised-cosine SOL, one negative sample at z = −30 in float32: ŷ ≈ 5.4e-39, so the factor
    for positives (there are none) is 3.7e38; the negative's gradient is exactly 0, not NaN."""
    loss_fn = _compile("f1", "sol:distribution=cosine")
    loss, grad = _run(loss_fn, torch.tensor([-30.0]), torch.tensor([0.0]), None)
    assert loss.item() == 1.0
    assert grad.tolist() == [0.0]


@pytest.mark.parametrize("weight", [1e-100, 1e-160, 1e150])
def test_tiny_weights_keep_the_gradient_of_a_ratio_metric(weight):
    """A ratio metric is evaluated at the entries divided by their total (MetricDefinition.scale_invariant):
    without it, weights of 1e-100 underflow a squared product of entries and the gradient was silently 0."""
    logits, target = torch.tensor([1.5, -0.75], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    weights = torch.full((2,), weight, dtype=torch.float64)
    loss, grad = _run(_compile("cohen_kappa", "anyloss"), logits, target, weights)
    reference = mp_reference(ReferenceMetric("cohen_kappa"), Relaxation.from_spec("anyloss"), "maximize", logits,
                             target, weights)
    assert loss.item() == pytest.approx(reference.loss_float(), rel=1e-10)
    torch.testing.assert_close(grad, torch.tensor(reference.grad_floats(), dtype=torch.float64), rtol=1e-10, atol=0)


def test_large_weights_in_float32_multilabel_keep_mcc_finite_and_exact():
    """The tensor path: MCC's (TP+FP)(TP+FN)(TN+FP)(TN+FN) at weights of 1e15 is 1e60·..., beyond float32's
    3.4e38; at the rates it is not. The loss equals the loss with unit weights (MCC is scale-invariant)."""
    generator = torch.Generator().manual_seed(12)
    logits = torch.randn(40, 3, generator=generator)
    target = (torch.rand(40, 3, generator=generator) < 0.4).float()
    loss_fn = metricc.compile_metric("mcc", task="multilabel", num_classes=3)
    z_big, z_one = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    big = loss_fn(z_big, target, torch.full((40,), 1e15))
    one = loss_fn(z_one, target)
    big.backward()
    one.backward()
    torch.testing.assert_close(big, one, rtol=1e-5, atol=0)
    torch.testing.assert_close(z_big.grad, z_one.grad, rtol=1e-4, atol=1e-9)
    assert "scale_invariant=True" in loss_fn.source
    assert "scale_invariant" not in metricc.compile_metric("(TP + 1)/(TP + FN + 2)", check=False).source


# -- non-finite input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", RELAXATIONS)
def test_nan_in_the_input_or_non_finite_weights_make_the_loss_and_gradient_nan(spec, dtype):
    """As binary_cross_entropy_with_logits does, and as AMP's GradScaler needs to skip the step; zero_division
    is for metrics undefined on finite input, never a mask for NaN."""
    loss_fn = _compile("f1", spec)
    logits = torch.tensor([0.5, float("nan"), -1.0, 2.0], dtype=dtype)
    target = torch.tensor([1, 0, 1, 0])
    loss, grad = _run(loss_fn, logits, target, None)
    assert torch.isnan(loss)
    assert torch.isnan(grad[1])
    finite = torch.tensor([0.5, 0.25, -1.0, 2.0], dtype=dtype)
    for bad in (float("nan"), float("inf")):
        weight = torch.tensor([1.0, bad, 1.0, 1.0], dtype=dtype)
        loss, grad = _run(loss_fn, finite, target, weight)
        assert torch.isnan(loss), f"weight {bad}: loss {loss.item()}"
        assert torch.isnan(grad).all()


@pytest.mark.parametrize("bad", [float("inf"), -float("inf")])
def test_infinite_logits_make_the_loss_nan(bad):
    loss, grad = _run(_compile("f1", "anyloss"), torch.tensor([0.5, bad, -1.0], dtype=torch.float64),
                      torch.tensor([1, 0, 1]), None)
    assert torch.isnan(loss) and torch.isnan(grad[1])


# -- half precision, soft labels, validate=False, devices --------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("spec", RELAXATIONS)
def test_half_precision_input_computes_in_float32(spec, dtype):
    """The loss is float32 and equals the float32 loss of the same numbers; the gradient comes back in the
    input's dtype and is the float32 gradient rounded to it."""
    generator = torch.Generator().manual_seed(3)
    logits = (torch.randn(64, generator=generator) * 4).to(dtype)
    target = (torch.rand(64, generator=generator) < 0.3).float()
    for name in ("f1", "mcc", "specificity"):
        loss_fn = _compile(name, spec)
        loss, grad = _run(loss_fn, logits, target, None)
        loss32, grad32 = _run(loss_fn, logits.float(), target, None)
        assert loss.dtype == torch.float32 and grad.dtype == dtype
        assert torch.equal(loss, loss32)
        assert torch.equal(grad, grad32.to(dtype))
        assert (grad != 0).any()


def test_autocast_bfloat16_logits_train():
    generator = torch.Generator().manual_seed(4)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(32, 3, generator=generator), (torch.rand(32, generator=generator) < 0.4).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        assert logits.dtype == torch.bfloat16
        loss = _compile("f1", "anyloss")(logits, y)
    assert loss.dtype == torch.float32
    loss.backward()
    assert model.weight.grad.dtype == torch.float32 and torch.isfinite(model.weight.grad).all()
    assert model.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("spec", RELAXATIONS)
@pytest.mark.parametrize("name", ["f1", "mcc", "balanced_accuracy", "npv"])
def test_soft_labels_match_autograd_of_the_plain_formula(name, spec):
    """Label smoothing and distillation targets in [0, 1]: the entries are linear in y, so the per-sample
    gradient interpolates the two factors; against autograd of the four sums with the same soft labels."""
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(40, generator=generator, dtype=torch.float64) * 2
    for target in (torch.rand(40, generator=generator, dtype=torch.float64),  # distillation
                   torch.where(torch.rand(40, generator=generator) < 0.3, 0.9, 0.1).to(torch.float64)):  # smoothing
        loss, grad = _run(_compile(name, spec), logits, target, None)
        reference, expected = autograd_value_and_grad(ReferenceMetric(name), Relaxation.from_spec(spec),
                                                      catalog_direction(name), logits, target)
        torch.testing.assert_close(loss, reference, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-12)


def test_validate_false_skips_the_checks_and_changes_nothing_else():
    checked, unchecked = _compile("f1", "anyloss"), metricc.compile_metric("f1", validate=False)
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(30, generator=generator, dtype=torch.float64)
    target = (torch.rand(30, generator=generator) < 0.4).long()
    assert torch.equal(_run(checked, logits, target, None)[0], _run(unchecked, logits, target, None)[0])
    assert torch.equal(_run(checked, logits, target, None)[1], _run(unchecked, logits, target, None)[1])
    bad_target = torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match="target must hold labels"):
        checked(torch.zeros(4, dtype=torch.float64), bad_target)
    loss = unchecked(torch.zeros(4, dtype=torch.float64), bad_target)  # not checked: the user's responsibility
    assert loss.shape == ()
    negative_weight = torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="weight must be non-negative"):
        checked(torch.zeros(4, dtype=torch.float64), torch.tensor([0, 1, 1, 0]), negative_weight)
    unchecked(torch.zeros(4, dtype=torch.float64), torch.tensor([0, 1, 1, 0]), negative_weight)
    probabilities = metricc.compile_metric("f1", from_logits=False, validate=False)
    probabilities(torch.tensor([0.5, 1.5]), torch.tensor([1, 0]))


@pytest.mark.parametrize("what", ["target", "weight"])
def test_a_tensor_on_another_device_is_refused_with_what_to_do(what):
    """The meta device stands in for a GPU on machines without one; the message is the same."""
    loss_fn = _compile("f1", "anyloss")
    logits, target, weight = torch.zeros(3), torch.tensor([0, 1, 1]), torch.ones(3)
    if what == "target":
        target = target.to("meta")
    else:
        weight = weight.to("meta")
    with pytest.raises(ValueError, match=f"^{what} is on meta but input is on cpu; move it first$"):
        loss_fn(logits, target, weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_with_a_cpu_target_is_refused_and_cuda_matches_cpu():
    loss_fn = _compile("mcc", "anyloss")
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(100, generator=generator, dtype=torch.float64)
    target = (torch.rand(100, generator=generator) < 0.3).long()
    with pytest.raises(ValueError, match="target is on cpu but input is on cuda:0; move it first"):
        loss_fn(logits.cuda(), target)
    loss, grad = _run(loss_fn, logits.cuda(), target.cuda(), None)
    cpu_loss, cpu_grad = _run(loss_fn, logits, target, None)
    torch.testing.assert_close(loss.cpu(), cpu_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad.cpu(), cpu_grad, rtol=1e-10, atol=1e-300)
