"""metricc.functional.metric_loss: the compiled module's loss and gradient, built once per set of arguments."""

import pytest
import torch

import metricc
from metricc.functional import _cached_module, clear_cache, loss_module, metric_loss


def _value_and_gradient(loss_of, logits, *args, **kwargs):
    z = logits.clone().requires_grad_(True)
    loss = loss_of(z, *args, **kwargs)
    loss.backward()
    return loss.detach(), z.grad


CASES = [
    ("f1", {}, (16,), lambda g: torch.randint(0, 2, (16,), generator=g)),
    ("fbeta", {"params": {"beta": 2.0}, "thresholds": [0.3, 0.5, 0.7]}, (16,),
     lambda g: torch.randint(0, 2, (16,), generator=g)),
    ("recall", {"task": "multiclass", "num_classes": 3, "average": "weighted"}, (12, 3),
     lambda g: torch.randint(0, 3, (12,), generator=g)),
    ("f1", {"task": "multiclass", "num_classes": 3, "class_weights": [0.5, 1.0, 2.0]}, (12, 3),
     lambda g: torch.randint(0, 3, (12,), generator=g)),
    ("jaccard", {"task": "multilabel", "num_classes": 4, "average": "micro", "class_weights": None,
                 "relaxation": "identity"}, (10, 4), lambda g: torch.randint(0, 2, (10, 4), generator=g)),
]


@pytest.mark.parametrize(("metric", "options", "shape", "labels"), CASES)
def test_equals_the_compiled_module_in_value_and_gradient(metric, options, shape, labels):
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(shape, generator=g, dtype=torch.float64), labels(g)
    weight = torch.rand(shape[0], generator=g, dtype=torch.float64)
    module = metricc.compile_metric(metric, **options)
    for w in (None, weight):
        expected = _value_and_gradient(module, logits, target, w)
        got = _value_and_gradient(lambda z, t, w: metric_loss(metric, z, t, w, **options), logits, target, w)
        torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], expected[1], rtol=0, atol=0)


def test_builds_one_module_per_set_of_arguments_and_none_per_call():
    clear_cache()
    logits, target = torch.randn(8), torch.tensor([0, 1] * 4)
    for _ in range(20):
        metric_loss("f1", logits, target)
        metric_loss("f1", logits, target, class_weights=None, zero_division=0.0)  # the same module's options
    assert _cached_module.cache_info().misses == 1 and _cached_module.cache_info().hits == 39
    assert loss_module("f1") is loss_module("f1", zero_division=0.0)  # defaults given or left out: one key
    assert loss_module("f1") is loss_module("f1")
    assert loss_module("f1") is not loss_module("f1", zero_division=1.0)
    # a list, a tuple and a tensor of the same class weights are one key
    lists = loss_module("f1", task="multiclass", num_classes=2, class_weights=[1.0, 2.0])
    assert loss_module("f1", task="multiclass", num_classes=2, class_weights=(1.0, 2.0)) is lists
    assert loss_module("f1", task="multiclass", num_classes=2, class_weights=torch.tensor([1.0, 2.0])) is lists
    assert loss_module("fbeta", params={"beta": 2.0}) is loss_module("fbeta", params={"beta": 2.0})


def test_refuses_state_between_calls_and_says_what_to_do():
    with pytest.raises(ValueError, match=r"estimator='batch' only.*metricc.compile_metric\(\.\.\., "
                                         r"estimator='running'\)"):
        metric_loss("f1", torch.randn(4), torch.tensor([0, 1, 0, 1]), estimator="running")
    with pytest.raises(ValueError, match="stateless"):
        loss_module("f1", estimator="running")
    with pytest.raises(TypeError, match="momentum"):  # only the running estimator has one
        metric_loss("f1", torch.randn(4), torch.tensor([0, 1, 0, 1]), momentum=0.9)


def test_an_argument_that_cannot_be_a_key_gets_a_clear_error():
    with pytest.raises(TypeError, match=r"caches its module by its arguments.*metricc.compile_metric"):
        metric_loss("fbeta", torch.randn(4), torch.tensor([0, 1, 0, 1]), params={"beta": [2.0]})


def test_bad_options_get_compile_metrics_errors():
    with pytest.raises(ValueError, match="average must be one of"):
        metric_loss("f1", torch.randn(4, 3), torch.tensor([0, 1, 2, 1]), task="multiclass", num_classes=3,
                    average="samples")
    with pytest.raises(metricc.MetricSyntaxError):
        metric_loss("2*TP/(2*TP+FP+FX)", torch.randn(4), torch.tensor([0, 1, 0, 1]))
