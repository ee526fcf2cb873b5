"""The running estimator in the experiments: ``metricc experiment --estimator running --momentum M``.

Parsed and validated on the command line, passed through to ``compile_metric`` for compiled losses only,
reset per epoch where asked, recorded in the result files; and end to end, momentum 0 trains exactly
as the batch estimator does while momentum 0.9 trains differently.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from metricc.cli import build_parser, main  # noqa: E402
from metricc.experiments import datasets, losses, training  # noqa: E402
from metricc.experiments.protocol import ExperimentConfig, run_dataset  # noqa: E402
from metricc.experiments.runner import command_line  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_and_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
    torch.set_num_threads(threads)


def _parse(*argv):
    return build_parser().parse_args(["experiment", *argv])


# --- the command line ----------------------------------------------------------------------------------------

def test_estimator_options_parse_and_spell_out_in_the_command():
    args = _parse("--estimator", "running", "--momentum", "0.95", "--batch-size", "32")
    assert (args.estimator, args.momentum, args.batch_size, args.reset_estimate) == ("running", 0.95, 32, "never")
    assert "--batch-size 32 --estimator running --momentum 0.95 --out" in command_line(args)
    args = _parse("--estimator", "running", "--reset-estimate", "epoch")
    assert "--estimator running --momentum 0.9 --reset-estimate epoch" in command_line(args)  # the default, spelled out
    defaults = _parse()
    assert (defaults.estimator, defaults.momentum, defaults.reset_estimate) == ("batch", None, "never")
    assert "--estimator" not in command_line(defaults) and "--momentum" not in command_line(defaults)


@pytest.mark.parametrize("argv, message", [
    (["--estimator", "running", "--momentum", "1"], "argument --momentum: needs a number in [0, 1), got '1'"),
    (["--estimator", "running", "--momentum", "-0.1"], "argument --momentum: needs a number in [0, 1)"),
    (["--estimator", "running", "--momentum", "high"], "argument --momentum: needs a number in [0, 1), got 'high'"),
    (["--estimator", "moving"], "argument --estimator: invalid choice: 'moving'"),
    (["--reset-estimate", "batch"], "argument --reset-estimate: invalid choice: 'batch'"),
])
def test_bad_estimator_options_are_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, option", [(["--momentum", "0.5"], "--momentum"),
                                          (["--reset-estimate", "epoch"], "--reset-estimate")])
def test_running_options_without_the_running_estimator_exit_2(tmp_path, capsys, argv, option):
    assert main(["experiment", *argv, "--out", str(tmp_path), "-q"]) == 2
    assert f"{option} applies to the running estimator; add --estimator running" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


# --- build_loss -----------------------------------------------------------------------------------------------

def test_build_loss_passes_the_estimator_to_compiled_losses_only():
    compiled, _ = losses.build_loss(losses.parse_loss("f1"), estimator="running", momentum=0.8)
    assert (compiled.estimator, compiled.momentum) == ("running", 0.8)
    default, _ = losses.build_loss(losses.parse_loss("f1"))
    assert default.estimator == "batch"
    baseline, _ = losses.build_loss(losses.parse_loss("bce"), estimator="running", momentum=0.8)
    assert baseline is torch.nn.functional.binary_cross_entropy_with_logits
    mixed, _ = losses.build_loss(losses.parse_loss("f1[mix=0.5]"), estimator="running", momentum=0.8)
    assert mixed.loss.estimator == "running"
    with pytest.raises(ValueError, match=re.escape("estimator must be one of ('batch', 'running'), got 'moving'")):
        losses.build_loss(losses.parse_loss("f1"), estimator="moving")
    with pytest.raises(ValueError, match="reset_each_epoch applies to the running estimator"):
        losses.build_loss(losses.parse_loss("f1"), reset_each_epoch=True)


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1).to(torch.float64)

    def forward(self, x):
        return self.linear(x).squeeze(-1)


def _train_one_epoch(loss_fn, epoch_index):
    """One epoch of four batches of 16, as TrainingRun runs it, announced as epoch ``epoch_index``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(64, generator=generator, dtype=torch.float64) > 1).to(torch.float64)
    run = training.TrainingRun(_Linear(), loss_fn, x, y, learning_rate=1e-2, batch_size=16, generator=generator)
    run.losses = [0.0] * epoch_index  # TrainingRun.epoch calls set_epoch(len(losses))
    run.epoch()


