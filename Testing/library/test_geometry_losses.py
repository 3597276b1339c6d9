"""Mesh regularisers and triangle quality against Python-loop references; gradient checks."""

import math

import numpy as np
import pytest
import torch

from imagetomesh.geometry import (
    edge_index_from_faces,
    edge_length_loss,
    edges_from_faces,
    icosphere,
    laplacian_smoothing_loss,
    mean_triangle_quality,
    normal_consistency_loss,
    subdivide,
    triangle_qualities,
    triangle_quality_regulariser,
)


def bumpy_sphere(level=1, seed=0, amount=0.1):
    verts, faces = icosphere(level, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return verts + amount * torch.randn(verts.shape, dtype=torch.float64, generator=g), faces


def flat_grid(n=4):
    """An n x n grid of squares in the z = 0 plane, split into CCW triangles."""
    xs, ys = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    verts = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1)
    vid = lambda i, j: i * (n + 1) + j  # noqa: E731
    faces = []
    for i in range(n):
        for j in range(n):
            faces += [[vid(i, j), vid(i + 1, j), vid(i + 1, j + 1)], [vid(i, j), vid(i + 1, j + 1), vid(i, j + 1)]]
    return torch.tensor(verts, dtype=torch.float64), torch.tensor(faces)


# ---------------------------------------------------------------- edge length


def test_edge_length_loss_matches_loop():
    verts, faces = bumpy_sphere()
    edges = edges_from_faces(faces)
    lengths = [float(torch.linalg.norm(verts[i] - verts[j])) for i, j in edges.tolist()]
    ref_sq = np.mean(np.square(lengths))
    ref_var = np.mean((np.array(lengths) - np.mean(lengths)) ** 2)
    np.testing.assert_allclose(edge_length_loss(verts, edges).item(), ref_sq, rtol=1e-12)
    np.testing.assert_allclose(edge_length_loss(verts, edges, kind="variance").item(), ref_var, rtol=1e-10)
    # A symmetric edge_index (2, 2E) gives the same mean.
    np.testing.assert_allclose(edge_length_loss(verts, edge_index_from_faces(faces)).item(), ref_sq, rtol=1e-12)
    with pytest.raises(ValueError):
        edge_length_loss(verts, edges, kind="cubic")


def test_edge_length_variance_zero_on_regular_icosahedron():
    verts, faces = icosphere(0, dtype=torch.float64)
    assert edge_length_loss(verts, edges_from_faces(faces), kind="variance").item() < 1e-28


# ---------------------------------------------------------------- normal consistency


def ref_normal_consistency(verts, faces):
    v = verts.numpy()
    fl = faces.tolist()
    normals = [np.cross(v[b] - v[a], v[c] - v[a]) for a, b, c in fl]
    normals = [n / np.linalg.norm(n) for n in normals]
    edge_faces = {}
    for fi, f in enumerate(fl):
        for k in range(3):
            edge_faces.setdefault(tuple(sorted((f[k], f[(k + 1) % 3]))), []).append(fi)
    terms = [1 - normals[fs[0]] @ normals[fs[1]] for fs in edge_faces.values() if len(fs) == 2]
    return np.mean(terms)


def test_normal_consistency_matches_loop():
    for verts, faces in [bumpy_sphere(1, 0), bumpy_sphere(0, 1, 0.3)]:
        np.testing.assert_allclose(
            normal_consistency_loss(verts, faces).item(), ref_normal_consistency(verts, faces), rtol=1e-10
        )
    # Open mesh: boundary edges are ignored.
    verts, faces = bumpy_sphere(1, 2)
    faces = faces[:50]
    np.testing.assert_allclose(
        normal_consistency_loss(verts, faces).item(), ref_normal_consistency(verts, faces), rtol=1e-10
    )


def test_normal_consistency_flat_and_icosahedron_values():
    verts, faces = flat_grid()
    assert abs(normal_consistency_loss(verts, faces).item()) < 1e-15
    # Regular icosahedron: every dihedral angle between normals has cos = sqrt(5)/3.
    verts, faces = icosphere(0, dtype=torch.float64)
    np.testing.assert_allclose(normal_consistency_loss(verts, faces).item(), 1 - math.sqrt(5) / 3, rtol=1e-12)
    # A single triangle has no interior edge.
    assert normal_consistency_loss(verts, faces[:1]).item() == 0.0


def test_normal_consistency_gradcheck():
    verts, faces = bumpy_sphere(0, 3, 0.2)
    verts.requires_grad_()
    torch.autograd.gradcheck(lambda v: normal_consistency_loss(v, faces), (verts,))


