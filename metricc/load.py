"""Generated source to a live loss, and ``compile_metric``, the whole pipeline in one call.

``compile_metric`` = parse → analyze → derive → emit → load. The API and the CLI
run the same generated source: ``metricc compile`` writes it to a file, this
module imports it from memory (registered with ``linecache`` so tracebacks show
the generated lines) and caches it by content.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import linecache
import math
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import sympy
import torch

from . import curves
from .derive import Derivation, derive
from .emit import EmitOptions, emit, loss_names
from .errors import SaturationWarning
from .limits import call_budget
from .metric import Metric, check_direction
from .parse import parse
from .problem import is_problem
from .relax import (
    Relaxation,
    Sigmoid,
    default_relaxation,
    describe_amplifier_range,
    multiclass_relaxation_for,
    resolve_relaxation,
)
from .runtime import CURVE_NEEDS_SCORES, MetricLoss, _check_num_labels

if TYPE_CHECKING:
    from .analyze import Report

# The names the runtime accepts (metricc.runtime.TASKS, AVERAGES, ESTIMATORS), as types for the API's hints;
# tests/test_typing.py checks that they list the same names.
Task = Literal["binary", "multiclass", "multilabel"]
Average = Literal["micro", "macro", "weighted"]
Estimator = Literal["batch", "running"]
Reduce = Literal["batch", "image"]
Reduction = Literal["mean", "sum", "none"]
ClassWeightRule = Literal["inverse_square", "inverse"]
Direction = Literal["maximize", "minimize"]

# The generated modules, most recently used last. At most MAX_MODULES stay imported (in sys.modules
# too); older ones are dropped from both, and live on only as long as a loss still uses them. Compiling
# their metric again imports them again. Without a bound, every distinct compile stayed for the life of
# the process (a server compiling users' metrics would grow without end).
MAX_MODULES = 256  # as many as the derivation and analysis caches keep
_MODULES: collections.OrderedDict[str, types.ModuleType] = collections.OrderedDict()
_MODULES_LOCK = threading.Lock()


def load_module(source: str, name: str = "loss") -> types.ModuleType:
    """Import generated source as a module, once per distinct source text (of the last MAX_MODULES)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    with _MODULES_LOCK:
        module = _MODULES.get(digest)
        if module is not None:
            _MODULES.move_to_end(digest)
            return module
        module_name = f"metricc.generated.{name}_{digest}"
        filename = f"<metricc-generated {name} {digest}>"
        code = compile(source, filename, "exec")  # our own generated code, never user text
        module = types.ModuleType(module_name)
        module.__file__ = filename
        exec(code, module.__dict__)  # noqa: S102 - executes generated code only
        # Tracebacks show the generated lines for as long as the module lives, and no longer.
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        weakref.finalize(module, linecache.cache.pop, filename, None)
        sys.modules[module_name] = module
        _MODULES[digest] = module
        while len(_MODULES) > MAX_MODULES:
            _, evicted = _MODULES.popitem(last=False)
            if sys.modules.get(evicted.__name__) is evicted:
                del sys.modules[evicted.__name__]
        return module


@functools.lru_cache(maxsize=256)
def _cached_derivation(metric: Metric, relaxation: Relaxation, thresholds, direction: str) -> Derivation:
    return derive(metric, relaxation, direction=direction, thresholds=thresholds)


