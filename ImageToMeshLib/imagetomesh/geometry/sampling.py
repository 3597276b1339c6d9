"""Uniform random points on a triangle surface.

A face is drawn with probability ``A_f / sum_g A_g`` (``torch.multinomial`` with replacement),
then a point uniformly inside it with the square-root trick: for ``u, v ~ U(0, 1)``,

    ``p = (1 - sqrt(u)) v0 + sqrt(u) (1 - v) v1 + sqrt(u) v v2``

which has constant density over the triangle. The face draw is not differentiable (it is a
discrete choice) but the points are an affine function of the vertices, so gradients flow to
``verts`` through ``p`` (and through the normals, if asked for).
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from imagetomesh.geometry.normals import face_areas, face_normals

__all__ = ["sample_points_on_mesh"]


def sample_points_on_mesh(
    verts: torch.Tensor,
    faces: torch.Tensor,
    n: int,
    return_normals: bool = False,
    generator: Optional[torch.Generator] = None,
    return_faces: bool = False,
) -> Union[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Sample ``n`` points uniformly (by area) on the mesh surface.

    Args:
        verts: ``(N, 3)`` floating tensor; faces: ``(F, 3)`` int64.
        n: number of points.
        return_normals: also return the unit normal of the face each point lies on.
        generator: optional ``torch.Generator`` (on the device of ``verts``) for reproducibility.
        return_faces: also return the ``(n,)`` int64 face index of every point.

    Returns:
        points ``(n, 3)``; then ``normals (n, 3)`` if ``return_normals``; then ``face_idx (n,)``
        if ``return_faces``. A bare tensor when neither is asked for.

    Raises:
        ValueError: if the mesh has no face of positive area.
    """
    if n < 0:
        raise ValueError(f"number of samples must be >= 0, got {n}")
    faces = faces.long().to(verts.device)
    with torch.no_grad():
        areas = face_areas(verts.detach(), faces)
        total = float(areas.sum()) if areas.numel() else 0.0
        if not total > 0:
            raise ValueError("cannot sample points on a mesh with zero surface area")
        if n > 0:
            face_idx = torch.multinomial(areas.double(), n, replacement=True, generator=generator)
        else:
            face_idx = torch.zeros(0, dtype=torch.int64, device=verts.device)
        uv = torch.rand((n, 2), generator=generator, dtype=verts.dtype, device=verts.device)
    su = uv[:, :1].sqrt()
    w0 = 1.0 - su
    w1 = su * (1.0 - uv[:, 1:])
    w2 = su * uv[:, 1:]
    f = faces[face_idx]
    points = w0 * verts[f[:, 0]] + w1 * verts[f[:, 1]] + w2 * verts[f[:, 2]]
    out = [points]
    if return_normals:
        out.append(face_normals(verts, f))
    if return_faces:
        out.append(face_idx)
    return out[0] if len(out) == 1 else tuple(out)
