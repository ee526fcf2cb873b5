"""The examples in the docstrings run and print what they say (doctest), and the public entry points
document their shapes with a runnable example, as torch.nn's losses do."""

import doctest
import importlib
import re
import warnings
from pathlib import Path

import pytest

import metricc
import metricc.functional
import metricc.runtime

PACKAGE = Path(metricc.__file__).resolve().parent
# Every module of the core package whose docstrings hold an example (experiments/ needs its extra).
MODULES = sorted(
    "metricc" + ("" if path.stem == "__init__" else "." + path.stem)
    for path in PACKAGE.glob("*.py") if ">>>" in path.read_text(encoding="utf-8"))


def test_the_documented_entry_points_have_examples():
    assert {"metricc", "metricc.load", "metricc.functional", "metricc.runtime"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)  # the examples show values, not warnings
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"


@pytest.mark.parametrize("entry", [metricc.compile_metric, metricc.CompiledLoss, metricc.runtime.MetricLoss,
                                   metricc.functional.metric_loss])
def test_public_losses_document_shape_example_and_per_sample_weight(entry):
    doc = entry.__doc__
    assert "Shape:" in doc and "Example::" in doc and ">>> " in doc
    # torch's `weight` is per class; metricc's is per sample: every entry point says which is which
    assert re.search(r"per[- ]\*\*sample\*\*", doc) and "class_weights" in doc
