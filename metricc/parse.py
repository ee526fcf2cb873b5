"""Text (or a catalog name) to ``Metric``, without ever evaluating the text.

The text is parsed by Python's own parser (``ast.parse`` builds a syntax tree and
runs nothing), then every node is checked against a whitelist and translated into
sympy by hand. Nothing user-written reaches ``eval``, ``exec``, ``sympify`` or
``parse_expr``. Hostile input (very long, deeply nested, huge exponents) is
refused before any expensive work, so parsing takes milliseconds.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import NoReturn

import sympy

from . import groups, limits, names
from .catalog import closest_names, lookup
from .curves import CURVE_FUNCTIONS
from .errors import MetricSyntaxError, Option
from .metric import CONFUSION_SYMBOLS, DERIVED_SYMBOLS, Metric, parameter_symbol, to_text
from .signs import face_zero_sets, sign

MAX_LENGTH = 2000
MAX_DEPTH = 100
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e308

FUNCTIONS = {"sqrt": 1, "log": 1, "exp": 1, "abs": 1, "min": None, "max": None}
_SYMPY_FUNCTIONS = {"sqrt": sympy.sqrt, "log": sympy.log, "exp": sympy.exp, "abs": sympy.Abs,
                    "min": sympy.Min, "max": sympy.Max}
_SYMBOLS = {s.name: s for s in CONFUSION_SYMBOLS}

_NODE_NAMES = {
    ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
    ast.JoinedStr: "an f-string", ast.FormattedValue: "an f-string", ast.NamedExpr: "an assignment (:=)",
    ast.Subscript: "indexing", ast.Slice: "a slice", ast.Compare: "a comparison",
    ast.BoolOp: "'and'/'or'", ast.IfExp: "a conditional expression", ast.Tuple: "a tuple",
    ast.List: "a list", ast.Set: "a set", ast.Dict: "a dict", ast.Starred: "unpacking (*)",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
}
_OPERATOR_HINTS = {
    ast.BitXor: "'^' is not a power here; write ** (e.g. TP**2)",
    ast.FloorDiv: "'//' is not allowed; write / for division",
    ast.Mod: "'%' is not allowed",
    ast.MatMult: "'@' is not allowed",
    ast.LShift: "'<<' is not allowed", ast.RShift: "'>>' is not allowed",
    ast.BitOr: "'|' is not allowed", ast.BitAnd: "'&' is not allowed",
}
_BINARY = {ast.Add: sympy.Add, ast.Mult: sympy.Mul}


def parse(metric: str | Metric | sympy.Expr, params: Mapping[str, float] | None = None, *,
          name: str | None = None) -> Metric:
    """Read a metric from text, a catalog name, a sympy expression or a ``Metric``.

    Args:
        metric: an expression over ``TP FN FP TN`` (and ``P N PP PN n``), e.g.
            ``"2*TP/(2*TP+FP+FN)"``; or a catalog name such as ``"fbeta"``; or a
            sympy expression; or a ``Metric`` (returned with ``params`` applied).
        params: values of named parameters; override catalog defaults.
        name: a Python identifier for the metric (names the generated loss).

    Returns:
        The ``Metric``, with only the parameters the expression uses.

    Raises:
        MetricSyntaxError: the input is not a metric of the grammar; the message
            points at the offending column.
    """
    params = _check_params(params)
    if name is not None:
        names.check_metric_name(name)
    if isinstance(metric, Metric):
        merged = {**metric.param_values, **params}
        unused = set(params) - set(metric.param_values)
        if unused:
            raise MetricSyntaxError(_unused_params_message(unused, metric.param_values))
        result = metric.with_params(merged)
        return result if name is None else _replace_name(result, name)
    if isinstance(metric, sympy.Basic):
        return _parse_sympy(metric, params, name)
    if not isinstance(metric, str):
        raise MetricSyntaxError(f"a metric must be a string, a sympy expression or a Metric, "
                                f"not {type(metric).__name__}")

    entry = lookup(metric.strip()) if metric.strip().isidentifier() and metric.isascii() else None
    if entry is not None:
        unknown = set(params) - set(entry.default_params)
        if unknown:
            raise MetricSyntaxError(_unused_params_message(unknown, entry.default_params, entry.name))
        expr, used, domain = _parse_text(entry.expression, {**entry.default_params, **params})
        return Metric(expr=expr, params=_surviving_params(used, expr, domain), name=name or entry.name,
                      source=entry.expression, direction=entry.direction, description=entry.description,
                      domain=domain)

    _check_raw_text(metric)
    stripped = metric.strip()
    if stripped.isidentifier() and stripped not in _SYMBOLS and stripped not in DERIVED_SYMBOLS:
        hints = closest_names(stripped)
        hint = f" (did you mean {' or '.join(repr(h) for h in hints)}?)" if hints else ""
        raise MetricSyntaxError(f"'{stripped}' is not a catalog metric{hint}; see `metricc list`, or write an "
                                "expression over TP, FN, FP, TN", stripped, 0, len(stripped))
    expr, used, domain = _parse_text(metric, params)
    unused = set(params) - set(used)
    if unused:
        raise MetricSyntaxError(_unused_params_message(unused, used))
    return Metric(expr=expr, params=_surviving_params(used, expr, domain), name=name or "metric", source=metric,
                  domain=domain)


def _simple_rational(value: float) -> sympy.Rational:
    """``value`` as the simplest fraction (denominator ≤ 10⁶) whose float it is, else its decimal."""
    simple = Fraction(value).limit_denominator(10**6)
    if float(simple) == float(value):
        return sympy.Rational(simple.numerator, simple.denominator)
    return sympy.Rational(repr(float(value)))


def _surviving_params(used: Mapping[str, float], expr: sympy.Expr,
                      domain: tuple[sympy.Expr, ...] = ()) -> tuple[tuple[str, float], ...]:
    """The parameters still in the metric: in ``TP + (a - a)`` the text uses ``a``, the metric does not."""
    symbols = expr.free_symbols.union(*(e.free_symbols for e in domain))
    return tuple(sorted((k, v) for k, v in used.items() if parameter_symbol(k) in symbols))


def _replace_name(metric: Metric, name: str) -> Metric:
    return dataclasses.replace(metric, name=name)


def _unused_params_message(unused, known: Mapping, owner: str | None = None) -> list:
    who = f"metric {owner!r}" if owner else "the expression"
    names = ", ".join(sorted(known)) or "none"
    return [Option("params"), f" gives {', '.join(repr(u) for u in sorted(unused))}, which {who} does not use; "
            f"its parameters are: {names}"]


def _check_params(params) -> dict[str, float]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise MetricSyntaxError(f"params must be a mapping of names to numbers, not {type(params).__name__}")
    return {names.check_parameter_name(key): names.parameter_value(key, value) for key, value in params.items()}


def _parse_sympy(expr: sympy.Basic, params: dict[str, float], name: str | None) -> Metric:
    """Validate a user-built sympy expression by printing it and parsing the text."""
    try:
        text = to_text(expr)
    except Exception as exc:  # sympy printers raise many types
        raise MetricSyntaxError(f"cannot print the sympy expression as a metric: {exc}") from None
    parsed = parse(text, params, name=name)
    return parsed


def _parse_text(text: str, params: Mapping[str, float]) -> tuple[sympy.Expr, dict[str, float],
                                                                  tuple[sympy.Expr, ...]]:
    """The expression, the parameters it uses, and its written domain (see ``Metric.domain``)."""
    expr, converter = _convert_text(text, params)
    return expr, converter.used_params, tuple(lost.condition for lost in converter.lost_conditions(expr))


def _convert_text(text: str, params: Mapping[str, float]) -> tuple[sympy.Expr, _Converter]:
    _check_raw_text(text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        column = max((exc.offset or 1) - 1, 0)
        length = max((exc.end_offset or 0) - (exc.offset or 0), 1) if exc.end_lineno == exc.lineno else 1
        stripped = text.strip()
        raise MetricSyntaxError(f"invalid syntax: {exc.msg}", stripped, column, length, exc.lineno or 1) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise MetricSyntaxError(f"cannot parse the expression: {exc}") from None
    converter = _Converter(text.strip(), params)
    expr = converter.convert(tree.body, depth=0)
    if not expr.free_symbols & {*CONFUSION_SYMBOLS, *groups.GROUP_SYMBOLS}:
        written = sorted({node.id for node in ast.walk(tree) if isinstance(node, ast.Name)
                          and (node.id in _SYMBOLS or node.id in DERIVED_SYMBOLS)})
        if written:  # TP - TP + 1: the symbols are there, and cancel
            cancel = f"{' and '.join(written)} cancel" if len(written) > 1 else f"{written[0]} cancels"
            message = (f"the expression simplifies to the constant {to_text(expr)} ({cancel}), so it uses no "
                       "confusion symbol: a metric must depend on at least one of TP, FN, FP, TN")
        else:
            message = ("the expression uses no confusion symbol: a metric must depend on at least one of "
                       "TP, FN, FP, TN (or P, N, PP, PN, n)")
        raise MetricSyntaxError(message, text.strip(), 0, len(text.strip()))
    return expr, converter


def _check_raw_text(text: str) -> None:
    """Refuse input that is empty, too long, non-ASCII or too deeply nested, before parsing."""
    if len(text) > MAX_LENGTH:
        raise MetricSyntaxError(f"the expression is {len(text):,} characters long; at most {MAX_LENGTH:,} "
                                "are accepted")
    if not text.strip():
        raise MetricSyntaxError("empty metric expression: write one over TP, FN, FP, TN such as "
                                "'2*TP/(2*TP+FP+FN)', or a catalog name (see `metricc list`)")
    stripped = text.strip()
    for index, char in enumerate(stripped):
        if ord(char) > 126 or (ord(char) < 32 and char not in "\t\n\r"):
            description = f"U+{ord(char):04X}"
            try:
                import unicodedata

                description += f" {unicodedata.name(char)}"
            except ValueError:
                pass
            line = stripped.count("\n", 0, index) + 1
            column = index - (stripped.rfind("\n", 0, index) + 1)
            raise MetricSyntaxError(f"character {description} is not allowed: metric expressions are "
                                    "plain ASCII", stripped.replace("\0", " "), column, 1, line)
    depth = 0
    for index, char in enumerate(stripped):
        if char in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                line = stripped.count("\n", 0, index) + 1
                column = index - (stripped.rfind("\n", 0, index) + 1)
                raise MetricSyntaxError(f"parentheses nested deeper than {MAX_DEPTH} levels", stripped,
                                        column, 1, line)
        elif char in ")]}":
            depth -= 1


class _Converter:
    """Translate a whitelisted Python syntax tree into a sympy expression."""

    def __init__(self, text: str, params: Mapping[str, float]):
        self.text = text
        self.params = params
        self.used_params: dict[str, float] = {}
        self.conditions: list[WrittenCondition] = []  # every denominator, root and log argument written

    def require(self, node: ast.AST, argument: sympy.Expr, needs: str) -> None:
        """Note that the text divides by, or takes a root or logarithm of, ``argument`` at ``node``."""
        if argument.free_symbols & set(CONFUSION_SYMBOLS):
            segment = ast.get_source_segment(self.text, node) or to_text(argument)
            self.conditions.append(WrittenCondition(argument, needs, " ".join(segment.split())))

    def lost_conditions(self, expr: sympy.Expr) -> list[WrittenCondition]:
        """The written conditions whose zero (or sign) sets ``expr``, as sympy simplified it, no longer has."""
        kept_zero, kept_sign = _singular_arguments(expr)
        lost: dict[sympy.Expr, WrittenCondition] = {}
        for written in self.conditions:
            argument, needs = written.condition, written.needs
            if needs != "nonzero" and _key(argument) & kept_sign:
                continue  # the expression still takes this root or log: the analysis checks its sign and zeros
            if needs != "nonzero" and sign(self._bound(argument)) not in "+0":
                sign_part = _sign_part(argument)
                condition = sign_part + sympy.Abs(sign_part)  # zero exactly where argument ≤ 0
                lost.setdefault(condition, dataclasses.replace(written, condition=condition, argument=sign_part,
                                                               needs="positive"))
                continue
            if needs == "nonnegative":
                continue  # a root at 0 is defined
            for factor in _zero_factors(argument):
                bound = self._bound(factor)
                if not bound.free_symbols & set(CONFUSION_SYMBOLS) or face_zero_sets(bound) == []:
                    continue  # never 0 on a batch
                if _key(factor) & kept_zero:
                    continue
                lost.setdefault(factor, dataclasses.replace(written, condition=factor, needs="nonzero"))
        return list(lost.values())

    def fail(self, node: ast.AST, message: str | list) -> NoReturn:
        column = getattr(node, "col_offset", 0)
        end = getattr(node, "end_col_offset", None)
        same_line = getattr(node, "end_lineno", None) == getattr(node, "lineno", None)
        length = (end - column) if (end is not None and same_line) else 1
        raise MetricSyntaxError(message, self.text, column, length, getattr(node, "lineno", 1))

    def convert(self, node: ast.AST, depth: int) -> sympy.Expr:
        if depth > MAX_DEPTH:
            self.fail(node, f"the expression is nested deeper than {MAX_DEPTH} levels")
        method = getattr(self, f"_convert_{type(node).__name__}", None)
        if method is None:
            what = _NODE_NAMES.get(type(node), f"syntax '{type(node).__name__}'")
            self.fail(node, f"{what} is not allowed in a metric expression")
        result = method(node, depth)
        if result.is_number:
            self._check_number(node, result)
        return result

    def _check_number(self, node: ast.AST, value: sympy.Expr) -> None:
        if value.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
            self.fail(node, "this constant is infinite or undefined (division by zero?)")
        numeric = value.evalf(30)
        if not numeric.is_real:
            self.fail(node, "this constant is not real (a square root or logarithm of a negative number?)")
        if abs(numeric) > MAX_MAGNITUDE:
            self.fail(node, f"this constant is larger than {MAX_MAGNITUDE:g} in magnitude")

    # -- leaves -----------------------------------------------------------
    def _convert_Constant(self, node: ast.Constant, depth: int) -> sympy.Expr:
        value = node.value
        if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
            what = "a string" if isinstance(value, (str, bytes)) else repr(value)
            self.fail(node, f"{what} is not allowed; only numbers, confusion symbols and parameters are")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(node, f"the number is larger than {MAX_MAGNITUDE:g}")
        if isinstance(value, int):
            if abs(value) > MAX_MAGNITUDE:
                self.fail(node, f"the number is larger than {MAX_MAGNITUDE:g}")
            return sympy.Integer(value)
        literal = (ast.get_source_segment(self.text, node) or repr(value)).replace("_", "")
        try:
            return sympy.Rational(literal)  # exact: 0.1 stays 1/10
        except (TypeError, ValueError):
            return sympy.Rational(value)

    def _convert_Name(self, node: ast.Name, depth: int) -> sympy.Expr:
        name = node.id
        if name in _SYMBOLS:
            return _SYMBOLS[name]
        if name in DERIVED_SYMBOLS:
            return DERIVED_SYMBOLS[name]
        if name in FUNCTIONS:
            self.fail(node, f"'{name}' is a function: call it, as in {name}(TP)")
        hint = None if name in self.params else groups.name_hint(name)
        if hint:
            self.fail(node, hint)
        if name.startswith("_"):
            self.fail(node, f"name '{name}' is not allowed: names may not start with an underscore")
        if name in names.GENERATED_NAMES:
            self.fail(node, f"'{name}' is reserved for the generated code and cannot name a parameter")
        if name in self.params:
            self.used_params[name] = self.params[name]
            return parameter_symbol(name)
        self.fail(node, self._unknown_name_message(name))

    def _unknown_name_message(self, name: str) -> list:
        valid = [*_SYMBOLS, *DERIVED_SYMBOLS]
        suggestions = [v for v in valid if v.lower() == name.lower()]
        suggestions += difflib.get_close_matches(name, valid + list(self.params), n=3, cutoff=0.5)
        suggestions = list(dict.fromkeys(suggestions))
        if suggestions:
            hint = " or ".join(repr(s) for s in suggestions)
            return [f"unknown name '{name}': did you mean {hint}? Names are the confusion symbols TP FN FP TN, "
                    "the sums P N PP PN n, or parameters given with ", Option("params")]
        catalog_hint = closest_names(name, 1)
        extra = (f" ('{catalog_hint[0]}' is a catalog metric: pass it alone)"
                 if catalog_hint and catalog_hint[0] == name else "")
        return [f"parameter '{name}' has no value: pass ", Option("params", {name: ...}),
                f", or use the confusion symbols TP FN FP TN and the sums P N PP PN n{extra}"]

    # -- operators --------------------------------------------------------
    def _convert_UnaryOp(self, node: ast.UnaryOp, depth: int) -> sympy.Expr:
        operand = self.convert(node.operand, depth + 1)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return operand
        symbol = {ast.Not: "not", ast.Invert: "~"}.get(type(node.op), "?")
        self.fail(node, f"'{symbol}' is not allowed; only + - * / ** and sqrt log exp abs min max are")

    def _convert_BinOp(self, node: ast.BinOp, depth: int) -> sympy.Expr:
        hint = _OPERATOR_HINTS.get(type(node.op))
        if hint:
            self.fail(node, hint)
        if isinstance(node.op, ast.Pow):
            return self._power(node, depth)
        # Walk down left-nested chains (a + b + c + ...) iteratively: long sums are
        # flat in meaning and must not count as deep nesting.
        terms = []
        current: ast.expr = node
        while (isinstance(current, ast.BinOp) and type(current.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div)
               and _same_level(current.op, node.op)):
            terms.append((current.op, current.right, current))
            current = current.left
        result = self.convert(current, depth + 1)
        for op, right_node, operation in reversed(terms):
            right = self.convert(right_node, depth + 1)
            if isinstance(op, ast.Add):
                result = result + right
            elif isinstance(op, ast.Sub):
                result = result - right
            elif isinstance(op, ast.Mult):
                result = result * right
            else:
                if right.is_number and right.is_zero:
                    self.fail(right_node, "division by zero")
                if not right.free_symbols & set(CONFUSION_SYMBOLS) and self._bound(right).is_zero:
                    self.fail(right_node, f"division by zero: this is 0 with {self._values(right)}")
                self.require(operation, right, "nonzero")
                result = result / right
            if result.is_number:
                self._check_number(right_node, result)
        return result

    def _power(self, node: ast.BinOp, depth: int) -> sympy.Expr:
        base = self.convert(node.left, depth + 1)
        exponent = self.convert(node.right, depth + 1)
        if exponent.free_symbols & set(CONFUSION_SYMBOLS):
            self.fail(node.right, "exponents must be numbers or parameters (e.g. TP**2, TP**(1/2), "
                                  "x**(1/gamma)), not expressions of confusion entries")
        if exponent.free_symbols:
            exponent = self._parameters_fixed(exponent)
        if abs(exponent.evalf()) > MAX_EXPONENT:
            self.fail(node.right, f"exponent {exponent} is larger than {MAX_EXPONENT} in magnitude")
        if exponent.is_negative and base.free_symbols and not base.free_symbols & set(CONFUSION_SYMBOLS) \
                and self._bound(base).is_zero:
            self.fail(node, f"zero raised to a negative power (division by zero): the base is 0 with "
                            f"{self._values(base)}")
        if base.is_number:
            if base.is_zero and exponent.is_negative:
                self.fail(node, "zero raised to a negative power (division by zero)")
            magnitude = abs(base.evalf())
            if magnitude > 0 and float(abs(exponent.evalf())) * math.log10(float(magnitude)) > 308:
                self.fail(node, f"this power is larger than {MAX_MAGNITUDE:g}")
        if not exponent.is_integer:
            self._check_never_negative(node.left, base)
            self.require(node, base, "positive" if exponent.is_negative else "nonnegative")
        elif exponent.is_negative:
            self.require(node, base, "nonzero")
        return self._within_limits(node, self._check_real(node, base ** exponent), "this power")

    def _within_limits(self, node: ast.AST, value: sympy.Expr, what: str) -> sympy.Expr:
        """``value``, refused at ``node`` beyond the structural limits (nested powers multiply their exponents)."""
        try:
            limits.check_expression(value, what)
        except MetricSyntaxError as error:
            self.fail(node, error.problem)
        return value

    def _parameters_fixed(self, exponent: sympy.Expr) -> sympy.Expr:
        """An exponent over parameters with their values put in: the analysis and the derivation need a
        numeric exponent, so a parameter there (focal Tversky's ``**(1/gamma)``) takes its value when the
        metric is read. A value that is a float of a simple fraction (``4/3``) counts as that fraction."""
        values = {parameter_symbol(k): _simple_rational(v) for k, v in self.params.items()}
        return exponent.xreplace(values)

    def _convert_Call(self, node: ast.Call, depth: int) -> sympy.Expr:
        if isinstance(node.func, ast.Attribute):
            self.fail(node.func, "attribute access ('.') is not allowed")
        if not isinstance(node.func, ast.Name):
            self.fail(node.func, "only the functions sqrt log exp abs min max can be called")
        fname = node.func.id
        if fname in CURVE_FUNCTIONS:
            return self._curve(node, fname, depth)
        if fname in groups.REDUCTIONS:
            return groups.convert_reduction(self, node, depth)
        if fname not in FUNCTIONS:
            self.fail(node.func, f"function '{fname}' is not allowed; the functions are "
                                 "sqrt, log, exp, abs, min, max (and curve_area, curve_sum around a whole metric; "
                                 "max_g, min_g, mean_g, sum_g over groups)")
        if node.keywords:
            self.fail(node.keywords[0].value, f"{fname}() takes no keyword arguments")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.fail(arg, "unpacking (*) is not allowed")
        arity = FUNCTIONS[fname]
        if arity is not None and len(node.args) != arity:
            self.fail(node, f"{fname}() takes exactly {arity} argument, got {len(node.args)}")
        if arity is None and len(node.args) < 2:
            self.fail(node, f"{fname}() takes at least 2 arguments, got {len(node.args)}")
        args = [self.convert(arg, depth + 1) for arg in node.args]
        if fname in ("sqrt", "log"):
            self._check_never_negative(node.args[0], args[0])
            self.require(node, args[0], "nonnegative" if fname == "sqrt" else "positive")
        if fname == "exp" and args[0].is_number and args[0].evalf() > 709:
            self.fail(node, f"exp({args[0]}) overflows a float")
        try:
            if fname in ("min", "max"):
                # Unevaluated: sympy's Min/Max rewrite nested calls in ways that are not idempotent
                # (max(FN, min(TP, max(FN, FP))) becomes max(FN, min(FP, TP)) when read again), so
                # an evaluated tree would not survive printing and parsing. Numbers still fold.
                evaluate = all(arg.is_number for arg in args)
                result = _SYMPY_FUNCTIONS[fname](*args, evaluate=evaluate)
            else:
                result = _SYMPY_FUNCTIONS[fname](*args)
        except ValueError as error:  # sympy's Min/Max refuse arguments they cannot order (log(-TP))
            self.fail(node, f"{fname}() of an argument that is not real ({error})")
        if fname == "exp":
            self._within_limits(node, result, "this exp()")
        return self._check_real(node, result)

    def _curve(self, node: ast.Call, fname: str, depth: int) -> sympy.Expr:
        """curve_area(Y, X) or curve_sum(Y, X): the whole metric, Y and X ordinary metrics (docs/curves.md)."""
        if depth != 0:
            self.fail(node, f"{fname}(Y, X) is a metric of the whole curve over the thresholds: write it as the "
                            f"entire expression, as in {fname}(TP/P, FP/N), not inside another one")
        if node.keywords:
            self.fail(node.keywords[0].value, f"{fname}() takes no keyword arguments")
        if len(node.args) != 2 or any(isinstance(arg, ast.Starred) for arg in node.args):
            self.fail(node, f"{fname}() takes exactly 2 arguments, the curve's Y and X, got {len(node.args)}")
        y, x = (self.convert(arg, depth + 1) for arg in node.args)
        for arg, value, what in ((node.args[0], y, "Y"), (node.args[1], x, "X")):
            if not value.free_symbols & set(CONFUSION_SYMBOLS):
                self.fail(arg, f"the curve's {what} must depend on the confusion entries (TP, FN, FP, TN)")
        return CURVE_FUNCTIONS[fname](y, x)

    def _check_real(self, node: ast.AST, value: sympy.Expr) -> sympy.Expr:
        """Refuse a root of a negative quantity: sympy writes sqrt(-TP) as I*sqrt(TP), which no
        real-valued loss can compute (the code generator cannot even print it)."""
        if value.free_symbols and (_imaginary(value) or _imaginary(self._bound(value))):
            self.fail(node, "this is imaginary (a root or logarithm of a negative quantity, such as sqrt(-TP)); "
                            "metric expressions must be real-valued")
        return value

    def _check_never_negative(self, node: ast.AST, value: sympy.Expr) -> None:
        """Refuse a root or logarithm of a quantity that is ≤ 0 on every batch, such as sqrt(-PP):
        sympy keeps sqrt(-TP - FP) unevaluated, so ``_check_real`` cannot see that it is imaginary."""
        if value.free_symbols and not value.is_zero and sign(self._bound(value)) == "-":
            self.fail(node, "this is never positive, so its root or logarithm is imaginary (e.g. sqrt(-PP)); "
                            "metric expressions must be real-valued")

    def _values(self, value: sympy.Expr) -> str:
        """The parameter values ``value`` uses, e.g. "alpha = 0.5, beta = 0.5"."""
        names = sorted(s.name for s in value.free_symbols if s.name in self.params)
        return ", ".join(f"{name} = {self.params[name]:g}" for name in names) or "these parameter values"

    def _bound(self, value: sympy.Expr) -> sympy.Expr:
        """``value`` with the parameters' values: sqrt(-n/a) is imaginary only once a > 0 is known."""
        values = {parameter_symbol(k): sympy.Rational(v) for k, v in self.params.items()}
        return value.xreplace({s: values[s] for s in value.free_symbols if s in values})

    def _convert_Compare(self, node: ast.Compare, depth: int):
        self.fail(node, "a comparison is a constraint, not a metric: pass it as constraints=['...'] (command line: "
                        "--constraint '...'), or write 'metric subject to constraint'")

    def _convert_Subscript(self, node: ast.Subscript, depth: int) -> sympy.Expr:
        return groups.convert_subscript(self, node)

    def _convert_Attribute(self, node: ast.Attribute, depth: int):
        self.fail(node, "attribute access ('.') is not allowed")


def _imaginary(value: sympy.Expr) -> bool:
    """sympy has proved ``value`` non-real: it holds I, or a constant such as (-1)**(1/3)."""
    return value.has(sympy.I) or any(part.is_number and part.is_real is False
                                     for part in sympy.preorder_traversal(value))


def _same_level(op: ast.operator, top: ast.operator) -> bool:
    additive = (ast.Add, ast.Sub)
    return isinstance(op, additive) == isinstance(top, additive)


@dataclasses.dataclass(frozen=True)
class WrittenCondition:
    """Where the written metric is defined: ``condition`` must be non-zero (``needs == "nonzero"``), or
    ≥ 0 for a root (``"nonnegative"``), or > 0 for a logarithm or a root in a denominator
    (``"positive"``); ``segment`` is the text that imposes it, as written."""

    condition: sympy.Expr
    needs: str
    segment: str
    argument: sympy.Expr | None = None  # for "positive": the quantity that must be > 0

    def describe(self) -> str:
        """Where the metric is undefined, e.g. ``FP = 0`` or ``TP - FP ≤ 0``."""
        if self.needs == "positive" and self.argument is not None:
            return f"{to_text(self.argument)} ≤ 0"
        return f"{to_text(self.condition)} = 0"


def written_domain(metric: Metric) -> dict[sympy.Expr, WrittenCondition]:
    """Where each entry of ``metric.domain`` comes from in the text (re-read from ``metric.source``).

    Entries the source does not reproduce (a Metric built by hand) are left out.
    """
    if not metric.domain or not metric.source:
        return {}
    entry = lookup(metric.source.strip()) if metric.source.strip().isidentifier() else None
    text = entry.expression if entry is not None else metric.source
    try:
        expr, converter = _convert_text(text, {**(entry.default_params if entry else {}), **metric.param_values})
    except MetricSyntaxError:
        return {}
    found = {lost.condition: lost for lost in converter.lost_conditions(expr)}
    return {condition: found[condition] for condition in metric.domain if condition in found}


def _key(expr: sympy.Expr) -> set[sympy.Expr]:
    """``expr`` up to a constant factor and sign: the forms under which it may appear elsewhere."""
    _, primitive = expr.as_content_primitive()
    return {primitive, -primitive}


def _sign_part(expr: sympy.Expr) -> sympy.Expr:
    """What decides the sign of ``expr`` where it is defined: its numerator, when its denominator is ≥ 0
    (a denominator's zeros are conditions of their own), else ``expr`` itself."""
    numerator, denominator = sympy.fraction(sympy.together(expr))
    return numerator if sign(denominator) == "+" else expr


def _zero_factors(expr: sympy.Expr) -> list[sympy.Expr]:
    """Factors whose vanishing makes ``expr`` vanish: the bases of the positive powers in its numerator."""
    numerator = sympy.fraction(sympy.together(expr))[0] if expr.has(sympy.Pow) else expr
    factors = []
    for term in sympy.Mul.make_args(numerator):
        base, exponent = term.as_base_exp()
        if exponent.is_positive is not False and base.free_symbols & set(CONFUSION_SYMBOLS):
            factors.append(base)
    return factors


def _singular_arguments(expr: sympy.Expr) -> tuple[set, set]:
    """What ``expr`` itself still divides by (factors, up to constants) and takes roots and logarithms of."""
    zero, signed = set(), set()
    for node in sympy.preorder_traversal(expr):
        if node.is_Pow and node.exp.is_number and (node.exp.is_negative or not node.exp.is_integer):
            argument = node.base
        elif isinstance(node, sympy.log):
            argument = node.args[0]
        else:
            continue
        if not node.is_Pow or not node.exp.is_integer:
            signed |= _key(argument)
        if not node.is_Pow or node.exp.is_negative:
            for factor in _zero_factors(argument):
                zero |= _key(factor)
    return zero, signed
