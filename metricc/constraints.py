"""Constraints: ``expr <= c`` and ``expr >= c`` over the metric grammar, and "objective subject to constraints".

"The highest recall at precision ≥ 0.9" is an objective with a constraint, not a metric: the constraint shapes
the model together with the objective (Eban et al., AISTATS 2017), and threshold tuning after training cannot
replace it where the best model under the constraint is not BCE's model at another threshold. A constraint is a
comparison whose sides are expressions of the grammar (or catalog names):

    precision >= 0.9                    FP/(FP + TN) <= 0.01
    0.8 <= precision <= 0.95            two constraints
    max_g(TP[g]/P[g]) - min_g(TP[g]/P[g]) <= 0.05
    TP[g]/P[g] - TP/P <= 0.05           one constraint per group (g left free)

``compile_metric("recall", constraints=["precision >= 0.9"])`` and ``compile_metric("recall subject to precision
>= 0.9")`` mean the same. Like a metric, the text goes through Python's parser and the grammar's whitelist and is
never evaluated; errors point at the column. Each constraint is a :class:`Constraint`: the constrained expression
as a :class:`metricc.Metric`, its sense and its level, so that the analysis can check it as a metric (range,
singular batches) and refuse a level it can never reach.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import NoReturn

import sympy

from . import groups
from .catalog import closest_names, lookup
from .errors import MetricSyntaxError
from .metric import CONFUSION_SYMBOLS, Metric, to_text
from .parse import _check_params, _check_raw_text, _Converter, _surviving_params, parse

SENSES = ("<=", ">=")
_OPERATORS = {ast.LtE: "<=", ast.GtE: ">="}
_FLIPPED = {"<=": ">=", ">=": "<="}
_REFUSED_OPERATORS = {
    ast.Lt: "'<' is not a constraint a loss can tell from '<=': write <=",
    ast.Gt: "'>' is not a constraint a loss can tell from '>=': write >=",
    ast.Eq: "'==' asks for an exact value, which soft predictions never reach: write two constraints (x >= c and "
            "x <= c + tolerance), or abs(x - c) <= tolerance",
    ast.NotEq: "'!=' is not a constraint a loss can pursue",
}
_SUBJECT_TO = re.compile(r"\bsubject\s+to\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Constraint:
    """``metric <= level`` or ``metric >= level``.

    Attributes:
        metric: the constrained expression as a metric (``source`` as written; for ``a <= b`` with entries on
            both sides it is ``a - b`` with level 0).
        sense: ``"<="`` or ``">="``.
        level: the bound c.
        text: the constraint as written (one comparison of a chain).
    """

    metric: Metric
    sense: str
    level: float
    text: str = ""

    def __post_init__(self):
        if self.sense not in SENSES:
            raise ValueError(f"sense must be one of {SENSES}, got {self.sense!r}")
        if not isinstance(self.level, float):
            object.__setattr__(self, "level", float(self.level))

    @property
    def sign(self) -> int:
        """+1 for ``<=`` (the slack is expr − c), −1 for ``>=`` (c − expr)."""
        return 1 if self.sense == "<=" else -1

    def slack(self) -> sympy.Expr:
        """h with the constraint holding exactly where h ≤ 0: expr − c, or c − expr; the Lagrangian adds λ·h."""
        level = sympy.Rational(repr(self.level))
        return self.sign * (self.metric.expr - level)

    @property
    def per_group(self) -> bool:
        """Whether g is left free: the constraint then holds for every group, one row per group."""
        return groups.free_group_entries(self.metric.expr)

    def describe(self) -> str:
        return f"{to_text(self.metric.expr)} {self.sense} {self.level:g}"


def parse_constraints(constraints, params: Mapping[str, float] | None = None) -> tuple[Constraint, ...]:
    """Constraints from text (one string, or a sequence of strings and :class:`Constraint`\\ s).

    Raises:
        MetricSyntaxError: a constraint is not a comparison of the grammar's expressions with ``<=``/``>=``.
    """
    if constraints is None:
        return ()
    if isinstance(constraints, (str, Constraint)):
        constraints = [constraints]
    if not isinstance(constraints, Sequence):
        raise MetricSyntaxError(f"constraints must be a list of strings such as 'precision >= 0.9', not "
                                f"{type(constraints).__name__}")
    parsed: list[Constraint] = []
    for item in constraints:
        if isinstance(item, Constraint):
            parsed.append(item)
        elif isinstance(item, str):
            parsed += parse_constraint(item, params)
        else:
            raise MetricSyntaxError(f"a constraint must be a string such as 'precision >= 0.9', not "
                                    f"{type(item).__name__} {item!r}")
    return _named(parsed)


def is_comparison(text) -> bool:
    """Whether ``text`` is one comparison (``precision >= 0.9``), so that a command can take it as a constraint."""
    if not isinstance(text, str) or ("<=" not in text and ">=" not in text):
        return False
    try:
        return isinstance(ast.parse(text.strip(), mode="eval").body, ast.Compare)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def parse_constraint(text: str, params: Mapping[str, float] | None = None) -> list[Constraint]:
    """One comparison (a chain ``a <= x <= b`` gives two constraints)."""
    params = _check_params(params)
    _check_raw_text(text)
    stripped = text.strip()
    return _comparisons(_syntax_tree(stripped, stripped), stripped, params)


def split_problem(text: str, params: Mapping[str, float] | None = None) -> tuple[str, tuple[Constraint, ...]] | None:
    """``"recall subject to precision >= 0.9, FPR <= 0.1"`` → ("recall", its constraints); None without
    "subject to". Constraints are separated by commas or ``and``."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    match = _SUBJECT_TO.search(stripped)
    if match is None:
        return None
    params = _check_params(params)
    _check_raw_text(stripped)
    objective = stripped[:match.start()].strip()
    if not objective:
        raise MetricSyntaxError("'subject to' needs an objective before it, as in 'recall subject to precision >= "
                                "0.9'", stripped, match.start(), match.end() - match.start())
    rest = stripped[match.end():]
    if not rest.strip():
        raise MetricSyntaxError("'subject to' needs at least one constraint after it, such as 'precision >= 0.9'",
                                stripped, match.start(), match.end() - match.start())
    # Parse the constraints where they stand in the text: the objective and 'subject to' are blanked out (line
    # breaks kept), and an opening parenthesis in their place lets a list of comparisons parse as a tuple, so
    # every node's column is its column in the text the user wrote.
    blank = "".join(c if c == "\n" else " " for c in stripped[:match.end()])
    masked = "(" + blank[1:] + rest + "\n)"
    tree = _syntax_tree(masked, stripped)
    found: list[Constraint] = []
    for item in _joined(tree, stripped):
        found += _comparisons(item, stripped, params)
    return objective, _named(found)


