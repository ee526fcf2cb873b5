"""Safety fuzzing: hostile text never runs, never touches files, never hangs.

Every input, from a corpus of attacks, from random strings and from random mutations
of valid expressions, is either a metric or a ``MetricSyntaxError`` within a second.
An audit hook (installed once; it only records while a parse is running) proves that
parsing opens no file, starts no process and executes no code. Names and sources that
reach generated code cannot break out of their identifier or string.
"""

import ast
import keyword
import os
import re
import sys
import sysconfig
import time
import warnings

import mpmath
import pytest
import sympy
import torch
from hypothesis import assume, given, note
from hypothesis import strategies as st

import metricc
from metricc.catalog import catalog
from metricc.metric import CONFUSION_SYMBOLS, FN, TP, Metric
from metricc.parse import parse
from metricc.testing import MetricExpression, metric_expressions, property_settings

from .oracle import DIGITS, Dual, ReferenceMetric, Relaxation, Undefined, autograd_loss

SECONDS_PER_INPUT = 1.0

# -- the audit hook ------------------------------------------------------------------------

# Audit events that mean code ran, a file or socket was touched, or a process started.
FORBIDDEN_EVENTS = ("exec", "open", "os.", "subprocess.", "socket.", "shutil.", "ctypes.", "pty.", "glob.",
                    "builtins.input", "breakpoint", "code.__new__", "function.__new__", "pickle.",
                    "sys.setprofile", "sys.settrace", "sys.addaudithook", "urllib.", "webbrowser.", "winreg.")
# sympy imports some of its modules lazily: reading and running an installed module's code is
# the import system at work, not the input's doing.
LIBRARY_ROOTS = tuple(os.path.realpath(p) for p in {
    *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
    os.path.dirname(os.path.dirname(metricc.__file__))})
MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")
_WATCH = {"active": False, "events": []}


