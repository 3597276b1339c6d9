"""Grid feature projection (splatting) and mesh SDFs against slow, obviously-correct references."""

import itertools

import numpy as np
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.quality import winding_numbers
from imagetomesh.geometry.topology import icosphere
from imagetomesh.nn.feature_sampling import sample_features
from imagetomesh.nn.sdf import grid_points, grid_sdf, inside_mask, signed_distance, winding_number
from imagetomesh.nn.splat import splat_features


def slow_splat(features, points, shape):
    """One point, one corner at a time."""
    d, h, w = shape
    b, n, c = features.shape
    out = torch.zeros(b, c, d, h, w, dtype=torch.float64)
    size = [w, h, d]
    for bi in range(b):
        for ni in range(n):
            idx = [(float(points[bi, ni, a]) + 1) / 2 * (size[a] - 1) for a in range(3)]
            base = [int(np.floor(x)) for x in idx]
            for corner in itertools.product((0, 1), repeat=3):
                ijk = [base[a] + corner[a] for a in range(3)]
                if not all(0 <= ijk[a] < size[a] for a in range(3)):
                    continue
                weight = 1.0
                for a in range(3):
                    frac = idx[a] - base[a]
                    weight *= frac if corner[a] else 1 - frac
                out[bi, :, ijk[2], ijk[1], ijk[0]] += weight * features[bi, ni].double()
    return out


def test_splat_matches_slow_loop_including_points_at_and_beyond_the_border():
    torch.manual_seed(0)
    shape = (4, 5, 6)
    points = torch.rand(2, 30, 3) * 2.4 - 1.2
    points[0, 0] = torch.tensor([1.0, 1.0, 1.0])
    points[0, 1] = torch.tensor([-1.0, 0.0, 1.0])
    features = torch.randn(2, 30, 3)
    fast = splat_features(features.double(), points.double(), shape)
    assert fast.shape == (2, 3, *shape)
    assert torch.allclose(fast, slow_splat(features, points.double(), shape), atol=1e-10)


def test_splatting_is_the_adjoint_of_sampling_same_axis_convention():
    """<splat(f, p), G> == <f, sample(G, p)> for any grid G: the two agree on which voxel a point
    touches and with which weight (the reference code's splatting and sampling disagreed)."""
    torch.manual_seed(1)
    shape = (5, 7, 9)  # every axis different, so swapped axes cannot pass
    points = (torch.rand(2, 40, 3) * 2 - 1).double()
    features = torch.randn(2, 40, 4, dtype=torch.float64)
    grid = torch.randn(2, 4, *shape, dtype=torch.float64)
    lhs = (splat_features(features, points, shape) * grid).sum()
    rhs = (features * sample_features(grid, points)).sum()
    assert torch.allclose(lhs, rhs, atol=1e-9)
    # one vertex: its splatted weights, sampled back at the vertex, give sum of w^2 (> 0)
    one = splat_features(torch.ones(1, 1, 1, dtype=torch.float64), points[:1, :1], shape)
    back = sample_features(one, points[:1, :1])[0, 0, 0]
    assert torch.isclose(back, (one**2).sum())


def test_splat_is_differentiable_in_features_and_points():
    torch.manual_seed(2)
    points = (torch.rand(1, 5, 3) * 1.6 - 0.8).double().requires_grad_()
    features = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, p: splat_features(f, p, (3, 4, 5)), (features, points))


def test_winding_number_matches_numpy_reference():
    verts, faces = icosphere(2)
    verts = verts * torch.tensor([1.0, 0.6, 0.8])
    points = torch.randn(50, 3) * 0.8
    ours = winding_number(points.double(), verts.double(), faces)
    ref = winding_numbers(Mesh(verts.numpy(), faces.numpy()), points.numpy())
    assert np.allclose(ours.numpy(), ref, atol=1e-9)


def test_signed_distance_of_a_sphere_is_analytic():
    verts, faces = icosphere(4, radius=0.5, dtype=torch.float64)
    points = torch.randn(100, 3, dtype=torch.float64) * 0.4
    sdf = signed_distance(points, verts, faces)
    exact = points.norm(dim=1) - 0.5
    assert torch.allclose(sdf, exact, atol=3e-3)  # the polyhedron lies within 2.5e-3 of the sphere
    assert bool((sdf[exact < -5e-3] < 0).all()) and bool((sdf[exact > 5e-3] > 0).all())


def bumpy_mesh():
    verts, faces = icosphere(2, dtype=torch.float64)
    bump = 1 + 0.2 * torch.sin(3 * verts[:, 0]) * torch.cos(2 * verts[:, 1])
    return verts * bump[:, None] * torch.tensor([0.55, 0.7, 0.45], dtype=torch.float64), faces


def test_grid_sdf_is_exact_in_its_band_against_brute_force():
    verts, faces = bumpy_mesh()
    shape = (10, 13, 9)
    scale = torch.tensor([0.8, 1.0, 0.9], dtype=torch.float64)
    fast = grid_sdf(verts, faces, shape, scale, truncation=0.15)
    ref = signed_distance(grid_points(shape, dtype=torch.float64) * scale, verts * scale, faces).clamp(-0.15, 0.15)
    assert torch.allclose(fast.reshape(-1), ref, atol=1e-9)


def test_grid_sdf_far_field_is_within_a_voxel_of_the_exact_distance():
    verts, faces = bumpy_mesh()
    shape = (14, 16, 12)
    scale = torch.ones(3, dtype=torch.float64)
    fast = grid_sdf(verts, faces, shape, scale, truncation=0.05, far_field=True).reshape(-1)
    ref = signed_distance(grid_points(shape, dtype=torch.float64), verts, faces)
    voxel = 2.0 / (12 - 1)
    assert float((fast - ref).abs().max()) < voxel
    assert bool((torch.sign(fast) == torch.sign(ref)).all())


def test_inside_mask_uses_grid_axis_order():
    verts, faces = icosphere(3, radius=0.4)
    verts = verts + torch.tensor([0.5, 0.0, 0.0])  # shifted along x = W
    mask = inside_mask(verts, faces, (9, 9, 21))
    assert mask.shape == (9, 9, 21)
    cols = mask.any(0).any(0).nonzero().squeeze(1)
    assert int(cols.min()) > 10  # only the +x half of the W axis