class CompiledLoss(MetricLoss):
    """A metric loss compiled by metricc: ``loss_fn(input, target, weight=None)``.

    It is the generated module's loss: :class:`metricc.runtime.MetricLoss` with the module's
    ``DEFINITION``, so it runs the very code ``metricc compile`` writes. Beyond the runtime's
    options it carries where it came from. Build it with :func:`metricc.compile_metric`.

    ``weight`` is per **sample** ((N,), non-negative), unlike ``torch.nn.CrossEntropyLoss(weight=...)``,
    which is per class; per-class weights are ``compile_metric(..., class_weights=...)``.

    Shape:
        - ``input``: (N,), (N, 1) or (N, [1,] d1, ...) for binary; (N, C) or (N, C, d1, ...) for multiclass and
          multilabel (``F.cross_entropy``'s layout).
        - ``target``: 0/1 labels of the input's shape (binary, multilabel); (N, d1, ...) class indices or the
          input's shape of rows (multiclass).
        - ``weight``: (N,) or (N, d1, ...), optional. Output: ``()`` (``reduction="none"``: per class).

    Example::

        >>> import torch, metricc
        >>> loss_fn = metricc.compile_metric("jaccard", task="multilabel", num_classes=2, average="micro")
        >>> loss = loss_fn(torch.tensor([[3.0, -2.0], [-1.0, 0.2]]), torch.tensor([[1, 0], [0, 1]]))
        >>> round(loss.item(), 4)                  # 1 − Jaccard of the soft predictions
        0.0128
        >>> print(loss_fn.source.splitlines()[0].strip('"'))  # the generated module it runs
        jaccard: a PyTorch loss generated by metricc from a confusion-matrix metric.

    Attributes:
        source: the generated Python source this loss runs (``metricc compile`` writes the same).
        metric: the parsed :class:`Metric`.
        derivation: the :class:`Derivation` (``print(loss_fn.derivation.text())``).
        report: the analysis report, or None with ``check=False``.
        relaxation: the relaxation in use (:mod:`metricc.relax`).
        module: the generated module; ``function``: its functional form.
    """

    def __init__(self, source: str, metric: Metric, derivation: Derivation, report: Report | None = None, *,
                 emit_options: EmitOptions | None = None, **options: Any):
        module = load_module(source, metric.name)
        super().__init__(module.DEFINITION, **{**module.OPTIONS, **options})
        self.source = source
        self.metric = metric
        self.derivation = derivation
        self.report = report
        self.relaxation = derivation.relaxation
        self.module = module
        self.function = getattr(module, loss_names(metric.name)[1])
        self.emit_options = emit_options or EmitOptions()
        self._options = options
        self._dtypes_checked: set[torch.dtype] = set()

    def standalone_source(self) -> str:
        """The same module with metricc's runtime inlined verbatim: a file that imports only torch."""
        return emit(self.derivation, self.emit_options, standalone=True)

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.dtype not in self._dtypes_checked:
            self._dtypes_checked.add(input.dtype)
            warn_if_saturating(self.relaxation, input.dtype)
        return super().forward(input, target, weight)

    def __reduce__(self):
        # The generated classes live in a synthetic module; rebuild from the source instead.
        return (_rebuild, (self.source, self.metric, self.derivation, self.report, self.emit_options, self._options,
                           self.state_dict(), self.training))


def _rebuild(source, metric, derivation, report, emit_options, options, state, training):
    loss = CompiledLoss(source, metric, derivation, report, emit_options=emit_options, **options)
    loss.load_state_dict(state)
    return loss.train(training)


def _caller_stacklevel() -> int:
    """The stacklevel that points a warning at the first frame outside metricc and torch.nn."""
    import os

    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    skipped = (os.path.dirname(__file__), os.path.dirname(torch.nn.__file__))
    while frame is not None and frame.f_code.co_filename.startswith(skipped):
        frame, level = frame.f_back, level + 1
    return level


def warn_if_saturating(relaxation: Relaxation, dtype: torch.dtype) -> None:
    """Warn where a Sigmoid relaxation's slope dŷ/dp underflows to exactly 0 for some p in [0, 1] in the
    dtype the loss computes in (float32 for half precision): samples there would get no gradient.

    That ŷ itself rounds to 1 is no reason: the runtime computes 1 − ŷ as its own value and the slope from
    σ(−|a|), so the loss and its gradient stay within rounding of the exact ones (docs/performance.md).
    """
    if not (isinstance(relaxation, Sigmoid) and dtype.is_floating_point):
        return
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    reach = relaxation.L * max(relaxation.threshold, 1 - relaxation.threshold)
    smallest = torch.finfo(compute).tiny
    if reach < -math.log(smallest):  # σ(−reach) ≈ e^(−reach) stays a normal number
        return
    limit = -math.log(smallest) / relaxation.L
    warnings.warn(
        f"amplifier scale L={relaxation.L:g} is too steep for {compute}: the slope dŷ/dp underflows to 0 where "
        f"|p − {relaxation.threshold:g}| > {limit:.3f}, and such samples get no gradient; "
        f"{describe_amplifier_range(1e-3, compute)}; pass relaxation=metricc.Sigmoid(L=...) with a smaller L",
        SaturationWarning, stacklevel=_caller_stacklevel())


