"""Image and labelmap files <-> :class:`~imagetomesh.core.volume.Volume`, through SimpleITK.

Reads NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``),
single files of any other format SimpleITK knows, and DICOM series (give the folder, or a zip archive of it:
:mod:`imagetomesh.io.dicom_series`). Writes
NIfTI, NRRD and MHA, atomically. Geometry is kept in LPS millimetres exactly as ITK reports it.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.io.atomic import atomic_write, check_output_path, format_suffix
from imagetomesh.io.dicom_series import SeriesRead, read_series_folder, read_series_zip
from imagetomesh.io.inputs import IMAGE_HINT, SPACING_RANGE_MM, check_coordinates, check_input_path
from imagetomesh.io.native import native_output_quiet, short_itk_message

#: Extensions :func:`write_image` accepts (one-file formats only, so the write can be atomic).
WRITE_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")

#: Image file endings that :func:`image_stem` takes off (the two-part ``.nii.gz`` first).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".zip")


def image_stem(path: str | os.PathLike) -> str:
    """The file name of ``path`` without its image ending (any case): ``case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


# --- sitk <-> Volume ---------------------------------------------------------------------
def volume_from_sitk(image: sitk.Image) -> Volume:
    """A :class:`Volume` from a 3D scalar ``sitk.Image`` (array copied, ``(D, H, W)``).

    Raises:
        InputError: the image is not 3D or has more than one component per voxel.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            "4D or multi-component images are not supported; extract one 3D volume "
            f"(this one has {image.GetNumberOfComponentsPerPixel()} components per voxel)"
        )
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D image but got a {image.GetDimension()}D one; give a single 3D volume")
    array = sitk.GetArrayFromImage(image)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return Volume(array, spacing=image.GetSpacing(), origin=image.GetOrigin(), direction=direction)


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A scalar 3D ``sitk.Image`` with the volume's array and LPS geometry.

    ``bool`` arrays become ``uint8`` and ``float16`` becomes ``float32`` (ITK has neither).
    """
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(d) for d in volume.direction.reshape(-1)))
    return image


# --- NIfTI checks that ITK does not make (it zero-fills truncated data and NaN/Inf voxels) ----
#: NIfTI datatype codes of floating-point voxels -> numpy dtype (complex: real and imaginary parts).
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}


@dataclass(frozen=True)
class _NiftiLayout:
    """Where a single-file NIfTI-1/2 keeps its voxels: byte order, datatype code, data offset and size."""

    endian: str
    datatype: int
    offset: int
    data_bytes: int

    @property
    def expected_size(self) -> int:
        return self.offset + self.data_bytes


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """The voxel layout of a NIfTI-1/2 header (its first 540 bytes), or None if it is not NIfTI."""
    if len(header) < 348:
        return None
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
        if sizeof_hdr == 348:
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            dims = struct.unpack(endian + "8h", header[40:56])
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    nvox = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
    return _NiftiLayout(endian, int(datatype), max(vox_offset, 348), nvox * bitpix // 8)


def _nifti_nonfinite_count(path: Path, layout: _NiftiLayout) -> int:
    """How many NaN/Inf values a float NIfTI file holds (0 for integer voxels), read in chunks."""
    kind = _NIFTI_FLOAT_TYPES.get(layout.datatype)
    if kind is None:
        return 0
    dtype = np.dtype(kind).newbyteorder(layout.endian)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    count, left = 0, layout.data_bytes
    chunk = (1 << 24) // dtype.itemsize * dtype.itemsize
    with opener(path, "rb") as handle:
        handle.read(layout.offset)
        while left > 0:
            data = handle.read(min(chunk, left))
            if not data:
                break
            usable = len(data) // dtype.itemsize * dtype.itemsize
            count += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], dtype=dtype))))
            left -= len(data)
    return count


