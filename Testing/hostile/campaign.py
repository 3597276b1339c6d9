"""A reproducible hostile-input campaign against the ``imagetomesh`` command line.

Every case runs the CLI in a subprocess (its own output folder as working directory, a timeout)
and is checked against the README's promises:

- the exit code is the one the case expects (0: accepted input; 2: refused input; interrupted
  runs end by their signal or with 130/143);
- no Python traceback, no crash signal, no hang (the case's timeout);
- a refused input prints exactly one line on stderr, ``imagetomesh: error: ...`` (lines
  ``imagetomesh: warning: ...`` are allowed around it);
- a failed or interrupted run leaves no file behind in its output folder (and a successful one
  no hidden temporary file);
- no input changes (every input file is hashed before and after each case).

Run: ``python Testing/hostile/campaign.py [--quick] [-k SUBSTRING] [--keep DIR]``. It prints a
tally per failure kind and exits 1 if any case failed. ``Testing/cli/test_cli_hostile.py`` runs
the cases marked ``quick`` through the same checker in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "ImageToMeshLib"
SAMPLES = REPO / "Resources" / "SampleData" / "hippocampus"

#: ``Case.expect`` of a run that is interrupted by a signal.
INTERRUPTED = -1
#: The failure kinds of the tally, in its order.
KINDS = (
    "traceback",
    "crash",
    "hang",
    "partial file",
    "modified input",
    "wrong exit code",
    "multi-line error",
    "wrong message",
)
ERROR = "imagetomesh: error:"
WARNING = "imagetomesh: warning:"


@dataclass
class Case:
    """One run of the CLI. In ``argv``, ``{F}`` is the inputs folder and ``{O}`` the case's own output folder."""

    name: str
    argv: list[str]
    expect: int  # 0, 2 or INTERRUPTED
    timeout: float = 60.0
    quick: bool = False
    setup: Callable[[Path, Path], None] | None = None  # (inputs, output folder), before the run
    interrupt: tuple[int, float] | None = None  # (signal, seconds after start)
    message: str = ""  # a text the error line (or, for expect 0, stderr) must contain
    keeps_finished: bool = False  # writes several files (train, demo): finished ones may stay, never a partial one
    several_errors: bool = False  # a batch: one error line per failed input, plus the summary line,
    # and the meshes of its good inputs are written

    def resolved(self, inputs: Path, out: Path) -> list[str]:
        return [a.replace("{F}", str(inputs)).replace("{O}", str(out)) for a in self.argv]


@dataclass
class Result:
    case: Case
    failures: list[str] = field(default_factory=list)  # kinds
    detail: str = ""
    returncode: int | None = None
    seconds: float = 0.0


