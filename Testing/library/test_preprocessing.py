"""Model-grid preprocessing: exact resampling on the lattice, independence from the storage layout."""

import numpy as np
import pytest
import torch

from imagetomesh.core import Volume
from imagetomesh.core.volume import transform_points
from imagetomesh.preprocessing import GridSpec, model_grid_transform, prepare_image, resample_to_grid

RAS_ALIGNED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _image(shape=(35, 51, 33), seed=0):
    rng = np.random.default_rng(seed)
    return Volume(
        rng.normal(size=shape).astype(np.float32),
        spacing=(1, 1, 1),
        origin=(12.0, -3.0, 40.0),
        direction=np.diag([-1.0, -1.0, 1.0]),
    )


def _stored_differently(volume: Volume, perm=(2, 0, 1), flips=(True, False, True)) -> Volume:
    """The same physical image stored with its (i, j, k) axes permuted and flipped."""
    array = volume.array  # (k, j, i)
    ijk_array = np.transpose(array, (2, 1, 0))  # (i, j, k)
    new = np.transpose(ijk_array, perm)
    direction = volume.direction[:, list(perm)].copy()
    spacing = volume.spacing[list(perm)]
    size = np.array(new.shape)
    origin = volume.origin.copy()
    for axis, flip in enumerate(flips):
        if flip:
            new = np.flip(new, axis)
            origin = origin + direction[:, axis] * spacing[axis] * (size[axis] - 1)
            direction[:, axis] *= -1
    return Volume(np.ascontiguousarray(np.transpose(new, (2, 1, 0))), spacing, origin, direction)


def test_stored_differently_is_the_same_physical_image():
    image = _image()
    other = _stored_differently(image)
    # voxel (i, j, k) of the original sits where the other image has the same value
    ijk = np.array([[3, 7, 11]])
    lps = transform_points(image.index_to_lps, ijk)
    back = np.round(transform_points(other.lps_to_index, lps)).astype(int)[0]
    assert other.array[back[2], back[1], back[0]] == image.array[11, 7, 3]


def test_grid_input_is_the_same_whatever_the_storage_layout():
    spec = GridSpec((48, 56, 40), (1.0, 1.0, 1.0), RAS_ALIGNED)
    image = _image()
    a, ta = prepare_image(image, spec, warn=False)
    b, tb = prepare_image(_stored_differently(image), spec, warn=False)
    np.testing.assert_allclose(ta.grid_to_lps, tb.grid_to_lps, atol=1e-9)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_on_lattice_resampling_copies_voxels_exactly():
    spec = GridSpec((48, 56, 40), (1.0, 1.0, 1.0), RAS_ALIGNED)
    image = _image()
    label = image.with_array((image.array > 1.0).astype(np.float32))
    on_grid = resample_to_grid(label, model_grid_transform(label, spec), "bilinear")
    assert float(on_grid.sum()) == pytest.approx(float(label.array.sum()))
    values = on_grid.numpy()
    assert np.all(np.minimum(np.abs(values), np.abs(values - 1.0)) < 1e-5)  # copies, up to rounding


def test_spacing_warning_names_the_difference():
    spec = GridSpec((16, 16, 16), (1.0, 1.0, 1.0), RAS_ALIGNED)
    coarse = Volume(np.zeros((8, 8, 8), np.float32), spacing=(2, 2, 2), direction=np.diag([-1.0, -1.0, 1.0]))
    with pytest.warns(UserWarning, match="spacing"):
        prepare_image(coarse, spec)


