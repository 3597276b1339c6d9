"""Where a several-organ model's organs lie: places, the layout of training labels, and the scans refused for it."""

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_ct import write_ct_msd

from imagetomesh.io.images import read_image
from imagetomesh.organ_layout import OrganLayout, OrganPlace, layout_mismatch, layout_of_places, misplaced
from imagetomesh.organs import organs_of
from imagetomesh.training.msd import label_layout, read_msd

REPO = Path(__file__).resolve().parents[2]
ORGANS = ["brainstem", "spinal_cord", "right_parotid", "left_parotid", "mandible"]


def test_a_place_is_its_voxels_centroid_volume_and_extent():
    rng = np.random.default_rng(0)
    mask = rng.random((5, 6, 7)) > 0.7
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array([0.8, 1.5, 2.5])[None, :]
    affine[:3, 3] = (10.0, -20.0, 30.0)
    place = OrganPlace.of_mask(mask, affine)
    points = []  # slow and obvious: every voxel's (i, j, k) through the affine, one at a time
    for k in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            for i in range(mask.shape[2]):
                if mask[k, j, i]:
                    points.append((affine @ np.array([i, j, k, 1.0]))[:3])
    points = np.array(points)
    assert np.allclose(place.centroid, points.mean(0))
    assert np.allclose(place.extent, points.max(0) - points.min(0))
    assert place.ml == pytest.approx(mask.sum() * 0.8 * 1.5 * 2.5 / 1000)
    with pytest.raises(ValueError):
        OrganPlace.of_mask(np.zeros((2, 2, 2), bool), affine)


def place(centre, ml=10.0, extent=(20.0, 20.0, 30.0)):
    return OrganPlace(ml, np.asarray(centre, dtype=float), np.asarray(extent, dtype=float))


def head(shift=(0.0, 0.0, 0.0), flip_s=False):
    """Organ places of a head-and-neck-like scan: brainstem above the cord, parotids either side, mandible in front."""
    centres = {
        "brainstem": (0, 20, 60),
        "spinal_cord": (0, 25, -60),
        "right_parotid": (-55, 0, 30),
        "left_parotid": (55, 0, 30),
        "mandible": (0, -60, 0),
    }
    sign = np.array([1.0, 1.0, -1.0 if flip_s else 1.0])
    return {o: place(np.asarray(c) * sign + shift) for o, c in centres.items()}


@pytest.fixture(scope="module")
def layout():
    rng = np.random.default_rng(1)
    cases = []
    for n in range(30):  # each case moved as a whole and each organ jittered by up to 5 mm
        places = head(shift=rng.normal(0, 50, 3))
        cases.append(
            {o: place(p.centroid + rng.uniform(-5, 5, 3)) for o, p in places.items() if n % 3 or o != "mandible"}
        )
    return layout_of_places(cases, ORGANS)


def test_a_layout_holds_the_largest_sizes_and_the_ranges_of_the_offsets():
    a = {"brainstem": place((0, 0, 40), ml=12, extent=(20, 25, 30)), "spinal_cord": place((1, 2, -20), ml=8)}
    b = {"brainstem": place((5, 0, 50), ml=20, extent=(18, 30, 22)), "spinal_cord": place((5, -3, -10), ml=6)}
    c = {"spinal_cord": place((0, 0, 0), ml=30, extent=(10, 10, 200))}  # no brainstem: no offset
    layout = layout_of_places([a, b, c], ["brainstem", "spinal_cord"])
    assert np.allclose(layout.largest["brainstem"], [20, 20, 30, 30])
    assert np.allclose(layout.largest["spinal_cord"], [30, 20, 20, 200])
    assert list(layout.offsets) == [("brainstem", "spinal_cord")]  # ordered as the organs
    least, most = layout.offsets[("brainstem", "spinal_cord")]
    assert np.allclose(least, [0, -3, -60]) and np.allclose(most, [1, 2, -60])
    assert layout.cases == 3
    again = OrganLayout.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert again.cases == 3 and again.largest.keys() == layout.largest.keys()
    for pair, (lo, hi) in layout.offsets.items():
        assert np.allclose(again.offsets[pair][0], lo) and np.allclose(again.offsets[pair][1], hi)


