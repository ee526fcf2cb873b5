"""Train with a compiled metric loss in PyTorch Lightning: a LightningModule that owns the loss.

The loss is a submodule of the LightningModule, so Lightning moves it to the device, DDP broadcasts its
buffers (the running estimator's, in float64) and checkpoints save them. ``sync=True`` all-reduces the
confusion table, so under DDP every rank computes the loss of the global batch and logs the same
``per_class`` values. Runs on CPU in seconds:

    python examples/lightning_train.py                                   # one process, macro F1 over 3 classes
    python examples/lightning_train.py --estimator running --precision bf16-mixed
    python examples/lightning_train.py --devices 2 --strategy ddp --sync  # 2 CPU processes (gloo)

With ``--out DIR`` each rank writes what the test suite checks (losses, per-class values, the loss's buffers)
to ``DIR/rank<r>.pt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import metricc


def make_data(n: int = 512, features: int = 8, classes: int = 3, seed: int = 0) -> TensorDataset:
    """An imbalanced three-class problem (60 %, 30 %, 10 %) that a small MLP can learn."""
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), n, replacement=True, generator=g)
    centres = torch.randn(classes, features, generator=g) * 0.6
    x = centres[y] + torch.randn(n, features, generator=g)
    return TensorDataset(x, y)


class MetricLossClassifier(L.LightningModule):
    """An MLP trained on macro F1 (or any metric) through a compiled loss, logging the per-class values."""

    def __init__(self, metric: str = "f1", classes: int = 3, features: int = 8, sync: bool = False,
                 estimator: str = "batch", lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(features, 32), torch.nn.ReLU(), torch.nn.Linear(32, classes))
        # A submodule: moved with the model, its buffers broadcast by DDP and saved in checkpoints.
        self.loss_fn = metricc.compile_metric(metric, task="multiclass", num_classes=classes, average="macro",
                                              sync=sync, estimator=estimator)
        self.history: list[dict] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self(x), y)
        # With sync=True the loss and per_class are the global batch's, the same on every rank.
        self.log("train/loss", loss, prog_bar=True)
        per_class = self.loss_fn.per_class
        for c, value in enumerate(per_class.tolist()):
            self.log(f"train/{self.hparams.metric}_class{c}", value)
        self.history.append({"loss": float(loss.detach()), "per_class": per_class.detach().cpu().clone()})
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def train(devices: int = 1, strategy: str = "auto", sync: bool = False, estimator: str = "batch",
          precision: str = "32-true", steps: int = 20, batch_size: int = 64, out: Path | None = None,
          seed: int = 0) -> MetricLossClassifier:
    L.seed_everything(seed, verbose=False)
    model = MetricLossClassifier(sync=sync, estimator=estimator)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, precision=precision,
                        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    # Under DDP Lightning replaces this sampler by a DistributedSampler shuffled with the same seed; both draw
    # an epoch's permutation as randperm from a generator seeded with it, so one process with twice the batch
    # sees the global batches of a DDP run (the sampler's own generator: the loader's would be drawn from first).
    data = make_data()
    sampler = torch.utils.data.RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler)
    trainer.fit(model, loader)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        buffers = {name: value.detach().cpu().clone() for name, value in model.loss_fn.named_buffers()}
        torch.save({"history": model.history, "buffers": buffers, "world_size": trainer.world_size,
                    "logged": {k: float(v) for k, v in trainer.logged_metrics.items()}},
                   out / f"rank{trainer.global_rank}.pt")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="e.g. ddp (one process per device, gloo on CPU)")
    parser.add_argument("--sync", action="store_true", help="the loss of the global batch on every rank")
    parser.add_argument("--estimator", choices=metricc.runtime.ESTIMATORS, default="batch")
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per step on each device")
    parser.add_argument("--out", type=Path, default=None, help="write each rank's losses and buffers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = train(devices=args.devices, strategy=args.strategy, sync=args.sync, estimator=args.estimator,
                  precision=args.precision, steps=args.steps, batch_size=args.batch_size, out=args.out)
    first, last = model.history[0], model.history[-1]
    print(f"loss {first['loss']:.4f} -> {last['loss']:.4f}; per-class F1 at the end "
          f"{[round(v, 3) for v in last['per_class'].tolist()]}")


if __name__ == "__main__":
    main()
