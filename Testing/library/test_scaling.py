"""Bounded memory and work on big inputs (issue 18): what each bound changes, and that it changes nothing else.

Whole-image statistics applied to a grid's footprint, the inside test without a volume of ones, the
body box in slabs, batches split at the model's cap, the distance field of a large box on a coarser
lattice, the seeded subset of a dense point cloud, and the fast path of plain CSV points.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imagetomesh.core import Volume
from imagetomesh.core.cropping import bounding_box
from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.topology import icosphere
from imagetomesh.models.protocol import SegmentationModel
from imagetomesh.preprocessing import (
    GridSpec,
    intensity_map,
    normalise_ct,
    normalise_intensity,
    prepare_image,
    resample_to_grid,
)

RAS_ALIGNED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


# --- preprocessing ---------------------------------------------------------------------------------
def test_intensity_map_is_the_whole_volume_normalisation():
    rng = np.random.default_rng(0)
    mri = (rng.normal(size=(20, 30, 40)) * 120 + 900).astype(np.float32)
    np.testing.assert_allclose(intensity_map(mri, "zscore")(mri), normalise_intensity(mri), atol=1e-6)
    ct = rng.integers(-1500, 3500, size=(10, 20, 30)).astype(np.int16)
    np.testing.assert_allclose(intensity_map(ct, "ct")(ct), normalise_ct(ct), atol=1e-7)
    flat = np.full((4, 5, 6), 7.0, np.float32)  # no spread: shifted to 0, not divided by 0
    np.testing.assert_array_equal(intensity_map(flat, "zscore")(flat), normalise_intensity(flat))


def test_a_small_grid_on_a_big_image_normalises_only_its_footprint_with_whole_image_statistics():
    rng = np.random.default_rng(1)
    big = Volume((rng.normal(size=(90, 100, 110)) * 50 + 300).astype(np.float32), direction=np.diag([-1.0, -1, 1]))
    big.array[40:50, 45:55, 50:60] += 400  # an "organ" in the middle
    spec = GridSpec((12, 14, 10), (1.0, 1.0, 1.0), RAS_ALIGNED)
    fast, transform = prepare_image(big, spec, warn=False)
    whole = big.with_array(normalise_intensity(big.array))
    slow = resample_to_grid(whole, transform, "bilinear", float(whole.array.min()))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def _inside_by_sampling_ones(sample_at, shape):
    ones = torch.ones(1, 1, *shape)
    return F.grid_sample(ones, sample_at, mode="nearest", align_corners=True, padding_mode="zeros") > 0.5


@pytest.mark.parametrize("seed", range(8))
def test_inside_test_is_what_nearest_sampling_of_ones_gives(seed):
    from imagetomesh.preprocessing import _inside

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(2, 9, size=3))
    theta = torch.tensor(rng.normal(size=(1, 3, 4)) * 0.8, dtype=torch.float32)
    at = F.affine_grid(theta, [1, 1, 7, 9, 11], align_corners=True)
    assert torch.equal(_inside(at, shape), _inside_by_sampling_ones(at, shape))


def test_inside_test_at_half_voxels_off_the_edge():
    from imagetomesh.preprocessing import _inside

    shape = (5, 6, 7)
    # points every half voxel from 1.5 voxels before the first to 1.5 after the last, along each axis
    steps = [torch.arange(-3, 2 * n + 2, dtype=torch.float32) / 2 for n in shape[::-1]]
    coords = [2 * s / (n - 1) - 1 for s, n in zip(steps, shape[::-1])]
    x, y, z = torch.meshgrid(coords[0], coords[1], coords[2], indexing="ij")
    at = torch.stack([x, y, z], -1).permute(2, 1, 0, 3)[None].contiguous()
    assert torch.equal(_inside(at, shape), _inside_by_sampling_ones(at, shape))


def test_body_box_in_slabs_is_the_bounding_box_of_the_body():
    from imagetomesh.scan import _box_above

    rng = np.random.default_rng(2)
    scan = np.full((30, 40, 50), -1000, np.int16)
    scan[7:19, 11:30, 4:41] = rng.integers(-400, 200, size=(12, 19, 37))
    scan[25, 2, 45] = 100  # a speck far off
    for chunk in (1, 37, 2000, 1 << 24):  # one voxel .. whole slabs at a time
        assert _box_above(scan, -500.0, chunk_voxels=chunk) == bounding_box(scan > -500)
    assert _box_above(np.full((3, 4, 5), -1000, np.int16), -500.0) is None


# --- batches ---------------------------------------------------------------------------------------
class _CountingSphere(nn.Module, SegmentationModel):
    """A fake model that records the size of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = []

    def predict_meshes(self, images, open_surface=False):
        self.batches.append(images.shape[0])
        verts, faces = icosphere(1, 0.5)
        return [Mesh(verts.numpy(), faces.numpy()) for _ in range(images.shape[0])]


