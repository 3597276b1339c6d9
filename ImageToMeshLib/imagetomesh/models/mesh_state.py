"""A mesh being deformed by a graph decoder, with what unpooling needs to carry along."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import ConvexHull

from imagetomesh.geometry.topology import edge_index_from_faces, icosphere, subdivide


@dataclass
class DecoderMesh:
    """One mesh inside a decoder.

    Attributes:
        verts: ``(N, 3)`` positions in model grid coordinates (differentiable).
        faces: ``(F, 3)`` long, outward counter-clockwise.
        sphere: ``(N, 3)`` each vertex's position on the unit template sphere (no gradient);
            adaptive unpooling re-triangulates from it.
        features: ``(N, C)`` per-vertex hidden features, or None.
        parent_edges: ``(M, 2)`` parents of the last ``M`` vertices added by unpooling, or None.
        start: ``(N, 3)`` the positions before the stage's deformation (Pixel2Mesh's Laplacian
            loss compares the two), or None.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    sphere: torch.Tensor
    features: torch.Tensor | None = None
    parent_edges: torch.Tensor | None = None
    start: torch.Tensor | None = None

    @property
    def edge_index(self) -> torch.Tensor:
        return edge_index_from_faces(self.faces)

    @classmethod
    def template(cls, level: int, radius_grid: torch.Tensor, device=None) -> DecoderMesh:
        """An icosphere of ``level`` scaled per axis by ``radius_grid`` ``(3,)``."""
        sphere, faces = icosphere(level)
        sphere, faces = sphere.to(device), faces.to(device)
        return cls(sphere * radius_grid.to(device), faces, sphere)

    def subdivided(self) -> DecoderMesh:
        """Edge-midpoint subdivision; new vertices inherit the mean of their parents' features."""
        carried = torch.cat([self.sphere] + ([self.features] if self.features is not None else []), dim=1)
        verts, faces, carried, parents = subdivide(self.verts, self.faces, carried)
        sphere = torch.nn.functional.normalize(carried[:, :3], dim=1)
        features = carried[:, 3:] if self.features is not None else None
        return DecoderMesh(verts, faces, sphere, features, parents)

    def adaptively_pruned(self, threshold: float, scale: torch.Tensor) -> DecoderMesh:
        """Drop new vertices lying within ``threshold`` of their parent edge; re-triangulate.

        Distances are measured after multiplying grid coordinates by ``scale`` ``(3,)``.
        Connectivity comes from the convex hull of the kept vertices' sphere positions,
        each face oriented outward there; positions stay differentiable.
        """
        if self.parent_edges is None or len(self.parent_edges) == 0:
            return self
        n_new = len(self.parent_edges)
        n_old = len(self.verts) - n_new
        with torch.no_grad():
            p = self.verts[n_old:] * scale
            a = self.verts[self.parent_edges[:, 0]] * scale
            b = self.verts[self.parent_edges[:, 1]] * scale
            ab = b - a
            t = ((p - a) * ab).sum(-1) / ab.pow(2).sum(-1).clamp(min=1e-12)
            closest = a + t.clamp(0, 1)[:, None] * ab
            keep_new = (p - closest).norm(dim=-1) >= threshold
        keep = torch.cat([torch.ones(n_old, dtype=torch.bool, device=keep_new.device), keep_new])
        if bool(keep.all()):
            return DecoderMesh(self.verts, self.faces, self.sphere, self.features, None)
        sphere = self.sphere[keep]
        faces = sphere_hull_faces(sphere)
        features = self.features[keep] if self.features is not None else None
        return DecoderMesh(self.verts[keep], faces, sphere, features, None)


def sphere_hull_faces(sphere: torch.Tensor) -> torch.Tensor:
    """Triangles of the convex hull of ``(N, 3)`` unit-sphere points, outward CCW; ``(F, 3)`` long."""
    points = sphere.detach().cpu().double().numpy()
    simplices = ConvexHull(points).simplices.astype(np.int64)
    a, b, c = (points[simplices[:, i]] for i in range(3))
    outward = np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) > 0
    simplices[~outward] = simplices[~outward][:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(simplices)).to(sphere.device)