@call_budget("compile_metric")
def compile_metric(metric: str | Metric | sympy.Expr, *, params: Mapping[str, float] | None = None,
                   name: str | None = None, relaxation: str | Relaxation | None = None,
                   thresholds: float | Sequence[float] | None = None, direction: Direction | None = None,
                   task: Task = "binary", num_classes: int | None = None, num_labels: int | None = None,
                   average: Average | None = None,
                   class_weights: Sequence[float] | torch.Tensor | ClassWeightRule | None = None,
                   reduce: Reduce = "batch", reduction: Reduction = "mean", ignore_index: int | None = None,
                   from_logits: bool = True, zero_division: float | None = 0.0, estimator: Estimator = "batch",
                   momentum: float = 0.9, sync: bool = False,
                   process_group: torch.distributed.ProcessGroup | None = None, grad_average: bool = True,
                   validate: bool = True, check: bool = True, min_prevalence: float = 0.01,
                   compile: bool = False, constraints: str | Sequence[str] | None = None,
                   groups: int | None = None, multiplier_lr: float | None = None,
                   max_multiplier: float | None = None, multiplier_update: Literal["auto", "manual"] | None = None,
                   constraint_rates: Literal["hard", "relaxed"] | None = None,
                   penalty: float | None = None) -> CompiledLoss:
    """Compile a confusion-matrix metric into a PyTorch loss module.

    The module is called as ``loss_fn(input, target, weight=None)``, input first as ``torch.nn``
    losses are, and returns the loss of the batch (1 − metric for a metric to maximize). For one
    call without keeping a module, :func:`metricc.functional.metric_loss` caches it for you.

    Args:
        metric: an expression over ``TP FN FP TN`` (e.g. ``"2*TP/(2*TP+FP+FN)"``), a catalog
            name (``"f1"``, ``"fbeta"``, ... see ``metricc list``), a sympy expression or a Metric.
        params: values of the metric's parameters, e.g. ``{"beta": 2.0}``.
        name: a Python identifier naming the loss (default: the catalog name, else "metric").
        relaxation: how probabilities become soft predictions: ``"anyloss"``
            (``Sigmoid(L=73, threshold=0.5)``), ``"linear"``, ``"identity"``, ``"sol"``, or an instance.
            For ``task="multiclass"``: ``"identity"`` (ŷ = softmax(z)) or ``"anyloss"`` (a softmax
            amplifier). None (default): ``"anyloss"``, and ``"identity"`` for multi-class.
        thresholds: thresholds to average the metric over (soft-set paper: 0.1, ..., 0.9).
        direction: ``"maximize"`` (loss = 1 − metric) or ``"minimize"`` (loss = metric); by
            default the catalog's, else the analysis's.
        task: ``"binary"`` (default; logits (N,), (N, d1, ...) or (N, 1, d1, ...)), ``"multiclass"`` (logits
            (N, C) or (N, C, d1, ...) as F.cross_entropy's, one class per sample or pixel) or ``"multilabel"``
            (logits (N, C, ...), C independent 0/1 labels).
        num_classes: C, for multiclass and multilabel; ``num_labels`` is the same for multilabel.
        average: ``"macro"`` (default), ``"micro"`` or ``"weighted"``, as scikit-learn's ``average=``.
        class_weights: one weight per **class** for the mean of per-class metrics (multiclass,
            multilabel; instead of ``average``'s weights). This is what ``weight=`` means for
            ``torch.nn.CrossEntropyLoss``; metricc's ``weight`` is per sample (or per pixel), given at call
            time. Or ``"inverse_square"``: each class's entries weighted by 1/support² and summed
            (generalized Dice, Sudre et al. 2017).
        reduce: ``"batch"`` (entries summed over the whole batch; MONAI's ``batch=True``) or ``"image"``
            (per sample over its pixels, metric per image, then averaged; MONAI's default).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (the loss per class, and per image with
            reduce="image"), as torch.nn losses.
        ignore_index: a target value whose pixels contribute nothing (class indices, binary labels).
        from_logits: whether the loss takes logits (default) or probabilities.
        zero_division: the metric's value on batches where it is undefined; None lets NaN through.
        estimator: ``"batch"`` (default) or ``"running"``: the metric of a running estimate of the
            confusion entries across steps (for small batches; docs/minibatch.md).
        momentum: the running estimate's momentum, in [0, 1).
        sync: all-reduce statistics across ``process_group`` for an exact global-batch loss (DDP).
        process_group: the torch.distributed group for ``sync``; None is the default group.
        grad_average: with ``sync``, scale gradients for DDP's averaging (True) or for a sum (False).
        validate: check targets (labels in [0, 1], class indices in range), probabilities and weights.
        check: run :func:`metricc.analyze` and refuse metrics that cannot serve as a loss.
        min_prevalence: the smallest batch prevalence the analysis's Lipschitz bound covers.
        compile: run the loss through ``torch.compile`` (input checks stay eager).
        constraints: constraints on other metrics, e.g. ``["precision >= 0.9"]`` (or write ``"recall subject to
            precision >= 0.9"``); the loss is then the Lagrangian, with multipliers as module state
            (docs/constraints.md).
        groups: G, the number of groups, for metrics and constraints over per-group entries (``TP[g]`` …,
            ``max_g(...)``); each call then takes ``groups=``, an (N,) tensor of group indices.
        multiplier_lr, max_multiplier, multiplier_update, constraint_rates, penalty: with constraints,
            ``multiplier_lr`` (η, 0.05), ``max_multiplier`` (100),
            ``multiplier_update`` (``"auto"``: a step after every training call, or ``"manual"``:
            ``loss_fn.step_multipliers()``), ``constraint_rates`` (``"hard"``: the proxy-Lagrangian, or
            ``"relaxed"``), ``penalty`` (ρ > 0: the augmented Lagrangian).

    Returns:
        A :class:`CompiledLoss` (an ``nn.Module``); ``.source`` holds the generated code. With constraints or
        groups a :class:`metricc.load_problem.CompiledConstrainedLoss`.

    Raises:
        MetricSyntaxError: the metric text is not in the grammar.
        MetricCheckError: the analysis shows the metric cannot serve as a loss.

    Shape:
        - binary: ``input`` (N,), (N, 1) or (N, [1,] d1, ...) logits; ``target`` 0/1 (or soft labels in [0, 1])
          of the input's shape, with or without the axis of size 1, of any dtype.
        - multiclass: ``input`` (N, C) or (N, C, d1, ...); ``target`` (N, d1, ...) class indices, or one-hot or
          probability rows of the input's shape (each summing to 1).
        - multilabel: ``input`` (N, C, ...); ``target`` of the input's shape, 0/1.
        - ``weight`` (call time, optional): (N,) or (N, d1, ...) non-negative per-**sample** (per-pixel) weights,
          not torch's per-class ``weight``; per-class weights are ``class_weights=`` here.
        - Output: a scalar, shape ``()``, in the input's dtype (float32 for half-precision input).

    Example::

        >>> import torch, metricc
        >>> loss_fn = metricc.compile_metric("f1")      # AnyLoss amplifier, L = 73, threshold 0.5
        >>> logits = torch.tensor([2.0, -1.0, 0.5, -3.0], requires_grad=True)
        >>> target = torch.tensor([1, 0, 1, 1])
        >>> loss = loss_fn(logits, target)
        >>> loss.shape, round(loss.item(), 4)
        (torch.Size([]), 0.2)
        >>> loss.backward()                                # the closed-form backward
        >>> round(loss_fn(logits, target, weight=torch.tensor([1.0, 1.0, 2.0, 0.5])).item(), 4)
        0.077
        >>> macro = metricc.compile_metric("f1", task="multiclass", num_classes=3, average="macro")
        >>> z = torch.tensor([[2.0, 0.1, -1.0], [0.2, 1.5, 0.3], [-0.5, 0.0, 1.2], [1.0, 0.9, -0.3]])
        >>> round(macro(z, torch.tensor([0, 1, 2, 1])).item(), 4)
        0.3568
        >>> [round(v, 4) for v in macro.per_class.tolist()]   # for logging
        [0.644, 0.6221, 0.6633]
    """
    from .analyze import check_min_prevalence

    direction = None if direction is None else check_direction(direction)  # a typo must not flip the objective
    min_prevalence = check_min_prevalence(min_prevalence)  # as analyze() checks it, also with check=False
    given = dict(multiplier_lr=multiplier_lr, max_multiplier=max_multiplier, multiplier_update=multiplier_update,
                 constraint_rates=constraint_rates, penalty=penalty)
    multiplier_options = {name: value for name, value in given.items() if value is not None}
    problem_options = dict(params=params, name=name, relaxation=relaxation, thresholds=thresholds,
                           direction=direction, task=task, from_logits=from_logits, zero_division=zero_division,
                           estimator=estimator, momentum=momentum, sync=sync, process_group=process_group,
                           grad_average=grad_average, validate=validate, check=check, min_prevalence=min_prevalence)
    if is_problem(metric, constraints, groups, params):
        return _compile_problem(metric, constraints, groups, problem_options, multiplier_options, compile,
                                class_weights, num_classes, average, num_labels=num_labels,
                                reduce=reduce, reduction=reduction, ignore_index=ignore_index)
    parsed = parse(metric, params, name=name)
    if multiplier_options:
        raise TypeError(f"{', '.join(sorted(multiplier_options))}: compile_metric() takes these only with "
                        "constraints= (multiplier_lr, max_multiplier, multiplier_update, constraint_rates, penalty)")
    if task == "multiclass" and curves.is_curve(parsed.expr):
        raise ValueError(CURVE_NEEDS_SCORES)  # before derive, which would first refuse the default relaxation
    named = relaxation is not None
    relaxation = resolve_relaxation(default_relaxation(task) if relaxation is None else relaxation)
    num_classes = _check_num_labels(task, num_classes, num_labels)
    rule = class_weights if isinstance(class_weights, str) else None
    options = EmitOptions(from_logits=from_logits, zero_division=zero_division, sync=sync,
                          grad_average=grad_average, validate=validate, task=task, num_classes=num_classes,
                          average=average, class_weights=rule, reduce=reduce, reduction=reduction,
                          ignore_index=ignore_index, estimator=estimator, momentum=momentum,
                          multiclass_relaxation=multiclass_relaxation_for(relaxation, named))
    if task == "multiclass" and relaxation.multiclass_runtime() is None:
        raise ValueError(f"relaxation {relaxation.spec()!r} has no multi-class form; for task='multiclass' use "
                         "'anyloss' (a softmax amplifier, metricc.Sigmoid(L=...)) or 'identity'")
    if task == "multiclass" and thresholds is not None:
        raise ValueError("thresholds= averages over decision thresholds of binary or multi-label scores; "
                         "task='multiclass' predicts the argmax and has none")
    report = None
    if check:
        from .analyze import analyze_metric

        report = analyze_metric(parsed, min_prevalence=min_prevalence)
        refusal = report.error(direction or parsed.direction)
        if refusal is not None:
            raise refusal  # its options render as keyword arguments here, as flags in the CLI
        report.warn(stacklevel=4, zero_division=zero_division)  # 4: past call_budget's wrapper
    chosen = direction or parsed.direction or (report.direction if report else None)
    if chosen not in ("maximize", "minimize"):
        from .analyze import infer_direction

        chosen = infer_direction(parsed)
    derivation = _cached_derivation(parsed, relaxation,
                                    None if thresholds is None else tuple(_as_list(thresholds)), chosen)
    source = emit(derivation, options)
    per_class = {} if rule is not None else {"class_weights": class_weights}  # a rule is baked into the module
    return CompiledLoss(source, parsed, derivation, report, emit_options=options, process_group=process_group,
                        compile=compile, **per_class)


def _compile_problem(metric, constraints, groups, options, multiplier_options, compile, class_weights, num_classes,
                     average, **dense):
    from .load_problem import MULTIPLIER_OPTIONS, compile_problem

    unknown = sorted(set(multiplier_options) - set(MULTIPLIER_OPTIONS))
    if unknown:
        raise TypeError(f"compile_metric() got an unexpected keyword argument {unknown[0]!r}")
    defaults = {"num_labels": None, "reduce": "batch", "reduction": "mean", "ignore_index": None}
    given = {"compile": compile, "class_weights": class_weights, "num_classes": num_classes, "average": average}
    given.update({what: value for what, value in dense.items() if value != defaults[what]})
    for what, value in given.items():
        if value not in (None, False):
            raise ValueError(f"{what}= does not apply to a loss with constraints or groups: those are binary "
                             "losses over (N,) scores (task='binary'); leave it out")
    return compile_problem(metric, constraints=constraints, groups=groups, **options, **multiplier_options)


def _as_list(thresholds):
    if isinstance(thresholds, (int, float)):
        return [thresholds]
    try:
        return list(thresholds)
    except TypeError:
        raise ValueError(f"thresholds must be a number or a sequence of numbers, got {thresholds!r}") from None
