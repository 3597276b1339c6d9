"""Segmentation and surface metrics, all in LPS millimetres.

Voxel overlap: :func:`dice`, :func:`iou` on masks; :func:`mesh_dice_iou` rasterises a mesh on a
labelmap's grid (voxel centres inside the surface) and compares.

Surface distances: each surface is sampled with ``n_points`` area-uniform random points
(fixed ``seed``), and the *exact* Euclidean distance from every sample to the other surface
(closest point on any triangle, not on a point cloud) is measured by
:func:`point_to_mesh_distance` (VTK cell locator). From the two distance sets ``d_pr`` (pred samples -> ref
surface) and ``d_rp`` (ref samples -> pred surface):

- ``chamfer_mm`` = ``(mean(d_pr) + mean(d_rp)) / 2`` — symmetric mean of the two mean
  (not squared) distances, in mm;
- ``hd95_mm`` = ``max(p95(d_pr), p95(d_rp))`` — symmetric 95th-percentile Hausdorff distance;
- ``fscore@t`` = harmonic mean of precision ``mean(d_pr <= t)`` and recall ``mean(d_rp <= t)``;
- ``accuracy_p90_mm`` = ``p90(d_pr)`` — NUDF's "accuracy" (how far the prediction strays);
- ``completion@2mm`` = ``mean(d_rp <= 2)`` — NUDF's "completion" (how much of the reference
  is covered).

Mesh quality: :func:`mean_triangle_quality` (1 for equilateral triangles, 0 for slivers) and
:func:`self_intersection_percent`.

:func:`evaluate_mesh` computes everything against a labelmap; its reference surface is the
marching-cubes surface of the label without smoothing, ``labelmap_to_mesh(label, smoothing=0)``.
"""

from __future__ import annotations

import numpy as np
from vtkmodules.vtkCommonCore import reference
from vtkmodules.vtkCommonDataModel import vtkStaticCellLocator

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.geometry.isosurface import labelmap_to_mesh
from imagetomesh.geometry.quality import count_self_intersecting_faces, is_watertight
from imagetomesh.geometry.raster import rasterize_mesh
from imagetomesh.geometry.vtk_convert import mesh_to_polydata

__all__ = [
    "dice",
    "iou",
    "mesh_dice_iou",
    "sample_surface",
    "point_to_mesh_distance",
    "surface_distances",
    "distance_metrics",
    "chamfer_mm",
    "hd95",
    "fscore",
    "mesh_accuracy",
    "mesh_completion",
    "mean_triangle_quality",
    "self_intersection_percent",
    "evaluate_mesh",
]


# --- voxel overlap -----------------------------------------------------------------------
def _masks(pred_mask, ref_mask) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_mask.array if isinstance(pred_mask, Volume) else pred_mask) != 0
    ref = np.asarray(ref_mask.array if isinstance(ref_mask, Volume) else ref_mask) != 0
    if pred.shape != ref.shape:
        raise InputError(
            f"masks have different shapes {pred.shape} and {ref.shape}; resample the prediction onto the reference grid"
        )
    return pred, ref


def dice(pred_mask, ref_mask) -> float:
    """Dice ``2 |P & R| / (|P| + |R|)`` of two masks (nonzero = inside); 1.0 when both are empty."""
    pred, ref = _masks(pred_mask, ref_mask)
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total


def iou(pred_mask, ref_mask) -> float:
    """Intersection over union (Jaccard) of two masks; 1.0 when both are empty."""
    pred, ref = _masks(pred_mask, ref_mask)
    union = int(np.logical_or(pred, ref).sum())
    return 1.0 if union == 0 else int(np.logical_and(pred, ref).sum()) / union


def mesh_dice_iou(mesh: Mesh, label: Volume) -> tuple[float, float]:
    """``(dice, iou)`` of a closed mesh (LPS mm) rasterised on ``label``'s grid vs its nonzero voxels."""
    pred = rasterize_mesh(mesh, label)
    return dice(pred, label.array), iou(pred, label.array)


