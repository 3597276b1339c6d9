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

from imagetomesh.core.transforms import GridTransform, centre_index, grid_to_index_affine, index_to_grid_affine
from imagetomesh.core.volume import Volume


@dataclass(frozen=True)
class GridSpec:
    """A model's input grid.

    Attributes:
        shape: (D, H, W).
        spacing: (i, j, k) voxel size in mm.
        direction: 9 numbers, the row-major ``(3, 3)`` LPS direction of the grid's (i, j, k)
            axes: the orientation the model was trained in. ``None`` follows each image's own
            index axes (only right when every image is stored in the same layout).
        intensity: how voxel values are normalised (:data:`INTENSITY_NORMALISATIONS`):
            ``"zscore"`` per volume (MRI, arbitrary units) or ``"ct"`` (fixed Hounsfield window).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...] | None = None
    intensity: str = "zscore"

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_NORMALISATIONS:
            raise ValueError(
                f"grid intensity must be one of {sorted(INTENSITY_NORMALISATIONS)}, got {self.intensity!r}"
            )

    def direction_matrix(self, volume: Volume) -> np.ndarray:
        if self.direction is None:
            return volume.direction
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def to_dict(self) -> dict:
        d = {"shape": list(self.shape), "spacing": list(self.spacing)}
        if self.direction is not None:
            d["direction"] = list(self.direction)
        if self.intensity != "zscore":
            d["intensity"] = self.intensity
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GridSpec:
        direction = tuple(float(x) for x in d["direction"]) if d.get("direction") is not None else None
        return cls(
            tuple(int(s) for s in d["shape"]),
            tuple(float(s) for s in d["spacing"]),
            direction,
            str(d.get("intensity", "zscore")),
        )


def model_grid_transform(volume: Volume, spec: GridSpec, centre_lps: np.ndarray | None = None) -> GridTransform:
    """Where ``spec``'s grid lies for ``volume``: the model's orientation, centred on ``centre_lps``
    (default: the image centre).

    When each grid step is exactly one image voxel step along some image axis (same spacing,
    axes equal up to order and sign — e.g. the training layout, or the same image stored
    with permuted or flipped axes), the grid is snapped onto the image's voxel lattice so
    resampling copies voxels instead of interpolating half-way between them.
    """
    size_ijk = np.array(spec.shape[::-1], dtype=np.float64)
    spacing = np.asarray(spec.spacing, dtype=np.float64)
    direction = spec.direction_matrix(volume)
    if centre_lps is None:
        centre_lps = volume.index_to_lps[:3, :3] @ centre_index(volume.size_ijk) + volume.origin
    axes = direction * spacing[None, :]  # columns: LPS step of one grid voxel along i, j, k
    origin = np.asarray(centre_lps, dtype=np.float64) - axes @ centre_index(size_ijk)
    step_in_image = volume.lps_to_index[:3, :3] @ axes  # image-index step of one grid step
    if np.allclose(np.abs(step_in_image).sum(0), 1.0, atol=1e-4) and np.allclose(
        np.abs(step_in_image).max(0), 1.0, atol=1e-4
    ):
        origin_ijk = volume.lps_to_index[:3, :3] @ origin + volume.lps_to_index[:3, 3]
        origin = volume.index_to_lps[:3, :3] @ np.round(origin_ijk) + volume.origin
    index_to_lps = np.eye(4)
    index_to_lps[:3, :3] = axes
    index_to_lps[:3, 3] = origin
    return GridTransform(index_to_lps @ grid_to_index_affine(size_ijk), tuple(spec.shape))


def resample_to_grid(volume: Volume, target: GridTransform, mode: str = "bilinear", fill: float = 0.0) -> torch.Tensor:
    """Sample ``volume`` on ``target``'s grid; returns float32 ``(D, H, W)``.

    ``mode`` is ``"bilinear"`` (trilinear in 3D) or ``"nearest"``; points outside the image get ``fill``.
    Only the part of the image the grid covers is read (:func:`_footprint`): a small grid on a huge
    image costs the grid's memory, not the image's.
    """
    volume = _footprint(volume, target)
    if volume is None:  # the grid lies wholly outside the image
        return torch.full(tuple(target.shape), float(fill), dtype=torch.float32)
    # target grid -> LPS -> source index -> source grid, as one affine.
    theta = index_to_grid_affine(volume.size_ijk) @ volume.lps_to_index @ target.grid_to_lps
    theta_t = torch.tensor(theta[:3], dtype=torch.float32)[None]
    d, h, w = target.shape
    sample_at = F.affine_grid(theta_t, [1, 1, d, h, w], align_corners=True)
    source = torch.as_tensor(np.asarray(volume.array, dtype=np.float32))[None, None]
    inside = F.grid_sample(torch.ones_like(source), sample_at, mode="nearest", align_corners=True, padding_mode="zeros")
    values = F.grid_sample(source, sample_at, mode=mode, align_corners=True, padding_mode="border")
    return torch.where(inside > 0.5, values, torch.full_like(values, fill))[0, 0]


def resample_volume(volume: Volume, spacing, size_ijk, mode: str = "bilinear", fill: float = 0.0) -> Volume:
    """``volume`` on a new lattice of ``size_ijk`` (W, H, D) voxels of ``spacing`` mm along its own index
    axes, the first voxel's outer corner kept in place (same direction; the same field of view when
    ``size * spacing`` equals the old extent), sampled with :func:`resample_to_grid` (float32 values)."""
    spacing = np.asarray(spacing, dtype=np.float64)
    size = np.asarray(size_ijk, dtype=np.int64)
    origin = volume.origin - 0.5 * volume.direction @ (volume.spacing - spacing)
    index_to_lps = np.eye(4)
    index_to_lps[:3, :3] = volume.direction * spacing[None, :]
    index_to_lps[:3, 3] = origin
    grid = GridTransform(
        index_to_lps @ grid_to_index_affine(size.astype(np.float64)), tuple(int(s) for s in size[::-1])
    )
    return Volume(resample_to_grid(volume, grid, mode, fill).numpy(), spacing, origin, volume.direction)


def _footprint(volume: Volume, target: GridTransform) -> Volume | None:
    """The part of ``volume`` that ``target``'s grid samples: the box around the grid's corners in the
    image's index space, grown by two voxels (every trilinear neighbour is inside) and clipped to the
    image; ``volume`` itself when that box is most of it; None when the grid misses the image."""
    from imagetomesh.core.cropping import crop_to_box

    corners = np.array([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    ijk = (volume.lps_to_index @ target.grid_to_lps @ corners.T).T[:, :3]
    size = np.asarray(volume.size_ijk)
    if np.any(ijk.max(0) < -1.0) or np.any(ijk.min(0) > size):
        return None
    lo = np.clip(np.floor(ijk.min(0)).astype(np.int64) - 2, 0, size - 1)
    hi = np.clip(np.ceil(ijk.max(0)).astype(np.int64) + 2, 0, size - 1)
    if np.prod(hi - lo + 1) > 0.5 * np.prod(size):
        return volume
    return crop_to_box(volume, tuple(slice(int(lo[a]), int(hi[a]) + 1) for a in (2, 1, 0)))


def normalise_intensity(array: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Per-volume normalisation: clip to percentiles, then zero mean and unit variance (float32)."""
    array = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(array, [low_pct, high_pct])
    clipped = np.clip(array, lo, hi)
    std = clipped.std()
    return ((clipped - clipped.mean()) / (std if std > 1e-8 else 1.0)).astype(np.float32)


