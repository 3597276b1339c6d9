"""Voxel2Mesh with one mesh decoder per organ (issue 16): each organ meshed by its own decoder in a crop
of the scan around it, found by the model's own U-Net; crops, their geometry, training and ``segment``."""

import itertools

import numpy as np
import pytest
import torch
from synthetic_ct import (
    ORGAN_CENTRES,
    holds_only_its_organ,
    prepared_case,
    segment_synthetic_scan,
    train_on_synthetic_cts,
)

from imagetomesh import cli
from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import grid_to_index, index_to_grid
from imagetomesh.models.voxel2mesh import Voxel2Mesh, Voxel2MeshConfig
from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size
from imagetomesh.preprocessing import GridSpec
from imagetomesh.scan import (
    box_centre,
    crop_padded,
    crop_start,
    crop_to_scan_grid,
    densest_crop_start,
    window_plan,
    within_slices,
)
from imagetomesh.training.augment import AugmentConfig
from imagetomesh.training.configs import HEADNECK_CT_GRID, HEADNECK_CT_TEMPLATE_MM, image_configs
from imagetomesh.training.data import UNKNOWN
from imagetomesh.training.organ_crops import meshable, organ_crop, random_organ_crop_batch

UNET = {"in_channels": 1, "num_classes": 3, "base": 8, "depth": 2, "norm": "batch"}
NO_AUGMENT = AugmentConfig(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0)


def slow_crop(array: np.ndarray, start, shape, fill):
    """The crop voxel by voxel: the array's value where the index is inside, ``fill`` elsewhere."""
    out = np.full(shape, fill, dtype=array.dtype)
    for index in np.ndindex(*shape):
        source = tuple(s + i for s, i in zip(start, index))
        if all(0 <= v < n for v, n in zip(source, array.shape)):
            out[index] = array[source]
    return out


@pytest.mark.parametrize("start", [(0, 0, 0), (-3, 2, 5), (4, -6, -1), (7, 9, 11), (-20, 0, 0)])
def test_padded_crops_equal_the_voxel_by_voxel_crop(start):
    array = torch.arange(8 * 10 * 12, dtype=torch.float32).reshape(8, 10, 12)
    crop = crop_padded(array, start, (6, 5, 4), -1.0)
    assert np.array_equal(crop.numpy(), slow_crop(array.numpy(), start, (6, 5, 4), -1.0))
    classes = torch.stack([array, -array, 2 * array])  # (C, D, H, W): each class cropped alike
    crops = crop_padded(classes, start, (6, 5, 4), -1.0)
    assert crops.shape == (3, 6, 5, 4)
    assert all(
        np.array_equal(crops[c].numpy(), slow_crop(classes[c].numpy(), start, (6, 5, 4), -1.0)) for c in range(3)
    )


def test_a_crop_is_centred_on_the_box_around_the_mask():
    mask = np.zeros((20, 20, 20), bool)
    mask[4:9, 10:12, 3:4] = True  # box centre (6, 10.5, 3)
    assert box_centre(mask).tolist() == [6.0, 10.5, 3.0]
    start = crop_start(box_centre(mask), (8, 6, 5))
    # the crop's centre (start + (n - 1) / 2) is the box centre to the nearest voxel
    assert [s + (n - 1) / 2 for s, n in zip(start, (8, 6, 5))] == pytest.approx([6.5, 10.5, 3.0])
    with pytest.raises(ValueError, match="empty"):
        box_centre(np.zeros((3, 3, 3), bool))


def slow_densest_crop_start(mask: np.ndarray, shape):
    """Every crop start that overlaps the mask, its voxels counted one crop at a time; the most, then the nearest
    (sum of index differences) to the crop centred on the mask's box."""
    centred = np.array(crop_start(box_centre(mask), shape))
    nonzero = np.nonzero(mask)
    ranges = [range(int(a.min()) - n + 1, int(a.max()) + 1) for a, n in zip(nonzero, shape)]
    scored = [
        (-int(slow_crop(mask.astype(np.int64), start, shape, 0).sum()), int(np.abs(np.array(start) - centred).sum()))
        for start in itertools.product(*ranges)
    ]
    best = min(scored)
    return [start for start, score in zip(itertools.product(*ranges), scored) if score == best]


