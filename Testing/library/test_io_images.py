"""Image I/O: round trips per format, awkward headers, DICOM series, and every bad-input case."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from imagetomesh.core import Volume
from imagetomesh.errors import InputError
from imagetomesh.io import (
    atomic_write,
    check_output_path,
    read_image,
    read_labelmap,
    volume_from_sitk,
    volume_to_sitk,
    write_image,
)
from imagetomesh.io import images as images_module

# KiTS19 header: axes permuted and flipped (array axis 0 runs along -x), anisotropic spacing.
KITS_DIRECTION = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
KITS_SPACING = (0.5, 0.92, 0.92)


def _volume(dtype=np.float32, shape=(4, 5, 6), direction=None, spacing=(0.7, 1.1, 2.5), origin=(-12.5, 30.25, 7.0)):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=shape) * 100).astype(dtype)
    return Volume(array, spacing=spacing, origin=origin, direction=np.eye(3) if direction is None else direction)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _assert_same_volume(a: Volume, b: Volume):
    assert a.array.dtype == b.array.dtype
    np.testing.assert_array_equal(a.array, b.array)
    assert a.same_geometry(b, atol=1e-5)


# --- atomic writing ------------------------------------------------------------------------
def test_atomic_write_keeps_format_suffix_and_replaces(tmp_path):
    target = tmp_path / "case.nii.gz"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".case.tmp-") and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert _listing(tmp_path) == ["case.nii.gz"]
    with atomic_write(tmp_path / "m.stl") as tmp:
        assert tmp.suffix == ".stl" and ".tmp-" in tmp.name
        tmp.write_bytes(b"x")


def test_atomic_write_failure_leaves_old_file_untouched(tmp_path):
    target = tmp_path / "out.nrrd"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["out.nrrd"]
    with pytest.raises(OSError, match="no data"):
        with atomic_write(tmp_path / "empty.mha"):
            pass
    assert _listing(tmp_path) == ["out.nrrd"]


def test_check_output_path_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist; create it first"):
        check_output_path(tmp_path / "missing" / "out.stl")
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(tmp_path)
    assert check_output_path(tmp_path / "ok.stl") == tmp_path / "ok.stl"


def test_check_output_path_not_writable(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.name == "posix" and os.geteuid() == 0:  # root writes anywhere: show the check what a user would see
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    try:
        with pytest.raises(InputError, match="not writable"):
            check_output_path(locked / "out.stl")
    finally:
        locked.chmod(0o700)


# --- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_round_trip_every_format(tmp_path, suffix, dtype):
    volume = _volume(dtype)
    path = write_image(volume, tmp_path / f"img{suffix}")
    assert _listing(tmp_path) == [f"img{suffix}"]
    _assert_same_volume(volume, read_image(path))


def test_read_mhd_pair(tmp_path):
    volume = _volume(np.int16)
    sitk.WriteImage(volume_to_sitk(volume), str(tmp_path / "img.mhd"))
    _assert_same_volume(volume, read_image(tmp_path / "img.mhd"))


def test_sitk_conversion_round_trip_and_bool():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    volume = _volume(np.float64, direction=q)
    _assert_same_volume(volume, volume_from_sitk(volume_to_sitk(volume)))
    mask = volume.with_array(volume.array > 0)
    image = volume_to_sitk(mask)
    assert image.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), mask.array.astype(np.uint8))


def test_kits_permuted_header_matches_sitk(tmp_path):
    rng = np.random.default_rng(2)
    array = rng.integers(0, 3, size=(7, 5, 6)).astype(np.uint8)  # (D, H, W)
    image = sitk.GetImageFromArray(array)
    image.SetDirection(tuple(KITS_DIRECTION.reshape(-1)))
    image.SetSpacing(KITS_SPACING)
    image.SetOrigin((120.5, -80.0, 33.3))
    path = tmp_path / "case_kits.nii.gz"
    sitk.WriteImage(image, str(path))

    volume = read_image(path)
    reference = sitk.ReadImage(str(path))
    np.testing.assert_allclose(volume.direction, KITS_DIRECTION, atol=1e-6)
    np.testing.assert_allclose(volume.spacing, KITS_SPACING, atol=1e-6)
    for ijk in [(0, 0, 0), (5, 4, 6), (2, 3, 1), (5, 0, 3)]:
        lps = volume.index_to_lps @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(lps[:3], reference.TransformIndexToPhysicalPoint(ijk), atol=1e-4)
        i, j, k = ijk
        assert volume.array[k, j, i] == reference.GetPixel(ijk)


def _write_dicom_series(folder, array, spacing, origin, series_uid, file_prefix="s"):
    folder.mkdir(exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        slice_image = image[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.7",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0018|0050": str(spacing[2]),
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        # reversed file order: the reader must sort by position, not by name
        writer.SetFileName(str(folder / f"{file_prefix}{array.shape[0] - k:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_folder_round_trip(tmp_path):
    array = (np.arange(5 * 6 * 7).reshape(5, 6, 7) - 50).astype(np.int16)
    folder = tmp_path / "dicom"
    _write_dicom_series(folder, array, (0.8, 0.9, 2.5), (10.0, -20.0, 30.0), "1.2.826.0.1.3680043.2.1125.7.1")
    # a smaller second series in the same folder: the larger one wins
    _write_dicom_series(
        folder, array[:2] + 1000, (0.8, 0.9, 2.5), (10.0, -20.0, 90.0), "1.2.826.0.1.3680043.2.1125.7.2", "t"
    )
    with pytest.warns(UserWarning, match=r"holds 2 DICOM series; read the largest, 5 slices; not read: 2 slices"):
        volume = read_image(folder)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, 2.5), atol=1e-4)
    np.testing.assert_allclose(volume.origin, (10.0, -20.0, 30.0), atol=1e-4)
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-6)


# --- bad input -------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.nii.gz")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


def test_non_image_file(tmp_path):
    path = tmp_path / "fake.nii.gz"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match="could not read .* as an image"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file_fails_cleanly(tmp_path, suffix):
    full = write_image(_volume(np.float32, shape=(20, 30, 40)), tmp_path / f"full{suffix}")
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputError, match="truncated|could not read"):
        read_image(cut)


def test_gzip_trailer_mismatch_falls_back_to_full_check(tmp_path):
    path = write_image(_volume(np.int16), tmp_path / "ok.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    # a valid stream whose trailer disagrees with the header's size (trailing bytes) still reads
    padded = tmp_path / "padded.nii.gz"
    padded.write_bytes(gzip.compress(raw + b"\0" * 16))
    np.testing.assert_array_equal(read_image(padded).array, read_image(path).array)


def test_2d_image(tmp_path):
    path = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.uint8)), str(path))
    with pytest.raises(InputError, match="2D"):
        read_image(path)


def test_single_slice_image(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 5, 6), np.uint8)), str(path))
    with pytest.raises(InputError, match="single slice"):
        read_image(path)


def test_4d_and_vector_images(tmp_path):
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False), str(path))
    with pytest.raises(InputError, match="4D or multi-component images are not supported; extract one 3D volume"):
        read_image(path)
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(InputError, match="4D or multi-component images are not supported"):
        read_image(path)


def test_4d_with_one_frame_reads_as_3d(tmp_path):
    path = tmp_path / "one_frame.nii.gz"
    array = np.arange(3 * 4 * 5, dtype=np.float32).reshape(1, 3, 4, 5)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
    np.testing.assert_array_equal(read_image(path).array, array[0])


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".nii.gz", ".mha"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_inf_voxels(tmp_path, bad, suffix, dtype):
    """Found in every format: ITK's NIfTI reader turns NaN/Inf into 0, so NIfTI is checked on its raw data."""
    volume = _volume(dtype)
    array = volume.array.copy()
    array[1, 2, 3] = bad
    path = write_image(volume.with_array(array), tmp_path / f"bad{suffix}")
    with pytest.raises(InputError, match="contains NaN/Inf voxels"):
        read_image(path)


