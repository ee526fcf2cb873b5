"""A problem's derivation to Python source: the generated module of a constrained or grouped loss.

The module reads like a metric's (:mod:`metricc.emit`): the derivation as its docstring, then one function per
quantity (each reduced group term h, the objective f, each constraint c_k) returning its value and derivatives as
printed by sympy, a :class:`metricc.lagrangian.ProblemDefinition` and the loss class, over
:mod:`metricc.lagrangian` (which runs the Lagrangian and its multipliers) and :mod:`metricc.runtime`. With
``standalone=True`` both are carried verbatim above it, so the file imports only torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import sympy

from . import groups as _groups
from .derive import Derivation
from .derive_problem import ProblemDerivation, QuantityDerivation
from .emit import (
    GENERATOR,
    _docstring_text,
    _LocalNames,
    _temporary_names,
    as_own_strings,
    as_plain_values,
    check_loss_options,
    loss_names,
    print_python,
    runtime_source,
)
from .metric import to_text
from .runtime import ESTIMATORS

LAGRANGIAN_PATH = Path(__file__).with_name("lagrangian.py")
_GROUP_ARGUMENTS = ("TP_g", "FN_g", "FP_g", "TN_g")
# In a standalone file the runtime's names are the file's own: the import becomes a namespace of them.
_LAGRANGIAN_IMPORTS = ("from . import runtime as _runtime\n", "from .runtime import TensorMath\n")
_STANDALONE_IMPORT = "import types as _types\n\n_runtime = _types.SimpleNamespace(**globals())  # the runtime above\n"


@dataclasses.dataclass(frozen=True)
class ProblemOptions:
    """Defaults baked into the generated loss class (``OPTIONS``); any can be overridden per instance."""

    from_logits: bool = True
    zero_division: float | None = 0.0
    estimator: str = "batch"
    momentum: float = 0.9
    sync: bool = False
    grad_average: bool = True
    validate: bool = True
    multiplier_lr: float = 0.05
    max_multiplier: float = 100.0
    multiplier_update: str = "auto"
    constraint_rates: str = "hard"
    penalty: float = 0.0

    def __post_init__(self):
        from .lagrangian import CONSTRAINT_RATES, MULTIPLIER_UPDATES, check_multiplier_options

        as_plain_values(self, reals=("zero_division", "momentum", "multiplier_lr", "max_multiplier", "penalty"))
        check_loss_options(self)
        check_multiplier_options(self.multiplier_lr, self.max_multiplier, self.multiplier_update,
                                 self.constraint_rates, self.penalty)
        as_own_strings(self, {"estimator": ESTIMATORS, "multiplier_update": MULTIPLIER_UPDATES,
                              "constraint_rates": CONSTRAINT_RATES})

    def as_dict(self) -> dict:
        defaults = ProblemOptions()
        always = ("from_logits", "zero_division", "multiplier_lr")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name in always or getattr(self, f.name) != getattr(defaults, f.name)}


def lagrangian_source(standalone: bool = False) -> str:
    """metricc/lagrangian.py; for a standalone file, its imports of the runtime replaced by the inlined one."""
    source = LAGRANGIAN_PATH.read_text(encoding="utf-8")
    if standalone:
        for line in _LAGRANGIAN_IMPORTS:
            if line not in source:
                raise RuntimeError(f"metricc/lagrangian.py no longer imports the runtime as {line.strip()!r}")
        source = source.replace(_LAGRANGIAN_IMPORTS[0], _STANDALONE_IMPORT).replace(_LAGRANGIAN_IMPORTS[1], "")
    return source


def quantity_function_source(quantity: QuantityDerivation, function_name: str, reductions: int) -> str:
    """``function_name(TP, FN, FP, TN, TP_g, FN_g, FP_g, TN_g, r, ops)``: the six outputs of a Quantity."""
    local = _LocalNames()
    local.taken |= {*_GROUP_ARGUMENTS, "r"}
    rename = {symbol: sympy.Symbol(name, real=True) for symbol, name in zip(_groups.GROUP_SYMBOLS, _GROUP_ARGUMENTS)}
    lines = []
    used_reductions = [k for k in range(reductions) if _groups.reduction_symbol(k) in quantity.expr.free_symbols]
    if used_reductions:
        names = [local.unique(f"r{k + 1}") for k in range(reductions)]
        rename.update({_groups.reduction_symbol(k): sympy.Symbol(name, real=True) for k, name in enumerate(names)})
        lines.append(f"{', '.join(names)}, = r" if len(names) == 1 else f"{', '.join(names)} = r")
    renamed = types.SimpleNamespace(
        common_subexpressions=tuple((s, e.xreplace(rename)) for s, e in quantity.common_subexpressions),
        outputs=tuple(e.xreplace(rename) for e in quantity.outputs))
    temporaries = _temporary_names(typing.cast(Derivation, renamed), local)
    rename.update({symbol: sympy.Symbol(name, real=True) for symbol, name in temporaries.items()})
    for symbol, expr in quantity.common_subexpressions:
        lines.append(f"{temporaries[symbol]} = {print_python(expr.xreplace(rename))}")
    printed = [print_python(expr.xreplace(rename)) for expr in quantity.outputs]
    outputs = [local.unique(name) for name in ("value", "positive", "negative", "group_positive", "group_negative")]
    lines += [f"{name} = {code}" for name, code in zip(outputs, printed[:5])]
    by_reduction = printed[5:]
    reduced = "(" + "".join(f"{code}, " for code in by_reduction).rstrip(" ") + ")" if by_reduction else "()"
    lines.append(f"return {', '.join(outputs)}, {reduced}")
    body = "\n".join("    " + line for line in lines)
    kind = "group term" if quantity.name.startswith("h") else "objective" if quantity.name == "f" else "constraint"
    return (f"def {function_name}(TP, FN, FP, TN, TP_g, FN_g, FP_g, TN_g, r, ops):\n"
            f'    """The {kind} {quantity.name} = {_docstring_text(to_text(quantity.expr))}:\n'
            "    its value and derivatives along one positive (negative) sample's ŷ through the batch's entries and\n"
            "    its group's, and by each reduction r. Elementwise over groups and columns (ops: TensorMath).\n"
            '    """\n'
            f"{body}\n")


