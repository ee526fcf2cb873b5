"""Every refusal of the parser, word for word and at its place, and the limits at their exact edges.

A message is the interface for bad input: what is wrong, where, and what to write instead. These tests pin
each branch's wording and position (line, column and length of the caret), so that a change of either is
deliberate; ``test_parse.py`` says what each message must contain, this file says all of it. The limits
(length, nesting, magnitudes, exponents) are checked on both sides of their edge.
"""

import ast

import pytest
import sympy

import metricc
from metricc.metric import FN, FP, TP, Metric, parameter_symbol
from metricc.parse import MAX_DEPTH, MAX_LENGTH, _Converter, parse, written_domain

from .ids import numbered_ids, plain_id

_REAL = "metric expressions must be real-valued"
_NEVER_POSITIVE = f"this is never positive, so its root or logarithm is imaginary (e.g. sqrt(-PP)); {_REAL}"
_NOT_A_VALUE = "is not allowed; only numbers, confusion symbols and parameters are"
_FUNCTIONS = ("the functions are sqrt, log, exp, abs, min, max (and curve_area, curve_sum around a whole metric; "
              "max_g, min_g, mean_g, sum_g over groups)")
_DEGREE = ("has degree {} (numerator plus denominator over one denominator; nested powers multiply their exponents); "
           "at most 128 is accepted: write a lower power")
_NO_SYMBOL = "so it uses no confusion symbol: a metric must depend on at least one of TP, FN, FP, TN"

