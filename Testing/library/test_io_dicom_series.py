"""DICOM series whose slices ITK would misplace (gantry tilt, uneven spacing): read where they lie, or refused.

Intensities are a linear function of the LPS position, which bilinear reading within a slice and linear
blending between parallel slices reproduce exactly: every voxel of the volume read is checked against the
function at that voxel's position, so any misplaced slice or pixel shows as a wrong value.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_files import SERIES_UID, write_series
from scipy import ndimage

from imagetomesh.cli import main
from imagetomesh.errors import InputError
from imagetomesh.io.dicom_geometry import SeriesSlices, regular_series, stack_error
from imagetomesh.io.images import read_image, read_labelmap
from imagetomesh.io.meshes import read_mesh
from imagetomesh.metrics import mesh_dice_iou

HEADNECK = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "headneck-ct"
GRADIENT = np.array([2.0, 3.0, -1.5])  # HU per mm along L, P, S


def field(points: np.ndarray) -> np.ndarray:
    """The phantom's intensity at LPS ``points (..., 3)``."""
    return points @ GRADIENT + 100.0


def tilted(angle_deg: float, count: int = 24, step: float = 2.5, in_orientation: bool = False):
    """Positions and orientation of a gantry-tilted series: the slice planes turned ``angle_deg`` about the
    left-right axis, the table stepping ``step`` mm along S; the tilt either in the orientation (slices moved
    along S only) or in the positions (axial orientation, slices moved along P as they go)."""
    angle = np.radians(angle_deg)
    z = np.arange(count) * step
    if in_orientation:
        positions = np.stack([np.full(count, -20.0), np.full(count, -15.0), z], axis=1)
        return positions, ((1, 0, 0), (0, np.cos(angle), -np.sin(angle)))
    positions = np.stack([np.full(count, -20.0), -15.0 + z * np.tan(angle), z], axis=1)
    return positions, ((1, 0, 0), (0, 1, 0))


def slice_reference(volume, positions, orientation, shape, spacing):
    """The voxels of ``volume`` whose point lies between two slices and inside both (the slow, direct
    definition: each voxel's point placed among the slices one by one), as ``(voxel values, points)``."""
    row, column = (np.asarray(v, dtype=np.float64) for v in orientation)
    normal = np.cross(row, column)
    depth = positions @ normal
    order = np.argsort(depth)
    values, points = [], []
    for k, j, i in np.ndindex(volume.array.shape):
        point = volume.index_to_lps[:3, :3] @ np.array([i, j, k], dtype=np.float64) + volume.index_to_lps[:3, 3]
        at = point @ normal
        below = [s for s in order if depth[s] <= at + 1e-6]
        above = [s for s in order if depth[s] >= at - 1e-6]
        if not below or not above:
            continue
        inside = True
        for s in (below[-1], above[0]):
            x = (point - positions[s]) @ row / spacing[0]
            y = (point - positions[s]) @ column / spacing[1]
            inside &= -1e-6 <= x <= shape[1] - 1 + 1e-6 and -1e-6 <= y <= shape[0] - 1 + 1e-6
        if inside:
            values.append(volume.array[k, j, i])
            points.append(point)
    return np.asarray(values, dtype=np.float64), np.asarray(points)


@pytest.mark.parametrize("in_orientation", [False, True], ids=["tilt-in-positions", "tilt-in-orientation"])
def test_gantry_tilted_series_is_read_where_its_slices_lie(tmp_path, in_orientation):
    positions, orientation = tilted(20.0, in_orientation=in_orientation)
    folder = tmp_path / "tilted"
    write_series(folder, positions, orientation, field)
    with pytest.warns(UserWarning, match=r"gantry tilt of 20\.0 degrees.*resampled onto a regular grid"):
        volume = read_image(folder)
    values, points = slice_reference(volume, positions, orientation, (30, 36), (1.2, 1.0))
    assert len(values) > volume.array.size // 2
    np.testing.assert_allclose(values, field(points), atol=1.0)
    normal = np.cross(*orientation)
    np.testing.assert_allclose(volume.direction[:, 2], normal, atol=1e-6)
    step = 2.5 * (np.cos(np.radians(20.0)) if in_orientation else 1.0)  # the table's step along the normal
    np.testing.assert_allclose(volume.spacing, (1.2, 1.0, step), atol=1e-4)
    # voxels outside every slice read the series' lowest value, not a made-up one
    assert volume.array.min() >= field(points).min() - 60


