"""A configurable 3D U-Net shared by every model that needs image features.

Encoder level l has ``base * 2**l`` channels: two 3x3x3 conv + norm + ReLU blocks (or, with
``block="residual"``, a residual block of two 3x3x3 convs with norm, LeakyReLU and dropout, as
ImplicitMeshNet uses), then max-pool. The decoder mirrors it with transposed-conv upsampling and skip concatenation,
and a 1x1x1 head gives voxel logits. ``forward`` also returns every decoder level's
features (coarsest first) for mesh decoders to sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class UNetConfig:
    """``in_channels`` image channels; ``num_classes`` logit channels; ``base`` channels at full
    resolution; ``depth`` resolution levels (depth - 1 poolings); ``norm`` "batch" | "instance" | "group";
    ``block`` "double" (conv-norm-ReLU x 2) | "residual" (:class:`ResidualConv`: LeakyReLU, ``dropout``);
    ``windows`` intensity windows ``(lo, hi)`` in the input's units: each adds, per image channel, the channel
    clipped to ``[lo, hi]`` and rescaled to ``[-1, 1]`` (:func:`windowed`; e.g. a CT's soft-tissue window on its
    ``HU / 1000`` input), so the first convolution sees the small contrasts inside it at full scale."""

    in_channels: int = 1
    num_classes: int = 2
    base: int = 16
    depth: int = 4
    norm: str = "batch"
    block: str = "double"
    dropout: float = 0.0
    windows: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        self.windows = tuple((float(lo), float(hi)) for lo, hi in self.windows)  # JSON lists -> tuples
        if any(lo >= hi for lo, hi in self.windows):
            raise ValueError(f"UNet windows must be (lo, hi) with lo < hi, got {self.windows}")
        if self.depth < 2:
            raise ValueError(f"UNet depth must be >= 2, got {self.depth}")
        if self.base < 1 or self.in_channels < 1 or self.num_classes < 1:
            raise ValueError("UNet base, in_channels and num_classes must be positive")
        if self.norm not in ("batch", "instance", "group"):
            raise ValueError(f"UNet norm must be batch, instance or group, got {self.norm!r}")
        if self.block not in ("double", "residual"):
            raise ValueError(f"UNet block must be double or residual, got {self.block!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNet dropout must be in [0, 1), got {self.dropout}")

    def channels(self, level: int) -> int:
        return self.base * 2**level

    @property
    def first_channels(self) -> int:
        """Channels the first convolution reads: the image's and, per window, its windowed copy."""
        return self.in_channels * (1 + len(self.windows))


def windowed(x: torch.Tensor, windows: tuple[tuple[float, float], ...]) -> torch.Tensor:
    """``(B, C, ...)`` -> ``(B, C * (1 + len(windows)), ...)``: ``x`` and, per window ``(lo, hi)``,
    ``x`` clipped to it and mapped linearly onto ``[-1, 1]``."""
    if not windows:
        return x
    parts = [x] + [(x.clamp(lo, hi) - (lo + hi) / 2) * (2 / (hi - lo)) for lo, hi in windows]
    return torch.cat(parts, dim=1)


def norm3d(kind: str, channels: int) -> nn.Module:
    """A 3D normalisation layer by name."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.GroupNorm(min(8, channels), channels)


class DoubleConv(nn.Sequential):
    """(3x3x3 conv -> norm -> ReLU) x 2."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False),
            norm3d(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False),
            norm3d(norm, cout),
            nn.ReLU(inplace=True),
        )


class ResidualConv(nn.Module):
    """``act(x' + conv-norm(dropout(act(conv-norm(x)))))`` with 3x3x3 convs, LeakyReLU(0.01) and
    ``x'`` = ``x`` or its 1x1x1 projection when the channel count changes."""

    def __init__(self, cin: int, cout: int, norm: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1, bias=False)
        self.norm1 = norm3d(norm, cout)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = norm3d(norm, cout)
        self.skip = nn.Identity() if cin == cout else nn.Conv3d(cin, cout, 1, bias=False)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.act(self.norm1(self.conv1(x))))
        return self.act(self.norm2(self.conv2(y)) + self.skip(x))


def conv_block(cin: int, cout: int, config: UNetConfig) -> nn.Module:
    """The U-Net's block at one level, as ``config.block`` names it."""
    if config.block == "residual":
        return ResidualConv(cin, cout, config.norm, config.dropout)
    return DoubleConv(cin, cout, config.norm)


class UNet3D(nn.Module):
    """3D U-Net. Input ``(B, in_channels, D, H, W)`` with D, H, W divisible by ``2**(depth-1)``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.down = nn.ModuleList(
            conv_block(c.first_channels if level == 0 else c.channels(level - 1), c.channels(level), c)
            for level in range(c.depth)
        )
        self.pool = nn.MaxPool3d(2)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose3d(c.channels(level + 1), c.channels(level), 2, stride=2)
            for level in reversed(range(c.depth - 1))
        )
        self.up = nn.ModuleList(
            conv_block(2 * c.channels(level), c.channels(level), c) for level in reversed(range(c.depth - 1))
        )
        self.head = nn.Conv3d(c.base, c.num_classes, 1)

    @property
    def decoder_channels(self) -> list[int]:
        """Channels of the features ``forward`` returns, coarsest (bottleneck) first."""
        return [self.config.channels(level) for level in reversed(range(self.config.depth))]

    @property
    def encoder_channels(self) -> list[int]:
        """Channels of the encoder features, finest first."""
        return [self.config.channels(level) for level in range(self.config.depth)]

    def forward(self, x: torch.Tensor, return_encoder: bool = False):
        """Returns ``(logits (B, num_classes, D, H, W), decoder features coarsest-first [, encoder features finest-first])``."""
        factor = 2 ** (self.config.depth - 1)
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(f"UNet input size {tuple(x.shape[2:])} must be divisible by {factor}")
        x = windowed(x, self.config.windows)
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        decoder = [x]
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips[:-1])):
            x = block(torch.cat([upsample(x), skip], dim=1))
            decoder.append(x)
        logits = self.head(x)
        return (logits, decoder, skips) if return_encoder else (logits, decoder)
