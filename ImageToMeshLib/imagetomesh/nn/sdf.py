"""Signed distance fields of triangle meshes in PyTorch (CPU or GPU), negative inside.

- :func:`winding_number`: generalised winding number (signed solid angles / 4 pi), chunked.
- :func:`signed_distance`: exact SDF at arbitrary points: unsigned distance to the nearest
  triangle (:func:`imagetomesh.geometry.distances.point_to_triangle_distance`) with the sign
  of the winding number.
- :func:`grid_sdf`: the SDF at every voxel centre of a model grid, truncated at ``+-truncation``
  (exact inside that band: each triangle measured against the voxels near it), signed by
  rasterisation; fast enough to make training targets every step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from imagetomesh.geometry.distances import closest_point_on_triangle, point_to_triangle_distance
from imagetomesh.nn.grid import grid_to_index, half_extent, index_to_grid


def winding_number(
    points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, chunk: int = 1 << 20
) -> torch.Tensor:
    """Winding number of a closed outward mesh at ``(P, 3)`` points: 1 inside, 0 outside; ``(P,)``.

    ``sum_f 2 atan2(a.(b x c), |a||b||c| + (a.b)|c| + (b.c)|a| + (c.a)|b|) / (4 pi)`` with
    ``a, b, c`` the face corners relative to the point (Van Oosterom and Strackee).
    ``chunk`` bounds the number of (point, face) pairs held at once.
    """
    tri = verts[faces.long()]  # (F, 3, 3)
    step = max(1, chunk // max(1, tri.shape[0]))
    out = []
    for start in range(0, points.shape[0], step):
        r = tri[None] - points[start : start + step, None, None, :]  # (p, F, 3, 3)
        a, b, c = r[..., 0, :], r[..., 1, :], r[..., 2, :]
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.linalg.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(torch.atan2(det, den).sum(1) * (2.0 / (4.0 * math.pi)))
    return torch.cat(out) if out else points.new_zeros(0)


def signed_distance(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Exact signed distance from ``(P, 3)`` points to a closed outward mesh, negative inside; ``(P,)``."""
    dist, _ = point_to_triangle_distance(points, verts, faces)
    with torch.no_grad():
        inside = winding_number(points.detach(), verts.detach(), faces) > 0.5
    return torch.where(inside, -dist, dist)


