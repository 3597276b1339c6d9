"""Several organs per model (issue 16): organs that were not contoured are never taught as background,
whole scans of any size run in bounded blocks, and ``segment`` writes one mesh per organ."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from synthetic_ct import LPS_RAS, ct_case, holds_only_its_organ, segment_synthetic_scan, write_ct_msd

from imagetomesh import cli
from imagetomesh.core.transforms import GridTransform
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.io.images import write_image
from imagetomesh.organs import Organ, choose_organs, mirrored_classes, organs_of
from imagetomesh.preprocessing import GridSpec, resample_volume
from imagetomesh.scan import (
    GRID_MULTIPLE,
    ORGAN_BOX_MARGIN,
    WINDOW_OVERLAP,
    body_crop,
    class_mask,
    mean_probabilities,
    most_probable_class,
    organ_box,
    organ_mask_volume,
    organ_masks,
    scan_grid,
    window_plan,
    windowed_logits,
)
from imagetomesh.training.augment import AugmentConfig
from imagetomesh.training.data import (
    UNKNOWN,
    Mirror,
    mark_uncontoured_slices,
    mirrored_crop,
    prepare_case,
    prepare_cases,
    random_patch_batch,
)
from imagetomesh.training.losses import partial_label_loss
from imagetomesh.training.msd import read_msd


def slow_partial_label_loss(logits, label, present, balanced=False):
    """The loss voxel by voxel, as its docstring says it."""
    total = 0.0
    for b in range(logits.shape[0]):
        p = torch.softmax(logits[b].double(), 0).reshape(logits.shape[1], -1)
        lab = label[b].reshape(-1)
        nll = []
        unknown_of = [
            {k for k in range(1, 8) if int(lab[v]) & (1 << (k - 1))} if int(lab[v]) >= 128 else set()
            for v in range(lab.numel())
        ]  # organs not contoured at the voxel (UNKNOWN codes)
        lab = torch.where(lab >= 128, torch.zeros_like(lab), lab)
        for v in range(lab.numel()):
            if lab[v] == 0:
                classes = [0] + [k for k in range(logits.shape[1]) if not present[b, k] or k in unknown_of[v]]
                nll.append(-torch.log(sum(p[k, v] for k in classes)))
            else:
                nll.append(-torch.log(p[lab[v], v]))
        counted = [  # organ k's Dice leaves out the voxels where k was not contoured
            torch.tensor([k not in unknown_of[v] for v in range(lab.numel())], dtype=torch.float64)
            for k in range(logits.shape[1])
        ]
        dices = [
            (2 * (p[k] * (lab == k)).sum() + 1) / ((p[k] * counted[k]).sum() + (lab == k).sum() + 1)
            for k in range(1, logits.shape[1])
            if present[b, k] and (lab == k).any()
        ]
        nll = torch.stack(nll)
        if balanced:  # each class in the label weighs the same
            ce = torch.stack([nll[lab == k].mean() for k in sorted(set(lab.tolist()))]).mean()
        else:
            ce = nll.mean()
        total += ce + (1 - torch.stack(dices).mean() if dices else 0.0)
    return total / logits.shape[0]


def test_partial_label_loss_equals_the_voxel_by_voxel_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 4, 5, generator=g)
    label = torch.randint(0, 4, (2, 3, 4, 5), generator=g)
    present = torch.tensor([[True, True, False, True], [True, False, False, False]])
    label[0][label[0] == 2] = 0  # a class that was not contoured has no voxels
    label[1] = 0
    present[1, 3] = True  # contoured in the case, but not inside this crop: no Dice term
    for balanced in (False, True):
        fast = partial_label_loss(logits, label, present, balanced)
        assert torch.allclose(fast.double(), slow_partial_label_loss(logits, label, present, balanced), atol=1e-5)


def test_partial_label_loss_with_slices_beyond_a_contour_equals_the_voxel_by_voxel_definition():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 4, 3, 5, generator=g)
    label = torch.randint(0, 5, (2, 4, 3, 5), generator=g)
    present = torch.tensor([[True, True, True, True, True], [True, True, False, True, True]])
    label[1][label[1] == 2] = 0
    marked = torch.stack([mark_uncontoured_slices(label[0], [3], axis=0), mark_uncontoured_slices(label[1], [3, 4], 0)])
    marked[0, 0, 0, 0] = UNKNOWN | 0b0110  # a voxel beyond two organs' contours (classes 2 and 3)
    assert (marked >= UNKNOWN).any()
    for balanced in (False, True):
        fast = partial_label_loss(logits, marked, present, balanced)
        assert torch.allclose(fast.double(), slow_partial_label_loss(logits, marked, present, balanced), atol=1e-5)


def test_partial_label_loss_gradient_equals_the_voxel_by_voxel_definitions():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 3, 3, 4, generator=g, dtype=torch.float64)
    label = torch.randint(0, 5, (3, 3, 3, 4), generator=g)
    present = torch.tensor([[True] * 5, [True, True, False, True, True], [True, False, False, True, False]])
    label[1][label[1] == 2] = 0
    label[2][(label[2] == 1) | (label[2] == 2) | (label[2] == 4)] = 0
    label[0, 0][label[0, 0] == 3] = 0  # class 3 contoured on slices 1-2 only: slice 0 is beyond its contour
    label[0] = mark_uncontoured_slices(label[0], [3], axis=0)
    label[0, 1, 0, 0] = UNKNOWN | 0b1010  # a voxel beyond the contours of classes 2 and 4
    assert (label[0, 0] >= UNKNOWN).any()
    for balanced in (False, True):
        fast_in, slow_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        partial_label_loss(fast_in, label, present, balanced).backward()
        slow_partial_label_loss(slow_in, label, present, balanced).backward()
        assert torch.allclose(fast_in.grad.double(), slow_in.grad, atol=1e-6), balanced


def test_slices_beyond_a_partly_contoured_organ_are_marked_unknown():
    label = torch.zeros(8, 3, 4, dtype=torch.uint8)
    label[2:5, 1, 1] = 5  # class 5 contoured on slices 2-4 only
    label[6, 0, 0] = 2  # another organ beyond it stays itself
    marked = mark_uncontoured_slices(label, [5, 3], axis=0)  # class 3 has no voxels: left alone
    assert torch.equal(marked[2:5], label[2:5])
    beyond = torch.cat([marked[:2], marked[5:]])
    assert set(beyond.unique().tolist()) == {UNKNOWN | 16, 2}
    assert marked[6, 0, 0] == 2
    both = mark_uncontoured_slices(mark_uncontoured_slices(label, [5], 0), [2], 0)
    assert both[0, 2, 2] == UNKNOWN | 16 | 2 and both[3, 2, 2] == UNKNOWN | 2  # slice 3 holds class 5, not 2
    with pytest.raises(ValueError, match="1-7"):
        mark_uncontoured_slices(label, [8], 0)


def test_an_uncontoured_organ_is_not_taught_as_background():
    """Predicting the uncontoured organ where the label says 0 costs what predicting background does."""
    label = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    label[0, 0, 0, 0] = 1
    present = torch.tensor([[True, True, False]])
    as_background = torch.zeros(1, 3, 2, 2, 2)
    as_background[:, 0] = 10.0
    as_missing = torch.zeros(1, 3, 2, 2, 2)
    as_missing[:, 2] = 10.0
    for logits in (as_background, as_missing):
        logits[0, :, 0, 0, 0] = torch.tensor([0.0, 10.0, 0.0])
    assert torch.allclose(
        partial_label_loss(as_background, label, present), partial_label_loss(as_missing, label, present), atol=1e-4
    )
    contoured = torch.tensor([[True, True, True]])  # once contoured, the same prediction is wrong
    assert partial_label_loss(as_missing, label, contoured) > partial_label_loss(as_background, label, contoured) + 1


def test_an_organ_outside_the_crop_is_taught_by_the_cross_entropy_alone():
    """Its soft Dice would be 1 / (1 + sum p): a pull towards zero that saturates small organs' softmax."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 2, 3, 4, generator=g)
    label = torch.zeros(1, 2, 3, 4, dtype=torch.long)
    label[0, 0, :2, :2] = 1
    present = torch.tensor([[True, True, True]])  # organ 2 contoured in the case, outside this crop
    p1 = logits.softmax(1)[0, 1]
    dice_1 = (2 * (p1 * (label[0] == 1)).sum() + 1) / (p1.sum() + (label[0] == 1).sum() + 1)
    expected = torch.nn.functional.cross_entropy(logits, label) + 1 - dice_1
    assert torch.allclose(partial_label_loss(logits, label, present), expected, atol=1e-5)


