"""Which faces of an image a mask touches: an organ that reaches the edge of the scan was cut by it,
and any surface made from it is capped there (its volume and shape are not the organ's)."""

from __future__ import annotations

import numpy as np

from imagetomesh.core.volume import Volume, transform_points

#: LPS axis -> (name of the face towards -axis, name of the face towards +axis)
_SIDES = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))


def face_names(volume: Volume) -> list[tuple[str, str]]:
    """Per index axis (i, j, k): the anatomical names of the image's faces at index 0 and at the last
    index (the LPS axis that the index axis mostly runs along decides: e.g. k along +S -> inferior, superior)."""
    names = []
    for axis in range(3):
        column = volume.direction[:, axis]
        lps = int(np.argmax(np.abs(column)))
        low, high = _SIDES[lps]
        names.append((low, high) if column[lps] > 0 else (high, low))
    return names


def touched_faces(mask: Volume) -> list[str]:
    """The anatomical names of the image faces (``"superior"``, ``"left"``, ...) whose border slice holds
    nonzero voxels of ``mask``: where an organ is cut by the edge of the scan. Empty: not cut."""
    array = np.asarray(mask.array) != 0
    touched = []
    for axis, (low, high) in enumerate(face_names(mask)):
        dim = 2 - axis  # array is (k, j, i)
        if np.take(array, 0, axis=dim).any():
            touched.append(low)
        if array.shape[dim] > 1 and np.take(array, -1, axis=dim).any():
            touched.append(high)
    return touched


def cut_warning(what: str, faces: list[str]) -> str | None:
    """A one-line warning that ``what`` is cut by the image's ``faces``, or None when it is not."""
    if not faces:
        return None
    return (
        f"{what} reaches the {', '.join(faces)} edge of the image: it is probably cut by the scan, so its "
        "surface is capped there and its volume is smaller than the organ's"
    )


def mesh_touched_faces(vertices_lps: np.ndarray, volume: Volume) -> list[str]:
    """The faces of ``volume`` that a surface (``(N, 3)`` LPS vertices) made from it reaches within a
    voxel of (its vertices' index coordinates below 0.5 or above ``size - 1.5``): an organ found at the
    edge of the scan."""
    if len(vertices_lps) == 0:
        return []
    ijk = transform_points(volume.lps_to_index, np.asarray(vertices_lps, dtype=np.float64))
    touched = []
    for axis, (low, high) in enumerate(face_names(volume)):
        if ijk[:, axis].min() < 0.5:
            touched.append(low)
        if ijk[:, axis].max() > volume.size_ijk[axis] - 1.5:
            touched.append(high)
    return touched