def _gzip_stream_complete(path: Path, expected: int) -> bool:
    """Decompress the whole file; True when the stream is intact and long enough."""
    total = 0
    try:
        with gzip.open(path, "rb") as handle:
            while True:
                chunk = handle.read(1 << 22)
                if not chunk:
                    break
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        return False
    return total >= expected


def _check_nifti(path: Path) -> None:
    """InputError when a NIfTI file is truncated or holds NaN/Inf voxels (ITK would read both as 0)."""
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    compressed = name.endswith(".gz")
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as handle:
            header = handle.read(544)
    except (EOFError, OSError, zlib.error) as err:
        raise InputError(f"could not read {path} as an image: {err}; re-export or re-download it") from None
    layout = _nifti_layout(header)
    if layout is None:
        return
    expected = layout.expected_size
    if not compressed:
        actual = path.stat().st_size
        if actual < expected:
            raise InputError(f"image {path} is truncated ({actual} of {expected} bytes); re-export or re-download it")
    else:
        # gzip trailer holds the uncompressed size mod 2**32; verify the full stream only on mismatch
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", handle.read(4))[0]
        if isize != expected % (1 << 32) and not _gzip_stream_complete(path, expected):
            raise InputError(
                f"image {path} is truncated or its compressed data is corrupt; re-export or re-download it"
            )
    if _nifti_nonfinite_count(path, layout):
        raise InputError(_NONFINITE_MESSAGE.format(path=path))


#: One message for NaN/Inf voxels, whichever check finds them.
_NONFINITE_MESSAGE = "image {path} contains NaN/Inf voxels; replace them (e.g. with 0) before meshing"


# --- reading -------------------------------------------------------------------------------
def _check_header(path: Path, dimension: int, size: tuple[int, ...], components: int, pixel: str) -> None:
    if components != 1:
        raise InputError(
            f"image {path} has {components} components per voxel: 4D or multi-component images are not "
            "supported; extract one 3D volume"
        )
    if "complex" in pixel.lower():
        raise InputError(f"image {path} has complex voxels; give a real-valued 3D volume")
    if dimension == 2:
        raise InputError(f"image {path} is 2D (size {list(size)}); give a 3D volume, or the folder of a DICOM series")
    if dimension >= 3 and min(size[:3]) == 1:
        raise InputError(
            f"image {path} holds a single slice (size {list(size[:3])}); give a 3D volume, "
            "or the folder of the whole DICOM series"
        )
    if dimension >= 4 and any(s > 1 for s in size[3:]):
        raise InputError(
            f"image {path} is {dimension}D (size {list(size)}): 4D or multi-component images are not "
            "supported; extract one 3D volume"
        )
    if dimension < 2:
        raise InputError(f"image {path} is {dimension}D; give a 3D volume")


def _read_sitk(path: Path) -> tuple[sitk.Image, SeriesRead | None]:
    """The image of a checked input path: a DICOM series (a folder or a zip archive of one) or a single image file
    (header checked first), and for a series what was read (:class:`~imagetomesh.io.dicom_series.SeriesRead`;
    None for a file)."""
    series = None
    if path.is_dir() or path.name.lower().endswith(".zip"):
        series = read_series_folder(path) if path.is_dir() else read_series_zip(path)
        image = series.image
        _check_header(
            path,
            image.GetDimension(),
            image.GetSize(),
            image.GetNumberOfComponentsPerPixel(),
            image.GetPixelIDTypeAsString(),
        )
    else:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as err:
            raise InputError(
                f"could not read {path} as an image (corrupt, truncated or not an image): "
                f"{short_itk_message(err)}; {IMAGE_HINT}"
            ) from None
        _check_header(
            path,
            reader.GetDimension(),
            reader.GetSize(),
            reader.GetNumberOfComponents(),
            sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        )
        _check_nifti(path)
        try:
            image = reader.Execute()
        except RuntimeError as err:
            raise InputError(
                f"could not read {path} as an image (corrupt, truncated or not an image): "
                f"{short_itk_message(err)}; {IMAGE_HINT}"
            ) from None
    return image, series