# --- surface sampling and exact distances --------------------------------------------------
def sample_surface(mesh: Mesh, n_points: int, seed: int = 0) -> np.ndarray:
    """``(n_points, 3)`` float64 points uniformly distributed over the surface area."""
    mesh.require_triangles()
    v = mesh.vertices.astype(np.float64)
    a, b, c = v[mesh.faces[:, 0]], v[mesh.faces[:, 1]], v[mesh.faces[:, 2]]
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not area.sum() > 0:
        raise InputError("the mesh has zero surface area; give a surface with non-degenerate triangles")
    rng = np.random.default_rng(seed)
    face = rng.choice(area.size, size=int(n_points), p=area / area.sum())
    u, w = rng.random(int(n_points)), rng.random(int(n_points))
    fold = u + w > 1.0
    u[fold], w[fold] = 1.0 - u[fold], 1.0 - w[fold]
    return a[face] + u[:, None] * (b[face] - a[face]) + w[:, None] * (c[face] - a[face])


def point_to_mesh_distance(points: np.ndarray, mesh: Mesh) -> np.ndarray:
    """Exact Euclidean distance from ``(P, 3)`` points to the surface of ``mesh``: ``(P,)`` float64.

    Closest point on any triangle, found with a ``vtkStaticCellLocator`` (exact: VTK bins the
    triangles and prunes bins by their distance bound). One locator query per point; about
    0.1-0.3 s for 20 000 points near a surface of 100 000 triangles.
    """
    mesh.require_triangles()
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    locator = vtkStaticCellLocator()
    locator.SetDataSet(mesh_to_polydata(mesh))
    locator.BuildLocator()
    closest = [0.0, 0.0, 0.0]
    cell_id, sub_id, dist2 = reference(0), reference(0), reference(0.0)
    result = np.empty(points.shape[0])
    find = locator.FindClosestPoint
    for n, point in enumerate(points.tolist()):
        find(point, closest, cell_id, sub_id, dist2)
        result[n] = dist2.get()
    return np.sqrt(result)


def surface_distances(pred: Mesh, ref: Mesh, n_points: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(d_pred_to_ref, d_ref_to_pred)``, each ``(n_points,)`` mm.

    ``n_points`` area-uniform samples on each surface, exact distance to the other surface.
    """
    pred.require_triangles("predicted mesh")
    ref.require_triangles("reference mesh")
    d_pr = point_to_mesh_distance(sample_surface(pred, n_points, seed), ref)
    d_rp = point_to_mesh_distance(sample_surface(ref, n_points, seed + 1), pred)
    return d_pr, d_rp


def _fscore(d_pr: np.ndarray, d_rp: np.ndarray, threshold_mm: float) -> float:
    precision = float(np.mean(d_pr <= threshold_mm))
    recall = float(np.mean(d_rp <= threshold_mm))
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


def distance_metrics(d_pr: np.ndarray, d_rp: np.ndarray, threshold_mm: float = 1.0, completion_mm: float = 2.0) -> dict:
    """Every distance metric of the module docstring from the two distance sets."""
    return {
        "chamfer_mm": float((np.mean(d_pr) + np.mean(d_rp)) / 2.0),
        "hd95_mm": float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))),
        f"fscore@{threshold_mm:g}mm": _fscore(d_pr, d_rp, threshold_mm),
        "accuracy_p90_mm": float(np.percentile(d_pr, 90)),
        f"completion@{completion_mm:g}mm": float(np.mean(d_rp <= completion_mm)),
    }


def chamfer_mm(pred: Mesh, ref: Mesh, n_points: int = 20000, seed: int = 0) -> float:
    """Symmetric Chamfer distance in mm: ``(mean(d_pr) + mean(d_rp)) / 2`` (not squared)."""
    d_pr, d_rp = surface_distances(pred, ref, n_points, seed)
    return float((np.mean(d_pr) + np.mean(d_rp)) / 2.0)


def hd95(pred: Mesh, ref: Mesh, n_points: int = 20000, seed: int = 0) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm: ``max(p95(d_pr), p95(d_rp))``."""
    d_pr, d_rp = surface_distances(pred, ref, n_points, seed)
    return float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))


