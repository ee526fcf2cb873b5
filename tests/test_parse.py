"""The parser: the grammar's language is accepted, everything else gets a positioned error."""

import dataclasses
import time

import pytest
import sympy

import metricc
from metricc.catalog import catalog, grammar_dir
from metricc.errors import Option
from metricc.metric import FN, FP, TN, TP, Metric, parameter_symbol
from metricc.parse import MAX_LENGTH, parse, written_domain


def test_f1_text_becomes_the_expected_expression():
    metric = parse("2*TP/(2*TP+FP+FN)")
    assert sympy.simplify(metric.expr - 2 * TP / (2 * TP + FP + FN)) == 0
    assert metric.name == "metric" and metric.params == () and metric.direction is None


def test_derived_symbols_expand_to_confusion_entries():
    metric = parse("TP/P + TN/N + PP/n + PN/n")
    expected = TP / (TP + FN) + TN / (FP + TN) + (TP + FP) / (TP + FN + FP + TN) + (FN + TN) / (TP + FN + FP + TN)
    assert sympy.simplify(metric.expr - expected) == 0


def test_functions_and_numeric_exponents():
    metric = parse("sqrt(TP/P) + log(1 + TP/n) + exp(-FP/n) + abs(TP - FP)/n + min(TP, FP)/max(P, N) + TP**(1/2)")
    names = {type(node).__name__ for node in sympy.preorder_traversal(metric.expr)}
    assert {"log", "exp", "Abs", "Min", "Max"} <= names


def test_decimal_literals_are_exact_rationals():
    metric = parse("0.1*TP/n + 1e-3*FP/n")
    assert sympy.Rational(1, 10) in metric.expr.atoms(sympy.Rational)
    assert sympy.Rational(1, 1000) in metric.expr.atoms(sympy.Rational)


def test_catalog_name_with_parameter_override():
    default = parse("fbeta")
    assert default.param_values == {"beta": 1.0} and default.direction == "maximize"
    beta2 = parse("fbeta", {"beta": 2.0})
    assert beta2.param_values == {"beta": 2.0}
    value = beta2.bound_expr().subs({TP: 3, FN: 1, FP: 2, TN: 4})
    assert value == pytest.approx(5 * 3 / (5 * 3 + 4 * 1 + 2))


def test_catalog_has_at_least_twenty_metrics_with_required_names():
    names = set(catalog())
    required = {"accuracy", "error_rate", "precision", "recall", "specificity", "npv", "f1", "fbeta", "gmean",
                "balanced_accuracy", "mcc", "jaccard", "fowlkes_mallows", "informedness", "markedness",
                "cohen_kappa", "tversky", "dice", "threat_score", "focal_tversky"}
    assert required <= names and len(names) >= 20
    for entry in catalog().values():
        parse(entry.name)  # every entry parses
        assert entry.description and entry.reference


def test_catalog_metrics_agree_with_their_definitions_on_a_matrix():
    cm = {TP: 7, FN: 3, FP: 2, TN: 13}
    n = 25
    expected = {
        "accuracy": 20 / n, "error_rate": 5 / n, "precision": 7 / 9, "recall": 7 / 10, "specificity": 13 / 15,
        "npv": 13 / 16, "f1": 14 / 19, "jaccard": 7 / 12, "balanced_accuracy": (7 / 10 + 13 / 15) / 2,
        "gmean": (7 / 10 * 13 / 15) ** 0.5, "informedness": 7 / 10 + 13 / 15 - 1, "markedness": 7 / 9 + 13 / 16 - 1,
        "fowlkes_mallows": (7 / 9 * 7 / 10) ** 0.5,
        "mcc": (7 * 13 - 2 * 3) / ((9 * 10 * 15 * 16) ** 0.5),
    }
    po, pe = 20 / n, (10 * 9 + 15 * 16) / n**2
    expected["cohen_kappa"] = (po - pe) / (1 - pe)
    for name, value in expected.items():
        assert float(parse(name).bound_expr().subs(cm)) == pytest.approx(value), name


def test_sympy_expression_input_is_validated_through_the_grammar():
    metric = parse(2 * sympy.Symbol("TP") / (2 * sympy.Symbol("TP") + sympy.Symbol("FP") + sympy.Symbol("FN")))
    assert sympy.simplify(metric.expr - 2 * TP / (2 * TP + FP + FN)) == 0
    with pytest.raises(metricc.MetricSyntaxError, match="function 'sin'"):
        parse(sympy.sin(sympy.Symbol("TP")))


