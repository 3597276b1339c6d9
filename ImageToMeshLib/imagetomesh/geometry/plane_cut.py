"""Where a triangle mesh crosses a plane: the cut segments, differentiable in the vertices.

Each triangle with vertices on both sides of the plane contributes one segment whose two
end points are convex combinations of the triangle's vertices (on the two crossing edges),
so gradients flow back to the vertex positions (DALS's planar-curve task needs this).
"""

from __future__ import annotations

import torch


def signed_plane_distance(points: torch.Tensor, origin: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """``(N,)`` signed distances of ``(N, 3)`` points to the plane through ``origin`` with unit ``normal``."""
    return (points - origin) @ normal


def cut_mesh_with_plane(verts: torch.Tensor, faces: torch.Tensor, origin, normal) -> tuple[torch.Tensor, torch.Tensor]:
    """Segments where the mesh crosses the plane.

    Args:
        verts: ``(N, 3)`` float; faces: ``(F, 3)`` long; origin, normal: ``(3,)`` (normal need not be unit).
    Returns:
        ``segments`` ``(S, 2, 3)`` end points (differentiable in ``verts``) and ``face_ids`` ``(S,)``.
        Vertices exactly on the plane count as on its positive side.
    """
    origin = torch.as_tensor(origin, dtype=verts.dtype, device=verts.device)
    normal = torch.as_tensor(normal, dtype=verts.dtype, device=verts.device)
    normal = normal / normal.norm()
    d = signed_plane_distance(verts, origin, normal)
    side = d[faces] >= 0  # (F, 3)
    n_pos = side.sum(1)
    crossing = (n_pos == 1) | (n_pos == 2)
    face_ids = torch.nonzero(crossing).squeeze(1)
    if face_ids.numel() == 0:
        return verts.new_zeros((0, 2, 3)), face_ids
    f = faces[face_ids]
    s = side[face_ids]
    # the lone vertex is the one whose side differs from the other two
    lone_is_pos = n_pos[face_ids] == 1
    lone_mask = torch.where(lone_is_pos[:, None], s, ~s)
    lone = lone_mask.float().argmax(1)
    idx = torch.arange(len(f), device=f.device)
    a = f[idx, lone]
    b = f[idx, (lone + 1) % 3]
    c = f[idx, (lone + 2) % 3]

    def crossing_point(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        dp, dq = d[p], d[q]
        t = dp / (dp - dq)  # dp and dq have opposite signs (or dp == 0), so t is in [0, 1]
        return verts[p] + t[:, None] * (verts[q] - verts[p])

    segments = torch.stack([crossing_point(a, b), crossing_point(a, c)], dim=1)
    return segments, face_ids
