"""The README screenshots script renders a 3D view and slice views offscreen."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent / "screenshots.py"
MODEL_YELLOW = np.array([0.95, 0.78, 0.25]) * 255  # ImageToMesh.COLORS["segment"]


def _png(path):
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[..., :3]
    return pixels.astype(float)


@pytest.fixture(scope="module")
def screenshots():
    spec = importlib.util.spec_from_file_location("imagetomesh_screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_screenshots_script_renders_the_result(screenshots, tmp_path, capsys):
    assert screenshots.main(["--label-surface", "--out", str(tmp_path)]) == 0  # rendering only: no model
    assert "wrote" in capsys.readouterr().out
    for name in ("slicer-3d.png", "slicer-slice.png", "slicer-slice-coronal.png"):
        pixels = _png(tmp_path / name)
        assert pixels.shape[:2] == (640, 640)
        # the model's colour is there: shaded surface in 3D, the intersection line on the slices
        near = (
            np.linalg.norm(
                pixels / np.maximum(pixels.max(-1, keepdims=True), 1) - MODEL_YELLOW / MODEL_YELLOW.max(), axis=-1
            )
            < 0.12
        )
        bright = pixels.max(-1) > 60
        assert (near & bright).sum() > (2000 if name == "slicer-3d.png" else 150), name
        assert pixels.std() > 10, f"{name} is blank"