# --- inputs ---------------------------------------------------------------------------------------
def _write(path: Path, data: bytes | str) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _truncate(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def _dicom_folder(label, folder: Path, shear: float = 0.0, same_position: int | None = None) -> None:
    """``label`` as a DICOM series in ``folder``: each slice moved ``shear`` mm along P per mm along S (a gantry
    tilt), and slice ``same_position`` (when given) put where the slice before it is."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    image = sitk.Cast(label, sitk.sitkInt16)
    uid = "1.2.826.0.1.3680043.2.1125.1.99"
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = list(image.TransformIndexToPhysicalPoint((0, 0, k if k != same_position else k - 1)))
        position[1] += shear * (position[2] - image.GetOrigin()[2])
        for tag, value in (
            ("0008|0060", "MR"),
            ("0020|000d", uid + ".1"),
            ("0020|000e", uid),
            ("0008|0018", f"{uid}.2.{k + 1}"),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(str(v) for v in position)),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0018|0050", "1"),
        ):
            slice_.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)


def make_inputs(folder: Path) -> Path:
    """Every input file the cases read, written into ``folder`` (deterministic)."""
    import numpy as np
    import SimpleITK as sitk

    sys.path.insert(0, str(LIB))
    from imagetomesh.core.volume import Volume
    from imagetomesh.fitting.curves import mask_outline
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.io.images import read_labelmap, write_image
    from imagetomesh.io.markups import Markup, write_markups
    from imagetomesh.io.meshes import write_mesh

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    f = folder
    f.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    shutil.copy(SAMPLES / "hippocampus_024_label.nii.gz", f / "label.nii.gz")
    shutil.copy(SAMPLES / "hippocampus_024.nii.gz", f / "image.nii.gz")
    shutil.copy(SAMPLES.parent / "headneck-ct" / "openkbp_082.nii.gz", f / "ct.nii.gz")
    label = sitk.ReadImage(str(f / "label.nii.gz"))
    image = sitk.ReadImage(str(f / "image.nii.gz"))
    for ext in ("nrrd", "mha", "vtk"):
        sitk.WriteImage(label, str(f / f"label.{ext}"))
    sitk.WriteImage(label, str(f / "label.nii"))
    sitk.WriteImage(label, str(f / "label.mhd"))  # + label.raw
    (f / "label_noraw.mhd").write_text((f / "label.mhd").read_text().replace("label.raw", "missing.raw"))
    _dicom_folder(label, f / "dicom")
    (f / "dicom_empty").mkdir()
    (f / "dicom_garbage").mkdir()
    for k in range(3):
        _write(f / "dicom_garbage" / f"{k}.dcm", rng.bytes(2000))
    (f / "dicom_one").mkdir()
    shutil.copy(f / "dicom" / "slice010.dcm", f / "dicom_one" / "slice010.dcm")
    _dicom_folder(label, f / "dicom_tilted", shear=0.36)
    _dicom_folder(label, f / "dicom_twice", same_position=12)
    _dicom_folder(label, f / "dicom_export" / "PAT1" / "STUDY1" / "SERIES1")
    _dicom_folder(label, f / "dicom_export_two" / "A")
    _dicom_folder(label, f / "dicom_export_two" / "B")
    shutil.make_archive(str(f / "dicom_export"), "zip", f / "dicom_export")
    shutil.make_archive(str(f / "notes"), "zip", f / "dicom_garbage")  # an archive without DICOM
    _write(f / "broken.zip", b"PK\x03\x04" + rng.bytes(500))
    # broken images
    _truncate(f / "label.nii.gz", f / "trunc.nii.gz", 0.5)
    _truncate(f / "label.nii", f / "trunc.nii", 0.5)
    _truncate(f / "label.nii", f / "header_only.nii", 0.3 * 352 / (f / "label.nii").stat().st_size)
    _truncate(f / "label.nrrd", f / "trunc.nrrd", 0.5)
    _truncate(f / "label.mha", f / "trunc.mha", 0.5)
    _write(f / "empty.nii.gz", b"")
    _write(f / "garbage.nii.gz", rng.bytes(5000))
    _write(f / "garbage.nii", rng.bytes(5000))
    _write(f / "text.nrrd", "this is not an image\n")
    _write(f / "bad_header.nrrd", "NRRD0004\ntype: banana\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n" + "x" * 8)
    _write(
        f / "huge_header.nrrd", "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 100000 100000 100000\nencoding: raw\n\nxx"
    )
    _write(f / "unknown.xyz123", "hello")
    arr = sitk.GetArrayFromImage(label)
    write_image(Volume(arr[10].astype(np.uint8)[None].repeat(1, 0)), f / "flat.nii.gz")  # one slice
    sitk.WriteImage(sitk.GetImageFromArray(arr[10]), str(f / "2d.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([arr, arr]).astype(np.uint8)), str(f / "4d.nii.gz"))
    sitk.WriteImage(
        sitk.GetImageFromArray(np.stack([arr] * 3, -1).astype(np.uint8), isVector=True), str(f / "rgb.nrrd")
    )
    nan = sitk.GetArrayFromImage(image).astype(np.float32)
    nan[5, 5, 5] = np.nan
    write_image(Volume(nan), f / "nan.nii.gz")
    inf = sitk.GetArrayFromImage(image).astype(np.float32)
    inf[5, 5, 5] = np.inf
    write_image(Volume(inf), f / "inf.nrrd")
    write_image(Volume(np.zeros((20, 20, 20), np.uint8)), f / "zeros.nii.gz")
    one = np.zeros((20, 20, 20), np.uint8)
    one[10, 10, 10] = 1
    write_image(Volume(one), f / "one_voxel.nii.gz")
    two = one.copy()
    two[10, 10, 11] = 1
    write_image(Volume(two), f / "two_voxels.nii.gz")
    write_image(Volume(np.ones((20, 20, 20), np.uint8)), f / "full.nii.gz")
    frac = (arr > 0).astype(np.float32) * 0.5
    write_image(Volume(frac), f / "fractional.nii.gz")
    big = (arr > 0).astype(np.int64) * (2**40)
    write_image(Volume(big), f / "big_label.nrrd")
    neg = (arr > 0).astype(np.int16) * -3
    write_image(Volume(neg), f / "negative_label.nii.gz")
    zero_spacing = sitk.Image(label)
    zero_spacing.SetSpacing((1.0, 1.0, 1e-30))
    sitk.WriteImage(zero_spacing, str(f / "tiny_spacing.nrrd"))
    huge_spacing = sitk.Image(label)
    huge_spacing.SetSpacing((1e30, 1e30, 1e30))
    sitk.WriteImage(huge_spacing, str(f / "huge_spacing.nrrd"))
    header = bytearray((f / "label.nii").read_bytes())
    header[40:56] = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], np.int16).tobytes()
    _write(f / "huge_dims.nii", bytes(header))
    # meshes
    mask = read_labelmap(f / "label.nii.gz")
    mesh = labelmap_to_mesh(mask)
    for ext in ("stl", "obj", "ply", "vtk", "vtp"):
        write_mesh(mesh, f / f"mesh.{ext}")
    for ext in ("stl", "obj", "ply", "vtk", "vtp"):
        _write(f / f"empty.{ext}", b"")
        _write(f / f"garbage.{ext}", rng.bytes(3000))
        _truncate(f / f"mesh.{ext}", f / f"trunc.{ext}", 0.5)
    stl = bytearray((f / "mesh.stl").read_bytes())
    stl[84 + 12 : 84 + 16] = np.array([np.nan], np.float32).tobytes()  # first vertex x
    _write(f / "nan_vertex.stl", bytes(stl))
    stl = bytearray((f / "mesh.stl").read_bytes())
    stl[84 + 12 : 84 + 16] = np.array([np.inf], np.float32).tobytes()
    _write(f / "inf_vertex.stl", bytes(stl))
    stl = bytearray((f / "mesh.stl").read_bytes())
    stl[80:84] = np.array([10**9], np.uint32).tobytes()  # claims 1e9 triangles
    _write(f / "lying_count.stl", bytes(stl))
    _write(f / "zero_tri.stl", b"\0" * 80 + np.array([0], np.uint32).tobytes())
    _write(
        f / "ascii.stl",
        "solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\n"
        "endloop\nendfacet\nendsolid x\n",
    )
    _write(f / "points_only.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    _write(f / "bad_index.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 99\n")
    _write(f / "text_faces.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf a b c\n")
    _write(f / "bad_header.ply", "ply\nformat ascii 1.0\nelement vertex banana\nend_header\n")
    _write(
        f / "short.ply",
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n",
    )
    _write(f / "bad.vtp", "<VTKFile type='PolyData'><PolyData><Piece NumberOfPoints='3'>")
    sitk.WriteImage(label, str(f / "image_as.vtk"))  # a legacy VTK file holding an image, not a mesh
    # points
    v = mesh.vertices.astype(np.float64)
    np.savetxt(f / "points.csv", v, delimiter=",", fmt="%.4f")
    _write(f / "points_header.csv", "x,y,z\n" + "\n".join(",".join(f"{c:.4f}" for c in p) for p in v))
    np.savetxt(f / "points.txt", v, fmt="%.4f")
    lines = [
        "# Markups fiducial file version = 4.11",
        "# CoordinateSystem = LPS",
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID",
    ]
    lines += [f"{i},{p[0]:.3f},{p[1]:.3f},{p[2]:.3f},0,0,0,1,1,1,0,F-{i},," for i, p in enumerate(v[::10])]
    _write(f / "points.fcsv", "\n".join(lines) + "\n")
    _write(f / "broken.fcsv", "# Markups fiducial file version = 4.11\n1,2\n")
    bad = v.copy()
    bad[3, 1] = np.nan
    np.savetxt(f / "nan_points.csv", bad, delimiter=",", fmt="%.4f")
    bad = v.copy()
    bad[3, 1] = np.inf
    np.savetxt(f / "inf_points.csv", bad, delimiter=",", fmt="%.4f")
    np.savetxt(f / "two_columns.csv", v[:, :2], delimiter=",", fmt="%.4f")
    _write(f / "empty.csv", "")
    _write(f / "text.csv", "hello,world,again\nfoo,bar,baz\n")
    np.savetxt(f / "one_point.csv", v[:1], delimiter=",", fmt="%.4f")
    np.savetxt(f / "far_points.csv", v + 1e9, delimiter=",", fmt="%.4f")
    np.savetxt(f / "huge_points.csv", v * 1e300, delimiter=",", fmt="%.6g")
    np.savetxt(f / "same_points.csv", np.repeat(v[:1], 50, 0), delimiter=",", fmt="%.4f")
    _write(f / "ragged.csv", "1,2,3\n4,5\n6,7,8,9\n")
    write_markups(Markup("Fiducial", "pts", v[::10], False), f / "points.mrk.json")
    # curves
    centre = mesh.centroid()
    curves = [mask_outline(mask, centre, mask.direction[:, axis]) for axis in (2, 1, 0)]
    write_markups([Markup("ClosedCurve", f"c{n}", c, True) for n, c in enumerate(curves)], f / "curves.mrk.json")
    write_markups(Markup("ClosedCurve", "only", curves[0], True), f / "one_curve.mrk.json")
    write_markups(Markup("Curve", "open", curves[1], False), f / "open_curve.mrk.json")
    write_markups(Markup("ClosedCurve", "two", curves[2][:2], True), f / "two_point_curve.mrk.json")
    line = np.stack([np.linspace(0, 10, 8), np.zeros(8), np.zeros(8)], 1) + centre
    write_markups(Markup("ClosedCurve", "line", line, True), f / "collinear_curve.mrk.json")
    write_markups(Markup("ClosedCurve", "dot", np.repeat(centre[None], 8, 0), True), f / "dot_curve.mrk.json")
    nonplanar = curves[0].copy()
    nonplanar[:, 2] += rng.normal(0, 5, len(nonplanar))
    write_markups(Markup("ClosedCurve", "bent", nonplanar, True), f / "nonplanar_curve.mrk.json")
    doc = json.loads((f / "curves.mrk.json").read_text())
    doc["markups"][0]["controlPoints"][0]["position"] = ["nan", 0, 0]
    _write(f / "nan_curve.mrk.json", json.dumps(doc))
    doc = json.loads((f / "curves.mrk.json").read_text())
    doc["markups"][0]["controlPoints"] = []
    _write(f / "no_points.mrk.json", json.dumps(doc))
    doc = json.loads((f / "curves.mrk.json").read_text())
    doc["markups"][0]["coordinateUnits"] = 5
    _write(f / "bad_units.mrk.json", json.dumps(doc))
    doc = json.loads((f / "curves.mrk.json").read_text())
    doc["markups"][0]["coordinateSystem"] = "XYZ"
    _write(f / "bad_space.mrk.json", json.dumps(doc))
    doc = json.loads((f / "curves.mrk.json").read_text())
    doc["markups"][0]["controlPoints"][0]["position"] = [1e308, 1e308, 1e308]
    _write(f / "huge_curve.mrk.json", json.dumps(doc))
    _write(f / "truncated.mrk.json", (f / "curves.mrk.json").read_text()[:200])
    _write(f / "deep.mrk.json", "[" * 100000 + "]" * 100000)
    _write(f / "list.mrk.json", "[1, 2, 3]")
    _write(f / "no_markups.mrk.json", json.dumps({"markups": []}))
    _write(f / "latin1.mrk.json", b'{"markups": [{"type": "ClosedCurve", "name": "\xe9"}]}')
    _write(f / "empty.mrk.json", "")
    # names that are hard on tools
    shutil.copy(f / "label.nii.gz", f / "with space ünïcødé.nii.gz")
    shutil.copy(f / "mesh.stl", f / "mesh with space ü.stl")
    # model folders
    models = REPO / "Resources" / "Models"
    (f / "model_empty").mkdir()
    shutil.copytree(models / "unet-hippocampus", f / "model_bad_card")
    _write(f / "model_bad_card" / "card.json", "{not json")
    shutil.copytree(models / "unet-hippocampus", f / "model_bad_weights")
    _write(f / "model_bad_weights" / "model.safetensors", rng.bytes(4000))
    shutil.copytree(models / "unet-hippocampus", f / "model_no_weights")
    (f / "model_no_weights" / "model.safetensors").unlink()
    shutil.copytree(models / "unet-hippocampus", f / "model_card_list")
    _write(f / "model_card_list" / "card.json", "[1, 2]")
    shutil.copytree(models / "dals-hippocampus", f / "prior_bad_weights")
    _write(f / "prior_bad_weights" / "model.safetensors", b"")
    import pickle

    shutil.copytree(models / "dals-hippocampus", f / "prior_pickle")
    _write(f / "prior_pickle" / "model.safetensors", pickle.dumps({"weights": [1, 2, 3]}))
    # MSD folders
    _msd(f / "msd", 3)
    _msd(f / "msd_one", 1)
    (f / "msd_nojson").mkdir()
    (f / "msd_nojson" / "imagesTr").mkdir()
    for name, text in (
        ("msd_badjson", "{not json"),
        ("msd_list", "[1, 2]"),
        ("msd_notraining", json.dumps({"name": "x"})),
        ("msd_training_str", json.dumps({"training": "yes"})),
        ("msd_training_ints", json.dumps({"training": [1, 2, 3]})),
        (
            "msd_missing_files",
            json.dumps({"training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}] * 3}),
        ),
        ("msd_empty_training", json.dumps({"training": []})),
        ("msd_no_label_key", json.dumps({"training": [{"image": "./imagesTr/a.nii.gz"}] * 3})),
    ):
        (f / name).mkdir()
        _write(f / name / "dataset.json", text)
    _msd(f / "msd_garbage_image", 3)
    _write(f / "msd_garbage_image" / "imagesTr" / "hippocampus_000.nii.gz", rng.bytes(300))
    _msd(f / "msd_empty_labels", 3, empty=True)
    (f / "dals_empty").mkdir()
    return f


def _msd(root: Path, cases: int, empty: bool = False) -> None:
    import numpy as np

    from imagetomesh.core.volume import Volume
    from imagetomesh.io.images import write_image

    rng = np.random.default_rng(3)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    zz, yy, xx = np.mgrid[:24, :24, :24]
    for n in range(cases):
        label = (((zz - 12) ** 2 + (yy - 12) ** 2 / 2 + (xx - 11 - n) ** 2) < 30).astype(np.uint8)
        if empty:
            label[:] = 0
        image = rng.normal(0, 1, label.shape).astype(np.float32) + 3 * label
        name = f"hippocampus_{n:03d}.nii.gz"
        write_image(Volume(label), root / "labelsTr" / name)
        write_image(Volume(image), root / "imagesTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({"training": entries, "labels": {"0": "bg", "1": "x"}}))


# --- the cases ------------------------------------------------------------------------------------
ODD_NUMBERS = ("nan", "inf", "-inf", "-1", "1e308", "99999999999999999999", "", "abc")
FIT = ["--iterations", "5"]


#: The cases CI runs (``--quick``, ``Testing/cli/test_cli_hostile.py``): one or two of each kind, all fast.
QUICK = frozenset(
    {
        "mfl-read-label.nrrd",
        "mfl-read-dicom",
        "mfl-read-dicom_export.zip",
        "mfl-zip-broken",
        "mfl-bad-trunc.nii.gz",
        "mfl-bad-dicom_garbage",
        "mfl-bad-huge_dims.nii",
        "mfl-one-voxel",
        "mfl-unicode-in",
        "mfl-write-nii",
        "mfl-smoothing-nan",
        "mfl-missing-input",
        "mfl-input-dev-zero",
        "mfl-output-is-input",
        "mfl-output-folder-missing",
        "mfl-unknown-option",
        "info-empty.stl",
        "info-trunc.ply",
        "info-trunc.stl",
        "info-bad-nan_vertex.stl",
        "info-bad-bad_index.obj",
        "evaluate-threshold-nan",
        "evaluate-threshold--1",
        "models",
        "segment-model_bad_card",
        "fit-points-far",
        "fit-points--lambda-reg-nan",
        "fit-points-lambda-reg-1e308",
        "fit-points-iterations-huge",
        "fit-points-prior-pickle",
        "fit-curves-one",
        "fit-curves-bad-collinear_curve",
        "fit-curves-bad-nan_curve",
        "refine-one-voxel",
        "train-steps--1",
        "train-resume-pickle-checkpoint",
        "train-data-msd_badjson",
        "train-out-is-file",
        "demo-output-is-file",
        "sigint-fit-points",
    }
)


def _put(name: str, data: str | bytes = "old") -> Callable[[Path, Path], None]:
    def setup(inputs: Path, out: Path) -> None:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, data)

    return setup


def _pickle_run(inputs: Path, out: Path) -> None:
    """A run folder whose checkpoint is a pickle of an arbitrary object (it must be refused, never loaded)."""
    import datetime
    import pickle

    (out / "run").mkdir()
    _write(out / "run" / "checkpoint.pt", pickle.dumps({"step": 3, "when": datetime.datetime(2020, 1, 1)}))


def cases() -> list[Case]:
    c: list[Case] = []

    def add(name, argv, expect, **kw):
        c.append(Case(name, argv, expect, quick=name in QUICK, **kw))

    mfl = ["mesh-from-label"]
    # -- mesh-from-label: every image format, good and broken
    for name in ("label.nii.gz", "label.nii", "label.nrrd", "label.mha", "label.mhd", "label.vtk", "dicom"):
        add(f"mfl-read-{name}", [*mfl, "{F}/" + name, "-o", "{O}/m.stl"], 0)
    for name in (
        "trunc.nii.gz",
        "trunc.nii",
        "header_only.nii",
        "trunc.nrrd",
        "trunc.mha",
        "empty.nii.gz",
        "garbage.nii.gz",
        "garbage.nii",
        "text.nrrd",
        "bad_header.nrrd",
        "huge_header.nrrd",
        "unknown.xyz123",
        "label_noraw.mhd",
        "dicom_empty",
        "dicom_garbage",
        "2d.nii.gz",
        "4d.nii.gz",
        "rgb.nrrd",
        "zeros.nii.gz",
        "fractional.nii.gz",
        "huge_dims.nii",
        "mesh.stl",
        "nan.nii.gz",
    ):
        add(
            f"mfl-bad-{name}",
            [*mfl, "{F}/" + name, "-o", "{O}/m.stl"],
            2,
        )
    add("mfl-one-voxel", [*mfl, "{F}/one_voxel.nii.gz", "-o", "{O}/m.stl"], 2, message="too small")
    add("mfl-two-voxels", [*mfl, "{F}/two_voxels.nii.gz", "-o", "{O}/m.stl"], 2, message="too small")
    add("mfl-full-volume", [*mfl, "{F}/full.nii.gz", "-o", "{O}/m.stl"], 0)
    add("mfl-dicom-one-slice", [*mfl, "{F}/dicom_one", "-o", "{O}/m.stl"], 2)
    for name in ("dicom_tilted", "dicom_export", "dicom_export.zip"):
        add(f"mfl-read-{name}", [*mfl, "{F}/" + name, "-o", "{O}/m.stl"], 0)
    add("mfl-dicom-two-at-one-position", [*mfl, "{F}/dicom_twice", "-o", "{O}/m.stl"], 2, message="one position")
    add("mfl-dicom-export-of-two", [*mfl, "{F}/dicom_export_two", "-o", "{O}/m.stl"], 2, message="folders below")
    add("mfl-zip-broken", [*mfl, "{F}/broken.zip", "-o", "{O}/m.stl"], 2, message="cannot be unpacked")
    add("mfl-zip-without-dicom", [*mfl, "{F}/notes.zip", "-o", "{O}/m.stl"], 2, message="no DICOM series")
    add("mfl-big-label", [*mfl, "{F}/big_label.nrrd", "-o", "{O}/m.stl"], 0)
    add("mfl-big-label-value", [*mfl, "{F}/big_label.nrrd", "--label", str(2**40), "-o", "{O}/m.stl"], 0)
    add("mfl-negative-label", [*mfl, "{F}/negative_label.nii.gz", "--label", "-3", "-o", "{O}/m.stl"], 0)
    add("mfl-tiny-spacing", [*mfl, "{F}/tiny_spacing.nrrd", "-o", "{O}/m.stl"], 2)
    add("mfl-huge-spacing", [*mfl, "{F}/huge_spacing.nrrd", "-o", "{O}/m.stl"], 2)
    add("mfl-unicode-in", [*mfl, "{F}/with space ünïcødé.nii.gz", "-o", "{O}/m.stl"], 0)
    add("mfl-unicode-out", [*mfl, "{F}/label.nii.gz", "-o", "{O}/out ünï cødé.stl"], 0)
    for ext in ("obj", "ply", "vtk", "vtp"):
        add(f"mfl-write-{ext}", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m." + ext], 0)
    add("mfl-write-nii", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.nii.gz"], 2)
    add("mfl-write-noext", [*mfl, "{F}/label.nii.gz", "-o", "{O}/mesh"], 2)
    # numbers
    for value in ODD_NUMBERS:
        add(
            f"mfl-smoothing-{value or 'empty'}",
            [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--smoothing", value],
            2,
        )
        add(
            f"mfl-decimation-{value or 'empty'}",
            [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--decimation", value],
            2,
        )
        add(
            f"mfl-label-{value or 'empty'}",
            [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--label", value],
            2,
        )
    add("mfl-label-0", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--label", "0"], 2)
    add("mfl-label-absent", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--label", "7"], 2)
    add("mfl-smoothing-0", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--smoothing", "0"], 0)
    add("mfl-decimation-0.95", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--decimation", "0.95"], 0)
    add("mfl-space-bad", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--coordinate-system", "XYZ"], 2)
    add("mfl-space-ras-lower", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--coordinate-system", "ras"], 0)
    # paths
    add("mfl-missing-input", [*mfl, "{F}/nope.nii.gz", "-o", "{O}/m.stl"], 2, message="does not exist")
    add("mfl-input-under-file", [*mfl, "{F}/label.nii.gz/x.nii.gz", "-o", "{O}/m.stl"], 2)
    add("mfl-input-long-name", [*mfl, "{F}/" + "a" * 300 + ".nii.gz", "-o", "{O}/m.stl"], 2)
    add("mfl-input-dev-zero", [*mfl, "/dev/zero", "-o", "{O}/m.stl"], 2)
    add("mfl-input-empty-name", [*mfl, "", "-o", "{O}/m.stl"], 2)
    add("mfl-output-is-input", [*mfl, "{F}/label.nii.gz", "-o", "{F}/label.nii.gz"], 2)
    add("mfl-output-is-input-mesh", [*mfl, "{F}/label.vtk", "-o", "{F}/label.vtk"], 2)
    add("mfl-output-is-folder", [*mfl, "{F}/label.nii.gz", "-o", "{O}"], 2)
    add("mfl-output-folder-missing", [*mfl, "{F}/label.nii.gz", "-o", "{O}/no/such/m.stl"], 2)
    add("mfl-output-under-file", [*mfl, "{F}/label.nii.gz", "-o", "{O}/file/m.stl"], 2, setup=_put("file"))
    add("mfl-output-long-name", [*mfl, "{F}/label.nii.gz", "-o", "{O}/" + "m" * 250 + ".stl"], 2)
    add("mfl-output-exists", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl"], 0, setup=_put("m.stl"))
    add("mfl-output-empty", [*mfl, "{F}/label.nii.gz", "-o", ""], 2)
    add("mfl-no-args", [*mfl], 2)
    add("mfl-unknown-option", [*mfl, "{F}/label.nii.gz", "-o", "{O}/m.stl", "--banana"], 2)
    add("no-command", [], 2)
    add("unknown-command", ["frobnicate"], 2)

    # -- info
    for name in (
        "label.nii.gz",
        "dicom",
        "mesh.stl",
        "mesh.obj",
        "mesh.ply",
        "mesh.vtk",
        "mesh.vtp",
        "ascii.stl",
        "with space ünïcødé.nii.gz",
        "4d.nii.gz",
    ):
        add(f"info-{name}", ["info", "{F}/" + name], 0 if name != "4d.nii.gz" else 2)
    for ext in ("stl", "obj", "ply", "vtk", "vtp"):
        for kind in ("empty", "garbage", "trunc"):
            add(f"info-{kind}.{ext}", ["info", "{F}/" + f"{kind}.{ext}"], 2)
    for name in (
        "nan_vertex.stl",
        "lying_count.stl",
        "bad_index.obj",
        "text_faces.obj",
        "bad_header.ply",
        "short.ply",
        "bad.vtp",
        "trunc.nii.gz",
        "huge_dims.nii",
        "nan.nii.gz",
        "dicom_empty",
    ):
        add(f"info-bad-{name}", ["info", "{F}/" + name], 2)
    add("info-zero-triangles", ["info", "{F}/zero_tri.stl"], 2, message="no triangles")
    add("info-points-only", ["info", "{F}/points_only.obj"], 2, message="no triangles")
    add("info-image-as-vtk", ["info", "{F}/image_as.vtk"], 2, message="mesh")
    add("info-missing", ["info", "{F}/nope.stl"], 2)
    add("info-folder", ["info", "{F}/model_empty"], 2)
    add("info-dev-null", ["info", "/dev/null"], 2)

    # -- evaluate
    ev = ["evaluate", "{F}/mesh.stl", "{F}/label.nii.gz"]
    add("evaluate-ok", ev, 0)
    add("evaluate-json", [*ev, "--json"], 0)
    for value in ODD_NUMBERS + ("0",):
        # a finite threshold beyond the mesh is a valid question (every point is within it): F-score 1
        accepted = value in ("1e308", "99999999999999999999")
        add(f"evaluate-threshold-{value or 'empty'}", [*ev, "--threshold", value], 0 if accepted else 2)
    add("evaluate-label-absent", [*ev, "--label", "9"], 2)
    add("evaluate-label-huge", [*ev, "--label", "99999999999999999999"], 2)
    add("evaluate-nan-mesh", ["evaluate", "{F}/nan_vertex.stl", "{F}/label.nii.gz"], 2)
    add("evaluate-points-only", ["evaluate", "{F}/points_only.obj", "{F}/label.nii.gz"], 2)
    add("evaluate-zero-tri", ["evaluate", "{F}/zero_tri.stl", "{F}/label.nii.gz"], 2)
    add("evaluate-empty-label", ["evaluate", "{F}/mesh.stl", "{F}/zeros.nii.gz"], 2)
    add("evaluate-swapped", ["evaluate", "{F}/label.nii.gz", "{F}/mesh.stl"], 2)
    add("evaluate-ascii-stl", ["evaluate", "{F}/ascii.stl", "{F}/label.nii.gz"], 0)

    # -- preview
    pv = ["preview", "{F}/image.nii.gz", "{F}/mesh.stl", "-o"]
    add("preview-ok", [*pv, "{O}/p.png"], 0)
    add("preview-not-png", [*pv, "{O}/p.jpg"], 2)
    add("preview-output-folder", [*pv, "{O}"], 2)
    add("preview-output-is-input", [*pv, "{F}/mesh.stl"], 2)
    add("preview-missing-parent", [*pv, "{O}/x/p.png"], 2)
    add("preview-bad-image", ["preview", "{F}/garbage.nii.gz", "{F}/mesh.stl", "-o", "{O}/p.png"], 2)
    add("preview-bad-mesh", ["preview", "{F}/image.nii.gz", "{F}/garbage.stl", "-o", "{O}/p.png"], 2)
    add("preview-nan-mesh", ["preview", "{F}/image.nii.gz", "{F}/nan_vertex.stl", "-o", "{O}/p.png"], 2)
    add("preview-2d", ["preview", "{F}/2d.nii.gz", "{F}/mesh.stl", "-o", "{O}/p.png"], 2)
    add("preview-nan-image", ["preview", "{F}/nan.nii.gz", "{F}/mesh.stl", "-o", "{O}/p.png"], 2)
    add("preview-image-only", ["preview", "{F}/image.nii.gz", "-o", "{O}/p.png"], 0)
    add("preview-label-and-window", [*pv, "{O}/p.png", "--label", "{F}/label.nii.gz", "--window", "0,500"], 0)
    for value in ("nan,1", "5,5", "9,1", "1", "1,2,3", "inf,1", ""):
        add(f"preview-window-{value or 'empty'}", [*pv, "{O}/p.png", "--window=" + value], 2)
    for value in ("1,2", "inf,0,0", "nan,0,0", "a,b,c", ""):
        add(f"preview-centre-{value or 'empty'}", [*pv, "{O}/p.png", "--centre=" + value], 2)
    add("preview-label-garbage", [*pv, "{O}/p.png", "--label", "{F}/garbage.nii.gz"], 2)
    add("preview-label-float", [*pv, "{O}/p.png", "--label", "{F}/image.nii.gz"], 2)
    add("preview-curves-garbage", [*pv, "{O}/p.png", "--curves", "{F}/garbage.nii.gz"], 2)

    # -- models
    add("models", ["models"], 0)
    add("models-json", ["models", "--json"], 0)
    add("models-extra", ["models", "extra"], 2)

    # -- segment
    sg = ["segment", "{F}/image.nii.gz", "--model", "unet-hippocampus", "--device", "cpu", "-o"]
    add("segment-ok", [*sg, "{O}/s.stl"], 0, timeout=120)
    add("segment-unknown-model", [*sg[:3], "--model", "no-such-model", "-o", "{O}/s.stl"], 2)
    for model in ("model_empty", "model_bad_card", "model_bad_weights", "model_no_weights", "model_card_list"):
        add(
            f"segment-{model}",
            [*sg[:3], "--model", "{F}/" + model, "-o", "{O}/s.stl"],
            2,
        )
    add("segment-model-is-prior", [*sg[:3], "--model", "dals-hippocampus", "-o", "{O}/s.stl"], 2)
    add("segment-model-is-file", [*sg[:3], "--model", "{F}/mesh.stl", "-o", "{O}/s.stl"], 2)
    add("segment-bad-image", ["segment", "{F}/trunc.nii.gz", "--model", "unet-hippocampus", "-o", "{O}/s.stl"], 2)
    add("segment-nan-image", ["segment", "{F}/nan.nii.gz", "--model", "unet-hippocampus", "-o", "{O}/s.stl"], 2)
    add("segment-label-out", [*sg, "{O}/s.nii.gz"], 2)
    add("segment-output-is-input", [*sg, "{F}/image.nii.gz"], 2)
    add(
        "segment-several-to-file",
        ["segment", "{F}/image.nii.gz", "{F}/label.nii.gz", "--model", "unet-hippocampus", "-o", "{O}/s.stl"],
        2,
    )
    add(
        "segment-batch-one-bad",
        [
            "segment",
            "{F}/image.nii.gz",
            "{F}/garbage.nii.gz",
            "--model",
            "unet-hippocampus",
            "--device",
            "cpu",
            "-o",
            "{O}",
        ],
        2,
        several_errors=True,
        timeout=120,
    )
    for value in ("0", "-1", "nan", "1e308", ""):
        add(f"segment-batch-size-{value or 'empty'}", [*sg, "{O}/s.stl", "--batch-size", value], 2)
    add("segment-device-bad", [*sg[:5], "--device", "tpu", "-o", "{O}/s.stl"], 2)
    add("segment-open-unet", [*sg, "{O}/s.stl", "--open"], 2)
    add("segment-organs-one-object-model", [*sg, "{O}/s.stl", "--organs", "mandible"], 2)
    ct = ["segment", "{F}/ct.nii.gz", "--model", "unet-headneck-ct", "-o"]
    add("segment-ct-ok", [*ct, "{O}", "--organs", "mandible,brainstem"], 0, timeout=120, keeps_finished=True)
    add("segment-ct-model-on-mri", ["segment", "{F}/image.nii.gz", "--model", "unet-headneck-ct", "-o", "{O}"], 2)
    add("segment-mri-model-on-ct", ["segment", "{F}/ct.nii.gz", "--model", "unet-hippocampus", "-o", "{O}/s.stl"], 2)
    add("segment-ct-to-a-file", [*ct, "{O}/s.stl"], 2)
    add("segment-ct-missing-folder", [*ct, "{O}/no/such"], 2)
    for value in ("liver", "", ",", "mandible,,liver"):
        add(f"segment-ct-organs-{value or 'empty'}", [*ct, "{O}", "--organs=" + value], 2)
    for value in ("0", "-2", "nan", "1.5", ""):
        add(f"segment-threads-{value or 'empty'}", [*sg, "{O}/s.stl", "--threads", value], 2)

    # -- fit points
    fp = ["fit", "points"]
    prior = ["--prior", "dals-hippocampus"]
    for name in (
        "points.csv",
        "points_header.csv",
        "points.txt",
        "points.fcsv",
        "points.mrk.json",
        "mesh.stl",
        "mesh.ply",
    ):
        add(
            f"fit-points-{name}",
            [*fp, "{F}/" + name, *prior, "-o", "{O}/f.stl", *FIT],
            0,
            timeout=90,
        )
    for name in (
        "nan_points.csv",
        "inf_points.csv",
        "two_columns.csv",
        "empty.csv",
        "text.csv",
        "ragged.csv",
        "broken.fcsv",
        "garbage.stl",
        "nan_vertex.stl",
        "truncated.mrk.json",
        "deep.mrk.json",
        "list.mrk.json",
        "no_markups.mrk.json",
        "latin1.mrk.json",
        "empty.mrk.json",
        "bad_units.mrk.json",
        "huge_points.csv",
        "same_points.csv",
        "one_point.csv",
        "unknown.xyz123",
        "label.nii.gz",
    ):
        add(
            f"fit-points-bad-{name}",
            [*fp, "{F}/" + name, *prior, "-o", "{O}/f.stl", *FIT],
            2,
            timeout=90,
        )
    add("fit-points-far", [*fp, "{F}/far_points.csv", *prior, "-o", "{O}/f.stl", *FIT], 2, message="1e")
    pts = [*fp, "{F}/points.csv", *prior, "-o", "{O}/f.stl"]
    for option in ("--lambda-dir", "--lambda-reg", "--iterations"):
        for value in ("nan", "-1", "-inf", "", "abc"):
            add(
                f"fit-points{option}-{value or 'empty'}",
                [*pts, *FIT, option, value],
                2,
            )
    add("fit-points-lambda-reg-1e308", [*pts, *FIT, "--lambda-reg", "1e308"], 2)
    add("fit-points-lambda-dir-1e308", [*pts, *FIT, "--lambda-dir", "1e308"], 2)
    add("fit-points-lambda-dir-inf", [*pts, *FIT, "--lambda-dir", "inf"], 0)
    add("fit-points-lambda-reg-inf", [*pts, *FIT, "--lambda-reg", "inf"], 2)
    add("fit-points-iterations-0", [*pts, "--iterations", "0"], 2)
    add("fit-points-iterations-huge", [*pts, "--iterations", "99999999999999999999"], 2)
    add("fit-points-iterations-float", [*pts, "--iterations", "1.5"], 2)
    add("fit-points-no-prior", [*fp, "{F}/points.csv", "-o", "{O}/f.stl"], 2)
    add("fit-points-unknown-prior", [*fp, "{F}/points.csv", "--prior", "nope", "-o", "{O}/f.stl"], 2)
    add("fit-points-prior-is-unet", [*fp, "{F}/points.csv", "--prior", "unet-hippocampus", "-o", "{O}/f.stl"], 2)
    add(
        "fit-points-prior-bad-weights",
        [*fp, "{F}/points.csv", "--prior", "{F}/prior_bad_weights", "-o", "{O}/f.stl"],
        2,
    )
    add(
        "fit-points-prior-pickle",
        [*fp, "{F}/points.csv", "--prior", "{F}/prior_pickle", "-o", "{O}/f.stl"],
        2,
    )
    add("fit-points-prior-file", [*fp, "{F}/points.csv", "--prior", "{F}/mesh.stl", "-o", "{O}/f.stl"], 2)
    add("fit-points-output-is-input", [*fp, "{F}/mesh.stl", *prior, "-o", "{F}/mesh.stl", *FIT], 2)
    add("fit-points-output-csv", [*pts, *FIT[:0], "-o", "{O}/f.csv"], 2)
    add("fit-points-unicode", [*fp, "{F}/mesh with space ü.stl", *prior, "-o", "{O}/ü f.stl", *FIT], 0, timeout=90)

    # -- fit curves
    fc = ["fit", "curves"]
    add("fit-curves-ok", [*fc, "{F}/curves.mrk.json", *prior, "-o", "{O}/f.stl", *FIT], 0, timeout=90)
    add(
        "fit-curves-one",
        [*fc, "{F}/one_curve.mrk.json", *prior, "-o", "{O}/f.stl", *FIT],
        0,
        timeout=90,
        message="one curve",
    )
    add(
        "fit-curves-open",
        [*fc, "{F}/open_curve.mrk.json", "{F}/one_curve.mrk.json", *prior, "-o", "{O}/f.stl", *FIT],
        0,
        timeout=90,
        message="open",
    )
    for name in (
        "two_point_curve",
        "collinear_curve",
        "dot_curve",
        "nan_curve",
        "no_points",
        "bad_units",
        "bad_space",
        "huge_curve",
        "truncated",
        "deep",
        "list",
        "no_markups",
        "points",
        "empty",
    ):
        add(
            f"fit-curves-bad-{name}",
            [*fc, "{F}/" + name + ".mrk.json", *prior, "-o", "{O}/f.stl", *FIT],
            2,
            timeout=90,
        )
    add(
        "fit-curves-nonplanar",
        [*fc, "{F}/nonplanar_curve.mrk.json", *prior, "-o", "{O}/f.stl", *FIT],
        0,
        timeout=90,
        message="not planar",
    )
    add("fit-curves-csv", [*fc, "{F}/points.csv", *prior, "-o", "{O}/f.stl", *FIT], 2)
    add("fit-curves-missing", [*fc, "{F}/curves.mrk.json", "{F}/nope.mrk.json", *prior, "-o", "{O}/f.stl"], 2)

    # -- refine
    rf = ["refine", "{F}/label.nii.gz", *prior, "-o", "{O}/r.stl", *FIT]
    add("refine-ok", rf, 0, timeout=90)
    add(
        "refine-one-voxel",
        ["refine", "{F}/one_voxel.nii.gz", *prior, "-o", "{O}/r.stl", *FIT],
        2,
        message="too small",
    )
    add("refine-empty", ["refine", "{F}/zeros.nii.gz", *prior, "-o", "{O}/r.stl", *FIT], 2)
    add("refine-label-absent", [*rf, "--label", "5"], 2)
    add("refine-bad-image", ["refine", "{F}/trunc.nrrd", *prior, "-o", "{O}/r.stl", *FIT], 2)
    for value in ("nan", "inf", "-1", "1e308", ""):
        add(f"refine-coverage-{value or 'empty'}", [*rf, "--coverage", value], 2)
    add("refine-coverage-0", [*rf, "--coverage", "0"], 0, timeout=90)
    add("refine-output-is-input", ["refine", "{F}/label.vtk", *prior, "-o", "{F}/label.vtk", *FIT], 2)

    # -- train (argument and data validation only)
    def tr(kind, data, *extra, out="{O}/run"):
        return ["train", kind, "--data", data, "--out", out, "--device", "cpu", *extra]

    add("train-unet-steps-1", tr("unet", "{F}/msd", "--steps", "1"), 0, timeout=120)
    add("train-unet-steps-3", tr("unet", "{F}/msd", "--steps", "3"), 0, timeout=120)
    for value in ("-1", "0", "nan", "", "1e308", "abc"):
        add(f"train-steps-{value or 'empty'}", tr("unet", "{F}/msd", "--steps", value), 2)
    add("train-seed-bad", tr("unet", "{F}/msd", "--seed", "nan"), 2)
    add("train-seed-huge", tr("unet", "{F}/msd", "--seed", "99999999999999999999999", "--steps", "1"), 2)
    add("train-time-limit-nan", tr("nudf", "{F}/msd", "--time-limit", "nan"), 2)
    add("train-time-limit-neg", tr("nudf", "{F}/msd", "--time-limit", "-1"), 2)
    add("train-time-limit-0", tr("nudf", "{F}/msd", "--time-limit", "0"), 2)
    add("train-pretrain-neg", tr("implicitmeshnet", "{F}/msd", "--pretrain-steps", "-5"), 2)
    add("train-config-unknown", tr("unet", "{F}/msd", "--config", "banana"), 2)
    add("train-kind-unknown", tr("banana", "{F}/msd"), 2)
    add("train-data-msd_one", tr("unet", "{F}/msd_one", "--steps", "1"), 0, timeout=120)
    add("train-unet-steps-20", tr("unet", "{F}/msd", "--steps", "20"), 0, timeout=240)
    add("train-resume-pickle-checkpoint", tr("unet", "{F}/msd", "--steps", "1"), 2, setup=_pickle_run)
    add("train-resume-garbage-checkpoint", tr("unet", "{F}/msd", "--steps", "1"), 2, setup=_put("run/checkpoint.pt"))
    for data in (
        "nope",
        "mesh.stl",
        "msd_nojson",
        "msd_badjson",
        "msd_list",
        "msd_notraining",
        "msd_training_str",
        "msd_training_ints",
        "msd_missing_files",
        "msd_empty_training",
        "msd_no_label_key",
        "model_empty",
        "msd_garbage_image",
    ):
        add(
            f"train-data-{data}",
            tr("unet", "{F}/" + data, "--steps", "1"),
            2,
            timeout=120,
        )
    add("train-out-is-file", tr("unet", "{F}/msd", "--steps", "1", out="{O}/file"), 2, setup=_put("file"))
    add("train-out-under-file", tr("unet", "{F}/msd", "--steps", "1", out="{O}/file/run"), 2, setup=_put("file"))
    add("train-out-parent-missing", tr("unet", "{F}/msd", "--steps", "1", out="{O}/a/b/run"), 2)
    add("train-out-is-data", tr("unet", "{F}/msd", "--steps", "1", out="{F}/msd"), 2)
    add("train-init-from-missing", tr("unet", "{F}/msd", "--steps", "1", "--init-from", "{F}/nope"), 2)
    add("train-init-from-bad", tr("unet", "{F}/msd", "--steps", "1", "--init-from", "{F}/model_bad_weights"), 2)
    add("train-init-from-pickle", tr("unet", "{F}/msd", "--steps", "1", "--init-from", "{F}/prior_pickle"), 2)
    add("train-dals-no-shapes", ["train", "dals", "--data", "{F}/dals_empty", "--out", "{O}/run"], 2)
    add(
        "train-dals-bad-shapes",
        ["train", "dals", "--shapes", "liver", "--data", "{F}/dals_empty", "--out", "{O}/run"],
        2,
    )
    add(
        "train-dals-empty-data",
        ["train", "dals", "--shapes", "kidney", "--data", "{F}/dals_empty", "--out", "{O}/run", "--steps", "1"],
        2,
    )

    # -- demo (validation only: a full demo is minutes)
    add("demo-output-is-file", ["demo", "-o", "{O}/file"], 2, setup=_put("file"))
    add("demo-output-under-file", ["demo", "-o", "{O}/file/demo"], 2, setup=_put("file"))
    add("demo-output-parent-missing", ["demo", "-o", "{O}/a/b"], 2)

    # -- interrupted runs: nothing partial may stay behind
    add("sigterm-fit-points", [*pts, "--iterations", "2000"], INTERRUPTED, interrupt=(signal.SIGTERM, 4.0))
    add("sigint-fit-points", [*pts, "--iterations", "2000"], INTERRUPTED, interrupt=(signal.SIGINT, 4.0))
    # a whole segment call now takes about 2.5 s on an idle 2-core machine: interrupt it earlier, and a
    # mesh finished just before the signal may stay (it was written whole); a partial one never
    add("sigterm-segment", [*sg, "{O}/s.stl"], INTERRUPTED, interrupt=(signal.SIGTERM, 1.5), keeps_finished=True)
    add(
        "sigterm-train",
        tr("unet", "{F}/msd", "--steps", "100000"),
        INTERRUPTED,
        interrupt=(signal.SIGTERM, 4.0),
        keeps_finished=True,
    )
    add(
        "sigint-train",
        tr("unet", "{F}/msd", "--steps", "100000"),
        INTERRUPTED,
        interrupt=(signal.SIGINT, 4.0),
        keeps_finished=True,
    )
    add("sigterm-demo", ["demo", "-o", "{O}/demo"], INTERRUPTED, interrupt=(signal.SIGTERM, 3.0), keeps_finished=True)
    names = [x.name for x in c]
    assert len(names) == len(set(names)), "case names must be unique"
    assert QUICK <= set(names), f"QUICK names unknown cases: {sorted(QUICK - set(names))}"
    return c


# --- the checker ----------------------------------------------------------------------------------
def _tree(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file (hidden ones too) under ``folder``; folders as ``"dir"``."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            found[os.path.relpath(os.path.join(root, d), folder)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(LIB), PYTHONIOENCODING="utf-8")
    env.pop("PYTHONWARNINGS", None)
    return env


def _default_sigint() -> None:
    """In the child: SIGINT back to its default, so Python turns it into KeyboardInterrupt (a campaign
    started in the background, ``campaign.py &``, would otherwise pass on the shell's "ignore SIGINT")."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_case(case: Case, inputs: Path, work: Path, inputs_tree: dict | None = None) -> Result:
    """Run ``case`` in ``work/<name>`` and check every promise; ``inputs_tree`` is :func:`_tree` of ``inputs``."""
    out = work / case.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if case.setup:
        case.setup(inputs, out)
    before_inputs = inputs_tree if inputs_tree is not None else _tree(inputs)
    before_out = _tree(out)
    argv = [sys.executable, "-m", "imagetomesh.cli", *case.resolved(inputs, out)]
    result = Result(case)
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=out,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    try:
        if case.interrupt:
            signum, delay = case.interrupt
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=case.timeout)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        hung = True
    result.seconds = time.monotonic() - start
    result.returncode = proc.returncode
    stdout = stdout.decode("utf-8", "replace")
    stderr = stderr.decode("utf-8", "replace")
    rc = proc.returncode
    fail = result.failures

    if hung:
        fail.append("hang")
    if "Traceback (most recent call last)" in stderr + stdout:
        fail.append("traceback")
    interrupted_codes = {130, 143, -signal.SIGTERM, -signal.SIGINT}
    if not hung:
        if case.expect == INTERRUPTED:
            if rc not in interrupted_codes:
                fail.append("crash" if rc < 0 else "wrong exit code")
        elif rc < 0 or rc in (134, 136, 137, 139):
            fail.append("crash")
        elif rc != case.expect:
            fail.append("wrong exit code")
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(WARNING)]
    if not hung and case.expect == 2 and rc == 2:
        if case.several_errors:
            ok = bool(lines) and all(line.startswith("imagetomesh: ") for line in lines)
        else:
            ok = len(lines) == 1 and lines[0].startswith(ERROR)
        if not ok:
            fail.append("multi-line error")
        elif case.message and case.message.lower() not in lines[0].lower():
            fail.append("wrong message")
    if case.expect == 0 and rc == 0 and case.message and case.message.lower() not in stderr.lower():
        fail.append("wrong message")
    after_out = _tree(out)
    if rc != 0 and not (case.several_errors or case.keeps_finished):
        new = sorted(set(after_out) - set(before_out))
        if new or any(after_out.get(k) != v for k, v in before_out.items()):
            fail.append("partial file")
            stderr += f"\n[left behind: {new[:5]}]"
    elif any(".tmp-" in name for name in after_out):
        fail.append("partial file")
    if rc != 0 and case.keeps_finished and any(".tmp-" in name for name in after_out):
        fail.append("partial file")
    if _tree(inputs) != before_inputs:
        fail.append("modified input")
        _restore_inputs(inputs)
    tail = "\n".join(stderr.strip().splitlines()[-6:])
    result.detail = f"rc={rc} {result.seconds:.1f}s\n{tail}"
    return result


