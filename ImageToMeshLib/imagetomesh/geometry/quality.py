"""Mesh validity: watertightness, manifoldness, orientation, self-intersections, repair.

Definitions used throughout the library:

- An undirected edge is *manifold* when exactly two faces use it; it is a *boundary* edge when
  one face uses it and *non-manifold* when three or more do. It is *consistently oriented* when
  its two faces traverse it in opposite directions.
- A vertex is *non-manifold* when the faces around it form more than one fan (e.g. two cones
  touching at their tips).
- A mesh is **watertight** when it has faces, every edge is manifold and consistently oriented
  (a closed, orientable surface).
- A mesh is **outward** when every connected component's faces point away from the enclosed
  solid: every closed component has positive signed volume, except components nested inside
  others (the inner wall of a hollow solid must face into the cavity, so its own signed volume
  is negative; in general the sign alternates with the nesting depth, found with the
  generalised winding number).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.meshlab_calls import one_at_a_time

__all__ = [
    "MeshCheck",
    "check_mesh",
    "count_self_intersecting_faces",
    "self_intersecting_faces",
    "repair_mesh",
    "orient_outward",
    "is_watertight",
    "is_closed_manifold",
    "winding_numbers",
    "face_components",
]


@dataclass(frozen=True)
class MeshCheck:
    """Result of :func:`check_mesh`.

    Attributes:
        watertight: closed, edge-manifold and consistently oriented.
        manifold: no non-manifold edges and no non-manifold vertices.
        boundary_edges: edges used by a single face.
        non_manifold_edges: edges used by three or more faces.
        non_manifold_vertices: vertices whose faces form more than one fan.
        inconsistent_edges: manifold edges whose two faces traverse them the same way.
        components: connected components (faces sharing vertices).
        self_intersecting_faces: faces that cross a non-adjacent face; ``-1`` when not computed.
        num_faces: number of triangles.
        outward: every component faces away from the solid (see the module docstring).
    """

    watertight: bool
    manifold: bool
    boundary_edges: int
    non_manifold_edges: int
    non_manifold_vertices: int
    inconsistent_edges: int
    components: int
    self_intersecting_faces: int
    num_faces: int
    outward: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line, e.g. ``watertight, manifold, outward; 1 component, 960 faces, 0 self-intersecting``."""
        flags = [
            "watertight" if self.watertight else "NOT watertight",
            "manifold" if self.manifold else "NOT manifold",
            "outward" if self.outward else "NOT outward",
        ]
        parts = [f"{self.components} component{'s' if self.components != 1 else ''}", f"{self.num_faces} faces"]
        if self.self_intersecting_faces >= 0:
            parts.append(f"{self.self_intersecting_faces} self-intersecting")
        problems = [
            f"{n} {what}"
            for n, what in (
                (self.boundary_edges, "boundary edges"),
                (self.non_manifold_edges, "non-manifold edges"),
                (self.non_manifold_vertices, "non-manifold vertices"),
                (self.inconsistent_edges, "inconsistently oriented edges"),
            )
            if n
        ]
        return ", ".join(flags) + "; " + ", ".join(parts + problems)


# --- edges -------------------------------------------------------------------------------
def _edge_stats(faces: np.ndarray, num_vertices: int) -> tuple[int, int, int]:
    """(boundary, non-manifold, inconsistently oriented) undirected edge counts."""
    if faces.shape[0] == 0:
        return 0, 0, 0
    directed = np.stack([faces, np.roll(faces, -1, axis=1)], axis=-1).reshape(-1, 2)
    lo = directed.min(1)
    hi = directed.max(1)
    n = np.int64(max(num_vertices, 1))
    key = lo * n + hi
    forward = (directed[:, 0] == lo).astype(np.int64)  # traversed from low to high index
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    counts = np.diff(np.r_[starts, key_sorted.size])
    n_forward = np.add.reduceat(forward[order], starts)
    boundary = int(np.sum(counts == 1))
    non_manifold = int(np.sum(counts > 2))
    inconsistent = int(np.sum((counts == 2) & (n_forward != 1)))
    return boundary, non_manifold, inconsistent