def _is_module_file(path) -> bool:
    path = os.path.realpath(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else ""
    return path.endswith(MODULE_SUFFIXES) and path.startswith(LIBRARY_ROOTS) and os.path.isfile(path)


def _audit(event: str, args) -> None:
    if not _WATCH["active"]:
        return
    if event == "compile":
        # ast.parse compiles to a syntax tree only, under its default filename.
        if args[1] != "<unknown>":
            _WATCH["events"].append((event, repr(args)[:200]))
        return
    if event == "open" and _is_module_file(args[0]) and (args[1] in (None, "r", "rb")):
        return
    if event == "exec" and _is_module_file(getattr(args[0], "co_filename", "")):
        return
    if event.startswith(FORBIDDEN_EVENTS):
        _WATCH["events"].append((event, repr(args)[:200]))


if not getattr(sys, "_metricc_fuzz_audit_installed", False):  # the hook cannot be removed: install it once
    sys.addaudithook(_audit)
    sys._metricc_fuzz_audit_installed = True

catalog()  # read the catalog file now, outside the watched window


def guarded_parse(text, params=None):
    """parse() under the audit hook and the clock: (Metric or MetricSyntaxError, seconds, events)."""
    _WATCH["events"] = []
    _WATCH["active"] = True
    started = time.perf_counter()
    try:
        outcome = parse(text, params)
    except metricc.MetricSyntaxError as error:
        outcome = error
    finally:
        _WATCH["active"] = False
        elapsed = time.perf_counter() - started
    return outcome, elapsed, list(_WATCH["events"])


def assert_safe(text, params=None, canary=None):
    outcome, elapsed, events = guarded_parse(text, params)
    shown = repr(text) if len(text) < 200 else repr(text[:200]) + f"... ({len(text)} characters)"
    assert not events, f"parse({shown}) triggered audit events {events}"
    assert elapsed < SECONDS_PER_INPUT, f"parse({shown}) took {elapsed:.2f} s"
    if canary is not None:
        assert not os.path.exists(canary), f"parse({shown}) created {canary}"
    if isinstance(outcome, Metric):
        allowed = set(CONFUSION_SYMBOLS) | {sympy.Symbol(k, real=True) for k in outcome.param_values}
        assert outcome.expr.free_symbols <= allowed
        assert isinstance(outcome.expr, sympy.Expr)
    else:
        assert isinstance(outcome, metricc.MetricSyntaxError)
        assert str(outcome)  # a message a person can read
    return outcome


def test_the_audit_hook_sees_what_it_must_forbid(tmp_path):
    """The hook is live: the same operations outside parse() are recorded while watching."""
    _WATCH["events"] = []
    _WATCH["active"] = True
    try:
        open(tmp_path / "probe", "w").close()
        exec("1")  # noqa: S102 - deliberately, to see the event
    finally:
        _WATCH["active"] = False
    seen = {event for event, _ in _WATCH["events"]}
    assert {"open", "exec"} <= seen


# -- the hostile corpus --------------------------------------------------------------------

def hostile_corpus(canary: str) -> list[str]:
    run = f"__import__('os').system('touch {canary}')"
    return [
        # code execution and attribute chains
        run, f"TP + {run}", f"TP*({run})", f"exec(\"open('{canary}','w')\")", f"eval('open(\"{canary}\",\"w\")')",
        f"open('{canary}', 'w')", "compile('1', '', 'eval')", "globals()", "locals()", "vars()", "breakpoint()",
        "input()", "print(TP)", "getattr(TP, '__class__')", "__builtins__", "__debug__", "__name__", "__import__",
        "TP.__class__", "TP.__class__.__mro__[1].__subclasses__()", "().__class__.__bases__[0].__subclasses__()",
        "TP.__dict__", "(TP).real", "TP.conjugate()", "sqrt.__call__(TP)", "sqrt.__globals__", "min.__self__",
        "TP.__class__.__init__.__globals__['os']", "[].__class__", "''.join", "os.system('id')", "sys.exit()",
        # lambdas, comprehensions, f-strings, walrus, other syntax
        "lambda: TP", "(lambda x: x)(TP)", "[x for x in (TP,)]", "{TP for _ in ()}", "(x for x in ())",
        "{k: TP for k in ()}", "f'{TP}'", f"f'{{{run}}}'", "f'{TP!r:>{FN}}'", "(x := TP)", "(TP := 1)",
        "TP if FP else TN", "not TP", "TP and FN", "TP or FN", "TP < FN", "TP is FN", "TP in FN", "~TP", "TP @ FN",
        "TP << 1", "TP >> 1", "TP | FN", "TP & FN", "TP ^ 2", "TP // FN", "TP % FN", "TP[0]", "TP[::]", "*TP",
        "**TP", "TP,", "(TP,)", "[TP]", "{TP}", "{}", "@TP", "await TP", "yield TP", "(yield)", "...*TP",
        "b'TP'", "'TP'", "'''TP'''", '"""', "'''", "1j*TP", "None", "True*TP", "False + TP", "min(*[TP, FN])",
        "max(**{})", "sqrt(TP)(FN)", "TP(FN)", "(TP)(FN)", "sqrt(x=TP)", "min(TP, FN, key=abs)",
        # statements and keywords
        "import os", "TP; import os", "TP\nimport os", "TP\n\nimport os", "del TP", "class", "def", "lambda",
        "pass", "return TP", "global TP", "raise", "with TP: pass", "async", "match", "match*TP", "case*TP",
        "type*TP", "_*TP", "__class__", "TP # comment", "TP\\\n+FN",
        # huge numbers and exponents
        "TP**10**10", "TP**(10**10)", "TP**-10**10", "2**10**10*TP", "9**9**9**9*TP", "10**400*TP", "1e309*TP",
        "1e308*10*TP", "TP**1e308", "TP**(1/0)", "(1/0)*TP", "(0**-1)*TP", "exp(1e10)*TP", "exp(exp(exp(10)))*TP",
        "log(0)*TP", "sqrt(-1)*TP",
        "min(TP, log(-TP))", "max(TP, sqrt(-1))", "TP**(2**64**64)", "(2**1000)**(1/1000)*TP", "1" * 1990 + "*TP",
        "0." + "0" * 1990 + "1*TP", "TP*" + "9" * 400, "TP**64**64", "TP**(64.0000001)", "TP**-64",
        # size and nesting
        "(" * 10_000 + "TP" + ")" * 10_000, "(" * 101 + "TP" + ")" * 101, "(" * 100 + "TP" + ")" * 100,
        "-" * 10_000 + "TP", "-" * 101 + "TP", "+".join(["TP"] * 10_000), "TP" + "*TP" * 600,
        "sqrt(" * 99 + "TP" + ")" * 99, "sqrt(" * 1000 + "TP" + ")" * 1000, "TP" * 100_000, "a" * 10**6,
        "min(" + ",".join(["TP"] * 600) + ")", "[" * 500, ")" * 500, "TP" + " " * 5000,
        "TP**2**2**2**2**2**2**2**2**2**2**2**2",
        # NUL and control characters
        "TP\x00", "\x00", "TP/n\x00; import os", "TP\x1b[2J", "TP\x7f", "TP\r\n+FN", "\x0c TP",
        # unicode look-alikes
        "\u0422P/n", "\uff34\uff30/n", "TP/\U0001d427", "TP\u200b/n", "TP/n\u202e", "TP\u00a0+ FN",
        "\uff53\uff51\uff52\uff54(TP)", "TP\u2044n", "TP \u2212 FN", "\u1d40P", "TP\ufeff", "\u0000\u202eTP",
        "\ufb01*TP", "TP/\u2115", "TP/n\u00e9",
        # empty and whitespace
        "", " ", "\n", "\t\t", "()", "(())",
    ]


def test_hostile_corpus_is_refused_or_accepted_safely_and_quickly(tmp_path):
    canary = str(tmp_path / "pwned")
    corpus = hostile_corpus(canary)
    outcomes = {}
    for text in corpus:
        outcomes[text] = assert_safe(text, canary=canary)
    # The corpus is hostile: nothing that executes or reaches for Python's internals is accepted.
    accepted = [t for t, o in outcomes.items() if isinstance(o, Metric)]
    for text in accepted:
        assert not any(word in text for word in ("__", "import", "lambda", "open", "exec", "eval")), text
        assert not re.search(r"[A-Za-z_)\]]\s*\.\s*[A-Za-z_]", text), text  # attribute access
    assert isinstance(outcomes["TP**10**10"], metricc.MetricSyntaxError)
    assert isinstance(outcomes["(" * 10_000 + "TP" + ")" * 10_000], metricc.MetricSyntaxError)


def test_hostile_corpus_with_parameters_named_like_builtins(tmp_path):
    """A parameter may be called ``open`` or ``exec``: it is a number, never the builtin."""
    for name in ("open", "exec", "eval", "print", "input", "compile", "globals", "self", "type", "match"):
        metric = assert_safe(f"TP/(TP + {name}*FN)", {name: 2.0})
        assert isinstance(metric, Metric)
        assert metric.bound_expr().subs({TP: 1, FN: 1}) == pytest.approx(1 / 3)
        assert isinstance(assert_safe(f"{name}(TP)", {name: 2.0}), metricc.MetricSyntaxError)


# -- random strings and mutations ----------------------------------------------------------

GRAMMAR_ALPHABET = "TPFNn()+-*/., 0123456789eE_sqrtlogexpabsminmax\t\n"
HOSTILE_TOKENS = ["__class__", ".", "lambda ", ":=", "f'", "'", '"', "[", "]", "{", "}", "**10**10", "\x00",
                  "\u0422", "\uff34", "__import__('os')", "(" * 120, ")" * 3, "if ", " for x in ", ",", "*",
                  "**", "1e999", "0x", "j", "\\", "#", ";", "\n", "not ", "@", "yield ", "TP", "sqrt(", "min("]

random_strings = st.one_of(
    st.text(alphabet=GRAMMAR_ALPHABET, max_size=200),
    st.text(max_size=200),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=300),
    st.text(alphabet=GRAMMAR_ALPHABET, min_size=1500, max_size=2500),
)