@pytest.mark.parametrize("seed", range(12))
def test_the_densest_crop_holds_the_most_of_the_mask(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((14, 12, 10), bool)
    for _ in range(rng.integers(1, 4)):  # one to three scattered pieces
        corner = rng.integers(0, (11, 9, 7))
        mask[tuple(slice(c, c + int(rng.integers(1, 4))) for c in corner)] = True
    shape = tuple(int(n) for n in rng.integers(2, 7, 3))
    assert densest_crop_start(mask, shape) in slow_densest_crop_start(mask, shape)


def test_a_mask_that_fits_gets_the_centred_crop_and_scattered_pieces_the_crop_around_most():
    mask = np.zeros((40, 20, 20), bool)
    mask[4:9, 10:12, 3:5] = True
    assert densest_crop_start(mask, (8, 6, 5)) == crop_start(box_centre(mask), (8, 6, 5))
    mask[30:34, 2:4, 15:18] = True  # a second, larger piece far away: the box centre lies between them
    start = densest_crop_start(mask, (8, 6, 5))
    assert crop_padded(torch.from_numpy(mask), start, (8, 6, 5), False).sum() == 24
    assert crop_padded(torch.from_numpy(mask), crop_start(box_centre(mask), (8, 6, 5)), (8, 6, 5), False).sum() == 0


def test_crop_grid_coordinates_map_to_the_scan_voxels_they_came_from():
    rng = np.random.default_rng(0)
    scan, crop, start = (30, 20, 25), (8, 6, 10), (5, -2, 17)
    index = rng.uniform(-0.5, 9.5, (50, 3))  # (i, j, k) in the crop
    points = index_to_grid(index, crop[::-1])
    expected = index_to_grid(index + np.array(start[::-1]), scan[::-1])
    assert np.allclose(crop_to_scan_grid(points, start, crop, scan), expected)
    assert np.allclose(grid_to_index(crop_to_scan_grid(points, start, crop, scan), scan[::-1]) - start[::-1], index)


@pytest.mark.parametrize("margin", [0.0, 1.0, 2.5])
def test_points_beyond_a_masks_slices_move_onto_the_planes_at_the_margin(margin):
    """Each point more than ``margin`` slices beyond the mask's first or last slice moves along the slice axis (z)
    onto that plane; x, y and every other point stay as they were, bit for bit (a point at a time: the reference)."""
    rng = np.random.default_rng(1)
    mask = np.zeros((20, 6, 7), bool)
    mask[5, 2, 3] = mask[9, 1, 1] = mask[12, 4, 5] = True  # slices 5..12
    size = mask.shape[::-1]
    points = index_to_grid(rng.uniform(-3.0, 22.0, (300, 3)) * [0.3, 0.3, 1.0], size)
    moved = within_slices(points, mask, margin)
    for point, got in zip(points, moved):
        k = grid_to_index(point[None], size)[0, 2]
        if 5 - margin <= k <= 12 + margin:
            assert np.array_equal(got, point)
        else:
            plane = 5 - margin if k < 5 - margin else 12 + margin
            assert np.array_equal(got[:2], point[:2])
            assert np.isclose(grid_to_index(got[None], size)[0, 2], plane)
    assert (moved != points).any(axis=1).sum() > 50  # both ends were crossed


def _organ_config(**change) -> Voxel2MeshConfig:
    fields = {
        "unet": UNET,
        "stages": 2,
        "hidden": 16,
        "template_level": 1,
        "organ_templates": [[0.5, 0.5, 0.5], [0.3, 0.4, 0.6]],
        "organ_crops": [[8, 8, 8], [8, 8, 16]],
    }
    return Voxel2MeshConfig(**{**fields, **change})


def test_organ_decoder_configs_are_checked():
    with pytest.raises(ValueError, match="2 organ classes"):
        _organ_config(organ_templates=[[0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="multiple of 2"):
        _organ_config(organ_crops=[[8, 8, 8], [8, 8, 15]])
    with pytest.raises(ValueError, match="positive"):
        _organ_config(organ_templates=[[0.5, 0.5, 0.5], [0.3, 0.0, 0.6]])
    with pytest.raises(ValueError, match="need organ_templates"):
        _organ_config(organ_templates=None)
    with pytest.raises(ValueError, match="organ_arcs must give, per organ"):
        _organ_config(organ_arcs=[None])
    with pytest.raises(ValueError, match="organ_arcs must give, per organ"):
        _organ_config(organ_arcs=[None, [190.0, 0.3, 0.8]])
    assert _organ_config(organ_arcs=[None, [95.0, 0.3, 0.8]]).organ_arcs[1] == [95.0, 0.3, 0.8]
    with pytest.raises(ValueError, match="extent_margin_slices"):
        _organ_config(extent_margin_slices=-1.0)
    with pytest.raises(ValueError, match="extent_margin_slices"):
        Voxel2MeshConfig(unet=UNET, stages=2, extent_margin_slices=1.0)  # one object: no localiser's voxels


def test_a_horseshoe_template_is_the_sphere_swept_along_its_arc():
    import math

    from imagetomesh.core.mesh import Mesh
    from imagetomesh.geometry.quality import check_mesh, winding_numbers
    from imagetomesh.models.mesh_state import DecoderMesh

    semi_axes, (angle, ty, tz) = torch.tensor([1.0, 0.8, 0.5]), (95.0, 0.3, 0.8)
    template = DecoderMesh.template(3, semi_axes, arc=[angle, ty, tz])
    # each vertex by the formula, one at a time: the arc's point at theta = angle * u_x, moved along its normal
    a = math.radians(angle)
    for u, v in zip(template.sphere.tolist()[::37], template.verts.tolist()[::37]):
        t = a * u[0]
        x = math.sin(t) / math.sin(a) * (1 - ty) + ty * u[1] * math.sin(t)
        y = ((math.cos(t) - math.cos(a)) / (1 - math.cos(a)) * 2 - 1) * (1 - ty) + ty * u[1] * math.cos(t)
        assert v == pytest.approx([x * 1.0, y * 0.8, tz * u[2] * 0.5], abs=1e-5)
    mesh = Mesh(template.verts.numpy(), template.faces.numpy())
    quality = check_mesh(mesh)
    assert quality.watertight and quality.self_intersecting_faces == 0
    # the centre line near each end (theta = +-0.8 angle, where the tube is still 0.6 of its thickness)
    t = 0.8 * a
    near_end = [math.sin(t) / math.sin(a) * 0.7, ((math.cos(t) - math.cos(a)) / (1 - math.cos(a)) * 2 - 1) * 0.7 * 0.8]
    chin, hollow = [0.0, 0.7 * 0.8, 0.0], [0.0, 0.0, 0.0]
    points = np.array([chin, [*near_end, 0.0], [-near_end[0], near_end[1], 0.0], hollow])
    inside = winding_numbers(mesh, points) > 0.5
    assert inside.tolist() == [True, True, True, False]  # a horseshoe opening towards -y
    assert near_end[1] < 0


def test_each_organ_has_its_own_decoder_starting_from_its_ellipsoid():
    torch.manual_seed(0)
    model = Voxel2Mesh(_organ_config()).eval()
    image = torch.randn(1, 1, 8, 8, 16)
    with pytest.raises(ValueError, match="say which organ"):
        model(image)
    with pytest.raises(ValueError, match="between 1 and 2"):
        model(image, organ=3)
    _, meshes = model(image, organ=2)
    first = meshes[0][0].verts.detach()
    # the last graph layer starts near zero: the first stage is about the template ellipsoid
    assert (first.abs().max(0).values - torch.tensor([0.3, 0.4, 0.6])).abs().max() < 0.05
    model.train()
    _, meshes = model(image, organ=2)
    meshes[0][-1].verts.sum().backward()
    assert all(p.grad is None for p in model.organ_stages[0].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.organ_stages[1].parameters())


def test_the_bundled_templates_are_the_organs_sizes_in_their_crops():
    config = image_configs()["voxel2mesh"]["headneck-ct-cpu-frozen"]
    model = config.model
    assert len(model["organ_crops"]) == len(config.organs) == model["unet"]["num_classes"] - 1
    spacing = np.asarray(HEADNECK_CT_GRID.spacing)
    for organ, crop, semi_axes in zip(config.organs, model["organ_crops"], model["organ_templates"]):
        mm = np.asarray(semi_axes) * spacing * (np.asarray(crop[::-1]) - 1) / 2
        assert mm == pytest.approx(HEADNECK_CT_TEMPLATE_MM[organ["name"]], abs=0.01)
        assert max(semi_axes) < 1.0, organ["name"]  # the template fits in its crop
    Voxel2MeshConfig(**model)  # a valid architecture


def test_only_cases_with_an_organ_contoured_to_its_inferior_end_teach_its_mesh():
    label = np.zeros((16, 12, 12), np.uint8)
    label[4:8, 4:8, 4:8] = 1
    label[9:12, 2:5, 2:5] = 2
    assert meshable(prepared_case(label), 1) and meshable(prepared_case(label), 2)
    assert not meshable(prepared_case(label, (True, False, True)), 1)  # not contoured
    empty = label.copy()
    empty[empty == 1] = 0
    assert not meshable(prepared_case(empty), 1)
    stopped_short = label.copy()
    stopped_short[:9][stopped_short[:9] == 0] = UNKNOWN | 2  # "maybe organ 2" below its contour (slices 0-8)
    assert meshable(prepared_case(stopped_short), 1) and not meshable(prepared_case(stopped_short), 2)
    # the same slices lie above the contour when axis 0 runs towards inferior: an anatomical end, meshable
    assert meshable(prepared_case(stopped_short, superior=-1.0), 2)
    above = label.copy()
    above[12:] = UNKNOWN | 2  # beyond its upper end only (the cord meeting the brainstem)
    assert meshable(prepared_case(above), 2) and not meshable(prepared_case(above, superior=-1.0), 2)
    # below its contour, but in the grid's padding beyond the scan (slices 0-6 hold only the lowest value)
    padded = prepared_case(stopped_short)
    padded.image[:7] = padded.image.min()
    assert meshable(padded, 2)
    padded.image[6, 0, 0] = 0.5  # three scanned slices below: cut short
    assert not meshable(padded, 2)


def test_organ_crops_hold_the_organ_and_batches_one_organ():
    label = np.zeros((16, 12, 12), np.uint8)
    label[4:8, 4:8, 4:8] = 1
    label[9:12, 2:5, 2:5] = 2
    case = prepared_case(label)
    image, crop = organ_crop(case, 1, (8, 8, 8))
    assert (crop == 1).sum() == 64 and image.shape == (8, 8, 8)
    # the organ's box centre (5.5, 5.5, 5.5) is the crop's centre: the organ fills its middle
    assert torch.nonzero(crop == 1).float().mean(0).tolist() == [3.5, 3.5, 3.5]
    _, shifted = organ_crop(case, 2, (8, 8, 8), np.array([0.0, 0.0, 20.0]))  # past the grid: padding
    assert (shifted == 2).sum() == 0
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(12):
        organ, images, labels, starts = random_organ_crop_batch(
            {1: [case], 2: [case]}, [[8, 8, 8], [8, 8, 16]], 3, NO_AUGMENT, generator, jitter=1.0
        )
        seen.add(organ)
        assert starts is None  # no scan guides: each decoder starts from its U-Net's softmax of the crop
        assert images.shape == (3, 1, *([8, 8, 8] if organ == 1 else [8, 8, 16]))
        assert all((lab == organ).sum() == (label == organ).sum() for lab in labels)  # jitter keeps it inside
    assert seen == {1, 2}


def test_a_crop_left_too_little_of_its_organ_is_drawn_again():
    from imagetomesh.geometry.isosurface import MIN_STRUCTURE_VOXELS

    tiny, whole = np.zeros((16, 12, 12), np.uint8), np.zeros((16, 12, 12), np.uint8)
    tiny[4, 4, 4:7] = 1  # 3 voxels: no crop of it can be meshed
    whole[4:7, 4:7, 4:7] = 1
    cases = {1: [prepared_case(tiny), prepared_case(whole)]}
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        _, _, labels, _ = random_organ_crop_batch(cases, [[8, 8, 8]], 4, NO_AUGMENT, generator, jitter=1.0)
        assert all(int((lab == 1).sum()) >= MIN_STRUCTURE_VOXELS for lab in labels)
    with pytest.raises(ValueError, match="too little of it to mesh"):
        random_organ_crop_batch({1: cases[1][:1]}, [[8, 8, 8]], 1, NO_AUGMENT, generator, jitter=1.0)


class _LinearProbabilities(torch.nn.Module):
    """A stand-in localiser of the ramp image of ``prepared_case`` (-1 .. 1) whose class probabilities are linear in
    it, ``u = (x + 1) / 2``: organ 1 ``0.6 u``, organ 2 ``0.3 u``, background the rest (logits their logs). Linear,
    so resampling a probability equals the probability of the resampled image; zero at the image's padding (-1)."""

    def forward(self, x):
        u = ((x + 1) / 2).clamp(0, 1)
        return (
            torch.cat([(1 - 0.9 * u).log(), (0.6 * u).clamp_min(1e-12).log(), (0.3 * u).clamp_min(1e-12).log()], 1),
        )


def test_scan_starts_are_the_whole_case_probabilities_cropped_as_segment_crops_them_and_moved_with_the_image(tmp_path):
    from imagetomesh.models.mesh_state import DecoderMesh
    from imagetomesh.models.organ_decoders import centre_crop
    from imagetomesh.training.organ_crops import organ_crop_guides, organ_crop_start, start_probabilities

    label = np.zeros((16, 12, 12), np.uint8)
    label[12:16, 8:12, 8:12] = 1  # at the grid's far corner (where organ 1 wins), label[0:4, 0:4, 0:4] at the near
    label[0:4, 0:4, 0:4] = 2  # one: every crop of them leaves the grid, so it holds the image's padding (-1)
    case = prepared_case(label)
    crops, context, net = [[8, 8, 8], [8, 8, 16]], 2, _LinearProbabilities()
    guides = organ_crop_guides({1: [case], 2: [case]}, crops, context, 2.0, [net], "cpu", tmp_path / "g.pt")
    # the slow, obvious path: the whole case's probabilities, the organ's channel and most probable voxels cropped
    probabilities = net(case.image.float()[None, None])[0][0].softmax(0)
    winner = probabilities.argmax(0)
    for organ in (1, 2):
        shape = tuple(n + 2 * context for n in crops[organ - 1])
        for offset in ([0.0, 0.0, 0.0], [2.0, -2.0, 1.5], [-2.0, 2.0, -2.0]):
            start = organ_crop_start(case, organ, shape, np.array(offset))
            guide, voxels = guides.crop(case, organ, start, shape)
            assert torch.allclose(guide, crop_padded(probabilities[organ], start, shape, 0.0), atol=1e-3)
            assert torch.equal(voxels, crop_padded(winner == organ, start, shape, False))
    with pytest.raises(ValueError, match="leaves the scan guide"):
        guides.crop(case, 1, tuple(a + 4 for a in start), shape)
    # a decoder started from the stored guide starts from the mesh segment's cropped probabilities give it
    shape = tuple(n + 2 * context for n in crops[0])
    start = organ_crop_start(case, 1, shape)
    guide, voxels = (centre_crop(t, context)[None] for t in guides.crop(case, 1, start, shape))
    inner = tuple(a + context for a in start)
    full = DecoderMesh.surface_of(crop_padded(probabilities, inner, tuple(crops[0]), 0.0), 1)
    stored = DecoderMesh.surface_of(start_probabilities(guide, voxels, 1, 3)[0], 1)
    assert torch.equal(stored.faces, full.faces) and torch.allclose(stored.verts, full.verts, atol=1e-2)
    # in a batch, each crop's guide moves with its augmented image (as the probability of the moved image)
    moving = AugmentConfig(flip=0, rotate_deg=20, scale=0.2, intensity_scale=0, intensity_shift=0, noise=0)
    generator = torch.Generator().manual_seed(4)
    for _ in range(6):
        organ, images, _, (guide, voxels) = random_organ_crop_batch(
            {1: [case], 2: [case]}, crops, 2, moving, generator, 2.0, context, guides
        )
        u = (centre_crop(images[:, 0], context) + 1) / 2
        assert guide.shape == voxels.shape == u.shape
        assert torch.allclose(guide, (0.6 if organ == 1 else 0.3) * u, atol=2e-3)
        # organ 1 wins where 0.6 u > 1 - 0.9 u, u > 2 / 3. The voxels are moved by nearest sampling, the image
        # bilinearly (and blended with the padding, u 0, at the grid's edge): a voxel is the organ's where its
        # neighbourhood is, and not where none of it is (u changes by 144 / 2303 per voxel along axis 0)
        lowest = -torch.nn.functional.max_pool3d(-u[:, None], 3, stride=1, padding=1)[:, 0]
        highest = torch.nn.functional.max_pool3d(u[:, None], 3, stride=1, padding=1)[:, 0]
        slack = 1.2 * 144 / 2303
        assert bool(voxels.any()) == (organ == 1)
        assert bool(voxels[lowest > 2 / 3 + slack].all()) and not bool(voxels[highest < 2 / 3 - slack].any())
    # read back from the run folder as made
    again = organ_crop_guides({1: [case], 2: [case]}, crops, context, 2.0, [net], "cpu", tmp_path / "g.pt")
    assert torch.equal(again.crop(case, 1, start, shape)[0], guides.crop(case, 1, start, shape)[0])


def _train_organ_decoders(organ_model, root, steps: int, **model):
    """Voxel2Mesh decoders (one per organ, ``model`` config changes) trained ``steps`` steps on the frozen two-organ
    U-Net of ``organ_model``: ``(model folder, card, log lines)``."""
    from imagetomesh.training.configs import TrainConfig
    from imagetomesh.training.losses import MeshLossWeights

    unet_folder, unet_card = organ_model
    # organs are 16 mm cubes (4 voxels of 4 mm): templates of 8 mm semi-axes in 8-voxel crops
    semi_axes = 8.0 / (4.0 * 7 / 2)
    config = TrainConfig(
        "voxel2mesh",
        {
            "unet": unet_card["config"]["unet"],
            "stages": 2,
            "hidden": 16,
            "template_level": 2,
            "organ_templates": [[semi_axes] * 3] * 2,
            "organ_crops": [[8, 8, 8]] * 2,
            **model,
        },
        grid=GridSpec.from_dict(unet_card["grid"]),
        steps=steps,
        lr=3e-3,
        val_every=steps,
        threads=1,
        organs=unet_card["organs"],
        freeze_unet=True,
        augment=NO_AUGMENT,
        loss=MeshLossWeights(normal=0.3, laplacian=0.3, edge=0.0, version=2, target="dense", target_points=500),
    )
    return train_on_synthetic_cts(config, root, unet_folder, unet_card["input"])


@pytest.fixture(scope="module")
def organ_decoder_model(organ_model, tmp_path_factory):
    """Voxel2Mesh decoders (one per organ) trained briefly on the frozen two-organ U-Net of ``organ_model``."""
    return _train_organ_decoders(organ_model, tmp_path_factory.mktemp("organ_decoders"), 30)


@pytest.fixture(scope="module")
def surface_decoder_model(organ_model, tmp_path_factory):
    """The surface-start variant's decoders, trained a few steps on the same frozen U-Net reading 2 voxels of
    context around each crop."""
    root = tmp_path_factory.mktemp("surface_decoders")
    return _train_organ_decoders(organ_model, root, 10, start="unet_surface", unpooling="none", context_margin=2)


def test_organ_decoders_train_on_the_frozen_unet(organ_model, organ_decoder_model):
    from imagetomesh.weights import load_state

    folder, card, log = organ_decoder_model
    assert any("cases teaching each organ's mesh: bright 3, brighter" in line for line in log), log
    metrics = card["metrics"]
    assert {"val_mesh_dice_brighter", "val_dice_brighter"} <= set(metrics)  # "bright": scored where contoured
    assert metrics["val_mesh_dice"] > 0.5, metrics  # the template alone, at the organ, overlaps it
    unet = load_state(organ_model[0], organ_model[1])
    state = load_state(folder, card)
    assert all(torch.equal(state[k], v) for k, v in unet.items() if k.startswith("unet.")), "the U-Net changed"


def test_segment_meshes_each_organ_with_its_decoder_where_the_unet_found_it(organ_decoder_model, tmp_path):
    from imagetomesh.geometry.quality import check_mesh
    from imagetomesh.io.meshes import read_mesh

    folder, _, _ = organ_decoder_model
    out, path, _ = segment_synthetic_scan(folder, tmp_path)
    for organ, centre in ORGAN_CENTRES.items():
        mesh = read_mesh(out / f"scan_007_{organ}.stl")
        assert check_mesh(mesh, self_intersections=False).watertight
        assert holds_only_its_organ(mesh, organ), organ
        assert np.abs(mesh.vertices.mean(0) - centre).max() < 4.0, organ  # centred within a voxel
    assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(out), "--snap"]) == 2


def test_segment_runs_each_organs_decoder_on_a_fast_copy_that_meshes_as_the_model_does(surface_decoder_model):
    """The decoders run on a fast inference copy of the model (batch norms folded, convolutions on oneDNN) whose
    U-Net also scans the whole image, the organs side by side on two threads; the meshes are the model's own, one
    organ after another, up to float rounding."""
    from synthetic_ct import whole_scan_volume

    from imagetomesh.inference import Segmenter
    from imagetomesh.nn.fast_inference import OneDNNConv3d
    from imagetomesh.zoo import load_model

    folder, _, _ = surface_decoder_model
    segmenter = Segmenter(load_model(folder, "cpu"))
    fast = segmenter.decoder_module
    assert fast is not segmenter.model.module and segmenter.scan_unets[0] is fast.unet
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())
    assert all(type(m) is OneDNNConv3d for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in segmenter.model.module.modules()), "the model changed"
    volume = whole_scan_volume()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the organs side by side (threads.side_by_side)
        meshes = segmenter.segment_organs(volume)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)  # one organ after another
        segmenter.decoder_module = segmenter.model.module
        plain = segmenter.segment_organs(volume)
    finally:
        torch.set_num_threads(threads)
    assert list(meshes) == list(plain) == [o.name for o in segmenter.organs]
    assert all(m is not None for m in meshes.values())
    for name, mesh in meshes.items():
        assert np.array_equal(mesh.faces, plain[name].faces), name
        assert np.abs(mesh.vertices - plain[name].vertices).max() < 1e-3, name  # mm


