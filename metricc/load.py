"""Generated source to a live loss, and ``compile_metric``, the whole pipeline in one call.

``compile_metric`` = parse → analyze → derive → emit → load. The API and the CLI
run the same generated source: ``metricc compile`` writes it to a file, this
module imports it from memory (registered with ``linecache`` so tracebacks show
the generated lines) and caches it by content.
"""

from __future__ import annotations

import functools
import hashlib
import linecache
import sys
import threading
import types
import warnings

import torch

from .derive import Derivation, derive
from .emit import EmitOptions, check_zero_division, emit, loss_names
from .errors import CompileFallbackWarning, MetricCheckError, SaturationWarning
from .metric import Metric
from .parse import parse
from .relax import Relaxation, Sigmoid, resolve_relaxation, saturation_limit, valid_amplifier_range

_MODULES: dict[str, types.ModuleType] = {}
_MODULES_LOCK = threading.Lock()


def load_module(source: str, name: str = "loss") -> types.ModuleType:
    """Import generated source as a module, once per distinct source text."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    with _MODULES_LOCK:
        module = _MODULES.get(digest)
        if module is not None:
            return module
        module_name = f"metricc.generated.{name}_{digest}"
        filename = f"<metricc-generated {name} {digest}>"
        code = compile(source, filename, "exec")  # our own generated code, never user text
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        module = types.ModuleType(module_name)
        module.__file__ = filename
        exec(code, module.__dict__)  # noqa: S102 - executes generated code only
        sys.modules[module_name] = module
        _MODULES[digest] = module
        return module


@functools.lru_cache(maxsize=256)
def _cached_derivation(metric: Metric, relaxation: Relaxation, thresholds, direction: str) -> Derivation:
    return derive(metric, relaxation, direction=direction, thresholds=thresholds)


class CompiledLoss(torch.nn.Module):
    """A metric loss compiled by metricc: ``loss_fn(input, target, weight=None)``.

    Attributes:
        source: the generated Python source this loss runs (``metricc compile`` writes the same).
        metric: the parsed :class:`Metric`.
        derivation: the :class:`Derivation` (``print(loss_fn.derivation.text())``).
        report: the analysis report, or None with ``check=False``.
        relaxation: the relaxation in use.
        module: the generated module (its functional form, autograd Function, ...).
    """

    def __init__(self, source: str, metric: Metric, derivation: Derivation, report=None, *,
                 options: EmitOptions | None = None, process_group=None, compile: bool = False):
        super().__init__()
        options = options or EmitOptions()
        self.source = source
        self.metric = metric
        self.derivation = derivation
        self.report = report
        self.relaxation = derivation.relaxation
        self.from_logits = options.from_logits
        self.zero_division = options.zero_division
        self.sync = options.sync
        self.grad_average = options.grad_average
        self.validate = options.validate
        self.process_group = process_group
        self.module = load_module(source, metric.name)
        self.function = getattr(self.module, loss_names(metric.name)[1])
        self._compile = compile
        self._compiled = None
        self._dtypes_checked: set[torch.dtype] = set()

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.dtype not in self._dtypes_checked:
            self._dtypes_checked.add(input.dtype)
            warn_if_saturating(self.relaxation, input.dtype)
        function = self._compiled_function() if self._compile else self.function
        return function(input, target, weight, from_logits=self.from_logits, zero_division=self.zero_division,
                        sync=self.sync, process_group=self.process_group, grad_average=self.grad_average,
                        validate=self.validate)

    def _compiled_function(self):
        if self._compiled is None:
            self._compiled = compile_function(self.function)
        return self._compiled

    def extra_repr(self) -> str:
        return (f"metric={self.metric.name!r}, expression={self.metric.text()!r}, "
                f"relaxation={self.relaxation.spec()!r}, direction={self.derivation.direction!r}, "
                f"from_logits={self.from_logits}, zero_division={self.zero_division}, sync={self.sync}")

    def __reduce__(self):
        # The generated classes live in a synthetic module; rebuild from the source instead.
        options = EmitOptions(from_logits=self.from_logits, zero_division=self.zero_division, sync=self.sync,
                              grad_average=self.grad_average, validate=self.validate)
        return (_rebuild, (self.source, self.metric, self.derivation, self.report, options, self._compile))


def _rebuild(source, metric, derivation, report, options, compile):
    return CompiledLoss(source, metric, derivation, report, options=options, compile=compile)


def compile_function(function):
    """``torch.compile(function)``, or ``function`` itself with a warning where that is unavailable."""
    compiler = getattr(torch, "compile", None)
    if compiler is None:
        warnings.warn("torch.compile is not available in this PyTorch; running the eager code",
                      CompileFallbackWarning, stacklevel=_caller_stacklevel())
        return function
    # Default dynamic: a batch of a new size (a last, smaller batch) recompiles once with a
    # symbolic size. dynamic=False would recompile per size and fall back to eager code for
    # good after torch._dynamo's recompile limit; generated modules are shared, so sizes add up.
    compiled = compiler(function)

    state = {"fallback": False}

    @functools.wraps(function)
    def run(*args, **kwargs):
        if state["fallback"]:
            return function(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except (ValueError, TypeError):
            raise  # the user's input is wrong; eager code would say the same
        except Exception as exc:  # a compiler that is missing or fails (no C++ toolchain, ...)
            state["fallback"] = True
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "running the eager code instead", CompileFallbackWarning, stacklevel=_caller_stacklevel())
            return function(*args, **kwargs)

    return run


def _caller_stacklevel() -> int:
    """The stacklevel that points a warning at the first frame outside metricc and torch.nn."""
    import os

    frame, level = sys._getframe(1), 1
    skipped = (os.path.dirname(__file__), os.path.dirname(torch.nn.__file__))
    while frame is not None and frame.f_code.co_filename.startswith(skipped):
        frame, level = frame.f_back, level + 1
    return level


def warn_if_saturating(relaxation: Relaxation, dtype: torch.dtype) -> None:
    """Warn when a Sigmoid relaxation rounds ŷ to exactly 1 for some p in [0, 1] in ``dtype``."""
    if not (isinstance(relaxation, Sigmoid) and dtype.is_floating_point):
        return
    reach = saturation_limit(relaxation, dtype)
    if reach is None:
        return
    low, high = valid_amplifier_range(1e-3, dtype)
    warnings.warn(
        f"amplifier scale L={relaxation.L:g} saturates in {dtype}: ŷ rounds to exactly 1 for "
        f"p > {relaxation.threshold + reach:.3f} (AnyLoss condition 2); for p in [0.001, 0.999] valid L "
        f"in {dtype} is {low:.2f}..{high:.2f} (metricc.valid_amplifier_range(1e-3, {dtype})). "
        "metricc's backward computes σ(−a) directly, so gradients do not vanish, but the soft counts are "
        "hard there; pass relaxation=metricc.Sigmoid(L=...) to stay in range",
        SaturationWarning, stacklevel=_caller_stacklevel())


def compile_metric(metric, *, params=None, name: str | None = None, relaxation="anyloss", thresholds=None,
                   direction: str | None = None, from_logits: bool = True, zero_division: float | None = 0.0,
                   sync: bool = False, process_group=None, grad_average: bool = True, validate: bool = True,
                   check: bool = True, min_prevalence: float = 0.01, compile: bool = False) -> CompiledLoss:
    """Compile a confusion-matrix metric into a PyTorch loss module.

    Args:
        metric: an expression over ``TP FN FP TN`` (e.g. ``"2*TP/(2*TP+FP+FN)"``), a catalog
            name (``"f1"``, ``"fbeta"``, ... see ``metricc list``), a sympy expression or a Metric.
        params: values of the metric's parameters, e.g. ``{"beta": 2.0}``.
        name: a Python identifier naming the loss (default: the catalog name, else "metric").
        relaxation: how probabilities become soft predictions: ``"anyloss"`` (default,
            ``Sigmoid(L=73, threshold=0.5)``), ``"linear"``, ``"identity"``, ``"sol"``, or an instance.
        thresholds: thresholds to average the metric over (soft-set paper: 0.1, ..., 0.9).
        direction: ``"maximize"`` (loss = 1 − metric) or ``"minimize"`` (loss = metric); by
            default the catalog's, else the analysis's.
        from_logits: whether the loss takes logits (default) or probabilities.
        zero_division: the metric's value on batches where it is undefined; None lets NaN through.
        sync: all-reduce statistics across ``process_group`` for an exact global-batch loss (DDP).
        process_group: the torch.distributed group for ``sync``; None is the default group.
        grad_average: with ``sync``, scale gradients for DDP's averaging (True) or for a sum (False).
        validate: check targets are 0/1 at every call (skipped under torch.compile).
        check: run :func:`metricc.analyze` and refuse metrics that cannot serve as a loss.
        min_prevalence: the smallest batch prevalence the analysis's Lipschitz bound covers.
        compile: run the generated code through ``torch.compile``.

    Returns:
        A :class:`CompiledLoss` (an ``nn.Module``); ``.source`` holds the generated code.

    Raises:
        MetricSyntaxError: the metric text is not in the grammar.
        MetricCheckError: the analysis shows the metric cannot serve as a loss.
    """
    parsed = parse(metric, params, name=name)
    relaxation = resolve_relaxation(relaxation)
    check_zero_division(zero_division)
    options = EmitOptions(from_logits=from_logits, zero_division=zero_division, sync=sync,
                          grad_average=grad_average, validate=validate)
    report = None
    if check:
        from .analyze import analyze_metric

        report = analyze_metric(parsed, min_prevalence=min_prevalence)
        problems = report.blocking_problems(direction or parsed.direction)
        if problems:
            raise MetricCheckError(f"metric {parsed.name!r} cannot serve as a loss: {'; '.join(problems)}; "
                                   "pass check=False to compile it anyway", report)
        report.warn(stacklevel=3)
    direction = direction or parsed.direction or (report.direction if report else None)
    if direction not in ("maximize", "minimize"):
        from .analyze import infer_direction

        direction = infer_direction(parsed)
    derivation = _cached_derivation(parsed, relaxation,
                                    None if thresholds is None else tuple(_as_list(thresholds)), direction)
    source = emit(derivation, options)
    return CompiledLoss(source, parsed, derivation, report, options=options, process_group=process_group,
                        compile=compile)


def _as_list(thresholds):
    if isinstance(thresholds, (int, float)):
        return [thresholds]
    try:
        return list(thresholds)
    except TypeError:
        raise ValueError(f"thresholds must be a number or a sequence of numbers, got {thresholds!r}") from None
