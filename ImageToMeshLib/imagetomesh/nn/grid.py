"""The torch twins of the grid maps in :mod:`imagetomesh.core.transforms`, and the isotropic grid frame.

Model grid coordinates are normalised to ``[-1, 1]`` per axis and ordered (x, y, z) = (W, H, D) =
(i, j, k), as ``torch.nn.functional.grid_sample`` reads them with ``align_corners=True``: grid
``-1`` is the centre of voxel 0 and ``+1`` the centre of the last voxel along that axis, so

    ``grid = ijk / half - 1`` and ``ijk = (grid + 1) * half``, with ``half = (size - 1) / 2``

(at least 1/2, so that a one-voxel axis maps index 0 to grid -1, as in core). These functions are
the same maps as their numpy namesakes, on tensors of shape ``(..., 3)`` of any floating dtype and
device, differentiable; every torch module converts through them. ``size_ijk`` is always the grid
size in (x, y, z) order, ``(W, H, D)`` (``shape[::-1]`` of a ``(D, H, W)`` shape); it may be a
sequence, an array or a tensor.

The *isotropic grid frame* is grid coordinates times :func:`isotropic_scale`: one unit is the same
length on every axis (half the longest grid extent), so distances, radii and rotations mean the
same in every direction on a grid of isotropic spacing.
"""

from __future__ import annotations

import torch

from imagetomesh.core.transforms import GridTransform


def half_extent(size_ijk, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(3,)`` voxels per grid unit along (x, y, z): ``max(size - 1, 1) / 2``."""
    size = torch.as_tensor(size_ijk, device=device).to(dtype).reshape(3)
    return (size - 1.0).clamp(min=1.0) / 2.0


def index_to_grid(ijk: torch.Tensor, size_ijk) -> torch.Tensor:
    """``(..., 3)`` continuous voxel indices (i, j, k) -> ``(..., 3)`` grid coordinates (x, y, z).

    Twin of :func:`imagetomesh.core.transforms.index_to_grid`; in ``ijk``'s dtype and device.
    """
    return ijk / half_extent(size_ijk, ijk.dtype, ijk.device) - 1.0


def grid_to_index(grid: torch.Tensor, size_ijk) -> torch.Tensor:
    """``(..., 3)`` grid coordinates (x, y, z) -> ``(..., 3)`` continuous voxel indices (i, j, k).

    Twin of :func:`imagetomesh.core.transforms.grid_to_index`; in ``grid``'s dtype and device.
    """
    return (grid + 1.0) * half_extent(size_ijk, grid.dtype, grid.device)


def grid_sample_index(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Grid coordinates along one axis of ``size`` voxels -> the voxel index ``grid_sample`` (``align_corners=True``)
    reads there: ``((x + 1) / 2) (size - 1)`` in ``grid``'s dtype, the same operations in the same order, so a
    nearest lookup rounds (half to even) exactly as ``grid_sample`` does; a 1-voxel axis maps every coordinate to 0."""
    return ((grid + 1) / 2) * (size - 1)


def grid_voxel_size(size_ijk, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(3,)`` length of one voxel in grid units along (x, y, z): ``2 / (size - 1)``."""
    return 1.0 / half_extent(size_ijk, dtype, device)


def transform_points(affine, points: torch.Tensor) -> torch.Tensor:
    """Apply a ``(4, 4)`` homogeneous affine (array or tensor) to ``(..., 3)`` points, in ``points``' dtype.

    Twin of :func:`imagetomesh.core.volume.transform_points`: ``points @ A[:3, :3].T + A[:3, 3]``.
    """
    a = torch.as_tensor(affine, device=points.device).to(points.dtype)
    return points @ a[:3, :3].T + a[:3, 3]


def grid_to_lps(grid: torch.Tensor, transform: GridTransform) -> torch.Tensor:
    """``(..., 3)`` grid coordinates -> ``(..., 3)`` LPS mm; twin of :meth:`GridTransform.to_lps`."""
    return transform_points(transform.grid_to_lps, grid)


def lps_to_grid(lps: torch.Tensor, transform: GridTransform) -> torch.Tensor:
    """``(..., 3)`` LPS mm -> ``(..., 3)`` grid coordinates; twin of :meth:`GridTransform.to_grid`."""
    return transform_points(transform.lps_to_grid, lps)


def isotropic_scale(grid_shape) -> torch.Tensor:
    """``(3,)`` float32 factors taking grid (x, y, z) to the isotropic grid frame, where one unit is
    the same length on every axis (the longest axis keeps [-1, 1]); ``grid_shape`` is (D, H, W)."""
    half = half_extent(tuple(grid_shape)[::-1])
    return half / half.max()


def isotropic_voxel_size(grid_shape) -> float:
    """Length of one voxel in the isotropic grid frame of a ``(D, H, W)`` grid: ``2 / (max(shape) - 1)``."""
    return 1.0 / (max(int(max(grid_shape)) - 1.0, 1.0) / 2.0)


__all__ = [
    "half_extent",
    "index_to_grid",
    "grid_to_index",
    "grid_voxel_size",
    "transform_points",
    "grid_to_lps",
    "lps_to_grid",
    "isotropic_scale",
    "isotropic_voxel_size",
]
