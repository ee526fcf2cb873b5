"""What of a ``Metric`` may reach generated source: its names, its parameter values, its node types.

A generated loss module is Python source that metricc imports and runs, so nothing in it may come
from a string or an object metricc has not checked. The parser only builds metrics that pass these
checks, but a ``Metric`` can also be built by hand, or changed with ``with_params``: so ``Metric``
itself runs them when it is created, and the code generator runs them again before it writes a
name (issue 22: a parameter named ``x=__import__('os').system(...) or 1#`` was written verbatim as
an assignment target).

- names: ASCII identifiers (Python reads other identifiers through NFKC normalisation, so 'ﬁ'
  would be defined as 'fi'), not keywords, not starting with an underscore, and for parameters not
  one of the grammar's own names nor a name the generated code needs (``torch``, ``ops``, ...);
- parameter values: finite real numbers, stored as Python floats (``repr`` of ``np.float64(0.5)``
  is not Python that the generated module can run);
- nodes: exactly the sympy classes the grammar produces. A subclass, or any other ``Function``,
  could print itself as arbitrary code (sympy's printers call an object's own ``_pythoncode``).
"""

from __future__ import annotations

import keyword
import math
import numbers

import sympy

from .curves import CurveArea, CurveSum
from .errors import MetricSyntaxError

# The grammar's names: the confusion entries, their sums, and the functions.
GRAMMAR_NAMES = frozenset({"TP", "FN", "FP", "TN", "P", "N", "PP", "PN", "n",
                           "sqrt", "log", "exp", "abs", "min", "max", "curve_area", "curve_sum"})
# Module names the generated code imports. (Its local names, such as ``ops`` or ``value``, are renamed
# apart from the parameters' by the code generator.)
GENERATED_NAMES = frozenset({"torch", "math"})
RESERVED_NAMES = GRAMMAR_NAMES | GENERATED_NAMES

# The sympy classes a parsed metric is built of, matched exactly (type(node) is one of them).
ALLOWED_NODES = frozenset({
    sympy.Add, sympy.Mul, sympy.Pow, sympy.Symbol, sympy.exp, sympy.log, sympy.Abs, sympy.Min, sympy.Max,
    CurveArea, CurveSum, sympy.Integer, sympy.Rational, sympy.Float,
    *(type(constant) for constant in (sympy.S.Zero, sympy.S.One, sympy.S.NegativeOne, sympy.S.Half, sympy.E)),
})


_GROUP_GRAMMAR: tuple[frozenset[type], frozenset[str]] = (frozenset(), frozenset())


def allow_group_grammar(nodes, entries) -> None:
    """Admit the group grammar's node types (max_g, ...) and entry names (TP[g], ...) in :func:`check_nodes`.
    metricc.groups registers them when it is imported (with metricc.parse, so always): it belongs to a later
    stage than this module, which cannot import it."""
    global _GROUP_GRAMMAR
    _GROUP_GRAMMAR = (frozenset(nodes), frozenset(entries))


def is_identifier(name) -> bool:
    """An ASCII Python identifier that is not a keyword."""
    return isinstance(name, str) and name.isascii() and name.isidentifier() and not keyword.iskeyword(name)


def check_metric_name(name) -> str:
    """The metric's name (it names the generated loss class and function)."""
    if not is_identifier(name):
        raise MetricSyntaxError(f"metric name {name!r} is not a valid Python identifier "
                                "(ASCII letters, digits and underscores, not starting with a digit, not a keyword)")
    return name


def check_parameter_name(name) -> str:
    """A parameter's name (it becomes a local variable of the generated metric function)."""
    if not is_identifier(name) or name.startswith("_"):
        raise MetricSyntaxError(f"parameter name {name!r} is not allowed: a parameter is named by an ASCII Python "
                                "identifier that is not a keyword and does not start with an underscore")
    if name in RESERVED_NAMES:
        raise MetricSyntaxError(f"parameter name {name!r} is reserved (a name of the grammar or of the generated "
                                "code); choose another")
    return name


def parameter_value(name: str, value) -> float:
    """A parameter's value as a finite Python float (numpy and torch scalars included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MetricSyntaxError(f"parameter {name!r} needs a real number, got {value!r}")
    converted = float(value)
    if not math.isfinite(converted):
        raise MetricSyntaxError(f"parameter {name!r} must be finite, got {value!r}")
    return converted


def checked_params(params) -> tuple[tuple[str, float], ...]:
    """``params`` as sorted ``(name, float)`` pairs, every name and value checked, no name twice."""
    try:
        pairs = [(name, value) for name, value in params]
    except (TypeError, ValueError):
        raise MetricSyntaxError(f"params must be (name, value) pairs, got {params!r}") from None
    names = [check_parameter_name(name) for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise MetricSyntaxError(f"parameter {repeated[0]!r} is given more than once")
    return tuple(sorted((name, parameter_value(name, value)) for name, value in pairs))


def check_nodes(expr, params: tuple[tuple[str, float], ...], what: str = "the expression") -> None:
    """Every node of ``expr`` is one the grammar produces; every symbol a confusion entry or a parameter
    with a value (as ``metricc.metric.parameter_symbol`` makes it)."""
    if not isinstance(expr, sympy.Expr):
        raise MetricSyntaxError(f"{what} must be a sympy expression, got {type(expr).__name__}")
    group_nodes, group_entries = _GROUP_GRAMMAR
    bound = {name for name, _ in params}
    entries = {"TP", "FN", "FP", "TN", *group_entries}
    for node in sympy.preorder_traversal(expr):
        if type(node) not in ALLOWED_NODES and type(node) not in group_nodes:
            raise MetricSyntaxError(f"{what} holds {type(node).__name__} ({node}), which the metric grammar does "
                                    "not produce; build metrics with metricc.parse")
        if type(node) is sympy.Symbol and node.name not in entries:
            if node.name not in bound or node != sympy.Symbol(node.name, real=True):
                raise MetricSyntaxError(f"{what} uses the symbol {node.name!r}, which is neither a confusion entry "
                                        "nor a parameter with a value (pass params={...: value}; build metrics "
                                        "with metricc.parse)")
        elif type(node) is sympy.Symbol and node != sympy.Symbol(node.name, nonnegative=True):
            raise MetricSyntaxError(f"{what} uses a symbol {node.name!r} that is not metricc's confusion entry "
                                    "(build metrics with metricc.parse)")