def test_parameters_are_symbols_until_bound():
    metric = parse("TP/(TP + a*FN)", {"a": 3})
    assert parameter_symbol("a") in metric.expr.free_symbols
    assert metric.bound_expr().subs({TP: 1, FN: 1}) == pytest.approx(0.25)


def test_parameters_in_exponents_take_their_values_when_the_metric_is_read():
    metric = parse("1 - ((a*FP + b*FN)/(TP + a*FP + b*FN))**(1/g)", {"a": 0.3, "b": 0.7, "g": 4 / 3})
    assert sympy.Rational(3, 4) in {power.exp for power in metric.expr.atoms(sympy.Pow)}  # 1/(4/3), exactly
    assert metric.param_values == {"a": 0.3, "b": 0.7}  # g is in no expression any more
    assert parse("(TP/(TP + FN))**g", {"g": 0.1}).expr == (TP / (TP + FN)) ** sympy.Rational(1, 10)
    focal = parse("focal_tversky", {"gamma": 2.0}).bound_expr().subs({TP: 7, FN: 3, FP: 2, TN: 13})
    assert float(focal) == pytest.approx(1 - (1 - 7 / (7 + 0.3 * 2 + 0.7 * 3)) ** 0.5)
    with pytest.raises(metricc.MetricSyntaxError, match="larger than 64"):
        parse("(TP/(TP + FN))**(1/g)", {"g": 0.001})


@pytest.mark.parametrize("text, fragment, culprit", [
    ("2*TP/(2*TP+FP+FX)", "unknown name 'FX': did you mean 'FP' or 'FN'", "FX"),
    ("__import__('os').system('id')", "attribute access", "__import__('os').system"),
    ("TP.__class__", "attribute access", "TP.__class__"),
    ("FN**TP", "exponents must be numbers or parameters", "TP"),
    ("(1+b**2)*TP/((1+b**2)*TP+b**2*FN+FP)", "parameter 'b' has no value", "b"),
    ("tp/(tp+FN)", "did you mean 'TP'", "tp"),
    ("foo(TP)", "function 'foo' is not allowed", "foo"),
    ("TP^2", "write **", "TP^2"),
    ("TP // FN", "'//' is not allowed", "TP // FN"),
    ("TP if FP else TN", "conditional expression", "TP if FP else TN"),
    ("lambda: TP", "lambda", "lambda: TP"),
    ("[TP for TP in FN]", "comprehension", "[TP for TP in FN]"),
    ("f'{TP}'", "f-string", "f'{TP}'"),
    ("(x := TP)", "assignment", "x := TP"),
    ("TP[0]", "only the group index g may appear in brackets", "0"),
    ("TP[g:2]", "only the group index g may appear in brackets", "g:2"),
    ("TP < FP", "comparison", "TP < FP"),
    ("'TP'", "a string", "'TP'"),
    ("TP/0", "division by zero", "0"),
    ("sqrt(-1)*TP", "is not real", "sqrt(-1)"),
    ("TP/(a - b)", "division by zero: this is 0 with a = 0.5, b = 0.5", "a - b"),
    ("TP*(a - b)**-1", "the base is 0 with a = 0.5, b = 0.5", "(a - b)**-1"),
    ("exp(1000)*TP", "overflows", "exp(1000)"),
    ("TP**10**10", "larger than 64", "10**10"),
    ("min(TP)", "at least 2 arguments", "min(TP)"),
    ("sqrt(TP, FN)", "exactly 1 argument", "sqrt(TP, FN)"),
    ("sqrt(x=TP)", "keyword", "TP"),
    ("sqrt + TP", "is a function", "sqrt"),
    ("__foo + TP", "underscore", "__foo"),
    ("torch + TP", "reserved", "torch"),
    ("1 + 2", "no confusion symbol", "1 + 2"),
    ("TP +", "invalid syntax", None),
    ("2*TP/(2*TP+FP+FN", "invalid syntax", None),
])
def test_bad_input_gets_a_positioned_message(text, fragment, culprit):
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse(text, {"a": 0.5, "b": 0.5} if "a - b" in text else None)
    message = str(info.value)
    assert fragment in message
    assert isinstance(info.value, ValueError)
    if culprit is not None:
        column = text.index(culprit)
        assert info.value.column == column
        assert f"column {column + 1}" in message
        shown, carets = message.splitlines()[-2:]
        assert shown.strip() == text.strip()
        assert carets.index("^") == shown.index(text[0]) + column
        assert carets.strip() == "^" * len(culprit)