def emit_problem(derivation: ProblemDerivation, options: ProblemOptions = ProblemOptions(), *,
                 standalone: bool = False) -> str:
    """Python source of the loss module for a problem (see the module docstring)."""
    problem = derivation.problem
    metric = problem.objective
    loss_class, function_name = loss_names(metric.name)
    relaxation = derivation.relaxation.runtime()
    count = len(derivation.reductions)
    functions = [quantity_function_source(term, f"group_term_{k}", 0) for k, term in enumerate(derivation.terms, 1)]
    functions.append(quantity_function_source(derivation.objective, "objective", count))
    functions += [quantity_function_source(q, f"constraint_{k}", count)
                  for k, q in enumerate(derivation.constraints, 1)]
    terms = "".join(f"        Quantity(name={t.name!r}, function=group_term_{k}, per_group=True, "
                    f"expression={to_text(t.expr)!r}),\n" for k, t in enumerate(derivation.terms, 1))
    constraints = "".join(
        f"        Quantity(name={q.name!r}, function=constraint_{k}, per_group={c.per_group!r}, "
        f"expression={to_text(c.metric.expr)!r}, sense={c.sense!r}, level={c.level!r}),\n"
        for k, (c, q) in enumerate(zip(problem.constraints, derivation.constraints), 1))
    reductions = ", ".join(f"({r.kind!r}, {index})" for r, index in zip(derivation.reductions,
                                                                       derivation.reduction_terms))
    definition = (
        "DEFINITION = ProblemDefinition(\n"
        f"    name={metric.name!r},\n"
        f"    expression={to_text(metric.expr)!r},\n"
        f"    direction={derivation.direction!r},\n"
        f"    objective=Quantity(name='f', function=objective, expression={to_text(metric.expr)!r}),\n"
        f"    constraints=(\n{constraints}    ),\n"
        f"    terms=(\n{terms}    ),\n"
        f"    reductions=({reductions}{',' if count == 1 else ''}),\n"
        f"    groups={problem.groups!r},\n"
        f"    grouped={problem.grouped!r},\n"
        f"    relaxation={relaxation!r},\n"
        f"    threshold={(derivation.thresholds or (0.5,))[0]!r},\n"
        f"    scale_invariant={derivation.scale_invariant!r},\n"
        f"    row_names={tuple(problem.row_names())!r},\n"
        ")\n")
    option_lines = "".join(f"    {key}={value!r},\n" for key, value in options.as_dict().items())
    if standalone:
        header = ("# ---- metricc.runtime and metricc.lagrangian, inlined verbatim: the code every loss shares ----\n\n"
                  + runtime_source().rstrip() + "\n\n\n" + lagrangian_source(standalone=True).rstrip() + "\n\n\n"
                  "# ---- the loss generated for this problem ----\n")
    else:
        header = (f"from metricc.lagrangian import ConstrainedMetricLoss, ProblemDefinition, Quantity\n"
                  f"from metricc.runtime import {type(relaxation).__name__}\n")
    parts = [
        f'"""{_docstring_text(module_docstring(derivation, loss_class))}\n"""\n',
        header,
        f"METRIC_SOURCE = {metric.source!r}  # as written\n",
        *functions,
        definition,
        "OPTIONS = dict(  # the defaults this module was compiled with; override any per instance\n"
        + option_lines + ")\n",
        _LOSS_CLASS.format(loss_class=loss_class, function_name=function_name),
    ]
    source = "\n\n".join(part.rstrip("\n") + "\n" for part in parts[:2]) + "\n" + \
        "\n\n".join(part.rstrip("\n") + "\n" for part in parts[2:])
    compile(source, f"<{GENERATOR}:{metric.name}>", "exec")  # fail here, not in the user's import
    return source