def read_image(path: str | os.PathLike, labels: bool = False) -> Volume:
    """Read a 3D image file, or the largest DICOM series in a folder, as a :class:`Volume`.

    A DICOM series whose slices ITK would misplace (a gantry tilt, uneven spacing) comes back resampled onto a
    regular grid, with a warning (:mod:`imagetomesh.io.dicom_geometry`); ``labels``: the image is a labelmap, so
    that resampling reads nearest voxels.

    Returns:
        Volume with ``array`` ``(D, H, W)`` in the file's pixel type and LPS geometry.

    Raises:
        InputError: missing path, folder without DICOM (in it, or in one folder below it), DICOM slices in two
            orientations or two at one position, zip archive that cannot be unpacked, unreadable/truncated/
            non-image file, 2D, 4D or multi-component image, or NaN/Inf voxels.
    """
    path, image = _open_image(path, labels)
    return _checked_volume(volume_from_sitk(image), path)


def _open_image(path: str | os.PathLike, labels: bool = False) -> tuple[Path, sitk.Image]:
    """The checked path and its 3D ``sitk.Image`` (the first volume of a 4D one; a DICOM series' slices where
    they lie, :func:`~imagetomesh.io.dicom_geometry.regular_series`, by nearest voxels for ``labels``)."""
    path = check_input_path(path, "image", folder_ok=True)
    with native_output_quiet():  # ITK/GDCM/MetaIO print around the one-line error raised here
        image, series = _read_sitk(path)
    if series is not None:  # outside the quiet block: its warnings must reach the user
        image = series.placed(str(path), labels)
    if image.GetDimension() > 3:
        size = list(image.GetSize())
        image = sitk.Extract(image, size[:3] + [0] * (len(size) - 3), [0] * len(size))
    return path, image


def _checked_volume(volume: Volume, path: Path) -> Volume:
    """``volume`` after the checks of :func:`read_image`: spacing, coordinates, finite voxels."""
    lo, hi = SPACING_RANGE_MM
    if not np.all((volume.spacing >= lo) & (volume.spacing <= hi)):
        raise InputError(
            f"image {path} has voxel spacing {volume.spacing.tolist()} mm, outside {lo:g} .. {hi:g} mm; "
            "fix the spacing in its header"
        )
    check_coordinates(volume.bounds_lps(), f"image {path}")
    if not _all_finite(volume.array):
        raise InputError(_NONFINITE_MESSAGE.format(path=path))
    return volume


#: Voxels checked at a time by the whole-image passes of this module (bounds their temporaries).
_CHUNK_VOXELS = 1 << 24


