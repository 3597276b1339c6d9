"""Normals, areas and sparse Laplacians against numpy / dense references on tiny meshes."""

import numpy as np
import pytest
import torch

from imagetomesh.geometry import (
    combinatorial_laplacian,
    edge_index_from_faces,
    edges_from_faces,
    face_areas,
    face_normals,
    icosahedron,
    icosphere,
    laplacian_coordinates,
    offset_along_normals,
    outward_vertex_normals,
    sym_norm_laplacian,
    uniform_laplacian,
    vertex_normals,
)


def tetra(dtype=torch.float64):
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=dtype)
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # outward
    return verts, faces


def random_mesh(seed=0, n=8, f=10):
    rng = np.random.default_rng(seed)
    verts = torch.tensor(rng.normal(size=(n, 3)))
    faces = torch.tensor(np.array([rng.choice(n, 3, replace=False) for _ in range(f)]))
    return verts, faces


# ---------------------------------------------------------------- normals and areas


def test_face_normals_and_areas_match_loops():
    verts, faces = random_mesh()
    v = verts.numpy()
    n_ref, a_ref = [], []
    for i, j, k in faces.tolist():
        e1, e2 = v[j] - v[i], v[k] - v[i]
        cross = np.array([e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]])
        n_ref.append(cross)
        a, b, c = np.linalg.norm(v[j] - v[i]), np.linalg.norm(v[k] - v[j]), np.linalg.norm(v[i] - v[k])
        s = (a + b + c) / 2
        a_ref.append(np.sqrt(max(s * (s - a) * (s - b) * (s - c), 0.0)))  # Heron
    n_ref = np.array(n_ref)
    np.testing.assert_allclose(face_normals(verts, faces, normalize=False).numpy(), n_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        face_normals(verts, faces).numpy(), n_ref / np.linalg.norm(n_ref, axis=1, keepdims=True), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(face_areas(verts, faces).numpy(), a_ref, rtol=1e-8, atol=1e-10)


def test_tetra_normals_outward_and_degenerate_face():
    verts, faces = tetra()
    n = face_normals(verts, faces)
    centroids = verts[faces].mean(1)
    assert torch.all(((centroids - verts.mean(0)) * n).sum(1) > 0)
    torch.testing.assert_close(face_areas(verts, faces).sum(), torch.tensor(1.5 + np.sqrt(3) / 2, dtype=torch.float64))
    degenerate = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    out = face_normals(degenerate, torch.tensor([[0, 1, 2]]))
    assert torch.all(torch.isfinite(out)) and torch.all(out == 0)


def test_vertex_normals_match_loop_and_sphere():
    verts, faces = random_mesh(seed=1)
    v, fl = verts.numpy(), faces.tolist()
    acc = np.zeros_like(v)
    for i, j, k in fl:
        n = np.cross(v[j] - v[i], v[k] - v[i])  # = 2 * area * unit normal
        for idx in (i, j, k):
            acc[idx] += n
    norms = np.linalg.norm(acc, axis=1, keepdims=True)
    ref = np.where(norms > 0, acc / np.maximum(norms, 1e-300), 0.0)
    np.testing.assert_allclose(vertex_normals(verts, faces).numpy(), ref, rtol=1e-10, atol=1e-12)

    sv, sf = icosphere(3)
    vn = vertex_normals(sv, sf)
    assert vn.dtype == torch.float32
    assert torch.all((vn * sv).sum(1) > 0.999)


def test_outward_vertex_normals_point_out_of_a_sphere_wound_either_way():
    sv, sf = icosphere(2)
    sv = sv.double() * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)  # an ellipsoid: normals are not positions
    for faces in (sf, sf.flip(1)):  # as built, and wound inward
        normals = outward_vertex_normals(sv, faces)
        assert torch.all((normals * sv).sum(1) > 0)  # outward from the centre of a convex solid
        torch.testing.assert_close(normals.abs(), vertex_normals(sv, faces).abs())


