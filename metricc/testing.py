"""Hypothesis strategies for property-testing metric losses, yours included.

    >>> from hypothesis import given
    >>> from metricc.testing import metric_expressions, relaxations, batches
    >>> @given(metric_expressions(), relaxations(), batches())
    ... def test_my_property(expression, relaxation, batch):
    ...     loss_fn = metricc.compile_metric(expression.text, params=expression.params or None,
    ...                                      relaxation=relaxation, check=False, direction="maximize")
    ...     loss = loss_fn(*batch)

``metric_expressions()`` writes expressions as *text* from the grammar in
``grammar/metric.ebnf``, so the parser is exercised along with everything after it.
``relaxations()`` draws every relaxation with valid parameters and ``batches()``
draws (logits, target, weight) triples, degenerate ones included.

This module needs hypothesis (``pip install metricc[test]``); ``import metricc``
never imports it. Profiles: set ``METRICC_PROFILE=thorough`` for many more
examples than the quick default (``ci``); see ``docs/testing.md``.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Mapping
from typing import NamedTuple

try:
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("metricc.testing needs hypothesis: pip install 'metricc[test]'") from exc

import torch

from .catalog import catalog
from .metric import Metric
from .relax import Identity, Linear, Relaxation, ScoreOriented, Sigmoid

__all__ = [
    "Batch", "MetricExpression", "PROFILE_VARIABLE", "batches", "confusion_matrices", "metric_expressions",
    "profile", "property_settings", "register_profiles", "relaxations", "thresholds",
]

CONFUSION_NAMES = ("TP", "FN", "FP", "TN")
DERIVED_NAMES = ("P", "N", "PP", "PN", "n")
UNARY_FUNCTIONS = ("sqrt", "log", "exp", "abs")
VARIADIC_FUNCTIONS = ("min", "max")
# Parameter names: ordinary ones, and ones that collide with names inside the generated code
# (locals, arguments, Python soft keywords); a parameter must never be able to shadow them.
PARAMETER_NAMES = ("alpha", "beta", "gamma", "w", "k2", "value", "positive", "p", "threshold", "match", "type",
                   "input", "target", "weight", "loss", "grad", "self", "ctx", "e", "pi", "E", "I", "S", "Q")


# -- expressions -------------------------------------------------------------------------

class MetricExpression(NamedTuple):
    """A drawn metric: the text to compile and the parameter values it needs.

    Unpacks as ``text, params = expression``; ``params`` is empty when the text
    uses no parameter (pass ``params=expression.params or None``).
    """

    text: str
    params: dict

    def metric(self) -> Metric:
        """The parsed :class:`metricc.Metric`."""
        from .parse import parse

        return parse(self.text, self.params or None)

    def call(self, function: str = "metricc.compile_metric", **options) -> str:
        """A one-line Python call that reproduces a failure, e.g. for ``hypothesis.note``."""
        arguments = [repr(self.text)]
        if self.params:
            arguments.append(f"params={self.params!r}")
        arguments += [f"{key}={value!r}" for key, value in options.items()]
        return f"{function}({', '.join(arguments)})"


@dataclasses.dataclass(frozen=True)
class _Node:
    """A piece of expression text and what composing it needs to know."""

    text: str
    level: int  # 0 sum, 1 product, 2 unary, 3 power, 4 atom: Python's precedence
    symbolic: bool  # mentions a confusion symbol (or derived one)


_SUM, _PRODUCT, _UNARY, _POWER, _ATOM = range(5)


def _wrap(node: _Node, level: int) -> str:
    """The node's text, parenthesised if it binds more loosely than ``level`` needs."""
    return node.text if node.level >= level else f"({node.text})"


_NUMBERS = st.sampled_from([
    "1", "2", "3", "10", "0.5", ".5", "5.", "0.25", "1.5", "1e-3", "2.5E1", "1_000", "0.1", "7",
    "2**-1", "10**2", "0.5**2", "2**2**2",
])
# Exponents are numeric constants (the grammar's ``exponent``): integers, fractions and powers.
_EXPONENTS = st.one_of(
    st.sampled_from(["2", "3", "-1", "(1/2)", "0.5", "-2", "(2/3)", "1.5", "-(1/2)", "(-1)", "2**-1", "+3",
                     "(3/2)", "-0.5", "4", "(1/3)", "1e0", "2**2"]),
    st.integers(-6, 8).map(str),
    st.sampled_from(["64", "-64", "(63/2)"]),  # the grammar's limit
)


