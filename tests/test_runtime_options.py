"""Runtime options and hardening: reduction, num_labels, the functional form's cache, weighted averages without
support, target rows that are not distributions, huge weights, targets that require grad, the running
estimate's state, printed relaxations, and one owner of the multi-class default relaxation."""

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


def logits_and_labels(shape=(40,), seed=0, prevalence=0.3):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64),
            (torch.rand(shape, generator=generator) < prevalence).double())


def test_weighted_average_without_any_support_follows_zero_division_without_nan():
    """An all-negative multi-label batch, or all weights 0: Σ support = 0, which scikit-learn scores as
    zero_division; the loss is 1 − zero_division with no gradient, never NaN."""
    logits, _ = logits_and_labels((16, 3))
    for zero_division in (0.0, 1.0):
        loss_fn = metricc.compile_metric("f1", task="multilabel", num_classes=3, average="weighted",
                                         zero_division=zero_division)
        for target, weight in [(torch.zeros(16, 3), None), (torch.ones(16, 3), torch.zeros(16))]:
            z = logits.clone().requires_grad_(True)
            loss = loss_fn(z, target, weight)
            loss.backward()
            assert loss.item() == 1.0 - zero_division and (z.grad == 0).all()


@pytest.mark.parametrize("rows", [torch.zeros(4, 3), torch.tensor([[1.0, 1.0, 0.0]] * 4), torch.ones(4, 3)],
                         ids=["zeros", "multi-hot", "ones"])
def test_multiclass_target_rows_that_are_not_distributions_are_refused(rows):
    loss_fn = metricc.compile_metric("f1", task="multiclass", num_classes=3)
    with pytest.raises(ValueError, match="must each sum to 1.*multi-hot rows are task='multilabel'"):
        loss_fn(torch.zeros(4, 3), rows)


def test_probability_input_rows_must_sum_to_one():
    loss_fn = metricc.compile_metric("f1", task="multiclass", num_classes=3, from_logits=False)
    with pytest.raises(ValueError, match="sum to 1 over the class axis"):
        loss_fn(torch.full((4, 3), 0.2), torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(loss_fn(torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 0])))