def test_cases_keep_their_organs_apart_and_know_which_were_contoured(tmp_path):
    msd = read_msd(write_ct_msd(tmp_path / "msd", 2, present_for=lambda n: [1, 2] if n == 0 else [2]))
    spec = GridSpec((24, 24, 32), (4.0, 4.0, 4.0), LPS_RAS, "ct")
    first, second = (prepare_case(case, spec, organs=(2, 1)) for case in msd.values())
    assert first.present.tolist() == [True, True, True] and second.present.tolist() == [True, True, False]
    assert set(np.unique(first.label.numpy())) == {0, 1, 2}
    assert (first.label == 1).sum() == 64 and (first.label == 2).sum() == 64  # class 1 = label value 2
    assert float(first.image.min()) == pytest.approx(-1.0)  # the CT window: air is -1


def test_cases_prepared_on_several_threads_are_those_prepared_one_by_one(tmp_path):
    msd = read_msd(write_ct_msd(tmp_path / "msd", 4, present_for=lambda n: [1, 2] if n % 2 else [2]))
    spec = GridSpec((24, 24, 32), (4.0, 4.0, 4.0), LPS_RAS, "ct")
    options = dict(progress=False, surface_points=50, organs=(1, 2), partly_contoured=(1,))
    one_by_one = [
        prepare_case(case, spec, **{k: v for k, v in options.items() if k != "progress"}) for case in msd.values()
    ]
    threads = torch.get_num_threads()
    together = prepare_cases(list(msd.values()), spec, threads=3, **options)
    assert torch.get_num_threads() == threads  # one torch thread per case while preparing, then as before
    assert [c.case_id for c in together] == list(msd)
    for a, b in zip(one_by_one, together):
        assert torch.equal(a.image, b.image) and torch.equal(a.label, b.label) and torch.equal(a.present, b.present)
        assert all(torch.equal(x, y) for x, y in zip(a.surface, b.surface))
        assert np.array_equal(a.transform.grid_to_lps, b.transform.grid_to_lps)


def test_patch_batches_are_inside_the_grid_and_mostly_on_organs(tmp_path):
    msd = read_msd(write_ct_msd(tmp_path / "msd", 2))
    spec = GridSpec((24, 24, 32), (4.0, 4.0, 4.0), LPS_RAS, "ct")
    cases = [prepare_case(case, spec, organs=(1, 2)) for case in msd.values()]
    still = AugmentConfig(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0)
    images, labels, present = random_patch_batch(cases, 6, (8, 8, 8), still, torch.Generator().manual_seed(1), 1.0)
    assert images.shape == (6, 1, 8, 8, 8) and labels.shape == (6, 8, 8, 8) and present.shape == (6, 3)
    assert all(bool(label.any()) for label in labels)
    # balanced: the small organ is centred as often as the large one
    big = cases[0].label.clone()
    corner = big[0:12, 0:12, 0:12]
    corner[corner == 0] = 1  # organ 1 much larger than organ 2
    case = type(cases[0])(cases[0].case_id, cases[0].image, big, cases[0].transform, None, cases[0].present)
    g = torch.Generator().manual_seed(2)
    _, labels, _ = random_patch_batch([case], 200, (4, 4, 4), still, g, 1.0, balance_classes=True)
    centred_on_2 = sum(bool((label[1:3, 1:3, 1:3] == 2).any()) for label in labels)
    assert 70 < centred_on_2 < 130, centred_on_2
    # a grid smaller than the patch is padded
    images, labels, _ = random_patch_batch(cases, 2, (32, 8, 8), still, torch.Generator().manual_seed(1), 0.0)
    assert images.shape == (2, 1, 32, 8, 8)


