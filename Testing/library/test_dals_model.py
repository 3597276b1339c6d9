"""DALS decoder, normalisation, the L_dir term, the labelmap task's custom gradient, the curve cut loss."""

import math

import numpy as np
import pytest
import torch

from imagetomesh.core import Volume
from imagetomesh.fitting.curves import CurveLoss, planar_curve
from imagetomesh.fitting.distance_field import DistanceField, sample_distance
from imagetomesh.fitting.optimise import Adam, chamfer, latent_laplacian_energy, template_laplacian
from imagetomesh.geometry.distances import chamfer_distance
from imagetomesh.geometry.topology import edges_from_faces, icosphere
from imagetomesh.models.dals import DALSConfig, DALSDecoder, ShapeNormalisation


def tiny(latent=8):
    return DALSDecoder(DALSConfig(latent_dim=latent, hidden=(16, 16, 8)))


# --- decoder -----------------------------------------------------------------------------------
def test_default_architecture_is_the_papers():
    dec = DALSDecoder()
    widths = [(m.in_features, m.out_features) for m in dec.linears] + [(dec.out.in_features, dec.out.out_features)]
    assert widths == [(131, 724), (724, 724), (724, 362), (362, 3)]
    assert [n.normalized_shape[0] for n in dec.norms] == [724, 724, 362]


@pytest.mark.parametrize(
    "shape_x, shape_z",
    [((50, 3), (50, 8)), ((50, 3), (1, 8)), ((50, 3), (8,)), ((2, 50, 3), (2, 1, 8)), ((2, 50, 3), (2, 50, 8))],
)
def test_decoder_shapes_and_broadcast(shape_x, shape_z):
    torch.manual_seed(0)
    dec = tiny()
    x, z = torch.randn(shape_x), torch.randn(shape_z)
    out = dec(x, z)
    assert out.shape == x.shape
    # a shared latent gives the same result as the latent repeated per vertex
    full = dec(x, z.expand(*x.shape[:-1], 8) if z.dim() > 1 else z.expand(*x.shape[:-1], 8))
    assert torch.allclose(out, full, atol=1e-6)


def test_decoder_equals_mlp_on_concatenation_and_adds_offset():
    torch.manual_seed(1)
    dec = tiny()
    x, z = torch.randn(30, 3), torch.randn(30, 8)
    h = torch.cat([x, z], 1)
    for linear, norm in zip(dec.linears, dec.norms):
        h = torch.relu(norm(linear(h)))
    reference = x + dec.out(h)
    assert torch.allclose(dec(x, z), reference, atol=1e-5)


def test_offsets_have_no_output_activation():
    torch.manual_seed(2)
    dec = tiny()
    off = dec.offsets(torch.randn(500, 3), torch.randn(500, 8))
    assert (off < 0).any() and (off > 0).any()


def test_decoder_rejects_bad_shapes():
    dec = tiny()
    with pytest.raises(ValueError):
        dec(torch.randn(5, 2), torch.randn(5, 8))
    with pytest.raises(ValueError):
        dec(torch.randn(5, 3), torch.randn(5, 7))
    with pytest.raises(ValueError):
        DALSConfig(latent_dim=0)


def test_normalisation_round_trip():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(100, 3)) * [10, 20, 5] + [100, -50, 3]
    frame = ShapeNormalisation.of_points(pts)
    n = frame.to_normalised(pts)
    assert np.allclose(n.mean(0), 0, atol=1e-12)
    assert np.isclose(np.linalg.norm(n, axis=1).max(), 1.0)
    assert np.allclose(frame.to_lps(n), pts)
    assert np.allclose(ShapeNormalisation.from_dict(frame.to_dict()).to_lps(n), pts)
    affine = frame.normalised_to_lps
    assert np.allclose(n @ affine[:3, :3].T + affine[:3, 3], pts)