def test_a_batch_larger_than_the_cap_is_run_in_chunks(monkeypatch):
    import imagetomesh.inference as inference
    from imagetomesh.inference import Segmenter
    from imagetomesh.zoo import LoadedModel

    card = {"kind": "fake", "grid": {"shape": [8, 10, 12], "spacing": [1.0, 1.0, 1.0]}}
    model = _CountingSphere()
    segmenter = Segmenter(LoadedModel("fake", card, model, torch.device("cpu")), untangle=False)
    monkeypatch.setattr(inference, "MAX_BATCH_VOXELS", 3 * 8 * 10 * 12 + 5)
    assert segmenter.max_batch == 3
    volume = Volume(np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float32))
    meshes = segmenter.segment_batch([volume] * 7)
    assert len(meshes) == 7 and model.batches == [3, 3, 1]
    monkeypatch.setattr(inference, "MAX_BATCH_VOXELS", 1)  # a grid larger than the cap: one at a time
    assert segmenter.max_batch == 1


# --- refine: the distance field ------------------------------------------------------------------
def _ball(shape, centre, radius, spacing):
    k, j, i = np.indices(shape)
    ijk = np.stack([i, j, k], -1) * np.asarray(spacing)
    return (np.linalg.norm(ijk - np.asarray(centre), axis=-1) <= radius).astype(np.uint8)