def test_left_and_right_organs_trade_classes_in_a_mirror():
    assert mirrored_classes(["brainstem", "right_parotid", "left_parotid", "mandible"]) == [0, 1, 3, 2, 4]
    assert mirrored_classes(["left_kidney", "liver"]) == [0, 1, 2]  # no partner: keeps its class
    assert mirrored_classes([]) == [0]


def test_a_mirrored_crop_equals_the_voxel_by_voxel_mirror():
    mirror = Mirror(axis=2, classes=(0, 1, 3, 2, 4))  # classes 2 and 3 trade
    g = torch.Generator().manual_seed(0)
    values = torch.tensor([0, 1, 2, 3, 4, UNKNOWN | 2, UNKNOWN | 4, UNKNOWN | 6, UNKNOWN | 1], dtype=torch.uint8)
    label = values[torch.randint(len(values), (3, 4, 5), generator=g)]
    image = torch.randn(3, 4, 5, generator=g)
    present = torch.tensor([True, True, False, True, True])
    image_m, label_m, present_m = mirrored_crop(image, label, present, mirror)

    def moved(value: int) -> int:  # class k -> classes[k]; an unknown value's organ bits likewise
        if value < UNKNOWN:
            return mirror.classes[value]
        organs = [k for k in range(1, 8) if value & (1 << (k - 1))]
        return UNKNOWN | sum(1 << (mirror.classes[k] - 1) for k in organs)

    for z in range(3):
        for y in range(4):
            for x in range(5):
                assert image_m[z, y, 4 - x] == image[z, y, x]
                assert int(label_m[z, y, 4 - x]) == moved(int(label[z, y, x]))
    assert present_m.tolist() == [True, True, True, False, True]
    assert label_m.dtype == torch.uint8


def test_patch_batches_mirror_left_and_right_when_asked(tmp_path):
    msd = read_msd(write_ct_msd(tmp_path / "msd", 1, present_for=lambda n: [1]))
    spec = GridSpec((24, 24, 32), (4.0, 4.0, 4.0), LPS_RAS, "ct")
    case = prepare_case(next(iter(msd.values())), spec, organs=(1, 2))
    lr_axis = spec.array_axis(0)
    assert lr_axis == 2  # LPS_RAS: the grid's i axis runs along the patient's left-right axis
    still = AugmentConfig(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0)
    mirror = Mirror(lr_axis, (0, 2, 1))
    plain = random_patch_batch([case], 1, (24, 24, 32), still, torch.Generator().manual_seed(1), 1.0)
    never = random_patch_batch([case], 1, (24, 24, 32), still, torch.Generator().manual_seed(1), 1.0, mirror=mirror)
    always = random_patch_batch(
        [case], 1, (24, 24, 32), replace(still, mirror=1.0), torch.Generator().manual_seed(1), 1.0, mirror=mirror
    )
    assert all(torch.equal(a, b) for a, b in zip(plain, never))  # augment.mirror 0: no mirror
    assert torch.equal(always[0], plain[0].flip(-1))
    assert torch.equal(always[1], torch.tensor([0, 2, 1], dtype=torch.uint8)[plain[1].long()].flip(-1))
    assert plain[2].tolist() == [[True, True, False]] and always[2].tolist() == [[True, False, True]]


def test_mirroring_needs_several_organs_on_a_fixed_grid(tmp_path):
    from imagetomesh.training.configs import image_configs
    from imagetomesh.training.tasks.image_to_mesh import ImageToMeshTask

    config = image_configs()["unet"]["cpu"]
    config.augment = replace(config.augment, mirror=0.5)
    task = ImageToMeshTask(config, run=None)
    task.organ_decoders = False
    with pytest.raises(InputError, match="augment.mirror"):
        task._mirror()


def test_a_partly_contoured_organ_is_unknown_beyond_its_slices_and_crops_centre_on_organs(tmp_path):
    msd = read_msd(write_ct_msd(tmp_path / "msd", 1))
    spec = GridSpec((24, 24, 32), (4.0, 4.0, 4.0), LPS_RAS, "ct")  # array axis 0 runs along S
    case = next(iter(msd.values()))
    plain = prepare_case(case, spec, organs=(1, 2))
    marked = prepare_case(case, spec, organs=(1, 2), partly_contoured=(2,))  # class 2: label value 2
    slices = torch.nonzero((plain.label == 2).any(dim=(1, 2)))[:, 0]
    inside = slice(int(slices[0]), int(slices[-1]) + 1)
    assert torch.equal(marked.label[inside], plain.label[inside])
    outside = torch.ones(len(plain.label), dtype=torch.bool)
    outside[inside] = False
    expected = torch.where(plain.label[outside] == 0, UNKNOWN | 2, plain.label[outside])
    assert torch.equal(marked.label[outside], expected.to(torch.uint8))
    still = AugmentConfig(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0)
    _, labels, _ = random_patch_batch([marked], 40, (2, 2, 2), still, torch.Generator().manual_seed(3), 1.0)
    assert all(bool(((label > 0) & (label < UNKNOWN)).any()) for label in labels)  # on an organ, not on unknown


