"""The emitter's small parts, each against its table: names, literals, printed expressions, options.

Whatever reaches generated source passes through one of these; ``test_emit_golden.py`` checks the whole
text they make up, these say what each part does at its edges (and what it refuses, word for word).
"""

import ast
import types
import warnings

import numpy as np
import pytest
import sympy

import metricc
from metricc import emit
from metricc.metric import FN, FP, TP

from .ids import plain_id
from .test_hostile import _Printing as _Loud  # a str whose repr() is code


@pytest.mark.parametrize("metric_name, names", [
    ("f1", ("F1Loss", "f1_loss")),
    ("my_metric", ("MyMetricLoss", "my_metric_loss")),
    ("_x_", ("XLoss", "x_loss")),
    ("__", ("CompiledMetricLoss", "metric_loss")),       # nothing left of the name: "metric", not the runtime's class
    ("x3", ("X3Loss", "x3_loss")),
    ("_3d", ("Metric3dLoss", "metric_3d_loss")),          # a class name cannot start with a digit, nor a function's
    ("metric", ("CompiledMetricLoss", "metric_loss")),    # must not shadow the runtime's MetricLoss
    ("functional", ("FunctionalLoss", "compiled_functional_loss")),  # nor its functional_loss
    ("Recall_AT_k", ("RecallATKLoss", "recall_at_k_loss")),
], ids=plain_id)
def test_loss_names(metric_name, names):
    assert emit.loss_names(metric_name) == names


@pytest.mark.parametrize("metric_name", ["class", "3d", "a-b", ""], ids=plain_id)
def test_loss_names_refuse_what_is_not_an_identifier(metric_name):
    with pytest.raises(ValueError) as info:
        emit.loss_names(metric_name)
    assert str(info.value) == f"metric name {metric_name!r} is not a valid Python identifier"


@pytest.mark.parametrize("value, source", [
    (None, "None"), (True, "True"), (3, "3"), (0.5, "0.5"), (-0.0, "-0.0"), ("a'b", '"a\'b"'),
    (("x",), "('x',)"), ((1, 2.5), "(1, 2.5)"), ((), "()"), (_Loud("f1"), "'f1'"),
], ids=plain_id)
def test_literals_are_read_back_as_the_same_value(value, source):
    assert emit._literal(value) == source
    assert eval(source) == value  # noqa: S307 - the literal's own round trip


@pytest.mark.parametrize("value, shown", [
    (float("nan"), "nan (float)"), ([1], "[1] (list)"), (1 + 2j, "(1+2j) (complex)"),
    (np.float64(0.5), "np.float64(0.5) (float64)"),
], ids=plain_id)
def test_literals_refuse_what_python_would_not_read_back(value, shown):
    with pytest.raises(TypeError) as info:
        emit._literal(value)
    assert str(info.value) == f"cannot write {shown} into generated code"


@pytest.mark.parametrize("expr, source", [
    (sympy.sqrt(TP), "ops.sqrt(TP)"),
    (1 / sympy.sqrt(TP), "1/ops.sqrt(TP)"),
    (1 / (TP + FN), "1/(FN + TP)"),
    (TP ** -2, "TP**(-2)"),
    (TP ** sympy.Rational(3, 2), "TP**(3/2)"),
    (sympy.sqrt(2) * TP, "1.4142135623730951*TP"),
    (-sympy.sqrt(2), "(-1.4142135623730951)"),
    (sympy.pi, "3.141592653589793"),
    (sympy.sqrt(2) / 4, "0.3535533905932738"),  # only a negative constant is parenthesized
    (sympy.Float(0.25) * TP, "0.25*TP"),
    (sympy.log(TP), "ops.log(TP)"),
    (sympy.exp(TP), "ops.exp(TP)"),
    (sympy.Abs(TP - FN), "ops.abs(FN - TP)"),
    (sympy.sign(TP - FN), "ops.sign(-FN + TP)"),
    (sympy.Heaviside(TP - FN), "ops.heaviside(-FN + TP)"),
    (sympy.Min(TP, FN), "ops.minimum(FN, TP)"),
    (sympy.Max(TP, FN, 1), "ops.maximum(1, FN, TP)"),
], ids=plain_id)
def test_printed_expressions_call_the_runtimes_ops(expr, source):
    assert emit.print_python(expr) == source


def test_a_constant_that_is_not_finite_is_not_printed():
    with pytest.raises(ValueError, match="constant -oo is not finite"):
        emit.print_python(-sympy.oo)


_BINARY_HAS_ONE_CLASS = ("num_classes, average and class_weights apply to task='multiclass' or task='multilabel'; "
                         "task='binary' has one class")


