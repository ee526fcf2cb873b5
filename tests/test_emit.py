"""Generated code: closed-form backward against autograd and gradcheck; inputs; zero division; the source.

References come from tests/oracle.py: the metric from its catalog text, the relaxation from the papers'
parameters, autograd through the four direct sums. The tests name what they compile (a catalog name, a
relaxation spec, a direction) and give the same names to the oracle; nothing is read back from the loss.
"""

import ast
import warnings

import pytest
import torch

import metricc
from metricc.relax import ScoreOriented, Sigmoid

from .oracle import (
    ReferenceMetric,
    Relaxation,
    autograd_value_and_grad,
    catalog_direction,
    catalog_entries,
)

RELAXATIONS = ["anyloss", "sigmoid:L=30,threshold=0.4", "linear", "identity", "sol", "sol:distribution=cosine"]
CATALOG = sorted(catalog_entries())


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        yield


def batch(n=40, seed=0, positives=0.3, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=generator, dtype=dtype) * 1.5
    target = (torch.rand(n, generator=generator) < positives).long()
    target[0], target[1] = 1, 0  # both classes present
    return logits, target


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("name", CATALOG)
def test_closed_form_backward_equals_autograd_of_plain_composition(name, relaxation):
    loss_fn = metricc.compile_metric(name, relaxation=relaxation)
    seed = 1000 * CATALOG.index(name) + RELAXATIONS.index(relaxation)  # a constant per case
    logits, target = batch(seed=seed)
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, target)
    loss.backward()
    reference, expected = autograd_value_and_grad(ReferenceMetric(name), Relaxation.from_spec(relaxation),
                                                  catalog_direction(name), logits, target)
    assert loss.shape == () and loss.dtype == torch.float64
    torch.testing.assert_close(loss.detach(), reference, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z.grad, expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("name", CATALOG)
def test_gradcheck_on_generated_function(name, relaxation):
    loss_fn = metricc.compile_metric(name, relaxation=relaxation)
    logits, target = batch(n=9, seed=3)
    logits = logits / 3  # keep the steep amplifier within finite-difference reach
    z = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, target), (z,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("relaxation", ["anyloss", "linear", "sol", "sol:distribution=cosine"])
def test_a_single_threshold_other_than_the_relaxations_own_gets_its_slope(relaxation):
    """Found by the thorough profile of test_properties.py (1,000 expressions × every relaxation)."""
    loss_fn = metricc.compile_metric("accuracy", relaxation=relaxation, thresholds=[0.25])
    logits, target = torch.tensor([1.5409961082440433, -0.3], dtype=torch.float64), torch.tensor([1, 0])
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, target)
    loss.backward()
    reference, expected = autograd_value_and_grad(ReferenceMetric("accuracy"), Relaxation.from_spec(relaxation),
                                                  "maximize", logits, target, thresholds=[0.25])
    torch.testing.assert_close(loss.detach(), reference, rtol=1e-12, atol=0)
    torch.testing.assert_close(z.grad, expected, rtol=1e-8, atol=1e-300)


