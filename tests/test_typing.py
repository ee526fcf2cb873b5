"""Type hints: the public API is annotated, its Literal types list the runtime's names, and mypy passes on the
package (configuration in pyproject.toml; skipped only where mypy is not installed)."""

import hashlib
import importlib.util
import inspect
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

import pytest

import metricc
import metricc.functional
from metricc import load, runtime

ROOT = Path(__file__).resolve().parent.parent


def test_the_literal_types_name_what_the_runtime_accepts():
    assert typing.get_args(load.Task) == runtime.TASKS
    assert set(typing.get_args(load.Average)) == set(runtime.AVERAGES)
    assert set(typing.get_args(load.Estimator)) == set(runtime.ESTIMATORS)
    assert set(typing.get_args(load.Direction)) == {"maximize", "minimize"}
    hints = typing.get_type_hints(metricc.compile_metric)
    assert hints["task"] == load.Task and hints["average"] == load.Average | None
    assert hints["estimator"] == load.Estimator


def _public_functions():
    names = [(f"metricc.{n}", getattr(metricc, n)) for n in metricc.__all__]
    names += [(f"metricc.functional.{n}", getattr(metricc.functional, n)) for n in metricc.functional.__all__]
    for name, obj in names:
        if inspect.ismodule(obj) or (inspect.isclass(obj) and issubclass(obj, Warning)):
            continue
        if inspect.isclass(obj):
            for member, function in vars(obj).items():
                if inspect.isfunction(function) and (not member.startswith("_") or member == "__init__"):
                    yield f"{name}.{member}", function
        else:
            yield name, obj


@pytest.mark.parametrize(("name", "function"), list(_public_functions()))
def test_every_public_function_is_annotated(name, function):
    signature = inspect.signature(function)
    missing = [p for p, v in signature.parameters.items()
               if p not in ("self", "cls") and v.annotation is inspect.Parameter.empty]
    assert not missing, f"{name}: parameters without a type hint: {missing}"
    if function.__name__ != "__init__":
        assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return type"


def test_the_package_is_marked_typed():
    assert (ROOT / "metricc" / "py.typed").is_file()


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -e '.[test]')")
def test_mypy_passes_on_the_package():
    # A cache outside the checkout, kept between runs: about 12 s cold on 2 cores, under a second warm.
    # One cache per checkout and Python: checkouts side by side must not share one.
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"metricc-mypy-cache-{checkout}-py{sys.version_info[0]}{sys.version_info[1]}"
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-error-summary"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
