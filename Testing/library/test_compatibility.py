"""Right model, right image: modality told apart by Hounsfield units, patch models refuse whole scans."""

import json

import numpy as np
import pytest

from imagetomesh.compatibility import InputSpec, check_image, extent_mm, looks_like_ct, mismatch
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.io.images import read_image


@pytest.fixture(scope="module")
def mri(samples):
    return read_image(samples / "hippocampus" / "hippocampus_024.nii.gz")


@pytest.fixture(scope="module")
def ct(samples):
    return read_image(samples / "ct-example" / "example_ct.nii.gz")


@pytest.fixture(scope="module")
def cards(samples):
    card = json.loads((samples.parent / "Models" / "unet-hippocampus" / "card.json").read_text())
    ct_card = dict(card, input=dict(card["input"], modality="CT", max_extent_mm=None, intensity="HU"))
    return card, ct_card


def test_ct_and_mri_are_told_apart(mri, ct):
    assert looks_like_ct(ct) and not looks_like_ct(mri)
    # a z-scored MRI has negative values, but no air in Hounsfield units
    z = mri.with_array(((mri.array - mri.array.mean()) / mri.array.std()).astype(np.float32))
    assert not looks_like_ct(z)
    # a CT stored as unsigned with an offset (HU + 1024) is not in Hounsfield units
    assert not looks_like_ct(ct.with_array(ct.array + 1024))


def test_mri_model_refuses_a_ct_and_a_ct_model_refuses_an_mri(mri, ct, cards):
    mr_card, ct_card = cards
    assert mismatch(mri, mr_card, "unet-hippocampus") is None
    assert "looks like a CT" in mismatch(ct, mr_card, "unet-hippocampus")
    assert "does not look like a CT" in mismatch(mri, ct_card, "a-ct-model")
    assert mismatch(ct, ct_card, "a-ct-model") is None
    with pytest.raises(InputError, match="--allow-mismatch"):
        check_image(ct, mr_card, "unet-hippocampus")


def test_a_patch_model_refuses_a_whole_head(mri, cards):
    mr_card, _ = cards
    head = np.zeros((160, 200, 180), np.float32)
    head[60:93, 70:122, 70:108] = mri.array
    whole = Volume(head, spacing=(1.0, 1.0, 1.0))
    assert np.allclose(extent_mm(whole), [160, 180, 200])
    reason = mismatch(whole, mr_card, "unet-hippocampus")
    assert "covers 160 x 180 x 200 mm" in reason and "--roi" in reason


def test_a_whole_scan_model_refuses_a_crop_too_small_for_its_organs(ct, cards):
    _, ct_card = cards
    card = dict(ct_card, input=dict(ct_card["input"], body_region="head and neck", min_extent_mm=[40, 100, 100]))
    assert mismatch(ct, card, "unet-headneck-ct") is None
    crop = Volume(np.ascontiguousarray(ct.array[:, :20, :20]), ct.spacing, ct.origin, ct.direction)  # 60 mm in-plane
    reason = mismatch(crop, card, "unet-headneck-ct")
    assert "covers only" in reason and "at least 40 x 100 x 100 mm" in reason and "whole scan" in reason


def test_cards_without_an_input_block_are_not_checked(ct):
    assert InputSpec.from_card({"kind": "unet"}) is None
    assert mismatch(ct, {"kind": "unet"}, "third-party") is None