# (text, params, problem, (line, column, length)); the text shown is the stripped input.
REFUSALS = [
    ("f3", None, "'f3' is not a catalog metric (did you mean 'f2' or 'f1'?); see `metricc list`, or write an "
                 "expression over TP, FN, FP, TN", (1, 0, 2)),
    ("  f3  ", None, "'f3' is not a catalog metric (did you mean 'f2' or 'f1'?); see `metricc list`, or write an "
                     "expression over TP, FN, FP, TN", (1, 0, 2)),
    ("zzzzqqxx", None, "'zzzzqqxx' is not a catalog metric; see `metricc list`, or write an expression over "
                       "TP, FN, FP, TN", (1, 0, 8)),
    ("TP +", None, "invalid syntax: invalid syntax", (1, 0, 1)),
    ("2*TP/(2*TP+FP+FN", None, "invalid syntax: '(' was never closed", (1, 5, 1)),
    ("(TP\n + FN) +", None, "invalid syntax: invalid syntax", (2, 0, 1)),
    ("TP ++* FN", None, "invalid syntax: invalid syntax", (1, 5, 1)),
    ("TP FP", None, "invalid syntax: invalid syntax", (1, 3, 2)),  # the caret spans what Python marks
    ("TP/n + 1e300*1e300", None, "this constant is larger than 1e+308 in magnitude", (1, 13, 5)),  # at the operand
    ("1 + 2", None, "the expression uses no confusion symbol: a metric must depend on at least one of TP, FN, FP, "
                    "TN (or P, N, PP, PN, n)", (1, 0, 5)),
    ("TP - TP + 1", None, f"the expression simplifies to the constant 1 (TP cancels), {_NO_SYMBOL}", (1, 0, 11)),
    ("P - P + n - n + 2", None, f"the expression simplifies to the constant 2 (P and n cancel), {_NO_SYMBOL}",
     (1, 0, 17)),
    ("a*(TP - TP) + 1", {"a": 1.0}, f"the expression simplifies to the constant 1 (TP cancels), {_NO_SYMBOL}",
     (1, 0, 15)),  # a parameter is not a confusion symbol that cancels
    ("\x7fTP", None, "character U+007F is not allowed: metric expressions are plain ASCII", (1, 0, 1)),
    ("(TP\n + \u0422P)/n", None, "character U+0422 CYRILLIC CAPITAL LETTER TE is not allowed: metric expressions "
                                 "are plain ASCII", (2, 3, 1)),
    ("\u0422P\n/n", None, "character U+0422 CYRILLIC CAPITAL LETTER TE is not allowed: metric expressions are plain "
                         "ASCII", (1, 0, 1)),  # lines after the culprit move nothing
    ("(TP\n+\nFN+\u0422)", None, "character U+0422 CYRILLIC CAPITAL LETTER TE is not allowed: metric expressions are "
                                 "plain ASCII", (3, 3, 1)),  # the column counts from the last line break
    ("(TP\n+ 1\n)/\x01n", None, "character U+0001 is not allowed: metric expressions are plain ASCII", (3, 2, 1)),
    ("(" * 101 + "TP" + ")" * 101 + "\n+FN", None, "parentheses nested deeper than 100 levels", (1, 100, 1)),
    ("(TP\n+\n" + "(" * 101 + "TP" + ")" * 102, None, "parentheses nested deeper than 100 levels", (3, 99, 1)),
    ("~TP", None, "'~' is not allowed; only + - * / ** and sqrt log exp abs min max are", (1, 0, 3)),
    ("not TP", None, "'not' is not allowed; only + - * / ** and sqrt log exp abs min max are", (1, 0, 6)),
    ("(TP)+" + "(" * 101 + "TP" + ")" * 101, None, "parentheses nested deeper than 100 levels", (1, 105, 1)),
    ("(TP\n+" + "(" * 101 + "TP" + ")" * 102, None, "parentheses nested deeper than 100 levels", (2, 100, 1)),
    ("(1+" * 101 + "TP" + ")" * 101, None, "parentheses nested deeper than 100 levels", (1, 300, 1)),
    ("TP**FN", None, "exponents must be numbers or parameters (e.g. TP**2, TP**(1/2), x**(1/gamma)), not "
                     "expressions of confusion entries", (1, 4, 2)),
    ("TP*0**-1", None, "zero raised to a negative power (division by zero)", (1, 3, 5)),
    ("TP*(a-a)**(-1)", {"a": 0.5}, "zero raised to a negative power (division by zero)", (1, 3, 11)),
    ("TP*(a-b)**(-1)", {"a": 0.5, "b": 0.5},
     "zero raised to a negative power (division by zero): the base is 0 with a = 0.5, b = 0.5", (1, 3, 11)),
    ("TP*10**309", None, "exponent 309 is larger than 64 in magnitude", (1, 7, 3)),
    ("TP*10.0**308.5", None, "exponent 617/2 is larger than 64 in magnitude", (1, 9, 5)),
    ("TP*(1e5)**61.8", None, "this power is larger than 1e+308", (1, 3, 11)),
    ("((TP/P)**64)**64", None, f"this power {_DEGREE.format('8,192')}", (1, 0, 16)),
    ("exp((TP+1)**40*(FN+1)**40*(FP+1)**40*(TN+1)**40)/n", None, f"this exp() {_DEGREE.format(161)}", (1, 0, 48)),
    ("TP.x(1)", None, "attribute access ('.') is not allowed", (1, 0, 4)),
    ("TP.x", None, "attribute access ('.') is not allowed", (1, 0, 4)),
    ("(TP)(1)", None, f"function 'TP' is not allowed; {_FUNCTIONS}", (1, 1, 2)),
    ("TP[1](2)", None, "only the functions sqrt log exp abs min max can be called", (1, 0, 5)),
    ("foo(TP)", None, f"function 'foo' is not allowed; {_FUNCTIONS}", (1, 0, 3)),
    ("abs(*TP)", None, "unpacking (*) is not allowed", (1, 4, 3)),
    ("exp(710)*TP", None, "exp(710) overflows a float", (1, 0, 8)),
    ("exp(709.9)*TP", None, "exp(7099/10) overflows a float", (1, 0, 10)),
    ("max(log(-TP), FN)", None, _NEVER_POSITIVE, (1, 8, 3)),
    ("sqrt(-TP-FP)", None, _NEVER_POSITIVE, (1, 5, 6)),
    ("(-TP-FP)**(1/2)", None, _NEVER_POSITIVE, (1, 1, 6)),
    ("sqrt(-n/a)", {"a": 2.0}, _NEVER_POSITIVE, (1, 5, 4)),
    ("sqrt(-TP)", None, _NEVER_POSITIVE, (1, 5, 3)),
    ("(-TP)**(1/3)", None, _NEVER_POSITIVE, (1, 1, 3)),
    ("curve_area(TP/P, FP/N) + 1", None, "curve_area(Y, X) is a metric of the whole curve over the thresholds: "
                                         "write it as the entire expression, as in curve_area(TP/P, FP/N), not inside "
                                         "another one", (1, 0, 22)),
    ("curve_area(TP/P, FP/N, x=1)", None, "curve_area() takes no keyword arguments", (1, 25, 1)),
    ("curve_sum(TP/P)", None, "curve_sum() takes exactly 2 arguments, the curve's Y and X, got 1", (1, 0, 15)),
    ("curve_area(*TP, FP)", None, "curve_area() takes exactly 2 arguments, the curve's Y and X, got 2", (1, 0, 19)),
    ("curve_area(1, FP/N)", None, "the curve's Y must depend on the confusion entries (TP, FN, FP, TN)", (1, 11, 1)),
    ("curve_area(TP/P, 2)", None, "the curve's X must depend on the confusion entries (TP, FN, FP, TN)", (1, 17, 1)),
    ("TP/(1/0)", None, "division by zero", (1, 6, 1)),
    ("TP/(a-a)", {"a": 0.5}, "division by zero", (1, 4, 3)),
    ("TP/(a-b)", {"a": 0.5, "b": 0.5}, "division by zero: this is 0 with a = 0.5, b = 0.5", (1, 4, 3)),
    ("TP*log(0)", None, "this constant is infinite or undefined (division by zero?)", (1, 3, 6)),
    ("TP*sqrt(-4)", None, "this constant is not real (a square root or logarithm of a negative number?)", (1, 3, 8)),
    ("TP*1.5e308", None, "this constant is larger than 1e+308 in magnitude", (1, 3, 7)),
    ("TP*1e999", None, "the number is larger than 1e+308", (1, 3, 5)),
    ("TP*1" + "0" * 309, None, "the number is larger than 1e+308", (1, 3, 310)),
    ("TP*None", None, f"None {_NOT_A_VALUE}", (1, 3, 4)),
    ("TP*True", None, f"True {_NOT_A_VALUE}", (1, 3, 4)),
    ("TP*b''", None, f"a string {_NOT_A_VALUE}", (1, 3, 3)),
    ("TP*...", None, f"Ellipsis {_NOT_A_VALUE}", (1, 3, 3)),
    ("TP/g", None, "'g' alone is not a value: group entries are written TP[g], FN[g], FP[g], TN[g] (or P[g], N[g], "
                   "PP[g], PN[g], n[g], or a catalog metric such as recall[g]), g being the group index, inside "
                   "max_g(...), min_g(...), mean_g(...) or sum_g(...)", (1, 3, 1)),
    ("max_g(TP)", None, "max_g() reduces over the groups, but its argument reads no group entry; group entries are "
                        "written TP[g], FN[g], FP[g], TN[g] (or P[g], N[g], PP[g], PN[g], n[g], or a catalog metric "
                        "such as recall[g]), g being the group index", (1, 6, 2)),
    ("sqrt + TP", None, "'sqrt' is a function: call it, as in sqrt(TP)", (1, 0, 4)),
    ("-" * (MAX_DEPTH + 1) + "TP", None, "the expression is nested deeper than 100 levels", (1, 101, 2)),
    ("(TP, FN)", None, "a tuple is not allowed in a metric expression", (1, 0, 8)),
    ("TP if FP else TN", None, "a conditional expression is not allowed in a metric expression", (1, 0, 16)),
    ("await TP", None, "await is not allowed in a metric expression", (1, 0, 8)),
]