def test_reset_each_epoch_forgets_the_estimate_at_the_start_of_every_epoch(monkeypatch):
    loss_fn, _ = losses.build_loss(losses.parse_loss("f1[warmup=1]"), estimator="running", momentum=0.9,
                                   reset_each_epoch=True)
    inner = loss_fn.loss.loss  # WarmStartWithBCE(ResetEachEpoch(compiled))
    assert isinstance(loss_fn.loss, losses.ResetEachEpoch)
    weights_seen = []
    forward = type(inner).forward

    def recording_forward(self, *args, **kwargs):
        weights_seen.append(float(self.running_weight))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(inner), "forward", recording_forward)
    _train_one_epoch(loss_fn, 0)  # warm-up epoch: BCE, the estimate untouched
    assert weights_seen == [] and float(inner.running_weight) == 0.0
    _train_one_epoch(loss_fn, 1)
    _train_one_epoch(loss_fn, 2)
    # Four batches per epoch; each epoch starts from an empty estimate (W = 0), W = 1 − 0.9^k after k batches.
    expected = [1 - 0.9 ** k for k in range(4)]
    np.testing.assert_allclose(weights_seen, expected + expected, rtol=1e-12, atol=1e-15)


def test_without_reset_the_estimate_carries_across_epochs(monkeypatch):
    loss_fn, _ = losses.build_loss(losses.parse_loss("f1"), estimator="running", momentum=0.9)
    weights_seen = []
    forward = type(loss_fn).forward

    def recording_forward(self, *args, **kwargs):
        weights_seen.append(float(self.running_weight))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(loss_fn), "forward", recording_forward)
    _train_one_epoch(loss_fn, 0)
    _train_one_epoch(loss_fn, 1)
    np.testing.assert_allclose(weights_seen, [1 - 0.9 ** k for k in range(8)], rtol=1e-12, atol=1e-15)


# --- end to end -----------------------------------------------------------------------------------------------

def _scores(estimator, momentum=0.9, reset="never"):
    data = datasets.load_dataset("random").subsample(300)
    config = ExperimentConfig(model="mlp", folds=2, epochs=3, batch_size=16, learning_rate=1e-2,
                              estimator=estimator, momentum=momentum, reset_estimate=reset, curve_points=0)
    result = run_dataset(data, losses.parse_losses("bce,f1"), config)
    return {(run.loss, run.fold): run.history.losses for run in result.folds}


def test_momentum_zero_trains_exactly_as_the_batch_estimator_and_momentum_09_does_not():
    batch = _scores("batch")
    assert _scores("running", momentum=0.0) == batch  # the same loss at every step, bit for bit
    running = _scores("running", momentum=0.9)
    for fold in (0, 1):
        assert running[("bce", fold)] == batch[("bce", fold)]  # baselines are unaffected
        assert running[("f1", fold)] != batch[("f1", fold)]
        assert running[("f1", fold)][0] != pytest.approx(batch[("f1", fold)][0], abs=1e-6)


def test_cli_records_the_estimator_in_the_results(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["experiment", "--datasets", "random", "--subsample", "200", "--model", "mlp", "--losses", "bce,f1",
                 "--folds", "2", "--epochs", "2", "--batch-size", "32", "--estimator", "running", "--momentum", "0.8",
                 "--curve-points", "0", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "run_mlp.json").read_text())
    assert {key: record["config"][key] for key in ("estimator", "momentum", "reset_estimate", "batch_size")} == {
        "estimator": "running", "momentum": 0.8, "reset_estimate": "never", "batch_size": 32}
    assert "--batch-size 32 --estimator running --momentum 0.8" in record["command"]
    markdown = (out / "scores_mlp.md").read_text()
    assert "Compiled losses use the running estimator (momentum 0.8; the estimate is kept across epochs" in markdown