def _all_finite(array: np.ndarray) -> bool:
    """No NaN/Inf voxel (always True for integer types), a few slices at a time."""
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return True
    step = max(1, _CHUNK_VOXELS // max(1, array[0].size))
    return all(np.isfinite(array[k : k + step]).all() for k in range(0, array.shape[0], step))


def _labels_present(array: np.ndarray) -> list:
    if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0 and array.max() < 1 << 20:
        return np.flatnonzero(np.bincount(array.ravel())).tolist()
    return np.unique(array).tolist()


def read_labelmap(path: str | os.PathLike, label: int | None = None, crop_margin: int | None = None) -> Volume:
    """Read a labelmap and return a binary mask of one label (or of every nonzero label).

    Args:
        path: any image :func:`read_image` accepts.
        label: the label value to keep; ``None`` keeps every nonzero voxel.
        crop_margin: None: the mask on the labelmap's whole grid. An integer: only the mask's
            bounding box grown by this many voxels (clipped to the image), same LPS positions; the
            label is selected inside the box of the nonzero voxels, and the voxels are never copied
            out of the image read, so a small object in a big image costs about the file's size
            in memory. With a margin of at least 1 the crop reaches an image face exactly when the
            mask does, so :func:`imagetomesh.core.edges.touched_faces` answers as on the whole grid.

    Returns:
        Volume with a ``uint8`` ``(D, H, W)`` array of 0/1 and the labelmap's geometry (moved to the
        box when cropped).

    Raises:
        InputError: everything :func:`read_image` raises; non-integer values; empty labelmap;
            ``label`` not present (the message lists the labels that are).
    """
    if crop_margin is None:
        return labelmap_mask(read_image(path, labels=True), label, path)
    path, image = _open_image(path, labels=True)
    # a view of ITK's buffer (no copy); ``image`` stays alive until the crop below is copied out
    whole = _checked_volume(
        Volume(
            sitk.GetArrayViewFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        ),
        path,
    )
    return labelmap_mask(whole, label, path, crop_margin=crop_margin)


_LABEL_ZERO_MESSAGE = (
    "label 0 is the background (every unlabelled voxel); give the value of a labelled structure, "
    "or no label for every non-zero voxel"
)


def labelmap_mask(
    volume: Volume, label: int | None = None, path: str | os.PathLike = "the labelmap", crop_margin: int | None = None
) -> Volume:
    """The binary mask of one label (or of every nonzero label) of a labelmap already read; the checks and
    messages of :func:`read_labelmap` (``path`` names it in them; ``crop_margin`` as there)."""
    if crop_margin is not None:
        if label == 0:
            raise InputError(_LABEL_ZERO_MESSAGE)
        from imagetomesh.core.cropping import bounding_box, crop_to_box

        nonzero = bounding_box(volume.array)
        if nonzero is None:
            raise InputError(f"labelmap {path} is empty (every voxel is 0); give a segmentation with a labelled region")
        # every voxel outside the nonzero box is 0: the checks and the label's box need only the inside
        inside = crop_to_box(volume, nonzero)
        mask = labelmap_mask(inside, label, path)
        box = bounding_box(mask.array)
        shifted = tuple(slice(outer.start + s.start, outer.start + s.stop) for outer, s in zip(nonzero, box))
        crop = crop_to_box(volume, shifted, int(crop_margin))
        selected = crop.array == label if label is not None else crop.array != 0
        return crop.with_array(selected.astype(np.uint8))
    array = volume.array
    if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.round(array)):
        raise InputError(
            f"{path} holds non-integer values, so it is not a labelmap; threshold it into integer labels first"
        )
    if label is None:
        mask = array != 0
        if not mask.any():
            raise InputError(f"labelmap {path} is empty (every voxel is 0); give a segmentation with a labelled region")
    elif label == 0:
        raise InputError(_LABEL_ZERO_MESSAGE)
    else:
        mask = array == label
        if not mask.any():
            present = [v for v in _labels_present(array) if v != 0]
            if not present:
                raise InputError(
                    f"labelmap {path} is empty (every voxel is 0); give a segmentation with a labelled region"
                )
            shown = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in present[:20])
            more = f" and {len(present) - 20} more" if len(present) > 20 else ""
            raise InputError(
                f"label {label} is not in labelmap {path}; labels present: {shown}{more}; choose one of them"
            )
    return volume.with_array(mask.astype(np.uint8))


# --- writing -------------------------------------------------------------------------------
def write_image(volume: Volume, path: str | os.PathLike) -> Path:
    """Write ``volume`` to ``path`` (``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha``) atomically.

    Returns:
        The written path.

    Raises:
        InputError: unsupported extension, missing/unwritable output folder, or a failed write.
    """
    target = check_output_path(path)
    suffix = format_suffix(target)
    if suffix not in WRITE_IMAGE_SUFFIXES:
        raise InputError(
            f"cannot write images as '{suffix or target.name}'; use one of {', '.join(WRITE_IMAGE_SUFFIXES)}"
        )
    image = volume_to_sitk(volume)
    with atomic_write(target) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=suffix != ".nii")
        except RuntimeError as err:
            raise InputError(f"could not write {target}: {short_itk_message(err)}") from None
    return target
