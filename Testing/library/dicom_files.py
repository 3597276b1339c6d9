"""DICOM series written slice by slice at any positions and orientation, for the image-reading tests."""

import numpy as np
import SimpleITK as sitk

SERIES_UID = "1.2.826.0.1.3680043.2.1125.8.1"


def slice_points(position, row, column, shape, spacing) -> np.ndarray:
    """``(R, C, 3)`` LPS positions of a slice's pixels."""
    j, i = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return position + (i * spacing[0])[..., None] * row + (j * spacing[1])[..., None] * column


def write_series(
    folder, positions, orientation, values, shape=(30, 36), spacing=(1.2, 1.0), uid=SERIES_UID, description=None
):
    """One CT DICOM file per slice at ``positions (N, 3)`` (LPS mm), directions ``orientation`` (row, column),
    pixels ``values(points (R, C, 3)) -> (R, C)`` (rounded to int16) ``spacing`` (x, y) mm apart, series ``uid``
    and SeriesDescription ``description``; files named in reverse order (a reader must sort by position)."""
    folder.mkdir(parents=True, exist_ok=True)
    row, column = (np.asarray(v, dtype=np.float64) for v in orientation)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, position in enumerate(np.asarray(positions, dtype=np.float64)):
        pixels = values(slice_points(position, row, column, shape, spacing))
        image = sitk.GetImageFromArray(np.rint(pixels).astype(np.int16)[None])[:, :, 0]
        image.SetSpacing(spacing)
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.8",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*row, *column)),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
        }
        if description is not None:
            tags["0008|103e"] = description
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"im{len(positions) - k:03d}-{uid.rsplit('.', 1)[-1]}.dcm"))
        writer.Execute(image)
