"""No command ever replaces one of its inputs, by the same name or another name of the same file."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "Resources" / "SampleData" / "hippocampus"
FAST = ["--iterations", "20"]


def imagetomesh(*argv, cwd):
    return subprocess.run(
        [sys.executable, "-m", "imagetomesh.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    label = sitk.ReadImage(str(SAMPLES / "hippocampus_024_label.nii.gz"))
    image = sitk.ReadImage(str(SAMPLES / "hippocampus_024.nii.gz"))
    sitk.WriteImage(label, str(folder / "label.vtk"))
    sitk.WriteImage(image, str(folder / "image.vtk"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "imagetomesh.cli",
            "mesh-from-label",
            str(folder / "label.vtk"),
            "-o",
            str(folder / "surface.stl"),
        ],
        check=True,
        capture_output=True,
    )
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["mesh-from-label", "label.vtk", "-o", "label.vtk"],
        ["fit", "points", "surface.stl", "--prior", "dals-hippocampus", "-o", "surface.stl", *FAST],
        ["refine", "label.vtk", "--prior", "dals-hippocampus", "-o", "label.vtk", *FAST],
        ["segment", "image.vtk", "--model", "unet-hippocampus", "-o", "image.vtk"],
        ["mesh-from-label", "label.vtk", "-o", "hard-link-to-label.vtk"],
    ],
)
def test_an_input_is_never_replaced(files, command):
    if "hard-link-to-label.vtk" in command and not (files / "hard-link-to-label.vtk").exists():
        os.link(files / "label.vtk", files / "hard-link-to-label.vtk")
    before = {p.name: digest(p) for p in files.iterdir()}
    run = imagetomesh(*command, cwd=files)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "is an input of this command" in lines[0] and "Traceback" not in run.stderr
    assert {p.name: digest(p) for p in files.iterdir()} == before  # nothing changed, nothing left behind