def test_surface_start_configs_are_checked():
    with pytest.raises(ValueError, match="set unpooling to 'none'"):
        _organ_config(start="unet_surface")
    with pytest.raises(ValueError, match="start must be one of"):
        _organ_config(start="sphere", unpooling="none")
    assert _organ_config(start="unet_surface", unpooling="none").start == "unet_surface"


def _blob_probabilities(shape, centre, radius: float) -> torch.Tensor:
    """``(3, D, H, W)`` class probabilities: class 1 a soft ball of ``radius`` voxels at ``centre`` (k, j, i)
    with a stray island of it in a corner (half a probability level: a piece smaller than a tenth of the
    ball), class 2 nowhere, class 0 the rest."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    distance = np.sqrt((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2)
    ball = 1.0 / (1.0 + np.exp(2.0 * (distance - radius)))
    ball[:1, :1, :1] = 0.9
    probabilities = np.stack([1.0 - ball, ball, np.zeros(shape)]).astype(np.float32)
    return torch.from_numpy(probabilities)


def test_a_surface_start_is_the_unets_organ_mesh_in_grid_coordinates():
    from imagetomesh.core.transforms import GridTransform
    from imagetomesh.core.volume import Volume
    from imagetomesh.models.mesh_state import DecoderMesh
    from imagetomesh.organs import Organ
    from imagetomesh.scan import organ_masks
    from imagetomesh.voxel_meshing import voxel_organ_mesh

    shape = (12, 16, 14)
    probabilities = _blob_probabilities(shape, (6.2, 7.5, 6.8), 3.6)
    start = DecoderMesh.surface_of(probabilities, 1)
    # the obvious path: what segment does on a scan of 4 x 4 x 2.5 mm voxels, mapped back to grid coordinates
    scan = GridTransform.of_volume(Volume(np.zeros(shape, np.uint8), (4.0, 4.0, 2.5), (10.0, -5.0, 3.0)))
    mask = organ_masks(probabilities, [Organ("ball", 1, 1)])["ball"]
    assert not mask[0, 0, 0] and mask.sum() > 100  # the stray island is not part of it
    expected = voxel_organ_mesh(probabilities[1], mask, scan)
    assert np.array_equal(start.faces.numpy(), expected.faces)
    assert np.allclose(start.verts.numpy(), scan.to_grid(expected.vertices), atol=1e-4)
    assert DecoderMesh.surface_of(probabilities, 2) is None  # no voxel of class 2


def test_a_surface_start_decoder_moves_its_unets_surface_or_else_its_template():
    torch.manual_seed(0)
    model = Voxel2Mesh(_organ_config(start="unet_surface", unpooling="none")).eval()
    for stages in model.organ_stages:
        for stage in stages:  # vertices that never move: each stage's output is its input
            last = stage.delta.layers[-1]
            for p in (last.lin_root.weight, last.lin_rel.weight, last.lin_rel.bias):
                torch.nn.init.zeros_(p)
    image = torch.randn(1, 1, 12, 16, 16)
    probabilities = _blob_probabilities((12, 16, 16), (6.0, 8.0, 7.5), 3.6)
    with torch.no_grad():
        _, features = model.unet(image)
        start = model.start_meshes(probabilities[None], organ=1)[0]
        meshes = model.decode_mesh(features, image.shape[2:], organ=1, start=start)
    assert len(meshes) == 2 and len(start.verts) > 100
    for mesh in meshes:  # no unpooling: the U-Net's surface, vertex for vertex
        assert torch.equal(mesh.faces, start.faces) and torch.allclose(mesh.verts, start.verts)
    (absent,) = model.start_meshes(probabilities[None], organ=2)  # the U-Net found no organ 2: its template ellipsoid
    assert absent is None
    with torch.no_grad():
        template = model.decode_mesh(features, image.shape[2:], organ=2, start=absent)[-1]
    assert len(template.verts) == 42  # the level-1 icosphere, not unpooled
    assert (template.verts.abs().max(0).values - torch.tensor([0.3, 0.4, 0.6])).abs().max() < 1e-5


def test_a_surface_start_decoder_starts_from_given_probabilities_instead_of_its_unets():
    torch.manual_seed(0)
    model = Voxel2Mesh(_organ_config(start="unet_surface", unpooling="none")).eval()
    for stages in model.organ_stages:
        for stage in stages:  # vertices that never move: the prediction is the start
            last = stage.delta.layers[-1]
            for p in (last.lin_root.weight, last.lin_rel.weight, last.lin_rel.bias):
                torch.nn.init.zeros_(p)
    assert model.reads_localiser_probabilities
    image = torch.randn(1, 1, 12, 16, 16)
    given = _blob_probabilities((12, 16, 16), (6.0, 8.0, 7.5), 3.6)[None]
    with torch.no_grad():
        (mesh,) = model.predict_meshes(image, organ=1, probabilities=given)
        own = model.start_meshes(model.unet(image)[0].softmax(1), organ=1)[0]
        (plain,) = model.predict_meshes(image, organ=1)
    expected = model.start_meshes(given, organ=1)[0]
    assert np.allclose(mesh.vertices, expected.verts.numpy()) and np.array_equal(mesh.faces, expected.faces.numpy())
    assert own is None and len(plain.vertices) == 42  # without them: its untrained U-Net finds none, the template
    with pytest.raises(ValueError, match="probabilities must be"):
        model.predict_meshes(image, organ=1, probabilities=given[:, :, :8])
    template = Voxel2Mesh(_organ_config())
    assert not template.reads_localiser_probabilities  # a template start has nothing to start from


def test_move_scales_shorten_each_organs_moves_from_its_surface_start():
    torch.manual_seed(0)
    model = Voxel2Mesh(_organ_config(start="unet_surface", unpooling="none")).eval()
    for stages in model.organ_stages:
        for stage in stages:  # large moves, so that their scaling shows
            torch.nn.init.normal_(stage.delta.layers[-1].lin_rel.bias, std=0.05)
    image = torch.randn(1, 1, 12, 16, 16)
    probabilities = _blob_probabilities((12, 16, 16), (6.0, 8.0, 7.5), 3.6)[None]
    start = model.start_meshes(probabilities, organ=1)[0]
    with torch.no_grad():
        (moved,) = model.predict_meshes(image, organ=1, probabilities=probabilities)
        template = model.predict_meshes(image, organ=2, probabilities=probabilities)[0]  # no organ 2: the template
        model.config.move_scales = [0.25, 0.0]
        (shortened,) = model.predict_meshes(image, organ=1, probabilities=probabilities)
        (template_scaled,) = model.predict_meshes(image, organ=2, probabilities=probabilities)
    moves = moved.vertices - start.verts.numpy()
    assert np.abs(moves).max() > 0.01  # the decoder moves its start
    # vertex by vertex, a quarter of the way from the start to the decoder's mesh
    assert np.allclose(shortened.vertices, start.verts.numpy() + 0.25 * moves, atol=1e-6)
    assert np.array_equal(shortened.faces, moved.faces)
    # a decoder that started from its template is not pulled back towards it
    assert np.allclose(template_scaled.vertices, template.vertices)
    model.train()
    model.unet.eval()  # as a frozen U-Net trains: the same features as above
    with torch.no_grad():  # training never reads them
        trained_on = model(image, organ=1, probabilities=probabilities)[1][0][-1].verts
    assert torch.allclose(trained_on, torch.from_numpy(moved.vertices), atol=1e-6)
    with pytest.raises(ValueError, match="move_scales"):
        _organ_config(start="unet_surface", unpooling="none", move_scales=[1.0])
    with pytest.raises(ValueError, match="move_scales"):
        _organ_config(move_scales=[1.0, 1.0])


def test_surface_offsets_grow_each_organs_mesh_at_inference_only():
    """Organ k's returned mesh moves ``surface_offsets[k - 1]`` voxels along its outward normals (each vertex's move
    that long in the isotropic frame of the decoder's grid), after ``move_scales``; training never reads them."""
    torch.manual_seed(0)
    model = Voxel2Mesh(_organ_config(start="unet_surface", unpooling="none")).eval()
    image = torch.randn(1, 1, 12, 16, 16)
    probabilities = _blob_probabilities((12, 16, 16), (6.0, 8.0, 7.5), 3.6)[None]
    with torch.no_grad():
        (plain,) = model.predict_meshes(image, organ=1, probabilities=probabilities)
        (template,) = model.predict_meshes(image, organ=2, probabilities=probabilities)
        model.config.surface_offsets = [0.5, -0.25]
        (grown,) = model.predict_meshes(image, organ=1, probabilities=probabilities)
        (shrunk,) = model.predict_meshes(image, organ=2, probabilities=probabilities)
        model.train()
        model.unet.eval()  # as a frozen U-Net trains: the same features as above
        trained_on = model(image, organ=1, probabilities=probabilities)[1][0][-1].verts
    scale = isotropic_scale((12, 16, 16)).numpy()
    voxel = isotropic_voxel_size((12, 16, 16))
    for before, after, offset in ((plain, grown, 0.5), (template, shrunk, -0.25)):
        moves = np.linalg.norm((after.vertices - before.vertices) * scale, axis=1)
        assert np.allclose(moves, abs(offset) * voxel, rtol=1e-4)
        volumes = [abs(Mesh(m.vertices * scale, m.faces).signed_volume()) for m in (before, after)]
        assert (volumes[1] > volumes[0]) == (offset > 0)
    assert torch.allclose(trained_on, torch.from_numpy(plain.vertices), atol=1e-6)
    with pytest.raises(ValueError, match="surface_offsets"):
        _organ_config(surface_offsets=[0.1])


