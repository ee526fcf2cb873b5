"""Derivation to Python source: a standalone PyTorch module that imports only torch.

The generated module holds a ``torch.autograd.Function`` whose forward computes a
few sufficient statistics (Σ w·y·ŷ, Σ w·ŷ, Σ w·y, Σ w) and whose backward is one
elementwise expression, a functional form, and an ``nn.Module`` wrapper. The
expressions are printed by sympy's PyTorch printer; everything a user wrote that
lands in the source goes through ``repr()`` or is a validated identifier.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import string
import textwrap

import sympy
from sympy.printing.pycode import PythonCodePrinter
from sympy.printing.pytorch import TorchPrinter

from .derive import Derivation
from .metric import CONFUSION_SYMBOLS, to_text

GENERATOR = "metricc"
CHUNK_ELEMENTS = 1 << 20  # elements of the (rows × thresholds) block processed at once


class MetricTorchPrinter(TorchPrinter):
    """sympy's PyTorch printer, with the few changes metric code needs.

    Strict, so that an unsupported node fails here rather than in generated code;
    numeric constants such as sqrt(2) are printed as float literals (``torch.sqrt``
    does not take Python numbers); ``Heaviside`` (from differentiating min/max) is
    printed with ``torch.sign``; ``Min``/``Max`` use the elementwise
    ``torch.minimum``/``torch.maximum``, and ``torch.clamp`` for numeric arguments.
    """

    def __init__(self, tensor_symbols=frozenset(CONFUSION_SYMBOLS), settings=None):
        super().__init__({"strict": True, **(settings or {})})
        self.tensor_symbols = frozenset(tensor_symbols)
        self._scalar_printer = PythonCodePrinter({"strict": True, "standard": "python3"})

    def _print(self, expr, **kwargs):
        if isinstance(expr, sympy.Expr) and not (expr.free_symbols & self.tensor_symbols):
            if expr.is_number and not isinstance(expr, (sympy.Integer, sympy.Rational, sympy.Float)):
                value = float(expr)
                if not math.isfinite(value):
                    raise ValueError(f"constant {expr} is not finite")
                return f"({value!r})" if value < 0 else repr(value)
            if expr.free_symbols:
                # Only parameters (Python floats) here: print with math.*, which takes floats.
                return f"({self._scalar_printer.doprint(expr)})"
        return super()._print(expr, **kwargs)

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Heaviside(self, expr):
        argument = self._print(expr.args[0])
        return f"(0.5 * (torch.sign({argument}) + 1))"

    def _print_Min(self, expr):
        return self._print_extremum(expr, "torch.minimum", "min", "max")

    def _print_Max(self, expr):
        return self._print_extremum(expr, "torch.maximum", "max", "min")

    def _print_extremum(self, expr, tensor_function, python_function, clamp_keyword):
        """torch.minimum/maximum take tensors only: fold the tensor arguments with them and
        apply the numbers and parameters (Python floats) as one clamp bound."""
        tensors = [a for a in expr.args if a.free_symbols & self.tensor_symbols]
        scalars = [a for a in expr.args if not a.free_symbols & self.tensor_symbols]
        folded = self._expand_fold_binary_op(tensor_function, [self._print(a) for a in tensors])
        if not scalars:
            return folded
        bound = self._print(scalars[0]) if len(scalars) == 1 else \
            f"{python_function}({', '.join(self._print(a) for a in scalars)})"
        return f"torch.clamp({folded}, {clamp_keyword}={bound})"

    def _print_Pow(self, expr):
        base, exponent = expr.args
        if exponent == -1:
            return f"1 / ({self._print(base)})"
        if exponent == -sympy.S.Half:
            return f"1 / torch.sqrt({self._print(base)})"
        return super()._print_Pow(expr)


def print_torch(expr: sympy.Expr, tensor_symbols=frozenset(CONFUSION_SYMBOLS)) -> str:
    """Torch source for ``expr``; symbols outside ``tensor_symbols`` are Python floats."""
    return MetricTorchPrinter(tensor_symbols).doprint(expr)


class MetricScalarPrinter(PythonCodePrinter):
    """Python-float source (``math.*``) for the CPU fast path, with torch's conventions:
    sign(0) = 0 and Heaviside(0) = 1/2, as ``torch.sign`` gives them."""

    def __init__(self):
        super().__init__({"strict": True, "standard": "python3"})

    def _print_sign(self, expr):
        return f"_sign({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        return f"(0.5 * (_sign({self._print(expr.args[0])}) + 1))"


def print_scalar(expr: sympy.Expr) -> str:
    return MetricScalarPrinter().doprint(expr)


@dataclasses.dataclass(frozen=True)
class EmitOptions:
    """Defaults baked into the generated module's signatures."""

    from_logits: bool = True
    zero_division: float | None = 0.0
    sync: bool = False
    grad_average: bool = True
    validate: bool = True

    def __post_init__(self):
        for name in ("from_logits", "sync", "grad_average", "validate"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_zero_division(self.zero_division)


def check_zero_division(value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"zero_division must be a finite number (the metric's value on batches where it is "
                         f"undefined) or None (let NaN through), got {value!r}")


def loss_names(metric_name: str) -> tuple[str, str, str]:
    """(module class, function, autograd Function) names for a metric called ``metric_name``."""
    if not metric_name.isidentifier() or keyword.iskeyword(metric_name):
        raise ValueError(f"metric name {metric_name!r} is not a valid Python identifier")
    camel = "".join(part[:1].upper() + part[1:] for part in metric_name.split("_") if part) or "Metric"
    if not camel[0].isalpha():
        camel = "Metric" + camel
    function = metric_name.lower().strip("_") or "metric"
    if function[0].isdigit():
        function = "metric_" + function
    return f"{camel}Loss", f"{function}_loss", f"{camel}LossFunction"


def _docstring_text(text: str) -> str:
    """Make arbitrary text safe inside a triple-quoted docstring (Python source cannot hold NUL)."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').replace("\0", "\\x00")


def metric_function_source(derivation: Derivation) -> str:
    """``metric_and_gradient(TP, FN, FP, TN)``: the sympy-printed heart of the loss."""
    lines = []
    for name, value in derivation.metric.params:
        lines.append(f"{name} = {float(value)!r}")
    tensors = set(CONFUSION_SYMBOLS)
    for symbol, expr in derivation.common_subexpressions:
        if expr.free_symbols & tensors:
            tensors.add(symbol)
        lines.append(f"{symbol.name} = {print_torch(expr, tensors)}")
    printed = []
    for expr in derivation.outputs:
        if expr.free_symbols & tensors:
            printed.append(print_torch(expr, tensors))
        else:  # a constant or parameters only: give it the shape and dtype of the statistics
            printed.append(f"torch.full_like(TP, {print_torch(expr, tensors)})")
    lines.append("return (")
    lines += [f"    {p}," for p in printed]
    lines.append(")")
    body = textwrap.indent("\n".join(lines), "    ")
    return (
        "def metric_and_gradient(TP, FN, FP, TN):\n"
        '    """The metric f and its per-sample derivatives, from the soft confusion entries.\n\n'
        "    Returns (f, f_TP - f_FN, f_FP - f_TN): f, and the derivative of f with respect to\n"
        "    the soft prediction of one positive and of one negative sample of unit weight.\n"
        "    Works elementwise, so each argument may hold one value per threshold.\n"
        '    """\n'
        f"{body}\n"
        "\n\n"
        f"{scalar_metric_function_source(derivation)}"
    )


