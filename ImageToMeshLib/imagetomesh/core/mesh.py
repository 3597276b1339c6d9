"""`Mesh`: a triangle surface with float32 vertices and int64 faces.

Faces are counter-clockwise seen from outside, so ``cross(v1 - v0, v2 - v0)`` points out.
Coordinates are whatever space the producer says (grid, LPS mm); the library keeps meshes in
LPS mm once they leave a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imagetomesh.errors import InputError


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh.

    Attributes:
        vertices: ``(N, 3)`` float32 positions.
        faces: ``(F, 3)`` int64 vertex indices, counter-clockwise seen from outside.
    """

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        vertices = np.ascontiguousarray(np.asarray(self.vertices, dtype=np.float32).reshape(-1, 3))
        faces = np.ascontiguousarray(np.asarray(self.faces, dtype=np.int64).reshape(-1, 3))
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise ValueError(f"face indices out of range for {len(vertices)} vertices")
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def require_triangles(self, what: str = "mesh") -> Mesh:
        """Raise :class:`InputError` if the mesh has no triangles; return self otherwise."""
        if self.num_faces == 0:
            raise InputError(f"the {what} has no triangles; give a surface mesh (STL, VTP, OBJ or PLY with faces)")
        return self

    def transformed(self, affine: np.ndarray) -> Mesh:
        """Apply a ``(4, 4)`` affine; faces are flipped if it is a reflection, so they stay outward."""
        vertices = self.vertices.astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]
        faces = self.faces[:, ::-1] if np.linalg.det(affine[:3, :3]) < 0 else self.faces
        return Mesh(vertices, faces)

    def flipped(self) -> Mesh:
        """The same surface with every face's winding reversed."""
        return Mesh(self.vertices, self.faces[:, ::-1])

    def signed_volume(self) -> float:
        """Enclosed volume by the divergence theorem; positive when faces point outward."""
        v = self.vertices.astype(np.float64)
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)

    def area(self) -> float:
        """Total surface area."""
        v = self.vertices.astype(np.float64)
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2.0)

    def bounds(self) -> np.ndarray:
        """``(2, 3)`` min and max corner."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)]).astype(np.float64)

    def centroid(self) -> np.ndarray:
        """``(3,)`` mean vertex position (float64)."""
        return self.vertices.astype(np.float64).mean(0)

    def describe(self) -> str:
        lo, hi = self.bounds() if self.num_vertices else (np.zeros(3), np.zeros(3))
        return (
            f"{self.num_vertices} vertices, {self.num_faces} triangles, "
            f"bounds {np.round(lo, 2).tolist()} .. {np.round(hi, 2).tolist()}"
        )