def test_segment_starts_surface_decoders_from_the_whole_scan_probabilities(surface_decoder_model):
    """segment gives a surface-start decoder the U-Net's probabilities over the whole scan cropped to the organ's
    crop (what placed the crop), not those of its U-Net run on the crop and its context alone."""
    from synthetic_ct import whole_scan_crops, whole_scan_volume

    from imagetomesh.inference import Segmenter
    from imagetomesh.zoo import load_model

    folder, _, _ = surface_decoder_model
    loaded = load_model(folder, "cpu")
    given = {}
    segmenter = Segmenter(loaded)
    predict = segmenter.decoder_module.predict_meshes_from_features

    def recording(features, open_surface=False, organ=None, probabilities=None):
        given[organ] = probabilities
        return predict(features, open_surface=open_surface, organ=organ, probabilities=probabilities)

    segmenter.decoder_module.predict_meshes_from_features = recording
    volume = whole_scan_volume()
    meshes = segmenter.segment_organs(volume)
    assert all(m is not None for m in meshes.values()) and set(given) == {1, 2}
    for organ, expected in whole_scan_crops(segmenter, volume).items():
        assert torch.allclose(given[organ][0], expected)


def test_segment_keeps_each_organs_mesh_within_the_margin_of_its_localisers_slices(surface_decoder_model):
    """With ``extent_margin_slices`` m, every vertex of an organ's mesh lies within m slices of the first and last
    scan-grid slices that hold the localiser's voxels of the organ; without it the surfaces reach past them (a
    marching-cubes start ends about half a voxel beyond the last voxel's centre)."""
    from synthetic_ct import whole_scan_volume

    from imagetomesh.inference import Segmenter
    from imagetomesh.scan import organ_masks
    from imagetomesh.zoo import load_model

    folder, _, _ = surface_decoder_model
    segmenter = Segmenter(load_model(folder, "cpu"))
    volume = whole_scan_volume()
    _, transform, probabilities = segmenter.scan_probabilities(volume)
    masks = organ_masks(probabilities, segmenter.organs)
    lps_to_index = np.linalg.inv(transform.grid_to_lps)

    def slices_beyond(meshes, margin):
        beyond = {}
        for name, mesh in meshes.items():
            grid = mesh.vertices @ lps_to_index[:3, :3].T + lps_to_index[:3, 3]
            k = grid_to_index(grid, transform.shape[::-1])[:, 2]
            slices = np.flatnonzero(masks[name].any((1, 2)))
            beyond[name] = max(slices[0] - margin - k.min(), k.max() - slices[-1] - margin)
        return beyond

    plain = slices_beyond(segmenter.segment_organs(volume), 0.0)
    assert max(plain.values()) > 0.2, plain
    segmenter.decoder_module.config.extent_margin_slices = 0.0
    kept = slices_beyond(segmenter.segment_organs(volume), 0.0)
    assert max(kept.values()) < 0.02, kept  # the finished mesh (untangled) within rounding of the planes