@st.composite
def mutated_expressions(draw) -> MetricExpression:
    """A valid expression with a few random edits: insertions, deletions, swaps, hostile tokens."""
    text, params = draw(metric_expressions(catalog_names=False))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "token", "duplicate"]))
        if edit == "insert":
            text = text[:position] + draw(st.characters()) + text[position:]
        elif edit == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 5)):]
        elif edit == "replace" and position < len(text):
            text = text[:position] + draw(st.sampled_from(GRAMMAR_ALPHABET)) + text[position + 1:]
        elif edit == "token":
            text = text[:position] + draw(st.sampled_from(HOSTILE_TOKENS)) + text[position:]
        else:
            end = draw(st.integers(position, len(text)))
            text = text[:end] + text[position:end] + text[end:]
    return MetricExpression(text, params)


@property_settings(max_examples=150)
@given(random_strings)
def test_random_strings_are_metrics_or_syntax_errors(text):
    note(f"metricc.parse({text!r})")
    assert_safe(text)


@property_settings(max_examples=150)
@given(mutated_expressions())
def test_mutated_expressions_are_metrics_or_syntax_errors(expression):
    note(expression.call("metricc.parse"))
    assert_safe(expression.text, expression.params or None)


@property_settings(max_examples=60)
@given(metric_expressions(), st.lists(st.tuples(*[st.integers(1, 60)] * 4), min_size=3, max_size=3))
def test_every_drawn_expression_parses_safely_to_the_metric_its_text_means(expression, matrices):
    """Parsing is safe (the audit hook, the clock) and right: on whole-number confusion matrices, the
    parsed expression (evaluated by sympy to 30 digits) has the value of the text (evaluated in 50 digits
    by the oracle's own tree walker), wherever the text is defined."""
    note(expression.call("metricc.parse"))
    metric = assert_safe(expression.text, expression.params or None)
    assert isinstance(metric, Metric)  # the strategy only draws text the parser accepts
    reference = ReferenceMetric.of(expression)
    compared = 0
    for counts in matrices:
        with mpmath.workdps(DIGITS):
            try:
                expected = reference(*(Dual(c, ()) for c in counts)).value
            except (Undefined, ZeroDivisionError):
                continue
            if not mpmath.isfinite(expected):
                continue
            expected_text = mpmath.nstr(expected, DIGITS - 5)
        exact = metric.bound_expr().xreplace(dict(zip(CONFUSION_SYMBOLS, map(sympy.Integer, counts))))
        got = sympy.N(exact, 30)
        note(f"at {counts}: parsed {got}, text {expected_text}")
        assert got.is_finite and got.is_real, f"the parsed metric is {got} where the text is {expected_text}"
        # Numbers in the text are binary doubles on both sides; sympy keeps them at 53 bits.
        assert abs(float(got - sympy.Float(expected_text, DIGITS))) <= 1e-9 * max(1.0, abs(float(expected)))
        compared += 1
    assume(compared > 0)


