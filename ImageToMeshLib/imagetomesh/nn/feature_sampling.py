"""Sampling voxel feature maps at continuous points given in model grid coordinates."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imagetomesh.nn.grid import grid_voxel_size


def sample_features(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``features`` at ``points``.

    Args:
        features: ``(B, C, D, H, W)`` feature map.
        points: ``(B, N, 3)`` grid coordinates (x, y, z) in [-1, 1] (``align_corners=True``);
            points outside take the border value.
    Returns:
        ``(B, N, C)`` features.
    """
    b, n, _ = points.shape
    grid = points.view(b, n, 1, 1, 3).to(features.dtype)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.view(b, features.shape[1], n).transpose(1, 2)


def neighbourhood_offsets(radius_voxels: float, size_ijk: torch.Tensor) -> torch.Tensor:
    """The 27 offsets of a 3x3x3 neighbourhood at ``radius_voxels`` voxels, in grid units; ``(27, 3)``.

    ``size_ijk`` is the feature map's (W, H, D) size; one voxel is
    :func:`~imagetomesh.nn.grid.grid_voxel_size` grid units.
    """
    steps = torch.tensor([-1.0, 0.0, 1.0])
    offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), dim=-1).reshape(27, 3)
    voxel = grid_voxel_size(size_ijk, device=size_ijk.device)
    return offsets * voxel * radius_voxels
