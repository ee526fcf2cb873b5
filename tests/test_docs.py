"""The documentation site builds with ``mkdocs build --strict`` (no broken link or anchor, every page in the
navigation, the API reference generated from the docstrings), and the README's links to it resolve."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs is not installed (pip install -e '.[test]')")
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("metricc.compile_metric", "metricc.functional.metric_loss", "metricc.runtime.MetricLoss",
                 "metricc.analyze"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    assert "Shape" in api and "per-class" in api  # the docstrings' sections made it into the page
    for page in ("getting-started", "which-loss", "libauc", "integrations", "benchmark"):
        assert (tmp_path / page / "index.html").is_file()


def test_the_readme_links_the_sites_pages_and_they_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\((docs/[^)#\s]+)", readme))
    for page in ("getting-started.md", "which-loss.md", "libauc.md", "integrations.md", "api.md"):
        assert f"docs/{page}" in links, f"the README does not link docs/{page}"
    missing = sorted(link for link in links if not (ROOT / link).exists())
    assert not missing, missing