@pytest.mark.parametrize("name", ["f1", "mcc", "balanced_accuracy"])
def test_float32_weights_of_3e38_give_the_loss_of_unit_weights(name):
    """A ratio metric does not depend on the weights' scale; their sum must not overflow into NaN."""
    logits, target = logits_and_labels(seed=1)
    logits, target = logits.float(), target.float()
    loss_fn = metricc.compile_metric(name, relaxation="linear")
    results = []
    for weight in (torch.ones(40), torch.full((40,), 3e38)):
        z = logits.clone().requires_grad_(True)
        loss = loss_fn(z, target, weight)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
        results.append((loss.detach(), z.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("what", ["target", "weight"])
def test_a_target_or_weight_that_requires_grad_is_refused_with_what_to_do(what):
    logits, target = logits_and_labels()
    weight = torch.ones(40, dtype=torch.float64)
    tensors = {"target": target, "weight": weight}
    tensors[what] = tensors[what].clone().requires_grad_(True)
    loss_fn = metricc.compile_metric("f1")
    with pytest.raises(ValueError, match=f"{what} requires grad.*pass {what}.detach"):
        loss_fn(logits, tensors["target"], tensors["weight"])
    with torch.no_grad():  # no graph: nothing to refuse
        loss_fn(logits, tensors["target"], tensors["weight"])


def test_reduction_none_and_sum_are_the_entries_and_count_times_mean():
    logits, target = logits_and_labels((30, 4), seed=2)
    options = dict(task="multilabel", num_labels=4, relaxation="identity")
    mean = metricc.compile_metric("dice", **options)(logits, target)
    per_label = metricc.compile_metric("dice", reduction="none", **options)(logits, target)
    total = metricc.compile_metric("dice", reduction="sum", **options)(logits, target)
    assert per_label.shape == (4,)
    torch.testing.assert_close(per_label.mean(), mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(total, 4 * mean, rtol=1e-14, atol=0)
    binary = metricc.compile_metric("dice", reduction="none")(logits[:, 0], target[:, 0])
    assert binary.shape == (1,)


def test_num_labels_is_num_classes_for_multilabel_and_refused_elsewhere():
    by_labels = metricc.compile_metric("f1", task="multilabel", num_labels=5)
    assert by_labels.num_classes == 5 and by_labels.num_labels == 5
    logits, target = logits_and_labels((10, 5))
    assert torch.equal(by_labels(logits, target), metricc.compile_metric("f1", task="multilabel",
                                                                          num_classes=5)(logits, target))
    with pytest.raises(ValueError, match="num_labels is the number of labels of task='multilabel'"):
        metricc.compile_metric("f1", task="multiclass", num_labels=5)
    with pytest.raises(ValueError, match="disagree"):
        metricc.compile_metric("f1", task="multilabel", num_labels=5, num_classes=4)


def test_cli_num_labels_and_dense_options(tmp_path):
    from metricc.cli import main

    out = tmp_path / "loss.py"
    assert main(["compile", "f1", "--task", "multilabel", "--num-labels", "3", "--reduce", "image",
                 "--reduction", "sum", "-o", str(out)]) == 0
    text = out.read_text()
    assert "num_classes=3" in text and "reduce='image'" in text and "reduction='sum'" in text


def test_the_functional_form_reuses_one_module_per_options_and_refuses_state():
    loss_fn = metricc.compile_metric("mcc")
    function = loss_fn.function
    logits, target = logits_and_labels(seed=3)
    assert torch.equal(function(logits, target), loss_fn(logits, target))
    runtime = metricc.runtime
    before = len(runtime._FUNCTIONAL_MODULES)
    for _ in range(3):
        function(logits, target, zero_division=1.0)
    assert len(runtime._FUNCTIONAL_MODULES) == before + 1
    with pytest.raises(ValueError, match="estimator='running' keeps a running estimate.*build the module once"):
        function(logits, target, estimator="running")
    running = metricc.compile_metric("mcc", estimator="running")  # the module's own default
    with pytest.raises(ValueError, match="estimator='running'"):
        running.function(logits, target)


def test_relaxations_print_as_their_constructors():
    text = repr(metricc.compile_metric("f1", relaxation=metricc.Sigmoid(L=30)))
    assert "relaxation=metricc.Sigmoid(L=30, threshold=0.5)" in text and "SigmoidAmplifier" not in text
    assert "metricc.Linear(threshold=0.5, delta=0.2)" in repr(metricc.compile_metric("f1", relaxation="linear"))
    assert "metricc.Identity()" in repr(metricc.compile_metric("f1", relaxation="identity"))


def test_a_module_compiled_for_binary_uses_the_multiclass_default_when_built_for_multiclass():
    """One owner of the default: `metricc compile f1` then F1Loss(task='multiclass') is compile_metric's identity
    default, unless the relaxation was named (then its softmax amplifier)."""
    generator = torch.Generator().manual_seed(4)
    logits, labels = torch.randn(30, 5, generator=generator, dtype=torch.float64), torch.arange(30) % 5
    expected = metricc.compile_metric("f1", task="multiclass", num_classes=5, average="macro")(logits, labels)
    built = metricc.compile_metric("f1").module.F1Loss(task="multiclass", num_classes=5, average="macro")
    assert torch.equal(built(logits, labels), expected)
    named = metricc.compile_metric("f1", relaxation="anyloss").module.F1Loss(task="multiclass", num_classes=5)
    amplifier = metricc.compile_metric("f1", task="multiclass", num_classes=5, relaxation="anyloss")
    assert torch.equal(named(logits, labels), amplifier(logits, labels))


def test_the_running_estimate_stays_float64_and_refuses_a_corrupt_or_foreign_state():
    loss_fn = metricc.compile_metric("f1", estimator="running")
    logits, target = logits_and_labels(seed=5)
    loss_fn(logits, target)
    for convert in (torch.nn.Module.half, torch.nn.Module.float, torch.nn.Module.double):
        convert(loss_fn)
        assert loss_fn.running_rates.dtype == torch.float64 and loss_fn.running_weight.dtype == torch.float64
    good = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    fresh = metricc.compile_metric("f1", estimator="running")
    fresh.load_state_dict(good)
    assert torch.equal(fresh.running_rates, loss_fn.running_rates)
    corruptions = {
        "finite": lambda s: s["running_rates"].fill_(float("nan")),
        "non-negative": lambda s: s["running_rates"][1].fill_(-0.1),
        "inconsistent": lambda s: s["running_rates"][0].add_(0.05),
    }
    for message, corrupt in corruptions.items():
        state = {k: v.clone() for k, v in good.items()}
        corrupt(state)
        with pytest.raises(RuntimeError, match=message):
            fresh.load_state_dict(state)
    with pytest.raises(RuntimeError, match="belongs to another metric"):
        metricc.compile_metric("mcc", estimator="running").load_state_dict(good)
    older = {k: v for k, v in good.items() if k != "running_metric"}  # a checkpoint from before the fingerprint
    fresh.load_state_dict(older)
    buffer = io.BytesIO()
    torch.save(loss_fn.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))


@pytest.mark.parametrize("relaxation", ["anyloss", "linear", "identity", "sol"])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_small_and_large_batch_forms_of_the_elementwise_path_agree(relaxation, weighted, monkeypatch):
    """Below SMALL_ELEMENTS the elementwise path builds its buffers with one broadcast op each (launches
    dominate), above with plain passes; both must give the loss and gradient, and exact zeros on a
    single-class batch."""
    logits, target = logits_and_labels((64,), seed=6)
    logits[:4] = torch.tensor([-40.0, 35.0, -0.2, 0.1], dtype=torch.float64)
    weight = torch.rand(64, generator=torch.Generator().manual_seed(7), dtype=torch.float64) if weighted else None
    loss_fn = metricc.compile_metric("mcc", relaxation=relaxation, check=False)
    results = []
    for small in (1 << 30, 0):
        monkeypatch.setattr(metricc.runtime, "SMALL_ELEMENTS", small)
        for labels in (target, torch.zeros(64, dtype=torch.float64)):
            z = logits.clone().requires_grad_(True)
            loss = loss_fn(z, labels, weight)
            loss.backward()
            results.append((loss.detach(), z.grad, loss_fn.last_table.clone()))
    for (loss_a, grad_a, table_a), (loss_b, grad_b, table_b) in zip(results[:2], results[2:]):
        torch.testing.assert_close(loss_a, loss_b, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-11, atol=1e-300)
        torch.testing.assert_close(table_a, table_b, rtol=1e-13, atol=0)
    assert results[1][2][0].sum() == 0 and results[3][2][0].sum() == 0  # no positives: TP exactly 0 both ways
    assert results[1][2][1].sum() == 0 and results[3][2][1].sum() == 0  # and FN


def test_compile_true_compiles_the_checks_and_infinite_logits_still_make_the_loss_and_gradient_nan():
    """The whole call is one graph: ±inf logits poison the loss and the gradient (for AMP's GradScaler) without a
    host read, and a bad label is still refused with the eager ValueError and its position."""
    loss_fn = metricc.compile_metric("f1", compile=True)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    z = torch.tensor([1.0, float("inf"), -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    loss = loss_fn(z, target)
    loss.backward()
    assert torch.isnan(loss) and torch.isnan(z.grad).all()
    z = torch.tensor([1.0, 3.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    expected = metricc.compile_metric("f1")(z.detach(), target)
    torch.testing.assert_close(loss_fn(z, target), expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"target\[1\] = 2"):
        loss_fn(z, torch.tensor([1.0, 2.0, 1.0, 0.0], dtype=torch.float64))


def test_each_compiled_loss_has_its_own_compile_cache_and_compiles_once(monkeypatch):
    """torch.compile limits recompiles per code object; every compiled loss has its own entry, so a second loss
    is compiled even at a limit of 1, and a loss's second call reuses its graph (no guard on state the first
    call filled in)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    first, second = (metricc.compile_metric(name, compile=True) for name in ("f1", "jaccard"))
    logits, target = logits_and_labels(seed=8)
    for loss_fn in (first, second, first, second):
        z = logits.clone().requires_grad_(True)
        loss_fn(z, target).backward()
    assert counters["stats"]["unique_graphs"] == 2