def test_a_head_anywhere_in_the_scanner_is_accepted(layout):
    assert misplaced(head(shift=(300.0, -200.0, 900.0)), layout) == {}
    assert layout_mismatch(head(shift=(300.0, -200.0, 900.0)), layout, "m", "head and neck") is None
    assert layout_mismatch({}, layout, "m", "head and neck") is None  # nothing found: nothing to judge


def test_an_upside_down_head_is_refused_naming_what_lies_wrong(layout):
    reason = layout_mismatch(head(flip_s=True), layout, "unet-headneck-ct", "head and neck")
    assert reason is not None and "unet-headneck-ct" in reason and "head and neck" in reason
    # the first wrong pair, in words, against the training scans' range (-120 mm, each organ jittered by 5 mm)
    assert "the spinal cord lies 120 mm above the brainstem (training scans: 1" in reason
    assert "mm below to 1" in reason and "5 of 5 out of place" in reason


def test_one_stray_organ_among_several_is_tolerated_but_named(layout):
    places = head()
    places["left_parotid"] = place((300.0, 0.0, -400.0))  # found in the wrong place (a shoulder, say)
    assert set(misplaced(places, layout)) == {"left_parotid"}
    assert layout_mismatch(places, layout, "m", "head and neck") is None


def test_an_organ_far_larger_than_any_in_training_is_out_of_place(layout):
    places = head()
    places["spinal_cord"] = place((0, 25, -60), extent=(156.0, 20.0, 30.0))  # a "cord" across the body
    why = misplaced(places, layout)
    assert set(why) == {"spinal_cord"} and "156 mm from right to left" in why["spinal_cord"]
    places["spinal_cord"] = place((0, 25, -60), ml=500.0)
    assert "500 ml" in misplaced(places, layout)["spinal_cord"]


def test_two_organs_that_do_not_fit_together_are_refused(layout):
    places = {"spinal_cord": place((0, 0, 0)), "mandible": place((130.0, -75.0, 70.0))}
    assert set(misplaced(places, layout)) == {"spinal_cord", "mandible"}
    assert "out of place" in layout_mismatch(places, layout, "m", "head and neck")
    alone = {"spinal_cord": place((0, 0, 0))}  # one organ of a usual size: no pair to judge by
    assert layout_mismatch(alone, layout, "m", "head and neck") is None


def test_the_layout_of_an_msd_folder_places_only_contoured_organs(tmp_path):
    root = write_ct_msd(tmp_path / "msd", 4, present_for=lambda n: [1, 2] if n % 2 == 0 else [2])
    card = {"organs": [{"name": "bright", "label": 1}, {"name": "brighter", "label": 2}]}
    cases = list(read_msd(root).values())
    layout = label_layout(cases, organs_of(card))
    assert layout.cases == 4
    # organ 1 contoured in cases 0 and 2 only: the pair's range comes from those two
    offsets = []
    for case in (cases[0], cases[2]):
        label = read_image(case.label)
        centres = [OrganPlace.of_mask(label.array == v, label.index_to_lps).centroid for v in (1, 2)]
        offsets.append(centres[1] - centres[0])
    least, most = layout.offsets[("bright", "brighter")]
    assert np.allclose(least, np.min(offsets, 0)) and np.allclose(most, np.max(offsets, 0))
    assert np.allclose(layout.largest["bright"][0], 64 * 64 / 1000)  # a 4-voxel cube of 4 mm voxels


def test_the_bundled_head_and_neck_cards_carry_the_layout_of_their_training_labels():
    for name in ("unet-headneck-ct", "voxel2mesh-headneck-ct", "nudf-headneck-ct", "unet-headneck-ct-wide-gpu"):
        card = json.loads((REPO / "Resources" / "Models" / name / "card.json").read_text())
        layout = OrganLayout.from_dict(card["input"]["organ_layout"])
        assert layout.cases == 147 and set(layout.largest) == {o["name"] for o in card["organs"]}
        least, most = layout.offsets[("brainstem", "spinal_cord")]
        assert most[2] < 0  # the cord lies below the brainstem in every training scan