def scalar_metric_function_source(derivation: Derivation) -> str:
    """``metric_and_gradient_scalar``: the same with Python floats, for the CPU fast path."""
    lines = [f"{name} = {float(value)!r}" for name, value in derivation.metric.params]
    lines += [f"{symbol.name} = {print_scalar(expr)}" for symbol, expr in derivation.common_subexpressions]
    lines.append("return (")
    lines += [f"    {print_scalar(expr)}," for expr in derivation.outputs]
    lines.append(")")
    body = textwrap.indent("\n".join(lines), "    ")
    source = (
        "def metric_and_gradient_scalar(TP, FN, FP, TN):\n"
        '    """metric_and_gradient for Python floats (math.*); raises where a value is undefined."""\n'
        f"{body}\n"
    )
    if "_sign(" in body:  # from abs, min or max: torch.sign's convention, sign(0) = 0
        source += "\n\ndef _sign(x):\n    return float((x > 0) - (x < 0))\n"
    return source


def emit(derivation: Derivation, options: EmitOptions = EmitOptions()) -> str:
    """Python source of a loss module for ``derivation``; it imports only torch (and math)."""
    metric = derivation.metric
    module_class, function_name, autograd_name = loss_names(metric.name)
    relaxation_source = derivation.relaxation.torch_source().rstrip() + "\n"
    thresholds = derivation.thresholds or (0.5,)  # Identity ignores its threshold argument
    template = _SINGLE_THRESHOLD if len(thresholds) == 1 else _MANY_THRESHOLDS
    if derivation.relaxation.slope_symmetric_about_half:
        # dŷ/dp(p) = dŷ/dp(1 − p), so the slope at p = σ(z) is the slope at q = min(p, 1 − p),
        # which the backward has already: one sigmoid per sample fewer.
        relaxation_source += "\n\n" + derivation.relaxation.tail_slope_source().rstrip() + "\n"
        # The label factors first, into the one new buffer, then both slopes multiplied in:
        # no pass for the product of slope and factor, and the slope's constant comes free.
        logit_gradient = (
            "positive, negative = positive * TAIL_SLOPE_SCALE, negative * TAIL_SLOPE_SCALE\n"
            "    grad = _select_by_label(target, positive, negative, out=torch.empty_like(tail))\n"
            "    return mul_soft_prediction_slope_at_tail_(_mul_logit_slope_(grad, tail), tail, THRESHOLD)")
        fused_logit_gradient = ("tail, other = _fused_tails(input)  # no σ(z): dŷ/dp is symmetric about 1/2\n"
                                "    return soft_prediction_slope(tail, THRESHOLD) * (tail * other) * factor")
    else:
        logit_gradient = (
            "grad = _mul_logit_slope_(soft_prediction_slope_(torch.sigmoid(input), THRESHOLD), tail)\n"
            "    return grad.mul_(_select_by_label(target, positive, negative, out=tail))  # tail is free again")
        fused_logit_gradient = ("p, chain = _fused_probability_and_slope(input)\n"
                                "    return soft_prediction_slope(p, THRESHOLD) * chain * factor")
    statistics_source = template.substitute(
        logit_gradient=logit_gradient,
        fused_logit_gradient=fused_logit_gradient,
        chunk_elements=CHUNK_ELEMENTS,
        block_source=derivation.relaxation.block_torch_source(thresholds).rstrip() + "\n")
    loss_expression = "1 - value" if derivation.direction == "maximize" else "value"
    metric_function = metric_function_source(derivation)
    source = _MODULE.substitute(
        docstring=_docstring_text(module_docstring(derivation, module_class)),
        math_import="import math\n",
        generator=repr(GENERATOR),
        metric_name=repr(metric.name),
        metric_source=repr(metric.source),
        metric_expression=repr(to_text(metric.expr)),
        direction=repr(derivation.direction),
        loss_sign=repr(derivation.loss_sign),
        relaxation=repr(derivation.relaxation.spec()),
        thresholds=repr(tuple(thresholds)),
        relaxation_source=relaxation_source,
        fused_slope_source=derivation.relaxation.fused_slope_source().rstrip() + "\n",
        metric_function=metric_function,
        statistics_source=statistics_source,
        loss_expression=loss_expression,
        module_class=module_class,
        function_name=function_name,
        autograd_name=autograd_name,
        summary=_docstring_text(f"{derivation.loss_text(metric.name)} for soft predictions"),
        from_logits=repr(options.from_logits),
        zero_division=repr(options.zero_division),
        sync=repr(options.sync),
        grad_average=repr(options.grad_average),
        validate=repr(options.validate),
    )
    compile(source, f"<{GENERATOR}:{metric.name}>", "exec")  # fail here, not in the user's import
    return source