# -- names and sources in generated code ---------------------------------------------------

RECALL = TP / (TP + FN)


def _recall_reference(z, target):
    """1 − recall of the amplified predictions, from the text "TP/(TP + FN)" by the oracle."""
    return autograd_loss(ReferenceMetric("TP/(TP + FN)"), Relaxation.from_spec("anyloss"), "maximize", z, target)


identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
names = st.one_of(
    identifiers, st.text(min_size=1, max_size=20),
    st.sampled_from(['x"""; import os; """', "a\nb", "a b", "__import__", "torch", "math", "metric_and_gradient",
                     "soft_prediction", "_prepare", "_", "__", "__init__", "class", "None", "True", "match", "type",
                     "\ufb01", "\u2168", "\u00df", "Metric", "Loss", "A" * 200, "a\\b", "f1; import os", "1f"]),
)


@property_settings(max_examples=40)
@given(names)
def test_metric_names_become_identifiers_or_are_refused(name):
    note(f"metricc.compile_metric('TP/(TP + FN)', name={name!r}, check=False, direction='maximize')")
    try:
        loss_fn = metricc.compile_metric("TP/(TP + FN)", name=name, check=False, direction="maximize")
    except metricc.MetricSyntaxError:
        assert not (name.isascii() and name.isidentifier() and not keyword.iskeyword(name))
        return
    assert name.isascii() and name.isidentifier()
    tree = ast.parse(loss_fn.source)
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert all(c.isidentifier() and c.isascii() for c in classes | functions)
    assert loss_fn.module.DEFINITION.name == name
    # Nothing but the documented top-level names: the name cannot inject statements.
    assert all(isinstance(node, (ast.Expr, ast.Import, ast.ImportFrom, ast.Assign, ast.FunctionDef, ast.ClassDef))
               for node in tree.body)
    z = torch.linspace(-2, 2, 7, dtype=torch.float64)
    target = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    assert torch.allclose(loss_fn(z, target), _recall_reference(z, target), rtol=1e-12)