def grid_points(shape, device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel centres of a ``(D, H, W)`` grid in grid coordinates (x, y, z), ``align_corners=True``,
    flattened in (D, H, W) order; ``(D*H*W, 3)``."""
    axes = [torch.arange(int(s), device=device, dtype=dtype) for s in shape]
    k, j, i = torch.meshgrid(*axes, indexing="ij")
    return index_to_grid(torch.stack([i, j, k], dim=-1).reshape(-1, 3), tuple(shape)[::-1])


def inside_mask(verts: torch.Tensor, faces: torch.Tensor, shape) -> torch.Tensor:
    """``(D, H, W)`` bool: voxel centres inside the closed mesh (``verts`` in grid coordinates),
    by scan-line parity (:func:`imagetomesh.geometry.raster.rasterize_mesh`)."""
    from imagetomesh.core.mesh import Mesh
    from imagetomesh.core.volume import Volume
    from imagetomesh.geometry.raster import rasterize_mesh

    d, h, w = (int(s) for s in shape)
    ijk = grid_to_index(verts.detach().double().cpu(), (w, h, d)).numpy()
    mask = rasterize_mesh(Mesh(ijk, faces.detach().cpu().numpy()), Volume(np.zeros((d, h, w), np.uint8)))
    return torch.from_numpy(mask.astype(bool)).to(verts.device)


@torch.no_grad()
def grid_sdf(
    verts: torch.Tensor,
    faces: torch.Tensor,
    shape,
    scale: torch.Tensor,
    truncation: float,
    chunk: int = 1 << 21,
    far_field: bool = False,
) -> torch.Tensor:
    """Truncated SDF of a closed mesh at the voxel centres of a ``(D, H, W)`` grid; ``(D, H, W)``.

    ``verts`` ``(N, 3)`` are in grid coordinates; distances are measured after multiplying grid
    coordinates by ``scale`` ``(3,)`` (the isotropic frame of
    :func:`imagetomesh.nn.grid.isotropic_scale`) and clamped to ``+-truncation``;
    negative inside (voxel centres inside by rasterisation, so any closed mesh works).

    Exact in the band: every voxel within ``truncation`` of a triangle lies in that triangle's
    bounding box grown by ``truncation``, so each triangle is measured against the voxels of
    such a box (vectorised over the triangles whose boxes have the same size; ``chunk`` bounds the
    (triangle, voxel) pairs held at once) and each voxel keeps its minimum (``scatter_reduce`` "amin").

    With ``far_field`` the values beyond the band are not clamped but continued by the Euclidean
    distance transform of the rasterised inside mask (``scipy.ndimage``; distance to the nearest
    voxel centre across the surface minus half a voxel, at least ``truncation``): within about a
    voxel of the exact distance, and cheap, so that a network fitted to it still sees how far
    away the surface is.
    """
    d, h, w = (int(s) for s in shape)
    faces = faces.long().to(verts.device)
    scale = scale.to(verts)
    verts = verts.detach()
    ijk = grid_to_index(verts, (w, h, d))  # continuous voxel index
    # voxel size along x, y, z in the isotropic frame (scale times 2 / (size - 1), rounded once)
    voxel = scale / half_extent((w, h, d), verts.dtype, verts.device)
    grow = truncation / voxel
    tri = ijk[faces]  # (F, 3, 3)
    lo = torch.floor(tri.min(1).values - grow).long()
    hi = torch.ceil(tri.max(1).values + grow).long()
    tri_iso = verts[faces] * scale  # (F, 3, 3)
    limits = torch.tensor([w, h, d], device=verts.device)
    out = torch.full((d * h * w,), float(truncation), dtype=verts.dtype, device=verts.device)
    # triangles grouped by the size of their box, so a few long triangles do not make every box big
    sizes, group = torch.unique(hi - lo + 1, dim=0, return_inverse=True)
    for g, extent in enumerate(sizes.tolist()):
        members = torch.nonzero(group == g)[:, 0]
        offsets = torch.stack(
            torch.meshgrid(*[torch.arange(e, device=verts.device) for e in extent], indexing="ij"), -1
        ).reshape(-1, 3)
        step = max(1, chunk // len(offsets))
        for start in range(0, len(members), step):
            chosen = members[start : start + step]
            vox = lo[chosen, None, :] + offsets[None]  # (f, M, 3)
            valid = ((vox >= 0) & (vox < limits)).all(-1)
            points = index_to_grid(vox.to(verts.dtype), (w, h, d)) * scale
            t = tri_iso[chosen, None]  # (f, 1, 3, 3)
            q = closest_point_on_triangle(points, t[..., 0, :], t[..., 1, :], t[..., 2, :])
            dist = (q - points).norm(dim=-1)
            flat = (vox[..., 2] * h + vox[..., 1]) * w + vox[..., 0]
            out.scatter_reduce_(0, flat[valid], dist[valid], reduce="amin")
    dist = out.clamp(max=truncation).view(d, h, w)
    inside = inside_mask(verts, faces, shape)
    if far_field:
        from scipy.ndimage import distance_transform_edt

        mask = inside.cpu().numpy()
        spacing = voxel.flip(0).cpu().double().numpy()  # (D, H, W) axis order
        across = np.where(
            mask, distance_transform_edt(mask, sampling=spacing), distance_transform_edt(~mask, sampling=spacing)
        )
        far = torch.from_numpy(across - 0.5 * float(voxel.min())).to(dist).clamp(min=truncation)
        dist = torch.where(dist < truncation, dist, far)
    return torch.where(inside, -dist, dist)