def _joined(node: ast.AST, text: str) -> list[ast.AST]:
    """The comparisons of ``a, b and c``: a tuple's elements, an 'and''s operands, in order."""
    if isinstance(node, ast.Tuple):
        return [item for element in node.elts for item in _joined(element, text)]
    if isinstance(node, ast.BoolOp):
        if not isinstance(node.op, ast.And):
            _fail(text, node, "constraints are joined by ',' or 'and'; 'or' would need a choice between them")
        return [item for value in node.values for item in _joined(value, text)]
    return [node]


def _syntax_tree(source: str, shown: str) -> ast.AST:
    try:
        return ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        column = max((exc.offset or 1) - 1, 0)
        raise MetricSyntaxError(f"invalid syntax: {exc.msg}", shown, min(column, max(len(shown) - 1, 0)), 1,
                                min(exc.lineno or 1, shown.count("\n") + 1)) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise MetricSyntaxError(f"cannot parse the constraint: {exc}") from None


def _fail(text: str, node: ast.AST, message: str) -> NoReturn:
    _Converter(text, {}).fail(node, message)
    raise AssertionError("unreachable: fail() raises")


def _comparisons(node: ast.AST, text: str, params: Mapping[str, float]) -> list[Constraint]:
    if not isinstance(node, ast.Compare):
        _fail(text, node, "a constraint is a comparison with <= or >=, such as 'precision >= 0.9'")
    assert isinstance(node, ast.Compare)
    sides = [node.left, *node.comparators]
    found = []
    for index, operator in enumerate(node.ops):
        if type(operator) in _REFUSED_OPERATORS:
            _fail(text, node, _REFUSED_OPERATORS[type(operator)])
        found.append(_one(sides[index], _OPERATORS[type(operator)], sides[index + 1], text, params))
    return found


