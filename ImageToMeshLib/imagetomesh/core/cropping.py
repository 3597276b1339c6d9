"""Sub-volumes: the bounding box of a mask, and crops by an index box or by an LPS box (an ROI).

Every crop keeps the volume's spacing and direction and moves its origin to the first kept
voxel, so the cropped voxels keep their LPS positions. numpy only (the Slicer module crops
in its own process).
"""

from __future__ import annotations

import numpy as np

from imagetomesh.core.volume import Volume, transform_points
from imagetomesh.errors import InputError

__all__ = ["bounding_box", "crop_to_box", "crop_volume", "window_slices"]

#: ``(k, j, i)`` slices into a ``(D, H, W)`` array.
Box = tuple[slice, slice, slice]


#: Voxels compared at a time by :func:`bounding_box` (bounds its temporary memory to ~16 MB).
_CHUNK_VOXELS = 1 << 24


def bounding_box(mask: np.ndarray, value=None) -> Box | None:
    """Tight ``(k, j, i)`` slices around the nonzero voxels of the ``(D, H, W)`` ``mask`` (or around its
    voxels equal to ``value``); None when there are none.

    Bounded work and memory on big, mostly empty images: the slices holding a voxel are found with
    one ``count_nonzero`` per slice (no temporary), and only the slabs between the first and the
    last of those are compared, a few at a time (at most about ``_CHUNK_VOXELS`` bytes at once).
    For ``value``, the nonzero box is found first and ``value`` is compared inside it only.
    """
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ValueError(f"bounding_box needs a 3D (D, H, W) array, got shape {array.shape}")
    depth = array.shape[0]
    if array.size == 0:
        return None
    counts = np.fromiter((np.count_nonzero(array[k]) for k in range(depth)), dtype=np.int64, count=depth)
    k = np.flatnonzero(counts)
    if k.size == 0:
        return None
    k0, k1 = int(k[0]), int(k[-1]) + 1
    step = max(1, _CHUNK_VOXELS // max(1, array[0].size))
    projection = np.zeros(array.shape[1:], dtype=bool)
    for start in range(k0, k1, step):
        projection |= (array[start : min(start + step, k1)] != 0).any(axis=0)
    j = np.flatnonzero(projection.any(axis=1))
    i = np.flatnonzero(projection.any(axis=0))
    box = slice(k0, k1), slice(int(j[0]), int(j[-1]) + 1), slice(int(i[0]), int(i[-1]) + 1)
    if value is None:
        return box
    inner = bounding_box(array[box] == value)
    if inner is None:
        return None
    return tuple(slice(outer.start + s.start, outer.start + s.stop) for outer, s in zip(box, inner))  # type: ignore[return-value]


def window_slices(start, shape, array_shape) -> tuple[Box, Box] | None:
    """Where the window of ``shape`` ``(d, h, w)`` starting at voxel ``start`` ``(k, j, i)`` (anywhere, inside
    the array or not) overlaps an array of ``array_shape``: ``(slices into the array, slices into the window)``,
    None when they do not overlap."""
    src, dst = [], []
    for s0, n, size in zip(start, shape, array_shape):
        lo, hi = max(s0, 0), min(s0 + n, size)
        if hi <= lo:
            return None
        src.append(slice(lo, hi))
        dst.append(slice(lo - s0, hi - s0))
    return tuple(src), tuple(dst)


def crop_to_box(volume: Volume, box: Box, margin: int = 0, fill: float | None = None) -> Volume:
    """The sub-volume ``box`` (``(k, j, i)`` slices) grown by ``margin`` voxels: clipped to the image, or with
    ``fill`` the whole grown box, ``fill`` where it leaves the image (so the result does not depend on how
    much lies beyond the box)."""
    if fill is None:
        grown = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, volume.shape))
        array = np.ascontiguousarray(volume.array[grown])
    else:
        grown = tuple(slice(s.start - margin, s.stop + margin) for s in box)
        shape = tuple(s.stop - s.start for s in grown)
        array = np.full(shape, fill, dtype=volume.array.dtype)
        src, dst = window_slices(tuple(s.start for s in grown), shape, volume.shape)  # the box is in the image
        array[dst] = volume.array[src]
    start_ijk = np.array([grown[2].start, grown[1].start, grown[0].start], dtype=np.float64)
    origin = volume.index_to_lps[:3, :3] @ start_ijk + volume.origin
    return Volume(array, volume.spacing, origin, volume.direction)


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
