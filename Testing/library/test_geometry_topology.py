"""Connectivity: icospheres, edges, edge_index, degrees, face adjacency, 1->4 subdivision.

Fast ops are compared with Python-loop references on small meshes.
"""

import itertools

import numpy as np
import pytest
import torch

from imagetomesh.geometry import (
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

EXPECTED_VERTS = {0: 12, 1: 42, 2: 162, 3: 642, 4: 2562}


# ---------------------------------------------------------------- references (slow, obvious)


def ref_edges(faces):
    out = set()
    for f in faces.tolist():
        for k in range(3):
            i, j = f[k], f[(k + 1) % 3]
            out.add((min(i, j), max(i, j)))
    return sorted(out)


def ref_edge_face_counts(faces):
    counts = {}
    for f in faces.tolist():
        for k in range(3):
            e = tuple(sorted((f[k], f[(k + 1) % 3])))
            counts[e] = counts.get(e, 0) + 1
    return counts


def ref_face_pairs(faces):
    """Face pairs sharing an edge used by exactly two faces (brute force over all pairs)."""
    counts = ref_edge_face_counts(faces)
    pairs = set()
    fl = faces.tolist()
    for a, b in itertools.combinations(range(len(fl)), 2):
        shared = set(fl[a]) & set(fl[b])
        if len(shared) == 2 and counts[tuple(sorted(shared))] == 2:
            pairs.add((a, b))
    return pairs


def outward(verts, faces):
    v = verts.double()
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    n = torch.linalg.cross(b - a, c - a, dim=1)
    return (n * (a + b + c) / 3).sum(1)


def random_faces(num_verts=9, num_faces=12, seed=0):
    rng = np.random.default_rng(seed)
    faces = [rng.choice(num_verts, size=3, replace=False) for _ in range(num_faces)]
    return torch.tensor(np.array(faces), dtype=torch.int64)


# ---------------------------------------------------------------- icosphere


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_icosphere_counts_euler_manifold_outward(level):
    verts, faces = icosphere(level)
    assert verts.dtype == torch.float32 and faces.dtype == torch.int64
    assert verts.shape == (EXPECTED_VERTS[level], 3)
    assert faces.shape == (20 * 4**level, 3)
    edges = edges_from_faces(faces)
    assert verts.shape[0] - edges.shape[0] + faces.shape[0] == 2  # Euler characteristic
    _, face_edges = faces_to_edges_map(faces)
    assert torch.all(torch.bincount(face_edges.reshape(-1)) == 2)  # closed 2-manifold
    assert torch.all(outward(verts, faces) > 0)
    torch.testing.assert_close(verts.norm(dim=1), torch.ones(verts.shape[0]), atol=1e-6, rtol=0)
    # Every vertex is used; no degenerate face.
    assert torch.unique(faces).numel() == verts.shape[0]
    assert torch.all((faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2]))


def test_icosphere_radius_dtype_and_bad_level():
    verts, faces = icosphere(2, radius=3.5, dtype=torch.float64)
    assert verts.dtype == torch.float64
    torch.testing.assert_close(verts.norm(dim=1), torch.full((162,), 3.5, dtype=torch.float64))
    assert torch.all(outward(verts, faces) > 0)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError):
            icosphere(bad)
    with pytest.raises(ValueError):
        icosphere(1, radius=0.0)


def test_icosahedron_is_regular():
    verts, faces = icosahedron(dtype=torch.float64)
    edges = edges_from_faces(faces)
    assert edges.shape == (30, 2)
    lengths = (verts[edges[:, 0]] - verts[edges[:, 1]]).norm(dim=1)
    torch.testing.assert_close(lengths, torch.full_like(lengths, lengths[0].item()))
    assert torch.all(vertex_degrees(edge_index_from_faces(faces), 12) == 5)


def test_icosphere_valences():
    _, faces = icosphere(3)
    deg = vertex_degrees(edge_index_from_faces(faces), 642)
    assert int((deg == 5).sum()) == 12 and int((deg == 6).sum()) == 630


# ---------------------------------------------------------------- edges and edge_index


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edges_from_faces_matches_reference(seed):
    faces = random_faces(seed=seed)
    edges = edges_from_faces(faces)
    assert edges.dtype == torch.int64
    assert [tuple(e) for e in edges.tolist()] == ref_edges(faces)  # unique, i < j, sorted


def test_faces_to_edges_map_consistent():
    faces = random_faces(seed=3)
    edges, face_edges = faces_to_edges_map(faces)
    for f in range(faces.shape[0]):
        for k in range(3):
            side = sorted((int(faces[f, k]), int(faces[f, (k + 1) % 3])))
            assert edges[face_edges[f, k]].tolist() == side


def test_edges_of_empty_faces():
    faces = torch.zeros((0, 3), dtype=torch.int64)
    assert edges_from_faces(faces).shape == (0, 2)
    assert edge_index_from_faces(faces).shape == (2, 0)
    with pytest.raises(ValueError):
        edges_from_faces(torch.zeros((4, 2), dtype=torch.int64))


def test_edge_index_both_directions():
    _, faces = icosphere(1)
    ei = edge_index_from_faces(faces)
    edges = edges_from_faces(faces)
    assert ei.shape == (2, 2 * edges.shape[0]) and ei.dtype == torch.int64
    directed = set(map(tuple, ei.t().tolist()))
    assert len(directed) == ei.shape[1]
    expected = {(i, j) for i, j in ref_edges(faces)} | {(j, i) for i, j in ref_edges(faces)}
    assert directed == expected
    assert torch.equal(edge_index_from_edges(edges), ei)


