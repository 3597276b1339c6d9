"""``segment`` refuses an image its model was not made for, in one line, and ``--roi`` lets a patch
model run on a whole-head image."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagetomesh.cli import main
from imagetomesh.core.volume import Volume
from imagetomesh.io.images import read_image, read_labelmap, write_image
from imagetomesh.io.meshes import read_mesh
from imagetomesh.metrics import mesh_dice_iou

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "Resources" / "SampleData"
MRI = SAMPLES / "hippocampus" / "hippocampus_024.nii.gz"
LABEL = SAMPLES / "hippocampus" / "hippocampus_024_label.nii.gz"
CT = SAMPLES / "ct-example" / "example_ct.nii.gz"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_ct_given_to_the_hippocampus_mri_model(tmp_path, capsys):
    code, _, err = run(["segment", CT, "--model", "unet-hippocampus", "-o", tmp_path / "m.stl"], capsys)
    assert code == 2 and err.count("\n") == 1 and "looks like a CT" in err and "--allow-mismatch" in err
    assert list(tmp_path.iterdir()) == []


def test_an_mri_given_to_a_ct_model(tmp_path, capsys):
    model = tmp_path / "ct-model"
    shutil.copytree(REPO / "Resources" / "Models" / "unet-hippocampus", model)
    card = json.loads((model / "card.json").read_text())
    card["input"].update(modality="CT", body_region="head and neck", intensity="HU", max_extent_mm=None)
    (model / "card.json").write_text(json.dumps(card))
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run(["segment", MRI, "--model", model, "-o", out / "m.stl"], capsys)
    assert code == 2 and err.count("\n") == 1 and "does not look like a CT" in err
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def whole_head(tmp_path_factory):
    """The sample hippocampus crop placed inside a head-sized, MRI-like volume (same geometry)."""
    mri = read_image(MRI)
    pad = 70
    array = np.pad(mri.array, pad)
    origin = mri.index_to_lps @ np.array([-pad, -pad, -pad, 1.0])
    folder = tmp_path_factory.mktemp("head")
    path = write_image(Volume(array, mri.spacing, origin[:3], mri.direction), folder / "head.nii.gz")
    corners = (
        mri.index_to_lps
        @ np.array(
            [
                [i, j, k, 1.0]
                for i in (0, mri.shape[2] - 1)
                for j in (0, mri.shape[1] - 1)
                for k in (0, mri.shape[0] - 1)
            ]
        ).T
    )
    lo, hi = corners[:3].min(1), corners[:3].max(1)
    return path, ",".join(f"{v:.3f}" for v in (*lo, *hi))


def test_a_whole_head_needs_a_roi_for_a_patch_model(whole_head, tmp_path, capsys):
    path, box = whole_head
    code, _, err = run(["segment", path, "--model", "unet-hippocampus", "-o", tmp_path / "m.stl"], capsys)
    assert code == 2 and "--roi" in err and "covers" in err
    code, _, err = run(
        ["segment", path, "--model", "unet-hippocampus", f"--roi={box}", "-o", tmp_path / "m.stl"], capsys
    )
    assert code == 0, err
    dice, _ = mesh_dice_iou(read_mesh(tmp_path / "m.stl"), read_labelmap(LABEL))
    assert dice > 0.85  # in place on the original: the crop keeps the physical geometry


def test_a_slicer_roi_file_works_like_a_box(whole_head, tmp_path, capsys):
    path, box = whole_head
    lo, hi = np.array([float(v) for v in box.split(",")]).reshape(2, 3)
    roi = {
        "markups": [
            {
                "type": "ROI",
                "coordinateSystem": "LPS",
                "center": ((lo + hi) / 2).tolist(),
                "size": (hi - lo).tolist(),
                "orientation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
            }
        ]
    }
    (tmp_path / "roi.mrk.json").write_text(json.dumps(roi))
    code, _, err = run(
        ["segment", path, "--model", "unet-hippocampus", "--roi", tmp_path / "roi.mrk.json", "-o", tmp_path / "m.stl"],
        capsys,
    )
    assert code == 0, err


@pytest.mark.parametrize("box", ["1,2,3", "0,0,0,0,10,10", "a,b,c,d,e,f", "0,0,0,nan,1,1"])
def test_a_bad_roi_is_one_line(whole_head, tmp_path, capsys, box):
    path, _ = whole_head
    code, _, err = run(
        ["segment", path, "--model", "unet-hippocampus", f"--roi={box}", "-o", tmp_path / "m.stl"], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "--roi" in err


HEADNECK = SAMPLES / "headneck-ct" / "openkbp_082.nii.gz"


def test_an_abdominal_ct_given_to_the_head_and_neck_model(tmp_path, capsys):
    """A CT like the ones it was made for, of another body region: the organs found do not lie as in its training
    scans (a "spinal cord" across the pelvis above a "brainstem"), so nothing is written unless asked."""
    code, _, err = run(["segment", CT, "--model", "unet-headneck-ct", "-o", tmp_path], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "do not lie as in the head and neck CTs" in err and "--allow-mismatch" in err
    assert list(tmp_path.iterdir()) == []
    code, _, err = run(["segment", CT, "--model", "unet-headneck-ct", "--allow-mismatch", "-o", tmp_path], capsys)
    assert code == 0 and any(tmp_path.iterdir())


def test_a_head_and_neck_ct_stored_upside_down_is_refused(tmp_path, capsys):
    scan = read_image(HEADNECK)
    upside_down = write_image(scan.with_array(np.ascontiguousarray(scan.array[::-1])), tmp_path / "flipped.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run(
        ["segment", upside_down, "--model", "unet-headneck-ct", "--organs", "mandible", "-o", out], capsys
    )
    assert code == 2 and "stored with its true orientation" in err and list(out.iterdir()) == []
    code, _, err = run(["segment", HEADNECK, "--model", "unet-headneck-ct", "--organs", "mandible", "-o", out], capsys)
    assert code == 0 and [p.name for p in out.iterdir()] == ["openkbp_082_mandible.stl"], err
