"""`imagetomesh fit points|curves`, `refine`, `train dals` end to end on the bundled DALS priors, and bad input.

The fits run a handful of iterations: these tests check the wiring (files in, watertight mesh out
in the right place, exit codes), not the accuracy (see docs/dals-results.md).
"""

from pathlib import Path

import numpy as np
import pytest

from imagetomesh import cli
from imagetomesh.fitting.curves import mask_outline
from imagetomesh.geometry.isosurface import labelmap_to_mesh
from imagetomesh.geometry.quality import check_mesh
from imagetomesh.io.images import read_labelmap, write_image
from imagetomesh.io.markups import Markup, write_markups
from imagetomesh.io.meshes import read_mesh
from imagetomesh.metrics import sample_surface
from imagetomesh.zoo import available_models

KIDNEY = "ct-example/kidney_left.nii.gz"
HIPPO_LABEL = "hippocampus/hippocampus_024_label.nii.gz"
FAST = ["--iterations", "2"]

pytestmark = pytest.mark.skipif(
    not {"dals-kidney", "dals-hippocampus"} <= set(available_models()),
    reason="the bundled DALS priors are not installed",
)


def run(argv, capsys):
    argv = [str(a) for a in argv]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def kidney(samples):
    mask = read_labelmap(samples / KIDNEY)
    centre = mask.index_to_lps[:3, :3] @ np.array(np.nonzero(mask.array)).mean(1)[::-1] + mask.origin
    return mask, centre


@pytest.fixture(scope="module")
def kidney_files(kidney, tmp_path_factory):
    mask, centre = kidney
    folder = tmp_path_factory.mktemp("kidney")
    points = sample_surface(labelmap_to_mesh(mask), 600, seed=0)
    csv = folder / "points.csv"
    csv.write_text("x,y,z\n" + "\n".join(",".join(f"{v:.4f}" for v in p) for p in points) + "\n")
    curves = [mask_outline(mask, centre, n) for n in np.eye(3)]
    two = write_markups(
        [Markup("ClosedCurve", "axial", curves[2]), Markup("ClosedCurve", "coronal", curves[1])],
        folder / "two.mrk.json",
    )
    one = write_markups(Markup("ClosedCurve", "sagittal", curves[0]), folder / "one.mrk.json", "RAS")
    return {"csv": csv, "curves": [two, one], "curve_points": curves}


def assert_mesh_near(path: Path, centre, radius):
    mesh = read_mesh(path)
    check = check_mesh(mesh, self_intersections=False)
    assert check.watertight and check.outward
    assert np.linalg.norm(mesh.centroid() - centre) < radius


def test_fit_points(kidney, kidney_files, tmp_path, capsys):
    out = tmp_path / "fit.stl"
    code, stdout, err = run(["fit", "points", kidney_files["csv"], "--prior", "dals-kidney", "-o", out, *FAST], capsys)
    assert code == 0, err
    assert "watertight" in stdout
    assert_mesh_near(out, kidney[1], 15.0)


def test_fit_curves_from_several_files_ras_output(kidney, kidney_files, tmp_path, capsys):
    out = tmp_path / "fit.vtp"
    code, stdout, err = run(
        [
            "fit",
            "curves",
            *kidney_files["curves"],
            "--prior",
            "dals-kidney",
            "-o",
            out,
            "--lambda-dir",
            "inf",
            "--remesh",
            "--coordinate-system",
            "RAS",
            *FAST,
        ],
        capsys,
    )
    assert code == 0, err
    assert "3 curve(s)" in stdout
    mesh = read_mesh(out, coordinate_system="RAS")  # back to LPS
    assert check_mesh(mesh, self_intersections=False).watertight
    assert np.linalg.norm(mesh.centroid() - kidney[1]) < 15.0


def test_refine(samples, tmp_path, capsys):
    out = tmp_path / "refined.ply"
    code, stdout, err = run(
        ["refine", samples / HIPPO_LABEL, "--label", "1", "--prior", "dals-hippocampus", "-o", out, *FAST], capsys
    )
    assert code == 0, err
    mask = read_labelmap(samples / HIPPO_LABEL, 1)
    centre = mask.index_to_lps[:3, :3] @ np.array(np.nonzero(mask.array)).mean(1)[::-1] + mask.origin
    assert_mesh_near(out, centre, 8.0)


# --- bad input: exit 2, nothing written ----------------------------------------------------------
def expect_error(argv, capsys, out: Path, message: str):
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not out.exists()
    assert not list(out.parent.glob(".*tmp*"))


def test_unknown_prior_lists_available(kidney_files, tmp_path, capsys):
    out = tmp_path / "x.stl"
    expect_error(
        ["fit", "points", kidney_files["csv"], "--prior", "dals-liver", "-o", out],
        capsys,
        out,
        "available DALS priors: " + ", ".join(sorted(n for n in available_models() if n.startswith("dals-"))),
    )


