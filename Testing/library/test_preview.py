"""The preview's planes are anatomical whatever the direction matrix, in radiological convention."""

import numpy as np
import pytest

from imagetomesh import cli
from imagetomesh.core.volume import Volume
from imagetomesh.geometry.isosurface import labelmap_to_mesh
from imagetomesh.io.images import write_image
from imagetomesh.io.markups import Markup, write_markups
from imagetomesh.io.meshes import write_mesh
from imagetomesh.preview import VIEWS, default_centre, display_window, plane_image


def _blob_volume(direction, flip_storage=False):
    """A 40^3 1 mm image with one bright cube at LPS x in (10, 16), y in (-16, -10), z in (10, 16):
    patient left, anterior, superior of the centre (0, 0, 0), stored with ``direction``."""
    size = 40
    centre = (size - 1) / 2
    array = np.zeros((size, size, size), np.float32)
    ijk = np.stack(np.meshgrid(*(np.arange(size),) * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    lps = (ijk - centre) @ np.asarray(direction, float).T
    inside = (
        (lps[:, 0] > 10)
        & (lps[:, 0] < 16)
        & (lps[:, 1] > -16)
        & (lps[:, 1] < -10)
        & (lps[:, 2] > 10)
        & (lps[:, 2] < 16)
    )
    i, j, k = ijk[inside].astype(int).T
    array[k, j, i] = 100.0
    origin = -np.asarray(direction, float) @ np.full(3, centre)
    return Volume(array, (1.0, 1.0, 1.0), origin, np.asarray(direction, float))


PERMUTED = [[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]  # i -> P... a rotated, flipped storage


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]), PERMUTED])
def test_planes_are_anatomical_whatever_the_direction_matrix(direction):
    volume = _blob_volume(direction)
    for name, axis, (h_axis, v_axis), _, _ in VIEWS:
        values, (h0, h1, v0, v1) = plane_image(volume, axis, 13.0 if axis != 1 else -13.0, (h_axis, v_axis), order=0)
        rows, cols = np.nonzero(np.nan_to_num(values) > 50)
        h = h0 + cols * (h1 - h0) / (values.shape[1] - 1)
        v = v0 + rows * (v1 - v0) / (values.shape[0] - 1)
        expected = {0: (10, 16), 1: (-16, -10), 2: (10, 16)}
        assert len(h) and h.min() >= expected[h_axis][0] - 1 and h.max() <= expected[h_axis][1] + 1, name
        assert v.min() >= expected[v_axis][0] - 1 and v.max() <= expected[v_axis][1] + 1, name


def test_the_convention_is_radiological():
    axial, coronal, sagittal = VIEWS
    # axial: x (towards patient left) to the viewer's right, y (posterior) downwards: anterior up
    assert axial[2] == (0, 1) and axial[3] == (False, True) and axial[4] == ("R", "L", "A", "P")
    assert coronal[2] == (0, 2) and coronal[3] == (False, False) and coronal[4] == ("R", "L", "S", "I")
    # sagittal: the patient faces the viewer's left (anterior = small y on the left)
    assert sagittal[2] == (1, 2) and sagittal[3] == (False, False) and sagittal[4] == ("A", "P", "S", "I")


def test_the_default_centre_is_the_largest_piece_and_ct_gets_a_ct_window():
    big = np.zeros((30, 30, 60), np.uint8)
    big[5:25, 5:25, 5:25] = 1
    big[10:14, 10:14, 45:49] = 1  # a small second kidney, far away
    two = labelmap_to_mesh(Volume(big))
    centre = default_centre([two], Volume(big))
    assert np.allclose(centre, [14.5, 14.5, 14.5], atol=0.5)
    ct = Volume(np.full((10, 10, 10), -1000.0, np.float32))
    ct.array[3:7, 3:7, 3:7] = 40.0
    assert display_window(ct) == (-160.0, 240.0)
    assert display_window(ct, (0, 100)) == (0.0, 100.0)


def test_preview_command_options(tmp_path, capsys):
    volume = _blob_volume(PERMUTED)
    image = write_image(volume, tmp_path / "image.nii.gz")
    label = write_image(volume.with_array((volume.array > 50).astype(np.uint8)), tmp_path / "label.nii.gz")
    mesh = write_mesh(labelmap_to_mesh(volume.with_array((volume.array > 50).astype(np.uint8))), tmp_path / "blob.stl")
    square = np.array([[10.0, -16, 13], [16, -16, 13], [16, -10, 13], [10, -10, 13]])
    curves = write_markups([Markup("ClosedCurve", "axial", square, True)], tmp_path / "curve.mrk.json")
    out = tmp_path / "p.png"
    args = ["preview", str(image), str(mesh), "-o", str(out), "--label", str(label), "--curves", str(curves)]
    assert cli.main(args + ["--centre=13,-13,13", "--window", "0,100"]) == 0 and out.stat().st_size > 10000
    assert cli.main(["preview", str(image), "-o", str(tmp_path / "q.png"), "--window", "100,0"]) == 2
    assert "LOW < HIGH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["preview", str(image), "-o", str(tmp_path / "q.png"), "--centre", "1,2"])
    assert usage.value.code == 2 and "--centre must be x,y,z in LPS mm" in capsys.readouterr().err
    assert not (tmp_path / "q.png").exists()
