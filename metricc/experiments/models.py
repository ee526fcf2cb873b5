"""The networks of the AnyLoss experiments: SLP, MLP and a small ResNet.

Every model maps a batch to one logit per sample, shape ``(N,)``: the losses
(BCE with logits, compiled metric losses with ``from_logits=True``) and the
evaluation (threshold on σ(logit)) all start from logits.
"""

from __future__ import annotations

import torch
from torch import nn

MODELS = ("slp", "mlp", "resnet")


class SLP(nn.Module):
    """Single-layer perceptron: one linear layer, p = σ(w·x + b) (AnyLoss §4).

    Starts from zero weights, as the authors' code does: the starting point is
    then the same for every loss and every fold, and nothing depends on a seed.
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class MLP(nn.Module):
    """AnyLoss's MLP: one hidden layer of 2 sigmoid nodes with batch normalization, then the output unit.

    Linear (He-normal init) → BatchNorm → sigmoid → Linear → logit, as in the
    authors' Keras code (Dense(2) → BatchNormalization → sigmoid → Dense(1, sigmoid)).
    ``output_batch_norm=True`` also normalizes the output logit, the literal reading
    of the paper's "batch normalization is used at each layer".

    The output layer starts at zero, so every loss starts from p = 0.5 for every
    sample, as with the authors' zero-initialised SLP. A random output layer can
    start with all p far on one side of 0.5, where the AnyLoss amplifier
    σ(73·(p − 0.5)) is flat and training never starts ("no more update", AnyLoss
    §3.2); with ``zero_init_output=False`` it is initialised like Keras's Dense
    (Glorot uniform) instead.
    """

    def __init__(self, n_features: int, hidden: int = 2, output_batch_norm: bool = False,
                 zero_init_output: bool = True):
        super().__init__()
        first = nn.Linear(n_features, hidden)
        nn.init.kaiming_normal_(first.weight, nonlinearity="relu")  # Keras he_normal: std = sqrt(2 / fan_in)
        nn.init.zeros_(first.bias)
        self.hidden = nn.Sequential(first, nn.BatchNorm1d(hidden), nn.Sigmoid())
        last = nn.Linear(hidden, 1)
        if zero_init_output:
            nn.init.zeros_(last.weight)
        else:
            nn.init.xavier_uniform_(last.weight)
        nn.init.zeros_(last.bias)
        self.output = nn.Sequential(last, nn.BatchNorm1d(1)) if output_batch_norm else last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x)).squeeze(-1)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity (or 1×1 projection) shortcut (He et al., 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet for small images (the paper's ResNet50/MNIST experiment in miniature).

    Stem conv → one residual block per stage (stride 2 from the second stage) →
    global average pooling → linear logit. Takes flat rows ``(N, C·H·W)`` or
    images ``(N, C, H, W)``; torchvision is not needed. The logit layer keeps
    PyTorch's random initialisation: starting it at zero, as the MLP does, slows
    BCE down badly here (the body then receives no gradient until the head has
    grown), and the compiled losses do not need it, since the logits of a fresh
    ResNet stay close to 0. ``zero_init_output=True`` starts it at zero.
    """

    def __init__(self, image_shape: tuple[int, int, int], widths: tuple[int, ...] = (16, 32, 64),
                 zero_init_output: bool = False):
        super().__init__()
        channels = image_shape[0]
        self.image_shape = tuple(image_shape)
        self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, previous = [], widths[0]
        for index, width in enumerate(widths):
            blocks.append(BasicBlock(previous, width, stride=1 if index == 0 else 2))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(previous, 1)
        if zero_init_output:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.reshape(x.shape[0], *self.image_shape)
        features = self.blocks(self.stem(x))
        return self.head(features.mean(dim=(2, 3))).squeeze(-1)


def build_model(name: str, n_features: int, image_shape: tuple[int, int, int] | None = None, *,
                zero_init_output: bool | None = None) -> nn.Module:
    """A fresh model by name (``slp``, ``mlp``, ``resnet``); ``resnet`` needs an image dataset.

    ``zero_init_output`` starts the MLP's or ResNet's output layer at zero (True)
    or at random (False); None keeps each model's default (MLP zero, ResNet random).
    """
    if name == "slp":
        return SLP(n_features)
    if name == "mlp":
        return MLP(n_features, zero_init_output=True if zero_init_output is None else zero_init_output)
    if name == "resnet":
        if image_shape is None:
            raise ValueError("the resnet model needs an image dataset (e.g. --datasets digits); "
                             "use slp or mlp for tables")
        return ResNet(image_shape, zero_init_output=bool(zero_init_output))
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
