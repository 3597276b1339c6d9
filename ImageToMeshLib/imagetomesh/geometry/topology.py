"""Mesh connectivity: icospheres, unique edges, sparse ``edge_index`` graphs, 1->4 subdivision.

Conventions (as everywhere in the library):

- ``verts``: ``(N, 3)`` floating tensor; ``faces``: ``(F, 3)`` int64 tensor, counter-clockwise
  seen from outside, so ``cross(v1 - v0, v2 - v0)`` points outward.
- ``edges``: ``(E, 2)`` int64, each undirected edge once with ``edges[:, 0] < edges[:, 1]``,
  sorted lexicographically.
- ``edge_index``: ``(2, 2E)`` int64, every undirected edge in both directions (PyTorch Geometric
  style, row 0 = source, row 1 = target). Graphs are never dense ``N x N`` matrices.

All functions work on the device of their inputs; nothing here moves data to the CPU except
small Python integers (sizes).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = [
    "icosahedron",
    "icosphere",
    "edges_from_faces",
    "faces_to_edges_map",
    "edge_index_from_faces",
    "edge_index_from_edges",
    "vertex_degrees",
    "face_adjacency",
    "subdivide",
]


def _check_faces(faces: torch.Tensor) -> None:
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype.is_floating_point or faces.dtype == torch.bool:
        raise ValueError(f"faces must be an integer tensor, got {faces.dtype}")


def _check_verts(verts: torch.Tensor) -> None:
    if verts.dim() != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (N, 3), got {tuple(verts.shape)}")


def icosahedron(dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The regular icosahedron inscribed in the unit sphere.

    Vertices are the cyclic permutations of ``(0, +-1, +-phi)`` (``phi`` the golden ratio),
    scaled to unit length. The 20 faces are the triangles of mutually adjacent vertices
    (pairwise distance equal to the edge length 2 before scaling), wound so that
    ``cross(v1 - v0, v2 - v0)`` points away from the origin.

    Returns:
        verts: ``(12, 3)`` on the unit sphere; faces: ``(20, 3)`` int64, outward CCW.
    """
    phi = (1.0 + math.sqrt(5.0)) / 2.0
    base = []
    for s1 in (-1.0, 1.0):
        for s2 in (-phi, phi):
            base.append((0.0, s1, s2))
    # Cyclic permutations (x, y, z) -> (y, z, x) -> (z, x, y) of (0, +-1, +-phi).
    pts = [p for p in base] + [(p[2], p[0], p[1]) for p in base] + [(p[1], p[2], p[0]) for p in base]
    v = torch.tensor(pts, dtype=torch.float64)
    # Adjacent vertices are exactly 2 apart; every triangle of mutual neighbours is a face.
    d = torch.cdist(v, v)
    adjacent = (d - 2.0).abs() < 1e-9
    faces = []
    for i in range(12):
        for j in range(i + 1, 12):
            if not adjacent[i, j]:
                continue
            for k in range(j + 1, 12):
                if adjacent[i, k] and adjacent[j, k]:
                    n = torch.linalg.cross(v[j] - v[i], v[k] - v[i])
                    centroid = (v[i] + v[j] + v[k]) / 3.0
                    faces.append((i, j, k) if float(n @ centroid) > 0 else (i, k, j))
    assert len(faces) == 20
    v = v / v.norm(dim=1, keepdim=True)
    return v.to(dtype=dtype, device=device), torch.tensor(faces, dtype=torch.int64, device=device)


