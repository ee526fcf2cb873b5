"""The generated loss under the real torch.compile, and the compile=True option's fallback.

Every test here that claims torch.compile runs it for real and checks that it did: a graph was compiled
(torch._dynamo's counters) and no CompileFallbackWarning says eager code ran instead. The one exception
is the fallback test, which replaces torch.compile by a stub that fails, on purpose. torch.compile costs
seconds per graph, so the full matrix of compiled paths is marked ``slow`` (``-m slow``, or
``METRICC_PROFILE=thorough``); two of its cases, one per branch of the runtime, run by default.
"""

import contextlib
import warnings

import pytest
import torch

import metricc

# The analysis's findings (no finite Lipschitz bound for MCC, ...) are not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore::metricc.errors.NonLipschitzWarning")


@contextlib.contextmanager
def really_compiled(minimum_graphs=1):
    """Fail if torch.compile falls back to eager code or compiles nothing inside the block."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        warnings.simplefilter("error", metricc.CompileFallbackWarning)
        yield
    assert counters["stats"]["unique_graphs"] >= minimum_graphs, dict(counters["stats"])


def batch(n=257, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=generator) < 0.2).double()
    return torch.randn(n, generator=generator, dtype=torch.float64), target


@pytest.mark.slow
def test_fullgraph_torch_compile_of_a_mixed_objective_matches_eager():
    f1 = metricc.compile_metric("f1", thresholds=[0.3, 0.5, 0.7], relaxation=metricc.Sigmoid(L=20.0))

    def objective(logits, target):
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        return 0.5 * bce + 0.5 * f1.function(logits, target)

    compiled = torch.compile(objective, fullgraph=True, dynamic=False)
    logits, target = batch()
    z_compiled, z_eager = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    with really_compiled():
        loss_compiled = compiled(z_compiled, target)
        loss_compiled.backward()
    loss_eager = objective(z_eager, target)
    loss_eager.backward()
    assert torch.allclose(loss_compiled, loss_eager, rtol=1e-12)
    assert torch.allclose(z_compiled.grad, z_eager.grad, rtol=1e-10, atol=1e-14)


_BY_DEFAULT = {("anyloss", True, None), ("linear", True, (0.2, 0.5, 0.7))}  # one case per branch of the runtime
_FUSED_CASES = [pytest.param(relaxation, from_logits, thresholds,
                             marks=() if (relaxation, from_logits, thresholds) in _BY_DEFAULT else pytest.mark.slow,
                             id=f"{relaxation}-{'logits' if from_logits else 'probabilities'}-"
                                f"{'one_threshold' if thresholds is None else 'three_thresholds'}")
                for relaxation, from_logits in [("anyloss", True), ("anyloss", False), ("linear", True), ("sol", True)]
                for thresholds in (None, (0.2, 0.5, 0.7))]


@pytest.mark.parametrize("relaxation, from_logits, thresholds", _FUSED_CASES)
def test_the_fused_code_that_torch_compile_runs_equals_the_eager_code(relaxation, from_logits, thresholds):
    """Under torch.compile the statistics and the backward take their own paths: exponential-sparing,
    and for several thresholds one fused loop instead of blocks and matrix products."""
    loss_fn = metricc.compile_metric("f1", relaxation=relaxation, from_logits=from_logits, thresholds=thresholds,
                                     check=False)
    thresholds = list(thresholds) if thresholds else None
    logits, target = batch(seed=1)
    weight = torch.rand(logits.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.5
    if from_logits:
        logits[:6] = torch.tensor([-800.0, -100.0, -30.0, 30.0, 100.0, 800.0])  # where σ saturates
    else:
        logits = torch.sigmoid(logits)
    compiled = torch.compile(loss_fn.function, fullgraph=True, dynamic=False)
    z_compiled, z_eager = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    with really_compiled():
        loss_compiled = compiled(z_compiled, target, weight if thresholds else None, from_logits=from_logits)
        loss_compiled.backward()
    loss_eager = loss_fn(z_eager, target, weight if thresholds else None)
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-12, atol=0)
    loss_eager.backward()
    assert torch.isfinite(z_compiled.grad).all()
    torch.testing.assert_close(z_compiled.grad, z_eager.grad, rtol=1e-10, atol=1e-300)
    if from_logits and relaxation == "anyloss":
        assert (z_compiled.grad[1:5] != 0).all()  # σ(z)·σ(−z) computed without 1 − σ(z)


def test_compile_option_falls_back_to_eager_with_a_warning_when_the_compiler_fails_stub(monkeypatch):
    """The one test with a fake torch.compile: a stub that fails as a missing C++ toolchain would."""

    def broken_compile(function, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    loss_fn = metricc.compile_metric("mcc", compile=True)
    logits, target = batch()
    with pytest.warns(metricc.CompileFallbackWarning, match="no C\\+\\+ compiler"):
        value = loss_fn(logits, target)
    assert torch.equal(value, metricc.compile_metric("mcc")(logits, target))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(logits, target)  # once fallen back, no more warnings


def test_compile_option_really_compiles_matches_eager_and_refuses_bad_targets():
    """compile=True runs the loss through the real torch.compile (a graph is compiled, no fallback), gives
    the eager loss and gradient, and keeps the input checks eager, outside the compiled graph: the label 3
    is refused with the same ValueError, never silently scored."""
    loss_fn = metricc.compile_metric("f1", compile=True)
    eager = metricc.compile_metric("f1")
    logits, target = batch(n=8)
    z_compiled, z_eager = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    with really_compiled():
        loss = loss_fn(z_compiled, target)
        loss.backward()
        with pytest.raises(ValueError, match=r"target must hold labels in \[0, 1\].*target\[2\] = 3"):
            loss_fn(torch.zeros(3, dtype=torch.float64), torch.tensor([0, 1, 3]))
    expected = eager(z_eager, target)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(z_compiled.grad, z_eager.grad, rtol=1e-10, atol=1e-300)


def test_a_loss_traced_by_the_users_own_torch_compile_still_refuses_bad_targets():
    """Inside a graph the check is compiled in (torch._assert_async): a loud error, never a silent 0.333."""
    loss_fn = metricc.compile_metric("f1")
    compiled = torch.compile(lambda z, y: loss_fn(z, y), fullgraph=True, dynamic=False)
    logits = torch.zeros(3, dtype=torch.float64)
    with really_compiled():
        assert torch.isfinite(compiled(logits, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)))
        with pytest.raises(RuntimeError, match=r"target must hold labels in \[0, 1\]"):
            compiled(logits, torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64))


@pytest.mark.slow
def test_compile_option_stays_compiled_across_many_batch_sizes():
    """Ten batch sizes, beyond torch._dynamo's recompile limit of 8: one symbolic-size recompile, not ten."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    loss_fn = metricc.compile_metric("balanced_accuracy", compile=True)
    eager = metricc.compile_metric("balanced_accuracy")
    for n in range(20, 30):
        logits, target = batch(n, seed=n)
        z_compiled, z_eager = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        loss_fn(z_compiled, target).backward()
        eager(z_eager, target).backward()
        torch.testing.assert_close(z_compiled.grad, z_eager.grad, rtol=1e-10, atol=1e-15)
    assert 1 <= sum(counters["frames"].values()) and counters["stats"]["unique_graphs"] <= 3
