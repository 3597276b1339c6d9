"""Final touches of a fitted mesh: outward faces, optional isotropic remeshing, untangling.

Remeshing is pymeshlab's ``meshing_isotropic_explicit_remeshing`` (Botsch & Kobbelt, 2004:
split long edges, collapse short ones, flip edges towards valence 6, tangential smoothing,
reprojection onto the input surface), with the fitted mesh's mean edge length as target.
The result is checked: it must stay a closed 2-manifold, else the fitted mesh is kept
(with a warning).

A fitted surface can fold through itself (a deep invagination, a thin part pinched). Before a
fit is returned (after remeshing, when asked for), :func:`untangle` smooths the neighbourhoods
of faces that cross another face until none do (at most ``UNTANGLE_ROUNDS`` rounds; a warning
says when some remain). The connectivity never changes there, so the surface stays closed.
"""
from __future__ import annotations

import warnings

import numpy as np

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.quality import is_watertight, orient_outward, repair_mesh

REMESH_ITERATIONS = 10
UNTANGLE_ROUNDS = 30


def mean_edge_length(mesh: Mesh) -> float:
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return float(np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1).mean())


def isotropic_remesh(mesh: Mesh, target_length: float | None = None, iterations: int = REMESH_ITERATIONS) -> Mesh:
    """Botsch-Kobbelt isotropic remeshing (pymeshlab) to ``target_length`` mm (default: mean edge length)."""
    import pymeshlab

    target = float(target_length or mean_edge_length(mesh))
    meshset = pymeshlab.MeshSet()
    meshset.add_mesh(pymeshlab.Mesh(vertex_matrix=mesh.vertices.astype(np.float64),
                                    face_matrix=mesh.faces.astype(np.int32)))
    meshset.meshing_isotropic_explicit_remeshing(iterations=int(iterations),
                                                 targetlen=pymeshlab.PureValue(target))
    current = meshset.current_mesh()
    return Mesh(current.vertex_matrix(), current.face_matrix())


def self_intersecting_faces(mesh: Mesh) -> np.ndarray:
    """``(F,)`` bool: faces crossing a face they share no vertex with (pymeshlab)."""
    import pymeshlab

    meshset = pymeshlab.MeshSet()
    meshset.add_mesh(pymeshlab.Mesh(vertex_matrix=mesh.vertices.astype(np.float64),
                                    face_matrix=mesh.faces.astype(np.int32)))
    meshset.compute_selection_by_self_intersections_per_face()
    return np.asarray(meshset.current_mesh().face_selection_array(), dtype=bool)


def untangle(mesh: Mesh, rounds: int = UNTANGLE_ROUNDS, smoothing_steps: int = 3, rings: int = 1) -> Mesh:
    """Smooth away self-intersections locally, keeping the connectivity (so the mesh stays closed).

    Each round finds the faces that cross another face, grows their vertices by ``rings``
    neighbourhoods (one more every 5 rounds) and moves only those vertices ``smoothing_steps``
    times halfway to the mean of their neighbours (uniform Laplacian smoothing, which retracts a
    fold). Folds, where a surface passes through itself, are pulled out; the rest of the surface
    does not move.
    """
    faces = mesh.faces
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    n = mesh.num_vertices
    from scipy import sparse

    adjacency = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0
    degree = np.asarray(adjacency.sum(1)).ravel()
    verts = mesh.vertices.astype(np.float64)
    for number in range(rounds):
        crossing = self_intersecting_faces(Mesh(verts, faces))
        if not crossing.any():
            break
        region = np.zeros(n, dtype=bool)
        region[faces[crossing].ravel()] = True
        for _ in range(rings + number // 5):
            region |= (adjacency @ region.astype(np.float64)) > 0
        for _ in range(smoothing_steps):
            mean = (adjacency @ verts) / degree[:, None]
            verts[region] += 0.5 * (mean[region] - verts[region])
    return Mesh(verts, faces)


def finish_mesh(mesh: Mesh, remesh: bool = False) -> Mesh:
    """Outward faces; remeshed when asked (if the remeshed surface stays closed); then untangled.

    A warning says how many faces still cross another face after :func:`untangle`.
    """
    if not is_watertight(mesh):  # never expected for a deformed icosphere; be safe
        mesh = repair_mesh(mesh)
    mesh = orient_outward(mesh)
    if remesh:
        remeshed = isotropic_remesh(mesh, mean_edge_length(mesh))
        if is_watertight(remeshed):
            mesh = orient_outward(remeshed)
        else:
            warnings.warn("isotropic remeshing did not give a closed surface; the fitted mesh is returned unremeshed",
                          stacklevel=3)
    mesh = orient_outward(untangle(mesh))
    remaining = int(self_intersecting_faces(mesh).sum())
    if remaining:
        hint = "" if remesh else "; --remesh usually removes them"
        warnings.warn(f"{remaining} faces of the fitted surface still cross another face{hint}", stacklevel=3)
    return mesh