_LOSS_CLASS = '''\
class {loss_class}(ConstrainedMetricLoss):
    """The Lagrangian of the objective and its constraints: ``loss_fn(input, target, weight=None, groups=None)``.

    Keyword options as metricc.lagrangian.ConstrainedMetricLoss (multiplier_lr, constraint_rates, estimator,
    sync, ...); defaults in OPTIONS. ``loss_fn.multipliers`` and ``loss_fn.constraint_values`` for logging.
    """

    def __init__(self, **options):
        super().__init__(DEFINITION, **{{**OPTIONS, **options}})


def {function_name}(input, target, weight=None, groups=None, **options):
    """The functional form: {loss_class}(**options)(input, target, weight, groups=groups); its multipliers start
    at 0 on every call, so it is the objective's loss alone: keep a {loss_class} to train with the constraints."""
    return {loss_class}(**options)(input, target, weight, groups=groups)
'''


def module_docstring(derivation: ProblemDerivation, loss_class: str) -> str:
    problem = derivation.problem
    metric = problem.objective
    lines = [f"{metric.name}: a PyTorch loss generated by {GENERATOR}, an objective metric with constraints"
             + (" over groups." if problem.grouped else "."), "",
             "Do not edit: regenerate with `metricc compile` instead.", "",
             f"Objective    {metric.name} = {to_text(metric.expr)}",
             f"Written as   {metric.source}"]
    for constraint in problem.constraints:
        lines.append(f"Constraint   {constraint.text or constraint.describe()}")
    if problem.grouped:
        lines.append(f"Groups       G = {problem.groups}: each call needs groups=, an (N,) tensor of group indices")
    lines += [f"Direction    {derivation.direction}: loss = {derivation.loss_text(metric.name)}",
              f"Relaxation   {derivation.relaxation.formula()}", "", "Derivation", "----------", derivation.text(), "",
              "Usage", "-----",
              f"    loss_fn = {loss_class}()    # input: logits of shape (N,) or (N, 1)",
              f"    loss = loss_fn(logits, target{', groups=group_ids' if problem.grouped else ''})",
              "    loss.backward()    # closed-form backward of the Lagrangian; the multipliers step after each "
              "training call",
              "    loss_fn.constraint_values, loss_fn.multipliers    # for logging (the multipliers are in state_dict)"]
    return "\n".join(lines)


__all__ = ["ProblemOptions", "emit_problem", "lagrangian_source", "quantity_function_source"]