@st.composite
def _parameter(draw, names) -> tuple[str, float]:
    name = draw(st.sampled_from(names))
    value = draw(st.one_of(st.sampled_from([0.5, 1.0, 2.0, 0.3, 0.7]),
                           st.floats(0.05, 10.0, allow_nan=False, allow_infinity=False)))
    return name, value


@st.composite
def _leaf(draw, used: dict, scale_invariant: bool, parameters: bool, symbolic: bool = False) -> _Node:
    kinds = ["symbol", "derived"] + ([] if symbolic else ["number"] + (["parameter"] if parameters else []))
    kind = draw(st.sampled_from(kinds))
    if kind == "number":
        text = draw(_NUMBERS)
        return _Node(text, _POWER if "**" in text else _ATOM, False)
    if kind == "parameter":
        name, value = draw(_parameter(PARAMETER_NAMES))
        used.setdefault(name, value)  # one value per name, however often it appears
        return _Node(name, _ATOM, False)
    if not scale_invariant:
        names = CONFUSION_NAMES if kind == "symbol" else DERIVED_NAMES
        return _Node(draw(st.sampled_from(names)), _ATOM, True)
    # A rate: a count over a sum of counts, so every composition stays scale-invariant.
    numerator = draw(st.sampled_from(CONFUSION_NAMES + DERIVED_NAMES))
    denominator = draw(st.sampled_from(DERIVED_NAMES + ("(TP + FP + FN)", "(TN + FN)", "(TP + FN + FP + TN)")))
    return _Node(f"{numerator}/{denominator}", _PRODUCT, True)


def _symbolic_leaf(scale_invariant: bool) -> st.SearchStrategy[_Node]:
    return _leaf({}, scale_invariant, False, symbolic=True)


@st.composite
def _expression(draw, depth: int, used: dict, scale_invariant: bool, parameters: bool, functions: bool) -> _Node:
    """A random expression node, ``depth`` levels deep at most.

    Subtrees without a confusion symbol stay tiny (a number or parameter, a power of
    one, or a sum or product of two), so constants never overflow or fold into
    something the grammar's limits refuse; every other operand mentions a symbol.
    """
    # Choice 0 is a leaf, so hypothesis shrinks failures towards small expressions.
    kinds = ["leaf", "sum", "product", "unary", "power"] + (["call", "call2"] if functions else [])
    kind = draw(st.sampled_from(kinds)) if depth > 0 else "leaf"
    recurse = _expression(depth - 1, used, scale_invariant, parameters, functions)
    space = draw(st.sampled_from(["", " "]))

    def symbolic(node: _Node) -> _Node:
        return node if node.symbolic else draw(_symbolic_leaf(scale_invariant))

    if kind == "leaf":
        return draw(_leaf(used, scale_invariant, parameters))
    if kind in ("sum", "product"):
        left, right = draw(recurse), draw(recurse)
        if not (left.symbolic or right.symbolic) and min(left.level, right.level) < _POWER:
            right = symbolic(right)  # constant composites stay one level deep
        op = draw(st.sampled_from(["+", "-"] if kind == "sum" else ["*", "/"]))
        level = _SUM if kind == "sum" else _PRODUCT
        text = f"{_wrap(left, level)}{space}{op}{space}{_wrap(right, level + 1)}"
        return _Node(text, level, left.symbolic or right.symbolic)
    if kind == "unary":
        operand = draw(recurse)
        op = draw(st.sampled_from(["-", "+", "- "]))
        return _Node(f"{op}{_wrap(operand, _UNARY)}", _UNARY, operand.symbolic)
    if kind == "power":
        base = draw(recurse)
        if base.symbolic:
            exponent = draw(_EXPONENTS)
        elif base.level == _ATOM:  # a number or parameter: small exponents keep the constant small
            exponent = draw(st.sampled_from(["2", "3", "-1", "-2", "(1/2)"]))
        else:
            base, exponent = symbolic(base), draw(_EXPONENTS)
        return _Node(f"{_wrap(base, _ATOM)}{space}**{space}{exponent}", _POWER, base.symbolic)
    if kind == "call":
        argument = symbolic(draw(recurse))
        name = draw(st.sampled_from(UNARY_FUNCTIONS))
        return _Node(f"{name}({argument.text})", _ATOM, True)
    arguments = draw(st.lists(recurse, min_size=2, max_size=3))
    arguments[0] = symbolic(arguments[0])
    name = draw(st.sampled_from(VARIADIC_FUNCTIONS))
    text = f"{name}({(',' + space).join(a.text for a in arguments)})"
    return _Node(text, _ATOM, True)


