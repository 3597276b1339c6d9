"""Face normals, face areas and area-weighted vertex normals.

For a face ``(v0, v1, v2)`` (counter-clockwise seen from outside) the un-normalised normal is
``n = (v1 - v0) x (v2 - v0)``; it points outward and ``|n| = 2 * area``. All functions are
differentiable in ``verts`` and keep its dtype and device.
"""

from __future__ import annotations

import torch

from imagetomesh.core.mesh import Mesh

__all__ = ["face_normals", "face_areas", "vertex_normals", "outward_vertex_normals", "offset_along_normals"]


def _corners(verts: torch.Tensor, faces: torch.Tensor):
    if verts.dim() != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (N, 3), got {tuple(verts.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    faces = faces.long().to(verts.device)
    return verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]


def _cross(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    v0, v1, v2 = _corners(verts, faces)
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=1)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, normalize: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """``(F, 3)`` face normals ``(v1 - v0) x (v2 - v0)``, unit length if ``normalize``.

    Degenerate (zero-area) faces get a zero normal: the length is clamped to ``eps`` before
    dividing.
    """
    n = _cross(verts, faces)
    if normalize:
        n = n / torch.linalg.vector_norm(n, dim=1, keepdim=True).clamp_min(eps)
    return n


def face_areas(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``(F,)`` triangle areas ``|(v1 - v0) x (v2 - v0)| / 2``."""
    return 0.5 * torch.linalg.vector_norm(_cross(verts, faces), dim=1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(N, 3)`` unit vertex normals: ``normalise(sum_{f ∋ i} A_f * n_f)``.

    The un-normalised face cross product already equals ``2 A_f n_f``, so it is summed as is
    (the factor 2 disappears in the normalisation). Vertices in no face get a zero normal.
    """
    cross = _cross(verts, faces)
    faces = faces.long().to(verts.device)
    idx = faces.reshape(-1)  # (3F,) vertex of every corner
    src = cross.repeat_interleave(3, dim=0)  # (3F, 3): the face's vector for each of its corners
    acc = torch.zeros_like(verts).index_add(0, idx, src)
    return acc / torch.linalg.vector_norm(acc, dim=1, keepdim=True).clamp_min(eps)


def outward_vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` unit vertex normals (:func:`vertex_normals`) of the closed mesh ``faces (F, 3)``, pointing out of
    the solid whichever way its faces are wound (all one way: the sign of the enclosed volume decides)."""
    normals = vertex_normals(verts, faces)
    if Mesh(verts.detach().cpu().numpy(), faces.cpu().numpy()).signed_volume() < 0:  # wound inward
        normals = -normals
    return normals


def offset_along_normals(verts: torch.Tensor, faces: torch.Tensor, distance: float) -> torch.Tensor:
    """``verts (N, 3)`` of the closed mesh ``faces (F, 3)``, each moved ``distance`` along its outward vertex normal
    (:func:`outward_vertex_normals`): a parallel surface, grown (``distance`` > 0) or shrunk, for distances small
    against the mesh's thickness."""
    return verts + distance * outward_vertex_normals(verts, faces)