def module_docstring(derivation: Derivation, module_class: str) -> str:
    metric = derivation.metric
    thresholds = derivation.thresholds
    if len(thresholds) > 1:
        threshold_line = "mean of the loss over thresholds " + ", ".join(f"{t:g}" for t in thresholds)
    elif thresholds:
        threshold_line = f"{thresholds[0]:g}"
    else:
        threshold_line = "none (the relaxation has no threshold)"
    header = [
        f"{metric.name}: a PyTorch loss generated by {GENERATOR} from a confusion-matrix metric.",
        "",
        "Do not edit: regenerate with `metricc compile` instead.",
        "",
        f"Metric       {metric.name} = {to_text(metric.expr)}",
        f"Written as   {metric.source}",
    ]
    if metric.description:
        header.append(f"About        {metric.description}")
    header += [
        f"Direction    {derivation.direction}: loss = {derivation.loss_text(metric.name)}",
        f"Relaxation   {derivation.relaxation.formula()}",
        f"Thresholds   {threshold_line}",
    ]
    if metric.params:
        header.append("Parameters   " + ", ".join(f"{k} = {v:g}" for k, v in metric.params))
    header += [
        "",
        "Derivation",
        "----------",
        derivation.text(),
        "",
        "Usage",
        "-----",
        f"    loss_fn = {module_class}()              # input: logits of shape (N,) or (N, 1)",
        "    loss = loss_fn(logits, target)       # target: 0/1 labels of any dtype",
        "    loss.backward()                      # closed-form backward, no autograd graph",
    ]
    return "\n".join(header)