@st.composite
def _raw_expressions(draw, max_depth: int = 3, scale_invariant: bool = False, parameters: bool = True,
                     functions: bool = True) -> MetricExpression:
    used: dict[str, float] = {}
    node = draw(_expression(max_depth, used, scale_invariant, parameters, functions))
    if not node.symbolic:  # a metric must mention the confusion matrix
        symbol = draw(_symbolic_leaf(scale_invariant))
        node = _Node(f"{_wrap(node, _PRODUCT)}*{_wrap(symbol, _UNARY)}", _PRODUCT, True)
    padding = draw(st.sampled_from(["", " ", "\n", "  \t"]))
    # Parameters drawn for subtrees that were replaced are not in the text: keep only the used ones.
    names = {name.id for name in ast.walk(ast.parse(node.text, mode="eval")) if isinstance(name, ast.Name)}
    return MetricExpression(f"{padding}{node.text}{padding}", {k: v for k, v in used.items() if k in names})


@st.composite
def _catalog_expressions(draw) -> MetricExpression:
    entry = draw(st.sampled_from([e for e in catalog().values() if not e.is_curve]))
    params = {}
    for name, _ in entry.params:
        if draw(st.booleans()):
            params[name] = draw(st.floats(0.1, 5.0, allow_nan=False))
    return MetricExpression(entry.name, params)


# What the parser refuses in grammatical text for its meaning: symbols that cancel (TP - TP),
# constants that fold to a zero divisor (TP/(1 - 1)), roots or logs of negatives (sqrt(-TP)); and
# beyond the structural limits of metricc.limits (nested powers, exp of exp).
SEMANTIC_REJECTIONS = ("uses no confusion symbol", "division by zero", "is imaginary", "is not real",
                       "has degree", "expands to up to", "exp() of an exp()")


def _accepted(expression: MetricExpression) -> bool:
    """Whether the parser accepts the text; refusals other than :data:`SEMANTIC_REJECTIONS` propagate."""
    from .errors import MetricSyntaxError

    try:
        expression.metric()
    except MetricSyntaxError as error:
        if any(reason in str(error) for reason in SEMANTIC_REJECTIONS):
            return False
        raise
    return True


def metric_expressions(*, max_depth: int = 3, scale_invariant: bool = False, parameters: bool = True,
                       functions: bool = True, catalog_names: bool = True) -> st.SearchStrategy[MetricExpression]:
    """Well-formed metric expressions from the grammar, as :class:`MetricExpression` (text, params).

    Every operator (``+ - * / **``, unary ``+ -``), every function (``sqrt log exp abs
    min max``, the last two with 2 or 3 arguments), the confusion and derived symbols,
    numbers in every literal form, numeric exponents (fractional, negative, chained,
    up to the grammar's limit of 64), parameters (with positive values) and catalog
    names. Parentheses appear only where precedence needs them, with varied spacing.

    Args:
        max_depth: nesting depth of operators and calls; keeps sympy's derivation fast.
        scale_invariant: build from rates such as ``TP/P`` only, so that every drawn
            metric is unchanged when the batch is duplicated (a "ratio" metric).
        parameters: include named parameters.
        functions: include function calls.
        catalog_names: sometimes draw a catalog name (with some parameters overridden).

    Grammatical text the parser refuses for its meaning (symbols that cancel, as in
    ``TP - TP``; a constant divisor that folds to 0; an imaginary root such as
    ``sqrt(-TP)``) is filtered out, so every drawn expression parses.
    """
    drawn = _raw_expressions(max_depth, scale_invariant, parameters, functions).filter(_accepted)
    if catalog_names:
        return st.one_of(drawn, _catalog_expressions())
    return drawn


