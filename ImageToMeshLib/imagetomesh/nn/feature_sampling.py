"""Sampling voxel feature maps at continuous points given in model grid coordinates.

Two computations of one function: PyTorch's ``grid_sample``, and on a CPU, where no gradient reaches the features
(inference, and the points' own gradient, as NUDF's projection takes it), each sample as the weighted sum of its
eight voxels' feature rows (``embedding_bag``), 2-2.7x faster at the mesh decoders' sizes on one thread, 3-7x on two:
``grid_sample`` reads a sample's channels one voxel plane apart, the rows are contiguous.
``Testing/benchmarks/feature_sampling.py`` times the two."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from imagetomesh.nn.grid import grid_sample_index, grid_voxel_size

#: The eight voxels around a point: their (x, y, z) steps from the lowest, x fastest (z, then y, then x).
_CORNERS = torch.tensor([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)])


def sample_features(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``features`` at ``points``.

    Args:
        features: ``(B, C, D, H, W)`` feature map.
        points: ``(B, N, 3)`` grid coordinates (x, y, z) in [-1, 1] (``align_corners=True``);
            points outside take the border value.
    Returns:
        ``(B, N, C)`` features (differentiable with respect to both).
    """
    if _gathers(features, points):
        return _gathered(features, points)
    b, n, _ = points.shape
    grid = points.view(b, n, 1, 1, 3).to(features.dtype)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.view(b, features.shape[1], n).transpose(1, 2)


def _gathers(features: torch.Tensor, points: torch.Tensor) -> bool:
    """Whether :func:`sample_features` sums voxel rows (:func:`_gathered`) rather than calling ``grid_sample``: on a
    CPU, for features whose gradient is not wanted and finite points (a non-finite point has no voxels to read)."""
    if features.device.type != "cpu" or (torch.is_grad_enabled() and features.requires_grad):
        return False
    return bool(torch.isfinite(points).all())


def _gathered(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """:func:`sample_features` as ``embedding_bag`` sums of the eight voxels' feature rows around each point, weighted
    by the products of the point's nearness along each axis: ``grid_sample``'s samples up to rounding, and its
    gradient with respect to ``points`` (none where a coordinate is clipped to the border). Not for gradients with
    respect to ``features``."""
    b, c, d, h, w = features.shape
    n = points.shape[1]
    table = features.detach().permute(0, 2, 3, 4, 1).reshape(b * d * h * w, c)  # a view when channels-last
    size = torch.tensor([w, h, d], dtype=points.dtype, device=points.device)
    index = grid_sample_index(points, size)
    inside = (index > 0) & (index < size - 1)  # border padding: clipped, with no gradient there (as grid_sample)
    index = torch.where(inside, index, torch.minimum(index.detach().clamp(min=0), size - 1))
    low = torch.minimum(index.detach().floor(), (size - 2).clamp(min=0))  # the far border's point: frac 1
    frac = index - low
    low = low.long()
    row = ((torch.arange(b, device=points.device)[:, None] * d + low[..., 2]) * h + low[..., 1]) * w + low[..., 0]
    step = torch.tensor([1, w, h * w], device=points.device) * (size > 1)  # a one-voxel axis: no step
    rows = row[..., None] + (_CORNERS.to(points.device) * step).sum(1)  # (B, N, 8)
    near = torch.stack([1 - frac, frac], dim=-1)  # (B, N, 3 axes, 2: the low voxel's weight, the high one's)
    x, y, z = near.unbind(-2)
    weights = z[..., :, None, None] * y[..., None, :, None] * x[..., None, None, :]  # (B, N, 2, 2, 2): x fastest
    sampled = F.embedding_bag(
        rows.reshape(-1, 8), table, mode="sum", per_sample_weights=weights.reshape(-1, 8).to(table.dtype)
    )
    return sampled.view(b, n, c)


def neighbourhood_offsets(radius_voxels: float, size_ijk: torch.Tensor) -> torch.Tensor:
    """The 27 offsets of a 3x3x3 neighbourhood at ``radius_voxels`` voxels, in grid units; ``(27, 3)``.

    ``size_ijk`` is the feature map's (W, H, D) size; one voxel is
    :func:`~imagetomesh.nn.grid.grid_voxel_size` grid units.
    """
    steps = torch.tensor([-1.0, 0.0, 1.0])
    offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), dim=-1).reshape(27, 3)
    voxel = grid_voxel_size(size_ijk, device=size_ijk.device)
    return offsets * voxel * radius_voxels