def test_nan_check_reads_big_endian_nifti(tmp_path):
    """A NIfTI written big-endian (some scanners' tools do) is checked in its own byte order."""
    volume = _volume(np.float32)
    path = write_image(volume, tmp_path / "big.nii")
    raw = bytearray(path.read_bytes())
    header = bytearray(raw[:348])
    import struct

    fields = [(0, "i"), (40, "8h"), (70, "2h"), (76, "8f"), (108, "f")]
    for offset, fmt in fields:
        values = struct.unpack_from("<" + fmt, header, offset)
        struct.pack_into(">" + fmt, header, offset, *values)
    data = np.frombuffer(bytes(raw[352:]), "<f4").astype(">f4")
    data[5] = np.nan
    path.write_bytes(bytes(header) + bytes(raw[348:352]) + data.tobytes())
    with pytest.raises(InputError, match="contains NaN/Inf voxels"):
        read_image(path)


# --- labelmaps -----------------------------------------------------------------------------
def _labelmap(tmp_path, array):
    return write_image(Volume(array.astype(np.uint8), spacing=(1, 2, 3)), tmp_path / "labels.nii.gz")


def test_read_labelmap_any_and_one_label(tmp_path):
    array = np.zeros((4, 5, 6), np.uint8)
    array[1, 1:3, 2] = 2
    array[2, 3, 4] = 5
    path = _labelmap(tmp_path, array)
    mask = read_labelmap(path)
    assert mask.array.dtype == np.uint8
    np.testing.assert_array_equal(mask.array, (array != 0).astype(np.uint8))
    np.testing.assert_allclose(mask.spacing, (1, 2, 3))
    np.testing.assert_array_equal(read_labelmap(path, label=5).array, (array == 5).astype(np.uint8))


