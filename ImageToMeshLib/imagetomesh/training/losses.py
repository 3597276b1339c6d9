"""Training losses of the mesh decoders, shared by Voxel2Mesh and Pixel2Mesh-3D."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imagetomesh.geometry.distances import chamfer_distance, knn_sqdist
from imagetomesh.geometry.mesh_losses import edge_length_loss, laplacian_smoothing_loss, normal_consistency_loss
from imagetomesh.geometry.sampling import sample_points_on_mesh
from imagetomesh.geometry.topology import edges_from_faces
from imagetomesh.models.mesh_state import DecoderMesh


@dataclass
class MeshLossWeights:
    """Weights of the loss terms. ``normal`` weighs normal consistency (Voxel2Mesh) or, with
    ``pixel2mesh_normal``, Pixel2Mesh's edge-orthogonality to target normals."""

    chamfer: float = 1.0
    ce: float = 1.0
    normal: float = 0.1
    laplacian: float = 0.1
    edge: float = 1.0
    pixel2mesh_normal: bool = False
    sample_points: int = 3000


def pixel2mesh_normal_loss(verts, edges, target_points, target_normals) -> torch.Tensor:
    """Pixel2Mesh's normal loss: mean over edges (p, k) of ``((p - k) . n_q)^2`` with ``n_q`` the
    normal of the target point nearest to ``p``."""
    _, nearest = knn_sqdist(verts, target_points)
    n = target_normals[nearest]
    p, k = verts[edges[:, 0]], verts[edges[:, 1]]
    e = F.normalize(p - k, dim=1)
    return ((e * n[edges[:, 0]]).sum(-1) ** 2).mean()


def mesh_decoder_loss(
    meshes: list[DecoderMesh],
    target_points,
    target_normals,
    scale: torch.Tensor,
    weights: MeshLossWeights,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Sum over stages of Chamfer + regularisers for one case, in the isotropic grid frame.

    ``target_points`` / ``target_normals`` ``(P, 3)`` in grid coordinates; ``scale`` ``(3,)``
    takes grid to the isotropic frame. Returns the terms (unweighted) and ``total`` (weighted).
    """
    terms = {"chamfer": 0.0, "normal": 0.0, "laplacian": 0.0, "edge": 0.0}
    target = target_points * scale
    for mesh in meshes:
        verts = mesh.verts * scale
        samples = sample_points_on_mesh(verts, mesh.faces, weights.sample_points, generator=generator)
        terms["chamfer"] = terms["chamfer"] + chamfer_distance(samples, target)
        edges = edges_from_faces(mesh.faces)
        if weights.pixel2mesh_normal:
            terms["normal"] = terms["normal"] + pixel2mesh_normal_loss(verts, edges, target, target_normals)
        else:
            terms["normal"] = terms["normal"] + normal_consistency_loss(verts, mesh.faces)
        terms["laplacian"] = terms["laplacian"] + laplacian_smoothing_loss(verts, mesh.edge_index)
        terms["edge"] = terms["edge"] + edge_length_loss(verts, edges)
    terms["total"] = (
        weights.chamfer * terms["chamfer"]
        + weights.normal * terms["normal"]
        + weights.laplacian * terms["laplacian"]
        + weights.edge * terms["edge"]
    )
    return terms


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice of the foreground; ``logits`` ``(B, 2, D, H, W)``, ``label`` ``(B, D, H, W)``."""
    ce = F.cross_entropy(logits, label.long())
    prob = logits.softmax(1)[:, 1]
    target = label.float()
    inter = (prob * target).sum((1, 2, 3))
    dice = (2 * inter + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return ce + (1 - dice).mean()
