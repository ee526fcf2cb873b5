"""Derivation to Python source: the part of a loss module that is particular to its metric.

A generated module is short: the derivation as its docstring, the metric and its two per-sample
gradient factors printed by sympy (common subexpressions named by what they are), a
``MetricDefinition`` and the loss class. Everything that is the same for every metric lives in
:mod:`metricc.runtime`, ordinary tested source, which the module imports, as protobuf's generated
code imports its runtime, or, with ``standalone=True``, carries verbatim above it so that the file
imports only torch. Every user-provided string that lands in the source goes through ``repr()``;
names are validated identifiers.
"""

import dataclasses
import keyword
import math
import numbers
from pathlib import Path

import sympy
from sympy.printing.pycode import PythonCodePrinter

from . import runtime
from .derive import Derivation
from .limits import call_budget
from .metric import CONFUSION_SYMBOLS, FN, FP, TN, TP, parameter_symbol, to_text
from .names import check_metric_name, check_parameter_name, parameter_value
from .relax import Relaxation

GENERATOR = "metricc"
_RUNTIME_NAMES = frozenset(runtime.__all__)
RUNTIME_PATH = Path(__file__).with_name("runtime.py")

# Common subexpressions that are sums users know by name (the grammar's P N PP PN n).
_NAMED_SUMS = {TP + FN: "P", FP + TN: "N", TP + FP: "PP", FN + TN: "PN", TP + FN + FP + TN: "n",
               FN + FP: "errors", TP + TN: "correct"}


class MetricCodePrinter(PythonCodePrinter):
    """sympy's Python printer with the metric's functions taken from an ``ops`` namespace.

    ``ops`` is the runtime's TensorMath (tensors) or FloatMath (Python floats), so one printed
    function serves both. Strict: an unsupported node fails here, not in generated code.
    Numeric constants such as sqrt(2) print as float literals.
    """

    def __init__(self):
        super().__init__({"strict": True, "standard": "python3"})

    def _print(self, expr, **kwargs):
        if isinstance(expr, sympy.Expr) and expr.is_number and not isinstance(expr, (sympy.Integer, sympy.Rational,
                                                                                      sympy.Float)):
            value = float(expr)
            if not math.isfinite(value):
                raise ValueError(f"constant {expr} is not finite")
            return f"({value!r})" if value < 0 else repr(value)
        return super()._print(expr, **kwargs)

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.args
        if exponent == sympy.S.Half:
            return f"ops.sqrt({self._print(base)})"
        if exponent == -sympy.S.Half:
            return f"1/ops.sqrt({self._print(base)})"
        if exponent == -1:
            return f"1/{self.parenthesize(base, 1000, strict=True)}"  # parenthesized unless an atom
        return super()._print_Pow(expr, rational=rational)

    def _call(self, function, *args):
        return f"ops.{function}({', '.join(self._print(a) for a in args)})"

    def _print_log(self, expr):
        return self._call("log", *expr.args)

    def _print_exp(self, expr):
        return self._call("exp", *expr.args)

    def _print_Abs(self, expr):
        return self._call("abs", *expr.args)

    def _print_sign(self, expr):
        return self._call("sign", *expr.args)

    def _print_Heaviside(self, expr):
        return self._call("heaviside", expr.args[0])

    def _print_Min(self, expr):
        return self._call("minimum", *expr.args)

    def _print_Max(self, expr):
        return self._call("maximum", *expr.args)


def print_python(expr: sympy.Expr) -> str:
    """Python source for ``expr``, calling functions through ``ops``."""
    return MetricCodePrinter().doprint(expr)