def test_curve_with_two_points(kidney_files, tmp_path, capsys):
    bad = write_markups(
        Markup("ClosedCurve", "short", kidney_files["curve_points"][0][:2]), tmp_path / "short.mrk.json"
    )
    out = tmp_path / "x.stl"
    expect_error(
        ["fit", "curves", kidney_files["curves"][0], bad, "--prior", "dals-kidney", "-o", out],
        capsys,
        out,
        "has 2 point(s)",
    )


def test_two_identical_planes(kidney_files, tmp_path, capsys):
    out = tmp_path / "x.stl"
    expect_error(
        ["fit", "curves", kidney_files["curves"][1], kidney_files["curves"][1], "--prior", "dals-kidney", "-o", out],
        capsys,
        out,
        "lie in the same plane",
    )


def test_curves_file_without_curves(kidney_files, tmp_path, capsys):
    points = write_markups(Markup("Fiducial", "p", kidney_files["curve_points"][0]), tmp_path / "p.mrk.json")
    out = tmp_path / "x.stl"
    expect_error(["fit", "curves", points, "--prior", "dals-kidney", "-o", out], capsys, out, "holds no curve")


def test_empty_labelmap(samples, tmp_path, capsys):
    mask = read_labelmap(samples / HIPPO_LABEL)
    empty = write_image(mask.with_array(np.zeros_like(mask.array)), tmp_path / "empty.nii.gz")
    out = tmp_path / "x.stl"
    expect_error(["refine", empty, "--prior", "dals-hippocampus", "-o", out], capsys, out, "empty")


def test_refine_coverage_must_be_finite(samples, tmp_path, capsys):
    out = tmp_path / "x.stl"
    with pytest.raises(SystemExit) as exc:
        run(["refine", samples / HIPPO_LABEL, "--coverage", "inf", "--prior", "dals-hippocampus", "-o", out], capsys)
    assert exc.value.code == 2
    assert "--coverage must be a finite number" in capsys.readouterr().err and not out.exists()


def test_missing_label_value(samples, tmp_path, capsys):
    out = tmp_path / "x.stl"
    expect_error(
        ["refine", samples / HIPPO_LABEL, "--label", "7", "--prior", "dals-hippocampus", "-o", out],
        capsys,
        out,
        "label 7 is not in labelmap",
    )


def test_bad_output(kidney_files, tmp_path, capsys):
    out = tmp_path / "mesh.txt"
    expect_error(
        ["fit", "points", kidney_files["csv"], "--prior", "dals-kidney", "-o", out], capsys, out, "mesh extension"
    )
    out = tmp_path / "missing" / "mesh.stl"
    code, _, err = run(["fit", "points", kidney_files["csv"], "--prior", "dals-kidney", "-o", out], capsys)
    assert code == 2 and "does not exist" in err and not out.parent.exists()


def test_bad_lambda_is_a_usage_error(kidney_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run(
            [
                "fit",
                "points",
                kidney_files["csv"],
                "--prior",
                "dals-kidney",
                "-o",
                tmp_path / "x.stl",
                "--lambda-dir",
                "-1",
            ],
            capsys,
        )
    assert exc.value.code == 2


def test_train_dals_bad_data(tmp_path, capsys):
    argv = [str(a) for a in ["--shapes", "kidney", "--data", tmp_path / "nothing", "--out", tmp_path / "run"]]
    code = cli.main(["train", "dals", *argv])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("prior, label", [("dals-parotid", 4), ("dals-brainstem", 1)])
def test_annotate_three_slices_and_fit_on_the_ct_sample(prior, label, samples, tmp_path, capsys):
    """The held-out CT sample: three orthogonal outlines of an organ -> the CT prior -> a surface close to it."""
    from imagetomesh.metrics import mesh_dice_iou

    if prior not in available_models():
        pytest.skip(f"{prior} is not installed")
    mask = read_labelmap(samples / "headneck-ct" / "openkbp_082_label.nii.gz", label)
    centre = labelmap_to_mesh(mask).centroid()
    curves = [mask_outline(mask, centre, mask.direction[:, axis]) for axis in (2, 1, 0)]
    markups = write_markups(
        [Markup("ClosedCurve", f"c{n}", c, True) for n, c in enumerate(curves)], tmp_path / "c.mrk.json"
    )
    out = tmp_path / "fit.stl"
    code, _, err = run(["fit", "curves", markups, "--prior", prior, "-o", out], capsys)
    assert code == 0, err
    assert mesh_dice_iou(read_mesh(out), mask)[0] > 0.75
