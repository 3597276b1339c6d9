"""UDF meshing on analytic fields: projection, normals, closed sphere, open hemisphere."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.errors import InputError
from imagetomesh.geometry.quality import check_mesh
from imagetomesh.geometry.udf_meshing import (
    UDFMeshingConfig,
    agree_with,
    evaluate_udf,
    field_directions,
    field_outward,
    largest_component,
    mesh_udf,
    oriented_normals,
    project_points,
    trim_unsupported,
)

R = 0.5
VOXEL = 2.0 / 47
BOX = (-np.ones(3), np.ones(3))
FAST = UDFMeshingConfig(initial_points=8000, dense_points=8000, poisson_points=3000, poisson_depth=6, rounds=1)


def sphere_udf(p):
    return (p.norm(dim=1) - R).abs()


def hemisphere_udf(p):
    """Distance to the upper half (z >= 0) of the sphere of radius R: the cap, or its rim circle."""
    rho, z = p[:, :2].norm(dim=1), p[:, 2]
    return torch.where(z >= 0, (p.norm(dim=1) - R).abs(), ((rho - R) ** 2 + z**2).sqrt())


def test_projection_moves_points_onto_the_sphere():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(500, 3, generator=g) * 1.6 - 0.8
    points = points[points.norm(dim=1) > 0.05]
    projected, f = project_points(sphere_udf, points, iterations=2, chunk=64)
    assert float((points.norm(dim=1) - R).abs().mean()) > 0.1
    assert torch.allclose(projected.norm(dim=1), torch.full((len(points),), R), atol=1e-5)
    assert float(f.max()) < 1e-5
    # each point moved along its ray (the closest point of a sphere is radial)
    cos = (projected * points).sum(1) / (projected.norm(dim=1) * points.norm(dim=1))
    assert float(cos.min()) > 1 - 1e-5


def test_chunked_evaluation_equals_one_pass():
    p = torch.randn(1000, 3)
    assert torch.equal(evaluate_udf(sphere_udf, p, chunk=7), sphere_udf(p))


def test_normals_are_consistent_on_a_sphere():
    g = np.random.default_rng(0)
    p = g.normal(size=(2000, 3))
    p = R * p / np.linalg.norm(p, axis=1, keepdims=True)
    n = oriented_normals(p, 12)
    radial = np.einsum("ij,ij->i", n, p / R)
    assert np.all(np.abs(radial) > 0.95)
    assert np.all(radial > 0) or np.all(radial < 0)  # one sign everywhere


def test_directions_orient_normals_as_the_tree_then_agreeing_does():
    """Given directions, the normals equal the tree-oriented ones each flipped against its direction (the tree is
    skipped only where the directions decide every sign; a zero direction keeps the tree's sign there)."""
    g = np.random.default_rng(2)
    p = g.normal(size=(1500, 3))
    p = R * p / np.linalg.norm(p, axis=1, keepdims=True)
    directions = p * np.where(g.random(1500) < 0.5, 1.0, 1.0e-3)[:, None] + 0.3 * g.normal(size=(1500, 3))
    tree = oriented_normals(p, 12)
    fast = oriented_normals(p, 12, directions=directions)
    assert np.array_equal(fast, agree_with(tree, directions))
    assert np.all(np.einsum("ij,ij->i", fast, directions) > 0)
    directions[:10] = 0.0  # no direction there: those keep the sign the tree gives them
    assert np.array_equal(oriented_normals(p, 12, directions=directions), agree_with(tree, directions))
    assert np.array_equal(oriented_normals(p, 12, directions=directions)[:10], tree[:10])


def test_closed_sphere_is_watertight_and_close():
    mesh = mesh_udf(sphere_udf, *BOX, VOXEL, FAST)
    check = check_mesh(mesh, self_intersections=False)
    assert check.watertight and check.components == 1
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radius - R).mean() < 0.01 * R
    # and it covers the whole sphere: every direction has a vertex near it
    directions = np.random.default_rng(1).normal(size=(300, 3))
    directions = R * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    nearest = np.min(np.linalg.norm(directions[:, None] - mesh.vertices[None], axis=2), axis=1)
    assert nearest.max() < 2 * VOXEL


