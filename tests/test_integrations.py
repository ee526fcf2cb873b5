"""The examples that put a compiled loss into PyTorch Lightning and the Hugging Face Trainer run, and do what
their documentation says: the loss trains the model, its per-class values are logged, the running estimator's
float64 buffers survive bf16-mixed precision and DDP's buffer broadcast, and under DDP with ``sync=True``
two CPU processes train exactly as one process on the global batch (slow). Each needs the optional test
dependencies (``pip install -e ".[test]"``) and is skipped without them."""

import importlib.util
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import metricc
from metricc.functional import metric_loss

ROOT = Path(__file__).resolve().parent.parent


def _example(name):
    spec = importlib.util.spec_from_file_location(f"metricc_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the frameworks' advice (data-loader workers, logging intervals)
        yield


# ---------------------------------------------------------------------------------------------
# PyTorch Lightning


def test_lightning_module_trains_logs_per_class_and_keeps_float64_buffers_under_bf16():
    pytest.importorskip("lightning")
    example = _example("lightning_train")
    steps = 4
    model = example.train(steps=steps, estimator="running", precision="bf16-mixed")
    losses = [entry["loss"] for entry in model.history]
    assert len(losses) == steps and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    logged = model.trainer.logged_metrics
    per_class = model.loss_fn.per_class
    assert per_class.shape == (3,)
    for c in range(3):  # what the module logs is the loss's per-class value of the last step
        assert float(logged[f"train/f1_class{c}"]) == pytest.approx(float(per_class[c]), abs=1e-6)
    # the running estimate: float64 under bf16-mixed, in the LightningModule's state (checkpoints)
    assert model.loss_fn.running_rates.dtype == torch.float64
    assert float(model.loss_fn.running_weight) == pytest.approx(1 - 0.9 ** steps, rel=1e-12)
    state = model.state_dict()
    assert state["loss_fn.running_rates"].dtype == torch.float64 and "loss_fn.running_weight" in state
    rates = model.loss_fn.running_rates
    assert bool(torch.isfinite(rates).all()) and float(rates.sum()) > 0


def _run_lightning(tmp_path, name, *args):
    out = tmp_path / name
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "lightning_train.py"), "--out", str(out), *args],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [torch.load(path, weights_only=False) for path in sorted(out.glob("rank*.pt"))]


@pytest.mark.slow
def test_lightning_ddp_on_two_cpu_processes_trains_as_one_process_on_the_global_batch(tmp_path):
    """strategy="ddp", accelerator="cpu", devices=2, sync=True, the running estimator: every rank computes the
    global batch's loss, DDP averages the gradients, so the run equals one process with twice the batch."""
    pytest.importorskip("lightning")
    common = ["--sync", "--estimator", "running", "--steps", "4"]  # one epoch: both runs draw one permutation
    ranks = _run_lightning(tmp_path, "ddp", "--devices", "2", "--strategy", "ddp", "--batch-size", "64", *common)
    (single,) = _run_lightning(tmp_path, "single", "--batch-size", "128", *common)
    assert [r["world_size"] for r in ranks] == [2, 2]
    first, second = ranks
    # DDP broadcast rank 0's buffers before each step; with sync=True the ranks' estimates were already equal
    for name in ("running_rates", "running_weight"):
        assert torch.equal(first["buffers"][name], second["buffers"][name])
        assert first["buffers"][name].dtype == torch.float64
        torch.testing.assert_close(first["buffers"][name], single["buffers"][name], rtol=1e-5, atol=1e-7)
    assert [h["loss"] for h in first["history"]] == [h["loss"] for h in second["history"]]
    assert [h["loss"] for h in first["history"]] == pytest.approx([h["loss"] for h in single["history"]], abs=1e-5)
    torch.testing.assert_close(first["history"][-1]["per_class"], single["history"][-1]["per_class"],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_lightning_ddp_with_bf16_mixed_keeps_the_ranks_estimates_equal_and_float64(tmp_path):
    pytest.importorskip("lightning")
    ranks = _run_lightning(tmp_path, "bf16", "--devices", "2", "--strategy", "ddp", "--sync", "--estimator",
                           "running", "--precision", "bf16-mixed", "--steps", "4")
    first, second = ranks
    for name in ("running_rates", "running_weight"):
        assert first["buffers"][name].dtype == torch.float64
        assert torch.equal(first["buffers"][name], second["buffers"][name])
    assert float(first["buffers"]["running_weight"]) == pytest.approx(1 - 0.9 ** 4, rel=1e-12)
    assert first["logged"] == second["logged"]  # the same global-batch loss and per-class values on both ranks


# ---------------------------------------------------------------------------------------------
# Hugging Face Trainer


@pytest.mark.parametrize("problem", ["binary", "multilabel"])
def test_hugging_face_trainer_trains_on_compute_loss_func(problem):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    example = _example("hf_trainer")
    initial = example.tiny_bert(problem).state_dict()
    result = example.train(problem, steps=3, batch_size=32)
    model = result["model"]
    assert all(math.isfinite(result[k]) for k in ("first", "last", "eval_loss"))
    changed = [name for name, value in model.state_dict().items() if not torch.equal(value, initial[name])]
    assert "classifier.weight" in changed and any(name.startswith("bert.encoder") for name in changed)
    # the Trainer's evaluation loss is metric_loss of the trained model's logits on the evaluation set
    evaluation = example.TokenDataset(problem, n=128, seed=1)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=evaluation.input_ids,
                       attention_mask=torch.ones_like(evaluation.input_ids)).logits
    expected = metric_loss("f1", logits, evaluation.labels, **example.metric_options(problem))
    assert result["eval_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert logits.shape == ((128, 1) if problem == "binary" else (128, example.LABELS))
    assert result["per_class"].shape == ((1,) if problem == "binary" else (example.LABELS,))
    assert isinstance(model.config.problem_type, str) or problem == "binary"
    if problem == "multilabel":
        assert model.config.problem_type == "multi_label_classification"
    assert metricc.functional.loss_module("f1", **example.metric_options(problem)).estimator == "batch"
