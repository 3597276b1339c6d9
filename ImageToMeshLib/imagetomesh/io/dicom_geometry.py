"""Where a DICOM series' slices lie, and one regular volume of them whatever lattice they were acquired on.

ITK stacks a series' slices as if they lay on a straight, even lattice: its volume starts at the first
slice's position and steps along the slice normal by the mean distance between slices. Two common CT
acquisitions break that, and ITK says nothing: a gantry tilt (each slice moved in its own plane along the
series: the lattice is sheared; a 20 degree tilt puts an organ 50 mm from the first slice about 18 mm from
where it was scanned) and uneven slice spacing (missing slices, or reconstructions of different spacing
joined in one series: every slice past the change is misplaced). :func:`regular_series` compares each
slice's own position (ImagePositionPatient) with where ITK's volume puts it and, where they part by more
than :data:`LATTICE_TOLERANCE` of a voxel, resamples the slices onto a regular grid along the slice normal:
linearly between the two slices around each new one and within each slice (nearest for labelmaps), as
3D Slicer's acquisition-geometry regularisation does, with a warning that says what was found. A series
whose slices lie in different orientations, or two of whose slices lie at one position, is refused.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from imagetomesh.errors import InputError

#: A series is taken as ITK stacks it when no slice lies further than this fraction of the smallest voxel
#: spacing from where ITK's volume puts it (DICOM positions are written to about 1e-3 mm).
LATTICE_TOLERANCE = 0.1
#: Slices whose directions differ by more than this (any component of the unit vectors) are not parallel.
ORIENTATION_TOLERANCE = 1e-3
#: Two slices nearer than this (mm, along the normal) lie at one position.
SAME_POSITION_MM = 1e-3
#: A gap this many times the usual slice distance is reported as slices missing.
GAP_FACTOR = 1.9


@dataclass(frozen=True)
class SeriesSlices:
    """Where each slice of a series lies: ``positions (N, 3)`` LPS mm of each slice's first voxel and
    ``orientations (N, 2, 3)`` its row and column directions (unit vectors along increasing column and row
    index), both in the order of ITK's stack (its volume's slice ``k`` is ``positions[k]``)."""

    positions: np.ndarray
    orientations: np.ndarray

    @classmethod
    def of_reader(cls, reader: sitk.ImageSeriesReader, count: int) -> SeriesSlices | None:
        """The slices of the series ``reader`` has just read (with ``MetaDataDictionaryArrayUpdateOn``), or None
        when a slice lacks its ImagePositionPatient (0020,0032) or ImageOrientationPatient (0020,0037)."""
        positions, orientations = [], []
        for k in range(count):
            values = []
            for tag, size in (("0020|0032", 3), ("0020|0037", 6)):
                if not reader.HasMetaDataKey(k, tag):
                    return None
                try:
                    numbers = [float(v) for v in reader.GetMetaData(k, tag).strip().split("\\")]
                except ValueError:
                    return None
                if len(numbers) != size:
                    return None
                values.append(numbers)
            positions.append(values[0])
            orientations.append(np.reshape(values[1], (2, 3)))
        return cls(np.asarray(positions, dtype=np.float64), np.asarray(orientations, dtype=np.float64))

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first slice's unit row and column directions and its normal (row x column), each ``(3,)``."""
        row, column = self.orientations[0] / np.linalg.norm(self.orientations[0], axis=1, keepdims=True)
        normal = np.cross(row, column)
        return row, column, normal / np.linalg.norm(normal)

    @property
    def normal(self) -> np.ndarray:
        """``(3,)`` unit normal of the first slice (row x column direction)."""
        return self.axes[2]


def stack_error(image: sitk.Image, slices: SeriesSlices) -> float:
    """The largest distance (mm) between a slice's own position and where ``image`` (ITK's stack of the slices,
    slice ``k`` from ``slices.positions[k]``) puts its first voxel."""
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    step = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2] * image.GetSpacing()[2]
    stacked = origin + np.arange(len(slices.positions))[:, None] * step
    return float(np.linalg.norm(slices.positions - stacked, axis=1).max())


def regular_series(image: sitk.Image, slices: SeriesSlices, name: str, labels: bool = False) -> sitk.Image:
    """``image`` (ITK's stack of a series' slices) when it puts every slice where the slice says it lies
    (:func:`stack_error` within :data:`LATTICE_TOLERANCE` of a voxel); otherwise the slices resampled onto a
    regular grid (:func:`resample_slices`) with a warning naming ``name`` and what was found.

    Raises:
        InputError: the slices are not parallel, or two lie at one position."""
    spacing = image.GetSpacing()
    if image.GetDimension() != 3 or len(slices.positions) < 2:
        return image
    _check_parallel(slices, name)
    normal = slices.normal
    depth = np.sort(slices.positions @ normal)
    gaps = np.diff(depth)
    if gaps.min() < SAME_POSITION_MM:
        at = depth[1:][gaps.argmin()]
        raise InputError(
            f"two slices of the DICOM series in {name} lie at one position ({at:.2f} mm along the slice normal): "
            "it mixes acquisitions under one series; export one acquisition into its own folder"
        )
    tolerance = LATTICE_TOLERANCE * min(spacing[0], spacing[1], float(np.median(gaps)))
    if stack_error(image, slices) <= tolerance:
        return image
    regular = resample_slices(sitk.GetArrayViewFromImage(image), spacing[:2], slices, labels)
    warnings.warn(
        f"DICOM series in {name}: {_irregularity(slices, gaps, tolerance)}; {_resampled(regular)}", stacklevel=2
    )
    return regular