@pytest.mark.parametrize("text, params, problem, where", REFUSALS, ids=numbered_ids(REFUSALS))
def test_each_refusal_says_what_and_where_word_for_word(text, params, problem, where):
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse(text, params)
    error = info.value
    assert error.problem == problem
    assert error.text == text.strip()
    assert (error.line, error.column, error.length) == where


def test_a_nul_byte_is_shown_as_a_space():
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse("TP\x00/n")
    assert info.value.problem == "character U+0000 is not allowed: metric expressions are plain ASCII"
    assert (info.value.text, info.value.line, info.value.column, info.value.length) == ("TP /n", 1, 2, 1)


@pytest.mark.parametrize("text, params, problem", [
    ("", None, "empty metric expression: write one over TP, FN, FP, TN such as '2*TP/(2*TP+FP+FN)', or a catalog "
               "name (see `metricc list`)"),
    ("TP+" * 666 + "TP1", None, "the expression is 2,001 characters long; at most 2,000 are accepted"),
    (3, None, "a metric must be a string, a sympy expression or a Metric, not int"),
    ("TP/n", {"gamma": 1}, "params= gives 'gamma', which the expression does not use; its parameters are: none"),
    ("TP/n", {"gamma": 1, "alpha": 2}, "params= gives 'alpha', 'gamma', which the expression does not use; its "
                                       "parameters are: none"),
    ("fbeta", {"gamma": 1}, "params= gives 'gamma', which metric 'fbeta' does not use; its parameters are: beta"),
    ("tversky", {"gamma": 1}, "params= gives 'gamma', which metric 'tversky' does not use; its parameters are: "
                              "alpha, beta"),
    ("TP*a/n", [("a", 1)], "params must be a mapping of names to numbers, not list"),
    ("TP*a/n", {"a": float("nan")}, "parameter 'a' must be finite, got nan"),
], ids=plain_id)
def test_refusals_without_a_position(text, params, problem):
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse(text, params)
    assert info.value.problem == problem
    assert info.value.column is None and info.value.text is None