_PRISTINE: Path | None = None


def _restore_inputs(inputs: Path) -> None:
    """Put back the inputs after a case changed them, so one failure does not cascade."""
    if _PRISTINE is not None:
        shutil.rmtree(inputs)
        shutil.copytree(_PRISTINE, inputs, symlinks=True)


def prepare(root: Path) -> Path:
    """The inputs folder under ``root`` (and a pristine copy to restore from)."""
    global _PRISTINE
    for old in ("inputs", "out"):
        shutil.rmtree(root / old, ignore_errors=True)
    inputs = make_inputs(root / "inputs")
    _PRISTINE = root / "pristine"
    if _PRISTINE.exists():
        shutil.rmtree(_PRISTINE)
    shutil.copytree(inputs, _PRISTINE, symlinks=True)
    return inputs


def tally(results: list[Result]) -> str:
    passed = sum(not r.failures for r in results)
    rows = [("cases", len(results)), ("passed", passed)] + [
        (kind, sum(kind in r.failures for r in results)) for kind in KINDS
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the cases marked quick (the CI subset)")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    selected = [c for c in cases() if (c.quick or not args.quick) and args.k in c.name]
    root = args.keep or Path(tempfile.mkdtemp(prefix="imagetomesh-hostile-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        inputs = prepare(root)
        tree = _tree(inputs)
        results = []
        for n, case in enumerate(selected, 1):
            result = run_case(case, inputs, root / "out", tree)
            results.append(result)
            status = "ok  " if not result.failures else "FAIL"
            print(f"[{n:3d}/{len(selected)}] {status} {case.name} ({result.seconds:.1f}s)", flush=True)
            if result.failures:
                print(
                    "      " + ", ".join(result.failures) + ": " + result.detail.replace("\n", "\n      "), flush=True
                )
        print()
        print(tally(results))
        return 1 if any(r.failures for r in results) else 0
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