def test_windowed_logits_equal_one_pass():
    """A pointwise network gives the same logits in windows as in one pass; windows overlap and cover the scan."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 1)

    def net(x):
        return conv(x), None

    image = torch.randn(1, 1, 40, 24, 56)
    with torch.no_grad():
        whole = net(image)[0][0]
    block = (16, 16, 16)
    _, starts = window_plan(tuple(image.shape[2:]), block)
    assert np.prod([len(s) for s in starts]) > 1  # windows, not one pass
    blocked = windowed_logits(net, image, block)
    assert torch.allclose(blocked, whole, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_most_probable_class_is_numpys_argmax_ties_to_the_first(dtype):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, (8, 6, 10, 12)).astype(np.float32)  # few levels: many ties
    probabilities = torch.from_numpy(values).to(dtype)
    assert np.array_equal(most_probable_class(probabilities), np.argmax(values, axis=0))
    channels_last = torch.from_numpy(values)[None].to(memory_format=torch.channels_last_3d)[0]
    assert np.array_equal(most_probable_class(channels_last), np.argmax(values, axis=0))


def _slow_organ_box(probabilities, margin, multiple=GRID_MULTIPLE):
    """The reference box: along each axis, the last multiple of ``multiple`` at or before the first organ voxel
    less ``margin`` and the first one at or after the last organ voxel plus ``margin`` plus one, clipped to the
    grid, found by stepping through the slices; None without organ voxels."""
    winner = probabilities.argmax(0).numpy()
    organ = np.zeros(winner.shape, bool)
    for c in range(1, probabilities.shape[0]):
        mask = class_mask(winner, c)
        if mask is not None:
            organ |= mask
    if not organ.any():
        return None
    box = []
    for axis, n in enumerate(organ.shape):
        slices = [organ.take(k, axis=axis).any() for k in range(n)]
        first, last = slices.index(True), n - 1 - slices[::-1].index(True)
        lo = 0
        while lo + multiple <= first - margin:
            lo += multiple
        hi = 0
        while hi < last + margin + 1:
            hi += multiple
        box.append(slice(lo, min(hi, n)))
    return tuple(box)


@pytest.mark.parametrize("seed", range(6))
def test_organ_box_is_the_aligned_box_around_every_organ_kept(seed):
    """:func:`organ_box` against stepping through the slices: organ voxels (stray pieces dropped), the margin, the
    faces on multiples of the pooling cells, clipped to the grid."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 9, 3) * 8)
    logits = torch.zeros((3, *shape))
    for c in (1, 2):  # an organ as a block, and a stray voxel of it a tenth its size or less
        lo = [int(rng.integers(0, n - 6)) for n in shape]
        size = [int(rng.integers(3, 7)) for _ in shape]
        logits[(c, *(slice(a, a + b) for a, b in zip(lo, size)))] = 5.0
        logits[(c, *(int(rng.integers(0, n)) for n in shape))] = 5.0 if rng.random() < 0.5 else 0.0
    probabilities = logits.softmax(0)
    margin = int(rng.integers(0, 20))
    assert organ_box(probabilities, margin) == _slow_organ_box(probabilities, margin)
    assert organ_box(torch.zeros((3, *shape)).index_fill(0, torch.tensor([0]), 1.0), margin) is None  # none found


def _pointwise_net(scale, seen=None):
    """A network whose logits at a voxel depend on that voxel's value ``x`` alone (so a crop's are the whole image's,
    cropped): ``(0, -5, scale x - 1)``, the background winning where ``x`` is low; records the shape of each input
    in ``seen``."""

    def net(x):
        if seen is not None:
            seen.append(tuple(x.shape[2:]))
        return torch.cat([torch.zeros_like(x), torch.full_like(x, -5.0), scale * x - 1.0], 1), None

    return net


def test_an_ensembles_later_nets_read_the_organ_box_of_the_first_alone():
    """:func:`mean_probabilities`: the first network over the whole image, the others over :func:`organ_box` of its
    probabilities (their mean there, its own outside); every network over the whole image without a margin or
    where the first finds no organ."""
    image = torch.zeros(1, 1, 48, 40, 64)
    image[..., 20:26, 14:20, 30:40] = 3.0  # an organ (class 2 of these nets wins where the image is bright)
    seen = []
    first, later = _pointwise_net(1.0), _pointwise_net(2.0, seen)
    block = (48, 40, 64)
    with torch.no_grad():
        p1 = first(image)[0][0].softmax(0)
        p2 = later(image)[0][0].softmax(0)
    box = organ_box(p1, 8)
    assert box is not None and tuple(b.stop - b.start for b in box) < image.shape[2:]
    expected = p1.clone()
    expected[(slice(None), *box)] = (p1 + p2)[(slice(None), *box)] / 2
    seen.clear()
    boxed = mean_probabilities([first, later], image, block, box_margin=8)
    assert torch.allclose(boxed, expected, atol=1e-6)
    assert seen == [tuple(b.stop - b.start for b in box)]
    assert torch.allclose(mean_probabilities([first, later], image, block, box_margin=None), (p1 + p2) / 2, atol=1e-6)
    assert seen[-1] == tuple(image.shape[2:])
    dark = torch.full_like(image, -3.0)  # no organ anywhere: every network over the whole image
    with torch.no_grad():
        q1, q2 = (net(dark)[0][0].softmax(0) for net in (first, later))
    assert organ_box(q1, 8) is None
    assert torch.allclose(mean_probabilities([first, later], dark, block, box_margin=8), (q1 + q2) / 2, atol=1e-6)