def test_segment_reads_the_decoders_features_from_the_unets_pass_over_the_scan(surface_decoder_model):
    """The decoders' U-Net runs once, over the whole scan (as the ensemble's first network): each organ's decoder
    reads its crop's features from that pass (imagetomesh.scan_features), not from a pass over the crop. Without them
    (a scan pass that keeps none) each crop gets its own pass, as before; the meshes of the two ways differ only
    where the crop's context does, and both lie on their organ."""
    from synthetic_ct import whole_scan_volume

    from imagetomesh.inference import Segmenter
    from imagetomesh.zoo import load_model

    folder, _, _ = surface_decoder_model
    segmenter = Segmenter(load_model(folder, "cpu"))
    assert segmenter.reads_scan_features
    unet = segmenter.decoder_module.unet
    shapes = []
    forward = unet.forward
    unet.forward = lambda x, *args, **kwargs: shapes.append(tuple(x.shape[2:])) or forward(x, *args, **kwargs)
    volume = whole_scan_volume()
    with_features = segmenter.segment_organs(volume)
    window, starts = window_plan(tuple(segmenter.scan_image(volume)[0].shape), segmenter.spec.shape)
    scan_pass = [window] * int(np.prod([len(s) for s in starts]))
    assert len(scan_pass) > 1  # the scan in windows: their features stitched
    assert shapes == [*scan_pass, (32, 32, 32)], shapes  # the scan pass, then the padding's features once
    shapes.clear()
    scan_probabilities = segmenter.scan_probabilities
    segmenter.scan_probabilities = lambda volume, features=None: scan_probabilities(volume)  # keeps no features
    per_crop = segmenter.segment_organs(volume)
    assert shapes[: len(scan_pass)] == scan_pass and len(shapes) == len(scan_pass) + len(segmenter.organs), shapes
    for organ, centre in ORGAN_CENTRES.items():
        for meshes in (with_features, per_crop):
            assert holds_only_its_organ(meshes[organ], organ), organ
            assert np.abs(meshes[organ].vertices.mean(0) - centre).max() < 4.0, organ