def _non_manifold_vertex_count(faces: np.ndarray, num_vertices: int) -> int:
    """Vertices whose incident faces split into more than one edge-connected fan."""
    n_faces = faces.shape[0]
    if n_faces == 0:
        return 0
    corner_vertex = faces.reshape(-1)  # corner c = 3 f + position
    nxt = np.roll(faces, -1, axis=1).reshape(-1)
    prv = np.roll(faces, 1, axis=1).reshape(-1)
    n = np.int64(max(num_vertices, 1))
    # a corner touches the two edges (v, next) and (v, prev); corners sharing such an edge
    # around the same vertex belong to the same fan. Key = (v, other end) as one integer.
    keys = np.concatenate([corner_vertex * n + nxt, corner_vertex * n + prv])
    unique_keys, key_index = np.unique(keys, return_inverse=True)
    corners = np.tile(np.arange(3 * n_faces), 2)
    n_corners = 3 * n_faces
    graph = sparse.coo_matrix(
        (np.ones(corners.size, dtype=np.int8), (corners, n_corners + key_index)),
        shape=(n_corners + unique_keys.size,) * 2,
    ).tocsr()
    _, labels = connected_components(graph, directed=False)
    fans = np.unique(corner_vertex * np.int64(n_corners + unique_keys.size) + labels[:n_corners])
    fan_vertex = fans // np.int64(n_corners + unique_keys.size)
    per_vertex = np.bincount(fan_vertex, minlength=num_vertices)
    return int(np.sum(per_vertex > 1))


def face_components(mesh: Mesh) -> tuple[int, np.ndarray]:
    """Connected components of faces (sharing a vertex): ``(count, (F,) label per face)``."""
    faces = mesh.faces
    if faces.shape[0] == 0:
        return 0, np.zeros(0, dtype=np.int64)
    n = mesh.num_vertices
    rows = faces[:, [0, 1, 2]].reshape(-1)
    cols = faces[:, [1, 2, 0]].reshape(-1)
    graph = sparse.coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    _, vertex_labels = connected_components(graph, directed=False)
    face_labels = vertex_labels[faces[:, 0]]
    _, face_labels = np.unique(face_labels, return_inverse=True)
    return int(face_labels.max()) + 1, face_labels.astype(np.int64)