@pytest.mark.parametrize("options, error, message", [
    (dict(task="nope"), ValueError, "task must be one of ('binary', 'multiclass', 'multilabel'), got 'nope'"),
    (dict(class_weights=[1.0]), TypeError, "EmitOptions.class_weights bakes a rule such as 'inverse_square'; pass "
                                           "per-class weights to the loss instead"),
    (dict(average="macro"), ValueError, _BINARY_HAS_ONE_CLASS),
    (dict(class_weights="inverse_square"), ValueError, _BINARY_HAS_ONE_CLASS),
    (dict(reduce="x"), ValueError, "reduce must be one of ('batch', 'image'), got 'x'"),
    (dict(reduction="x"), ValueError, "reduction must be one of ('mean', 'sum', 'none'), got 'x'"),
    (dict(estimator="x"), ValueError, "estimator must be one of ('batch', 'running'), got 'x'"),
    (dict(momentum=2.0), ValueError, "momentum must be a number in [0, 1), got 2.0"),
    (dict(from_logits=1), TypeError, "from_logits must be True or False, got 1"),
    (dict(sync="yes"), TypeError, "sync must be True or False, got 'yes'"),
    (dict(grad_average=None), TypeError, "grad_average must be True or False, got None"),
    (dict(validate=0), TypeError, "validate must be True or False, got 0"),
], ids=plain_id)
def test_options_are_refused_with_the_runtimes_message(options, error, message):
    with pytest.raises(error) as info:
        emit.EmitOptions(**options)
    assert str(info.value) == message


def test_options_hold_plain_values_and_list_what_differs_from_the_defaults():
    options = emit.EmitOptions(zero_division=np.float64(0.5), momentum=np.float32(0.25), task="multiclass",
                               num_classes=np.int64(3), average="macro", ignore_index=np.int16(-1))
    assert [type(getattr(options, name)) for name in ("zero_division", "momentum", "num_classes", "ignore_index")] \
        == [float, float, int, int]
    assert options.as_dict() == {"from_logits": True, "zero_division": 0.5, "task": "multiclass", "num_classes": 3,
                                 "average": "macro", "ignore_index": -1, "momentum": 0.25}
    assert emit.EmitOptions().as_dict() == {"from_logits": True, "zero_division": 0.0, "task": "binary"}
    assert type(emit.EmitOptions(task=_Loud("binary")).task) is str


def test_a_choice_is_one_of_its_own_strings():
    assert emit._choice("direction", "minimize", ("maximize", "minimize")) == "minimize"
    with pytest.raises(ValueError) as info:
        emit._choice("direction", "up", ("maximize", "minimize"))
    assert str(info.value) == "direction must be one of ('maximize', 'minimize'), got 'up'"


def test_local_names_are_numbered_when_taken():
    local = emit._LocalNames()
    assert [local.unique(name) for name in ("value", "value", "TP", "ops", "value")] == \
        ["value", "value_2", "TP_2", "ops_2", "value_3"]


def test_an_inverse_of_an_atom_is_not_parenthesized():
    assert emit.print_python(1 / TP) == "1/TP"


def test_docstring_text_reads_back_as_the_text():
    text = 'a \\ b """ c \0 d \\n'
    escaped = emit._docstring_text(text)
    assert escaped == 'a \\\\ b \\"\\"\\" c \\x00 d \\\\n'
    assert ast.literal_eval('"""' + escaped + '"""') == text


def test_temporaries_are_named_after_what_they_compute():
    """A named sum, its square, its integer multiples (a minus sign spelled out), a temporary used only as a
    denominator, and one used both as a denominator and elsewhere (a plain term)."""
    x = sympy.symbols("x0:7", real=True)
    substitutions = [(x[0], TP + FP), (x[1], x[0] ** 2), (x[2], 3 * x[0]), (x[3], -3 * x[0]),
                     (x[4], TP + 2 * FN), (x[5], FN + 3 * TP), (x[6], x[0] ** -2)]
    derivation = types.SimpleNamespace(common_subexpressions=substitutions,
                                       outputs=[x[1] * x[2] * x[3] * x[6] / x[4] + x[5] + 1 / x[5]])
    names = emit._temporary_names(derivation, emit._LocalNames())
    assert [names[symbol] for symbol in x] == ["PP", "PP_squared", "PP_times_3", "PP_times_minus_3", "denominator",
                                               "term", "inverse_PP_squared"]


def test_a_written_domain_of_several_entries_guards_each():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines = metricc.compile_metric("TP/n*FP/FP*FN/FN").source.splitlines()
    assert "    # the text divides by FP, FN, which simplification cancelled: undefined where it is 0" in lines
    assert "    defined = (FP)/(FP) * (FN)/(FN)" in lines
