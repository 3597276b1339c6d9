"""Training losses of the mesh decoders, shared by Voxel2Mesh and Pixel2Mesh-3D."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imagetomesh.geometry.distances import chamfer_distance, knn_sqdist, near_surface_distance
from imagetomesh.geometry.mesh_losses import (
    edge_length_loss,
    laplacian_change_loss,
    laplacian_smoothing_loss,
    normal_consistency_loss,
)
from imagetomesh.geometry.sampling import sample_points_on_mesh
from imagetomesh.geometry.topology import edges_from_faces
from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.nn.grid import index_to_grid
from imagetomesh.nn.sdf import inside_mask
from imagetomesh.training.data import UNKNOWN


@dataclass
class MeshLossWeights:
    """Weights and form of the mesh-decoder loss (:func:`mesh_decoder_loss`).

    ``normal`` weighs normal consistency (Voxel2Mesh) or, with ``pixel2mesh_normal``, Pixel2Mesh's
    edge-orthogonality to target normals. ``sample_points`` points are drawn on each predicted mesh
    per step. ``version`` 1 is the loss of every run before issue 15 (the default, so their
    ``config.json`` resumes unchanged); 2 makes every term a length squared (see
    :func:`mesh_decoder_loss`) so each weight is a unit-free ratio to the Chamfer weight.
    ``target``: ``faces`` (voxel-face midpoints of the label, ``sample_points`` drawn per step) or
    ``dense`` (``target_points`` area-uniform samples of the label's surface smoothed with
    ``target_smoothing``, computed once per case: :func:`~imagetomesh.training.data.chamfer_target`;
    0.2 keeps the surface's IoU with the label at 0.9998 on hippocampus validation cases, the
    library's default 0.4 at 0.972). ``raster`` weighs :func:`voxel_margin_loss` (version 2 only; 0:
    off) with margin ``raster_margin`` voxels.
    """

    chamfer: float = 1.0
    ce: float = 1.0
    normal: float = 0.1
    laplacian: float = 0.1
    edge: float = 1.0
    pixel2mesh_normal: bool = False
    sample_points: int = 3000
    version: int = 1
    target: str = "faces"
    target_points: int = 6000
    target_smoothing: float = 0.2
    raster: float = 0.0
    raster_margin: float = 0.5

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"loss version must be 1 or 2, got {self.version!r}")
        if self.raster < 0 or self.raster_margin < 0:
            raise ValueError("the raster loss weight and margin must be >= 0")
        if self.raster and self.version != 2:
            raise ValueError("the raster loss is a length squared: it needs loss version 2")
        if self.target not in ("faces", "dense"):
            raise ValueError(f"loss target must be 'faces' or 'dense', got {self.target!r}")


def pixel2mesh_normal_loss(verts, edges, target_points, target_normals) -> torch.Tensor:
    """Pixel2Mesh's normal loss: mean over edges (p, k) of ``((p - k) / |p - k| . n_q)^2`` with
    ``n_q`` the normal of the target point nearest to ``p`` (unit-free)."""
    _, nearest = knn_sqdist(verts, target_points)
    n = target_normals[nearest]
    p, k = verts[edges[:, 0]], verts[edges[:, 1]]
    e = F.normalize(p - k, dim=1)
    return ((e * n[edges[:, 0]]).sum(-1) ** 2).mean()


def voxel_margin_loss(
    verts: torch.Tensor, faces: torch.Tensor, label: torch.Tensor, scale: torch.Tensor, voxel: float, margin: float
) -> torch.Tensor:
    """How far the mesh is from putting every voxel centre of the label on its side, with a margin.

    ``verts (N, 3)`` grid coordinates, ``faces (F, 3)``, ``label (D, H, W)`` bool on the model grid,
    ``scale (3,)`` grid -> isotropic frame, ``voxel`` one voxel there, ``margin`` in voxels. The mesh is
    rasterised on the label's grid as the reports measure it (voxel centres inside the closed mesh:
    :func:`~imagetomesh.nn.sdf.inside_mask`, no gradient). Each voxel centre ``p`` of the
    label's boundary band (a voxel of its 3 x 3 x 3 neighbourhood has the other value) or on the wrong side of the mesh gets the
    signed distance ``s_p = +d(p, mesh)`` on its right side, ``-d`` on its wrong one, and the loss is

        ``mean_p relu(margin h - s_p)^2``

    (a length squared, like the version-2 terms of :func:`mesh_decoder_loss`): zero when every voxel
    centre is at least ``margin`` voxels on its side; a margin of half a voxel puts the surface midway
    between the label's inside and outside centres. Unlike the Chamfer to surface samples, it weighs each
    voxel the mesh gets wrong, which is what rasterised Dice and IoU count.
    """
    label = label.bool()
    size_ijk = label.shape[::-1]
    inside = inside_mask(verts, faces, label.shape).to(label.device)
    lab = label[None, None].float()
    grown = F.max_pool3d(lab, 3, stride=1, padding=1)[0, 0] > 0
    shrunk = -F.max_pool3d(-lab, 3, stride=1, padding=1)[0, 0] > 0
    band = (grown & ~shrunk) | (inside != label)
    kji = torch.nonzero(band)
    if kji.shape[0] == 0:
        return verts.sum() * 0.0
    points = index_to_grid(kji.flip(1).to(verts.dtype), size_ijk) * scale
    dist, _ = near_surface_distance(points, verts * scale, faces)
    right = (inside == label)[band]
    signed = torch.where(right, dist, -dist)
    return (torch.relu(margin * voxel - signed) ** 2).mean()


def mesh_decoder_loss(
    meshes: list[DecoderMesh],
    target_points,
    target_normals,
    scale: torch.Tensor,
    weights: MeshLossWeights,
    generator: torch.Generator | None = None,
    voxel: float | None = None,
    label: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Sum over stages of Chamfer + regularisers for one case, in the isotropic grid frame.

    ``target_points`` / ``target_normals`` ``(P, 3)``: grid coordinates / unit normals in the
    isotropic frame; ``scale`` ``(3,)`` takes grid to the isotropic frame. Per stage, with ``S``
    ``sample_points`` area-uniform samples of the stage's mesh, ``T`` the target, ``E`` its
    edges, ``delta`` uniform Laplacian coordinates:

    - ``chamfer`` ``C = mean_{s in S} min_t |s - t|^2 + mean_{t in T} min_s |s - t|^2``
    - ``edge`` ``mean_E |v_i - v_j|^2``
    - ``normal``: ``mean over interior edges (1 - cos(n_f, n_g))`` (normal consistency), or with
      ``pixel2mesh_normal`` Pixel2Mesh's ``mean_E (e_ij . n_nearest target(i))^2``
    - ``laplacian``: version 1 ``mean_i |delta_i|^2``; version 2 ``mean_i |delta_i|`` (Voxel2Mesh,
      PyTorch3D) or, with ``pixel2mesh_normal``, ``mean_i |delta_i(v) - delta_i(v_start)|^2``
      across the deformation block (Pixel2Mesh; ``mesh.start``).

    - ``raster`` (when ``weights.raster`` > 0): :func:`voxel_margin_loss` against ``label`` ``(D, H, W)``
      bool, the case's label on the model grid

    ``total = chamfer C + normal N + laplacian L + edge E (+ raster R)`` (the weights of ``weights``).

    Version 1 takes the terms as they are: ``C`` and ``E`` scale with the square of the
    coordinate unit, ``N`` not at all, so the balance depends on the grid (1 voxel = 0.036 units
    on the hippocampus grid makes ``N`` ~770 times stronger relative to ``C`` than in voxel units).

    Version 2 makes every term a length squared with the reference length ``h = voxel`` (one
    voxel of the isotropic frame, :func:`~imagetomesh.nn.grid.isotropic_voxel_size`; required):
    ``N <- h^2 N`` and, for Voxel2Mesh, ``L <- h L``. Scaling every coordinate (and ``h``) by
    ``s`` then scales every term, and the total, by ``s^2``: ``weights.k / weights.chamfer`` is a
    unit-free ratio, the same in millimetres, voxels or grid units, and equal to the weight one
    would use with every length measured in voxels. Every term is a mean (over points, edges or
    vertices), so the ratios do not depend on the number of samples either; weights tuned
    against a Chamfer *summed* over ``P`` points (Pixel2Mesh's) correspond to ratios ``P`` times
    larger than here.

    Returns the terms (unweighted, as above) and ``total`` (weighted).
    """
    v2 = weights.version == 2
    if v2 and voxel is None:
        raise ValueError("loss version 2 needs the voxel length of the isotropic frame")
    if weights.raster and label is None:
        raise ValueError("the raster loss needs the case's label on the model grid")
    terms = {"chamfer": 0.0, "normal": 0.0, "laplacian": 0.0, "edge": 0.0}
    if weights.raster:
        terms["raster"] = 0.0
    target = target_points * scale
    for mesh in meshes:
        verts = mesh.verts * scale
        samples = sample_points_on_mesh(verts, mesh.faces, weights.sample_points, generator=generator)
        terms["chamfer"] = terms["chamfer"] + chamfer_distance(samples, target)
        edges = edges_from_faces(mesh.faces)
        if weights.pixel2mesh_normal:
            normal = pixel2mesh_normal_loss(verts, edges, target, target_normals)
        else:
            normal = normal_consistency_loss(verts, mesh.faces)
        if not v2:
            laplacian = laplacian_smoothing_loss(verts, mesh.edge_index, squared=True)
        elif weights.pixel2mesh_normal:
            if mesh.start is None:
                raise ValueError("Pixel2Mesh's Laplacian term needs each block's start positions (mesh.start)")
            laplacian = laplacian_change_loss(verts, mesh.start * scale, mesh.edge_index)
        else:
            laplacian = voxel * laplacian_smoothing_loss(verts, mesh.edge_index)
        terms["normal"] = terms["normal"] + (voxel**2 * normal if v2 else normal)
        terms["laplacian"] = terms["laplacian"] + laplacian
        terms["edge"] = terms["edge"] + edge_length_loss(verts, edges)
        if weights.raster:
            terms["raster"] = terms["raster"] + voxel_margin_loss(
                mesh.verts, mesh.faces, label, scale, voxel, weights.raster_margin
            )
    terms["total"] = (
        weights.chamfer * terms["chamfer"]
        + weights.normal * terms["normal"]
        + weights.laplacian * terms["laplacian"]
        + weights.edge * terms["edge"]
        + weights.raster * terms.get("raster", 0.0)
    )
    return terms


