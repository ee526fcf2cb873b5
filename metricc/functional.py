"""The functional form of a compiled loss: ``metric_loss(metric, input, target, ...)``.

As ``torch.nn.functional.cross_entropy`` is to ``torch.nn.CrossEntropyLoss``. A compiled loss is a
module built once from its metric and options (parse, analyse, derive, emit, load: milliseconds to
seconds); this function builds it on the first call with a set of arguments and reuses it on every
later call with the same ones, so a training loop, a script or Hugging Face's
``Trainer(compute_loss_func=...)`` can call it per batch at the cost of the module's forward.

Only options without state between calls are accepted: ``estimator="running"`` keeps a running
estimate of the confusion entries in the module, which a function cannot carry; build that module
once with :func:`metricc.compile_metric` and call it instead.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .load import Average, ClassWeightRule, CompiledLoss, Direction, Reduce, Reduction, Task, compile_metric
from .metric import Metric
from .relax import Relaxation

_CACHE_SIZE = 64  # distinct (metric, options) pairs kept; a training run uses one or a few
_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(compile_metric).parameters.items()
             if name != "metric"}  # compile_metric's options, in its order


def metric_loss(metric: str | Metric, input: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None, *, params: Mapping[str, float] | None = None,
                relaxation: str | Relaxation | None = None, thresholds: float | Sequence[float] | None = None,
                direction: Direction | None = None, task: Task = "binary", num_classes: int | None = None,
                num_labels: int | None = None, average: Average | None = None,
                class_weights: Sequence[float] | torch.Tensor | ClassWeightRule | None = None,
                reduce: Reduce = "batch", reduction: Reduction = "mean", ignore_index: int | None = None,
                from_logits: bool = True, zero_division: float | None = 0.0, estimator: str = "batch",
                sync: bool = False, process_group: torch.distributed.ProcessGroup | None = None,
                grad_average: bool = True, validate: bool = True,
                compile: bool = False) -> torch.Tensor:
    """The loss of a confusion-matrix metric on one batch, without building a module per call.

    Equal to ``metricc.compile_metric(metric, **options)(input, target, weight)``; the compiled
    module is cached by ``metric`` and the options (64 distinct ones at most), so repeated calls cost
    what the module's forward costs. See :func:`metricc.compile_metric` for every option.

    Args:
        metric: an expression over ``TP FN FP TN`` or a catalog name (``"f1"``, ``"mcc"``, ...), or a
            parsed :class:`metricc.Metric`.
        input: logits (or probabilities with ``from_logits=False``).
        target: 0/1 labels (binary, multi-label; soft labels in [0, 1] work too) or class indices
            (multi-class), of any dtype.
        weight: optional per-**sample** weights of shape (N,) (or per pixel, (N, d1, ...)), non-negative. Not
            torch's per-class ``weight`` of ``F.cross_entropy``: per-class weights are ``class_weights=``.
        estimator: only ``"batch"``; ``"running"`` needs state between calls and is refused.

    The other keyword options are :func:`metricc.compile_metric`'s.

    Returns:
        A 0-dim tensor in the input's dtype (float32 for half-precision input).

    Raises:
        ValueError: ``estimator="running"``, or an option ``compile_metric`` refuses.
        TypeError: an option that cannot serve as a cache key (an unhashable process group).

    Shape:
        - binary: ``input`` (N,), (N, 1) or (N, [1,] d1, ...), ``target`` the same elements.
        - multiclass: ``input`` (N, C) or (N, C, d1, ...), ``target`` (N, d1, ...) class indices or the input's
          shape of one-hot or probability rows.
        - multilabel: ``input`` (N, C, ...), ``target`` the input's shape of 0/1.
        - ``weight``: (N,) or (N, d1, ...). Output: a scalar, ``()`` (``reduction="none"``: per class).

    Example::

        >>> import torch
        >>> from metricc.functional import metric_loss
        >>> logits = torch.tensor([2.0, -1.0, 0.5, -3.0], requires_grad=True)
        >>> target = torch.tensor([1, 0, 1, 1])
        >>> loss = metric_loss("f1", logits, target)
        >>> round(loss.item(), 4)
        0.2
        >>> loss.backward()
        >>> bool(logits.grad[3] < 0)   # a missed positive: raising its logit lowers the loss
        True
        >>> z = torch.tensor([[2.0, 0.1, -1.0], [0.2, 1.5, 0.3], [-0.5, 0.0, 1.2], [1.0, 0.9, -0.3]])
        >>> round(metric_loss("f1", z, torch.tensor([0, 1, 2, 1]), task="multiclass", num_classes=3).item(), 4)
        0.3568
    """
    if estimator != "batch":
        raise ValueError(f"metric_loss is stateless and takes estimator='batch' only, got estimator={estimator!r}: "
                         "a running estimate lives in a module across calls; build it once with "
                         f"metricc.compile_metric(..., estimator={estimator!r}) and call that module instead")
    loss_fn = loss_module(metric, params=params, relaxation=relaxation, thresholds=thresholds, direction=direction,
                          task=task, num_classes=num_classes, num_labels=num_labels, average=average,
                          class_weights=class_weights, reduce=reduce, reduction=reduction, ignore_index=ignore_index,
                          from_logits=from_logits, zero_division=zero_division, sync=sync,
                          process_group=process_group, grad_average=grad_average, validate=validate,
                          compile=compile)
    return loss_fn(input, target, weight)


def loss_module(metric: str | Metric, **options: Any) -> CompiledLoss:
    """The cached module :func:`metric_loss` calls for ``metric`` and ``options`` (for its ``per_class``,
    ``last_table`` or ``source``). It is shared by every caller with the same arguments: do not change it."""
    if options.get("estimator", "batch") != "batch":
        raise ValueError("loss_module serves metric_loss, which is stateless: build a running estimator with "
                         "metricc.compile_metric(..., estimator='running')")
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"compile_metric() got an unexpected keyword argument {unknown[0]!r}")
    # one key whether an option is given at its default or left out
    key = tuple((name, _hashable(options.get(name, default))) for name, default in _DEFAULTS.items())
    try:
        return _cached_module(_hashable(metric), key)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        raise TypeError(f"metric_loss caches its module by its arguments, and one of them cannot be a key "
                        f"({exc}); build the module once with metricc.compile_metric(...) instead") from None


def clear_cache() -> None:
    """Forget every module :func:`metric_loss` built."""
    _cached_module.cache_clear()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_module(metric, key: tuple) -> CompiledLoss:
    options = {name: _thaw(value) for name, value in key}
    return compile_metric(metric, **options)


@dataclasses.dataclass(frozen=True)
class _Frozen:
    """A mapping or sequence argument as a cache key; :meth:`thaw` gives compile_metric its value back."""

    kind: str
    items: tuple

    def thaw(self):
        return dict(self.items) if self.kind == "mapping" else list(self.items)


def _hashable(value):
    """A cache key for an argument: mappings and sequences of numbers become tuples, tensors their values."""
    if isinstance(value, torch.Tensor):
        return _Frozen("sequence", tuple(float(v) for v in value.detach().reshape(-1).tolist()))
    if isinstance(value, Mapping):
        return _Frozen("mapping", tuple(sorted(value.items())))
    if isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Real) for v in value):
        return _Frozen("sequence", tuple(value))
    return value


def _thaw(value):
    """The argument :func:`compile_metric` takes back from its cache key."""
    return value.thaw() if isinstance(value, _Frozen) else value


__all__ = ["clear_cache", "loss_module", "metric_loss"]