def test_a_crops_unet_features_mesh_as_its_image_does():
    """``predict_meshes_from_features`` given the U-Net's features of the crop (the centre of its pass over the crop
    and its context) meshes as ``predict_meshes`` given the image."""
    torch.manual_seed(0)
    model = Voxel2Mesh(_organ_config(context_margin=2, start="unet_surface", unpooling="none")).eval()
    assert model.decodes_unet_features
    image = torch.randn(1, 1, 12, 12, 12)  # organ 1's 8 x 8 x 8 crop grown by 2 voxels per side
    probabilities = _blob_probabilities((8, 8, 8), (4.0, 4.0, 4.0), 2.5)[None]
    with torch.no_grad():
        expected = model.predict_meshes(image, organ=1, probabilities=probabilities)[0]
        features = model.unet(image)[1]
        centre = [features[0][:, :, 1:-1, 1:-1, 1:-1], features[1][:, :, 2:-2, 2:-2, 2:-2]]
        got = model.predict_meshes_from_features(centre, organ=1, probabilities=probabilities)[0]
        with pytest.raises(ValueError, match="needs the localiser's probabilities"):
            model.predict_meshes_from_features(centre, organ=1)
    assert np.array_equal(got.faces, expected.faces)
    assert np.allclose(got.vertices, expected.vertices, atol=1e-6)