def test_non_ascii_names_that_python_would_normalise_are_refused():
    # Regression: 'ﬁ' is an identifier, but Python defines it as 'fi' (NFKC), so the loaded
    # module had no 'ﬁ_loss' and compile_metric failed with AttributeError.
    for name in ("\ufb01", "\u2168"):
        with pytest.raises(metricc.MetricSyntaxError, match="ASCII"):
            metricc.compile_metric("TP/(TP + FN)", name=name)
        with pytest.raises(ValueError, match="ASCII"):
            Metric(expr=RECALL, name=name)


source_texts = st.one_of(
    st.text(max_size=80),
    st.sampled_from(['"""', "'''", '\\', '\\"""', '"""\\', 'x"""\nimport os\n"""', "\\N{BULLET}", "\\x00",
                     "\\u0041", "'", '"', "\\\\\\", "{}", "{TP}", "%s", "\r\n", "\t", "$docstring", "${summary}"]),
)


@property_settings(max_examples=30)
@given(source_texts, source_texts)
def test_sources_and_descriptions_stay_inside_their_strings(source, description):
    """A metric carrying any source text and description compiles to importable, correct code."""
    metric = Metric(expr=RECALL, source=source, description=description, name="recall_text")
    note(f"metricc.compile_metric(Metric(expr=TP/(TP+FN), source={source!r}, description={description!r}), "
         "check=False, direction='maximize')")
    loss_fn = metricc.compile_metric(metric, check=False, direction="maximize")
    assert loss_fn.module.METRIC_SOURCE == source
    tree = ast.parse(loss_fn.source)
    assert all(isinstance(node, (ast.Expr, ast.Import, ast.ImportFrom, ast.Assign, ast.FunctionDef, ast.ClassDef))
               for node in tree.body)
    assert isinstance(tree.body[0], ast.Expr)  # the docstring is one string expression ...
    docstring = ast.get_docstring(tree, clean=False)
    assert docstring is not None and "Written as" in docstring  # ... and holds the whole header
    z = torch.linspace(-2, 2, 7, dtype=torch.float64)
    target = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    assert torch.allclose(loss_fn(z, target), _recall_reference(z, target), rtol=1e-12)


def test_nul_in_a_metric_source_yields_importable_code():
    metric = Metric(expr=RECALL, source="TP/(TP + FN)\x00", name="recall_nul")
    loss_fn = metricc.compile_metric(metric, check=False, direction="maximize")
    assert loss_fn.module.METRIC_SOURCE == metric.source


def test_cli_refuses_a_name_that_would_break_out_of_its_identifier(tmp_path, capsys):
    """(The file `metricc compile` writes for odd sources is imported in a fresh interpreter in
    tests/test_properties.py, the one place that round trip is tested.)"""
    from metricc.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["compile", "--name", 'x"""; import os; """', "-o", str(tmp_path / "bad.py"), "--",
                     "TP/(TP + FN)"]) == 2
    assert "not a valid Python identifier" in capsys.readouterr().err
    assert not (tmp_path / "bad.py").exists()


@pytest.mark.parametrize("text", ["(-TP)**(1/2)", "sqrt(-TP)", "(-TP)**(1/3)", "TP + (-FN)**0.5", "abs(sqrt(-TP))"])
def test_roots_of_negative_quantities_are_refused_before_code_generation(text):
    # Regression: sympy writes sqrt(-TP) as I*sqrt(TP); parse accepted it and the code generator
    # crashed with "TypeError: Cannot convert complex to float".
    with pytest.raises(metricc.MetricSyntaxError, match="imaginary"):
        metricc.compile_metric(text, check=False, direction="maximize")
    assert isinstance(parse("sqrt(TP - FN)"), Metric)  # may be negative on some batches: not refused


def test_roots_of_negative_quantities_through_parameter_values_are_refused():
    # Regression: sqrt(-n/a) with a > 0 compiled, and the loss raised "math domain error".
    with pytest.raises(metricc.MetricSyntaxError, match="imaginary"):
        parse("sqrt(-(n/a))", {"a": 2.0})
    assert isinstance(parse("sqrt(-(n/a))", {"a": -2.0}), Metric)