def test_a_parsed_metric_takes_new_parameter_values_but_no_new_parameters():
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse(parse("fbeta"), {"gamma": 1.0})
    assert info.value.problem == "params= gives 'gamma', which the expression does not use; its parameters are: beta"
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse(parse("TP/n"), {"gamma": 1.0})
    assert info.value.problem.endswith("its parameters are: none")
    renamed = parse(parse("fbeta"), {"beta": 3.0}, name="f3_score")
    assert (renamed.name, renamed.param_values, renamed.expr) == ("f3_score", {"beta": 3.0}, parse("fbeta").expr)
    assert parse(parse("fbeta"), {"beta": 3.0}).name == "fbeta"


def test_a_sympy_expression_keeps_its_parameters_and_name():
    metric = parse(metricc.parse("TP*a/n", {"a": 2.0}).expr, {"a": 3.0}, name="scaled")
    assert (metric.name, metric.param_values) == ("scaled", {"a": 3.0})
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse(sympy.Symbol("TP") + sympy.Symbol("x", real=True), None)
    assert info.value.problem.startswith("parameter 'x' has no value: pass params=")


def test_a_catalog_metric_carries_its_source_and_description():
    metric = parse(" fbeta ", {"beta": 2.0})
    assert metric.source == "(1 + beta**2)*TP/((1 + beta**2)*TP + beta**2*FN + FP)"
    assert metric.description and metric.description == parse("fbeta").description
    assert metric.param_values == {"beta": 2.0}