_MODULE = string.Template('''\
"""$docstring
"""

${math_import}import torch

GENERATOR = $generator
METRIC_NAME = $metric_name
METRIC_SOURCE = $metric_source
METRIC_EXPRESSION = $metric_expression
DIRECTION = $direction  # 'maximize': loss = 1 - metric; 'minimize': loss = metric
LOSS_SIGN = $loss_sign  # d loss / d metric
RELAXATION = $relaxation
THRESHOLDS = $thresholds


$relaxation_source

$metric_function

def _loss_and_coefficients(statistics, zero_division):
    """Loss and the per-sample gradient factors for positives and negatives.

    ``statistics`` holds (TP, PP, P, n) in its first dimension, one column per threshold.
    On CPU the few numbers involved are Python floats: some 25 tensor operations on
    one-element tensors would cost more than the sums over a batch of a thousand.
    """
    if statistics.device.type == "cpu" and not _is_compiling():
        result = _scalar_loss_and_coefficients(statistics)
        if result is not None:
            return result
    return _tensor_loss_and_coefficients(statistics, zero_division)


def _scalar_loss_and_coefficients(statistics):
    """The CPU fast path; None where a value is not finite (the tensor path applies zero_division)."""
    values, positives, negatives = [], [], []
    for TP, PP, P, n in zip(*statistics.tolist()):
        entries = (TP, P - TP, PP - TP, n - P - PP + TP)
        try:
            value, positive, negative = metric_and_gradient_scalar(*(max(x, 0.0) for x in entries))
            if not (math.isfinite(value) and math.isfinite(positive) and math.isfinite(negative)):
                return None
        except (ArithmeticError, ValueError, TypeError):  # 1/0, sqrt(-1), a complex power, overflow
            return None
        values.append($loss_expression)
        positives.append(positive)
        negatives.append(negative)
    scale = LOSS_SIGN / len(values)
    loss = torch.tensor(sum(values) / len(values), dtype=statistics.dtype)
    positive = torch.tensor([x * scale for x in positives], dtype=statistics.dtype)
    negative = torch.tensor([x * scale for x in negatives], dtype=statistics.dtype)
    return loss, positive, negative


def _tensor_loss_and_coefficients(statistics, zero_division):
    """Loss and gradient factors with tensor operations (any device, torch.compile, undefined values)."""
    TP, PP, P, n = statistics
    # Differences of sums can round below zero; the entries are non-negative by construction.
    TP, FN, FP, TN = torch.stack([TP, P - TP, PP - TP, n - P - PP + TP]).clamp_min_(0)
    value, positive, negative = metric_and_gradient(TP, FN, FP, TN)
    factors = torch.stack([positive, negative])
    if zero_division is not None:
        # Where the metric is undefined (e.g. recall on a batch without positives) it takes
        # the value zero_division and contributes no gradient, as in scikit-learn; where
        # only its gradient is (a root at 0), that batch contributes no gradient either.
        defined = torch.isfinite(value)
        value = torch.where(defined, value, zero_division)
        factors = torch.nan_to_num_(factors.mul_(defined), nan=0.0, posinf=0.0, neginf=0.0)
    loss = ($loss_expression).mean()
    factors = factors.mul_(LOSS_SIGN / value.numel())
    if _is_compiling():
        # The compiler's partitioner saves a concatenation for the backward rather than
        # recompute it; without one, the compiled backward redoes the zero_division
        # handling above inside its loop, for every 16 samples (7-13 % of the loss's time).
        factors = torch.cat([factors[:1], factors[1:]])
    positive, negative = factors
    return loss, positive, negative


def _select_by_label(target, positive, negative, out):
    """``positive`` where target is 1, ``negative`` where it is 0, written into ``out``.

    (1 − y)·negative + y·positive is exact for 0/1 labels (one term is exactly 0), unlike
    negative + y·(positive − negative), which loses a positive value much smaller than
    the negative one; lerp would be exact too, but it is not vectorized on CPU.
    """
    if out.device.type == "cpu" and negative.numel() == 1:
        # The same in two passes: negative + (−negative)·y, then + positive·y, with Python
        # numbers as alpha (a three-operand addcmul with a one-element operand is not vectorized).
        torch.add(negative, target, alpha=-negative.item(), out=out)
        return out.add_(target, alpha=positive.item())
    torch.mul(target, negative, out=out)
    torch.sub(negative, out, out=out)
    return out.addcmul_(target, positive)


def _tail_probability(input, out=None):
    """q = σ(−|z|) = min(p, 1 − p) ≤ 1/2, one sigmoid: dp/dz = q·(1 − q) from it never rounds
    to 0 where σ(z) rounds to 1 (σ(z)·(1 − σ(z)) would, and learning would stop)."""
    return torch.abs(input, out=out).neg_().sigmoid_()


def _mul_logit_slope_(grad, tail):
    """grad·dp/dz = grad·q·(1 − q) in one pass, in place in grad: sigmoid_backward is
    autograd's own kernel for σ, g·s·(1 − s)."""
    return torch.ops.aten.sigmoid_backward.grad_input(grad, tail, grad_input=grad)


def _fused_tails(input):
    """q = σ(−|z|) = u/(1 + u) and 1 − q = 1/(1 + u) from one u = e^(−|z|): the form for
    torch.compile, which fuses everything into one loop, where exponentials cost, not passes."""
    u = torch.exp(-torch.abs(input))
    r = 1 / (1 + u)
    return u * r, r


def _fused_probability_and_slope(input):
    """σ(z) and dp/dz = σ(z)·σ(−z) = q·(1 − q), for torch.compile."""
    tail, other = _fused_tails(input)
    return torch.where(input >= 0, other, tail), tail * other


$fused_slope_source

$statistics_source

def _world_size(process_group):
    """Ranks that share the statistics; 1 without an initialized process group."""
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()):
        return 1
    return distributed.get_world_size(process_group)


def _is_compiling():
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


def _flatten(tensor, what, like=None):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() == 2 and tensor.shape[1] == 1:
        tensor = tensor.reshape(-1)
    elif tensor.dim() != 1:
        raise ValueError(f"{what} must have shape (N,) or (N, 1), got {tuple(tensor.shape)}")
    if like is not None:
        if tensor.shape[0] != like.shape[0]:
            raise ValueError(f"input holds {like.shape[0]} samples but {what} holds {tensor.shape[0]}; "
                             "they must match")
        if tensor.device != like.device:
            raise ValueError(f"{what} is on {tensor.device} but input is on {like.device}; move it first")
    return tensor


def _check_labels(target, scratch):
    """Raise unless target (already cast to the input's floating dtype) holds only 0 and 1.

    Three cheap passes over ``scratch``, a buffer like target that the caller overwrites
    next, so the check allocates nothing. |y − y²| is 0 exactly at 0 and 1 and positive
    (or NaN) anywhere else, even at tiny or huge y, and a sum of non-negative numbers is
    0 only if every term is.
    """
    if target.numel() == 0:
        return
    binary = torch.addcmul(target, target, target, value=-1, out=scratch).abs_().sum().item() == 0
    if not binary:
        invalid = ((target != 0) & (target != 1)).nonzero()[0, 0]
        raise ValueError(f"target must hold only 0 and 1, but target[{int(invalid)}] = {target[invalid].item()!r}")


def _prepare(input, target, weight, from_logits, validate, allow_empty):
    """Flatten and check the batch; cast target and weight to the input's dtype.

    The labels are checked later, in the forward, on a buffer it needs anyway.
    """
    input = _flatten(input, "input")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor of {'logits' if from_logits else 'probabilities'}, "
                        f"got dtype {input.dtype}")
    target = _flatten(target, "target", like=input)
    if weight is not None:
        weight = _flatten(weight, "weight", like=input)
    if input.shape[0] == 0 and not allow_empty:
        raise ValueError("the batch is empty: a confusion-matrix metric needs at least one sample")
    if validate and not _is_compiling():
        if not from_logits and input.numel() and bool(((input < 0) | (input > 1)).any()):
            raise ValueError("from_logits=False expects probabilities in [0, 1], but input has values "
                             f"in [{input.min().item():g}, {input.max().item():g}]; pass logits with from_logits=True")
        if weight is not None and bool(((weight < 0) | ~torch.isfinite(weight)).any()):
            raise ValueError("weight must be finite and non-negative")
    target = target.to(input.dtype)
    if weight is not None:
        weight = weight.to(input.dtype)
    return input, target, weight


class $autograd_name(torch.autograd.Function):
    """Forward: sufficient statistics and the metric. Backward: one elementwise expression."""

    @staticmethod
    def forward(ctx, input, target, weight, from_logits, zero_division, sync, process_group, grad_average,
                validate):
        p = torch.empty_like(input)  # a buffer of our own: the label check's scratch, then p, then ŷ
        if validate and not _is_compiling():
            _check_labels(target, scratch=p)
        p = torch.sigmoid(input, out=p) if from_logits else p.copy_(input)
        statistics = _statistics(p, target, weight)
        grad_scale = 1.0
        if sync:
            world = _world_size(process_group)
            if world > 1:
                statistics = statistics.contiguous()
                torch.distributed.all_reduce(statistics, group=process_group)
                # DDP averages gradients over ranks; scaling by the world size makes that
                # average equal the gradient of the loss on the global batch.
                grad_scale = float(world) if grad_average else 1.0
        loss, positive, negative = _loss_and_coefficients(statistics, zero_division)
        if grad_scale != 1.0:
            positive, negative = positive * grad_scale, negative * grad_scale
        ctx.from_logits = from_logits
        ctx.save_for_backward(input, target, weight, positive, negative)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        input, target, weight, positive, negative = ctx.saved_tensors
        grad = _input_gradient(input, target, positive * grad_output, negative * grad_output, ctx.from_logits)
        if weight is not None:
            grad = grad * weight
        return grad, None, None, None, None, None, None, None, None


def $function_name(
        input, target, weight=None, *, from_logits=$from_logits, zero_division=$zero_division, sync=$sync,
        process_group=None, grad_average=$grad_average, validate=$validate):
    """$summary of ``input`` against 0/1 ``target``; a 0-dim tensor.

    Args:
        input: logits (or probabilities with ``from_logits=False``), shape (N,) or (N, 1).
        target: 0/1 labels of any dtype, same number of samples; cast to input's dtype.
        weight: optional non-negative per-sample weights (they scale each sample's
            contribution to every confusion entry).
        from_logits: whether ``input`` holds logits (True) or probabilities (False).
        zero_division: the metric's value on a batch where it is undefined (a zero
            denominator, e.g. recall without positives); such a batch contributes no
            gradient. None lets NaN through.
        sync: all-reduce the statistics over ``process_group`` so that every rank computes
            the loss of the global batch (torch.distributed; a no-op without it).
        process_group: the group to reduce over; None is the default group.
        grad_average: with sync, scale gradients for DDP's averaging over ranks (True) or
            for summing them yourself (False).
        validate: check that target holds only 0 and 1 (skipped under torch.compile).
    """
    allow_empty = sync and _world_size(process_group) > 1  # an empty shard, where other ranks hold the batch
    input, target, weight = _prepare(input, target, weight, from_logits, validate, allow_empty)
    return $autograd_name.apply(
        input, target, weight, from_logits, zero_division, sync, process_group, grad_average, validate)


class $module_class(torch.nn.Module):
    """$summary (see the module docstring for the metric and its derivation).

    ``forward(input, target, weight=None)`` takes logits of shape (N,) or (N, 1)
    and 0/1 targets and returns a 0-dim tensor; keyword options are those of
    ``$function_name``.
    """

    def __init__(self, *, from_logits=$from_logits, zero_division=$zero_division, sync=$sync,
                 process_group=None, grad_average=$grad_average, validate=$validate):
        super().__init__()
        self.from_logits = from_logits
        self.zero_division = zero_division
        self.sync = sync
        self.process_group = process_group
        self.grad_average = grad_average
        self.validate = validate

    def forward(self, input, target, weight=None):
        return $function_name(
            input, target, weight, from_logits=self.from_logits, zero_division=self.zero_division,
            sync=self.sync, process_group=self.process_group, grad_average=self.grad_average,
            validate=self.validate)

    def extra_repr(self):
        return (f"metric={METRIC_NAME!r}, relaxation={RELAXATION!r}, from_logits={self.from_logits}, "
                f"zero_division={self.zero_division}, sync={self.sync}")
''')