def test_open_hemisphere_stays_open_and_on_the_cap():
    mesh = mesh_udf(hemisphere_udf, *BOX, VOXEL, FAST, open_surface=True)
    check = check_mesh(mesh, self_intersections=False)
    assert not check.watertight and check.boundary_edges > 0 and check.components == 1
    assert mesh.vertices[:, 2].min() > -2.5 * VOXEL  # trimmed: nothing of the lower half
    assert mesh.vertices[:, 2].max() > R - VOXEL
    assert np.abs(hemisphere_udf(torch.from_numpy(mesh.vertices)).numpy()).mean() < 0.2 * VOXEL


def test_a_field_without_zeros_is_an_input_error():
    with pytest.raises(InputError, match="no surface"):
        mesh_udf(lambda p: p.norm(dim=1) * 0 + 1.0, *BOX, VOXEL, FAST)


def test_trimming_and_largest_component():
    # two separate triangles; support only near the first
    mesh = Mesh(
        np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5], [6, 5, 5], [5, 6, 5]], np.float32),
        np.array([[0, 1, 2], [3, 4, 5]]),
    )
    trimmed = trim_unsupported(mesh, np.array([[0.3, 0.3, 0.0]]), radius=0.1)
    assert trimmed.num_faces == 1 and trimmed.num_vertices == 3
    big = Mesh(np.vstack([mesh.vertices, [[0, 0, 1]]]), np.vstack([mesh.faces, [[0, 1, 6]]]))
    kept = largest_component(big)
    assert kept.num_faces == 2 and kept.num_vertices == 4