# --- winding numbers and orientation -----------------------------------------------------
def winding_numbers(mesh: Mesh, points: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Generalised winding number of ``mesh`` at ``(P, 3)`` points: ``(P,)`` float64.

    Sum over faces of the signed solid angle / 4 pi (Van Oosterom and Strackee). For a closed,
    outward mesh it is 1 inside and 0 outside; for an inward mesh -1 inside. ``O(P F)``.
    """
    return _winding(mesh.vertices.astype(np.float64)[mesh.faces], points, chunk)


def _winding(tri: np.ndarray, points: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Winding numbers of the triangles ``(F, 3, 3)`` at ``(P, 3)`` points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    out = np.zeros(points.shape[0])
    step = max(1, chunk // max(1, tri.shape[0]))
    for start in range(0, points.shape[0], step):
        p = points[start : start + step]
        r = tri[None, :, :, :] - p[:, None, None, :]  # (p, F, 3, 3)
        a, b, c = r[..., 0, :], r[..., 1, :], r[..., 2, :]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        den = (
            la * lb * lc
            + np.einsum("pfi,pfi->pf", a, b) * lc
            + np.einsum("pfi,pfi->pf", b, c) * la
            + np.einsum("pfi,pfi->pf", c, a) * lb
        )
        out[start : start + step] = (2.0 * np.arctan2(det, den)).sum(1) / (4.0 * np.pi)
    return out


_MAX_NESTING_COMPONENTS = 2000


def _component_outward(mesh: Mesh, labels: np.ndarray, count: int) -> np.ndarray:
    """``(count,)`` bool: does each component face away from the solid the mesh encloses?

    A component nested inside ``depth`` other components (a cavity wall has depth 1) faces
    outward when the sign of its own enclosed volume is ``(-1) ** depth``. Nesting is tested
    with the winding number of each other component whose bounding box holds a point of this
    one, so the usual case (no nesting) costs one signed volume per component.
    """
    v = mesh.vertices.astype(np.float64)
    faces = mesh.faces
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    six_volume = np.einsum("ij,ij->i", a, np.cross(b, c))
    volume = np.bincount(labels, weights=six_volume, minlength=count)
    if count == 1:
        return volume > 0
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(count + 1))
    groups = [order[starts[k] : starts[k + 1]] for k in range(count)]
    corner_lo = np.minimum(np.minimum(a, b), c)
    corner_hi = np.maximum(np.maximum(a, b), c)
    box_lo = np.array([corner_lo[g].min(0) for g in groups])
    box_hi = np.array([corner_hi[g].max(0) for g in groups])
    result = volume > 0
    if count > _MAX_NESTING_COMPONENTS:
        return result  # too many pieces (e.g. unmerged vertices) to test nesting; sign only
    for comp, idx in enumerate(groups):
        point = a[idx[0]]
        holders = np.flatnonzero(np.all((box_lo <= point) & (point <= box_hi), axis=1))
        holders = holders[holders != comp]
        depth = 0
        for other in holders:
            depth += int(abs(_winding(v[faces[groups[other]]], point[None])[0]) > 0.5)
        result[comp] = (volume[comp] > 0) == (depth % 2 == 0)
    return result


def orient_outward(mesh: Mesh) -> Mesh:
    """The same surface with every component's faces pointing out of the enclosed solid.

    Faces are first made coherent within each component (pymeshlab) if they are not; then
    each component is flipped or kept by the winding-number test of the module docstring.
    """
    if mesh.num_faces == 0:
        return mesh
    if _edge_stats(mesh.faces, mesh.num_vertices)[2] > 0:
        mesh = _reorient_coherently(mesh)
    count, labels = face_components(mesh)
    outward = _component_outward(mesh, labels, count)
    if outward.all():
        return mesh
    flip = ~outward[labels]
    faces = mesh.faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return Mesh(mesh.vertices, faces)


# --- pymeshlab bridges -------------------------------------------------------------------
@one_at_a_time
def _to_meshset(mesh: Mesh):
    import pymeshlab

    meshset = pymeshlab.MeshSet()
    meshset.add_mesh(
        pymeshlab.Mesh(vertex_matrix=mesh.vertices.astype(np.float64), face_matrix=mesh.faces.astype(np.int32))
    )
    return meshset


def _from_meshset(meshset) -> Mesh:
    current = meshset.current_mesh()
    return Mesh(current.vertex_matrix(), current.face_matrix())


@one_at_a_time
def _reorient_coherently(mesh: Mesh) -> Mesh:
    meshset = _to_meshset(mesh)
    try:
        meshset.meshing_re_orient_faces_coherently()
    except Exception:  # pymeshlab refuses non-manifold input; leave it to the caller to repair
        return mesh
    result = _from_meshset(meshset)
    return result if result.num_vertices == mesh.num_vertices else mesh


@one_at_a_time
def self_intersecting_faces(mesh: Mesh) -> np.ndarray:
    """``(F,)`` bool: the faces that intersect a face they share no vertex or edge with (pymeshlab)."""
    if mesh.num_faces == 0:
        return np.zeros(0, dtype=bool)
    meshset = _to_meshset(mesh)
    meshset.compute_selection_by_self_intersections_per_face()
    return np.asarray(meshset.current_mesh().face_selection_array(), dtype=bool)


def count_self_intersecting_faces(mesh: Mesh) -> int:
    """Number of :func:`self_intersecting_faces`."""
    return int(self_intersecting_faces(mesh).sum())


# --- public checks -----------------------------------------------------------------------
def is_watertight(mesh: Mesh) -> bool:
    """Closed, edge-manifold and consistently oriented (see the module docstring)."""
    if mesh.num_faces == 0:
        return False
    return _edge_stats(mesh.faces, mesh.num_vertices) == (0, 0, 0)


def is_closed_manifold(mesh: Mesh) -> bool:
    """Watertight (:func:`is_watertight`) and without non-manifold vertices: what ``check.watertight and
    check.manifold`` of :func:`check_mesh` says, from edge and vertex-fan statistics only (no
    components, no winding numbers)."""
    return is_watertight(mesh) and _non_manifold_vertex_count(mesh.faces, mesh.num_vertices) == 0


def check_mesh(mesh: Mesh, self_intersections: bool = True) -> MeshCheck:
    """Every validity measure of the module docstring in one :class:`MeshCheck`.

    Args:
        mesh: any triangle mesh.
        self_intersections: also count self-intersecting faces (pymeshlab; the slowest part).
            When False, ``self_intersecting_faces`` is ``-1``.
    """
    faces = mesh.faces
    boundary, non_manifold, inconsistent = _edge_stats(faces, mesh.num_vertices)
    nm_vertices = _non_manifold_vertex_count(faces, mesh.num_vertices)
    count, labels = face_components(mesh)
    if faces.shape[0] == 0 or inconsistent or non_manifold:
        outward = False
    else:
        outward = bool(_component_outward(mesh, labels, count).all())
    n_self = count_self_intersecting_faces(mesh) if self_intersections else -1
    return MeshCheck(
        watertight=bool(faces.shape[0] > 0 and boundary == 0 and non_manifold == 0 and inconsistent == 0),
        manifold=bool(non_manifold == 0 and nm_vertices == 0),
        boundary_edges=boundary,
        non_manifold_edges=non_manifold,
        non_manifold_vertices=nm_vertices,
        inconsistent_edges=inconsistent,
        components=count,
        self_intersecting_faces=n_self,
        num_faces=int(faces.shape[0]),
        outward=outward,
    )


@one_at_a_time
def repair_mesh(mesh: Mesh, max_hole_edges: int = 1000, remove_self_intersections: bool = True) -> Mesh:
    """Clean a mesh towards a watertight, manifold, outward surface (pymeshlab).

    Steps: merge duplicate vertices, drop duplicate / zero-area faces and unreferenced vertices,
    split non-manifold vertices and remove faces on non-manifold edges, optionally delete
    self-intersecting faces, close the holes this leaves (up to ``max_hole_edges`` edges each),
    re-orient faces coherently and finally point every component outward. Warns when the
    result is still not watertight (e.g. holes larger than ``max_hole_edges``).
    """
    mesh.require_triangles("mesh to repair")
    meshset = _to_meshset(mesh)

    def clean() -> None:
        meshset.meshing_remove_duplicate_vertices()
        meshset.meshing_remove_duplicate_faces()
        meshset.meshing_remove_null_faces()
        meshset.meshing_remove_unreferenced_vertices()
        for _ in range(3):
            meshset.meshing_repair_non_manifold_edges(method="Remove Faces")
            meshset.meshing_repair_non_manifold_vertices()
            meshset.meshing_remove_unreferenced_vertices()
            current = _from_meshset(meshset)
            if _edge_stats(current.faces, current.num_vertices)[1] == 0 and (
                _non_manifold_vertex_count(current.faces, current.num_vertices) == 0
            ):
                break

    def close_holes() -> None:
        try:
            meshset.meshing_close_holes(maxholesize=int(max_hole_edges))
        except Exception:  # pymeshlab raises on meshes it cannot handle; keep what we have
            pass

    clean()
    if remove_self_intersections:
        for _ in range(3):
            meshset.compute_selection_by_self_intersections_per_face()
            if meshset.current_mesh().selected_face_number() == 0:
                break
            meshset.meshing_remove_selected_faces()
            meshset.meshing_remove_unreferenced_vertices()
            clean()
            close_holes()
            clean()
    close_holes()
    clean()
    try:
        meshset.meshing_re_orient_faces_coherently()
    except Exception:
        pass
    result = orient_outward(_from_meshset(meshset))
    if not is_watertight(result):
        summary = check_mesh(result, self_intersections=False).summary()
        warnings.warn(f"repair_mesh could not make the mesh watertight: {summary}", stacklevel=2)
    return result
