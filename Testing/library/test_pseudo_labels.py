"""Pseudo-labels for uncontoured organs (training.pseudo_labels)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from synthetic_ct import LPS_RAS, write_ct_msd

from imagetomesh.errors import InputError
from imagetomesh.preprocessing import GridSpec
from imagetomesh.scan import windowed_logits
from imagetomesh.training import pseudo_labels
from imagetomesh.training.data import UNKNOWN, prepare_case
from imagetomesh.training.msd import read_msd
from imagetomesh.training.pseudo_labels import add_pseudo_labels, contoured_sizes, pseudo_label


def slow_pseudo_label(label, present, probabilities, min_voxels, band):
    """:func:`pseudo_label` voxel by voxel, the stray-piece filter left out (the test's organs are one piece)."""
    out, now = label.clone(), present.clone()
    winner = probabilities.argmax(0)
    for k in range(1, probabilities.shape[0]):
        if present[k] or int((winner == k).sum()) < min_voxels[k] or not (winner == k).any():
            continue
        now[k] = True
        for index in np.ndindex(*label.shape):
            value = int(out[index])
            if value != 0 and value < UNKNOWN:
                continue  # a contour claims it
            if winner[index] == k:
                out[index] = k
            elif probabilities[k][index] >= band:
                out[index] = value | UNKNOWN | (1 << (k - 1))
    return out, now


def blob_probabilities(shape, centres, radius=2.5, seed=0):
    """``(C, D, H, W)`` softmax probabilities with class ``k`` a ball around ``centres[k - 1]`` (one piece each)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    logits = [np.zeros(shape)]
    for centre in centres:
        logits.append(4.0 * (radius - np.linalg.norm(grid - np.asarray(centre), axis=-1)))
    noise = np.random.default_rng(seed).normal(0, 0.3, (len(logits), *shape))
    return torch.from_numpy(np.stack(logits) + noise).float().softmax(0)


def test_pseudo_labels_equal_the_voxel_by_voxel_definition():
    shape = (12, 14, 16)
    probabilities = blob_probabilities(shape, [(4, 5, 6), (8, 8, 10), (3, 10, 12)])
    label = torch.zeros(shape, dtype=torch.uint8)
    label[3:6, 4:7, 5:8] = 1  # contoured organ 1
    label[9, 8, 10] = 1  # a contour inside organ 2's ball: kept
    label[8, :, :] |= torch.where(label[8] == 0, UNKNOWN | 1, 0).to(torch.uint8)  # organ 1 unknown on one slice
    present = torch.tensor([True, True, False, False])
    min_voxels = np.array([np.inf, 1.0, 10.0, 1e6])  # organ 3 is too small to label
    original = (label.clone(), present.clone())
    fast = pseudo_label(label, present, probabilities, min_voxels, 0.1)
    slow = slow_pseudo_label(label, present, probabilities, min_voxels, 0.1)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    assert fast[2] == [2]
    assert torch.equal(label, original[0]) and torch.equal(present, original[1])  # inputs untouched
    assert (fast[0] == 2).sum() > 20 and int(fast[0][9, 8, 10]) == 1
    assert ((fast[0] >= UNKNOWN) & ((fast[0] & 2) > 0)).any()  # a rim unknown for organ 2
    assert torch.equal(fast[0] == 1, label == 1)  # the contoured organ as the planner drew it


def test_contoured_sizes_count_only_cases_that_contoured_the_organ(tmp_path):
    msd = read_msd(write_ct_msd(tmp_path / "msd", 3, present_for=lambda n: [1, 2] if n == 0 else [2]))
    spec = GridSpec((24, 24, 32), (4.0, 4.0, 4.0), LPS_RAS, "ct")
    cases = [prepare_case(case, spec, organs=(1, 2)) for case in msd.values()]
    assert contoured_sizes(cases, 3).tolist()[1:] == [64.0, 64.0]
    for case in cases:
        case.present[1] = False
    assert np.isinf(contoured_sizes(cases, 3)[1])  # never contoured: never pseudo-labelled


def test_training_cases_get_the_teachers_organs_where_the_planner_left_them_out(organ_model, tmp_path, monkeypatch):
    """The session model (organ 1 contoured in half its training cases) as teacher: a case without organ 1's
    contour gets it where the organ is, its contoured organ 2 stays; the labels are cached and a second call
    reads them without running the teacher."""
    best, card = organ_model
    msd = read_msd(write_ct_msd(tmp_path / "msd", 2, present_for=lambda n: [1, 2] if n == 0 else [2]))
    whole = read_msd(write_ct_msd(tmp_path / "whole", 2))  # the same scans with both organs contoured
    spec = GridSpec.from_dict(card["grid"])
    cases = [prepare_case(case, spec, organs=(1, 2)) for case in msd.values()]
    assert cases[1].present.tolist() == [True, False, True]
    truth = prepare_case(whole[cases[1].case_id], spec, organs=(1, 2)).label
    organ_1 = truth == 1
    cache = tmp_path / "pseudo.pt"
    added = add_pseudo_labels(cases, [str(best)], 0.1, 0.25, cache)
    assert added == {cases[0].case_id: [], cases[1].case_id: [1]}
    assert cases[1].present.tolist() == [True, True, True] and cases[0].present.tolist() == [True, True, True]
    labelled = cases[1].label == 1
    assert (labelled & organ_1).sum() >= 0.7 * organ_1.sum() and (labelled & ~organ_1).sum() <= 0.3 * organ_1.sum()
    assert torch.equal(cases[1].label == 2, truth == 2)

    def no_teacher(*args, **kwargs):
        raise AssertionError("the cached labels should have been read")

    monkeypatch.setattr(pseudo_labels, "teacher_probabilities", no_teacher)
    again = [prepare_case(case, spec, organs=(1, 2)) for case in msd.values()]
    assert add_pseudo_labels(again, [str(best)], 0.1, 0.25, cache) == added
    assert torch.equal(again[1].label, cases[1].label)


def test_teacher_probabilities_are_the_mean_of_the_teachers():
    from imagetomesh.models.registry import build_model

    torch.manual_seed(0)
    config = {"unet": {"in_channels": 1, "num_classes": 3, "base": 4, "depth": 2, "norm": "batch"}}
    nets = [build_model("unet", config).eval().unet for _ in range(2)]
    image = torch.randn(8, 12, 12)
    with torch.no_grad():
        expected = sum(windowed_logits(n, image[None, None], (8, 8, 8)).softmax(0) for n in nets) / 2
    assert torch.allclose(pseudo_labels.teacher_probabilities(nets, image, (8, 8, 8)), expected, atol=0.02)


def test_pseudo_labels_are_for_a_several_organ_unet(tmp_path):
    from imagetomesh.training.configs import image_configs
    from imagetomesh.training.engine import train

    config = replace(image_configs()["unet"]["cpu"], pseudo_label_teachers=["unet-headneck-ct"], steps=1)
    msd = write_ct_msd(tmp_path / "msd", 3)
    with pytest.raises(InputError, match="pseudo_label_teachers complete several-organ labels"):
        train(config, msd, tmp_path / "run", log=lambda m: None)


def test_a_run_on_pseudo_labels_logs_them_and_names_its_teachers_in_its_card(organ_model, tmp_path):
    from synthetic_ct import train_on_synthetic_cts, two_organ_config

    best, _ = organ_model
    config = replace(
        two_organ_config(),
        steps=2,
        val_every=2,
        pseudo_label_teachers=[str(best)],
    )
    _, trained, log = train_on_synthetic_cts(config, tmp_path, init_from=best)
    train_ids = json.loads((tmp_path / "run" / "split.json").read_text())["train"]
    uncontoured = sum(int(case_id[-3:]) % 2 == 1 for case_id in train_ids)  # organ 1 in every other case
    assert uncontoured > 0
    assert f"pseudo-labelled (cases of {len(train_ids)}): bright {uncontoured}, brighter 0" in log
    assert trained["training"]["pseudo_labels"] == {
        "teachers": [str(best)],
        "teachers_sha256_16": pseudo_labels.teachers_key([str(best)]),
        "band": 0.1,
        "min_fraction": 0.25,
    }
    assert (tmp_path / "run" / "pseudo-labels.pt").is_file()
