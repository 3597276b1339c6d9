"""Put an image on a model's grid and remember where it went (:class:`GridTransform`).

A model sees a fixed ``(D, H, W)`` grid at a fixed spacing, axis-aligned with the image's
own index axes and centred on the image centre (or on a given LPS point). The image is
resampled trilinearly (labels by nearest neighbour) with one ``affine_grid`` /
``grid_sample`` pass, so any input spacing, size or direction works.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from imagetomesh.core.transforms import GridTransform, grid_to_index_affine, index_to_grid_affine
from imagetomesh.core.volume import Volume


@dataclass(frozen=True)
class GridSpec:
    """A model's input grid: ``shape`` (D, H, W) and ``spacing`` (i, j, k) in mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "spacing": list(self.spacing)}

    @classmethod
    def from_dict(cls, d: dict) -> "GridSpec":
        return cls(tuple(int(s) for s in d["shape"]), tuple(float(s) for s in d["spacing"]))


def model_grid_transform(volume: Volume, spec: GridSpec, centre_lps: np.ndarray | None = None) -> GridTransform:
    """Where ``spec``'s grid lies for ``volume``: same axes, centred on ``centre_lps`` (default: image centre).

    Along an axis where the model's spacing equals the image's, the grid is snapped onto the
    image's voxel lattice (its voxel centres coincide with image voxel centres), so resampling
    there copies voxels exactly instead of interpolating half-way between them.
    """
    size_ijk = np.array(spec.shape[::-1], dtype=np.float64)
    spacing = np.asarray(spec.spacing, dtype=np.float64)
    centre_ijk = (volume.size_ijk - 1) / 2.0 if centre_lps is None else \
        (volume.lps_to_index[:3, :3] @ np.asarray(centre_lps, dtype=np.float64) + volume.lps_to_index[:3, 3])
    ratio = spacing / volume.spacing
    origin_ijk = centre_ijk - (size_ijk - 1) / 2.0 * ratio
    on_lattice = np.isclose(ratio, 1.0, rtol=1e-4)
    origin_ijk[on_lattice] = np.round(origin_ijk[on_lattice])
    index_to_lps = np.eye(4)
    index_to_lps[:3, :3] = volume.direction * spacing[None, :]
    index_to_lps[:3, 3] = volume.index_to_lps[:3, :3] @ origin_ijk + volume.origin
    return GridTransform(index_to_lps @ grid_to_index_affine(size_ijk), tuple(spec.shape))


def resample_to_grid(volume: Volume, target: GridTransform, mode: str = "bilinear", fill: float = 0.0) -> torch.Tensor:
    """Sample ``volume`` on ``target``'s grid; returns float32 ``(D, H, W)``.

    ``mode`` is ``"bilinear"`` (trilinear in 3D) or ``"nearest"``; points outside the image get ``fill``.
    """
    # target grid -> LPS -> source index -> source grid, as one affine.
    theta = index_to_grid_affine(volume.size_ijk) @ volume.lps_to_index @ target.grid_to_lps
    theta_t = torch.tensor(theta[:3], dtype=torch.float32)[None]
    d, h, w = target.shape
    sample_at = F.affine_grid(theta_t, [1, 1, d, h, w], align_corners=True)
    source = torch.as_tensor(np.asarray(volume.array, dtype=np.float32))[None, None]
    inside = F.grid_sample(torch.ones_like(source), sample_at, mode="nearest", align_corners=True, padding_mode="zeros")
    values = F.grid_sample(source, sample_at, mode=mode, align_corners=True, padding_mode="border")
    return torch.where(inside > 0.5, values, torch.full_like(values, fill))[0, 0]


def normalise_intensity(array: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Per-volume normalisation: clip to percentiles, then zero mean and unit variance (float32)."""
    array = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(array, [low_pct, high_pct])
    clipped = np.clip(array, lo, hi)
    std = clipped.std()
    return ((clipped - clipped.mean()) / (std if std > 1e-8 else 1.0)).astype(np.float32)


def prepare_image(volume: Volume, spec: GridSpec, warn: bool = True) -> tuple[torch.Tensor, GridTransform]:
    """Normalise ``volume`` and resample it onto ``spec``; returns ``((D, H, W) float32, GridTransform)``.

    Warns (does not fail) when the image's spacing differs from the model's or the image
    does not fit in the model's field of view, since the result may then be less accurate.
    """
    if warn and not np.allclose(volume.spacing, spec.spacing, rtol=0.05):
        warnings.warn(
            f"image spacing {np.round(volume.spacing, 3).tolist()} mm differs from the model's "
            f"{list(spec.spacing)} mm; resampling", stacklevel=2,
        )
    extent = volume.size_ijk * volume.spacing
    fov = np.array(spec.shape[::-1]) * np.asarray(spec.spacing)
    if warn and np.any(extent > fov + 1e-6):
        warnings.warn(
            f"image extent {np.round(extent, 1).tolist()} mm exceeds the model's field of view "
            f"{fov.tolist()} mm; the centre is used (crop the image around the organ for best results)",
            stacklevel=2,
        )
    normalised = volume.with_array(normalise_intensity(volume.array))
    transform = model_grid_transform(volume, spec)
    fill = float(normalised.array.min())
    return resample_to_grid(normalised, transform, "bilinear", fill), transform