def test_surface_start_decoders_train_and_segment_each_organ(surface_decoder_model, tmp_path):
    from imagetomesh.geometry.quality import check_mesh
    from imagetomesh.io.meshes import read_mesh

    folder, card, _ = surface_decoder_model
    assert card["config"]["start"] == "unet_surface" and card["config"]["context_margin"] == 2
    assert card["metrics"]["val_mesh_dice"] > 0.5, card["metrics"]
    out, _, _ = segment_synthetic_scan(folder, tmp_path)
    for organ, centre in ORGAN_CENTRES.items():
        mesh = read_mesh(out / f"scan_007_{organ}.stl")
        assert check_mesh(mesh, self_intersections=False).watertight
        assert holds_only_its_organ(mesh, organ), organ
        assert np.abs(mesh.vertices.mean(0) - centre).max() < 4.0, organ


def test_context_margin_configs_are_checked():
    with pytest.raises(ValueError, match="multiple of 2"):
        _organ_config(context_margin=3)
    with pytest.raises(ValueError, match="for a model with organ_crops"):
        Voxel2MeshConfig(unet=UNET, stages=2, context_margin=2)
    assert _organ_config(context_margin=4).context_margin == 4


def test_a_model_with_context_meshes_the_centre_of_what_its_unet_reads():
    torch.manual_seed(0)
    model = Voxel2Mesh(_organ_config(context_margin=2)).eval()
    image = torch.randn(1, 1, 12, 12, 20)  # organ 2's 8 x 8 x 16 crop grown by 2 voxels per side
    with torch.no_grad():
        logits, meshes = model(image, organ=2)
        full, features = model.unet(image)
        # the decoder alone on the centre of each level of features (strides 1 and 2: 2 and 1 voxels cut)
        centre = [features[0][:, :, 1:-1, 1:-1, 1:-1], features[1][:, :, 2:-2, 2:-2, 2:-2]]
        expected = model.decode_mesh(centre, (8, 8, 16), organ=2)
    assert torch.equal(logits, full[:, :, 2:-2, 2:-2, 2:-2])
    assert torch.allclose(meshes[0][-1].verts, expected[-1].verts)


