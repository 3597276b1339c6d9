"""Final touches of a fitted mesh: outward faces, optional isotropic remeshing, untangling.

Remeshing is pymeshlab's ``meshing_isotropic_explicit_remeshing`` (Botsch & Kobbelt, 2004:
split long edges, collapse short ones, flip edges towards valence 6, tangential smoothing,
reprojection onto the input surface), with the fitted mesh's mean edge length as target.
The result is checked: it must stay a closed 2-manifold, else the fitted mesh is kept
(with a warning).

A fitted surface can fold through itself (a deep invagination, a thin part pinched). Before a
fit is returned (after remeshing, when asked for) it is untangled
(:func:`imagetomesh.geometry.untangle.untangle`; a warning says when crossing faces remain).
"""

from __future__ import annotations

import warnings

import numpy as np

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.meshlab_calls import one_at_a_time
from imagetomesh.geometry.quality import count_self_intersecting_faces, is_watertight, orient_outward, repair_mesh
from imagetomesh.geometry.untangle import untangle

REMESH_ITERATIONS = 10


def mean_edge_length(mesh: Mesh) -> float:
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return float(np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1).mean())


@one_at_a_time
def isotropic_remesh(mesh: Mesh, target_length: float | None = None, iterations: int = REMESH_ITERATIONS) -> Mesh:
    """Botsch-Kobbelt isotropic remeshing (pymeshlab) to ``target_length`` mm (default: mean edge length)."""
    import pymeshlab

    target = float(target_length or mean_edge_length(mesh))
    meshset = pymeshlab.MeshSet()
    meshset.add_mesh(
        pymeshlab.Mesh(vertex_matrix=mesh.vertices.astype(np.float64), face_matrix=mesh.faces.astype(np.int32))
    )
    meshset.meshing_isotropic_explicit_remeshing(iterations=int(iterations), targetlen=pymeshlab.PureValue(target))
    current = meshset.current_mesh()
    return Mesh(current.vertex_matrix(), current.face_matrix())


def finish_fitted_mesh(mesh: Mesh, remesh: bool = False) -> Mesh:
    """A DALS fit's output: outward faces; remeshed when asked (if the remeshed surface stays
    closed); then untangled. (Predicted meshes get :func:`imagetomesh.voxel_meshing.finish_mesh`.)

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
            warnings.warn(
                "isotropic remeshing did not give a closed surface; the fitted mesh is returned unremeshed",
                stacklevel=3,
            )
    mesh = orient_outward(untangle(mesh))
    remaining = count_self_intersecting_faces(mesh)
    if remaining:
        hint = "" if remesh else "; --remesh usually removes them"
        warnings.warn(f"{remaining} faces of the fitted surface still cross another face{hint}", stacklevel=3)
    return mesh