def test_a_large_distance_field_is_computed_on_a_coarser_lattice():
    from imagetomesh.fitting.distance_field import DistanceField

    spacing = (0.5, 0.6, 0.7)
    mask = Volume(_ball((70, 80, 90), (22.0, 24.0, 25.0), 12.0, spacing), spacing, (3.0, -2.0, 1.0))
    fine = DistanceField(mask)
    coarse = DistanceField(mask, max_voxels=fine.u.numel() // 20)
    assert np.all(fine.coarsening == 1) and np.any(coarse.coarsening > 1)
    assert coarse.u.numel() <= fine.u.numel() // 20
    # U near the surface agrees to within about a coarse voxel
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centre = mask.index_to_lps[:3, :3] @ (np.array([22.0, 24.0, 25.0]) / spacing) + mask.origin
    points = torch.tensor(centre + directions * rng.uniform(6, 18, size=(500, 1)), dtype=torch.float32)
    exact = torch.abs(torch.linalg.norm(points - torch.tensor(centre, dtype=torch.float32), dim=1) - 12.0)
    step = float(np.max(coarse.coarsening * np.array(spacing)))
    assert float((coarse.sample_u(points) - exact).abs().max()) < 1.5 * step
    assert float((fine.sample_u(points) - exact).abs().max()) < 1.5 * max(spacing)


def test_distance_field_of_an_object_in_a_big_empty_image_is_that_of_its_box():
    from imagetomesh.core.cropping import crop_to_box
    from imagetomesh.fitting.distance_field import DistanceField

    big = np.zeros((60, 70, 80), np.uint8)
    big[20:30, 25:40, 30:45] = _ball((10, 15, 15), (7.0, 7.0, 5.0), 5.0, (1, 1, 1))
    whole = Volume(big, (1.0, 1.2, 0.9), (10.0, 20.0, 30.0))
    box = crop_to_box(whole, bounding_box(big), margin=1)
    a, b = DistanceField(whole), DistanceField(box)
    torch.testing.assert_close(a.u, b.u)
    torch.testing.assert_close(a.g, b.g)
    np.testing.assert_allclose(a.index_to_lps, b.index_to_lps, atol=1e-9)


def test_coarsened_mask_keeps_the_object_in_place():
    from imagetomesh.fitting.distance_field import coarsen_mask

    spacing = (0.5, 0.5, 0.5)
    mask = Volume(_ball((41, 41, 41), (10.0, 10.0, 10.0), 6.0, spacing), spacing, (1.0, 2.0, 3.0))
    coarse = coarsen_mask(mask, (2, 3, 2))
    np.testing.assert_allclose(coarse.spacing, [1.0, 1.5, 1.0])

    def centroid(v):
        k, j, i = np.nonzero(v.array)
        return (v.index_to_lps[:3, :3] @ np.stack([i, j, k]).astype(float)).mean(1) + v.origin

    np.testing.assert_allclose(centroid(coarse), centroid(mask), atol=0.3)
    volume = lambda v: v.array.astype(bool).sum() * np.prod(v.spacing)  # noqa: E731
    assert volume(coarse) == pytest.approx(volume(mask), rel=0.1)


# --- fit points ------------------------------------------------------------------------------------
def test_subsample_points_keeps_a_seeded_subset_of_the_requested_size():
    from imagetomesh.fitting import MAX_FIT_POINTS, subsample_points

    points = np.random.default_rng(0).normal(size=(5000, 3))
    subset = subsample_points(points, 1000)
    assert subset.shape == (1000, 3)
    assert len(np.unique(subset, axis=0)) == 1000  # no point twice
    rows = {tuple(p) for p in points}
    assert all(tuple(p) in rows for p in subset)
    np.testing.assert_array_equal(subset, subsample_points(points, 1000))  # same seed, same subset
    assert not np.array_equal(subset, subsample_points(points, 1000, seed=1))
    assert subsample_points(points, 5000) is points and subsample_points(points, None) is points
    assert len(subsample_points(np.zeros((MAX_FIT_POINTS + 1, 3)))) == MAX_FIT_POINTS


def test_fit_points_fits_to_at_most_max_points(monkeypatch):
    import imagetomesh.fitting.tasks as tasks

    seen = []
    real = tasks.chamfer

    def spy(pred, target, tree=None):
        seen.append(len(target))
        return real(pred, target, tree)

    monkeypatch.setattr(tasks, "chamfer", spy)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(3000, 3))
    points = 20 * points / np.linalg.norm(points, axis=1, keepdims=True)
    tasks.fit_points(points, "dals-hippocampus", iterations=2, max_points=500)
    assert seen and set(seen) == {500}
    seen.clear()
    tasks.fit_points(points, "dals-hippocampus", iterations=2, max_points=None)
    assert set(seen) == {3000}


def test_cli_default_cap_is_the_library_one():
    from imagetomesh.cli import fit
    from imagetomesh.fitting import MAX_FIT_POINTS

    assert fit.MAX_FIT_POINTS == MAX_FIT_POINTS


# --- points files ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "x,y,z\n1.5,2,3\n-4,5e1,6\n\n7,8,9.25\n",
        "1.5 2 3\n-4 5e1 6\n7 8 9.25\n",
        "X,Y,Z\n1.5, 2, 3\n-4, 5e1, 6\n7, 8, 9.25\n",
    ],
)
def test_plain_csv_fast_path_reads_what_the_row_parser_reads(tmp_path, text, monkeypatch):
    import imagetomesh.io.markups as markups

    path = tmp_path / "p.csv"
    path.write_text(text)
    fast = markups.read_points(path)
    assert markups._read_plain_csv(text) is not None  # the fast path took it
    monkeypatch.setattr(markups, "_read_plain_csv", lambda text: None)
    np.testing.assert_array_equal(fast, markups.read_points(path))
    np.testing.assert_array_equal(fast, [[1.5, 2, 3], [-4, 50, 6], [7, 8, 9.25]])


@pytest.mark.parametrize(
    "text",
    [
        "x,y,z\n1,2,3\n4,5\n",
        "1,2,3,4\n5,6,7,8\n",
        "# CoordinateSystem = RAS\n1,2,3\n",
        "1,2,3\n4,'5',6\n",
        "a,b,c\n1,2,3\n",
    ],
)
def test_anything_else_goes_to_the_row_parser(text):
    from imagetomesh.io.markups import _read_plain_csv

    assert _read_plain_csv(text) is None