def test_offset_along_normals_grows_a_regular_solid_by_the_distance_wound_either_way():
    """On an icosahedron every area-weighted vertex normal is the vertex's direction from the centre, so the
    moved vertices must lie exactly ``r + d`` from it; against a slow per-vertex sum of face normals on a bumpy
    sphere otherwise."""
    verts, faces = icosahedron()
    verts = 1.5 * verts.double()
    for wound in (faces, faces.flip(1)):
        for d in (0.25, -0.4):
            moved = offset_along_normals(verts, wound, d)
            torch.testing.assert_close(moved.norm(dim=1), torch.full((len(verts),), 1.5 + d, dtype=torch.float64))
    sv, sf = icosphere(2)
    sv = sv.double() * (
        1 + 0.1 * torch.rand(len(sv), 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    )
    slow = []
    for i in range(len(sv)):
        total = torch.zeros(3, dtype=torch.float64)
        for a, b, c in sf.tolist():
            if i in (a, b, c):
                total += torch.linalg.cross(sv[b] - sv[a], sv[c] - sv[a])  # 2 x area x outward normal
        slow.append(sv[i] + 0.3 * total / total.norm())
    torch.testing.assert_close(offset_along_normals(sv, sf, 0.3), torch.stack(slow))


def test_normals_are_differentiable():
    verts, faces = tetra()
    verts = (verts + 0.1 * torch.randn(4, 3, dtype=torch.float64)).requires_grad_()
    torch.autograd.gradcheck(
        lambda v: (face_normals(v, faces), face_areas(v, faces), vertex_normals(v, faces)), (verts,)
    )


# ---------------------------------------------------------------- Laplacians


def dense_reference(edge_index, n):
    a = np.zeros((n, n))
    for i, j in edge_index.t().tolist():
        a[i, j] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1)), 0.0)
    active = np.diag((deg > 0).astype(float))
    uniform = active - np.diag(inv) @ a
    sym = active - np.diag(inv_sqrt) @ a @ np.diag(inv_sqrt)
    comb = np.diag(deg) - a
    return uniform, sym, comb


def small_graph():
    """An icosahedron plus one isolated vertex (id 12)."""
    _, faces = icosphere(0)
    return edge_index_from_faces(faces), 13


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_laplacians_match_dense_reference(dtype):
    edge_index, n = small_graph()
    # Also a mesh with irregular valences.
    _, faces = tetra()
    for ei, nn in [(edge_index, n), (edge_index_from_faces(faces), 4)]:
        u_ref, s_ref, c_ref = dense_reference(ei, nn)
        for fn, ref in [(uniform_laplacian, u_ref), (sym_norm_laplacian, s_ref), (combinatorial_laplacian, c_ref)]:
            lap = fn(ei, nn, dtype=dtype)
            assert lap.is_sparse and lap.shape == (nn, nn) and lap.dtype == dtype
            assert lap._nnz() <= ei.shape[1] + nn  # sparse: edges + diagonal only
            np.testing.assert_allclose(lap.to_dense().double().numpy(), ref, atol=1e-6)


def test_laplacian_properties_on_irregular_mesh():
    # Icosphere level 1 has valences 5 and 6: the uniform Laplacian is not symmetric there.
    _, faces = icosphere(1)
    ei = edge_index_from_faces(faces)
    n = 42
    u = uniform_laplacian(ei, n, dtype=torch.float64).to_dense()
    s = sym_norm_laplacian(ei, n, dtype=torch.float64).to_dense()
    c = combinatorial_laplacian(ei, n, dtype=torch.float64).to_dense()
    torch.testing.assert_close(u.sum(1), torch.zeros(n, dtype=torch.float64))
    torch.testing.assert_close(c.sum(1), torch.zeros(n, dtype=torch.float64))
    assert not torch.allclose(u, u.t())
    for mat, upper in [(s, 2.0 + 1e-9), (c, None)]:
        torch.testing.assert_close(mat, mat.t())
        eig = torch.linalg.eigvalsh(mat)
        assert eig.min() > -1e-9
        if upper is not None:
            assert eig.max() <= upper
    x = torch.randn(n, dtype=torch.float64)
    edges = edges_from_faces(faces)
    torch.testing.assert_close(x @ c @ x, ((x[edges[:, 0]] - x[edges[:, 1]]) ** 2).sum())


def test_laplacian_rejects_bad_edge_index():
    with pytest.raises(ValueError):
        uniform_laplacian(torch.zeros((3, 4), dtype=torch.int64), 5)
    with pytest.raises(ValueError):
        combinatorial_laplacian(torch.tensor([[0, 7], [7, 0]]), 5)


def test_laplacian_coordinates_match_loop_and_sparse():
    edge_index, n = small_graph()
    torch.manual_seed(0)
    verts = torch.randn(n, 3, dtype=torch.float64)
    delta = laplacian_coordinates(verts, edge_index)
    nbrs = {i: [] for i in range(n)}
    for i, j in edge_index.t().tolist():
        nbrs[i].append(j)
    for i in range(n):
        ref = verts[i] - verts[nbrs[i]].mean(0) if nbrs[i] else torch.zeros(3, dtype=torch.float64)
        torch.testing.assert_close(delta[i], ref)
    lap = uniform_laplacian(edge_index, n, dtype=torch.float64)
    torch.testing.assert_close(delta, torch.sparse.mm(lap, verts))
    # Differentiable:
    v = verts.clone().requires_grad_()
    torch.autograd.gradcheck(lambda x: laplacian_coordinates(x, edge_index), (v,))