@dataclasses.dataclass(frozen=True)
class EmitOptions:
    """Defaults baked into the generated loss class (``OPTIONS``); any can be overridden per instance."""

    from_logits: bool = True
    zero_division: float | None = 0.0
    sync: bool = False
    grad_average: bool = True
    validate: bool = True
    task: str = "binary"
    num_classes: int | None = None
    average: str | None = None
    class_weights: str | None = None  # a rule ("inverse_square"); per-class numbers are given per instance
    reduce: str = "batch"
    reduction: str = "mean"
    ignore_index: int | None = None
    estimator: str = "batch"
    momentum: float = 0.9
    # Not an option of the loss: the relaxation (metricc.relax) whose multi-class form the module's loss uses for
    # task="multiclass"; None: the derivation's relaxation's. compile_metric sets the multi-class default here
    # where the user named no relaxation, so a module compiled for binary and built with task="multiclass" uses
    # what compile_metric(..., task="multiclass") would.
    multiclass_relaxation: Relaxation | None = dataclasses.field(default=None, metadata={"option": False})

    def __post_init__(self):
        as_plain_values(self, reals=("zero_division", "momentum"), wholes=("num_classes", "ignore_index"))
        # The runtime owns these checks (a standalone module must carry them): its own messages.
        check_loss_options(self)
        if self.class_weights is not None and not isinstance(self.class_weights, str):
            raise TypeError("EmitOptions.class_weights bakes a rule such as 'inverse_square'; pass per-class "
                            "weights to the loss instead")
        runtime.check_task(self.task, self.num_classes, self.average, self.class_weights)
        runtime.check_choice("reduce", self.reduce, runtime.REDUCES)
        runtime.check_choice("reduction", self.reduction, runtime.REDUCTIONS)
        as_own_strings(self, {"task": runtime.TASKS, "average": runtime.AVERAGES,
                              "class_weights": tuple(runtime.CLASS_WEIGHT_RULES), "reduce": runtime.REDUCES,
                              "reduction": runtime.REDUCTIONS, "estimator": runtime.ESTIMATORS})

    def as_dict(self) -> dict:
        """The options that differ from the runtime's defaults, in the runtime's keyword names."""
        defaults = EmitOptions()
        always = ("from_logits", "zero_division", "task")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("option", True)
                and (f.name in always or getattr(self, f.name) != getattr(defaults, f.name))}


def as_plain_values(options, *, reals=(), wholes=()) -> None:
    """Set a frozen dataclass of options to the plain Python numbers its values stand for: every value is written
    into the generated source with repr(), and np.float64(0.5)'s repr is not Python the module can run (issue 22).
    What is not a number is left for the checks."""
    for name in reals:
        object.__setattr__(options, name, _real_number(getattr(options, name)))
    for name in wholes:
        object.__setattr__(options, name, _whole_number(getattr(options, name)))


def check_loss_options(options) -> None:
    """The options every generated loss has, a metric's and a problem's, by the runtime's own checks."""
    for name in ("from_logits", "sync", "grad_average", "validate"):
        runtime.check_flag(name, getattr(options, name))
    runtime.check_zero_division(options.zero_division)
    runtime.check_choice("estimator", options.estimator, runtime.ESTIMATORS)
    runtime.check_momentum(options.momentum)


def as_own_strings(options, choices: dict[str, tuple[str, ...]]) -> None:
    """Set each named option (not None) to metricc's own string equal to it: a str subclass may print itself as
    anything. Call after the checks, which give the messages for values that are not choices."""
    for name, allowed in choices.items():
        if getattr(options, name) is not None:
            object.__setattr__(options, name, _choice(name, getattr(options, name), allowed))


