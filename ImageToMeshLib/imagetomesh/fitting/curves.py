"""Planar curves for the DALS curve task: planes from annotations, and the differentiable cut loss.

Each annotated curve gets its best-fit plane by SVD of its centred control points (normal =
the singular vector of the smallest singular value). A curve that strays from its plane by
more than ``PLANARITY_TOLERANCE`` of its size is projected onto it with a warning. The curve
is resampled at equal arc-length steps as a closed polygon.

The loss for one plane: the mesh is cut by the plane
(:func:`~imagetomesh.geometry.plane_cut.cut_mesh_with_plane`: segments whose end points are
convex combinations of the cut triangles' vertices), points are taken at fixed positions
along every segment (so they are differentiable in the vertices), and the symmetric Chamfer
distance between them and the curve's points is measured within the plane (both sets lie in
it, so the 3D distance is the in-plane one). Only the cut's longest loop takes part: a curve
outlines the structure once per plane, so inner loops (a cavity, the renal sinus) are not
observed. A plane the mesh misses contributes the mean
squared distance from the curve's points to the nearest vertices, which pulls the mesh
towards it. The task loss is the mean over planes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from imagetomesh.errors import InputError
from imagetomesh.fitting.optimise import chamfer
from imagetomesh.geometry.distances import knn_sqdist
from imagetomesh.geometry.plane_cut import cut_mesh_with_plane

#: A curve is "planar" when no control point is farther than this fraction of its size from its plane.
PLANARITY_TOLERANCE = 1e-3
#: Two planes are "identical" when their normals agree to this (1 - |cos|) and their offsets to this fraction.
SAME_PLANE_TOLERANCE = 1e-6
#: Points per annotated curve after resampling.
CURVE_SAMPLES = 200
#: Positions along each cut segment where loss points are taken (end points are shared by neighbours).
SEGMENT_POSITIONS = (0.0, 0.5)


@dataclass(frozen=True)
class PlanarCurve:
    """A closed curve in its plane (LPS mm): ``origin (3,)``, unit ``normal (3,)``, ``points (K, 3)`` in the plane."""

    origin: np.ndarray
    normal: np.ndarray
    points: np.ndarray


def resample_closed(points: np.ndarray, count: int = CURVE_SAMPLES) -> np.ndarray:
    """``count`` points at equal arc-length steps along the closed polygon through ``points``."""
    closed = np.vstack([points, points[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] <= 0:
        return np.repeat(points[:1], count, axis=0)
    t = np.linspace(0.0, arc[-1], count, endpoint=False)
    return np.stack([np.interp(t, arc, closed[:, a]) for a in range(3)], axis=1)


def lps_points(points, what: str) -> np.ndarray:
    """``points`` as an ``(N, 3)`` float64 array of finite LPS coordinates, else :class:`InputError`
    naming ``what`` (``"points"``, ``"curve 2"``)."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}: not an array of (x, y, z) LPS points") from None
    if array.ndim != 2 or array.shape[1] != 3:
        raise InputError(f"{what}: must be an (N, 3) array of LPS points, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{what}: NaN/Inf coordinates; remove those points")
    return array


def planar_curve(points, index: int = 0) -> PlanarCurve:
    """Check one annotated curve and put it in its best-fit plane (see the module docstring)."""
    name = f"curve {index + 1}"
    points = lps_points(points, name)
    if len(points) < 3:
        raise InputError(f"{name} has {len(points)} point(s); a curve needs at least 3 points to define its plane")
    centre = points.mean(0)
    _, s, vt = np.linalg.svd(points - centre, full_matrices=False)
    size = float(s[0] / np.sqrt(len(points)))
    if size == 0 or s[1] <= 1e-9 * s[0]:
        raise InputError(
            f"{name} has all its points on one line (or one spot), so it defines no plane; "
            "draw the outline around the structure"
        )
    normal = vt[2] / np.linalg.norm(vt[2])
    offsets = (points - centre) @ normal
    extent = float(np.linalg.norm(points.max(0) - points.min(0)))
    worst = float(np.abs(offsets).max())
    if worst > PLANARITY_TOLERANCE * extent:
        warnings.warn(
            f"{name} is not planar (a point lies {worst:.2f} mm off its best-fit plane); "
            "it was projected onto that plane",
            stacklevel=3,
        )
    projected = points - offsets[:, None] * normal
    return PlanarCurve(centre, normal, resample_closed(projected))


def planar_curves(curves) -> list[PlanarCurve]:
    """Check every curve; :class:`InputError` when there are none or two lie in the same plane."""
    if curves is None or len(curves) == 0:
        raise InputError("no curves given; give at least one closed curve (Slicer .mrk.json)")
    planes = [planar_curve(c, i) for i, c in enumerate(curves)]
    scale = max(float(np.linalg.norm(np.ptp(np.vstack([p.points for p in planes]), axis=0))), 1e-9)
    for i in range(len(planes)):
        for j in range(i + 1, len(planes)):
            a, b = planes[i], planes[j]
            parallel = 1.0 - abs(float(a.normal @ b.normal)) < SAME_PLANE_TOLERANCE
            if parallel and abs(float((b.origin - a.origin) @ a.normal)) < 1e-4 * scale:
                raise InputError(
                    f"curves {i + 1} and {j + 1} lie in the same plane; give one curve per plane "
                    "(annotate each plane once)"
                )
    return planes


