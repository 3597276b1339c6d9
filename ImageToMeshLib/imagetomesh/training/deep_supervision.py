"""Deep supervision of a U-Net's coarser decoder levels (training only; the scheme nnU-Net trains with).

With ``levels`` = L, each of the L decoder levels next to the full-resolution one (1/2, 1/4, ... of the
grid per axis) gets its own 1x1x1 convolution to the class logits, and the loss is the weighted sum of
the same loss at every resolution: the full-resolution logits against the label, level ``k``'s against
the label subsampled by nearest neighbour (every ``2**k``-th voxel, as ``F.interpolate(mode="nearest")``
picks them), weights ``1, 1/2, 1/4, ...`` normalised to sum 1. The coarse levels then learn to tell the
organs apart themselves instead of only feeding the finest level.

The heads live in the training task and its checkpoint, not in the model: a run's saved models are the
plain U-Net's weights, read and run as any other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def supervision_weights(levels: int) -> list[float]:
    """The loss weights of the full resolution and ``levels`` coarser levels, finest first:
    ``2**-k`` normalised to sum 1 (``levels`` = 2: ``[4/7, 2/7, 1/7]``)."""
    raw = [0.5**k for k in range(levels + 1)]
    return [w / sum(raw) for w in raw]


def subsampled_label(label: torch.Tensor, level: int) -> torch.Tensor:
    """``label (B, D, H, W)`` at decoder level ``level`` (0: the grid): every ``2**level``-th voxel per axis,
    ``(B, D / 2**level, H / 2**level, W / 2**level)``. Label codes pass unchanged (nearest neighbour)."""
    step = 2**level
    return label[:, ::step, ::step, ::step]


class DeepSupervisionHeads(nn.Module):
    """1x1x1 convolutions from ``levels`` coarser decoder levels to ``num_classes`` logits.

    ``decoder_channels``: the U-Net's decoder channels, coarsest (bottleneck) first
    (:attr:`~imagetomesh.nn.unet.UNet3D.decoder_channels`); the heads read the levels next to the finest,
    so ``levels`` is at most ``len(decoder_channels) - 1`` (the bottleneck included)."""

    def __init__(self, decoder_channels: list[int], num_classes: int, levels: int) -> None:
        super().__init__()
        if not 1 <= levels <= len(decoder_channels) - 1:
            raise ValueError(
                f"deep supervision of {levels} levels needs a U-Net with more than {levels} decoder levels "
                f"(this one has {len(decoder_channels)}, the bottleneck included)"
            )
        # level k (1 = half the grid) reads decoder[-1 - k]
        self.heads = nn.ModuleList(nn.Conv3d(decoder_channels[-1 - k], num_classes, 1) for k in range(1, levels + 1))

    def forward(self, decoder: list[torch.Tensor]) -> list[torch.Tensor]:
        """``decoder``: the U-Net's decoder features, coarsest first -> logits ``(B, num_classes, D / 2**k, ...)``
        of levels ``k = 1 .. levels``, finest first."""
        return [head(decoder[-1 - k]) for k, head in enumerate(self.heads, start=1)]


class DeeplySupervisedUNet(nn.Module):
    """A U-Net model (``model.unet``: :class:`~imagetomesh.nn.unet.UNet3D`) and its
    :class:`DeepSupervisionHeads` as one module, so that a distributed wrapper sees both.
    ``forward(images (B, C, D, H, W))`` -> ``(logits (B, K, D, H, W), [coarse logits, finest first])``."""

    def __init__(self, model: nn.Module, heads: DeepSupervisionHeads) -> None:
        super().__init__()
        self.model = model
        self.heads = heads

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, decoder = self.model.unet(images)
        return logits, self.heads(decoder)


def deep_supervised_loss(
    loss: Callable[..., torch.Tensor],
    logits: torch.Tensor,
    coarse_logits: list[torch.Tensor],
    label: torch.Tensor,
    *args,
) -> torch.Tensor:
    """``sum_k w_k * loss(logits_k, label at level k, *args)`` over the full resolution (``logits``) and
    ``coarse_logits`` (finest first, level 1 = half the grid), ``w`` = :func:`supervision_weights`.
    ``loss(logits (B, K, d, h, w), label (B, d, h, w), *args)`` is a segmentation loss whose other
    arguments do not depend on the resolution (the contoured organs ``present (B, K)``, a flag)."""
    weights = supervision_weights(len(coarse_logits))
    total = weights[0] * loss(logits, label, *args)
    for level, (w, level_logits) in enumerate(zip(weights[1:], coarse_logits), start=1):
        level_label = subsampled_label(label, level)
        if level_label.shape[1:] != level_logits.shape[2:]:
            raise ValueError(
                f"decoder level {level}'s logits {tuple(level_logits.shape[2:])} do not match the label "
                f"subsampled to {tuple(level_label.shape[1:])}"
            )
        total = total + w * loss(level_logits, level_label, *args)
    return total