def test_context_crops_grow_the_same_crops_around_the_same_organ():
    cases = {1: [prepared_case(_box_label((20, 18, 22), (6, 12), (5, 11), (8, 15)))]}
    for seed in range(4):  # one crop per batch: the augmentation's noise draw (of the crop's size) comes last
        plain = random_organ_crop_batch(
            cases, [[8, 8, 8]], 1, NO_AUGMENT, torch.Generator().manual_seed(seed), jitter=2.0
        )
        grown = random_organ_crop_batch(
            cases, [[8, 8, 8]], 1, NO_AUGMENT, torch.Generator().manual_seed(seed), jitter=2.0, context=4
        )
        assert grown[1].shape == (1, 1, 16, 16, 16) and grown[2].shape == (1, 8, 8, 8)
        assert torch.allclose(grown[1][:, :, 4:-4, 4:-4, 4:-4], plain[1], atol=1e-5)  # resampled in place
        assert torch.equal(grown[2], plain[2])


def _box_label(shape, ks, js, is_) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[ks[0] : ks[1], js[0] : js[1], is_[0] : is_[1]] = 1
    return label


def test_the_decoder_loss_of_a_context_model_is_measured_in_its_crops_frame():
    from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size
    from imagetomesh.training.losses import mesh_decoder_loss
    from imagetomesh.training.tasks.image_to_mesh import organ_decoder_loss
    from imagetomesh.training.udf_points import surface_samples

    torch.manual_seed(0)
    model = Voxel2Mesh(_organ_config(context_margin=2)).eval()
    config = image_configs()["voxel2mesh"]["headneck-ct-cpu-frozen-surface"]
    images = torch.randn(2, 1, 12, 12, 20)  # organ 2's 8 x 8 x 16 crops grown by 2 voxels per side
    labels = torch.zeros(2, 8, 8, 16, dtype=torch.uint8)
    labels[0, 2:6, 2:7, 3:12] = 2
    labels[1, 1:7, 3:6, 5:14] = 2
    torch.manual_seed(1)
    loss, _ = organ_decoder_loss(model, config, 2, images, labels, torch.Generator().manual_seed(5), "cpu")
    # by hand: each case's meshes against its label's surface samples, in the isotropic frame of the 8 x 8 x 16 crop
    torch.manual_seed(1)
    with torch.no_grad():
        _, meshes = model(images, organ=2)
    generator = torch.Generator().manual_seed(5)
    targets = [
        surface_samples(label == 2, config.loss.target_points, generator, config.loss.target_smoothing)
        for label in labels
    ]
    scale, voxel = isotropic_scale((8, 8, 16)), isotropic_voxel_size((8, 8, 16))
    expected = (
        sum(
            mesh_decoder_loss(m, points, normals, scale, config.loss, voxel=voxel)["total"]
            for m, (points, normals) in zip(meshes, targets)
        )
        / 2
    )
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