def _check_parallel(slices: SeriesSlices, name: str) -> None:
    spread = np.abs(slices.orientations - slices.orientations[0]).max()
    if spread > ORIENTATION_TOLERANCE:
        raise InputError(
            f"the slices of the DICOM series in {name} lie in different orientations (their directions differ "
            f"by up to {spread:.3f}): it is not one volume; export each orientation into its own folder"
        )


def _irregularity(slices: SeriesSlices, gaps: np.ndarray, tolerance: float) -> str:
    """What makes the slices irregular, in words: their in-plane shift (with the gantry tilt it amounts to)
    and their uneven spacing."""
    normal = slices.normal
    depth = (slices.positions - slices.positions[0]) @ normal
    shift = (slices.positions - slices.positions[0]) - depth[:, None] * normal  # (N, 3) in-plane offsets
    found = []
    largest = float(np.linalg.norm(shift, axis=1).max())
    if largest > tolerance:
        slope = (shift * depth[:, None]).sum(0) / max(float((depth**2).sum()), 1e-12)  # mm in-plane per mm along
        tilt = np.degrees(np.arctan(np.linalg.norm(slope)))
        found.append(
            f"its slices are moved in their own plane along the series by up to {largest:.1f} mm "
            f"(as by a gantry tilt of {tilt:.1f} degrees)"
        )
    if gaps.max() - gaps.min() > tolerance:
        uneven = f"its slices are {gaps.min():.2f} to {gaps.max():.2f} mm apart"
        if gaps.max() > GAP_FACTOR * np.median(gaps):
            uneven += " (slices missing? the largest gap is interpolated across)"
        found.append(uneven)
    return " and ".join(found) or "its slices do not lie where ITK stacks them"


def _resampled(regular: sitk.Image) -> str:
    return (
        f"resampled onto a regular grid of {regular.GetSize()[2]} slices {regular.GetSpacing()[2]:.2f} mm apart "
        "along the slice normal, as 3D Slicer's acquisition-geometry regularisation does"
    )


def resample_slices(
    array: np.ndarray, pixel_spacing: tuple[float, float], slices: SeriesSlices, labels: bool = False
) -> sitk.Image:
    """The slices ``array (N, R, C)`` (slice ``k`` lying at ``slices.positions[k]``, pixels ``pixel_spacing``
    ``(x, y)`` mm apart along its row and column directions) on a regular grid along their normal: from the
    nearest slice to the farthest, the median distance between slices apart (adjusted so the first and last
    grid slices are the first and last slices), wide enough in-plane to hold every slice. Each grid slice
    is the linear blend of the two slices around it, each read bilinearly at the grid's points (nearest slice
    and nearest pixel when ``labels``); points outside a slice read the series' lowest value (0 for labels).
    Same voxel type as ``array``. Returns an ``sitk.Image`` in LPS with the slices' row, column and normal
    as its directions."""
    from scipy import ndimage  # here: the Slicer module imports this package's io, never scipy (test_logic_imports)

    row, column, normal = slices.axes
    order = np.argsort(slices.positions @ normal, kind="stable")
    positions = slices.positions[order]
    depth = positions @ normal
    first = positions[0]
    # each slice's offset in its plane from the first slice, in pixels (x, y)
    offset_x = (positions - first) @ row / pixel_spacing[0]
    offset_y = (positions - first) @ column / pixel_spacing[1]
    x0, x1 = int(np.floor(offset_x.min() + 1e-6)), int(np.ceil(offset_x.max() - 1e-6))
    y0, y1 = int(np.floor(offset_y.min() + 1e-6)), int(np.ceil(offset_y.max() - 1e-6))
    rows, columns = array.shape[1] + y1 - y0, array.shape[2] + x1 - x0
    count = int(round((depth[-1] - depth[0]) / float(np.median(np.diff(depth))))) + 1
    step = (depth[-1] - depth[0]) / (count - 1)
    fill = 0 if labels else array.min()
    order_of_interpolation = 0 if labels else 1

    cache: dict[int, np.ndarray] = {}

    def on_grid(k: int) -> np.ndarray:
        """Sorted slice ``k`` read at the grid's in-plane points (float32 ``(rows, columns)``)."""
        if k not in cache:
            if len(cache) > 1:
                cache.pop(min(cache))
            cache[k] = ndimage.affine_transform(
                np.asarray(array[order[k]], dtype=np.float32),
                np.ones(2),
                offset=(y0 - offset_y[k], x0 - offset_x[k]),
                output_shape=(rows, columns),
                order=order_of_interpolation,
                mode="constant",
                cval=float(fill),
            )
        return cache[k]

    out = np.empty((count, rows, columns), dtype=array.dtype)
    info = np.iinfo(array.dtype) if np.issubdtype(array.dtype, np.integer) else None
    for m in range(count):
        at = depth[0] + m * step
        k = int(np.clip(np.searchsorted(depth, at, side="right") - 1, 0, len(depth) - 2))
        t = float(np.clip((at - depth[k]) / (depth[k + 1] - depth[k]), 0.0, 1.0))
        if labels or t < 1e-6 or t > 1 - 1e-6:
            plane = on_grid(k + int(round(t)))
        else:
            plane = (1.0 - t) * on_grid(k) + t * on_grid(k + 1)
        if info is not None:
            plane = np.clip(np.rint(plane), info.min, info.max)
        out[m] = plane
    image = sitk.GetImageFromArray(out, isVector=False)
    image.SetSpacing((float(pixel_spacing[0]), float(pixel_spacing[1]), float(step)))
    image.SetOrigin(tuple(float(v) for v in first + x0 * pixel_spacing[0] * row + y0 * pixel_spacing[1] * column))
    image.SetDirection(tuple(float(v) for v in np.stack([row, column, normal], axis=1).reshape(-1)))
    return image
