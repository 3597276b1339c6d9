"""`imagetomesh` end to end: mesh-from-label, evaluate, info, preview, and bad input."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from imagetomesh.cli import main
from imagetomesh.geometry.quality import check_mesh
from imagetomesh.io.images import read_labelmap
from imagetomesh.io.meshes import read_mesh
from imagetomesh.metrics import mesh_dice_iou

HIPPO_LABEL = "hippocampus/hippocampus_024_label.nii.gz"
HIPPO_IMAGE = "hippocampus/hippocampus_024.nii.gz"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_mesh_from_label_is_watertight_and_matches_label(samples, tmp_path, capsys):
    out = tmp_path / "hippo.stl"
    code, stdout, _ = run(["mesh-from-label", samples / HIPPO_LABEL, "-o", out], capsys)
    assert code == 0 and "watertight" in stdout
    mesh = read_mesh(out)
    assert check_mesh(mesh, self_intersections=False).watertight
    dice, _ = mesh_dice_iou(mesh, read_labelmap(samples / HIPPO_LABEL))
    assert dice >= 0.95


@pytest.mark.parametrize("label", [1, 2])
def test_mesh_from_label_single_label(samples, tmp_path, capsys, label):
    out = tmp_path / f"l{label}.vtp"
    assert run(["mesh-from-label", samples / HIPPO_LABEL, "-o", out, "--label", label], capsys)[0] == 0
    dice, _ = mesh_dice_iou(read_mesh(out), read_labelmap(samples / HIPPO_LABEL, label))
    assert dice >= 0.95


def test_mesh_from_label_padded_into_a_big_image_is_the_same_surface(samples, tmp_path, capsys, monkeypatch):
    """A label padded into a bigger image (cropped before the label is selected) gives the surface of the
    tight image, at the same LPS place; the report line comes from edge statistics (no winding numbers)."""
    import imagetomesh.geometry.quality as quality
    from imagetomesh.geometry.isosurface import EXPORT_SMOOTHING, labelmap_to_mesh

    def no_winding(*args, **kwargs):
        raise AssertionError("the CLI's report must not run the winding-number outward test")

    monkeypatch.setattr(quality, "_component_outward", no_winding)
    image = sitk.ReadImage(str(samples / HIPPO_LABEL))
    small = sitk.GetArrayFromImage(image)
    big = np.zeros((small.shape[0] + 40, small.shape[1] + 30, small.shape[2] + 50), small.dtype)
    big[25 : 25 + small.shape[0], 3 : 3 + small.shape[1], 44 : 44 + small.shape[2]] = small
    padded = sitk.GetImageFromArray(big)
    padded.SetSpacing(image.GetSpacing())
    padded.SetDirection(image.GetDirection())
    padded.SetOrigin(image.TransformIndexToPhysicalPoint((-44, -3, -25)))  # the label stays where it was
    sitk.WriteImage(padded, str(tmp_path / "padded.nii.gz"))
    for label in ("1", "2"):
        out = tmp_path / f"padded{label}.vtp"
        code, stdout, _ = run(["mesh-from-label", tmp_path / "padded.nii.gz", "--label", label, "-o", out], capsys)
        assert code == 0 and ", watertight, LPS)" in stdout
        tight = labelmap_to_mesh(
            read_labelmap(samples / HIPPO_LABEL, int(label)), smoothing=EXPORT_SMOOTHING, smoothing_iterations=None
        )
        mesh = read_mesh(out)
        np.testing.assert_array_equal(mesh.faces, tight.faces)
        np.testing.assert_allclose(mesh.vertices, tight.vertices, atol=1e-3)


def test_mesh_from_label_help_names_the_default_smoothing(capsys):
    from imagetomesh.geometry.isosurface import EXPORT_SMOOTHING

    with pytest.raises(SystemExit):
        main(["mesh-from-label", "--help"])
    assert f"default {EXPORT_SMOOTHING:g}," in " ".join(capsys.readouterr().out.split())


def test_lps_and_ras_outputs_open_in_the_same_place(samples, tmp_path, capsys):
    label = read_labelmap(samples / HIPPO_LABEL)
    dices = []
    for space in ("LPS", "RAS"):
        out = tmp_path / f"{space}.stl"
        assert run(["mesh-from-label", samples / HIPPO_LABEL, "-o", out, "--coordinate-system", space], capsys)[0] == 0
        assert f"SPACE={space}".encode() in out.read_bytes()[:80]
        dices.append(mesh_dice_iou(read_mesh(out), label)[0])
    assert dices[0] == pytest.approx(dices[1], abs=1e-9)


def test_evaluate_prints_every_metric(samples, tmp_path, capsys):
    out = tmp_path / "m.stl"
    run(["mesh-from-label", samples / HIPPO_LABEL, "-o", out], capsys)
    code, stdout, _ = run(["evaluate", out, samples / HIPPO_LABEL, "--json"], capsys)
    assert code == 0
    import json

    result = json.loads(stdout)
    for key in ("dice", "iou", "chamfer_mm", "hd95_mm", "accuracy_p90_mm", "watertight", "triangle_quality"):
        assert key in result
    assert result["dice"] > 0.95 and result["chamfer_mm"] < 0.5


def test_info_and_preview(samples, tmp_path, capsys):
    mesh = tmp_path / "m.stl"
    run(["mesh-from-label", samples / HIPPO_LABEL, "-o", mesh], capsys)
    code, stdout, _ = run(["info", samples / HIPPO_IMAGE], capsys)
    assert code == 0 and "spacing" in stdout
    code, stdout, _ = run(["info", mesh], capsys)
    assert code == 0 and "watertight" in stdout.lower()
    png = tmp_path / "p.png"
    code, _, _ = run(["preview", samples / HIPPO_IMAGE, mesh, "-o", png], capsys)
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- bad input: exit 2, one line on stderr, nothing written -----------------------------
def _write(path: Path, array, spacing=(1, 1, 1)):
    image = sitk.GetImageFromArray(array)
    if image.GetDimension() == 3:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _bad_inputs(tmp: Path, samples: Path):
    label = samples / HIPPO_LABEL
    truncated = tmp / "truncated.nii.gz"
    truncated.write_bytes(label.read_bytes()[:600])
    notimage = tmp / "notes.nii.gz"
    notimage.write_bytes(gzip.compress(b"hello, this is not an image\n" * 20))
    nan = np.zeros((6, 6, 6), np.float32)
    nan[1:4, 1:4, 1:4] = 1.0  # a real label, so the error cannot come from an empty labelmap
    nan[2, 2, 2] = np.nan
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((4, 4, 4), np.uint8))] * 3)
    sitk.WriteImage(four_d, str(tmp / "four_d.nii.gz"))
    return {
        "missing": ["mesh-from-label", tmp / "nope.nii.gz"],
        "truncated": ["mesh-from-label", truncated],
        "not an image": ["mesh-from-label", notimage],
        "2D": ["mesh-from-label", _write(tmp / "flat.nii.gz", np.ones((8, 8), np.uint8))],
        "4D": ["mesh-from-label", tmp / "four_d.nii.gz"],
        "NaN": ["mesh-from-label", _write(tmp / "nan.nii.gz", nan)],
        "empty": ["mesh-from-label", _write(tmp / "empty.nii.gz", np.zeros((6, 6, 6), np.uint8))],
        "absent label": ["mesh-from-label", label, "--label", "7"],
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "not an image", "2D", "4D", "NaN", "empty", "absent label"])
def test_bad_label_input_exits_2_and_writes_nothing(samples, tmp_path, capsys, case):
    argv = _bad_inputs(tmp_path, samples)[case]
    out = tmp_path / "out" / "mesh.stl"
    out.parent.mkdir()
    code, stdout, stderr = run(argv + ["-o", out], capsys)
    assert code == 2
    assert stderr.startswith("imagetomesh: error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert list(out.parent.iterdir()) == []
    if case == "NaN":
        assert "NaN/Inf voxels" in stderr


def test_mesh_without_triangles_is_refused(samples, tmp_path, capsys):
    points_only = tmp_path / "points.ply"
    points_only.write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n"
    )
    code, _, stderr = run(["evaluate", points_only, samples / HIPPO_LABEL], capsys)
    assert code == 2 and "triangles" in stderr


@pytest.mark.parametrize("problem", ["missing folder", "read-only folder"])
def test_bad_output_folder(samples, tmp_path, capsys, monkeypatch, problem):
    if problem == "missing folder":
        out = tmp_path / "no" / "such" / "m.stl"
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        out = folder / "m.stl"
        if os.geteuid() == 0:  # root writes anywhere: make the permission check see what a user would
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    code, _, stderr = run(["mesh-from-label", samples / HIPPO_LABEL, "-o", out], capsys)
    assert code == 2 and "folder" in stderr
    assert not out.exists()


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "imagetomesh.cli", "info", str(tmp_path / "missing.nii.gz")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("imagetomesh: error:") and "Traceback" not in result.stderr


def test_help_everywhere(capsys):
    for command in ("mesh-from-label", "evaluate", "preview", "info", "segment", "models", "train", "demo"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_models_lists_every_bundled_model_with_flat_metrics(capsys):
    from imagetomesh.cli import _format_metrics
    from imagetomesh.zoo import available_models

    assert _format_metrics({"a": 0.12345, "mesh": {"b": 1, "c": {"d": 2.0}}}) == "a 0.123, mesh.b 1, mesh.c.d 2.000"
    # a mesh model's card tells its mesh from its voxel head
    assert (
        _format_metrics({"val_dice": 0.9, "val_mesh_dice": 0.8})
        == "val_dice (voxel head) 0.900, val_mesh_dice (mesh) 0.800"
    )
    assert _format_metrics({"val_dice": 0.9}) == "val_dice 0.900"  # a U-Net's Dice is its output's
    code, out, _ = run(["models"], capsys)
    assert code == 0
    for name in available_models():
        assert f"\n{name}\n" in f"\n{out}"
    assert "{" not in out, "nested metric blocks are flattened"
    # what a whole-scan CT model takes, its organ-layout check included
    assert (
        "CT head and neck (brainstem, spinal_cord" in out
        and "organs found must lie as in its 147 training scans" in out
    )