_SINGLE_THRESHOLD = string.Template('''\
THRESHOLD = THRESHOLDS[0]


def _statistics(p, target, weight):
    """(TP, PP, P, n) = (Σ w·y·ŷ, Σ w·ŷ, Σ w·y, Σ w) as a (4, 1) tensor; overwrites p with ŷ."""
    yhat = soft_prediction_(p, THRESHOLD)
    if weight is None:
        n = torch.full((), p.shape[0], dtype=p.dtype, device=p.device)
        statistics = [torch.dot(target, yhat), yhat.sum(), target.sum(), n]
    else:
        weighted_target = target * weight
        statistics = [torch.dot(weighted_target, yhat), torch.dot(weight, yhat), weighted_target.sum(),
                      weight.sum()]
    return torch.stack(statistics).unsqueeze(1)


def _input_gradient(input, target, positive, negative, from_logits):
    """∂loss/∂input = (positive or negative factor) · dŷ/dp · dp/dz, in a few in-place passes."""
    if _is_compiling():
        return _fused_input_gradient(input, target, positive, negative, from_logits)
    if not from_logits:
        grad = soft_prediction_slope_(input.clone(), THRESHOLD)
        return grad.mul_(_select_by_label(target, positive, negative, out=torch.empty_like(grad)))
    tail = _tail_probability(input)
    $logit_gradient


def _fused_input_gradient(input, target, positive, negative, from_logits):
    """The same gradient, written for torch.compile, which fuses it into one loop."""
    # lerp is exact at weights 0 and 1; torch.where on target > 0.5 would be too, but it makes
    # the compiler save a mask from the forward, which measured three times slower.
    factor = torch.lerp(negative, positive, target)
    if not from_logits:
        return soft_prediction_slope(input, THRESHOLD) * factor
    $fused_logit_gradient
''')