# -- relaxations, thresholds -------------------------------------------------------------

def _unit(lo: float = 0.02, hi: float = 0.98) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def relaxations(kinds: tuple[str, ...] = ("sigmoid", "linear", "identity", "sol"), *,
                max_scale: float = 200.0) -> st.SearchStrategy[Relaxation]:
    """Every relaxation, with valid parameters (AnyLoss's ``Sigmoid(73, 0.5)`` and the defaults often).

    Args:
        kinds: which of ``"sigmoid"``, ``"linear"``, ``"identity"``, ``"sol"`` to draw.
        max_scale: the largest Sigmoid ``L`` (steeper ones need tiny finite-difference steps).
    """
    choices: list[st.SearchStrategy[Relaxation]] = []
    if "sigmoid" in kinds:
        choices.append(st.one_of(st.just(Sigmoid()),
                                 st.builds(Sigmoid, L=st.floats(0.5, max_scale), threshold=_unit())))
    if "linear" in kinds:
        choices.append(st.one_of(st.just(Linear()), st.builds(Linear, threshold=_unit(), delta=_unit(0.01, 0.49))))
    if "identity" in kinds:
        choices.append(st.just(Identity()))
    if "sol" in kinds:
        choices.append(st.builds(ScoreOriented, distribution=st.sampled_from(["uniform", "cosine"]),
                                 mu=_unit(0.05, 0.95), delta=st.floats(0.01, 1.0)))
    if not choices:
        raise ValueError(f"no relaxation kind among {kinds!r}")
    return st.one_of(choices)


def thresholds(max_count: int = 9) -> st.SearchStrategy[tuple[float, ...] | None]:
    """``None`` (the relaxation's own threshold) or 1 to ``max_count`` thresholds to average over."""
    return st.one_of(st.none(), st.lists(_unit(0.05, 0.95), min_size=1, max_size=max_count).map(tuple))


# -- batches -----------------------------------------------------------------------------

class Batch(NamedTuple):
    """A batch for ``loss_fn(*batch)``: logits, 0/1 targets (int64) and optional weights."""

    logits: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None


LABELINGS = ("mixed", "single_positive", "single_negative", "no_positives", "all_positives")


@st.composite
def batches(draw, *, min_size: int = 1, max_size: int = 4096,
            dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64), weighted: bool | None = None,
            labelings: tuple[str, ...] = LABELINGS, max_logit: float = 1e4) -> Batch:
    """(logits, target, weight) batches, from tiny to a few thousand samples.

    Values come from a drawn seed (so large batches stay cheap to draw and to shrink);
    what is drawn explicitly is what matters for losses: the size, the labeling
    (mixed, a single positive, a single negative, no positives, all positives), the
    logit scale and offset (up to ``max_logit`` in magnitude, where sigmoids saturate),
    the dtype, and the weights (none, positive, some zero, integer counts).

    Args:
        min_size, max_size: the number of samples.
        dtypes: the logits' dtypes to draw from (weights share it).
        weighted: always (True), never (False) or sometimes (None) draw weights.
        labelings: which of :data:`LABELINGS` to draw.
        max_logit: the largest logit magnitude.
    """
    size = draw(st.one_of(st.integers(min_size, min(max_size, max(min_size, 16))),
                          st.integers(min_size, max_size)))
    labeling = draw(st.sampled_from(labelings))
    scale = draw(st.sampled_from([s for s in (1.0, 3.0, 0.1, 10.0, 30.0, 100.0, 1e4) if s <= max_logit]))
    offset = draw(st.sampled_from([0.0, 0.0, 1.0, -2.0, 5.0]))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**32 - 1))
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(size, generator=generator, dtype=torch.float64) * scale + offset)
    logits = logits.clamp(-max_logit, max_logit).to(dtype)
    if labeling == "mixed":
        prevalence = draw(st.sampled_from([0.5, 0.1, 0.01, 0.9]))
        target = (torch.rand(size, generator=generator) < prevalence).long()
    elif labeling in ("no_positives", "single_positive"):
        target = torch.zeros(size, dtype=torch.long)
        if labeling == "single_positive":
            target[int(torch.randint(size, (1,), generator=generator))] = 1
    else:
        target = torch.ones(size, dtype=torch.long)
        if labeling == "single_negative":
            target[int(torch.randint(size, (1,), generator=generator))] = 0
    weighting = "none" if weighted is False else draw(st.sampled_from(
        ["positive", "some_zero", "counts"] if weighted else ["none", "none", "positive", "some_zero", "counts"]))
    weight = None
    if weighting == "positive":
        weight = torch.rand(size, generator=generator, dtype=torch.float64) * 2 + 0.05
    elif weighting == "some_zero":
        weight = torch.rand(size, generator=generator, dtype=torch.float64)
        weight[torch.rand(size, generator=generator) < 0.3] = 0.0
    elif weighting == "counts":
        weight = torch.randint(0, 4, (size,), generator=generator).to(torch.float64)
    return Batch(logits, target, None if weight is None else weight.to(dtype))