def fscore(pred: Mesh, ref: Mesh, threshold_mm: float = 1.0, n_points: int = 20000, seed: int = 0) -> float:
    """F-score at ``threshold_mm``: harmonic mean of precision (pred samples within the threshold
    of ref) and recall (ref samples within the threshold of pred)."""
    d_pr, d_rp = surface_distances(pred, ref, n_points, seed)
    return _fscore(d_pr, d_rp, threshold_mm)


def mesh_accuracy(pred: Mesh, ref: Mesh, percentile: float = 90.0, n_points: int = 20000, seed: int = 0) -> float:
    """NUDF accuracy: the ``percentile`` (90) of pred -> ref distances, mm."""
    d_pr = point_to_mesh_distance(sample_surface(pred, n_points, seed), ref.require_triangles("reference mesh"))
    return float(np.percentile(d_pr, percentile))


def mesh_completion(pred: Mesh, ref: Mesh, threshold_mm: float = 2.0, n_points: int = 20000, seed: int = 0) -> float:
    """NUDF completion: fraction of ref samples within ``threshold_mm`` of pred."""
    d_rp = point_to_mesh_distance(sample_surface(ref, n_points, seed + 1), pred.require_triangles("predicted mesh"))
    return float(np.mean(d_rp <= threshold_mm))


# --- mesh quality ------------------------------------------------------------------------
def mean_triangle_quality(mesh: Mesh) -> float:
    """Mean of ``4 sqrt(3) A / (a^2 + b^2 + c^2)`` over triangles: 1 equilateral, 0 degenerate."""
    mesh.require_triangles()
    v = mesh.vertices.astype(np.float64)
    a, b, c = v[mesh.faces[:, 0]], v[mesh.faces[:, 1]], v[mesh.faces[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    squares = ((b - a) ** 2).sum(1) + ((c - b) ** 2).sum(1) + ((a - c) ** 2).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        quality = np.where(squares > 0, 4.0 * np.sqrt(3.0) * area / squares, 0.0)
    return float(quality.mean())


def self_intersection_percent(mesh: Mesh) -> float:
    """Percentage of faces that intersect another, non-adjacent face."""
    mesh.require_triangles()
    return 100.0 * count_self_intersecting_faces(mesh) / mesh.num_faces


# --- everything at once ------------------------------------------------------------------
def evaluate_mesh(mesh: Mesh, label: Volume, threshold_mm: float = 1.0, n_points: int = 20000, seed: int = 0) -> dict:
    """All metrics of ``mesh`` (LPS mm) against the nonzero voxels of ``label``.

    The reference surface for the distance metrics is the marching-cubes surface of the label
    without smoothing (``labelmap_to_mesh(label, smoothing=0)``); Dice and IoU rasterise
    ``mesh`` on the label's grid. Keys: ``dice, iou, chamfer_mm, hd95_mm, fscore@{t}mm,
    accuracy_p90_mm, completion@2mm, triangle_quality, self_intersection_pct, watertight,
    vertices, faces``.
    """
    mesh.require_triangles()
    reference = labelmap_to_mesh(label, smoothing=0.0)
    d, j = mesh_dice_iou(mesh, label)
    d_pr, d_rp = surface_distances(mesh, reference, n_points, seed)
    result = {"dice": d, "iou": j}
    result.update(distance_metrics(d_pr, d_rp, threshold_mm))
    result.update(
        {
            "triangle_quality": mean_triangle_quality(mesh),
            "self_intersection_pct": self_intersection_percent(mesh),
            "watertight": is_watertight(mesh),
            "vertices": mesh.num_vertices,
            "faces": mesh.num_faces,
        }
    )
    return result
