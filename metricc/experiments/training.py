"""One training run: a model, a loss, Adam, a number of epochs; records the loss curve and epoch times."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from .losses import LossFunction


class TrainingError(RuntimeError):
    """Training produced a non-finite loss (too high a learning rate, or an undefined metric)."""


@dataclasses.dataclass(frozen=True)
class History:
    """Per-epoch records of one run.

    Attributes:
        losses: the mean training loss over each epoch's batches (the learning curve).
        epoch_seconds: wall time of each epoch's optimisation steps, evaluation excluded.
    """

    losses: tuple[float, ...]
    epoch_seconds: tuple[float, ...]


def check_device(name: str) -> torch.device:
    """The ``--device`` to train on, after a small computation there: a CPU build of torch asked for
    ``cuda:0`` or ``meta`` (which holds no values) fails here with a ValueError, not in the first epoch."""
    try:
        device = torch.device(name)
        probe = torch.ones(2, device=device)
        (probe * 2).sum().item()
    except (RuntimeError, AssertionError, NotImplementedError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--device {name}: cannot train there ({message}); use cpu, or a device this torch "
                         "build and machine have") from None
    return device


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor | None]:
    """Shuffled index batches; ``[None]`` (all rows, in order) for full-batch training.

    A last batch of a single sample is merged into the one before it: batch
    normalization cannot train on one sample.
    """
    if batch_size >= n:
        return [None]
    chunks = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(chunks) > 1 and chunks[-1].numel() < 2:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def make_optimizer(name: str, parameters, learning_rate: float) -> torch.optim.Optimizer:
    """``sgd`` (plain gradient descent, no momentum) or ``adam``."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd or adam")


class TrainingRun:
    """One model being trained with one loss, an epoch at a time.

    Epoch-at-a-time lets the protocol interleave the losses of a fold, so that
    their epoch times are measured under the same load on a shared machine.

    Args:
        model: maps ``X`` rows to one logit each; trained in place.
        loss_fn: ``loss_fn(logits, targets)`` → scalar.
        X, y: training features and 0/1 targets (same dtype as the model).
        learning_rate, batch_size: the usual; ``batch_size >= len(X)`` is full batch.
        generator: the source of the batch order, so runs are reproducible.
        optimizer: ``"sgd"`` (plain gradient descent) or ``"adam"``.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFunction, X: torch.Tensor, y: torch.Tensor, *,
                 learning_rate: float, batch_size: int, generator: torch.Generator, optimizer: str = "adam"):
        self.model, self.loss_fn, self.X, self.y = model, loss_fn, X, y
        self.batch_size, self.generator = batch_size, generator
        self.optimizer = make_optimizer(optimizer, model.parameters(), learning_rate)
        self.losses: list[float] = []
        self.seconds: list[float] = []

    def epoch(self) -> float:
        """Train one epoch; returns its mean training loss.

        Raises:
            TrainingError: the loss became NaN or infinite.
        """
        model, X, y, n = self.model, self.X, self.y, self.X.shape[0]
        if hasattr(self.loss_fn, "set_epoch"):  # schedules such as a BCE warm start
            self.loss_fn.set_epoch(len(self.losses))
        model.train()
        start = time.perf_counter()
        total = torch.zeros((), dtype=X.dtype, device=X.device)
        for index in batches(n, self.batch_size, self.generator):
            xb, yb = (X, y) if index is None else (X[index], y[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(model(xb), yb)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * yb.shape[0]
        self.seconds.append(time.perf_counter() - start)
        mean_loss = float(total) / n
        if not math.isfinite(mean_loss):
            raise TrainingError(f"the training loss became {mean_loss} at epoch {len(self.seconds)}; "
                                "try a smaller learning rate (--lr)")
        self.losses.append(mean_loss)
        return mean_loss

    def history(self) -> History:
        return History(tuple(self.losses), tuple(self.seconds))


def train(model: nn.Module, loss_fn: LossFunction, X: torch.Tensor, y: torch.Tensor, *, epochs: int,
          learning_rate: float, batch_size: int, generator: torch.Generator, optimizer: str = "adam",
          on_epoch: Callable[[int, float], None] | None = None) -> History:
    """Train ``model`` in place for ``epochs`` epochs (see :class:`TrainingRun` for the arguments).

    ``on_epoch`` is called with (epoch index, mean loss) after each epoch, for progress output.
    """
    run = TrainingRun(model, loss_fn, X, y, learning_rate=learning_rate, batch_size=batch_size,
                      generator=generator, optimizer=optimizer)
    for epoch in range(epochs):
        loss = run.epoch()
        if on_epoch is not None:
            on_epoch(epoch, loss)
    return run.history()


@torch.no_grad()
def predict_logits(model: nn.Module, X: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits in evaluation mode (batch norm uses its running statistics)."""
    model.eval()
    return torch.cat([model(X[start:start + batch_size]) for start in range(0, X.shape[0], batch_size)])