def _block_sized_plan(shape, block, overlap=WINDOW_OVERLAP):
    """The slow reference tiling: each axis longer than the block cut into windows of the block's size, stepping
    ``block (1 - overlap)`` from 0, the last ending at the axis's end (one window when the scan holds no more
    voxels than the block): ``(window shape, starts per axis)``."""
    if np.prod(shape) <= np.prod(block):
        return tuple(shape), [(0,)] * 3
    sizes = tuple(min(n, b) for n, b in zip(shape, block))
    starts = []
    for n, s in zip(shape, sizes):
        step = int(s * (1 - overlap))
        starts.append((0,) if n <= s else (*range(0, n - s, step), n - s))
    return sizes, starts


@pytest.mark.parametrize("seed", range(4))
def test_window_plan_covers_the_scan_within_the_block_in_fewer_voxels(seed):
    """On scan grids of any size (multiples of 8) and the head-and-neck card's block: every voxel is in a window,
    each window holds at most the block's voxels and is at least half the block along each axis, neighbours share a
    quarter of a window, sizes and starts lie on the grid's pooling cells (but the last start), the slices stay
    whole wherever windows of whole slices fit, and the plan computes no more voxels than cutting windows of the
    block's size (:func:`_block_sized_plan`) where that keeps the slices whole too or the plan cuts them as well;
    fewer on the scans of the dataset that need two windows (152 x 104 x 176, 160 x 96 x 176), which that cut left
    from right."""
    block = (160, 128, 128)
    rng = np.random.default_rng(seed)
    shapes = [tuple(int(n) for n in rng.integers(1, 40, 3) * 8) for _ in range(40)]
    for shape in [*shapes, (152, 104, 176), (160, 96, 176), (200, 112, 176)]:
        sizes, starts = window_plan(shape, block)
        covered = np.zeros(shape, dtype=int)
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    assert min(z, y, x) >= 0
                    covered[z : z + sizes[0], y : y + sizes[1], x : x + sizes[2]] += 1
        assert covered.min() >= 1, shape
        assert np.prod(sizes) <= np.prod(block), shape
        for n, b, size, axis in zip(shape, block, sizes, starts):
            assert size >= min(n, b // 2) and size % 8 == 0 and all(s % 8 == 0 for s in axis[:-1])
            assert axis[-1] + size == n and all(b - a <= size - size // 4 for a, b in zip(axis, axis[1:]))
        if shape[1] * shape[2] * min(shape[0], block[0] // 2) <= np.prod(block):  # whole slices fit
            assert len(starts[1]) == len(starts[2]) == 1, shape
        computed = np.prod([len(a) for a in starts]) * np.prod(sizes)
        slow_sizes, slow_starts = _block_sized_plan(shape, block)
        if len(starts[1]) * len(starts[2]) > 1 or len(slow_starts[1]) * len(slow_starts[2]) == 1:
            assert computed <= np.prod([len(a) for a in slow_starts]) * np.prod(slow_sizes), shape
    for shape in [(152, 104, 176), (160, 96, 176)]:
        sizes, starts = window_plan(shape, block)
        slow_sizes, slow_starts = _block_sized_plan(shape, block)
        assert len(slow_starts[2]) == 2 and len(starts[0]) == 2 and len(starts[1]) == len(starts[2]) == 1
        assert np.prod([len(a) for a in starts]) * np.prod(sizes) < 0.85 * np.prod(
            [len(a) for a in slow_starts]
        ) * np.prod(slow_sizes)


def _grid_points(transform: GridTransform) -> np.ndarray:
    """``(N, 3)`` LPS mm of every voxel centre ``(i, j, k)`` of ``transform``'s grid."""
    ijk = np.indices(transform.shape[::-1]).reshape(3, -1).T
    return ijk @ transform.index_to_lps[:3, :3].T + transform.index_to_lps[:3, 3]


def _extent_corners(volume: Volume) -> np.ndarray:
    """``(8, 3)`` LPS mm of the corners of ``volume``'s extent (its voxels' outer faces)."""
    ends = [(-0.5, n - 0.5) for n in volume.size_ijk]
    return np.array(
        [volume.index_to_lps[:3, :3] @ [i, j, k] + volume.origin for i in ends[0] for j in ends[1] for k in ends[2]]
    )


def test_the_scan_grid_covers_any_field_of_view_and_orientation_on_a_fixed_lattice():
    """Every voxel centre of a scan grid is ``A n`` for an integer ``n`` (``A``: the grid's axes times its spacing),
    its first voxel a multiple of 8 lattice steps from LPS (0, 0, 0), its sizes multiples of 8, and it holds the
    whole image within one grid step; checked point by point."""
    spec = GridSpec((160, 128, 128), (4.0, 4.0, 2.5), LPS_RAS, "ct")
    axes = np.asarray(LPS_RAS, dtype=float).reshape(3, 3) * np.array([4.0, 4.0, 2.5])
    permuted = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    volumes = [
        Volume(np.zeros((40, 100, 120), np.float32), (1.0, 1.0, 2.0), direction=np.diag([-1.0, -1.0, 1.0])),
        Volume(np.zeros((120, 100, 40), np.float32), (2.0, 1.0, 1.0), (3.3, -17.9, 41.2), permuted),
        Volume(np.zeros((37, 29, 33), np.float32), (3.9, 3.9, 2.5), (-101.7, 55.1, -12.4), np.diag([-1.0, -1.0, 1.0])),
    ]
    for volume in volumes:
        transform = scan_grid(volume, spec)
        assert all(n % 8 == 0 for n in transform.shape)
        steps = np.linalg.solve(axes, _grid_points(transform).T).T
        assert np.allclose(steps, np.round(steps), atol=1e-6)
        assert np.allclose(steps.min(0) % 8, 0) or np.allclose(steps.min(0) % 8, 8)
        corners = np.linalg.solve(axes, _extent_corners(volume).T).T
        assert np.all(corners.min(0) >= steps.min(0) - 1e-6) and np.all(corners.max(0) <= steps.max(0) + 1 + 1e-6)
        # no more than it needs: from the last multiple of 8 at or below the image to the first at or above it
        assert np.all(steps.min(0) > corners.min(0) - 8) and np.all(steps.max(0) + 1 < corners.max(0) + 8)
    wide = Volume(np.zeros((600, 512, 512), np.float32), (0.9, 0.9, 1.0), direction=np.diag([-1.0, -1.0, 1.0]))
    assert scan_grid(wide, spec).shape == (248, 128, 128)  # 240 x 115.2 x 115.2 steps, larger than the block: windows


def test_resampled_padded_and_restored_copies_of_a_scan_get_the_same_scan_grid():
    """A CT, its copy resampled to 1 mm in-plane, the same voxels stored with another axis order and a wider field
    of view, each cropped to its body as ``segment`` does, are read at the same points in patient space with the
    same pooling cells: one scan grid (their body crops' boxes differ by parts of a voxel)."""
    spec = GridSpec((160, 128, 128), (4.0, 4.0, 2.5), LPS_RAS, "ct")
    k, j, i = np.indices((30, 50, 60))
    array = np.where(((j - 24.3) / 17.2) ** 2 + ((i - 31.1) / 23.7) ** 2 < 1, 40.0, -1000.0).astype(np.float32)
    scan = Volume(array, (3.906, 3.906, 2.5), (-101.7, 55.1, -12.4), np.diag([-1.0, -1.0, 1.0]))
    size = np.round(scan.size_ijk * scan.spacing / np.array([1.0, 1.0, 2.5])).astype(int)
    fine = resample_volume(scan, (1.0, 1.0, 2.5), size, fill=-1000.0)
    restored = Volume(
        np.ascontiguousarray(np.flip(np.swapaxes(array, 1, 2), axis=0)),
        (3.906, 3.906, 2.5),
        scan.index_to_lps[:3, :3] @ [0.0, 0.0, 29.0] + scan.origin,
        np.stack([scan.direction[:, 1], scan.direction[:, 0], -scan.direction[:, 2]], axis=1),
    )
    pad = np.array([7, 3, 11])  # voxels (i, j, k) of wider field of view before the scan's first
    wider = Volume(
        np.pad(array, ((11, 4), (3, 9), (7, 2)), constant_values=-1000.0),
        scan.spacing,
        scan.origin - scan.direction @ (pad * scan.spacing),
        scan.direction,
    )
    grid = scan_grid(body_crop(scan), spec)
    for copy in (fine, restored, wider):
        other = scan_grid(body_crop(copy), spec)
        assert other.shape == grid.shape and np.allclose(other.grid_to_lps, grid.grid_to_lps)


def test_the_body_crop_does_not_depend_on_the_field_of_view():
    image, _ = ct_case(shape=(24, 20, 30))  # air in the first 3 x columns; the body runs to the other edges
    scan = Volume(image.astype(np.int16), (3.0, 3.0, 2.0), (5.0, -7.0, 11.0), np.diag([-1.0, -1.0, 1.0]))
    pad = ((4, 9), (0, 6), (12, 2))  # (k, j, i): air around, more on some sides
    wider = Volume(
        np.pad(scan.array, pad, constant_values=-1000),
        scan.spacing,
        scan.origin - scan.direction @ (np.array([pad[2][0], pad[1][0], pad[0][0]]) * scan.spacing),
        scan.direction,
    )
    crop, wide_crop = body_crop(scan), body_crop(wider)
    assert np.array_equal(crop.array, wide_crop.array)
    assert np.allclose(crop.origin, wide_crop.origin) and crop.shape != scan.shape
    # the body reaches the scan's ends: the crop has the air margin there too (16 mm = 8 slices of 2 mm)
    assert crop.shape[0] == 24 + 2 * 8 and (crop.array[:8] == -1000).all()


def test_organ_masks_drop_stray_islands_and_report_missing_organs():
    probabilities = torch.zeros(3, 10, 10, 10)
    probabilities[0] = 1.0
    probabilities[:, 2:6, 2:6, 2:6] = torch.tensor([0.0, 1.0, 0.0])[:, None, None, None]
    probabilities[:, 8, 8, 8] = torch.tensor([0.0, 1.0, 0.0])  # a one-voxel island far away
    organs = [Organ("a", 1, 1), Organ("b", 2, 2)]
    masks = organ_masks(probabilities, organs)
    assert masks["b"] is None and masks["a"].sum() == 64 and not masks["a"][8, 8, 8]


@pytest.mark.parametrize("level", [0.3, 0.5, 0.75])
def test_an_organ_mask_is_kept_where_its_finer_probability_reaches_the_level(level):
    probability = torch.linspace(0.0, 1.0, 10).expand(6, 6, 10).contiguous()  # rises along W (x)
    mask = np.ones((6, 6, 10), bool)
    transform = GridTransform.of_volume(Volume(np.zeros((6, 6, 10), np.float32), (4.0, 4.0, 2.5)))
    volume = organ_mask_volume(probability, mask, transform, upsample=2, level=level)
    assert volume.shape == (11, 11, 19) and np.allclose(volume.spacing, [2.0, 2.0, 1.25])
    # twice finer, trilinear: the fine sample f of 0..18 along x has probability f / 18
    kept = [f for f in range(19) if f / 18 >= level - 1e-6]
    assert np.array_equal(np.flatnonzero(volume.array[5, 5]), kept)
    assert (volume.array == volume.array[:1, :1]).all()  # the same in every row


def test_choosing_organs_by_name():
    organs = organs_of({"organs": [{"name": "brainstem", "label": 1}, {"name": "left_parotid", "label": 4}]})
    assert [o.index for o in organs] == [1, 2] and organs[1].title == "Left parotid"
    assert choose_organs(organs, "Left-Parotid, brainstem", "m") == organs
    with pytest.raises(InputError, match="no organ liver; choose from brainstem, left_parotid"):
        choose_organs(organs, "liver", "m")
    assert organs_of({"kind": "unet"}) is None


def test_a_several_organ_model_learns_both_organs(organ_model):
    _, card = organ_model
    assert [o["name"] for o in card["organs"]] == ["bright", "brighter"]
    metrics = card["metrics"]
    assert metrics["val_dice_brighter"] > 0.8 and metrics.get("val_dice_bright", 1.0) > 0.8, metrics


def test_a_mirror_averaged_model_averages_the_scan_with_its_mirror(organ_model):
    """A card with ``mirror_averaged``: the class probabilities are the mean of the U-Net's on the scan and on
    its left-right mirror (mirrored back, left and right organs traded)."""
    from imagetomesh.inference import Segmenter
    from imagetomesh.zoo import load_model

    best, _ = organ_model
    plain = load_model(best, "cpu")
    sided = [dict(o, name=n) for o, n in zip(plain.card["organs"], ["left_organ", "right_organ"])]
    loaded = replace(plain, card={**plain.card, "organs": sided, "mirror_averaged": True})
    segmenter = Segmenter(loaded, precision="fp32")
    assert segmenter.mirror == (2, [0, 2, 1])  # LPS_RAS: the grid's i axis (array axis 2) is left-right
    image, _ = ct_case(shape=(32, 24, 40), seed=4)
    volume = Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0]))
    grid_image, _, probabilities = segmenter.scan_probabilities(volume)
    net, block = plain.module.unet, segmenter.spec.shape
    scan = windowed_logits(net, grid_image[None, None], block).softmax(0)
    mirror = windowed_logits(net, grid_image.flip(-1)[None, None], block).softmax(0).flip(-1)[[0, 2, 1]]
    assert torch.allclose(probabilities, (scan + mirror) / 2, atol=1e-6)
    assert not torch.allclose(probabilities, scan, atol=1e-3)
    assert not Segmenter(plain, precision="fp32").mirror  # a card without it: the scan alone