def test_vertex_degrees_matches_loop():
    faces = random_faces(num_verts=10, seed=4)  # vertex ids may be unused -> degree 0
    ei = edge_index_from_faces(faces)
    deg = vertex_degrees(ei, 12)
    ref = [0] * 12
    for i, j in ref_edges(faces):
        ref[i] += 1
        ref[j] += 1
    assert deg.tolist() == ref


# ---------------------------------------------------------------- face adjacency


@pytest.mark.parametrize("mesh", ["random", "icosphere", "open"])
def test_face_adjacency_matches_brute_force(mesh):
    if mesh == "random":
        faces = random_faces(num_verts=6, num_faces=10, seed=5)  # includes non-manifold edges
    elif mesh == "icosphere":
        faces = icosphere(1)[1]
    else:
        faces = icosphere(1)[1][:30]
    pairs, shared = face_adjacency(faces)
    got = {tuple(sorted(p)) for p in pairs.tolist()}
    assert len(got) == pairs.shape[0]
    assert got == ref_face_pairs(faces)
    edges = edges_from_faces(faces)
    for (f, g), e in zip(pairs.tolist(), shared.tolist()):
        common = sorted(set(faces[f].tolist()) & set(faces[g].tolist()))
        assert edges[e].tolist() == common


# ---------------------------------------------------------------- subdivision


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_subdivide_icosphere_matches_next_level(level):
    verts, faces = icosphere(level)
    new_verts, new_faces, new_feat, parents = subdivide(verts, faces)
    nxt_verts, nxt_faces = icosphere(level + 1)
    assert new_feat is None
    assert new_verts.shape == nxt_verts.shape and new_faces.shape == nxt_faces.shape
    assert parents.shape == (new_verts.shape[0] - verts.shape[0], 2)
    # Still a closed manifold with Euler characteristic 2, faces outward before and after projection.
    assert new_verts.shape[0] - edges_from_faces(new_faces).shape[0] + new_faces.shape[0] == 2
    assert torch.all(outward(new_verts, new_faces) > 0)
    projected = new_verts / new_verts.norm(dim=1, keepdim=True)
    assert torch.all(outward(projected, new_faces) > 0)
    # Same connectivity as the next icosphere level (which is built this way).
    assert torch.equal(new_faces, nxt_faces)
    torch.testing.assert_close(projected, nxt_verts)


def test_subdivide_positions_features_against_loop():
    torch.manual_seed(0)
    faces = random_faces(num_verts=7, num_faces=8, seed=6)
    verts = torch.randn(7, 3)
    feats = torch.randn(7, 5)
    new_verts, new_faces, new_feats, parents = subdivide(verts, faces, feats)
    n = verts.shape[0]
    assert torch.equal(new_verts[:n], verts) and torch.equal(new_feats[:n], feats)
    assert [tuple(p) for p in parents.tolist()] == ref_edges(faces)
    for e, (i, j) in enumerate(parents.tolist()):
        torch.testing.assert_close(new_verts[n + e], (verts[i] + verts[j]) / 2)
        torch.testing.assert_close(new_feats[n + e], (feats[i] + feats[j]) / 2)
    # Reference split of each face keeps the parent's winding.
    mid = {tuple(p): n + e for e, p in enumerate(parents.tolist())}

    def m(i, j):
        return mid[(min(i, j), max(i, j))]

    expected = []
    for a, b, c in faces.tolist():
        expected.append(
            {(a, m(a, b), m(c, a)), (m(a, b), b, m(b, c)), (m(c, a), m(b, c), c), (m(a, b), m(b, c), m(c, a))}
        )
    got = new_faces.view(4, -1, 3).permute(1, 0, 2).tolist()
    for f, quads in enumerate(got):
        assert {tuple(t) for t in quads} == expected[f]


def test_subdivide_single_triangle_area_and_orientation():
    verts = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 2, 0]])
    faces = torch.tensor([[0, 1, 2]])
    v, f, _, _ = subdivide(verts, faces)
    assert v.shape == (6, 3) and f.shape == (4, 3)
    n = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)
    assert torch.all(n[:, 2] > 0)  # same side as the parent's +z normal
    torch.testing.assert_close(n.norm(dim=1).sum() / 2, torch.tensor(2.0))


def test_subdivide_is_differentiable():
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    verts = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda v, x: tuple(subdivide(v, faces, x)[i] for i in (0, 2)), (verts, feats))
    with pytest.raises(ValueError):
        subdivide(verts, faces, torch.zeros(3, 2))


def test_the_geometry_package_lists_each_module_s_names_and_loads_torch_only_when_they_are_used():
    """``imagetomesh.geometry``'s lazily loaded names are exactly its torch modules' ``__all__``, each reachable as
    an attribute, and importing a numpy/VTK-only module of the package does not import torch."""
    import importlib
    import subprocess
    import sys

    import imagetomesh.geometry as geometry

    for module, names in geometry._HOME.items():
        assert set(importlib.import_module(f"imagetomesh.geometry.{module}").__all__) == set(names), module
        assert all(
            getattr(geometry, name) is getattr(sys.modules[f"imagetomesh.geometry.{module}"], name) for name in names
        )
    assert geometry.__all__ == sorted(name for names in geometry._HOME.values() for name in names)
    check = "import sys, imagetomesh.geometry.quality, imagetomesh.geometry.raster; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout == "False\n"