@st.composite
def confusion_matrices(draw, *, max_count: int = 10**6, integers: bool | None = None) -> tuple:
    """(TP, FN, FP, TN): non-negative, not all zero; integers or fractions, zeros and extremes often.

    Entries are exact (``int`` or ``fractions.Fraction``), so a test can evaluate a metric
    on them without rounding.
    """

    def entry():
        whole = st.one_of(st.sampled_from([0, 1, 2, 3, 10]), st.integers(0, max_count))
        if integers:
            return whole
        fraction = st.fractions(min_value=0, max_value=max_count, max_denominator=10**6)
        return st.one_of(whole, fraction) if integers is None else fraction

    values = list(draw(st.tuples(entry(), entry(), entry(), entry())))
    if not any(values):  # n > 0: one sample somewhere
        values[draw(st.integers(0, 3))] = 1
    return tuple(values)


# -- profiles ----------------------------------------------------------------------------

PROFILE_VARIABLE = "METRICC_PROFILE"
#: profile name -> factor on each test's CI example count
PROFILES: Mapping[str, int] = {"ci": 1, "thorough": 20}


def profile() -> str:
    """The selected profile: ``$METRICC_PROFILE`` (``ci`` by default, or ``thorough``)."""
    name = os.environ.get(PROFILE_VARIABLE, "ci").strip().lower() or "ci"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_VARIABLE}={name!r}: choose one of {', '.join(PROFILES)}")
    return name


def register_profiles() -> None:
    """Register hypothesis profiles ``metricc-ci`` and ``metricc-thorough``.

    Both switch the per-example deadline off (a compile runs sympy for seconds), print
    the reproduction blob (``@reproduce_failure``), and skip hypothesis's "explain" phase
    (it traces every line, which makes sympy many times slower). ``ci`` is derandomized
    (a fixed seed per test, derived from its name) and keeps no example database, so CI
    runs draw the same examples every time and take a predictable time; ``thorough``
    explores new examples each run and replays saved failures from ``.hypothesis/`` first.
    """
    phases = [phase for phase in Phase if phase is not Phase.explain]
    common = dict(deadline=None, print_blob=True, phases=phases,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large])
    # From hypothesis's own defaults, not from whatever profile is loaded now (a conftest may have loaded ours).
    parent = settings.get_profile("default")
    settings.register_profile("metricc-ci", parent=parent, derandomize=True, database=None, **common)
    settings.register_profile("metricc-thorough", parent=parent, derandomize=False, **common)


def property_settings(max_examples: int, *, thorough: int | None = None, **overrides) -> settings:
    """Settings for one property test under the selected profile.

    Args:
        max_examples: the number of examples under ``ci``.
        thorough: the number under ``thorough``; by default ``max_examples`` times the profile's factor.
        overrides: other hypothesis settings.
    """
    register_profiles()
    name = profile()
    count = max_examples * PROFILES[name] if thorough is None or name == "ci" else max(thorough, max_examples)
    return settings(settings.get_profile(f"metricc-{name}"), max_examples=count, **overrides)