def test_read_labelmap_absent_label_lists_present(tmp_path):
    array = np.zeros((4, 5, 6), np.uint8)
    array[1, 1, 1] = 1
    array[2, 2, 2] = 3
    with pytest.raises(InputError, match=r"label 2 is not in labelmap .*labels present: 1, 3"):
        read_labelmap(_labelmap(tmp_path, array), label=2)


def test_read_labelmap_empty(tmp_path):
    path = _labelmap(tmp_path, np.zeros((4, 5, 6)))
    with pytest.raises(InputError, match="empty"):
        read_labelmap(path)
    with pytest.raises(InputError, match="empty"):
        read_labelmap(path, label=1)


def test_read_labelmap_rejects_probabilities(tmp_path):
    path = write_image(Volume(np.full((4, 5, 6), 0.4, np.float32)), tmp_path / "prob.nii.gz")
    with pytest.raises(InputError, match="non-integer"):
        read_labelmap(path)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_read_labelmap_cropped_equals_crop_of_the_whole(tmp_path, dtype):
    """``crop_margin`` (box first, label selected inside it, no whole-grid copy) == the whole-grid mask
    cropped to its box + margin: same voxels at the same LPS positions, same image faces touched."""
    from imagetomesh.core.cropping import bounding_box, crop_to_box
    from imagetomesh.core.edges import touched_faces

    direction = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
    array = np.zeros((30, 26, 22), dtype)
    array[4:9, 5:11, 3:7] = 1
    array[0:6, 20:26, 15:22] = 2  # touches three faces of the image
    array[6:8, 8:10, 4:6] = 3  # inside label 1's box
    path = write_image(Volume(array, (0.8, 1.2, 2.0), (5.0, -7.0, 11.0), direction), tmp_path / "labels.nrrd")
    for label in (None, 1, 2, 3):
        whole = read_labelmap(path, label)
        for margin in (1, 3):
            cropped = read_labelmap(path, label, crop_margin=margin)
            expected = crop_to_box(whole, bounding_box(whole.array), margin)
            assert cropped.array.dtype == np.uint8
            np.testing.assert_array_equal(cropped.array, expected.array)
            np.testing.assert_allclose(cropped.origin, expected.origin, atol=1e-9)
            np.testing.assert_allclose(cropped.direction, whole.direction)
            assert touched_faces(cropped) == touched_faces(whole), label
    with pytest.raises(InputError, match=r"label 4 is not in labelmap .*labels present: 1, 2, 3"):
        read_labelmap(path, label=4, crop_margin=1)
    with pytest.raises(InputError, match="label 0 is the background"):
        read_labelmap(path, label=0, crop_margin=1)


def test_read_labelmap_cropped_checks_like_the_whole(tmp_path):
    empty = _labelmap(tmp_path, np.zeros((4, 5, 6)))
    with pytest.raises(InputError, match="empty"):
        read_labelmap(empty, crop_margin=1)
    with pytest.raises(InputError, match="empty"):
        read_labelmap(empty, label=1, crop_margin=1)
    probabilities = write_image(Volume(np.full((4, 5, 6), 0.4, np.float32)), tmp_path / "prob.nii.gz")
    with pytest.raises(InputError, match="non-integer"):
        read_labelmap(probabilities, crop_margin=1)
    nan = np.zeros((4, 5, 6), np.float32)
    nan[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="contains NaN/Inf voxels"):
        read_labelmap(write_image(Volume(nan), tmp_path / "nan.mha"), crop_margin=1)


def test_all_finite_in_chunks_equals_isfinite(monkeypatch):
    monkeypatch.setattr(images_module, "_CHUNK_VOXELS", 7)  # one slice per chunk
    rng = np.random.default_rng(0)
    for _ in range(30):
        array = rng.normal(size=tuple(rng.integers(1, 6, size=3))).astype(np.float32)
        if rng.random() < 0.6:
            array[tuple(rng.integers(0, s) for s in array.shape)] = rng.choice([np.nan, np.inf, -np.inf])
        assert images_module._all_finite(array) == bool(np.isfinite(array).all())
    assert images_module._all_finite(np.zeros((3, 3, 3), np.int16))


# --- writing errors ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["img.mhd", "img.png", "img"])
def test_write_image_unsupported_extension(tmp_path, name):
    with pytest.raises(InputError, match="cannot write images"):
        write_image(_volume(), tmp_path / name)
    assert _listing(tmp_path) == []


def test_write_image_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist; create it first"):
        write_image(_volume(), tmp_path / "no" / "img.nii.gz")


def test_write_image_failure_mid_way_leaves_nothing(tmp_path, monkeypatch):
    def broken_write(image, filename, useCompression=False):
        with open(filename, "wb") as handle:
            handle.write(b"partial header")
        raise RuntimeError("ITK ERROR: ImageFileWriter(0x1): disk full")

    monkeypatch.setattr(images_module.sitk, "WriteImage", broken_write)
    with pytest.raises(InputError, match="could not write .*disk full"):
        write_image(_volume(), tmp_path / "img.nii.gz")
    assert _listing(tmp_path) == []