def _real_number(value):
    """A real number (numpy's too) as a Python float; anything else is left for the runtime's check."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _whole_number(value):
    """num_classes as a Python int (numpy's integers too); anything else is left for the runtime's check."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    """The element of ``choices`` equal to ``value`` (our own string, whatever object compared equal)."""
    for choice in choices:
        if isinstance(value, str) and value == choice:
            return choice
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _literal(value) -> str:
    """Source for a plain value (None, a bool, an int, a finite float, a str, or a tuple of them); anything else
    is refused: only values whose repr() Python reads back as the same value are written into generated code."""
    if value is None or type(value) in (bool, int):
        return repr(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return repr(str.__getitem__(value, slice(None)))  # a plain copy: a subclass may print itself as anything
    if type(value) is tuple:
        items = [_literal(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) into generated code")


def loss_names(metric_name: str) -> tuple[str, str]:
    """(loss class, function) names for a metric called ``metric_name``: f1 → F1Loss, f1_loss."""
    if not metric_name.isidentifier() or keyword.iskeyword(metric_name):
        raise ValueError(f"metric name {metric_name!r} is not a valid Python identifier")
    camel = "".join(part[:1].upper() + part[1:] for part in metric_name.split("_") if part) or "Metric"
    if not camel[0].isalpha():
        camel = "Metric" + camel
    function = metric_name.lower().strip("_") or "metric"
    if function[0].isdigit():
        function = "metric_" + function
    loss_class = f"{camel}Loss"
    if loss_class in _RUNTIME_NAMES:  # a metric called "metric" must not shadow the runtime's MetricLoss
        loss_class = "Compiled" + loss_class
    if f"{function}_loss" in _RUNTIME_NAMES:  # nor one called "functional" its functional_loss
        function = "compiled_" + function
    return loss_class, f"{function}_loss"


def _docstring_text(text: str) -> str:
    """Make arbitrary text safe inside a triple-quoted docstring (Python source cannot hold NUL)."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').replace("\0", "\\x00")


# ---------------------------------------------------------------------------------------------
# The metric function


class _LocalNames:
    """Unique local names in the generated function: the arguments are taken, everything else asks."""

    def __init__(self):
        self.taken = {s.name for s in CONFUSION_SYMBOLS} | {"ops"}

    def unique(self, name: str) -> str:
        candidate, k = name, 2
        while candidate in self.taken:
            candidate, k = f"{name}_{k}", k + 1
        self.taken.add(candidate)
        return candidate


def _temporary_names(derivation: Derivation, local: _LocalNames) -> dict[sympy.Symbol, str]:
    """Readable names for sympy.cse's temporaries: P, N, PP, PN, n for the sums users know, denominator
    for a temporary used only as one, sqrt_X, inverse_X, X_squared for functions of a named one, else term_k."""
    substitutions = derivation.common_subexpressions
    uses = list(derivation.outputs) + [expr for _, expr in substitutions]
    names: dict[sympy.Symbol, str] = {}

    def base_name(expr):
        if expr in names:
            return names[expr]
        if isinstance(expr, sympy.Symbol) and expr in CONFUSION_SYMBOLS:
            return expr.name
        return _NAMED_SUMS.get(expr.xreplace(expanded))

    # Each temporary in terms of the confusion entries, to recognise the named sums. Not expanded: sums
    # flatten by themselves (x0 + FN with x0 = TP + FP is TP + FN + FP), and sympy.expand of a temporary
    # of a high power had no bound on its time or memory (issue 22).
    expanded: dict[sympy.Basic, sympy.Basic] = {}
    for symbol, expr in substitutions:
        full = expr.xreplace(expanded)
        expanded[symbol] = full
        name = _NAMED_SUMS.get(full)
        if name is None and isinstance(expr, sympy.Pow) and base_name(expr.base):
            base, exponent = base_name(expr.base), expr.exp
            name = {sympy.S.Half: f"sqrt_{base}", -1: f"inverse_{base}", 2: f"{base}_squared",
                    -2: f"inverse_{base}_squared"}.get(exponent)
        if name is None and isinstance(expr, sympy.Mul) and len(expr.args) == 2 and expr.args[0].is_Integer \
                and base_name(expr.args[1]):
            count, base = int(expr.args[0]), base_name(expr.args[1])
            name = {2: f"twice_{base}", -1: f"minus_{base}"}.get(count, f"{base}_times_{count}".replace("-", "minus_"))
        if name is None and _only_in_denominators(symbol, uses):
            name = "denominator"
        names[symbol] = local.unique(name or "term")
    return names


def _only_in_denominators(symbol, expressions) -> bool:
    appearances = [node for expr in expressions for node in sympy.preorder_traversal(expr)
                   if isinstance(node, sympy.Pow) and node.base == symbol and node.exp.is_negative]
    total = sum(expr.count(symbol) for expr in expressions)
    return bool(appearances) and len(appearances) == total


def metric_function_source(derivation: Derivation) -> str:
    """``metric_and_gradient(TP, FN, FP, TN, ops)`` (or ``curve_points``): the metric and its per-sample
    derivatives. Parameters are locals bound to their values; every local name is unique, so a parameter
    called ``value`` or ``ops`` cannot be overwritten by, or shadow, the function's own names."""
    metric = derivation.metric
    local = _LocalNames()
    rename = {}
    lines = []
    for name, value in metric.params:  # checked where the Metric was built, and again here, where it is written
        local_name = local.unique(check_parameter_name(name))
        rename[parameter_symbol(name)] = sympy.Symbol(local_name, real=True)
        lines.append(f"{local_name} = {_literal(parameter_value(name, value))}")
    names = _temporary_names(derivation, local)
    rename.update({symbol: sympy.Symbol(name, real=True) for symbol, name in names.items()})
    for symbol, expr in derivation.common_subexpressions:
        lines.append(f"{names[symbol]} = {print_python(expr.xreplace(rename))}")
    printed = [print_python(expr.xreplace(rename)) for expr in derivation.outputs]
    if derivation.curve is not None:
        outputs = [local.unique(name) for name in ("y", "y_positive", "y_negative", "x", "x_positive", "x_negative")]
        lines += [f"{name} = {code}" for name, code in zip(outputs, printed)]
        lines.append(f"return ({', '.join(outputs[:3])}), ({', '.join(outputs[3:])})")
        body = "\n".join("    " + line for line in lines)
        y, x = (to_text(q.expr) for q in derivation.quantities)
        return (
            "def curve_points(TP, FN, FP, TN, ops):\n"
            f'    """The curve\'s coordinates at each threshold, Y = {y} and X = {x}, each with its derivatives\n'
            "    along one positive sample's soft prediction (∂/∂TP − ∂/∂FN) and one negative's (∂/∂FP − ∂/∂TN).\n"
            "    Elementwise: ops is the runtime's TensorMath (one value per class and threshold).\n"
            '    """\n'
            f"{body}\n"
        )
    outputs = [local.unique(name) for name in ("value", "positive", "negative")]
    lines += [f"{name} = {code}" for name, code in zip(outputs, printed)]
    lines += _domain_lines(metric, outputs, local, rename)
    lines.append(f"return {', '.join(outputs)}")
    body = "\n".join("    " + line for line in lines)
    return (
        "def metric_and_gradient(TP, FN, FP, TN, ops):\n"
        f'    """{metric.name} and its derivatives with respect to one sample\'s soft prediction ŷ:\n'
        "    positive = ∂f/∂TP − ∂f/∂FN (a positive sample), negative = ∂f/∂FP − ∂f/∂TN (a negative one).\n"
        "    Elementwise: ops is the runtime's TensorMath (one value per class and threshold) or FloatMath.\n"
        '    """\n'
        f"{body}\n"
    )


def _domain_lines(metric, outputs, local, rename) -> list[str]:
    """Keep the written domain: where the text divides by something sympy cancelled (FP/FP), the metric
    stays undefined there (multiplying by d/d is 1 where d ≠ 0 and NaN where d = 0: zero_division)."""
    domain = getattr(metric, "domain", ())
    if not domain:
        return []
    guard = " * ".join(f"({print_python(d.xreplace(rename))})/({print_python(d.xreplace(rename))})" for d in domain)
    written = ", ".join(to_text(d) for d in domain)
    defined = local.unique("defined")
    return [f"# the text divides by {written}, which simplification cancelled: undefined where it is 0",
            f"{defined} = {guard}",
            f"{', '.join(outputs)} = {', '.join(f'{name} * {defined}' for name in outputs)}"]


# ---------------------------------------------------------------------------------------------
# The module


def runtime_source() -> str:
    """The runtime's own source, for ``standalone=True``: one copy, read from its file."""
    return RUNTIME_PATH.read_text(encoding="utf-8")


@call_budget("emit")
def emit(derivation: Derivation, options: EmitOptions = EmitOptions(), *, standalone: bool = False) -> str:
    """Python source of a loss module for ``derivation``.

    By default the module imports :mod:`metricc.runtime`; with ``standalone=True`` it carries the
    runtime's source verbatim instead and imports only torch (and math).
    """
    metric = derivation.metric
    loss_class, function_name = loss_names(metric.name)
    relaxation = derivation.relaxation
    runtime_names = ["MetricDefinition", "MetricLoss", "functional_loss", type(relaxation.runtime()).__name__]
    multiclass_relaxation = options.multiclass_relaxation or relaxation
    multiclass = multiclass_relaxation.multiclass_runtime()
    if multiclass is not None and type(multiclass).__name__ not in runtime_names:
        runtime_names.append(type(multiclass).__name__)
    if standalone:
        header = ("# ---- metricc.runtime, inlined verbatim from metricc/runtime.py: the code every metric shares "
                  "----\n\n" + runtime_source().rstrip() + "\n\n\n"
                  "# ---- the loss generated for this metric ----\n")
    else:
        header = f"from metricc.runtime import {', '.join(runtime_names)}\n"
    definition_lines = [
        f"    name={_literal(check_metric_name(metric.name))},",
        f"    expression={_literal(to_text(metric.expr))},",
        f"    direction={_literal(_choice('direction', derivation.direction, ('maximize', 'minimize')))},",
        f"    metric={'metric_and_gradient' if derivation.curve is None else 'curve_points'},",
        f"    relaxation={relaxation.runtime()!r},",
        f"    thresholds={_literal(tuple(float(t) for t in derivation.thresholds))},",
    ]
    if multiclass is not None and derivation.curve is None:
        definition_lines.append(f"    multiclass_relaxation={multiclass!r},")
    if derivation.curve is not None:
        definition_lines.append(f"    curve={_literal(_choice('curve', derivation.curve, ('area', 'sum')))},")
    if derivation.scale_invariant:
        definition_lines.append("    scale_invariant=True,  # f(λ·TP, λ·FN, λ·FP, λ·TN) = f(TP, FN, FP, TN)"
                                if derivation.curve is None else
                                "    scale_invariant=True,  # Y and X unchanged by λ·(TP, FN, FP, TN)")
    option_lines = [f"    {key}={_literal(value)}," for key, value in options.as_dict().items()]
    parts = [
        f'"""{_docstring_text(module_docstring(derivation, loss_class, options))}\n"""\n',
        header,
        f"METRIC_SOURCE = {_literal(metric.source)}  # as written\n",
        metric_function_source(derivation),
        "DEFINITION = MetricDefinition(\n" + "\n".join(definition_lines) + "\n)\n",
        "OPTIONS = dict(  # the defaults this module was compiled with; override any per instance\n"
        + "\n".join(option_lines) + "\n)\n",
        _LOSS_CLASS.format(loss_class=loss_class, function_name=function_name,
                           summary=_docstring_text(f"{derivation.loss_text(metric.name)} of soft predictions")),
    ]
    source = "\n\n".join(part.rstrip("\n") + "\n" for part in parts[:2]) + "\n" + \
        "\n\n".join(part.rstrip("\n") + "\n" for part in parts[2:])
    compile(source, f"<{GENERATOR}:{metric.name}>", "exec")  # fail here, not in the user's import
    return source


_LOSS_CLASS = '''\
class {loss_class}(MetricLoss):
    """{summary}: ``loss_fn(input, target, weight=None)``, a 0-dim tensor.

    Keyword options as metricc.runtime.MetricLoss (task, num_classes, average, from_logits,
    zero_division, estimator, momentum, sync, ...); defaults in OPTIONS.
    """

    def __init__(self, **options):
        super().__init__(DEFINITION, **{{**OPTIONS, **options}})


def {function_name}(input, target, weight=None, **options):
    """The functional form of {loss_class}(**options)(input, target, weight): one module per distinct options,
    built on first use; options that keep state across calls (estimator='running') are refused."""
    return functional_loss({loss_class}, input, target, weight, options)
'''


def module_docstring(derivation: Derivation, loss_class: str, options: EmitOptions = EmitOptions()) -> str:
    metric = derivation.metric
    thresholds = derivation.thresholds
    if derivation.curve is not None:
        threshold_line = (f"the curve's {len(thresholds)} points t_k = " + ", ".join(f"{t:g}" for t in thresholds)
                          + ", between its ends at thresholds 0 and 1")
    elif len(thresholds) > 1:
        threshold_line = "mean of the loss over thresholds t_k = " + ", ".join(f"{t:g}" for t in thresholds)
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
        f"Relaxation   {derivation.relaxation.formula(at=derivation.threshold_name())}",
        f"Thresholds   {threshold_line}",
    ]
    if options.task != "binary":
        header.append(f"Task         {options.task}, {options.num_classes} classes, average={options.average!r}")
    if options.reduce != "batch" or options.ignore_index is not None or options.class_weights is not None:
        header.append(f"Reduction    entries summed per {'image' if options.reduce == 'image' else 'batch'}"
                      + (f", ignore_index={options.ignore_index}" if options.ignore_index is not None else "")
                      + (f", class_weights={options.class_weights!r}" if options.class_weights else ""))
    if metric.params:
        header.append("Parameters   " + ", ".join(f"{k} = {v:g}" for k, v in metric.params))
    usage = {
        "binary": ("logits of shape (N,), (N, 1) or (N, [1,] d1, ...)", "0/1 labels of the input's shape"),
        "multiclass": ("logits of shape (N, C) or (N, C, d1, ...)",
                       "class indices (N, d1, ...), or one-hot rows of the input's shape"),
        "multilabel": ("logits of shape (N, C) or (N, C, d1, ...)", "0/1 labels of the input's shape"),
    }[options.task]
    header += [
        "",
        "Derivation",
        "----------",
        derivation.text(task=options.task, average=options.average, num_classes=options.num_classes),
        "",
        "Usage",
        "-----",
        f"    loss_fn = {loss_class}()    # input: {usage[0]}",
        f"    loss = loss_fn(logits, target)    # target: {usage[1]}",
        "    loss.backward()    # closed-form backward (metricc.runtime), no autograd graph",
    ]
    return "\n".join(header)


__all__ = ["EmitOptions", "emit", "loss_names", "metric_function_source", "print_python", "runtime_source"]