_MANY_THRESHOLDS = string.Template('''\
CHUNK_ELEMENTS = $chunk_elements  # rows × thresholds per block: memory stays O(N), few Python-level steps


$block_source

def _thresholds_like(p):
    """The thresholds as a (T, 1) column: blocks hold one threshold per row."""
    return torch.tensor(THRESHOLDS, dtype=p.dtype, device=p.device).unsqueeze(1)


def _blocks(p):
    """(rows, out) for slices of at most CHUNK_ELEMENTS / T rows; ``out`` is a contiguous (T, rows)
    view of one flat buffer that every block reuses (a fresh block each time costs page faults)."""
    n, count = p.shape[0], len(THRESHOLDS)
    step = max(1, CHUNK_ELEMENTS // count)
    scratch = p.new_empty(count * min(n, step))
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        yield rows, scratch[:count * (rows.stop - start)].view(count, rows.stop - start)


def _statistics(p, target, weight):
    """(TP, PP, P, n) for every threshold, as a (4, T) tensor, one block of rows at a time."""
    thresholds = _thresholds_like(p)
    weighted_target = target if weight is None else target * weight
    if _is_compiling():
        # Elementwise terms and sums only, no BLAS call: the compiler fuses the (T, N) terms
        # into the reductions, so no block is ever stored.
        block = soft_prediction_block(p, thresholds)
        tp = (block * weighted_target).sum(1)
        pp = block.sum(1) if weight is None else (block * weight).sum(1)
    else:
        tp, pp = _blockwise_sums(p, weighted_target, weight, thresholds)
    n = torch.full((), p.shape[0], dtype=p.dtype, device=p.device) if weight is None else weight.sum()
    return torch.stack([tp, pp, weighted_target.sum().expand_as(tp), n.expand_as(tp)])


def _blockwise_sums(p, weighted_target, weight, thresholds):
    """(Σ w·y·ŷ, Σ w·ŷ) at every threshold, a (T, rows) block at a time: memory stays O(N)."""
    tp = p.new_zeros(len(THRESHOLDS))
    pp = p.new_zeros(len(THRESHOLDS))
    for rows, out in _blocks(p):
        block = soft_prediction_block(p[rows], thresholds, out=out)  # (T, rows)
        tp.addmv_(block, weighted_target[rows])  # Σ w·y·ŷ at every threshold
        if weight is None:
            pp.add_(block.sum(1))
        else:
            pp.addmv_(block, weight[rows])
    return tp, pp


def _input_gradient(input, target, positive, negative, from_logits):
    """∂loss/∂input: Σ over thresholds of (positive or negative factor) · dŷ/dp, times dp/dz."""
    if _is_compiling():
        return _fused_input_gradient(input, target, positive, negative, from_logits)
    p = torch.sigmoid(input) if from_logits else input
    thresholds = _thresholds_like(p)
    factors = torch.stack([negative, positive])  # (2, T)
    grad = torch.empty_like(p)
    for rows, out in _blocks(p):
        both = factors @ soft_prediction_slope_block(p[rows], thresholds, out=out)  # (2, rows): negative, positive
        _select_by_label(target[rows], both[1], both[0], out=grad[rows])
    if from_logits:
        grad = _mul_logit_slope_(grad, _tail_probability(input, out=p))  # p's buffer is free again
    return grad


def _fused_input_gradient(input, target, positive, negative, from_logits):
    """The same gradient, written for torch.compile: one elementwise term per threshold,
    which it fuses into one loop over the samples, vectorized along them."""
    p, chain = _fused_probability_and_slope(input) if from_logits else (input, None)
    grad = 0
    for k, threshold in enumerate(THRESHOLDS):
        factor = torch.lerp(negative[k], positive[k], target)  # exact at target 0 and 1
        grad = grad + soft_prediction_slope(p, threshold) * factor
    return grad * chain if from_logits else grad
''')