def test_empty_and_unknown_catalog_names():
    with pytest.raises(metricc.MetricSyntaxError, match="empty metric expression"):
        parse("   ")
    with pytest.raises(metricc.MetricSyntaxError, match="not a catalog metric.*'f1'"):
        parse("f3")


def test_unused_or_bad_params_are_refused():
    with pytest.raises(metricc.MetricSyntaxError, match="does not use"):
        parse("f1", {"beta": 2})
    with pytest.raises(metricc.MetricSyntaxError, match="does not use"):
        parse("TP/n", {"gamma": 1})
    with pytest.raises(metricc.MetricSyntaxError, match="finite"):
        parse("fbeta", {"beta": float("inf")})
    with pytest.raises(metricc.MetricSyntaxError, match="real number"):
        parse("fbeta", {"beta": "2"})


def test_non_ascii_and_control_characters_are_refused_with_position():
    with pytest.raises(metricc.MetricSyntaxError, match="CYRILLIC CAPITAL LETTER TE") as info:
        parse("2*\u0422P/n")
    assert info.value.column == 2
    with pytest.raises(metricc.MetricSyntaxError, match="U\\+0000"):
        parse("TP\x00/n")
    with pytest.raises(metricc.MetricSyntaxError, match="plain ASCII"):
        parse("\uff34\uff30/n")  # full-width letters, which Python would normalise to TP


@pytest.mark.parametrize("text, fragment", [
    ("TP+" * 700 + "TP", "characters long"),
    ("(" * 150 + "TP" + ")" * 150, "nested deeper than 100"),
    ("-" * 500 + "TP", "nested deeper than 100"),
    ("(" * 10_000 + "TP" + ")" * 10_000, "characters long"),
    ("TP**(2**64**64)", "larger than 64"),
    ("TP*((10**60)**60)**60", r"larger than 1e\+308"),
])
def test_denial_of_service_guards_refuse_quickly(text, fragment):
    started = time.perf_counter()
    with pytest.raises(metricc.MetricSyntaxError, match=fragment):
        parse(text)
    assert time.perf_counter() - started < 1.0


def test_long_flat_sums_are_not_mistaken_for_deep_nesting():
    text = "+".join(["TP"] * 500)
    assert len(text) < MAX_LENGTH
    assert parse(text).expr == 500 * TP


@pytest.mark.parametrize("name", list(catalog()))
def test_text_round_trip_gives_the_same_expression(name):
    metric = parse(name)
    again = parse(metric.text(), metric.param_values)
    assert again.expr == metric.expr


def test_grammar_file_documents_every_function_and_symbol():
    text = (grammar_dir() / "metric.ebnf").read_text()
    for token in ("sqrt", "log", "exp", "abs", "min", "max", '"TP"', '"FN"', '"FP"', '"TN"', '"PP"', '"PN"', '"n"'):
        assert token in text


def test_metric_name_must_be_an_identifier():
    assert parse("f1", name="my_f1").name == "my_f1"
    with pytest.raises(metricc.MetricSyntaxError, match="identifier"):
        parse("f1", name="my f1")
    with pytest.raises(metricc.MetricSyntaxError, match="identifier"):
        parse("f1", name="class")


# -- the written domain ------------------------------------------------------------------------

@pytest.mark.parametrize("text, domain, segment", [
    ("(FP/FP)*TP/(TP+FN)", (FP,), "FP/FP"),
    ("TP/FP*FP/n", (FP,), "TP/FP"),
    ("TP/(FP/FP)", (FP,), "FP/FP"),
    ("sqrt(FP)/sqrt(FP)*TP/n", (FP,), "sqrt(FP)/sqrt(FP)"),
    ("TP**-1*TP*FN/n", (TP,), "TP**-1"),
    ("exp(log(TP))/n", (TP,), "log(TP)"),  # log 0 is -inf: undefined at TP = 0 as written
    ("exp(log(TP - FP))/n", (TP - FP + sympy.Abs(TP - FP),), "log(TP - FP)"),  # zero exactly where TP ≤ FP
    ("sqrt(TP/n - FP/n)**2", (TP - FP + sympy.Abs(TP - FP),), "sqrt(TP/n - FP/n)"),
])
def test_denominators_roots_and_logs_that_simplification_removes_are_kept_in_the_domain(text, domain, segment):
    metric = parse(text)
    assert metric.domain == domain
    (source,) = written_domain(metric).values()
    assert source.segment == segment