def test_an_ensemble_card_averages_its_u_net_with_its_members(organ_model, tmp_path):
    """A card with ``ensemble``: the class probabilities are the mean of the model's U-Net's and those of the
    named models' U-Nets; a member that finds other organs, or an ``ensemble`` that is not a list of names, is
    refused."""
    from imagetomesh.inference import Segmenter
    from imagetomesh.models.registry import build_model
    from imagetomesh.weights import save_weights
    from imagetomesh.zoo import load_model

    best, _ = organ_model
    plain = load_model(best, "cpu")
    torch.manual_seed(3)
    partner = build_model("unet", plain.card["config"]).eval()  # same architecture, other weights
    card = {k: v for k, v in plain.card.items() if k not in ("weights", "sha256")}
    save_weights(partner, tmp_path / "partner", card)
    segmenter = Segmenter(
        replace(plain, card={**plain.card, "ensemble": [str(tmp_path / "partner")]}), precision="fp32"
    )
    image, _ = ct_case(shape=(32, 24, 40), seed=4)
    volume = Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0]))
    grid_image, _, probabilities = segmenter.scan_probabilities(volume)
    block = segmenter.spec.shape
    with torch.no_grad():
        own = windowed_logits(plain.module.unet, grid_image[None, None], block).softmax(0)
        box = _slow_organ_box(own, ORGAN_BOX_MARGIN)  # the member reads the organ box of the model's own U-Net
        assert tuple(b.stop - b.start for b in box) < tuple(grid_image.shape)  # not the whole scan
        theirs = windowed_logits(partner.unet, grid_image[(None, None, *box)], block).softmax(0)
    expected = own.clone()
    expected[(slice(None), *box)] = (own[(slice(None), *box)] + theirs) / 2
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert not torch.allclose(probabilities, own, atol=1e-3)
    # the scan runs copies of both U-Nets with their batch norms folded; the model's own U-Net keeps its norms
    assert len(segmenter.scan_unets) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for net in segmenter.scan_unets for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in segmenter.model.module.unet.modules())
    assert Segmenter(plain, precision="fp32").ensemble == []  # a card without it: the model alone
    renamed = dict(card, organs=[dict(o, name=f"other_{o['name']}") for o in card["organs"]])
    save_weights(partner, tmp_path / "other-organs", renamed)
    with pytest.raises(InputError, match="finds other organs or works on another grid; restore the model card"):
        Segmenter(replace(plain, card={**plain.card, "ensemble": [str(tmp_path / "other-organs")]}))
    with pytest.raises(InputError, match="has 'ensemble' 'partner'; restore the model card"):
        Segmenter(replace(plain, card={**plain.card, "ensemble": "partner"}))