#: CT window of :func:`normalise_ct`, in Hounsfield units: air to dense bone.
CT_WINDOW_HU = (-1000.0, 2000.0)


def normalise_ct(array: np.ndarray) -> np.ndarray:
    """CT in Hounsfield units -> float32 ``HU / 1000`` clipped to :data:`CT_WINDOW_HU` (air -1, water 0,
    dense bone 1-2): a fixed map, so a tissue keeps its value in every scan."""
    lo, hi = CT_WINDOW_HU
    return (np.clip(np.asarray(array, dtype=np.float32), lo, hi) / 1000.0).astype(np.float32)


#: name -> per-volume intensity normalisation (``GridSpec.intensity``)
INTENSITY_NORMALISATIONS = {"zscore": normalise_intensity, "ct": normalise_ct}


def prepare_image(volume: Volume, spec: GridSpec, warn: bool = True) -> tuple[torch.Tensor, GridTransform]:
    """Normalise ``volume`` and resample it onto ``spec``; returns ``((D, H, W) float32, GridTransform)``.

    Warns (does not fail) when the image's spacing differs from the model's or the image
    does not fit in the model's field of view, since the result may then be less accurate.
    """
    # image spacing and extent along the model grid's axes, whatever the image's storage layout
    to_grid_axes = np.abs(spec.direction_matrix(volume).T @ volume.direction)
    spacing_on_grid = to_grid_axes @ volume.spacing
    if warn and not np.allclose(spacing_on_grid, spec.spacing, rtol=0.05):
        warnings.warn(
            f"image spacing {np.round(volume.spacing, 3).tolist()} mm differs from the model's "
            f"{list(spec.spacing)} mm; resampling",
            stacklevel=2,
        )
    extent = to_grid_axes @ (volume.size_ijk * volume.spacing)
    fov = np.array(spec.shape[::-1]) * np.asarray(spec.spacing)
    if warn and np.any(extent > fov + 1e-6):
        warnings.warn(
            f"image extent {np.round(extent, 1).tolist()} mm exceeds the model's field of view "
            f"{fov.tolist()} mm; the centre is used (crop the image around the organ for best results)",
            stacklevel=2,
        )
    normalised = volume.with_array(INTENSITY_NORMALISATIONS[spec.intensity](volume.array))
    transform = model_grid_transform(volume, spec)
    fill = float(normalised.array.min())
    return resample_to_grid(normalised, transform, "bilinear", fill), transform
