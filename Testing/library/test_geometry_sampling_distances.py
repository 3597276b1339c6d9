"""Surface sampling and chunked distances against brute-force numpy / Python-loop references."""

import numpy as np
import pytest
import torch

from imagetomesh.geometry import (
    chamfer_distance,
    closest_point_on_triangle,
    face_areas,
    face_normals,
    icosphere,
    knn_sqdist,
    near_surface_distance,
    point_to_triangle_distance,
    sample_points_on_mesh,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def triangle_soup():
    """Four disjoint triangles with areas 1, 2, 3, 4 (right triangles with legs sqrt(2a))."""
    verts, faces = [], []
    for k, area in enumerate([1.0, 2.0, 3.0, 4.0]):
        leg = np.sqrt(2 * area)
        base = len(verts)
        off = np.array([10.0 * k, 0, 0])
        verts += [off, off + [leg, 0, 0], off + [0, leg, 0]]
        faces.append([base, base + 1, base + 2])
    return torch.tensor(np.array(verts), dtype=torch.float32), torch.tensor(faces)


# ---------------------------------------------------------------- sampling


def test_sample_mean_on_sphere_is_centre():
    verts, faces = icosphere(4)
    pts = sample_points_on_mesh(verts, faces, 20000, generator=gen(0))
    assert pts.shape == (20000, 3) and pts.dtype == torch.float32
    assert pts.mean(0).abs().max() < 0.02  # std of a coordinate is 1/sqrt(3): 5 sigma ~ 0.02
    r = pts.norm(dim=1)
    assert r.max() <= 1.0 + 1e-5 and r.min() > 0.99  # on the inscribed polyhedron


def test_face_counts_proportional_to_area():
    verts, faces = triangle_soup()
    n = 20000
    _, idx = sample_points_on_mesh(verts, faces, n, generator=gen(1), return_faces=True)
    counts = torch.bincount(idx, minlength=4).double()
    expected = n * torch.tensor([1.0, 2, 3, 4], dtype=torch.float64) / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.0  # 3 degrees of freedom: P(chi2 > 20) ~ 2e-4

    sv, sf = icosphere(2)  # 320 faces of unequal area
    n = 64000
    _, idx = sample_points_on_mesh(sv, sf, n, generator=gen(2), return_faces=True)
    counts = torch.bincount(idx, minlength=320).double()
    areas = face_areas(sv.double(), sf)
    expected = n * areas / areas.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 319 + 6 * np.sqrt(2 * 319)  # mean dof, 6 standard deviations


def test_samples_lie_on_their_faces_uniformly():
    verts = torch.tensor([[0.0, 0, 0], [3, 0, 1], [1, 2, 0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    pts, normals = sample_points_on_mesh(verts, faces, 40000, return_normals=True, generator=gen(3))
    assert pts.dtype == torch.float64
    n = face_normals(verts, faces)[0]
    torch.testing.assert_close((pts - verts[0]) @ n, torch.zeros(40000, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(normals, n.expand(40000, 3))
    # Barycentric coordinates via least squares: all inside [0, 1].
    basis = torch.stack([verts[1] - verts[0], verts[2] - verts[0]], 1)
    uv = torch.linalg.lstsq(basis, (pts - verts[0]).t()).solution.t()
    bary = torch.cat([1 - uv.sum(1, keepdim=True), uv], 1)
    assert bary.min() > -1e-9
    # Uniform density: each of the 4 midpoint sub-triangles gets a quarter; the mean is the centroid.
    corner = (bary > 0.5).any(1)
    frac = torch.stack([(bary[:, k] > 0.5).double().mean() for k in range(3)] + [(~corner).double().mean()])
    assert (frac - 0.25).abs().max() < 0.015
    assert (pts.mean(0) - verts.mean(0)).abs().max() < 0.02


def test_sampling_gradient_and_reproducibility():
    verts, faces = icosphere(1)
    verts = verts.clone().requires_grad_()
    pts, normals = sample_points_on_mesh(verts, faces, 500, return_normals=True, generator=gen(4))
    pts.sum().backward()
    # Barycentric weights sum to one: the total gradient on each coordinate is the sample count.
    torch.testing.assert_close(verts.grad.sum(0), torch.full((3,), 500.0))
    assert (verts.grad != 0).any(1).sum() > 10
    again = sample_points_on_mesh(verts.detach(), faces, 500, generator=gen(4))
    torch.testing.assert_close(again, pts.detach())

    v2 = verts.detach().clone().requires_grad_()
    _, nrm = sample_points_on_mesh(v2, faces, 50, return_normals=True, generator=gen(5))
    nrm[:, 0].sum().backward()
    assert torch.isfinite(v2.grad).all() and v2.grad.abs().sum() > 0


def test_sampling_zero_area_raises():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    with pytest.raises(ValueError):
        sample_points_on_mesh(verts, torch.tensor([[0, 1, 2]]), 10)


# ---------------------------------------------------------------- nearest neighbours and Chamfer


def brute_knn(a, b):
    a, b = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    d = np.array([[np.sum((x - y) ** 2) for y in b] for x in a])
    return d.min(1), d.argmin(1)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_knn_sqdist_matches_brute_force(chunk):
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.normal(size=(37, 3)) * 50 + 100, dtype=torch.float32)  # far from the origin
    b = torch.tensor(rng.normal(size=(23, 3)) * 50 + 100, dtype=torch.float32)
    d, idx = knn_sqdist(a, b, chunk=chunk)
    d_ref, idx_ref = brute_knn(a, b)
    assert idx.tolist() == idx_ref.tolist()
    np.testing.assert_allclose(d.numpy(), d_ref, rtol=1e-5)


def dense_chamfer(a, b, squared=True):
    d = ((a[:, None] - b[None]) ** 2).sum(-1)
    if not squared:
        d = d.sqrt()
    return d.min(1).values.mean() + d.min(0).values.mean()


def test_chamfer_matches_loop_and_dense_gradient():
    rng = np.random.default_rng(1)
    a0 = rng.normal(size=(15, 3))
    b0 = rng.normal(size=(11, 3))
    ref_ab = np.array([min(np.sum((x - y) ** 2) for y in b0) for x in a0])
    ref_ba = np.array([min(np.sum((x - y) ** 2) for y in a0) for x in b0])
    a = torch.tensor(a0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    total, pab, pba = chamfer_distance(a, b, chunk=4, return_parts=True)
    np.testing.assert_allclose(pab.item(), ref_ab.mean(), rtol=1e-12)
    np.testing.assert_allclose(pba.item(), ref_ba.mean(), rtol=1e-12)
    np.testing.assert_allclose(total.item(), ref_ab.mean() + ref_ba.mean(), rtol=1e-12)
    total.backward()
    a2, b2 = a0.copy(), b0.copy()
    a2 = torch.tensor(a2, requires_grad=True)
    b2 = torch.tensor(b2, requires_grad=True)
    dense_chamfer(a2, b2).backward()
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)

    s = chamfer_distance(a, b, reduction="sum")
    np.testing.assert_allclose(s.item(), ref_ab.sum() + ref_ba.sum(), rtol=1e-12)
    per_a, per_b = chamfer_distance(a, b, reduction="none")
    np.testing.assert_allclose(per_a.detach().numpy(), ref_ab, rtol=1e-12)
    np.testing.assert_allclose(per_b.detach().numpy(), ref_ba, rtol=1e-12)
    unsq = chamfer_distance(a, b, squared=False)
    np.testing.assert_allclose(unsq.item(), np.sqrt(ref_ab).mean() + np.sqrt(ref_ba).mean(), rtol=1e-12)
    with pytest.raises(ValueError):
        chamfer_distance(a, b, reduction="max")


def test_chamfer_zero_for_identical_clouds_with_finite_gradient():
    a = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    for squared in (True, False):
        d = chamfer_distance(a, a.detach().clone(), squared=squared)
        assert d.item() == 0.0
        (g,) = torch.autograd.grad(d, a)
        assert torch.isfinite(g).all()


# ---------------------------------------------------------------- point to triangle


def ref_closest_point(p, a, b, c):
    """Different method from the library: plane projection if inside, else nearest of 3 segments."""

    def seg(p, x, y):
        d = y - x
        dd = d @ d
        t = 0.0 if dd == 0 else min(max((p - x) @ d / dd, 0.0), 1.0)
        return x + t * d

    n = np.cross(b - a, c - a)
    nn = n @ n
    if nn > 1e-24:
        q = p - ((p - a) @ n) / nn * n
        # Barycentric coordinates of q by signed sub-areas.
        wa = np.cross(c - b, q - b) @ n / nn
        wb = np.cross(a - c, q - c) @ n / nn
        wc = np.cross(b - a, q - a) @ n / nn
        if min(wa, wb, wc) >= 0:
            return q
    cands = [seg(p, a, b), seg(p, b, c), seg(p, c, a)]
    return min(cands, key=lambda x: np.sum((p - x) ** 2))


def test_closest_point_on_triangle_matches_reference():
    rng = np.random.default_rng(2)
    tris = rng.normal(size=(60, 3, 3))
    tris[0] = [[0, 0, 0], [1, 0, 0], [2, 0, 0]]  # collinear
    tris[1] = [[0, 0, 0], [0, 0, 0], [0, 1, 0]]  # two corners coincide
    tris[2] = [[1, 1, 1], [1, 1, 1], [1, 1, 1]]  # a point
    pts = rng.normal(size=(60, 40, 3)) * 1.5
    t = torch.tensor(tris)[:, None]
    got = closest_point_on_triangle(torch.tensor(pts), t[..., 0, :], t[..., 1, :], t[..., 2, :]).numpy()
    for i in range(60):
        for j in range(40):
            ref = ref_closest_point(pts[i, j], *tris[i])
            d_got = np.linalg.norm(got[i, j] - pts[i, j])
            d_ref = np.linalg.norm(ref - pts[i, j])
            assert abs(d_got - d_ref) < 1e-9, (i, j)
            if i >= 3:  # unique closest point on a non-degenerate triangle
                np.testing.assert_allclose(got[i, j], ref, atol=1e-9)


def test_closest_point_against_dense_triangle_sampling():
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(3, 3))
    k = 300
    u, v = np.meshgrid(np.arange(k + 1), np.arange(k + 1), indexing="ij")
    keep = u + v <= k
    u, v = u[keep] / k, v[keep] / k
    samples = a + u[:, None] * (b - a) + v[:, None] * (c - a)
    spacing = max(np.linalg.norm(b - a), np.linalg.norm(c - a)) / k
    pts = rng.normal(size=(25, 3)) * 2
    got = closest_point_on_triangle(torch.tensor(pts), *(torch.tensor(x) for x in (a, b, c))).numpy()
    exact = np.linalg.norm(got - pts, axis=1)
    dense = np.array([np.linalg.norm(samples - p, axis=1).min() for p in pts])
    assert np.all(exact <= dense + 1e-12)
    assert np.all(dense - exact <= spacing)


@pytest.fixture(scope="module")
def bumpy_mesh_and_reference():
    """A perturbed icosphere, query points, and the loop reference (computed once)."""
    verts, faces = icosphere(1, dtype=torch.float64)
    rng = np.random.default_rng(4)
    verts = verts + torch.tensor(rng.normal(size=verts.shape)) * 0.05
    pts = torch.tensor(rng.normal(size=(20, 3)))
    v, f = verts.numpy(), faces.numpy()
    per_face = np.array([[np.linalg.norm(ref_closest_point(p, *v[tri]) - p) for tri in f] for p in pts.numpy()])
    return verts, faces, pts, per_face


@pytest.mark.parametrize("chunks", [(1, 7), (3, 5), (512, 2048)])
def test_point_to_triangle_distance_matches_loop(chunks, bumpy_mesh_and_reference):
    verts, faces, pts, per_face = bumpy_mesh_and_reference
    d, fidx = point_to_triangle_distance(pts, verts, faces, chunk_points=chunks[0], chunk_faces=chunks[1])
    np.testing.assert_allclose(d.numpy(), per_face.min(1), rtol=0, atol=1e-10)
    np.testing.assert_allclose(per_face[np.arange(len(pts)), fidx.numpy()], per_face.min(1), rtol=0, atol=1e-10)
    d2, _ = point_to_triangle_distance(pts, verts, faces, squared=True)
    torch.testing.assert_close(d2, d**2)


def test_point_to_triangle_distance_sphere_and_gradients():
    verts, faces = icosphere(3)
    pts = torch.randn(100, 3, generator=gen(6))
    d, _ = point_to_triangle_distance(pts, verts, faces, chunk_points=64, chunk_faces=300)
    # The polyhedron lies between the radius-1 sphere and its inner sagitta (< 0.01 at level 3).
    assert ((d - (pts.norm(dim=1) - 1).abs()).abs() < 0.01).all()

    tv = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    tf = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    tv = (tv + 0.05 * torch.randn(4, 3, dtype=torch.float64, generator=gen(7))).requires_grad_()
    p = (torch.randn(8, 3, dtype=torch.float64, generator=gen(8)) * 0.8 + 0.3).requires_grad_()
    torch.autograd.gradcheck(lambda x, v: point_to_triangle_distance(x, v, tf, chunk_points=4)[0], (p, tv))


def test_large_clouds_on_the_cpu_use_the_k_d_tree_with_the_brute_force_answer():
    from imagetomesh.geometry.distances import KD_TREE_PAIRS, knn_sqdist

    g = torch.Generator().manual_seed(5)
    a = (torch.randn(1100, 3, generator=g) + 50.0).requires_grad_()
    b = torch.randn(1000, 3, generator=g) + 50.0
    assert a.shape[0] * b.shape[0] >= KD_TREE_PAIRS
    sq, idx = knn_sqdist(a, b)
    d = ((a.detach()[:, None].double() - b[None].double()) ** 2).sum(-1)
    assert torch.equal(idx, d.argmin(1))
    assert torch.allclose(sq.double(), d.min(1).values, atol=1e-4)
    sq.sum().backward()  # differentiable in a
    assert torch.allclose(a.grad, 2 * (a.detach() - b[idx]))


def test_near_surface_distance_is_the_exact_distance_near_a_mesh_with_its_gradients():
    verts, faces = icosphere(3, dtype=torch.float64)
    rng = np.random.default_rng(9)
    verts = verts * torch.tensor([1.0, 0.8, 1.3], dtype=torch.float64)
    verts = verts + torch.tensor(rng.normal(size=verts.shape)) * 0.01
    # points within about two edge lengths (~0.15) of the surface, both sides
    direction = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(400, 3))), dim=1)
    on = direction * torch.tensor([1.0, 0.8, 1.3], dtype=torch.float64)
    pts = on * (1 + torch.tensor(rng.uniform(-0.25, 0.25, size=(400, 1))))
    v_fast = verts.clone().requires_grad_()
    v_slow = verts.clone().requires_grad_()
    fast, fast_face = near_surface_distance(pts, v_fast, faces, chunk=64)
    slow, slow_face = point_to_triangle_distance(pts, v_slow, faces)
    np.testing.assert_allclose(fast.detach().numpy(), slow.detach().numpy(), rtol=0, atol=1e-12)
    w = torch.tensor(rng.normal(size=400))
    (w * fast).sum().backward()
    (w * slow).sum().backward()
    np.testing.assert_allclose(v_fast.grad.numpy(), v_slow.grad.numpy(), rtol=0, atol=1e-10)
    # a point far from the mesh may miss its nearest face: the search is local by design
    assert fast_face.shape == slow_face.shape == (400,)