def test_a_parameter_in_an_exponent_is_the_simplest_fraction_up_to_a_millionth():
    """A float that is a fraction with a denominator up to 10**6 counts as that fraction; beyond, as its decimal."""
    exact = sympy.Rational(1, 97)
    assert parse("(TP/P)**g", {"g": 1 / 97}).expr == TP ** exact / (FN + TP) ** exact
    exponent = sympy.Rational(repr(1 / 1_000_003))
    assert parse("(TP/P)**g", {"g": 1 / 1_000_003}).expr == TP ** exponent / (FN + TP) ** exponent


def test_the_length_and_parenthesis_limits_hold_at_their_edges():
    longest = "TP+" * 666 + "TP"
    assert len(longest) == MAX_LENGTH and parse(longest).expr == 667 * TP
    deepest = "(" * MAX_DEPTH + "TP" + ")" * MAX_DEPTH
    assert parse(deepest).expr == TP
    # Depth counts open parentheses: closing one gives one back, so groups side by side are not nested.
    assert parse("(TP)+" + deepest).expr == 2 * TP
    assert parse("+".join(["(" * 60 + "TP" + ")" * 60] * 3)).expr == 3 * TP


@pytest.mark.parametrize("outside, inside, deepest", [
    ("", "", MAX_DEPTH),                       # - - ... - TP
    ("(", ")*FN", MAX_DEPTH - 1),              # the left operand
    ("FN*", "", MAX_DEPTH - 1),                # the right operand
    ("(", ")**2", MAX_DEPTH - 1),              # the base of a power
    ("abs(", ")", MAX_DEPTH - 1),              # a function's argument
    ("max(FN, ", ")", MAX_DEPTH - 1),
    ("curve_area(", ", FP/N)", MAX_DEPTH - 1),  # a curve's Y
    ("curve_area(TP/P, ", ")", MAX_DEPTH - 1),  # and X
], ids=plain_id)
def test_the_nesting_limit_holds_at_its_edge_inside_each_construct(outside, inside, deepest):
    """The syntax tree may be MAX_DEPTH levels deep wherever the nesting is: in an operand, a base, an argument."""
    assert parse(outside + "-" * deepest + "TP" + inside).expr.free_symbols
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse(outside + "-" * (deepest + 1) + "TP" + inside)
    assert info.value.problem == "the expression is nested deeper than 100 levels"
    assert info.value.column == len(outside) + deepest + 1


def test_an_exponent_is_nested_like_any_operand():
    assert parse("TP**" + "-" * (MAX_DEPTH - 1) + "1").expr == 1 / TP  # 99 minus signs: TP**-1
    with pytest.raises(metricc.MetricSyntaxError, match="nested deeper than 100 levels"):
        parse("TP**" + "-" * MAX_DEPTH + "1")


@pytest.mark.parametrize("text, expr", [
    ("TP + 0**2", TP),                                # a zero base has no magnitude to compare
    ("TP*(10**7)**44", TP * sympy.Integer(10) ** 308),  # exactly 1e308 is accepted
    ("TP*1e308", TP * sympy.Integer(10) ** 308),
    ("TP*1" + "0" * 308, TP * sympy.Integer(10) ** 308),
    ("exp(709)*TP", TP * sympy.exp(709)),
    ("TP*(1_000.5)", TP * sympy.Rational(2001, 2)),     # digits grouped by underscores stay exact
    ("0.1000000000000000000001*TP", TP * sympy.Rational(10 ** 21 + 1, 10 ** 22)),  # as written, not as a float
    (f"{int(1e308)}*TP", TP * int(1e308)),              # the float 1e308 exactly, written as an integer
    (f"{int(1e308) // 2}*2*TP", TP * int(1e308)),       # and computed
    ("TP**-(-1)", TP),
    ("min(2, 3)*TP", 2 * TP),                          # numbers fold
    ("max(TP, min(FN, 1))", sympy.Max(TP, sympy.Min(FN, 1, evaluate=False), evaluate=False)),
], ids=plain_id)
def test_values_at_the_edge_of_the_limits_are_accepted(text, expr):
    assert parse(text).expr == expr