def _resample_whole(volume, target, mode, fill):
    """The resampling without reading only the footprint (the whole image through grid_sample)."""
    import torch
    import torch.nn.functional as F

    from imagetomesh.core.transforms import index_to_grid_affine

    theta = index_to_grid_affine(volume.size_ijk) @ volume.lps_to_index @ target.grid_to_lps
    d, h, w = target.shape
    at = F.affine_grid(torch.tensor(theta[:3], dtype=torch.float32)[None], [1, 1, d, h, w], align_corners=True)
    source = torch.as_tensor(np.asarray(volume.array, dtype=np.float32))[None, None]
    inside = F.grid_sample(torch.ones_like(source), at, mode="nearest", align_corners=True, padding_mode="zeros")
    values = F.grid_sample(source, at, mode=mode, align_corners=True, padding_mode="border")
    return torch.where(inside > 0.5, values, torch.full_like(values, fill))[0, 0]


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_a_small_grid_reads_only_its_footprint_with_the_same_result(mode):
    from imagetomesh.preprocessing import model_grid_transform

    rng = np.random.default_rng(0)
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    big = Volume(rng.normal(size=(60, 70, 80)).astype(np.float32), (1.0, 0.9, 1.3), (5.0, -3.0, 2.0), rotation)
    spec = GridSpec((12, 10, 14), (1.1, 1.2, 0.8), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    for centre in ([30.0, 20.0, 40.0], [5.0, -3.0, 2.0], [90.0, 40.0, 70.0]):  # inside, at a corner, off the edge
        target = model_grid_transform(big, spec, np.array(centre))
        fast = resample_to_grid(big, target, mode, fill=-7.0)
        slow = _resample_whole(big, target, mode, fill=-7.0)
        assert torch.allclose(fast, slow, atol=1e-4), centre
    far = model_grid_transform(big, spec, np.array([1e4, 0.0, 0.0]))
    assert torch.all(resample_to_grid(big, far, mode, fill=-7.0) == -7.0)


def test_resample_volume_keeps_the_field_of_view():
    from imagetomesh.preprocessing import resample_volume

    rng = np.random.default_rng(1)
    image = Volume(
        rng.normal(size=(6, 7, 8)).astype(np.float32), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), np.diag([-1.0, -1.0, 1.0])
    )
    same = resample_volume(image, image.spacing, image.size_ijk)
    np.testing.assert_allclose(same.array, image.array, atol=1e-5)
    assert np.allclose(same.origin, image.origin)
    finer = resample_volume(image, (0.5, 1.0, 1.5), (16, 14, 12))
    # the voxel-edge box is the same: first corner and extent
    corner = lambda v: v.origin - 0.5 * v.direction @ np.asarray(v.spacing)  # noqa: E731
    assert np.allclose(corner(finer), corner(image))
    assert np.allclose(finer.size_ijk * finer.spacing, image.size_ijk * image.spacing)


