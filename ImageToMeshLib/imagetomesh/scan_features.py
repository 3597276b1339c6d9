"""An organ crop's U-Net decoder features read from the U-Net's pass over the whole scan.

Voxel2Mesh's organ decoders read the decoder features of its U-Net over each organ's crop. Run on the crop, that
U-Net reads the crop grown by the card's ``context_margin`` (the image's minimum beyond the scan), and its features
of the crop are those of its middle. `segment` has already run the same U-Net over the whole scan (the first network
of :func:`~imagetomesh.scan.mean_probabilities`), so the crop's features are read from that pass instead:

- at the finest level, the scan's voxels of the crop;
- at a level ``f`` times coarser, whose crop cell ``i`` covers the scan's voxels ``start + f i`` to
  ``start + f (i + 1) - 1`` along an axis, the scan level at cell ``start / f + i``: its cell there where the crop
  starts on the level's cells, else linear between its two nearest cells;
- where a crop cell's centre lies beyond the scan, the U-Net's features of an image of the scan's minimum
  (:func:`constant_image_features`), as the crop's padding would have been read.

The scan pass saw more of the image around each crop than the crop pass did, so the features differ near the
crop's edges. Voxel2Mesh's head-and-neck validation mean Dice went 0.7517 -> 0.7525 when its decoders read the
scan pass's features (each organ's mean within 0.002; docs/headneck-ct-experiments.md, session 53), and its seven
crop passes (together 84 % of a scan pass's voxels on the bundled case) are no longer run: its decoders there
5.6 -> 3.5 s on one thread. (Where `segment` runs the scan's U-Nets in bf16, on a CPU that computes it natively, the
features carry bf16's rounding, which the float32 crop pass did not; validated on a CPU without it, in float32.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def level_on_crop(
    level: torch.Tensor, start: tuple[int, int, int], crop: tuple[int, int, int], factor: int, outside: torch.Tensor
) -> torch.Tensor:
    """The crop's cells of one decoder level of the scan pass.

    Args:
        level: ``(C, n0, n1, n2)`` the level over the whole scan (``factor`` scan voxels per cell along each axis).
        start: the crop's first scan voxel ``(k, j, i)`` (may lie outside the scan).
        crop: the crop's shape ``(d, h, w)`` in scan voxels, each a multiple of ``factor``.
        factor: the level's pooling factor.
        outside: ``(C,)`` the features of a cell whose centre lies beyond the scan along any axis.

    Returns:
        ``(C, d / factor, h / factor, w / factor)``, channels innermost in memory: at crop cell ``i`` (per axis) the
        level at ``start / factor + i`` cells, linear between the two nearest cells (the nearest within the scan
        where that lies beyond it).
    """
    out = level.permute(1, 2, 3, 0)  # (n0, n1, n2, C): a contiguous view of a channels-last level (the fast U-Net's)
    beyond = torch.zeros((1, 1, 1, 1), dtype=torch.bool, device=level.device)
    for axis in range(3):
        cells = crop[axis] // factor
        size = level.shape[axis + 1]
        at = start[axis] / factor + torch.arange(cells, device=level.device, dtype=torch.float64)
        shape = [1, 1, 1, 1]
        shape[axis] = cells
        beyond = beyond | ((at < -0.5) | (at > size - 0.5)).reshape(shape)
        first = start[axis] // factor  # the nearest cell at or below the crop's first cell centre
        weight = start[axis] / factor - first
        below = torch.arange(first, first + cells, device=level.device)
        lower = out.index_select(axis, below.clamp(0, size - 1))
        out = torch.lerp(lower, out.index_select(axis, (below + 1).clamp(0, size - 1)), weight) if weight else lower
    if bool(beyond.any()):
        out = torch.where(beyond, outside.to(out.dtype), out)
    return out.permute(3, 0, 1, 2)  # channels-last, as the decoders' feature sampling reads it without a copy


@dataclass(frozen=True)
class ScanFeatures:
    """A U-Net's decoder features over a whole scan, read on organ crops (:meth:`crop`).

    ``levels``: coarsest first, each ``(C_l, D / f, H / f, W / f)``, the last the finest (``f`` = 1, the scan grid's
    shape); ``outside``: per level, the ``(C_l,)`` features of the padding beyond the scan
    (:func:`constant_image_features`)."""

    levels: list[torch.Tensor]
    outside: list[torch.Tensor]

    def crop(self, start: tuple[int, int, int], crop: tuple[int, int, int]) -> list[torch.Tensor]:
        """The crop's decoder features, as a U-Net pass over the crop returns them: coarsest first, each ``(1, C_l,
        d / f, h / f, w / f)`` (:func:`level_on_crop`) for the crop of shape ``crop`` ``(d, h, w)`` (each a multiple
        of every level's factor) from scan voxel ``start`` ``(k, j, i)``."""
        scan = self.levels[-1].shape[1]
        return [
            level_on_crop(level, start, crop, scan // level.shape[1], air)[None]
            for level, air in zip(self.levels, self.outside)
        ]


@torch.no_grad()
def constant_image_features(unet, value: float, size: int = 32) -> list[torch.Tensor]:
    """``unet``'s decoder features, coarsest first, each ``(C_l,)``, at the centre of a ``size``-cube image of
    ``value`` (``unet(x) -> (logits, decoder levels coarsest first)``; ``size`` a multiple of its poolings): what
    it computes over a crop's padding."""
    parameter = next(unet.parameters())
    image = torch.full((1, 1, size, size, size), float(value), device=parameter.device)
    decoder = unet(image)[1]
    return [level[0, :, level.shape[2] // 2, level.shape[3] // 2, level.shape[4] // 2].float() for level in decoder]