@pytest.mark.parametrize("text, outer, inner", [("max(FN, min(TP, max(FN, FP)))/n", sympy.Max, sympy.Min),
                                                 ("min(FN, max(TP, min(FN, FP)))/n", sympy.Min, sympy.Max)],
                         ids=["max", "min"])
def test_min_and_max_of_symbols_stay_as_written(text, outer, inner):
    """Unevaluated: sympy's evaluated Max(FN, Min(TP, Max(FN, FP))) would not survive printing and parsing."""
    metric = parse(text)
    assert parse(metric.text()).expr == metric.expr
    numerator = sympy.fraction(metric.expr)[0]
    assert numerator == outer(FN, inner(TP, outer(FN, FP, evaluate=False), evaluate=False), evaluate=False)


def test_a_name_of_many_xs_is_not_a_parenthesis():
    """Only ( [ { open a level and only ) ] } close one: a long name neither nests nor un-nests."""
    name = "X" * (MAX_DEPTH + 1)
    assert parse(f"{name}*TP/n", {name: 2.0}).expr.free_symbols >= {TP, FN}
    with pytest.raises(metricc.MetricSyntaxError, match="parentheses nested deeper than 100 levels"):
        parse(f"{name}*" + "(" * (MAX_DEPTH + 1) + "TP" + ")" * (MAX_DEPTH + 1), {name: 2.0})


def test_a_catalog_metric_keeps_the_domain_its_parameter_values_give():
    """focal_tversky with gamma = -1 is 1 - (TP + αFP + βFN)/(αFP + βFN): the power of the written fraction
    cancels its denominator, which must still be non-zero."""
    metric = parse("focal_tversky", {"gamma": -1.0})
    alpha, beta = parameter_symbol("alpha"), parameter_symbol("beta")
    assert metric.domain == (TP + alpha * FP + beta * FN,)
    assert metric.param_values == {"alpha": 0.3, "beta": 0.7}


def test_an_imaginary_value_that_reaches_the_last_guard_is_refused():
    """The grammar's own checks refuse every root or logarithm of a negative quantity first (above); the last
    guard before a value is used holds on its own."""
    converter = _Converter("TP", {})
    node = ast.parse("TP", mode="eval").body
    with pytest.raises(metricc.MetricSyntaxError) as info:
        converter._check_real(node, sympy.I * TP)
    assert info.value.problem == ("this is imaginary (a root or logarithm of a negative quantity, such as sqrt(-TP)); "
                                  f"{_REAL}")
    assert (info.value.column, info.value.length) == (0, 2)
    assert converter._check_real(node, sympy.sqrt(TP)) == sympy.sqrt(TP)
    # Imaginary once the parameter's value is in (sqrt(a*TP) with a = -1), or through a constant sympy keeps.
    with pytest.raises(metricc.MetricSyntaxError, match="this is imaginary"):
        _Converter("TP", {"a": -1.0})._check_real(node, sympy.sqrt(parameter_symbol("a") * TP))
    with pytest.raises(metricc.MetricSyntaxError, match="this is imaginary"):
        converter._check_real(node, (-1) ** sympy.Rational(1, 3) * TP)


def test_a_parser_that_runs_out_of_recursion_is_a_refusal(monkeypatch):
    def exhausted(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ast, "parse", exhausted)
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse("TP/n")
    assert info.value.problem == "cannot parse the expression: maximum recursion depth exceeded"


# -- the written domain, condition by condition --------------------------------------------------

