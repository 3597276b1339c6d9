"""Geometry: connectivity, normals, Laplacians, sampling, distances and mesh losses on
``torch`` tensors (``verts (N, 3)`` float, ``faces (F, 3)`` int64, ``edge_index (2, E)`` int64),
and rasterisation, isosurfaces, plane cuts and mesh checks on :class:`~imagetomesh.core.Mesh`.
One concept per module.

The names below are loaded on first use, so importing a numpy/VTK-only module of this
package (``vtk_convert``, ``isosurface``, ``quality``, ``raster``) does not import torch.
"""

import importlib

_HOME = {
    "distances": (
        "chamfer_distance",
        "closest_point_on_triangle",
        "knn_sqdist",
        "near_surface_distance",
        "point_to_triangle_distance",
    ),
    "laplacian": (
        "combinatorial_laplacian",
        "laplacian_coordinates",
        "sym_norm_laplacian",
        "taubin_smooth",
        "uniform_laplacian",
    ),
    "mesh_losses": (
        "edge_length_loss",
        "laplacian_change_loss",
        "laplacian_smoothing_loss",
        "mean_triangle_quality",
        "normal_consistency_loss",
        "triangle_qualities",
        "triangle_quality_regulariser",
    ),
    "normals": ("face_areas", "face_normals", "offset_along_normals", "outward_vertex_normals", "vertex_normals"),
    "sampling": ("sample_points_on_mesh",),
    "topology": (
        "edge_index_from_edges",
        "edge_index_from_faces",
        "edges_from_faces",
        "face_adjacency",
        "faces_to_edges_map",
        "icosahedron",
        "icosphere",
        "subdivide",
        "vertex_degrees",
    ),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"imagetomesh.geometry.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'imagetomesh.geometry' has no attribute {name!r}")


#: every name above, each listed once, in ``_HOME`` (its module's own ``__all__`` holds the same names: a test checks it)
__all__ = sorted(_MODULE_OF)