def _one(left: ast.AST, sense: str, right: ast.AST, text: str, params) -> Constraint:
    """``left sense right``, written as ``expression sense level``."""
    left_side, right_side = _side(left, text, params), _side(right, text, params)
    left_text, right_text = (ast.get_source_segment(text, node) or "" for node in (left, right))
    written = " ".join(f"{left_text} {sense} {right_text}".split())
    if left_side.metric is not None and right_side.metric is not None:  # a <= b: a - b <= 0
        expr = left_side.metric.expr - right_side.metric.expr
        used = {**left_side.used, **right_side.used}
        domain = tuple(dict.fromkeys(left_side.metric.domain + right_side.metric.domain))
        metric = Metric(expr=expr, params=_surviving_params(used, expr, domain), source=f"{left_text} - ({right_text})",
                        domain=domain)
        return Constraint(metric, sense, 0.0, written)
    if left_side.metric is not None:
        return Constraint(left_side.metric, sense, right_side.value, written)
    if right_side.metric is not None:  # 0.9 <= precision is precision >= 0.9
        return Constraint(right_side.metric, _FLIPPED[sense], left_side.value, written)
    _fail(text, right, "this constraint compares two constants: one side must depend on the confusion entries")


@dataclasses.dataclass
class _Side:
    metric: Metric | None = None
    value: float = 0.0
    used: dict = dataclasses.field(default_factory=dict)

    @property
    def symbolic(self) -> bool:
        return self.metric is not None


def _side(node: ast.AST, text: str, params) -> _Side:
    """One side of a comparison: a catalog name, an expression of the grammar, or a constant."""
    segment = ast.get_source_segment(text, node) or ""
    if isinstance(node, ast.Name) and node.id not in params:
        entry = lookup(node.id)
        if entry is not None:
            own = {k: v for k, v in params.items() if k in entry.default_params}
            metric = parse(node.id, own)
            return _Side(metric=metric, used=dict(metric.params))
        hints = closest_names(node.id)
        if hints and node.id.islower():  # catalog names are lower case; FX is a misspelt entry (the parser says)
            _fail(text, node, f"'{node.id}' is not a catalog metric (did you mean "
                              f"{' or '.join(repr(h) for h in hints)}?); see `metricc list`, or write an expression "
                              "over TP, FN, FP, TN")
    converter = _Converter(text, params)
    expr = converter.convert(node, depth=1)
    if not expr.free_symbols & {*CONFUSION_SYMBOLS, *groups.GROUP_SYMBOLS}:
        if expr.free_symbols:
            _fail(text, node, "this side holds parameters but no confusion entry")
        return _Side(value=float(expr))
    domain = tuple(lost.condition for lost in converter.lost_conditions(expr))
    metric = Metric(expr=expr, params=_surviving_params(converter.used_params, expr, domain), source=segment,
                    domain=domain)
    return _Side(metric=metric, used=dict(converter.used_params))


def _named(constraints: list[Constraint]) -> tuple[Constraint, ...]:
    """Each constraint's metric named constraint_1, constraint_2, ... (names of generated functions)."""
    return tuple(dataclasses.replace(c, metric=dataclasses.replace(c.metric, name=f"constraint_{k + 1}"))
                 for k, c in enumerate(constraints))


__all__ = ["Constraint", "SENSES", "is_comparison", "parse_constraint", "parse_constraints", "split_problem"]