@pytest.mark.parametrize("text", ["2*TP/(2*TP+FP+FN)", "TP/(TP+FN)*(TP+FN)/(TP+FN)", "(1 + TP)/(1 + TP)*TP/n",
                                  "log(exp(TP))/n", "sqrt(TP/n)", "log(TP/n)", "TP/(2*TP + 2*FN)",
                                  "-1/(FP - TP)*TP/n"])
def test_what_the_expression_still_shows_or_never_vanishes_is_not_recorded(text):
    assert parse(text).domain == ()


@pytest.mark.parametrize("name", list(catalog()))
def test_catalog_metrics_lose_nothing_to_simplification(name):
    assert parse(name).domain == ()


def test_the_domain_keeps_its_parameters_and_survives_params_text_and_hashing():
    metric = parse("(TP - a*FP)/(TP - a*FP)*TP/P", {"a": 2.0})
    assert metric.expr == TP / (TP + FN)
    assert metric.params == (("a", 2.0),)  # a is gone from the expression, not from the domain
    assert sympy.simplify(metric.bound_domain()[0] - (TP - 2 * FP)) == 0
    assert sympy.simplify(parse(metric, {"a": 3.0}).bound_domain()[0] - (TP - 3 * FP)) == 0
    assert hash(metric) != hash(parse("TP/P")) and metric != parse("TP/P")
    assert parse(metric.text()).expr == metric.expr  # the text round trip still gives the expression
    with pytest.raises(dataclasses.FrozenInstanceError):
        metric.domain = ()
    with pytest.raises(ValueError, match="domain"):
        Metric(expr=TP / (TP + FN), domain=[FP])


def test_symbols_that_cancel_say_the_expression_simplifies_to_a_constant():
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse("TP - TP + 1")
    assert "simplifies to the constant 1 (TP cancels)" in str(info.value)
    assert "uses no confusion symbol" in str(info.value)  # the strategies' filter matches on this
    with pytest.raises(metricc.MetricSyntaxError, match=r"constant 0 \(FP and TP cancel\)"):
        parse("TP*FP - FP*TP")
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse("1 + 2")
    assert "simplifies" not in str(info.value)


# -- aliases and options -------------------------------------------------------------------------

@pytest.mark.parametrize("alias, name", [
    ("f1_score", "f1"), ("fbeta_score", "fbeta"), ("precision_score", "precision"), ("recall_score", "recall"),
    ("accuracy_score", "accuracy"), ("balanced_accuracy_score", "balanced_accuracy"), ("matthews_corrcoef", "mcc"),
    ("cohen_kappa_score", "cohen_kappa"), ("jaccard_score", "jaccard"), ("F1_Score", "f1"),
])
def test_scikit_learn_names_are_aliases_of_catalog_metrics(alias, name):
    metric = parse(alias)
    assert metric.name == name and metric.expr == parse(name).expr
    assert alias.lower() in catalog()[name].aliases


def test_near_misses_suggest_aliases_and_colliding_aliases_are_refused():
    with pytest.raises(metricc.MetricSyntaxError, match="did you mean 'f1_score'"):
        parse("f1score")
    from metricc.catalog import _names

    entries = dict(catalog())
    entries["f1"] = dataclasses.replace(entries["f1"], aliases=("recall",))
    with pytest.raises(ValueError, match="alias 'recall' is already the name"):
        _names(entries)


def test_errors_carry_suggested_options_as_data_that_each_interface_spells():
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse("TP/(TP + beta*FN)")
    error = info.value
    assert "pass params={'beta': ...}" in str(error)
    options = [part for part in error.parts if isinstance(part, Option)]
    assert [(o.name, o.value) for o in options] == [("params", {"beta": ...})]
    shouted = error.render(lambda option: option.name.upper())
    assert "pass PARAMS, or use" in shouted and shouted.splitlines()[-1].strip() == "^^^^"  # caret kept
    with pytest.raises(metricc.MetricSyntaxError) as info:
        parse("fbeta", {"gamma": 2})
    assert str(info.value).startswith("params= gives 'gamma'")