# (text, [(condition, needs, segment, description)]) in the order the text writes them.
DOMAINS = [
    ("TP/n*FP/FP*FN/FN", [("FP", "nonzero", "TP/n*FP/FP", "FP = 0"),
                          ("FN", "nonzero", "TP/n*FP/FP*FN/FN", "FN = 0")]),
    ("TP/n*(FP*FN)/(FP*FN)", [("FN", "nonzero", "TP/n*(FP*FN)/(FP*FN)", "FN = 0"),
                              ("FP", "nonzero", "TP/n*(FP*FN)/(FP*FN)", "FP = 0")]),
    ("TP/n*sqrt(FP-FN)/sqrt(FP-FN)", [("FP - FN + abs(FN - FP)", "positive", "sqrt(FP-FN)", "FP - FN ≤ 0"),
                                      ("FP - FN", "nonzero", "TP/n*sqrt(FP-FN)/sqrt(FP-FN)", "FP - FN = 0")]),
    ("TP/n*log(FP/FN)/log(FP/FN)", [("FN", "nonzero", "FP/FN", "FN = 0"), ("FP", "nonzero", "log(FP/FN)", "FP = 0"),
                                    ("log(FP/FN)", "nonzero", "TP/n*log(FP/FN)/log(FP/FN)", "log(FP/FN) = 0")]),
    ("TP/n*(TP/FP)/(TP/FP)", [("FP", "nonzero", "TP/FP", "FP = 0"),
                              ("TP", "nonzero", "TP/n*(TP/FP)/(TP/FP)", "TP = 0")]),
    ("TP/n + (FP-FN)**(-1/2)*(FP-FN)**(1/2)", [("FP - FN + abs(FN - FP)", "positive", "(FP-FN)**(-1/2)",
                                               "FP - FN ≤ 0")]),
    ("TP/n*sqrt(FP/(FN+1))/sqrt(FP/(FN+1))", [("FP", "nonzero", "TP/n*sqrt(FP/(FN+1))/sqrt(FP/(FN+1))", "FP = 0")]),
    ("TP/n + 0*log(FP)", [("FP", "nonzero", "log(FP)", "FP = 0")]),
    ("TP/n + 0/FP", [("FP", "nonzero", "0/FP", "FP = 0")]),
    ("TP/n*FP**(-1)*FP", [("FP", "nonzero", "FP**(-1)", "FP = 0")]),
    ("TP/n*(FP**2/FP**2)", [("FP", "nonzero", "FP**2/FP**2", "FP = 0")]),
    ("TP/n*(2*FP)/(2*FP)", [("FP", "nonzero", "TP/n*(2*FP)/(2*FP)", "FP = 0")]),
    ("TP/n*sqrt(FP-FN)**2", [("FP - FN + abs(FN - FP)", "positive", "sqrt(FP-FN)", "FP - FN ≤ 0")]),
    ("TP**(1/2)/TP**(1/2)*FP/n", [("TP", "nonzero", "TP**(1/2)/TP**(1/2)", "TP = 0")]),  # a root of 0 is defined
    ("TP**(-1/2)*TP**(1/2)*FP/n", [("TP", "nonzero", "TP**(-1/2)", "TP = 0")]),  # a root in a denominator is not
    ("sqrt(TP - FP)*FN/n*FP/FP", [("FP", "nonzero", "sqrt(TP - FP)*FN/n*FP/FP", "FP = 0")]),  # the root stays
    ("(FP+1)*FN/((FP+1)*FN)*TP/n", [("FN", "nonzero", "(FP+1)*FN/((FP+1)*FN)", "FN = 0")]),  # FP + 1 ≠ 0
    ("TP/FN*(FN*FP)/(FN*FP)", [("FP", "nonzero", "TP/FN*(FN*FP)/(FN*FP)", "FP = 0")]),  # still divides by FN
    ("sqrt(FP-FN)**2*sqrt(TP-FN)**2/n", [("FP - FN + abs(FN - FP)", "positive", "sqrt(FP-FN)", "FP - FN ≤ 0"),
                                         ("TP - FN + abs(FN - TP)", "positive", "sqrt(TP-FN)", "TP - FN ≤ 0")]),
    ("TP/n*(FP-FN)**(-1)*(FP-FN)", [("FP - FN", "nonzero", "(FP-FN)**(-1)", "FP - FN = 0")]),
    ("TP/n*log(FP-FN)**0", [("FP - FN + abs(FN - FP)", "positive", "log(FP-FN)", "FP - FN ≤ 0")]),
    ("sqrt(TP-FP)*(TP-FP)/(TP-FP)/n", [("TP - FP", "nonzero", "sqrt(TP-FP)*(TP-FP)/(TP-FP)", "TP - FP = 0")]),
    ("TP/n*sqrt((TP-FP)/(TP-FN))**2", [  # the denominator's sign is unknown: the whole quotient must be > 0
        ("(TP - FP)/(TP - FN) + abs((FP - TP)/(FN - TP))", "positive", "sqrt((TP-FP)/(TP-FN))",
         "(TP - FP)/(TP - FN) ≤ 0")]),
    ("TP/n*(TP/2-FP)/(TP/2-FP)", [("(1/2)*TP - FP", "nonzero", "TP/n*(TP/2-FP)/(TP/2-FP)", "(1/2)*TP - FP = 0")]),
    ("TP/n*(TP/FP+1)/(TP/FP+1)", [("FP", "nonzero", "TP/FP", "FP = 0"),  # zero where its numerator is
                                  ("FP + TP", "nonzero", "TP/n*(TP/FP+1)/(TP/FP+1)", "FP + TP = 0")]),
    ("TP/n*(-FP-1)/(-FP-1)", []),         # never 0 on a batch, though negative
    ("sqrt(TP-FP)*sqrt(FN-FP)*FP/FP/n", [("FP", "nonzero", "sqrt(TP-FP)*sqrt(FN-FP)*FP/FP", "FP = 0")]),  # both
    ("sqrt(FN-FP)*sqrt(TP-FP)*FP/FP/n", [("FP", "nonzero", "sqrt(FN-FP)*sqrt(TP-FP)*FP/FP", "FP = 0")]),  # roots stay
    ("TP/n*(FP-FN)/(FP-FN)/(FN-FP)", []),  # still divides by FN - FP, the same zero set up to sign
    ("sqrt(TP - FP)*FN/n", []),           # the expression still takes the root: the analysis sees its sign
    ("TP/n + sqrt(FP)**2", []),           # FP ≥ 0 on every batch: nothing lost
    ("TP/n*((FP+1)/(FP+1))", []),         # FP + 1 is never 0
    ("sqrt(TP)*sqrt(TP)/n", []),
    ("(TP - FN)**2/(TP - FN)**2*FP/n", [("TP - FN", "nonzero", "(TP - FN)**2/(TP - FN)**2", "TP - FN = 0")]),
    ("sqrt(TP - FN)/sqrt(TP - FN)*log(FP)/n", [
        ("TP - FN + abs(FN - TP)", "positive", "sqrt(TP - FN)", "TP - FN ≤ 0"),
        ("TP - FN", "nonzero", "sqrt(TP - FN)/sqrt(TP - FN)", "TP - FN = 0")]),  # log(FP) is still there
]


@pytest.mark.parametrize("text, expected", DOMAINS, ids=numbered_ids(DOMAINS))
def test_each_condition_simplification_removed_is_kept_with_what_wrote_it(text, expected):
    metric = parse(text)
    found = written_domain(metric)
    assert [(metricc.metric.to_text(c), w.needs, w.segment, w.describe()) for c, w in found.items()] == expected
    assert len(metric.domain) == len(expected)


def test_a_hand_built_metric_has_no_written_domain_to_show():
    metric = Metric(expr=TP / (TP + FN), domain=(FP,))
    assert written_domain(metric) == {}
    assert written_domain(Metric(expr=TP / (TP + FN), source="TP/P")) == {}
    assert written_domain(Metric(expr=TP / (TP + FN), source="f1", domain=(FP,))) == {}
