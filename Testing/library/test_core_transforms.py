"""Coordinate maps: index <-> LPS <-> grid <-> RAS round trips on awkward headers."""

import numpy as np
import pytest
import torch

from imagetomesh.core import GridTransform, Mesh, Volume, grid_to_index, index_to_grid, lps_to_ras, ras_to_lps
from imagetomesh.core.volume import transform_points
from imagetomesh.errors import InputError

# A KiTS19-like header: axes permuted and flipped, anisotropic spacing.
KITS_DIRECTION = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])


def _volumes():
    rng = np.random.default_rng(0)
    yield Volume(np.zeros((5, 6, 7)), spacing=(1, 1, 1))
    yield Volume(np.zeros((11, 9, 7)), spacing=(0.5, 0.92, 0.92), origin=(0, 0, 0), direction=KITS_DIRECTION)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    yield Volume(np.zeros((4, 8, 6)), spacing=(0.7, 1.3, 2.5), origin=(-100.0, 35.5, 2.25), direction=q)


@pytest.mark.parametrize("volume", list(_volumes()))
def test_index_lps_grid_round_trip(volume):
    rng = np.random.default_rng(1)
    ijk = rng.uniform(-1, 1, size=(200, 3)) * volume.size_ijk + volume.size_ijk / 2
    lps = transform_points(volume.index_to_lps, ijk)
    back = transform_points(volume.lps_to_index, lps)
    np.testing.assert_allclose(back * volume.spacing, ijk * volume.spacing, atol=1e-5)

    gt = GridTransform.of_volume(volume)
    grid = gt.to_grid(lps)
    np.testing.assert_allclose(gt.to_lps(grid), lps, atol=1e-5)
    np.testing.assert_allclose(grid_to_index(index_to_grid(ijk, volume.size_ijk), volume.size_ijk), ijk, atol=1e-9)
    np.testing.assert_allclose(ras_to_lps(lps_to_ras(lps)), lps, atol=1e-12)


def test_index_lps_matches_definition_slowly():
    volume = list(_volumes())[1]
    i, j, k = 3.0, 2.0, 5.0
    expected = (
        volume.origin
        + volume.direction[:, 0] * volume.spacing[0] * i
        + volume.direction[:, 1] * volume.spacing[1] * j
        + volume.direction[:, 2] * volume.spacing[2] * k
    )
    np.testing.assert_allclose(transform_points(volume.index_to_lps, [[i, j, k]])[0], expected, atol=1e-12)


def test_grid_matches_grid_sample_axis_order():
    """A voxel found by our grid coordinates is the voxel grid_sample reads there."""
    rng = np.random.default_rng(2)
    array = rng.normal(size=(4, 5, 6)).astype(np.float32)  # (D, H, W)
    size_ijk = np.array([6, 5, 4])
    for i, j, k in [(0, 0, 0), (5, 4, 3), (2, 1, 3), (4, 0, 1)]:
        g = index_to_grid(np.array([[i, j, k]], dtype=float), size_ijk)
        sampled = torch.nn.functional.grid_sample(
            torch.from_numpy(array)[None, None],
            torch.tensor(g, dtype=torch.float32).view(1, 1, 1, 1, 3),
            align_corners=True,
        )
        assert sampled.item() == pytest.approx(array[k, j, i], abs=1e-5)


def test_grid_corners_are_voxel_centres():
    volume = Volume(np.zeros((4, 5, 6)), spacing=(2, 3, 4), origin=(10, 20, 30))
    gt = GridTransform.of_volume(volume)
    np.testing.assert_allclose(gt.to_lps([[-1, -1, -1]])[0], [10, 20, 30])
    np.testing.assert_allclose(gt.to_lps([[1, 1, 1]])[0], [10 + 5 * 2, 20 + 4 * 3, 30 + 3 * 4])


def test_a_grid_of_lattice_puts_each_voxel_where_its_axes_say():
    """``GridTransform.of_lattice``'s voxel (i, j, k) is ``origin + i a + j b + k c``, written out per voxel, and the
    grid of a volume's own lattice is :meth:`GridTransform.of_volume`."""
    axes = np.array([[-3.9, 0.0, 0.1], [0.0, -3.9, 0.0], [0.2, 0.0, 2.5]])
    origin = np.array([-101.7, 55.1, -12.4])
    gt = GridTransform.of_lattice(axes, origin, (5, 4, 3))
    assert gt.shape == (3, 4, 5)
    for i, j, k in [(0, 0, 0), (4, 3, 2), (1, 2, 0), (3, 0, 1)]:
        expected = origin + i * axes[:, 0] + j * axes[:, 1] + k * axes[:, 2]
        np.testing.assert_allclose(transform_points(gt.index_to_lps, [[i, j, k]])[0], expected, atol=1e-9)
    volume = list(_volumes())[1]
    own = GridTransform.of_lattice(
        volume.direction * np.asarray(volume.spacing)[None, :], volume.origin, volume.size_ijk
    )
    expected = GridTransform.of_volume(volume)
    assert own.shape == expected.shape and np.allclose(own.grid_to_lps, expected.grid_to_lps)


def test_reflection_keeps_faces_outward():
    tetra = Mesh(
        np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]), np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    )
    assert tetra.signed_volume() > 0
    volume = list(_volumes())[1]
    moved = tetra.transformed(volume.index_to_lps)
    assert moved.signed_volume() > 0


@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 4, 5)])
def test_volume_rejects_non_3d(shape):
    with pytest.raises(InputError, match="3D"):
        Volume(np.zeros(shape))


def test_mesh_rejects_out_of_range_faces():
    with pytest.raises(ValueError):
        Mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]))
