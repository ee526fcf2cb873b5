"""A small U-Net for the segmentation experiment (Ronneberger, Fischer, Brox, MICCAI 2015), CPU-sized.

Each level holds two 3×3 convolutions with batch normalisation and ReLU; the encoder halves the
resolution with max pooling, the decoder doubles it with a 2×2 transposed convolution and concatenates
the encoder's features of the same level (the skip connection). Widths 8-16-32-64 give about 120 k
parameters (``count_parameters``), which train on 64×64 images at a few tens of milliseconds per image
on one CPU thread. The head is a 1×1 convolution to ``out_channels`` logits: 1 for the sigmoid losses,
2 for the softmax ones (background, nucleus).
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (8, 16, 32, 64)


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Logits (N, out_channels, H, W) for images (N, in_channels, H, W); H and W divisible by
    2**(len(widths) - 1)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"a U-Net needs at least two levels, got widths={widths}")
        self.depth = len(widths) - 1
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoder.append(_block(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.decoder.append(_block(2 * width, width))
            channels = width
        self.head = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2 ** self.depth
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {factor} for this U-Net")
        skips = []
        for index, block in enumerate(self.encoder):
            x = block(x)
            if index < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