def icosphere(
    level: int, radius: float = 1.0, dtype: torch.dtype = torch.float32, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A geodesic sphere: the icosahedron subdivided ``level`` times (1 -> 4 midpoint split),
    new vertices pushed onto the sphere after each step.

    Counts: ``N = 10 * 4**level + 2`` (12, 42, 162, 642, 2562, ...), ``F = 20 * 4**level``.

    Args:
        level: number of subdivisions, ``>= 0``.
        radius: sphere radius (centred at the origin).

    Returns:
        verts: ``(N, 3)`` of ``dtype`` (float32 by default), ``|v| = radius``;
        faces: ``(F, 3)`` int64, counter-clockwise seen from outside.
    """
    if int(level) != level or level < 0:
        raise ValueError(f"icosphere level must be a non-negative integer, got {level}")
    if not radius > 0:
        raise ValueError(f"icosphere radius must be positive, got {radius}")
    verts, faces = icosahedron(dtype=torch.float64, device=device)
    for _ in range(int(level)):
        verts, faces, _, _ = subdivide(verts, faces)
        verts = verts / verts.norm(dim=1, keepdim=True)
    return (verts * radius).to(dtype), faces


def faces_to_edges_map(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique undirected edges and, for every face side, the id of its edge.

    Side ``k`` of face ``f`` is ``(faces[f, k], faces[f, (k + 1) % 3])``.

    Args:
        faces: ``(F, 3)`` integer tensor.

    Returns:
        edges: ``(E, 2)`` int64, ``edges[:, 0] < edges[:, 1]``, lexicographically sorted;
        face_edges: ``(F, 3)`` int64 with ``sorted(side k of face f) == edges[face_edges[f, k]]``.
    """
    _check_faces(faces)
    faces = faces.long()
    if faces.shape[0] == 0:
        empty = torch.zeros((0, 2), dtype=torch.int64, device=faces.device)
        return empty, torch.zeros((0, 3), dtype=torch.int64, device=faces.device)
    sides = torch.stack([faces, faces.roll(-1, dims=1)], dim=2)  # (F, 3, 2): (v_k, v_{k+1})
    lo = sides.min(dim=2).values.reshape(-1)
    hi = sides.max(dim=2).values.reshape(-1)
    n = int(faces.max()) + 1
    keys, inverse = torch.unique(lo * n + hi, return_inverse=True)  # sorted keys = lexicographic
    edges = torch.stack([keys // n, keys % n], dim=1)
    return edges, inverse.reshape(-1, 3)


def edges_from_faces(faces: torch.Tensor) -> torch.Tensor:
    """``(E, 2)`` unique undirected edges of a triangle mesh, ``i < j``, lexicographically sorted."""
    return faces_to_edges_map(faces)[0]


def edge_index_from_edges(edges: torch.Tensor) -> torch.Tensor:
    """``(E, 2)`` undirected edges -> ``(2, 2E)`` directed ``edge_index`` (``i->j`` then ``j->i``)."""
    if edges.dim() != 2 or edges.shape[1] != 2:
        raise ValueError(f"edges must have shape (E, 2), got {tuple(edges.shape)}")
    edges = edges.long()
    return torch.cat([edges.t(), edges.flip(1).t()], dim=1).contiguous()


def edge_index_from_faces(faces: torch.Tensor) -> torch.Tensor:
    """``(2, 2E)`` int64 ``edge_index`` holding every mesh edge once in each direction."""
    return edge_index_from_edges(edges_from_faces(faces))


def vertex_degrees(edge_index: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """``(N,)`` int64 number of neighbours of every vertex: ``deg_i = #{e : edge_index[0, e] == i}``.

    With a symmetric ``edge_index`` (as from :func:`edge_index_from_faces`) this is the vertex
    valence; isolated vertices get 0.
    """
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    return torch.bincount(edge_index[0].long(), minlength=int(num_vertices))


def face_adjacency(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of faces that share an edge, found by sorting face sides by edge id (no dense matrix).

    Only manifold interior edges count, i.e. edges used by exactly two faces; boundary edges
    (one face) and non-manifold edges (three or more) are left out.

    Returns:
        pairs: ``(K, 2)`` int64 face ids ``(f, g)``, ``f`` before ``g`` in the sorted side order;
        shared: ``(K,)`` int64 id (into :func:`edges_from_faces`) of the edge they share.
    """
    edges, face_edges = faces_to_edges_map(faces)
    flat = face_edges.reshape(-1)
    order = torch.argsort(flat, stable=True)  # sides grouped by edge id
    face_of_side = order // 3
    counts = torch.bincount(flat, minlength=edges.shape[0])
    # Start of each edge's run in the sorted side list.
    starts = torch.cumsum(counts, 0) - counts
    interior = torch.nonzero(counts == 2, as_tuple=False).reshape(-1)
    first = face_of_side[starts[interior]]
    second = face_of_side[starts[interior] + 1]
    return torch.stack([first, second], dim=1), interior


def subdivide(
    verts: torch.Tensor, faces: torch.Tensor, features: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """Edge-midpoint (1 -> 4) subdivision.

    Every unique edge ``(i, j)`` (in :func:`edges_from_faces` order) gets a new vertex
    ``m = (v_i + v_j) / 2`` appended after the ``N`` old ones, with features
    ``(x_i + x_j) / 2``. A face ``(a, b, c)`` with side midpoints ``m_ab, m_bc, m_ca`` becomes
    ``(a, m_ab, m_ca), (m_ab, b, m_bc), (m_ca, m_bc, c), (m_ab, m_bc, m_ca)`` -- all with the
    winding of the parent, so outward faces stay outward. Old vertices are not moved (no
    smoothing; project onto a sphere yourself for icospheres). Differentiable in ``verts`` and
    ``features``.

    Args:
        verts: ``(N, 3)``; faces: ``(F, 3)`` int64; features: optional ``(N, C)`` (or ``(N,)``).

    Returns:
        new_verts ``(N + E, 3)``, new_faces ``(4F, 3)`` int64, new_features ``(N + E, C)`` or
        ``None``, parent_edges ``(E, 2)`` int64: vertex ``N + e`` is the midpoint of
        ``parent_edges[e]``.
    """
    _check_verts(verts)
    _check_faces(faces)
    faces = faces.long().to(verts.device)
    n = verts.shape[0]
    edges, face_edges = faces_to_edges_map(faces)
    mid = face_edges + n  # (F, 3): midpoint of sides (0-1, 1-2, 2-0)
    a, b, c = faces.unbind(1)
    m_ab, m_bc, m_ca = mid.unbind(1)
    new_faces = torch.cat(
        [
            torch.stack([a, m_ab, m_ca], 1),
            torch.stack([m_ab, b, m_bc], 1),
            torch.stack([m_ca, m_bc, c], 1),
            torch.stack([m_ab, m_bc, m_ca], 1),
        ],
        dim=0,
    )
    new_verts = torch.cat([verts, 0.5 * (verts[edges[:, 0]] + verts[edges[:, 1]])], dim=0)
    new_features = None
    if features is not None:
        if features.shape[0] != n:
            raise ValueError(f"features must have {n} rows (one per vertex), got {features.shape[0]}")
        new_features = torch.cat([features, 0.5 * (features[edges[:, 0]] + features[edges[:, 1]])], dim=0)
    return new_verts, new_faces, new_features, edges