def two_spheres_udf(p):
    """Distance to two spheres of radius R / 2, centred at x = -0.5 and x = +0.5."""
    centres = torch.tensor([[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=p.dtype)
    return ((p[:, None] - centres[None]).norm(dim=2) - R / 2).abs().min(1).values


def test_a_region_keeps_the_surface_it_holds_and_only_that():
    for side in (-1.0, 1.0):  # unrestricted, meshing keeps one sphere (the largest component)

        def on_side(points, side=side):
            return points[:, 0] * side > 0

        mesh = mesh_udf(two_spheres_udf, *BOX, VOXEL, FAST, inside=on_side)
        check = check_mesh(mesh, self_intersections=False)
        assert check.watertight and check.components == 1
        centred = mesh.vertices - np.array([0.5 * side, 0.0, 0.0])
        assert np.abs(np.linalg.norm(centred, axis=1) - R / 2).mean() < 0.02 * R
        assert np.abs(centred[:, 0]).max() > R / 2 - VOXEL  # the whole sphere, both poles along x


def test_a_region_without_surface_is_an_input_error():
    with pytest.raises(InputError, match="no surface"):
        mesh_udf(two_spheres_udf, *BOX, VOXEL, FAST, inside=lambda p: p[:, 1] > 0.6)


def _nearest_voxel_kji(point: torch.Tensor, scale: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Slow reference: the ``(k, j, i)`` index of the voxel of a ``shape (D, H, W)`` grid nearest ``point`` (isotropic
    frame of ``scale``), clamped into the grid."""
    ijk = [min(max(round(float((point[a] / scale[a] + 1) / 2 * (n - 1))), 0), n - 1) for a, n in enumerate(shape[::-1])]
    return torch.tensor(ijk[::-1], dtype=torch.float32)


def test_voxel_guide_region_is_the_grown_mask_at_the_nearest_voxel():
    from imagetomesh.models.nudf import VoxelGuide
    from imagetomesh.nn.grid import isotropic_scale

    shape = (7, 9, 11)
    voxels = torch.zeros(shape, dtype=torch.bool)
    voxels[3, 4, 2] = voxels[5, 1, 8] = True
    scale = isotropic_scale(shape)
    inside = VoxelGuide(voxels, scale).region(2.0)
    points = (torch.rand(3000, 3, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1) * scale
    got = inside(points)
    # slow: the voxel nearest the point (clamped into the grid), its distance to each True voxel
    true = torch.nonzero(voxels).float()  # (k, j, i)
    for p, g in zip(points, got):
        kji = _nearest_voxel_kji(p, scale, shape)
        assert bool(g) == bool(((true - kji).norm(dim=1) <= 2.0).any())
    assert got.any() and not got.all()


@pytest.mark.parametrize("margin, margin_slices", [(2.5, 1.2), (1.5, 3.0)])
def test_voxel_guide_region_with_a_slice_margin_is_the_ellipsoid_around_each_voxel(margin, margin_slices):
    from imagetomesh.models.nudf import VoxelGuide
    from imagetomesh.nn.grid import isotropic_scale

    shape = (9, 9, 11)
    voxels = torch.zeros(shape, dtype=torch.bool)
    voxels[4, 4, 2] = voxels[6, 1, 8] = True
    scale = isotropic_scale(shape)
    inside = VoxelGuide(voxels, scale).region(margin, margin_slices)
    points = (torch.rand(3000, 3, generator=torch.Generator().manual_seed(1)) * 2.2 - 1.1) * scale
    got = inside(points)
    # slow: the voxel nearest the point (clamped into the grid), inside the ellipsoid around some True voxel
    true = torch.nonzero(voxels).float()  # (k, j, i)
    semi = torch.tensor([margin_slices, margin, margin])
    for p, g in zip(points, got):
        kji = _nearest_voxel_kji(p, scale, shape)
        assert bool(g) == bool((((true - kji) / semi) ** 2).sum(dim=1).le(1.0).any())
    assert got.any() and not got.all()
    with pytest.raises(ValueError, match="positive margins"):
        VoxelGuide(voxels, scale).region(margin, 0.0)


def test_voxel_guide_surface_area_counts_every_face_a_true_voxel_shows():
    from imagetomesh.models.nudf import VoxelGuide

    g = torch.Generator().manual_seed(2)
    shape = (6, 7, 5)
    voxels = torch.rand(shape, generator=g) < 0.4
    voxels[0, 3, 2] = voxels[5, 6, 4] = True  # on the grid's edge: those faces count too
    # slow: each True voxel's six neighbours, a face wherever the neighbour is False or beyond the grid
    expected = 0
    for k, j, i in torch.nonzero(voxels).tolist():
        for dk, dj, di in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            n = (k + dk, j + dj, i + di)
            inside = all(0 <= c < size for c, size in zip(n, shape))
            expected += not (inside and bool(voxels[n]))
    assert VoxelGuide(voxels, torch.ones(3)).surface_area() == expected
    cube = torch.zeros(5, 5, 5, dtype=torch.bool)
    cube[1:4, 1:4, 1:4] = True
    assert VoxelGuide(cube, torch.ones(3)).surface_area() == 6 * 9


def test_point_counts_grow_with_the_surface_beyond_the_reference_area():
    config = UDFMeshingConfig(initial_points=1500, dense_points=3000, poisson_points=2500, reference_area_voxels=600.0)
    assert config.for_area(600.0) is config and config.for_area(100.0) is config
    larger = config.for_area(1500.0)  # 2.5 times the reference: as densely spread, 2.5 times the points
    assert (larger.initial_points, larger.dense_points, larger.poisson_points) == (3750, 7500, 6250)
    assert replace(larger, initial_points=1500, dense_points=3000, poisson_points=2500) == config  # nothing else
    unreferenced = replace(config, reference_area_voxels=None)
    assert unreferenced.for_area(1e6) is unreferenced


def test_radius_normals_see_through_a_dense_thick_band():
    # 20,000 points within +-0.02 of a sphere of radius R: their 12 nearest neighbours span the band's
    # thickness as much as the surface, the points within 0.1 span the surface
    g = np.random.default_rng(0)
    d = g.normal(size=(20000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    dense = d * (R + g.uniform(-0.02, 0.02, size=(20000, 1)))
    samples = dense[:2000]
    nearest = np.abs(np.einsum("ij,ij->i", oriented_normals(samples, 12, reference=dense), d[:2000]))
    ball = np.abs(np.einsum("ij,ij->i", oriented_normals(samples, 12, reference=dense, radius=0.1), d[:2000]))
    assert np.median(ball) > 0.99 and np.median(nearest) < 0.9


def test_ball_covariance_is_the_scatter_of_each_ball():
    from scipy.spatial import cKDTree

    from imagetomesh.geometry.udf_meshing import _ball_covariance

    g = np.random.default_rng(1)
    reference, points = g.uniform(size=(300, 3)), g.uniform(size=(40, 3))
    tree = cKDTree(reference)
    balls = tree.query_ball_point(points, 0.15)
    _, nearest = tree.query(points, k=5)
    got = _ball_covariance(points, reference, balls, nearest)
    for n in range(len(points)):
        members = sorted(set(balls[n]) | (set(nearest[n]) if len(balls[n]) < 5 else set()))
        local = reference[members] - reference[members].mean(0)
        assert np.allclose(got[n], local.T @ local)


def test_initial_points_fill_a_small_region_uniformly():
    from imagetomesh.geometry.udf_meshing import _uniform_points

    lo, hi = -torch.ones(3), torch.ones(3)

    def corner(p):  # 1/8 of the box: about 250 of each round of 2000
        return (p > 0).all(1)

    points = _uniform_points(lo, hi, 2000, torch.Generator().manual_seed(0), corner)
    assert points.shape == (2000, 3) and bool(corner(points).all())
    assert abs(float(points.mean()) - 0.5) < 0.02  # uniform within the corner
    tiny = _uniform_points(lo, hi, 100, torch.Generator().manual_seed(0), lambda p: p.norm(dim=1) < 0.01)
    assert len(tiny) < 100  # a region too small for the rounds allowed: what was found


def ring_sdf(p, radius=0.6, half_thickness=0.7 * VOXEL, half_height=0.25):
    """Signed distance (positive outside) to a ring: a tube wall 1.4 voxels thick around the z axis,
    like a mandible's thin plate at 4 mm voxels."""
    q = torch.stack([(p[:, :2].norm(dim=1) - radius).abs() - half_thickness, p[:, 2].abs() - half_height], 1)
    return q.clamp(min=0).norm(dim=1) + q.max(dim=1).values.clamp(max=0)


RING_VOLUME = 2 * np.pi * 0.6 * (2 * 0.7 * VOXEL) * (2 * 0.25)


def ring_outward(points: np.ndarray) -> np.ndarray:
    p = torch.as_tensor(points).requires_grad_(True)
    (grad,) = torch.autograd.grad(ring_sdf(p).sum(), p)
    return grad.numpy()


def test_agree_with_flips_normals_against_the_direction_only():
    normals = np.array([[0.0, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 0]])
    directions = np.array([[0.0, 0, 2], [0, 0.1, -3], [0, 0, 0], [1, 0, 0]])
    assert np.array_equal(agree_with(normals, directions), [[0, 0, 1], [0, 0, -1], [1, 0, 0], [0, 1, 0]])


def test_an_outward_direction_meshes_a_thin_ring_closed_and_outward():
    config = UDFMeshingConfig(**{**FAST.to_dict(), "normal_radius_voxels": 1.5, "drop_voxels": 1.0})
    # without it (nor the field's own outside), orientation propagated along the spanning tree crosses the wall and
    # turns the inner face inside out: Poisson then fills the ring's hole (about 5x its volume)
    unguided = mesh_udf(lambda p: ring_sdf(p).abs(), *BOX, VOXEL, replace(config, field_grid_voxels=None))
    assert abs(abs(unguided.signed_volume()) / RING_VOLUME - 1) > 0.5
    mesh = mesh_udf(lambda p: ring_sdf(p).abs(), *BOX, VOXEL, config, outward=ring_outward)
    check = check_mesh(mesh, self_intersections=False)
    assert check.watertight and check.components == 1
    assert 0.9 < mesh.signed_volume() / RING_VOLUME < 1.1  # outward, the wall's volume
    v = mesh.vertices.astype(np.float64)
    a, b, c = (v[mesh.faces[:, n]] for n in range(3))
    facing = np.einsum("ij,ij->i", np.cross(b - a, c - a), ring_outward((a + b + c) / 3))
    assert np.mean(facing > 0) > 0.95  # faces point out of the wall on both of its sides


def test_the_fields_own_outside_meshes_a_thin_ring_closed_and_outward():
    """No outward direction given: the ring's field says which way is out (the hole reaches the box's faces)."""
    config = UDFMeshingConfig(**{**FAST.to_dict(), "normal_radius_voxels": 1.5, "drop_voxels": 1.0})
    mesh = mesh_udf(lambda p: ring_sdf(p).abs(), *BOX, VOXEL, config)
    check = check_mesh(mesh, self_intersections=False)
    assert check.watertight and check.components == 1
    assert 0.9 < abs(mesh.signed_volume()) / RING_VOLUME < 1.1
    outward = field_outward(lambda p: ring_sdf(p).abs(), *BOX, VOXEL, config)
    v = mesh.vertices.astype(np.float64)
    a, b, c = (v[mesh.faces[:, n]] for n in range(3))
    centres = (a + b + c) / 3
    assert np.mean(np.einsum("ij,ij->i", outward(centres), ring_outward(centres)) > 0) > 0.95


def test_field_outward_points_out_of_a_sphere_and_needs_an_inside_and_an_outside():
    outward = field_outward(sphere_udf, *BOX, VOXEL, FAST)
    directions = np.random.default_rng(2).normal(size=(500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for radius in (0.6 * R, R, 1.3 * R):  # inside, on and outside the surface
        cosine = np.einsum("ij,ij->i", outward(radius * directions), directions)
        assert cosine.min() > 0.5, radius
    on_sphere = R * directions
    assert field_directions(sphere_udf, *BOX, VOXEL, FAST, on_sphere) is not None
    assert field_outward(lambda p: torch.zeros(len(p)), *BOX, VOXEL, FAST) is None  # no point beyond the surface
    assert field_outward(lambda p: torch.ones(len(p)), *BOX, VOXEL, FAST) is None  # no surface: all outside
    with pytest.raises(ValueError, match="at least half"):
        field_outward(sphere_udf, *BOX, VOXEL, replace(FAST, field_grid_voxels=3.0, field_far_voxels=1.0))


def test_a_field_that_encloses_nothing_gives_no_directions():
    """An open sheet, and a sphere with a wide hole that lets the outside in: the field's outside surrounds their
    samples on both sides, and its directions there are unclear (they would flip the normals at random)."""
    rng = np.random.default_rng(3)
    on_plane = np.c_[rng.uniform(-0.8, 0.8, size=(2000, 2)), np.full(2000, 0.1)]
    assert field_outward(lambda p: (p[:, 2] - 0.1).abs(), *BOX, VOXEL, FAST) is not None
    assert field_directions(lambda p: (p[:, 2] - 0.1).abs(), *BOX, VOXEL, FAST, on_plane) is None
    below = R * rng.normal(size=(4000, 3))
    below = R * below / np.linalg.norm(below, axis=1, keepdims=True)
    below = below[below[:, 2] < 0.3]
    assert field_directions(capless_sphere_udf, *BOX, VOXEL, FAST, below) is None


def capless_sphere_udf(p):
    """Distance to the sphere of radius R without its cap above z = 0.8 R (a hole 0.6 R across)."""
    r = p.norm(dim=1).clamp(min=1e-9)
    rim = ((p[:, :2].norm(dim=1) - 0.6 * R) ** 2 + (p[:, 2] - 0.8 * R) ** 2).sqrt()
    return torch.where(p[:, 2] / r < 0.8, (r - R).abs(), rim)


def test_an_open_poisson_surface_is_closed_as_the_fallback():
    from imagetomesh.geometry.topology import icosphere
    from imagetomesh.geometry.udf_meshing import closed_largest_component

    verts, faces = icosphere(3, 0.5)
    holed = Mesh(verts.numpy(), faces.numpy()[faces.numpy()[:, 0] != 0])  # a hole around vertex 0
    assert not check_mesh(holed, self_intersections=False).watertight
    closed = closed_largest_component(holed, 100)
    assert check_mesh(closed, self_intersections=False).watertight and closed.signed_volume() > 0
    sphere = Mesh(verts.numpy(), faces.numpy())
    assert closed_largest_component(sphere, 100).num_faces == sphere.num_faces  # closed: unchanged


def test_voxel_guide_outward_points_out_of_a_voxel_ball():
    from imagetomesh.models.nudf import VoxelGuide
    from imagetomesh.nn.grid import isotropic_scale

    shape = (24, 30, 36)  # (D, H, W): an anisotropic grid, one frame unit per voxel on every axis
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    centre = np.array([17.5, 14.5, 11.5])  # (i, j, k)
    radius = 7.0
    ball = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= radius**2
    scale = isotropic_scale(shape)
    outward = VoxelGuide(torch.as_tensor(ball), scale).outward()
    g = np.random.default_rng(0)
    radial = g.normal(size=(500, 3))
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    index = centre + radial * (radius + g.uniform(-1.5, 1.5, size=(500, 1)))  # within 1.5 voxels of its surface
    half = (np.array(shape[::-1]) - 1) / 2
    points = (index / half - 1) * scale.numpy()  # (i, j, k) -> grid -> isotropic frame
    got = outward(points)
    cos = np.einsum("ij,ij->i", got, radial) / np.linalg.norm(got, axis=1)
    assert np.median(cos) > 0.95 and cos.min() > 0.5
    assert VoxelGuide(torch.zeros(shape, dtype=torch.bool), scale).outward() is None


def test_poisson_depth_is_the_least_depth_whose_cells_are_fine_enough():
    from imagetomesh.geometry.udf_meshing import POISSON_CUBE_SCALE, poisson_depth

    rng = np.random.default_rng(0)
    for extent in [0.5, 3.0, 47.0, 120.0, 131.0, 500.0]:
        for cell in [0.5, 1.0, 1.5]:
            samples = rng.random((200, 3)) * np.array([extent / 3, extent, extent / 2])
            config = UDFMeshingConfig(poisson_depth=6, poisson_cell_voxels=cell)
            cube = POISSON_CUBE_SCALE * np.ptp(samples, axis=0).max()
            slow = 6  # deepen one level at a time until a cell is no longer than `cell` voxels of 0.5
            while cube / 2**slow > cell * 0.5:
                slow += 1
            assert poisson_depth(samples, 0.5, config) == slow
    assert poisson_depth(rng.random((10, 3)) * 1000, 0.5, UDFMeshingConfig(poisson_depth=6)) == 6


def test_finer_poisson_cells_keep_a_thin_long_tube_round():
    """A tube 3 voxels across and 40 long in a box 47 voxels wide: at depth 5 its octree cells are about 1.5 voxels;
    cells of at most 1 voxel (depth 6 here) put its surface nearer the true radius."""
    radius, half_length = 1.5 * VOXEL, 0.85

    def tube_udf(p):
        axial = (p[:, 2].abs() - half_length).clamp(min=0)
        radial = p[:, :2].norm(dim=1) - radius
        inside = torch.minimum(radial.clamp(max=0).abs(), (half_length - p[:, 2].abs()).clamp(min=0))
        outside = torch.stack([radial.clamp(min=0), axial], 1).norm(dim=1)
        return torch.where((radial < 0) & (axial == 0), inside, outside)

    errors = {}
    for cell in [None, 1.0]:
        config = replace(FAST, poisson_depth=5, poisson_cell_voxels=cell)
        mesh = mesh_udf(tube_udf, *BOX, VOXEL, config)
        v = mesh.vertices
        middle = np.abs(v[:, 2]) < half_length - 4 * VOXEL
        errors[cell] = np.abs(np.linalg.norm(v[middle, :2], axis=1) - radius).mean() / VOXEL
    assert errors[1.0] < 0.5 * errors[None], errors


def test_an_octree_complete_only_to_depth_3_reconstructs_the_same_sphere():
    from imagetomesh.geometry.distances import near_surface_distance
    from imagetomesh.geometry.udf_meshing import screened_poisson

    rng = np.random.default_rng(1)
    normals = rng.normal(size=(2500, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = 20.0 * normals
    full, partial = (screened_poisson(points, normals, depth=6, full_depth=d) for d in (5, 3))
    assert partial.num_faces > 1000 and check_mesh(partial).watertight
    radius = np.linalg.norm(partial.vertices, axis=1)
    assert np.abs(radius - 20.0).max() < 0.5  # cells are 44 / 64 = 0.69 long
    gap, _ = near_surface_distance(
        torch.as_tensor(partial.vertices, dtype=torch.float64),
        torch.as_tensor(full.vertices, dtype=torch.float64),
        torch.as_tensor(full.faces, dtype=torch.int64),
    )
    assert gap.max() < 0.05  # the same surface: 0.007 here, a hundredth of a cell


def test_holes_touching_at_a_vertex_are_closed_without_hanging():
    """A NUDF organ surface as ``mesh_udf`` trims it (screened Poisson, unsupported triangles removed), saved from a
    validation run in session 41: 1,012 boundary edges whose loops touch at 56 vertices. pymeshlab's hole filler
    never returned on it (stopped after 20 minutes); with its non-manifold vertices split first it closes the surface
    at once. Run in a child process, so that a regression fails here instead of stopping the suite."""
    import subprocess
    import sys
    from pathlib import Path

    fixture = Path(__file__).parent / "data" / "trimmed_poisson_surface_touching_holes.npz"
    code = (
        "import sys, numpy as np\n"
        "from imagetomesh.core.mesh import Mesh\n"
        "from imagetomesh.geometry.quality import check_mesh\n"
        "from imagetomesh.geometry.udf_meshing import close_holes\n"
        "d = np.load(sys.argv[1])\n"
        "mesh = Mesh(d['vertices'].astype(np.float64), d['faces'].astype(np.int64))\n"
        "closed = close_holes(mesh, 100000)\n"
        "check = check_mesh(closed, self_intersections=False)\n"
        "before = check_mesh(mesh, self_intersections=False)\n"
        "print(before.watertight, check.watertight, check.manifold, check.components)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(fixture)], capture_output=True, text=True, timeout=120, check=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail("close_holes did not return within 120 s on a surface whose holes touch at vertices")
    assert done.stdout.split() == ["False", "True", "True", "1"]  # open before; one closed manifold surface after


def fan(triangles: int, at: float) -> Mesh:
    """A connected fan of ``triangles`` triangles around one vertex, centred at x = ``at``."""
    angles = np.linspace(0, np.pi, triangles + 1)
    rim = np.stack([at + np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    vertices = np.vstack([[at, 0.0, 0.0], rim]).astype(np.float32)
    return Mesh(vertices, np.array([[0, i, i + 1] for i in range(1, triangles + 1)]))


def test_pieces_kept_by_their_share_of_the_largest():
    """``min_fraction`` keeps every piece with at least that share of the largest's triangles, None the largest
    alone (reference: the pieces' own triangle counts)."""
    counts = [40, 40, 10, 3]
    pieces = [fan(n, 3.0 * k) for k, n in enumerate(counts)]
    offsets = np.cumsum([0] + [p.num_vertices for p in pieces[:-1]])
    joined = Mesh(np.vstack([p.vertices for p in pieces]), np.vstack([p.faces + o for p, o in zip(pieces, offsets)]))
    assert largest_component(joined).num_faces == 40
    for fraction in (0.05, 0.2, 0.3, 1.0):
        kept = largest_component(joined, fraction)
        assert kept.num_faces == sum(n for n in counts if n >= fraction * max(counts))
        assert kept.num_vertices == sum(n + 2 for n in counts if n >= fraction * max(counts))  # unused ones dropped


def test_meshing_keeps_both_spheres_with_a_piece_fraction():
    mesh = mesh_udf(two_spheres_udf, *BOX, VOXEL, replace(FAST, min_piece_fraction=0.5))
    check = check_mesh(mesh, self_intersections=False)
    assert check.watertight and check.components == 2
    assert (mesh.vertices[:, 0] < -0.25).any() and (mesh.vertices[:, 0] > 0.25).any()
    assert check_mesh(mesh_udf(two_spheres_udf, *BOX, VOXEL, FAST), self_intersections=False).components == 1