@pytest.mark.parametrize("parameter", [
    "value", "positive", "negative", "defined", "ops", "term", "denominator", "alpha",
])
def test_a_parameter_named_like_a_local_of_the_generated_code_keeps_its_value(parameter):
    """Found by the thorough profile of test_properties.py: TP + (TP + TP*value) with value = 0.5."""
    text = f"TP*(2 + {parameter}) - FP*{parameter}"
    loss_fn = metricc.compile_metric(text, params={parameter: 0.5}, check=False, direction="maximize",
                                     relaxation="identity")
    logits, target = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([1, 0])
    z = logits.clone().requires_grad_(True)
    loss = loss_fn(z, target)
    loss.backward()
    reference, expected = autograd_value_and_grad(ReferenceMetric(text, {parameter: 0.5}),
                                                  Relaxation.from_spec("identity"), "maximize", logits, target)
    torch.testing.assert_close(loss.detach(), reference, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("text", ["sqrt(TP*alpha)*(FN + 2*TP)", "sqrt(TP/alpha) - FN", "TP*log(alpha) + exp(alpha)*FN",
                                  "abs(alpha - 1)*TP - FP"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_term_of_parameters_alone_is_evaluated_on_every_path(text, dtype):
    """Found by test_properties.py: sympy's cse lifts sqrt(alpha) out of sqrt(TP*alpha) into its own line, which
    reached torch.sqrt as a Python float on the tensor path (a batch of one class, where the float path gives up)."""
    loss_fn = metricc.compile_metric(text, params={"alpha": 0.5}, check=False, direction="minimize",
                                     relaxation="identity")
    for target in (torch.tensor([1, 0, 1, 0]), torch.zeros(4, dtype=torch.long)):
        logits = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=dtype)
        z = logits.clone().requires_grad_(True)
        loss = loss_fn(z, target)
        loss.backward()
        reference, expected = autograd_value_and_grad(ReferenceMetric(text, {"alpha": 0.5}),
                                                      Relaxation.from_spec("identity"), "minimize",
                                                      logits.double(), target)
        torch.testing.assert_close(loss.detach().double(), reference, rtol=1e-5, atol=1e-6)
        if torch.isfinite(expected).all():  # sqrt(TP/alpha) at TP = 0 has no derivative: zero_division's case
            torch.testing.assert_close(z.grad.double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["f1", "mcc", "balanced_accuracy"])
def test_weights_and_thresholds_against_plain_composition(name):
    thresholds = [0.2, 0.35, 0.5, 0.65, 0.8]
    weight = torch.rand(64, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.1
    for spec in ("sigmoid:L=20", "linear", "sol:delta=0.2"):
        loss_fn = metricc.compile_metric(name, relaxation=spec, thresholds=thresholds)
        logits, target = batch(n=64, seed=5)
        z = logits.clone().requires_grad_(True)
        loss = loss_fn(z, target, weight)
        loss.backward()
        reference, expected = autograd_value_and_grad(ReferenceMetric(name), Relaxation.from_spec(spec), "maximize",
                                                      logits, target, weight, thresholds)
        torch.testing.assert_close(loss.detach(), reference, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(z.grad, expected, rtol=1e-8, atol=1e-12)


def test_many_thresholds_are_processed_in_chunks_without_changing_results(monkeypatch):
    loss_fn = metricc.compile_metric("f1", relaxation=Sigmoid(L=20.0), thresholds=[0.1 * k for k in range(1, 10)])
    logits, target = batch(n=1000, seed=7)
    z = logits.clone().requires_grad_(True)
    loss_fn(z, target).backward()
    monkeypatch.setattr(metricc.runtime, "CHUNK_ELEMENTS", 9 * 37)  # 37 rows per chunk, a ragged last chunk
    z_chunked = logits.clone().requires_grad_(True)
    loss_chunked = loss_fn(z_chunked, target)
    loss_chunked.backward()
    assert torch.allclose(z.grad, z_chunked.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factors", ["one each", "one per sample"])
def test_label_selection_is_exact_even_for_a_tiny_factor_beside_a_large_one(dtype, factors):
    """positive where y = 1 and negative where y = 0, bit for bit: negative + y·(positive − negative)
    would return 0 or 1e-7 for a positive factor of 1e-30 beside a negative one of -1."""
    select = metricc.runtime._select_by_label
    target = torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=dtype)
    positive, negative = torch.tensor([1e-30], dtype=dtype), torch.tensor([-1.0], dtype=dtype)
    if factors == "one per sample":  # the many-threshold path: one value per sample (not the CPU alpha path)
        positive, negative = positive.expand(7) * torch.arange(1, 8, dtype=dtype), negative.expand(7).clone()
    got = select(target, positive, negative, out=torch.full_like(target, float("nan")))
    assert torch.equal(got, torch.where(target == 1, positive, negative).expand_as(target))


def test_probabilities_input_and_n_by_1_shapes():
    loss_fn = metricc.compile_metric("f1", relaxation="linear", from_logits=False)
    logits, target = batch()
    p = torch.sigmoid(logits).unsqueeze(1).requires_grad_(True)
    loss = loss_fn(p, target.unsqueeze(1).float())
    loss.backward()
    reference, expected = autograd_value_and_grad(ReferenceMetric("f1"), Relaxation.from_spec("linear"), "maximize",
                                                  torch.sigmoid(logits), target, from_logits=False)
    assert p.grad.shape == (40, 1)
    torch.testing.assert_close(loss.detach(), reference, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p.grad[:, 0], expected, rtol=1e-8, atol=1e-12)


def test_minimized_metric_loss_is_the_metric_itself():
    loss_fn = metricc.compile_metric("error_rate", relaxation="identity")
    logits, target = batch()
    p = torch.sigmoid(logits)
    expected = ((target * (1 - p)).sum() + ((1 - target) * p).sum()) / len(p)
    assert torch.allclose(loss_fn(logits, target), expected)
    assert loss_fn.derivation.direction == "minimize" and "loss = error_rate" in loss_fn.source


@pytest.mark.parametrize("bad_target, message", [
    (torch.tensor([0, 1, 2, 1]), r"target must hold labels in \[0, 1\] \(0/1, or soft labels\), but target\[2\] = 2"),
    (torch.tensor([0.0, 1.0, -0.5, 1.0]), r"target\[2\] = -0.5"),
    (torch.tensor([0.0, 1.0, float("nan"), 1.0]), r"target\[2\] = nan"),
    (torch.tensor([0, 1, 1]), "input holds 4 samples but target holds 3"),
    (torch.zeros(4, 2), r"target must have shape \(N,\) or \(N, 1\)"),
])
def test_bad_targets_get_clear_errors(bad_target, message):
    loss_fn = metricc.compile_metric("f1")
    with pytest.raises(ValueError, match=message):
        loss_fn(torch.linspace(-1, 1, 4, dtype=torch.float64), bad_target)


def test_bad_inputs_get_clear_errors():
    loss_fn = metricc.compile_metric("f1")
    with pytest.raises(ValueError, match="batch is empty"):
        loss_fn(torch.zeros(0), torch.zeros(0))
    with pytest.raises(TypeError, match="floating-point"):
        loss_fn(torch.tensor([1, 0]), torch.tensor([1, 0]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        loss_fn([0.1, 0.2], torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="weight must be non-negative"):
        loss_fn(torch.zeros(2), torch.tensor([1, 0]), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="expects probabilities"):
        metricc.compile_metric("f1", from_logits=False)(torch.tensor([0.5, 1.5]), torch.tensor([1, 0]))


def test_target_dtypes_are_all_accepted():
    loss_fn = metricc.compile_metric("f1")
    logits, target = batch()
    expected = loss_fn(logits, target.double())
    for dtype in (torch.bool, torch.uint8, torch.int32, torch.int64, torch.float16, torch.float32):
        assert torch.allclose(loss_fn(logits, target.to(dtype)), expected)


def test_zero_division_policy():
    recall = metricc.compile_metric("recall")
    logits = torch.linspace(-2, 3, 6, dtype=torch.float64).requires_grad_(True)
    no_positives = torch.zeros(6)
    loss = recall(logits, no_positives)
    loss.backward()
    assert loss.item() == 1.0 and (logits.grad == 0).all()
    lenient = metricc.compile_metric("recall", zero_division=1.0)
    assert lenient(logits, no_positives).item() == 0.0
    raw = metricc.compile_metric("recall", zero_division=None)
    assert torch.isnan(raw(logits, no_positives))
    with pytest.raises(ValueError, match="zero_division"):
        metricc.compile_metric("recall", zero_division=float("nan"))


def test_saturated_sol_batch_has_the_hard_loss_and_no_gradient():
    gmean = metricc.compile_metric("gmean", relaxation=ScoreOriented(delta=0.1))
    logits = torch.tensor([-9.0, -8.0, 7.0, -7.5], dtype=torch.float64, requires_grad=True)
    loss = gmean(logits, torch.tensor([1, 1, 0, 0]))  # every ŷ is exactly 0 or 1: TP = 0, G-mean 0
    loss.backward()
    assert loss.item() == 1.0
    assert logits.grad.tolist() == [0.0] * 4  # the slope is exactly 0 outside [μ − δ, μ + δ]: the method


def test_gradient_does_not_vanish_where_the_sigmoid_saturates():
    loss_fn = metricc.compile_metric("f1")
    logits = torch.tensor([40.0, -40.0, 3.0, -3.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss_fn(logits, torch.tensor([0, 1, 1, 0])).backward()
    assert (logits.grad[:2].abs() > 0).all()  # σ(±40) rounds to 0/1 in float32, but σ(z)σ(−z) does not


def test_generated_source_imports_only_the_runtime_and_standalone_source_only_torch_and_math():
    for name, relaxation in zip(("f1", "fbeta", "mcc", "gmean", "f1", "mcc"), RELAXATIONS):  # every relaxation once
        loss_fn = metricc.compile_metric(name, relaxation=relaxation)
        tree = ast.parse(loss_fn.source)
        assert {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} == {"metricc.runtime"}
        assert not any(isinstance(node, ast.Import) for node in ast.walk(tree))
        tree = ast.parse(loss_fn.standalone_source())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported <= {"torch", "math", "warnings"}
        assert not any(isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("eval", "exec")
                       for node in ast.walk(tree))


def test_source_carries_metric_relaxation_parameters_and_derivation():
    loss_fn = metricc.compile_metric("fbeta", params={"beta": 2.0}, relaxation=Sigmoid(L=30.0, threshold=0.4))
    doc = loss_fn.module.__doc__
    for fragment in ("fbeta", "beta = 2", "L = 30", "t = 0.4", "∂f/∂TP", "1 - fbeta", "maximize"):
        assert fragment in doc
    assert loss_fn.module.METRIC_SOURCE == "(1 + beta**2)*TP/((1 + beta**2)*TP + beta**2*FN + FP)"
    assert "class FbetaLoss(MetricLoss)" in loss_fn.source
    assert "relaxation=SigmoidAmplifier(scale=30.0, threshold=0.4)" in loss_fn.source


def test_compile_is_cached_by_content():
    a, b = metricc.compile_metric("f1"), metricc.compile_metric("2*TP/(2*TP+FP+FN)", name="f1")
    assert a.module is metricc.compile_metric("f1").module
    assert a.source != b.source  # the written-as line differs ...
    assert a.module is not b.module  # ... so the modules differ too


def test_compiled_loss_pickles_and_deep_copies():
    import copy
    import pickle

    loss_fn = metricc.compile_metric("mcc", relaxation="linear")
    logits, target = batch()
    for clone in (pickle.loads(pickle.dumps(loss_fn)), copy.deepcopy(loss_fn)):
        assert torch.equal(clone(logits, target), loss_fn(logits, target))
        assert clone.source == loss_fn.source


def test_combines_with_other_losses_under_autograd():
    f1 = metricc.compile_metric("f1")
    logits, target = batch()
    z = logits.clone().requires_grad_(True)
    total = 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(z, target.double()) + 0.5 * f1(z, target)
    total.backward()
    z1, z2 = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    torch.nn.functional.binary_cross_entropy_with_logits(z1, target.double()).backward()
    f1(z2, target).backward()
    assert torch.allclose(z.grad, 0.5 * z1.grad + 0.5 * z2.grad)


def test_metric_names_land_in_code_as_identifiers_and_sources_as_reprs():
    loss_fn = metricc.compile_metric("TP/(TP + FN)", name="my_recall_2")
    assert "class MyRecall2Loss" in loss_fn.source
    assert "METRIC_SOURCE = 'TP/(TP + FN)'" in loss_fn.source
    with pytest.raises(metricc.MetricSyntaxError):
        metricc.compile_metric("f1", name='x"""; import os; """')


# min, max and abs differentiate to sign/Heaviside, which the float path takes with torch.sign's convention.
PIECEWISE_METRICS = ["min(TP/P, TN/N)", "max(TP/(TP+FP), 0.3) * TP/P", "1 - abs(FP/N - FN/P)"]


def _evaluations(loss_fn, table):
    """The runtime's two evaluations of one (4, C, T) table (one segment): Python floats and tensors."""
    plan = loss_fn.plan
    table = table.unsqueeze(1)  # (4, S = 1, C, T)
    floats = metricc.runtime._evaluate_floats(plan, table)
    if floats is not None and isinstance(floats[1], metricc.runtime.FloatFactors):  # one binary column
        floats = (floats[0], floats[1].tensor(floats[0]))
    return floats, metricc.runtime.evaluate(plan, table, allow_floats=False)


@pytest.mark.parametrize("name", CATALOG + PIECEWISE_METRICS)
def test_cpu_float_path_equals_the_tensor_path(name):
    """On CPU the loss and gradient factors of a few columns come from Python floats; elsewhere from tensors."""
    loss_fn = metricc.compile_metric(name, relaxation="linear", thresholds=[0.3, 0.5, 0.7], check=False,
                                     direction=None if name in CATALOG else "maximize")
    generator = torch.Generator().manual_seed(7)
    for _ in range(5):
        table = (torch.rand(4, 1, 3, generator=generator, dtype=torch.float64) * 40 + 0.5)
        floats, tensors = _evaluations(loss_fn, table)
        assert floats is not None
        for a, b in zip(floats, tensors):
            assert a.dtype == b.dtype and a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_cpu_float_path_leaves_undefined_batches_to_the_tensor_path():
    loss_fn = metricc.compile_metric("recall", check=False, zero_division=0.25)
    no_positives = torch.tensor([0.0, 0.0, 3.0, 7.0], dtype=torch.float64).view(4, 1, 1)  # TP, FN, FP, TN
    floats, _ = _evaluations(loss_fn, no_positives)
    assert floats is None
    loss, factors = metricc.runtime.evaluate(loss_fn.plan, no_positives.unsqueeze(1), allow_floats=True)
    assert loss.item() == 0.75 and (factors == 0).all()  # 1 - zero_division, no gradient


def test_cpu_float_path_takes_torch_sign_convention_at_ties():
    """At TP/P = TN/N, d min/d TP is Heaviside(0) = 1/2 on both paths (torch.sign(0) = 0)."""
    loss_fn = metricc.compile_metric("min(TP/P, TN/N)", relaxation="linear", check=False)
    tie = torch.tensor([5.0, 5.0, 50.0, 50.0], dtype=torch.float64).view(4, 1, 1)  # TP/P = TN/N = 0.5
    floats, tensors = _evaluations(loss_fn, tie)
    for a, b in zip(floats, tensors):
        torch.testing.assert_close(a, b, rtol=1e-15, atol=0)
    assert floats[1][0].item() != 0.0  # half of d(TP/P)/dTP, not a one-sided choice of zero


@pytest.mark.parametrize("name", ["f1", "mcc", "specificity", "gmean", "npv"])
@pytest.mark.parametrize("relaxation", ["anyloss", "linear", "identity", "sol"])
def test_sync_without_a_process_group_is_the_batch_loss_bit_for_bit(name, relaxation):
    """sync=True without a process group must change nothing: losses and gradients identical to sync=False, on
    mixed, single-class, saturated, weighted and float32 batches (both take the elementwise path)."""
    straight = metricc.compile_metric(name, relaxation=relaxation)
    general = metricc.compile_metric(name, relaxation=relaxation, sync=True)
    generator = torch.Generator().manual_seed(CATALOG.index(name))
    float64 = dict(dtype=torch.float64)
    batches = [(torch.randn(37, generator=generator, **float64) * 3, torch.rand(37, generator=generator) < 0.3, None),
               (torch.tensor([2.5, -40.0, 0.3], **float64), torch.tensor([1, 1, 1]), None),
               (torch.tensor([-1.0, 35.0], **float64), torch.tensor([0, 1]), torch.tensor([1e-3, 2.0], **float64)),
               (torch.randn(20, generator=generator) * 2, torch.rand(20, generator=generator) < 0.5, None)]
    for logits, target, weight in batches:
        results = []
        for loss_fn in (straight, general):
            z = logits.clone().requires_grad_(True)
            loss = loss_fn(z, target, weight)
            loss.backward()
            results.append((loss.detach(), z.grad))
        assert torch.equal(results[0][0], results[1][0]), (logits, target)
        assert torch.equal(results[0][1], results[1][1]), (logits, target)
