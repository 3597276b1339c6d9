"""Sub-volumes: the bounding box of a mask, and crops by an index box or by an LPS box (an ROI).

Every crop keeps the volume's spacing and direction and moves its origin to the first kept
voxel, so the cropped voxels keep their LPS positions. numpy only (the Slicer module crops
in its own process).
"""

from __future__ import annotations

import numpy as np

from imagetomesh.core.volume import Volume, transform_points
from imagetomesh.errors import InputError

__all__ = ["bounding_box", "crop_to_box", "crop_volume"]

#: ``(k, j, i)`` slices into a ``(D, H, W)`` array.
Box = tuple[slice, slice, slice]


def bounding_box(mask: np.ndarray) -> Box | None:
    """Tight ``(k, j, i)`` slices around the nonzero voxels of the ``(D, H, W)`` ``mask``; None when there are none."""
    mask = np.asarray(mask) != 0
    k_any = mask.reshape(mask.shape[0], -1).any(1)
    if not k_any.any():
        return None
    k = np.flatnonzero(k_any)
    sub = mask[k[0] : k[-1] + 1]
    j = np.flatnonzero(sub.any(axis=(0, 2)))
    i = np.flatnonzero(sub.any(axis=(0, 1)))
    return slice(k[0], k[-1] + 1), slice(j[0], j[-1] + 1), slice(i[0], i[-1] + 1)


def crop_to_box(volume: Volume, box: Box, margin: int = 0) -> Volume:
    """The sub-volume ``box`` (``(k, j, i)`` slices) grown by ``margin`` voxels and clipped to the image."""
    grown = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, volume.shape))
    start_ijk = np.array([grown[2].start, grown[1].start, grown[0].start], dtype=np.float64)
    origin = volume.index_to_lps[:3, :3] @ start_ijk + volume.origin
    return Volume(np.ascontiguousarray(volume.array[grown]), volume.spacing, origin, volume.direction)


def crop_volume(volume: Volume, corners_lps: np.ndarray, margin: int = 0) -> Volume:
    """The part of ``volume`` inside the box spanned by ``corners_lps`` (``(N, 3)`` LPS mm, any orientation).

    The box's corners are mapped to voxel indices; the voxel-aligned bounding box of those,
    grown by ``margin`` voxels and clipped to the image, is kept.

    Raises:
        InputError: the box does not overlap the image.
    """
    corners = np.asarray(corners_lps, dtype=np.float64).reshape(-1, 3)
    ijk = transform_points(volume.lps_to_index, corners)
    lo = np.floor(ijk.min(0) + 1e-6).astype(np.int64) - margin
    hi = np.ceil(ijk.max(0) - 1e-6).astype(np.int64) + margin
    lo, hi = np.maximum(lo, 0), np.minimum(hi, volume.size_ijk - 1)
    if np.any(hi < lo):
        raise InputError("the ROI lies outside the image; move the ROI over the image or clear it")
    return crop_to_box(volume, tuple(slice(int(lo[a]), int(hi[a]) + 1) for a in (2, 1, 0)))
