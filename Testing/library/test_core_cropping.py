"""Cropping keeps every kept voxel at its LPS position, by index box and by an (oblique) LPS box."""

import numpy as np
import pytest

from imagetomesh.core.cropping import bounding_box, crop_to_box, crop_volume
from imagetomesh.core.volume import Volume, transform_points
from imagetomesh.errors import InputError


def oblique_volume():
    angle = np.deg2rad(30)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    array = np.arange(6 * 7 * 8, dtype=np.int32).reshape(6, 7, 8)
    return Volume(array, (0.5, 1.0, 2.0), (10.0, -5.0, 3.0), direction)


def test_bounding_box_is_tight_and_none_when_empty():
    mask = np.zeros((5, 6, 7), bool)
    mask[1:3, 2, 4:7] = True
    assert bounding_box(mask) == (slice(1, 3), slice(2, 3), slice(4, 7))
    assert bounding_box(mask.astype(np.uint8) * 3) == bounding_box(mask)
    assert bounding_box(np.zeros((2, 2, 2))) is None


def _slow_box(mask):
    """Obviously correct: the min and max index of every nonzero voxel."""
    where = np.argwhere(np.asarray(mask) != 0)
    if where.size == 0:
        return None
    lo, hi = where.min(0), where.max(0) + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


@pytest.mark.parametrize("chunk", [1 << 24, 7])  # 7 voxels: one slice per slab, many slabs
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, bool])
def test_bounding_box_equals_the_slow_reference(monkeypatch, chunk, dtype):
    import imagetomesh.core.cropping as cropping

    monkeypatch.setattr(cropping, "_CHUNK_VOXELS", chunk)
    rng = np.random.default_rng(3)
    for trial in range(40):
        shape = tuple(rng.integers(1, 12, size=3))
        array = np.zeros(shape, dtype=np.float64)
        n = int(rng.integers(0, 4))
        idx = tuple(rng.integers(0, s, size=n) for s in shape)
        array[idx] = rng.choice([1, 2, 3, -1] if dtype is not np.uint8 else [1, 2, 3], size=n)
        array = array.astype(dtype)
        assert bounding_box(array) == _slow_box(array), (trial, shape)
        for value in (1, 2):
            if dtype is bool and value == 2:
                continue
            assert bounding_box(array, value) == _slow_box(array == value), (trial, value)
    nan = np.zeros((4, 5, 6), np.float32)
    nan[2, 3, 1] = np.nan  # NaN != 0: counted, as ``array != 0`` counts it
    assert bounding_box(nan) == (slice(2, 3), slice(3, 4), slice(1, 2))


def test_bounding_box_of_a_value_crops_before_comparing():
    """Only the nonzero box is compared with ``value``: a label far from the rest is still found,
    and a value absent inside the nonzero box gives None."""
    labels = np.zeros((40, 30, 20), np.uint8)
    labels[3:5, 2:4, 1:3] = 1
    labels[30:33, 20:28, 15:19] = 2
    assert bounding_box(labels, 2) == (slice(30, 33), slice(20, 28), slice(15, 19))
    assert bounding_box(labels, 1) == (slice(3, 5), slice(2, 4), slice(1, 3))
    assert bounding_box(labels) == (slice(3, 33), slice(2, 28), slice(1, 19))
    assert bounding_box(labels, 7) is None


def test_crop_to_box_keeps_lps_positions_and_clips_the_margin():
    volume = oblique_volume()
    crop = crop_to_box(volume, (slice(2, 4), slice(0, 3), slice(5, 8)), margin=1)
    assert crop.shape == (4, 4, 4)  # k 1..4, j 0..3 (clipped), i 4..7 (clipped)
    assert np.array_equal(crop.array, volume.array[1:5, 0:4, 4:8])
    first = transform_points(volume.index_to_lps, [[4.0, 0.0, 1.0]])
    assert np.allclose(crop.origin, first[0])


def test_crop_to_box_with_fill_equals_the_voxel_by_voxel_lookup():
    volume = oblique_volume()
    crop = crop_to_box(volume, (slice(0, 3), slice(4, 7), slice(2, 5)), margin=2, fill=-7)
    assert crop.shape == (7, 7, 7)  # the whole grown box, though it leaves the image on four sides
    # each voxel of the crop, by its LPS position, is the image's voxel there, or the fill outside the image
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in crop.size_ijk), indexing="ij"), -1).reshape(-1, 3)
    source = np.rint(transform_points(volume.lps_to_index, transform_points(crop.index_to_lps, ijk))).astype(int)
    for (i, j, k), (si, sj, sk) in zip(ijk, source):
        inside = all(0 <= v < n for v, n in zip((si, sj, sk), volume.size_ijk))
        assert crop.array[k, j, i] == (volume.array[sk, sj, si] if inside else -7)


def test_crop_volume_by_lps_corners_equals_the_index_box():
    volume = oblique_volume()
    corners = transform_points(volume.index_to_lps, [[1.2, 2.0, 0.0], [4.7, 5.0, 3.0]])
    crop = crop_volume(volume, corners)
    assert np.array_equal(crop.array, crop_to_box(volume, (slice(0, 4), slice(2, 6), slice(1, 6))).array)
    assert np.array_equal(crop_volume(volume, corners, margin=1).array, volume.array[0:5, 1:7, 0:7])
    with pytest.raises(InputError, match="ROI lies outside the image"):
        crop_volume(volume, transform_points(volume.index_to_lps, [[20, 20, 20], [30, 30, 30]]))