# --- L_dir ----------------------------------------------------------------------------------------
def test_l_dir_equals_dense_reference_and_is_nonnegative():
    verts, faces = icosphere(1)
    n = verts.shape[0]
    laplacian = template_laplacian(faces, n)
    # dense reference: L = (D - A) / mean degree
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    edges = edges_from_faces(faces)
    adjacency[edges[:, 0], edges[:, 1]] = 1
    adjacency[edges[:, 1], edges[:, 0]] = 1
    degree = adjacency.sum(1)
    dense = (torch.diag(degree) - adjacency) / degree.mean()
    assert torch.allclose(laplacian.to_dense().double(), dense, atol=1e-6)
    assert torch.allclose(dense, dense.T) and torch.linalg.eigvalsh(dense).min() > -1e-9
    torch.manual_seed(0)
    for _ in range(3):
        z = torch.randn(n, 5, dtype=torch.float64)
        reference = torch.trace(z.T @ dense @ dense @ z)
        value = latent_laplacian_energy(z.float(), laplacian)
        assert value >= 0
        assert math.isclose(float(value), float(reference), rel_tol=1e-4)
    # a latent shared by all vertices costs nothing
    assert float(latent_laplacian_energy(torch.ones(n, 5), laplacian)) < 1e-8


# --- labelmap task: U and its custom gradient ------------------------------------------------------
@pytest.fixture(scope="module")
def sphere_field():
    k, j, i = np.mgrid[:40, :44, :48]
    spacing = np.array([1.0, 1.2, 1.5])  # (i, j, k) mm
    centre = np.array([24, 22, 20])
    radius_mm = 14.0
    d = np.sqrt(
        ((i - centre[0]) * spacing[0]) ** 2 + ((j - centre[1]) * spacing[1]) ** 2 + ((k - centre[2]) * spacing[2]) ** 2
    )
    direction = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # a permuting header, as KiTS has
    mask = Volume((d <= radius_mm).astype(np.uint8), spacing, [10.0, -5.0, 3.0], direction)
    centre_lps = mask.index_to_lps[:3, :3] @ centre + mask.origin
    return mask, DistanceField(mask), centre_lps, radius_mm