def test_segment_writes_one_mesh_per_organ(organ_model, tmp_path, capsys):
    from imagetomesh.io.meshes import read_mesh

    folder, _ = organ_model
    out, path, label = segment_synthetic_scan(folder, tmp_path)
    for organ in ("bright", "brighter"):
        assert holds_only_its_organ(read_mesh(out / f"scan_007_{organ}.stl"), organ), organ
    # evaluate every organ mesh against its own label value, found from the model's organs
    truth = write_image(Volume(label, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0])), tmp_path / "truth.nii.gz")
    meshes = sorted(str(p) for p in out.iterdir())
    capsys.readouterr()
    assert cli.main(["evaluate", *meshes, str(truth), "--model", str(folder), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"bright", "brighter"} and min(s["dice"] for s in scores.values()) > 0.6
    assert cli.main(["evaluate", *meshes, str(truth)]) == 2
    assert "several meshes need --model" in capsys.readouterr().err
    again = tmp_path / "again"
    again.mkdir()
    assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(again), "--organs", "brighter"]) == 0
    assert [p.name for p in again.iterdir()] == ["scan_007_brighter.stl"]
    # one organ of one image may go to a mesh file of its own name and format
    single = tmp_path / "single" / "brighter.vtk"
    single.parent.mkdir()
    assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(single), "--organs", "brighter"]) == 0
    assert [p.name for p in single.parent.iterdir()] == ["brighter.vtk"]
    assert np.allclose(read_mesh(single).vertices, read_mesh(again / "scan_007_brighter.stl").vertices, atol=1e-4)