class CurveLoss:
    """The curve task loss in the fit frame (``(lps - centre) / scale``)."""

    def __init__(self, planes: list[PlanarCurve], centre: np.ndarray, scale: float, device="cpu") -> None:
        self.planes = []
        for plane in planes:
            origin = torch.as_tensor((plane.origin - centre) / scale, dtype=torch.float32, device=device)
            normal = torch.as_tensor(plane.normal, dtype=torch.float32, device=device)
            target = torch.as_tensor((plane.points - centre) / scale, dtype=torch.float32, device=device)
            self.planes.append((origin, normal, target))
        self.positions = torch.tensor(SEGMENT_POSITIONS, dtype=torch.float32, device=device)

    def cut_points(self, verts: torch.Tensor, faces: torch.Tensor, origin, normal) -> torch.Tensor:
        """Points on the mesh/plane cut's longest loop, ``len(SEGMENT_POSITIONS)`` per segment,
        differentiable in ``verts`` (other loops, e.g. a cavity's, are not what the curve outlines)."""
        segments, _ = cut_mesh_with_plane(verts, faces, origin, normal)
        if segments.shape[0] == 0:
            return segments.reshape(0, 3)
        detached = segments.detach().cpu().numpy()
        loops = segment_loops(detached)
        if len(loops) > 1:
            outer = max(loops, key=lambda loop: loop_length(detached, loop))
            segments = segments[torch.as_tensor(outer, device=segments.device)]
        t = self.positions.to(verts.dtype)[None, :, None]
        points = segments[:, :1] + t * (segments[:, 1:] - segments[:, :1])
        return points.reshape(-1, 3)

    def __call__(self, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        total = verts.new_zeros(())
        for origin, normal, target in self.planes:
            points = self.cut_points(verts, faces, origin, normal)
            if points.shape[0] == 0:
                total = total + knn_sqdist(target, verts)[0].mean()
            else:
                total = total + chamfer(points, target)
        return total / len(self.planes)


# --- making curves from a segmentation (demos, benchmarks, tests) -------------------------------------
def segment_loops(segments: np.ndarray, tolerance: float = 1e-6) -> list[np.ndarray]:
    """Group unordered cut segments ``(S, 2, 3)`` of a closed surface into loops.

    End points closer than ``tolerance`` times the segments' extent are the same point (a k-d
    tree pairs them, so rounding cannot split a joint). Returns, per loop, the indices of its
    segments in walking order (open chains, which a closed surface does not produce, come out
    as they are).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    segments = np.asarray(segments, dtype=np.float64)
    count = len(segments)
    if count == 0:
        return []
    ends = segments.reshape(-1, 3)
    scale = max(float(np.ptp(ends, axis=0).max()), 1e-12)
    pairs = cKDTree(ends).query_pairs(tolerance * scale, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(2 * count, 2 * count))
    _, node = connected_components(graph, directed=False)
    node = node.reshape(count, 2)
    incident: dict[int, list[int]] = {}
    for index, (a, b) in enumerate(node):
        if a != b:
            incident.setdefault(int(a), []).append(index)
            incident.setdefault(int(b), []).append(index)
    used = np.zeros(count, dtype=bool)
    used[node[:, 0] == node[:, 1]] = True  # degenerate segments
    loops = []
    for first in range(count):
        if used[first]:
            continue
        loop, used[first] = [first], True
        current = int(node[first, 1])
        while True:
            options = [k for k in incident.get(current, []) if not used[k]]
            if not options:
                break
            k = options[0]
            used[k] = True
            loop.append(k)
            current = int(node[k, 1] if node[k, 0] == current else node[k, 0])
        loops.append(np.asarray(loop))
    return loops


def loop_length(segments: np.ndarray, loop: np.ndarray) -> float:
    """Total length of a loop's segments."""
    s = np.asarray(segments)[loop]
    return float(np.linalg.norm(s[:, 1] - s[:, 0], axis=1).sum())


def chain_segments(segments: np.ndarray, tolerance: float = 1e-6) -> list[np.ndarray]:
    """Closed loops as ordered points ``(N_i, 3)`` from unordered cut segments ``(S, 2, 3)``."""
    segments = np.asarray(segments, dtype=np.float64)
    loops = []
    for loop in segment_loops(segments, tolerance):
        points = [segments[loop[0], 0], segments[loop[0], 1]]
        for k in loop[1:]:
            a, b = segments[k]
            points.append(b if np.linalg.norm(a - points[-1]) <= np.linalg.norm(b - points[-1]) else a)
        loops.append(np.asarray(points[:-1] if len(points) > 2 else points))
    return loops


def mask_outline(mask, origin, normal, point_spacing_mm: float = 4.0) -> np.ndarray:
    """Control points of a closed curve outlining ``mask`` (a :class:`Volume`) in a plane, LPS mm.

    The mask's smoothed surface (:func:`~imagetomesh.geometry.isosurface.labelmap_to_mesh`) is
    cut by the plane; the longest loop is resampled every ``point_spacing_mm`` (at least 8
    points), as a person clicking a closed curve would. :class:`InputError` if the plane misses.
    """
    from imagetomesh.geometry.isosurface import labelmap_to_mesh

    mesh = labelmap_to_mesh(mask)
    segments, _ = cut_mesh_with_plane(
        torch.from_numpy(mesh.vertices.astype(np.float64)),
        torch.from_numpy(mesh.faces),
        np.asarray(origin, np.float64),
        np.asarray(normal, np.float64),
    )
    loops = chain_segments(segments.numpy())
    if not loops:
        raise InputError("the plane does not cut the segmentation; choose a plane through the structure")

    def perimeter(loop):
        return float(np.linalg.norm(np.diff(np.vstack([loop, loop[:1]]), axis=0), axis=1).sum())

    loop = max(loops, key=perimeter)
    count = max(8, int(round(perimeter(loop) / point_spacing_mm)))
    return resample_closed(loop, count)
