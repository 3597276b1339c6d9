"""Geometry on tensors: connectivity, normals, Laplacians, sampling, distances, mesh losses.

Plain functions on ``torch`` tensors (``verts (N, 3)`` float, ``faces (F, 3)`` int64,
``edge_index (2, E)`` int64), one concept per module, differentiable where a loss needs it.
"""
from imagetomesh.geometry.distances import (
    chamfer_distance,
    closest_point_on_triangle,
    knn_sqdist,
    point_to_triangle_distance,
)
from imagetomesh.geometry.laplacian import (
    combinatorial_laplacian,
    laplacian_coordinates,
    sym_norm_laplacian,
    uniform_laplacian,
)
from imagetomesh.geometry.mesh_losses import (
    edge_length_loss,
    laplacian_smoothing_loss,
    mean_triangle_quality,
    normal_consistency_loss,
    triangle_qualities,
    triangle_quality_regulariser,
)
from imagetomesh.geometry.normals import face_areas, face_normals, vertex_normals
from imagetomesh.geometry.sampling import sample_points_on_mesh
from imagetomesh.geometry.topology import (
    edge_index_from_edges,
    edge_index_from_faces,
    edges_from_faces,
    face_adjacency,
    faces_to_edges_map,
    icosahedron,
    icosphere,
    subdivide,
    vertex_degrees,
)

__all__ = [
    # topology
    "icosahedron",
    "icosphere",
    "edges_from_faces",
    "faces_to_edges_map",
    "edge_index_from_faces",
    "edge_index_from_edges",
    "vertex_degrees",
    "face_adjacency",
    "subdivide",
    # normals
    "face_normals",
    "face_areas",
    "vertex_normals",
    # laplacian
    "uniform_laplacian",
    "sym_norm_laplacian",
    "combinatorial_laplacian",
    "laplacian_coordinates",
    # sampling
    "sample_points_on_mesh",
    # distances
    "knn_sqdist",
    "chamfer_distance",
    "closest_point_on_triangle",
    "point_to_triangle_distance",
    # mesh losses
    "edge_length_loss",
    "normal_consistency_loss",
    "laplacian_smoothing_loss",
    "triangle_qualities",
    "mean_triangle_quality",
    "triangle_quality_regulariser",
]