def partial_label_loss(
    logits: torch.Tensor, label: torch.Tensor, present: torch.Tensor, balanced: bool = False
) -> torch.Tensor:
    """Cross-entropy plus soft Dice for several organs when not every organ was contoured in every case.

    ``logits (B, C, D, H, W)``, ``label (B, D, H, W)`` class indices, ``present (B, C)`` bool (the
    classes contoured in each case; class 0, background, always). A voxel labelled 0 in a case is
    "background or an organ not contoured there", so its cross-entropy is ``-log`` of the summed
    probability of background and the missing classes (the marginal likelihood), never of background
    alone. The soft Dice (smoothed by 1) is averaged over the organs that have voxels in each case's
    label (contoured and inside the crop): an organ contoured in the case but outside a training crop
    is taught by the cross-entropy alone, since its Dice there, ``1 / (1 + sum p)``, is minimised only
    by driving the organ's probability to zero over the whole crop — which saturated the softmax of
    the small, rarely contoured organs (oesophagus, larynx: probability ~1e-7 on their own voxels)
    before the network could tell them apart.
    A voxel labelled :data:`~imagetomesh.training.data.UNKNOWN` ``| 2**(k - 1) | ...`` lies beyond the
    contoured extent of the organs ``k`` of its bits (:func:`~imagetomesh.training.data.mark_uncontoured_slices`):
    its cross-entropy also counts those organs' probability, and their soft Dice leaves it out.
    ``balanced``: the cross-entropy is the mean over the classes in the case's label of each class's
    mean over its voxels (background-or-missing counting as one class), so an organ of a few hundred
    voxels weighs as much as the background: with the plain voxel mean a small organ's probability can
    be pushed to zero everywhere before the network tells it apart, and its softmax then saturates.
    Returns the mean over cases of ``CE + (1 - Dice)``.
    Computed for the whole batch at once, with no value read back to the host (on a GPU the next step's kernels
    queue while this one runs; the per-case loop it replaced read ~25 values per case).
    """
    n_classes = logits.shape[1]
    log_probs = F.log_softmax(logits.float(), dim=1)  # (B, C, D, H, W)
    lab = label.long()
    unknown = lab >= UNKNOWN  # (B, D, H, W)
    organ_lab = torch.where(unknown, torch.zeros_like(lab), lab)
    # beyond[:, k]: voxels where organ k was not contoured (its bit of an UNKNOWN code; organs 1-7)
    beyond = torch.zeros_like(log_probs, dtype=torch.bool)
    for k in range(1, min(n_classes, 8)):
        beyond[:, k] = unknown & _bit(lab, k)
    base = ~present.bool()
    base[:, 0] = True  # background, or an organ not contoured in the case
    allowed = base[:, :, None, None, None] | beyond
    unlabelled = torch.logsumexp(log_probs.masked_fill(~allowed, float("-inf")), dim=1)
    picked = log_probs.gather(1, organ_lab[:, None])[:, 0]
    nll = -torch.where(organ_lab == 0, unlabelled, picked)  # (B, D, H, W)
    target = torch.zeros_like(log_probs).scatter_(1, organ_lab[:, None], 1.0)  # (B, C, D, H, W) one-hot
    voxels = target.sum(dim=(2, 3, 4))  # (B, C)
    in_label = voxels > 0
    if balanced:
        class_nll = (target * nll[:, None]).sum(dim=(2, 3, 4)) / voxels.clamp(min=1)
        ce = (class_nll * in_label).sum(1) / in_label.sum(1)
    else:
        ce = nll.mean(dim=(1, 2, 3))
    probs = log_probs.exp().masked_fill(beyond, 0.0)  # an organ's Dice leaves out where it was not contoured
    dice = (2 * (probs * target).sum(dim=(2, 3, 4)) + 1) / (probs.sum(dim=(2, 3, 4)) + voxels + 1)
    scored = present.bool() & in_label
    scored[:, 0] = False
    n_scored = scored.sum(1)
    dice_loss = torch.where(n_scored > 0, 1 - (dice * scored).sum(1) / n_scored.clamp(min=1), 0.0)
    return (ce + dice_loss).mean()


def _bit(label: torch.Tensor, k: int) -> torch.Tensor:
    """Bool: the label value holds class ``k``'s bit (``2**(k - 1)``; meaningful on unknown voxels)."""
    return ((label >> (k - 1)) & 1).bool()


def _background(present: torch.Tensor) -> torch.Tensor:
    """``(C,)`` bool: class 0 only."""
    mask = torch.zeros_like(present)
    mask[0] = True
    return mask


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice of the foreground; ``logits`` ``(B, 2, D, H, W)``, ``label`` ``(B, D, H, W)``."""
    ce = F.cross_entropy(logits, label.long())
    prob = logits.softmax(1)[:, 1]
    target = label.float()
    inter = (prob * target).sum((1, 2, 3))
    dice = (2 * inter + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return ce + (1 - dice).mean()