def test_the_resampling_is_said_on_the_terminal(tmp_path):
    """The warning is raised after the read, whose native output is kept off stderr: the user sees it."""
    positions, orientation = tilted(20.0)
    write_series(tmp_path / "tilted", positions, orientation, field)
    result = subprocess.run(
        [sys.executable, "-m", "imagetomesh.cli", "info", str(tmp_path / "tilted")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("imagetomesh: warning: DICOM series in ") and "gantry tilt of 20.0" in result.stderr


def test_plain_stack_of_a_tilted_series_misplaces_it(tmp_path):
    """What ITK alone returns for the tilted series (the check the reader makes): slices up to 20 mm off."""
    positions, orientation = tilted(20.0)
    folder = tmp_path / "tilted"
    write_series(folder, positions, orientation, field)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    slices = SeriesSlices.of_reader(reader, image.GetSize()[2])
    assert stack_error(image, slices) > 15.0


def test_missing_slices_are_interpolated_across_with_a_warning(tmp_path):
    z = np.array([k * 2.5 for k in range(24) if k not in (10, 11)])
    positions = np.stack([np.full(len(z), -20.0), np.full(len(z), -15.0), z], axis=1)
    orientation = ((1, 0, 0), (0, 1, 0))
    folder = tmp_path / "gap"
    write_series(folder, positions, orientation, field)
    with pytest.warns(UserWarning, match=r"2\.50 to 7\.50 mm apart \(slices missing"):
        volume = read_image(folder)
    assert volume.array.shape[0] == 24
    np.testing.assert_allclose(volume.spacing, (1.2, 1.0, 2.5), atol=1e-6)
    values, points = slice_reference(volume, positions, orientation, (30, 36), (1.2, 1.0))
    assert len(values) == volume.array.size
    np.testing.assert_allclose(values, field(points), atol=1.0)


def test_regular_series_is_read_as_itk_stacks_it(tmp_path):
    z = np.arange(12) * 3.0
    positions = np.stack([np.full(12, 5.0), np.full(12, -7.0), z + 0.0004 * (z % 2)], axis=1)  # rounding noise
    folder = tmp_path / "regular"
    write_series(folder, positions, ((1, 0, 0), (0, 1, 0)), field)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = read_image(folder)
    assert volume.array.shape == (12, 30, 36)
    np.testing.assert_allclose(volume.origin, (5.0, -7.0, 0.0), atol=1e-3)


def test_a_folder_of_several_series_says_which_it_read(tmp_path):
    """A study exported into one folder: the largest series is read, and the warning names each series."""
    z = np.arange(24) * 2.5
    positions = np.stack([np.full(24, -20.0), np.full(24, -15.0), z], axis=1)
    axial = ((1, 0, 0), (0, 1, 0))
    write_series(tmp_path, positions, axial, field, uid="1.2.826.0.1.3680043.2.1125.8.2", description="CT Head 2.5mm")
    write_series(tmp_path, positions[:2], axial, lambda p: field(p) + 500, uid="1.2.826.0.1.3680043.2.1125.8.3")
    write_series(tmp_path, positions[::4], axial, field, uid="1.2.826.0.1.3680043.2.1125.8.4", description="Bone")
    message = r"holds 3 DICOM series; read the largest, 'CT Head 2\.5mm' \(24 slices\); not read: 2 slices, 'Bone' \(6 slices\)"
    with pytest.warns(UserWarning, match=message):
        volume = read_image(tmp_path)
    assert volume.array.shape == (24, 30, 36)


def test_an_export_folder_is_searched_for_its_series(tmp_path):
    """A PACS export keeps each series in a folder per patient, study and series: given the export's top folder,
    the one series below it is read, and the user is told where it was found; with two, both are named."""
    z = np.arange(8) * 2.5
    positions = np.stack([np.zeros(8), np.zeros(8), z], axis=1)
    axial = ((1, 0, 0), (0, 1, 0))
    (tmp_path / "export" / "DICOMDIR-notes").mkdir(parents=True)
    write_series(tmp_path / "export" / "PA0" / "ST0" / "SE0", positions, axial, field)
    with pytest.warns(UserWarning, match=r"holds no DICOM series itself: read the one in PA0/ST0/SE0"):
        volume = read_image(tmp_path / "export")
    assert volume.array.shape == (8, 30, 36)
    write_series(tmp_path / "export" / "PA0" / "ST0" / "SE1", positions[:3], axial, field, uid=SERIES_UID + ".2")
    with pytest.raises(InputError, match=r"2 folders below it do: PA0/ST0/SE0 \(8 slices\), PA0/ST0/SE1 \(3 slices\)"):
        read_image(tmp_path / "export")


def test_a_zip_archive_of_an_export_is_read_as_its_folder(tmp_path, monkeypatch):
    """A DICOM export sent as a zip archive: read as the unpacked folder would be, named as the archive."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    positions, orientation = tilted(20.0)
    write_series(tmp_path / "export" / "PA0" / "SE0", positions, orientation, field)
    archive = Path(shutil.make_archive(str(tmp_path / "study"), "zip", tmp_path / "export"))
    with pytest.warns(UserWarning) as said:
        volume = read_image(archive)
    messages = [str(w.message) for w in said]
    assert f"archive {archive} holds no DICOM series itself: read the one in PA0/SE0" in messages
    assert any(m.startswith(f"DICOM series in {archive}: ") and "gantry tilt of 20.0" in m for m in messages)
    with pytest.warns(UserWarning):
        unpacked = read_image(tmp_path / "export")
    np.testing.assert_array_equal(volume.array, unpacked.array)
    np.testing.assert_allclose(volume.index_to_lps, unpacked.index_to_lps)
    assert not any(scratch.iterdir())  # the unpacked copy is gone


def test_a_broken_or_empty_zip_archive_is_refused(tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(InputError, match=r"archive .*broken.zip cannot be unpacked"):
        read_image(broken)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    empty = shutil.make_archive(str(tmp_path / "notes"), "zip", tmp_path / "notes")
    with pytest.raises(InputError, match=r"archive .*notes.zip holds no DICOM series; give a NIfTI"):
        read_image(empty)


def test_two_slices_at_one_position_are_refused(tmp_path):
    z = np.array([0.0, 2.5, 5.0, 5.0, 7.5, 10.0])
    positions = np.stack([np.zeros(6), np.zeros(6), z], axis=1)
    positions[3, 0] = 0.5  # the other acquisition's slice, moved a little
    folder = tmp_path / "twice"
    write_series(folder, positions, ((1, 0, 0), (0, 1, 0)), field)
    with pytest.raises(InputError, match=r"two slices of the DICOM series in .* lie at one position"):
        read_image(folder)


def test_slices_in_different_orientations_are_refused():
    """Checked on the slices directly: GDCM already splits most such files into separate series."""
    positions = np.stack([np.zeros(4), np.zeros(4), np.arange(4) * 2.0], axis=1)
    orientations = np.array([[(1, 0, 0), (0, 1, 0)]] * 4, dtype=np.float64)
    orientations[2, 1] = (0, np.cos(0.2), np.sin(0.2))
    image = sitk.Image(8, 8, 4, sitk.sitkInt16)
    with pytest.raises(InputError, match="different orientations"):
        regular_series(image, SeriesSlices(positions, orientations), "series")


def test_tilted_labelmap_series_keeps_its_labels(tmp_path):
    """A labelmap series is resampled by nearest voxels: no value between two labels, and the labelled ball
    where it was drawn."""
    positions, orientation = tilted(15.0, count=30, step=2.0)
    centre, radius = np.array([0.0, 0.0, 30.0]), 9.0

    def ball(points):
        return np.where(np.linalg.norm(points - centre, axis=-1) <= radius, 3, 0)

    folder = tmp_path / "labels"
    write_series(folder, positions, orientation, ball)
    with pytest.warns(UserWarning, match="gantry tilt of 15.0 degrees"):
        labels = read_image(folder, labels=True)
    assert set(np.unique(labels.array).tolist()) == {0, 3}
    with pytest.warns(UserWarning, match="gantry tilt"):
        mask = read_labelmap(folder, label=3)
    kji = np.argwhere(mask.array > 0).astype(np.float64)
    points = kji[:, ::-1] @ mask.index_to_lps[:3, :3].T + mask.index_to_lps[:3, 3]
    np.testing.assert_allclose(points.mean(0), centre, atol=0.5)
    voxel = float(np.prod(mask.spacing))
    assert abs(len(kji) * voxel / (4 / 3 * np.pi * radius**3) - 1) < 0.1


def test_segment_finds_the_organs_of_a_gantry_tilted_ct_where_they_are(tmp_path, capsys):
    """The bundled head-and-neck case as a clinician's tilted DICOM CT (slices turned 15 degrees, the table
    stepping 2.5 mm): the mandible meshed from it scores against the case's own label as the mesh from the
    original does (ITK's plain stack of the slices puts it wholly off the label: Dice 0)."""
    scan = read_image(HEADNECK / "openkbp_082.nii.gz")
    to_index = scan.lps_to_index

    def scan_values(points):  # the original CT read at LPS points, air outside it
        ijk = points @ to_index[:3, :3].T + to_index[:3, 3]
        return ndimage.map_coordinates(scan.array, np.moveaxis(ijk[..., ::-1], -1, 0), order=1, cval=-1000.0)

    angle, spacing, shape = np.radians(15.0), (4.5, 4.5), (90, 128)
    column = np.array([0.0, np.cos(angle), np.sin(angle)])
    depth = shape[0] * spacing[1] * np.sin(angle)  # how far along S one slice reaches
    table = np.arange(-158.75 - depth, 158.75, 2.5)
    positions = np.stack([np.full(len(table), -288.0), np.full(len(table), -200.0), table], axis=1)
    folder = tmp_path / "dicom"
    write_series(folder, positions, ((1.0, 0.0, 0.0), column), scan_values, shape=shape, spacing=spacing)
    label = read_labelmap(HEADNECK / "openkbp_082_label.nii.gz", label=7)
    dice = {}
    for name, image in (("original", HEADNECK / "openkbp_082.nii.gz"), ("tilted", folder)):
        out = tmp_path / name
        out.mkdir()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(["segment", str(image), "--model", "unet-headneck-ct", "--organs", "mandible", "-o", str(out)])
        err = capsys.readouterr().err
        said = " ".join(str(w.message) for w in caught)
        assert code == 0, err
        meshes = list(out.iterdir())
        assert len(meshes) == 1, err
        dice[name] = mesh_dice_iou(read_mesh(meshes[0]), label)[0]
    assert "gantry tilt of 15.0 degrees" in said
    assert dice["original"] > 0.85
    assert abs(dice["tilted"] - dice["original"]) < 0.03, dice
