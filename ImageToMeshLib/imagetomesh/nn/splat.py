"""Grid feature projection: trilinear splatting of per-vertex features onto a voxel grid.

Splatting is the adjoint (transpose) of trilinear sampling with
:func:`imagetomesh.nn.feature_sampling.sample_features`: a point at continuous voxel index
``(i, j, k)`` adds ``w * f`` to each of its 8 neighbouring voxels, with the same trilinear
weights ``w`` that sampling would read them with. Hence, for any grid ``G`` and points inside
it, ``<splat(f, p), G> = <f, sample(G, p)>`` (tested); both use the one axis convention of
the library: points are (x, y, z) = (W, H, D) in [-1, 1] with ``align_corners=True``.
"""

from __future__ import annotations

import torch

from imagetomesh.nn.grid import grid_to_index

#: The 8 corner offsets of a voxel cell, (x, y, z) order; ``(8, 3)``.
_CORNERS = torch.tensor([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=torch.int64)


def splat_features(features: torch.Tensor, points: torch.Tensor, shape) -> torch.Tensor:
    """Trilinear splatting of point features onto a ``(D, H, W)`` grid.

    Args:
        features: ``(B, N, C)`` per-point features.
        points: ``(B, N, 3)`` grid coordinates (x, y, z) in [-1, 1] (``align_corners=True``);
            corners falling outside the grid are dropped.
        shape: ``(D, H, W)`` of the output grid.
    Returns:
        ``(B, C, D, H, W)``: ``out[b, :, v] = sum_n w(p_bn, v) f_bn``. Differentiable in
        ``features`` and ``points`` (through the weights); vectorised with ``index_add_``.
    """
    if features.dim() != 3 or points.dim() != 3 or points.shape[-1] != 3 or features.shape[:2] != points.shape[:2]:
        raise ValueError(
            f"features (B, N, C) and points (B, N, 3) must match, got {tuple(features.shape)} and {tuple(points.shape)}"
        )
    d, h, w = (int(s) for s in shape)
    b, n, c = features.shape
    index = grid_to_index(points, (w, h, d))  # continuous voxel index (i, j, k)
    base = torch.floor(index)
    frac = index - base  # (B, N, 3)
    corners = base.long()[:, :, None, :] + _CORNERS.to(points.device)  # (B, N, 8, 3)
    upper = _CORNERS.to(points.device).bool()
    weights = torch.where(upper, frac[:, :, None, :], 1.0 - frac[:, :, None, :]).prod(-1)  # (B, N, 8)
    limits = torch.tensor([w, h, d], device=points.device)
    valid = ((corners >= 0) & (corners < limits)).all(-1)  # (B, N, 8)
    batch = torch.arange(b, device=points.device)[:, None, None].expand(b, n, 8)
    flat = ((batch * d + corners[..., 2]) * h + corners[..., 1]) * w + corners[..., 0]
    values = weights[..., None] * features[:, :, None, :]  # (B, N, 8, C)
    out = torch.zeros(b * d * h * w, c, dtype=features.dtype, device=features.device)
    out = out.index_add(0, flat[valid], values[valid].to(features.dtype))
    return out.view(b, d, h, w, c).permute(0, 4, 1, 2, 3)