def _thinned_grid(image: Volume, spacing, centre=None):
    """A (10, 12, 14) grid of ``spacing`` (x, y, z) mm on ``image``, centred on its centre or on ``centre`` (LPS)."""
    spec = GridSpec((10, 12, 14), spacing, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return model_grid_transform(image, spec, None if centre is None else np.asarray(centre, dtype=float))


def test_antialias_sigmas_follow_the_thinning_per_image_axis():
    from imagetomesh.preprocessing import antialias_sigmas

    noise = np.random.default_rng(4).normal(size=(30, 40, 50)).astype(np.float32)  # varies from voxel to voxel
    image = Volume(noise, (0.5, 1.0, 2.0))  # (i, j, k) spacing
    box = lambda f: np.sqrt((f * f - 1.0) / 12.0)  # noqa: E731  a voxel f times as wide, less the voxel's own width
    # grid 4 mm along x, 1 mm along y, 2 mm along z: thinned 8x along i, not along j or k
    # noise, whose edges rise from one voxel to the next (resolved_scale 1), gets the full spread
    np.testing.assert_allclose(antialias_sigmas(image, _thinned_grid(image, (4.0, 1.0, 2.0))), [0.0, 0.0, box(8)])
    np.testing.assert_allclose(antialias_sigmas(image, _thinned_grid(image, (4.0, 4.0, 4.0))), [box(2), box(4), box(8)])
    # a grid finer than the image, or thinning it by less than ~1.09 (a one-voxel kernel), reads it as it is
    np.testing.assert_allclose(antialias_sigmas(image, _thinned_grid(image, (0.54, 1.08, 0.5))), [0.0, 0.0, 0.0])
    # the same image stored with permuted and flipped axes gets the same smoothing along the same physical axes
    stored = _stored_differently(image, perm=(2, 0, 1), flips=(True, False, True))
    sigma = antialias_sigmas(stored, _thinned_grid(stored, (4.0, 1.0, 2.0)))
    # stored (i, j, k) = original (k, i, j)
    np.testing.assert_allclose(sigma[::-1][[1, 2, 0]], [box(8), 0.0, 0.0])
    # an image without detail (here: none at all) is not smoothed
    flat = Volume(np.zeros((30, 40, 50), np.float32), (0.5, 1.0, 2.0))
    np.testing.assert_array_equal(antialias_sigmas(flat, _thinned_grid(flat, (4.0, 4.0, 4.0))), [0.0, 0.0, 0.0])


def _sharp_phantom(rng, shape=(12, 8, 8), block=5) -> np.ndarray:
    """``(D, H * block, W * block)`` float32: random tissue values constant over blocks of ``block`` voxels in-plane,
    with sharp edges between them, as a scan's organs at its own spacing."""
    return np.repeat(np.repeat(rng.normal(size=shape), block, 1), block, 2).astype(np.float32)


def _squared_steps(lines: np.ndarray, n: int) -> float:
    """The sum of the squared differences of voxels ``n`` apart along the last axis, pair by pair."""
    return float(sum(np.sum((lines[..., t + n] - lines[..., t]) ** 2) for t in range(lines.shape[-1] - n)))


def test_ramp_step_ratio_is_that_of_straight_ramps():
    from imagetomesh.preprocessing import ramp_step_ratio

    for lag in (2, 3, 4, 6):
        for width in range(1, 8):
            # 0 to 1 in `width` equal steps
            edge = np.concatenate([np.zeros(20), np.arange(1, width + 1) / width, np.ones(20)])
            ratio = _squared_steps(edge, lag) / _squared_steps(edge, 1)
            assert ramp_step_ratio(width, lag) == pytest.approx(ratio, rel=1e-12), (lag, width)


def _resolved_scale_slow(array: np.ndarray, axis: int, lag: int) -> float:
    """:func:`resolved_scale` written out for an array small enough to be read whole: every voxel pair summed, then
    the ramp width read off a fine table of :func:`ramp_step_ratio`."""
    from imagetomesh.preprocessing import ramp_step_ratio

    lines = np.moveaxis(array.astype(np.float64), axis, -1)
    ratio = _squared_steps(lines, lag) / _squared_steps(lines, 1)
    widths = np.arange(1.0, lag + 1e-9, 1e-4)
    table = np.array([ramp_step_ratio(w, lag) for w in widths])
    if ratio <= table[0]:
        return 1.0
    if ratio >= table[-1]:
        return float(lag)
    return float(widths[np.argmin(np.abs(table - ratio))])


def test_resolved_scale_tells_a_scan_from_an_interpolated_copy():
    from imagetomesh.preprocessing import resample_volume, resolved_scale

    rng = np.random.default_rng(5)
    phantom = _sharp_phantom(rng)
    coarse = Volume(phantom, (4.0, 4.0, 2.5))
    fine = resample_volume(coarse, (1.0, 1.0, 2.5), (160, 160, 12))  # resampled to 1 mm in-plane: straight ramps
    small = fine.array[:, 30:62, 40:80] + rng.normal(0.0, 0.02, (12, 32, 40)).astype(np.float32)
    for axis, lag in ((0, 2), (1, 3), (1, 4), (2, 4)):
        assert resolved_scale(small, axis, lag) == pytest.approx(_resolved_scale_slow(small, axis, lag), abs=2e-4)
    assert resolved_scale(rng.normal(size=(20, 160, 160)), 2, 4) == 1.0  # independent voxels: noise
    assert resolved_scale(phantom, 2, 4) == 1.0  # sharp edges: a scan at its own spacing
    assert resolved_scale(fine.array, 2, 4) == 4.0 and resolved_scale(fine.array, 1, 4) == 4.0
    twice = resample_volume(Volume(phantom, (2.0, 2.0, 2.5)), (1.0, 1.0, 2.5), (80, 80, 12))  # from 2 mm
    assert 2.0 < resolved_scale(twice.array, 2, 4) < 3.0
    noisy = fine.array + rng.normal(0.0, 0.3, fine.array.shape).astype(np.float32)  # a native 1 mm scan's noise
    assert resolved_scale(noisy, 2, 4) == 1.0
    assert resolved_scale(fine.array, 0, 1) == 1.0  # a lag of one voxel: nothing to compare
    assert resolved_scale(np.zeros((4, 5, 6)), 2, 3) == 3.0  # no variation: as smooth as asked about


def test_an_interpolated_copy_is_not_smoothed_again():
    """A 4 mm image resampled to 1 mm in-plane and read back on a 4 mm grid: its edges already rise over 4 mm, so it
    is read as it is and comes back as close to the 4 mm image as its interpolation allows (a scan reconstructed at
    1 mm would be smoothed by 1.12 voxel in-plane, which blurs the copy's edges twice); the same copy with a native
    1 mm scan's noise gets that full smoothing."""
    from imagetomesh.preprocessing import antialias_sigmas, resample_volume

    rng = np.random.default_rng(0)
    coarse = Volume(_sharp_phantom(rng), (4.0, 4.0, 2.5))
    fine = resample_volume(coarse, (1.0, 1.0, 2.5), (160, 160, 12))
    target = _thinned_grid(fine, (4.0, 4.0, 2.5))
    full = np.sqrt(15.0 / 12.0)
    np.testing.assert_array_equal(antialias_sigmas(fine, target), [0.0, 0.0, 0.0])
    truth = resample_to_grid(coarse, _thinned_grid(coarse, (4.0, 4.0, 2.5)), "bilinear")
    inner = (slice(None), slice(2, -2), slice(2, -2))  # away from the grid's edge, where the copy's border is read

    def error(antialias) -> float:
        return (resample_to_grid(fine, target, "bilinear", antialias=antialias) - truth)[inner].abs().mean().item()

    assert error(True) < 0.6 * error(np.array([0.0, full, full]))
    noisy = fine.with_array(fine.array + rng.normal(0.0, 0.3, fine.array.shape).astype(np.float32))
    np.testing.assert_allclose(antialias_sigmas(noisy, target), [0.0, full, full])


@pytest.mark.parametrize("centre", [None, (20.0, 15.0, 40.2), (-3.0, 2.0, 1.3)])  # whole image, inside, at a corner
def test_antialiased_resampling_equals_smoothing_the_whole_image_first(centre):
    from scipy import ndimage

    from imagetomesh.preprocessing import antialias_sigmas

    rng = np.random.default_rng(3)
    image = Volume(rng.normal(size=(40, 60, 70)).astype(np.float32), (0.7, 0.9, 1.0), (0.0, 0.0, 0.0))
    target = _thinned_grid(image, (3.0, 2.5, 1.0), centre)
    sigma = antialias_sigmas(image, target)
    assert sigma[2] > 1.0 and sigma[0] == 0.0
    smoothed = image.with_array(ndimage.gaussian_filter(image.array, sigma, mode="nearest"))
    slow = _resample_whole(smoothed, target, "bilinear", fill=-5.0)
    fast = resample_to_grid(image, target, "bilinear", fill=-5.0, antialias=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    before = image.array.copy()
    resample_to_grid(image, target, "bilinear", antialias=True)
    np.testing.assert_array_equal(image.array, before)  # a float32 input is filtered in a copy unless overwrite
    scratch = image.with_array(image.array.copy())
    in_place = resample_to_grid(scratch, target, "bilinear", fill=-5.0, antialias=True, overwrite=True)
    assert torch.equal(in_place, fast)


def test_a_fine_noisy_image_reads_like_a_coarse_one_on_the_grid():
    """White noise of one voxel, read by a grid 4x coarser in-plane: without antialiasing the grid reads two or four
    voxels' mean (std 0.5 of a voxel's; the grid's points lie half-way between the image's), with it about the noise
    of 4 x 4 voxels averaged (0.25; the Gaussian of sigma 1.12 gives 0.25 before the trilinear read); an image at
    the grid's spacing is copied as it is."""
    rng = np.random.default_rng(0)
    fine = Volume(rng.normal(size=(20, 160, 160)).astype(np.float32), (1.0, 1.0, 2.5))
    target = _thinned_grid(fine, (4.0, 4.0, 2.5))
    plain = resample_to_grid(fine, target, "bilinear").std().item()
    smoothed = resample_to_grid(fine, target, "bilinear", antialias=True).std().item()
    assert plain > 0.45 and 0.15 < smoothed < 0.27, (plain, smoothed)
    coarse = Volume(rng.normal(size=(20, 40, 40)).astype(np.float32), (4.0, 4.0, 2.5))
    on_lattice = _thinned_grid(coarse, (4.0, 4.0, 2.5))
    assert torch.equal(
        resample_to_grid(coarse, on_lattice, "bilinear", antialias=True),
        resample_to_grid(coarse, on_lattice, "bilinear"),
    )
