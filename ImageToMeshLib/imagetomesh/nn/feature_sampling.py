"""Sampling voxel feature maps at continuous points given in model grid coordinates.

On a CPU one image's points are shared among the threads (PyTorch's ``grid_sample`` gives each image of a batch one
thread); ``Testing/benchmarks/feature_sampling.py`` times it at the mesh decoders' sizes."""

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
    pieces = _thread_pieces(features, n)
    if pieces > 1:
        return _sample_split(features, points, pieces)
    grid = points.view(b, n, 1, 1, 3).to(features.dtype)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.view(b, features.shape[1], n).transpose(1, 2)


#: Points per thread below which :func:`sample_features` does not split one image's points across threads.
MIN_POINTS_PER_THREAD = 4096


def _thread_pieces(features: torch.Tensor, n: int) -> int:
    """Into how many pieces :func:`sample_features` splits ``n`` points of one image: PyTorch's CPU ``grid_sample``
    runs the images of a batch in parallel but each image's points on one thread, so one image's points are split
    into pieces run as a batch over the same features (up to the thread count, at least
    :data:`MIN_POINTS_PER_THREAD` each). 1 (no split) for batches, other devices, and features that need gradients
    (their gradient would be summed over the pieces: more memory in training)."""
    if features.shape[0] != 1 or features.device.type != "cpu":
        return 1
    if torch.is_grad_enabled() and features.requires_grad:
        return 1
    return max(1, min(torch.get_num_threads(), n // MIN_POINTS_PER_THREAD))


def _sample_split(features: torch.Tensor, points: torch.Tensor, pieces: int) -> torch.Tensor:
    """:func:`sample_features` of one image's ``points (1, N, 3)`` as ``pieces`` images of the same ``features``
    (an expanded view: no copy); the same values."""
    n = points.shape[1]
    size = -(-n // pieces)
    padded = F.pad(points, (0, 0, 0, size * pieces - n)).to(features.dtype)
    grid = padded.view(pieces, size, 1, 1, 3)
    sampled = F.grid_sample(
        features.expand(pieces, -1, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=True
    )  # (pieces, C, size, 1, 1)
    return sampled.view(pieces, features.shape[1], size).transpose(1, 2).reshape(1, pieces * size, -1)[:, :n]


def neighbourhood_offsets(radius_voxels: float, size_ijk: torch.Tensor) -> torch.Tensor:
    """The 27 offsets of a 3x3x3 neighbourhood at ``radius_voxels`` voxels, in grid units; ``(27, 3)``.

    ``size_ijk`` is the feature map's (W, H, D) size; one voxel is
    :func:`~imagetomesh.nn.grid.grid_voxel_size` grid units.
    """
    steps = torch.tensor([-1.0, 0.0, 1.0])
    offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), dim=-1).reshape(27, 3)
    voxel = grid_voxel_size(size_ijk, device=size_ijk.device)
    return offsets * voxel * radius_voxels
