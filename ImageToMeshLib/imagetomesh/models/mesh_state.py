"""A mesh being deformed by a graph decoder, with what unpooling needs to carry along."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.spatial import ConvexHull

from imagetomesh.core.transforms import GridTransform
from imagetomesh.errors import InputError
from imagetomesh.geometry.normals import offset_along_normals
from imagetomesh.geometry.topology import edge_index_from_faces, icosphere, subdivide
from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size
from imagetomesh.scan import class_mask, most_probable_class
from imagetomesh.voxel_meshing import finish_mesh, grid_mask_mesh, voxel_organ_mesh


def arc_sphere(sphere: torch.Tensor, angle_deg: float, thickness_y: float, thickness_z: float) -> torch.Tensor:
    """Unit-sphere points ``(N, 3)`` swept along a circular arc: a horseshoe (the mandible's shape) in the box
    ``[-1, 1]^3``, to be scaled by an organ's semi-axes.

    A point ``u`` goes to the arc's centre line at angle ``theta = angle * u_x`` (from ``-angle`` to
    ``+angle``; the arc's middle at ``+y``, its ends bending towards ``-y``), moved ``thickness_y * u_y`` along
    the arc's normal in the x-y plane and ``thickness_z * u_z`` along z. The centre line is scaled to fill
    the box less the thickness, so the ends (``theta = +-angle``) touch ``x = +-1`` (for ``angle <= 90``
    degrees) and the middle ``y = +1``. Closed and free of self-intersections for ``thickness_y`` below the
    arc's radius there (as the uses here are)."""
    angle = torch.deg2rad(torch.tensor(float(angle_deg), dtype=sphere.dtype, device=sphere.device))
    theta = angle * sphere[:, 0]
    inner = 1.0 - thickness_y
    centre_x = torch.sin(theta) / torch.sin(angle).clamp(min=1e-6) * inner
    centre_y = ((torch.cos(theta) - torch.cos(angle)) / (1 - torch.cos(angle)) * 2 - 1) * inner
    offset = thickness_y * sphere[:, 1]
    return torch.stack(
        [centre_x + offset * torch.sin(theta), centre_y + offset * torch.cos(theta), thickness_z * sphere[:, 2]], 1
    )


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

    def grown(self, voxels: float, grid_shape) -> DecoderMesh:
        """This closed mesh with every vertex moved ``voxels`` grid voxels along its outward vertex normal (negative:
        inward), taken in the isotropic frame of the ``(D, H, W)`` grid ``grid_shape``
        (:func:`~imagetomesh.nn.grid.isotropic_scale`), where a voxel is one length along every axis. What a model
        config's ``surface_offsets`` does to its meshes at inference."""
        scale = isotropic_scale(grid_shape).to(self.verts.device, self.verts.dtype)
        distance = voxels * isotropic_voxel_size(grid_shape)
        return replace(self, verts=offset_along_normals(self.verts * scale, self.faces, distance) / scale)

    @classmethod
    def template(
        cls, level: int, radius_grid: torch.Tensor, device=None, arc: list[float] | None = None
    ) -> DecoderMesh:
        """An icosphere of ``level`` (bent along an ``arc``: :func:`arc_sphere`) scaled per axis by
        ``radius_grid`` ``(3,)``."""
        sphere, faces = icosphere(level)
        sphere, faces = sphere.to(device), faces.to(device)
        shape = sphere if arc is None else arc_sphere(sphere, *arc)
        return cls(shape * radius_grid.to(device), faces, sphere)

    @classmethod
    def surface_of(cls, probabilities: torch.Tensor, index: int, one_object: bool = False) -> DecoderMesh | None:
        """The surface of class ``index`` in ``probabilities (C, D, H, W)`` (one image's softmax on a model grid)
        in grid coordinates, meshed as ``segment`` meshes the U-Net's object: a several-organ U-Net's organ by
        :func:`~imagetomesh.voxel_meshing.voxel_organ_mesh` of the class's most-probable voxels, stray pieces
        dropped (:func:`~imagetomesh.scan.class_mask`); with ``one_object`` as U-Net + MC meshes its labelmap
        (:func:`~imagetomesh.voxel_meshing.grid_mask_mesh` of the argmax, outward faces). ``sphere`` is each
        vertex's direction from the centroid. None where the class has no voxel or too few to mesh. No gradient."""
        labels = most_probable_class(probabilities)
        mask = (labels == index) if one_object else class_mask(labels, index)
        if mask is None:
            return None
        try:
            if one_object:
                mesh = finish_mesh(grid_mask_mesh(mask), untangle_folds=False)
            else:
                identity = GridTransform(np.eye(4), tuple(probabilities.shape[1:]))  # its "LPS" is the grid itself
                mesh = voxel_organ_mesh(probabilities[index], mask, identity)
        except InputError:
            return None
        verts = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=probabilities.device)
        faces = torch.as_tensor(mesh.faces, dtype=torch.long, device=probabilities.device)
        return cls(verts, faces, torch.nn.functional.normalize(verts - verts.mean(0), dim=1))

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
