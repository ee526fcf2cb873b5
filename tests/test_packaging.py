"""An installed, non-editable copy of metricc finds its grammar and catalog, and stays light."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel pip builds from this checkout (no build isolation: nothing is downloaded)."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out),
         str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("metricc-*.whl")
    return path


def test_the_wheel_ships_the_package_its_data_and_licence_and_no_test_code(wheel):
    import metricc

    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"metricc", f"metricc-{metricc.__version__}.dist-info"}  # no tests/, examples/, benchmarks/
    assert not [n for n in names if "/tests/" in n or n.rsplit("/", 1)[-1].startswith(("test_", "conftest"))]
    assert {"metricc/py.typed", "metricc/grammar/catalog.toml", "metricc/grammar/metric.ebnf",
            f"metricc-{metricc.__version__}.dist-info/licenses/LICENSE"} <= set(names)
    metadata = zipfile.ZipFile(wheel).read(f"metricc-{metricc.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {metricc.__version__}\n" in metadata  # one source of the version
    assert "License-Expression: MIT" in metadata and "Classifier: Typing :: Typed" in metadata
    assert "Keywords: pytorch," in metadata
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_non_editable_install_ships_the_catalog(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet", "--target", str(target),
         str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert (target / "metricc" / "grammar" / "catalog.toml").is_file()
    assert (target / "metricc" / "grammar" / "metric.ebnf").is_file()
    script = ("import metricc, metricc.catalog as c; "
              "assert c.grammar_dir().parent == __import__('pathlib').Path(metricc.__file__).parent; "
              "print(len(c.catalog()), metricc.compile_metric('f1').metric.name)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr
    count, name = result.stdout.split()
    assert int(count) >= 20 and name == "f1"


def test_import_does_not_pull_in_optional_or_test_dependencies():
    optional = ("sklearn", "matplotlib", "hypothesis", "pandas", "scipy", "lightning", "transformers", "torchmetrics",
                "monai")
    script = ("import sys, metricc, metricc.cli; metricc.cli.build_parser(); "
              f"print(' '.join(m for m in {optional!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
