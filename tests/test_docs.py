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


def test_what_docs_libauc_says_about_small_batches_samplers_and_optimisers():
    import warnings

    import torch

    import metricc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        f1, recall = metricc.compile_metric("f1"), metricc.compile_metric("recall")
        running = metricc.compile_metric("f1", estimator="running", momentum=0.9)

    def loss_and_gradient(loss_fn, logits, target, weight=None):
        z = torch.tensor(logits, requires_grad=True)
        loss = loss_fn(z, torch.tensor(target), weight)
        loss.backward()
        return loss.item(), z.grad

    loss, grad = loss_and_gradient(f1, [0.3], [1])  # one positive: 1 − 2ŷ/(1 + ŷ), a gradient
    assert loss == pytest.approx(0.0022, abs=1e-4) and grad.abs().sum() > 0
    for loss_fn in (f1, recall):  # no positives: 1 − zero_division, exactly no gradient, never NaN
        loss, grad = loss_and_gradient(loss_fn, [0.3, -1.0], [0, 0])
        assert loss == 1.0 and torch.equal(grad, torch.zeros(2))
    with pytest.raises(ValueError, match="the batch is empty"):
        f1(torch.tensor([]), torch.tensor([]))
    running(torch.tensor([2.0, -1.0]), torch.tensor([1, 0]))
    loss, grad = loss_and_gradient(running, [0.3], [0])  # the running estimate gives one negative a gradient
    assert loss == pytest.approx(0.525, abs=1e-3) and grad.abs().sum() > 0
    assert list(f1.parameters()) == [] and list(running.parameters()) == []  # nothing for the optimiser
    # weights that undo a sampler's 50 % positives give the data's soft entries (5 % positives)
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(200, generator=g, dtype=torch.float64), torch.tensor([1, 0] * 100)
    weight = torch.tensor([0.05 / 0.5, 0.95 / 0.5] * 100, dtype=torch.float64)  # positives, negatives in turn
    f1(logits, target, weight)
    tp, fn, fp, tn = f1.last_table.reshape(4).tolist()
    assert (tp + fn) / (tp + fn + fp + tn) == pytest.approx(0.05, abs=1e-12)
