"""An installed, non-editable copy of metricc finds its grammar and catalog, and stays light."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_non_editable_install_ships_the_catalog(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-compile", "--quiet",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
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
    script = ("import sys, metricc, metricc.cli; metricc.cli.build_parser(); "
              "print(' '.join(m for m in ('sklearn', 'matplotlib', 'hypothesis', 'pandas', 'scipy', 'monai') "
              "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