def test_distance_field_is_distance_to_the_boundary(sphere_field):
    mask, field, centre, radius = sphere_field
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(200, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for r in (radius - 6, radius + 6):
        pts = torch.tensor(centre + r * dirs, dtype=torch.float32)
        u = field.sample_u(pts).numpy()
        assert np.allclose(u, 6.0, atol=1.6)  # voxel-level accuracy of the boundary


def test_custom_gradient_is_sobel_image_and_matches_finite_differences(sphere_field):
    mask, field, centre, radius = sphere_field
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(100, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pts = torch.tensor(centre + (radius + 5.0) * dirs, dtype=torch.float64, requires_grad=True)
    u = sample_distance(pts, field)
    weights = torch.rand(100, dtype=torch.float64)
    (weights * u).sum().backward()
    # backward returns exactly grad_output * G(x)
    assert torch.allclose(pts.grad, weights[:, None] * field.sample_g(pts.detach()), atol=1e-6)
    # G matches central finite differences of U (step 1 mm) and points away from the sphere
    g = field.sample_g(pts.detach()).numpy()
    h = 1.0
    fd = np.stack(
        [
            (
                field.sample_u(pts.detach() + h * torch.eye(3, dtype=torch.float64)[a]).numpy()
                - field.sample_u(pts.detach() - h * torch.eye(3, dtype=torch.float64)[a]).numpy()
            )
            / (2 * h)
            for a in range(3)
        ],
        axis=1,
    )
    assert np.abs(g - fd).max() < 0.15
    cos = (g * dirs).sum(1) / np.linalg.norm(g, axis=1)
    assert cos.min() > 0.95


# --- curves task ------------------------------------------------------------------------------------
def test_curve_cut_points_are_differentiable():
    verts, faces = icosphere(2, dtype=torch.float64)
    verts = verts * torch.tensor([1.0, 0.8, 0.6], dtype=torch.float64) + 0.01 * torch.randn(
        verts.shape, dtype=torch.float64
    )
    th = np.linspace(0, 2 * np.pi, 30, endpoint=False)
    curve = np.stack([0.9 * np.cos(th), 0.7 * np.sin(th), np.full_like(th, 0.1)], 1)
    loss = CurveLoss([planar_curve(curve)], np.zeros(3), 1.0)
    origin, normal, _ = loss.planes[0]

    def cut(v):
        return loss.cut_points(v, faces, origin.double(), normal.double())

    v = verts.clone().requires_grad_(True)
    assert cut(v).shape[0] > 0
    assert torch.autograd.gradcheck(cut, (v,), eps=1e-6, atol=1e-5)
    value = loss(v, faces)
    value.backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_curve_loss_is_zero_for_a_matching_cut():
    # the icosphere cut by z = 0 is a polygon; the curve is that same cut, densely resampled
    verts, faces = icosphere(3)
    loss = CurveLoss(
        [
            planar_curve(np.stack([np.cos(t), np.sin(t), 0.0 * t], 1))
            for t in [np.linspace(0, 2 * np.pi, 400, endpoint=False)]
        ],
        np.zeros(3),
        1.0,
    )
    assert float(loss(verts, faces)) < 1e-3
    moved = verts * 1.3
    assert float(loss(moved, faces)) > 0.05


def test_kdtree_chamfer_equals_library_chamfer():
    torch.manual_seed(0)
    a = torch.randn(300, 3, requires_grad=True)
    b = torch.randn(200, 3)
    ours = chamfer(a, b)
    ours.backward()
    g = a.grad.clone()
    a.grad = None
    ref = chamfer_distance(a, b)
    ref.backward()
    assert torch.allclose(ours, ref, atol=1e-6) and torch.allclose(g, a.grad, atol=1e-6)


def test_adam_matches_formula():
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = Adam([(p, 0.1)])
    (p**2).sum().backward()
    opt.step()
    # first Adam step moves each coordinate by lr * sign(g)
    assert torch.allclose(p.detach(), torch.tensor([0.9, -1.9]), atol=1e-6)


def test_curve_loss_uses_the_outer_loop_only():
    # a sphere with an inner, inverted sphere (a cavity): the cut has two loops; the curve outlines the outer one
    verts, faces = icosphere(3)
    both_v = torch.cat([verts, 0.5 * verts])
    both_f = torch.cat([faces, faces.flip(1) + verts.shape[0]])
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    loss = CurveLoss([planar_curve(np.stack([np.cos(t), np.sin(t), 0.0 * t], 1))], np.zeros(3), 1.0)
    assert float(loss(both_v, both_f)) < 1e-3
    points = loss.cut_points(both_v, both_f, *loss.planes[0][:2])
    assert torch.allclose(points.norm(dim=1), torch.ones(len(points)), atol=0.02)


def test_segment_loops_and_mask_outline():
    from imagetomesh.fitting.curves import chain_segments, mask_outline, segment_loops
    from imagetomesh.geometry.plane_cut import cut_mesh_with_plane

    verts, faces = icosphere(3, dtype=torch.float64)
    segments, _ = cut_mesh_with_plane(verts, faces, [0, 0, 0.3], [0, 0, 1])
    loops = segment_loops(segments.numpy())
    assert len(loops) == 1 and sorted(loops[0].tolist()) == list(range(len(segments)))
    ring = chain_segments(segments.numpy())[0]
    assert np.allclose(np.linalg.norm(ring[:, :2], axis=1), np.sqrt(1 - 0.09), atol=0.02)
    # a box mask: its outline in the plane k = 5 is the box's cross-section
    array = np.zeros((12, 14, 16), np.uint8)
    array[2:10, 3:11, 4:12] = 1
    mask = Volume(array, [1.0, 1.0, 2.0])
    outline = mask_outline(mask, [0, 0, 10.0], [0, 0, 1])
    assert np.allclose(outline[:, 2], 10.0) and outline.shape[0] >= 8
    assert 3.0 <= outline[:, 0].min() < 4.0 and 11.0 < outline[:, 0].max() <= 12.0