def test_segment_reports_an_organ_it_cannot_find(organ_model, tmp_path, capsys):
    folder, _ = organ_model
    image, _ = ct_case(organs=((2, (12, 14, 16), 1200.0),))  # no organ 1 in this scan
    path = tmp_path / "scan.nii.gz"
    write_image(Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0])), path)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(out)]) == 0
    assert "no bright found" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["scan_brighter.stl"]
    assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(out), "--organs", "bright"]) == 2
    assert "were not found: scan.nii.gz: bright" in capsys.readouterr().err


def test_segment_with_a_several_organ_model_needs_a_folder_and_known_organs(organ_model, tmp_path, capsys):
    folder, _ = organ_model
    image, _ = ct_case()
    path = tmp_path / "scan.nii.gz"
    write_image(Volume(image, (4.0, 4.0, 4.0)), path)
    assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(tmp_path / "x.stl")]) == 2
    assert "one mesh per organ, so -o must be an existing folder" in capsys.readouterr().err
    both = ["--organs", "bright,brighter"]  # a file holds one organ's mesh; nor is a file without a mesh format one
    assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(tmp_path / "x.stl"), *both]) == 2
    assert (
        cli.main(["segment", str(path), "--model", str(folder), "-o", str(tmp_path / "x.nii"), "--organs", "bright"])
        == 2
    )
    assert "for one image and one organ chosen with --organs, -o may name the mesh file" in capsys.readouterr().err
    assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(tmp_path), "--organs", "liver"]) == 2
    assert "has no organ liver" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_the_worker_returns_every_organ_and_the_wire_carries_them(organ_model, tmp_path):
    """The backend's segment task on a several-organ model: one OrganMesh per organ, through the wire format."""
    from imagetomesh.backend import InProcessBackend, Job, wait_for
    from imagetomesh.backend.wire import result_from_wire, result_to_wire
    from imagetomesh.organs import OrganMesh

    folder, _ = organ_model
    image, _ = ct_case(organs=((2, (12, 14, 16), 1200.0),))  # organ 1 is not in this scan
    volume = Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0]))
    backend = InProcessBackend()
    result = wait_for(backend, Job("segment", {"model": str(folder), "device": "cpu"}, volume=volume))
    assert [r.organ.name for r in result] == ["bright", "brighter"]
    assert result[0].mesh is None and result[1].mesh.num_faces > 0
    back = result_from_wire(json.loads(json.dumps(result_to_wire(result, tmp_path, "r"))))
    assert all(isinstance(r, OrganMesh) for r in back) and back[0].mesh is None
    assert back[1].organ == result[1].organ and back[1].organ.colour == (0, 0, 255)
    np.testing.assert_array_equal(back[1].mesh.vertices, result[1].mesh.vertices)


def test_organs_cut_by_the_edge_of_the_scan_are_named():
    from imagetomesh.core.edges import cut_warning, face_names, mesh_touched_faces, touched_faces

    ras = Volume(np.zeros((10, 12, 14), np.uint8), direction=np.diag([-1.0, -1.0, 1.0]))  # i -> R, j -> A, k -> S
    assert face_names(ras) == [("left", "right"), ("posterior", "anterior"), ("inferior", "superior")]
    mask = ras.with_array(ras.array.copy())
    mask.array[9, 5:7, 5:7] = 1  # the last slice: superior
    assert touched_faces(mask) == ["superior"]
    mask.array[4, 5, 0] = 1  # i = 0: the left side (i runs towards the right)
    assert touched_faces(mask) == ["left", "superior"]
    assert cut_warning("Brainstem", ["superior"]).startswith("Brainstem reaches the superior edge of the image")
    assert cut_warning("x", []) is None
    inside = np.array([[-5.0, -5.0, 4.0], [-6.0, -6.0, 5.0]])  # LPS of voxels well inside
    assert mesh_touched_faces(inside, ras) == []
    assert mesh_touched_faces(np.vstack([inside, [[-5.0, -5.0, 8.8]]]), ras) == ["superior"]


def test_segment_warns_about_an_organ_cut_by_the_scan(organ_model, tmp_path):
    folder, _ = organ_model
    image, _ = ct_case(organs=((2, (12, 14, 0), 1200.0),))  # organ 2 in the first (inferior) slices
    path = tmp_path / "scan.nii.gz"
    write_image(Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0])), path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.warns(UserWarning, match="scan.nii.gz: Brighter reaches the inferior edge of the image"):
        assert cli.main(["segment", str(path), "--model", str(folder), "-o", str(out), "--organs", "brighter"]) == 0


def test_restarted_classes_have_the_prior_times_the_background_probability_everywhere():
    from imagetomesh.training.init_weights import restart_classes

    torch.manual_seed(0)
    head = torch.nn.Conv3d(6, 4, 1)
    features = torch.randn(2, 6, 3, 4, 5) * 5
    before = head(features).softmax(1)
    kept = head.weight[1].detach().clone(), head.bias[1].detach().clone()
    restart_classes(head, [2, 3], prior=0.01)
    after = head(features).softmax(1)
    assert torch.allclose(after[:, 2] / after[:, 0], torch.full_like(after[:, 0], 0.01), rtol=1e-4)
    assert torch.allclose(after[:, 3], after[:, 2])
    assert torch.equal(head.weight[1], kept[0]) and torch.equal(head.bias[1], kept[1])  # the others are kept
    assert not torch.allclose(before[:, 2], after[:, 2])
    with pytest.raises(ValueError, match="class 0"):
        restart_classes(head, [0])