# ---------------------------------------------------------------- Laplacian smoothing


def test_laplacian_smoothing_loss_matches_loop():
    verts, faces = bumpy_sphere(1, 4)
    nbrs = {i: set() for i in range(verts.shape[0])}
    for i, j in edges_from_faces(faces).tolist():
        nbrs[i].add(j)
        nbrs[j].add(i)
    sq = [float(((verts[i] - verts[sorted(n)].mean(0)) ** 2).sum()) for i, n in nbrs.items()]
    ei = edge_index_from_faces(faces)
    np.testing.assert_allclose(laplacian_smoothing_loss(verts, ei, squared=True).item(), np.mean(sq), rtol=1e-12)
    np.testing.assert_allclose(laplacian_smoothing_loss(verts, ei).item(), np.mean(np.sqrt(sq)), rtol=1e-12)
    # Smoother surface, smaller loss.
    smooth, sfaces = icosphere(1, dtype=torch.float64)
    assert laplacian_smoothing_loss(smooth, ei).item() < laplacian_smoothing_loss(verts, ei).item()
    v = verts.clone().requires_grad_()
    torch.autograd.gradcheck(lambda x: laplacian_smoothing_loss(x, ei), (v,))
    torch.autograd.gradcheck(lambda x: laplacian_smoothing_loss(x, ei, squared=True), (v,))


# ---------------------------------------------------------------- triangle quality


def ref_quality(verts, faces):
    out = []
    for f in faces.tolist():
        p = verts[f].numpy()
        a, b, c = (np.linalg.norm(p[1] - p[0]), np.linalg.norm(p[2] - p[1]), np.linalg.norm(p[0] - p[2]))
        s = (a + b + c) / 2
        area = np.sqrt(max(s * (s - a) * (s - b) * (s - c), 0.0))  # Heron
        out.append(4 * np.sqrt(3) * area / (a * a + b * b + c * c))
    return np.array(out)


def test_equilateral_quality_is_one():
    for dtype, tol in [(torch.float64, 1e-15), (torch.float32, 1e-6)]:
        tri = torch.tensor([[0.0, 0, 0], [2, 0, 0], [1, math.sqrt(3), 0]], dtype=dtype)
        faces = torch.tensor([[0, 1, 2]])
        assert abs(mean_triangle_quality(tri, faces).item() - 1.0) <= tol
        assert abs(triangle_quality_regulariser(tri, faces).item()) <= tol
    verts, faces = icosphere(0, dtype=torch.float64)  # all 20 faces equilateral
    assert abs(triangle_quality_regulariser(verts, faces).item()) < 1e-14


def test_degenerate_quality_is_zero_and_finite():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [5, 5, 5]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 3, 3]])  # collinear, and all three corners the same
    q = triangle_qualities(verts, faces)
    assert torch.equal(q, torch.zeros(2, dtype=torch.float64))
    assert triangle_quality_regulariser(verts, faces).item() == 1.0
    v = verts.clone().requires_grad_()
    triangle_quality_regulariser(v, faces).backward()
    assert torch.isfinite(v.grad).all()


def test_quality_matches_heron_and_is_in_unit_interval():
    g = torch.Generator().manual_seed(5)
    verts = torch.randn(30, 3, dtype=torch.float64, generator=g)
    faces = torch.stack([torch.randperm(30, generator=g)[:3] for _ in range(40)])
    q = triangle_qualities(verts, faces)
    np.testing.assert_allclose(q.numpy(), ref_quality(verts, faces), rtol=1e-8, atol=1e-12)
    assert q.min() >= 0 and q.max() <= 1
    np.testing.assert_allclose(mean_triangle_quality(verts, faces).item(), ref_quality(verts, faces).mean(), rtol=1e-8)
    # Invariant to scale; icosphere levels stay good; subdivision without projection keeps quality.
    np.testing.assert_allclose(mean_triangle_quality(7.5 * verts, faces).item(), q.mean().item(), rtol=1e-12)
    sv, sf = icosphere(3)
    assert mean_triangle_quality(sv, sf).item() > 0.95
    tv, tf, _, _ = subdivide(verts, faces)
    np.testing.assert_allclose(mean_triangle_quality(tv, tf).item(), q.mean().item(), rtol=1e-10)


def test_quality_regulariser_gradcheck():
    verts, faces = bumpy_sphere(1, 6, 0.1)
    verts.requires_grad_()
    torch.autograd.gradcheck(lambda v: triangle_quality_regulariser(v, faces), (verts,))
