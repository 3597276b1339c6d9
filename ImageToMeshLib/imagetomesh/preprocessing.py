"""Put an image on a model's grid and remember where it went (:class:`GridTransform`).

A model sees a fixed ``(D, H, W)`` grid at a fixed spacing, axis-aligned with the image's
own index axes and centred on the image centre (or on a given LPS point). The image is
resampled trilinearly (labels by nearest neighbour) with one ``affine_grid`` /
``grid_sample`` pass, so any input spacing, size or direction works. An image much finer than
the grid (a 0.5-1 mm CT for a 4 mm model) is first smoothed along the axes it is thinned
(:func:`antialias_sigmas`), so the grid reads the tissue around each point, not the one voxel's
noise there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from imagetomesh.core.transforms import GridTransform, centre_index, index_to_grid_affine
from imagetomesh.core.volume import Volume
from imagetomesh.nn.grid import grid_sample_index


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

    def array_axis(self, lps_axis: int, volume: Volume | None = None) -> int:
        """The ``(D, H, W)`` array axis of this grid nearest to the patient's LPS axis ``lps_axis``
        (0 left-right, 1 posterior-anterior, 2 inferior-superior); ``volume`` gives the direction of a
        grid that follows each image's own (``direction`` None)."""
        if self.direction is None and volume is None:
            raise ValueError("a grid without a direction follows each image's: give the volume")
        direction = self.direction_matrix(volume)
        return 2 - int(np.argmax(np.abs(direction[lps_axis])))

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
    return GridTransform.of_lattice(axes, origin, size_ijk)


#: Gaussian tails kept by :func:`antialias_sigmas`' filter, in standard deviations (scipy's default).
ANTIALIAS_TRUNCATE = 4.0


#: Voxels of the strided sample :func:`resolved_scale` measures an axis on (bounds its time and memory).
RESOLVED_SAMPLE_VOXELS = 1 << 22


def ramp_step_ratio(width: float, lag: int) -> float:
    """``S(lag) / S(1)`` of an edge that rises in ``width`` equal steps of one voxel (a straight ramp; a sharp edge is
    one step), ``S(n)`` the sum of the squared differences of voxels ``n`` apart across it: with ``m`` and ``M`` the
    smaller and larger of ``width`` and ``lag``, ``((m - 1) m (2m - 1) / 3 + (M - m + 1) m^2) / width``. It grows
    from ``lag`` (a sharp edge) to ``lag^2`` (a ramp much wider than the lag), and is taken for any real width."""
    m, big = min(width, lag), max(width, lag)
    return ((m - 1.0) * m * (2.0 * m - 1.0) / 3.0 + (big - m + 1.0) * m * m) / width


def resolved_scale(array: np.ndarray, axis: int, lag: int) -> float:
    """The width, in voxels along ``axis`` of ``array (D, H, W)``, over which the image's edges rise: the ramp width
    whose :func:`ramp_step_ratio` is the image's ``S(lag) / S(1)``, ``S(n)`` the sum of the squared differences of
    voxels ``n`` apart along ``axis``, clipped to ``[1, lag]``.

    A scan reconstructed at its spacing gives 1: its edges rise from one voxel to the next (ratio about ``lag``)
    and its noise is independent from voxel to voxel (ratio 1). An image interpolated from one ``g`` voxels coarser
    (a 3.9 mm scan resampled to 1 mm) rises in straight ramps ``g`` voxels wide between the coarse samples: about
    ``g``, up to ``lag``. A constant image gives ``lag``. Measured on every ``s``-th line across the other two axes,
    ``s`` chosen so that about :data:`RESOLVED_SAMPLE_VOXELS` voxels are read."""
    stride = max(1, int(np.sqrt(array.size / RESOLVED_SAMPLE_VOXELS)))
    lines = np.moveaxis(np.asarray(array), axis, -1)[::stride, ::stride]
    if lag <= 1 or lines.shape[-1] <= lag:
        return 1.0
    lines = lines.astype(np.float32)

    def squared_steps(n: int) -> float:
        step = lines[..., n:] - lines[..., :-n]
        return float(np.sum(np.square(step, dtype=np.float64)))

    one = squared_steps(1)
    if one == 0.0:
        return float(lag)
    ratio = squared_steps(lag) / one
    if ratio <= ramp_step_ratio(1.0, lag):
        return 1.0
    if ratio >= ramp_step_ratio(float(lag), lag):
        return float(lag)
    low, high = 1.0, float(lag)  # the ratio grows with the width: bisection
    for _ in range(40):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if ramp_step_ratio(middle, lag) < ratio else (low, middle)
    return 0.5 * (low + high)


def antialias_sigmas(volume: Volume, target: GridTransform) -> np.ndarray:
    """``(3,)`` standard deviations, in ``volume``'s voxels along its array axes ``(k, j, i)``, of the Gaussian that
    smooths ``volume`` before ``target``'s grid samples it: ``sqrt((f^2 - r^2) / 12)`` where the grid steps ``f > 1``
    image voxels along that axis (the step of the grid axis most nearly along it; exact for grids whose axes are
    the image's up to order and sign) and the image's edges rise over ``r`` voxels (:func:`resolved_scale` at the
    lag ``round(f)``): the spread that, added to what the image already has (a box ``r`` voxels wide, variance
    ``r^2 / 12``; ``r = 1`` for a scan reconstructed at its spacing, and for any image whose voxels carry their own
    noise), gives the spread of a voxel ``f`` times as wide, as a scan reconstructed at the grid's spacing has. An
    image already as smooth as the grid (one resampled from a scan at about the grid's spacing) is thus not smoothed
    again. 0 where the grid does not thin the image, and where the filter would be one voxel wide (a spread below
    1/8 voxel: a kernel of radius 0 at :data:`ANTIALIAS_TRUNCATE`), so an image near the grid's spacing is read as
    it is.
    Trilinear reads of an image thinned by ``f`` see one voxel in about ``f`` per axis: without this the 4 mm
    grid of a 1 mm CT reads one voxel's noise (about 4x that of a 4 mm reconstruction) and aliases thin
    structures, where the scans a model was trained on average their voxels' tissue."""
    target_index_to_lps = target.index_to_lps
    step_in_image = volume.lps_to_index[:3, :3] @ target_index_to_lps[:3, :3]  # column c: one grid step along c
    thinning = np.abs(step_in_image).max(axis=1)  # per image axis (i, j, k)
    sigma = np.sqrt(np.maximum(thinning**2 - 1.0, 0.0) / 12.0)
    for a in np.flatnonzero(_filter_radius(sigma) >= 1):  # image axes (i, j, k) the grid thins
        resolved = resolved_scale(volume.array, 2 - a, int(round(thinning[a])))
        sigma[a] = np.sqrt(max(thinning[a] ** 2 - resolved**2, 0.0) / 12.0)
    sigma[_filter_radius(sigma) < 1] = 0.0  # scipy's kernel radius 0: the identity
    return sigma[::-1].copy()


def _filter_radius(sigma: np.ndarray) -> np.ndarray:
    """The radius, in voxels, of scipy's Gaussian kernel of standard deviation ``sigma`` at :data:`ANTIALIAS_TRUNCATE`."""
    return np.floor(ANTIALIAS_TRUNCATE * np.asarray(sigma) + 0.5)


def resample_to_grid(
    volume: Volume,
    target: GridTransform,
    mode: str = "bilinear",
    fill: float = 0.0,
    antialias: bool | np.ndarray = False,
    overwrite: bool = False,
) -> torch.Tensor:
    """Sample ``volume`` on ``target``'s grid; returns float32 ``(D, H, W)``.

    ``mode`` is ``"bilinear"`` (trilinear in 3D) or ``"nearest"``; points outside the image get ``fill``.
    Only the part of the image the grid covers is read (:func:`_footprint`): a small grid on a huge
    image costs the grid's memory, not the image's. ``antialias`` (images, not labels) first smooths that
    part along the axes the grid thins (True: by :func:`antialias_sigmas` of ``volume``; or by the given ``(k, j,
    i)`` spreads, those of the image ``volume`` was normalised or cut from; nothing where the grid's spacing is the
    image's), equal to smoothing the whole image first: the part is grown by the filter's reach. That smoothing
    works on a float32 copy of the part, or (``overwrite``: the caller's own scratch array, e.g. a normalised
    copy) on ``volume``'s float32 array itself, which it then changes: one image's memory less.
    """
    if isinstance(antialias, np.ndarray):
        sigma = antialias
    else:
        sigma = antialias_sigmas(volume, target) if antialias else np.zeros(3)
    volume = _footprint(volume, target, _reach(sigma))
    if volume is None:  # the grid lies wholly outside the image
        return torch.full(tuple(target.shape), float(fill), dtype=torch.float32)
    # target grid -> LPS -> source index -> source grid, as one affine.
    theta = index_to_grid_affine(volume.size_ijk) @ volume.lps_to_index @ target.grid_to_lps
    theta_t = torch.tensor(theta[:3], dtype=torch.float32)[None]
    d, h, w = target.shape
    sample_at = F.affine_grid(theta_t, [1, 1, d, h, w], align_corners=True)
    array = np.asarray(volume.array, dtype=np.float32)
    if np.any(sigma > 0):
        # a float32 input is not copied above; the bounds check is constant-time (np.shares_memory's exact one need
        # not be, on a strided crop) and copies when unsure
        if not overwrite and np.may_share_memory(array, volume.array):
            array = array.copy()
        ndimage.gaussian_filter(array, sigma, output=array, mode="nearest", truncate=ANTIALIAS_TRUNCATE)
    source = torch.as_tensor(array)[None, None]
    values = F.grid_sample(source, sample_at, mode=mode, align_corners=True, padding_mode="border")
    return torch.where(_inside(sample_at, source.shape[2:]), values, torch.full_like(values, fill))[0, 0]


def _inside(sample_at: torch.Tensor, shape) -> torch.Tensor:
    """``(1, 1, d, h, w)`` bool: whether each ``grid_sample`` point ``sample_at (1, d, h, w, 3)`` has its nearest
    voxel inside a source of ``shape (D, H, W)``: what nearest sampling of a volume of ones with zero padding
    gives (the same float32 arithmetic as ``grid_sample``: :func:`~imagetomesh.nn.grid.grid_sample_index` rounded half to even),
    without that volume of ones (the source's size in memory)."""
    inside = None
    for axis, n in enumerate(tuple(shape)[::-1]):  # sample_at's last dimension is (x, y, z) = (W, H, D)
        index = torch.round(grid_sample_index(sample_at[..., axis], n))
        ok = (index >= 0) & (index <= n - 1)
        inside = ok if inside is None else inside & ok
    return inside[:, None]


def resample_volume(volume: Volume, spacing, size_ijk, mode: str = "bilinear", fill: float = 0.0) -> Volume:
    """``volume`` on a new lattice of ``size_ijk`` (W, H, D) voxels of ``spacing`` mm along its own index
    axes, the first voxel's outer corner kept in place (same direction; the same field of view when
    ``size * spacing`` equals the old extent), sampled with :func:`resample_to_grid` (float32 values)."""
    spacing = np.asarray(spacing, dtype=np.float64)
    size = np.asarray(size_ijk, dtype=np.int64)
    origin = volume.origin - 0.5 * volume.direction @ (volume.spacing - spacing)
    grid = GridTransform.of_lattice(volume.direction * spacing[None, :], origin, size)
    return Volume(resample_to_grid(volume, grid, mode, fill).numpy(), spacing, origin, volume.direction)


def _reach(sigma: np.ndarray) -> np.ndarray:
    """``(i, j, k)`` voxels a Gaussian of :func:`antialias_sigmas`' ``sigma (k, j, i)`` reads beyond a voxel."""
    return np.ceil(ANTIALIAS_TRUNCATE * np.asarray(sigma)[::-1]).astype(np.int64)


def _footprint(volume: Volume, target: GridTransform, reach=(0, 0, 0)) -> Volume | None:
    """The part of ``volume`` that ``target``'s grid samples: the box around the grid's corners in the
    image's index space, grown by two voxels (every trilinear neighbour is inside) and ``reach`` ``(i, j, k)``
    more (a filter's half-width) and clipped to the image; ``volume`` itself when that box is most of it;
    None when the grid misses the image."""
    from imagetomesh.core.cropping import crop_to_box

    corners = np.array([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    ijk = (volume.lps_to_index @ target.grid_to_lps @ corners.T).T[:, :3]
    size = np.asarray(volume.size_ijk)
    if np.any(ijk.max(0) < -1.0) or np.any(ijk.min(0) > size):
        return None
    grow = 2 + np.asarray(reach, dtype=np.int64)
    lo = np.clip(np.floor(ijk.min(0)).astype(np.int64) - grow, 0, size - 1)
    hi = np.clip(np.ceil(ijk.max(0)).astype(np.int64) + grow, 0, size - 1)
    if np.prod(hi - lo + 1) > 0.5 * np.prod(size):
        return volume
    return crop_to_box(volume, tuple(slice(int(lo[a]), int(hi[a]) + 1) for a in (2, 1, 0)))


#: Percentiles of :func:`normalise_intensity`'s clipping.
ZSCORE_PERCENTILES = (0.5, 99.5)
#: Voxels handled at a time by the whole-image passes of :func:`intensity_map` (bounds their temporaries).
CHUNK_VOXELS = 1 << 24


def normalise_intensity(
    array: np.ndarray, low_pct: float = ZSCORE_PERCENTILES[0], high_pct: float = ZSCORE_PERCENTILES[1]
) -> np.ndarray:
    """Per-volume normalisation: clip to percentiles, then zero mean and unit variance (float32).
    The arithmetic is float64 (the percentiles are), in place on one float64 copy of ``array``."""
    array = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(array, [low_pct, high_pct])
    clipped = np.clip(array, lo, hi)
    std = clipped.std()
    clipped -= clipped.mean()
    clipped /= std if std > 1e-8 else 1.0
    return clipped.astype(np.float32)


#: CT window of :func:`normalise_ct`, in Hounsfield units: air to dense bone.
CT_WINDOW_HU = (-1000.0, 2000.0)


def normalise_ct(array: np.ndarray) -> np.ndarray:
    """CT in Hounsfield units -> float32 ``HU / 1000`` clipped to :data:`CT_WINDOW_HU` (air -1, water 0,
    dense bone 1-2): a fixed map, so a tissue keeps its value in every scan. One float32 copy of ``array``."""
    lo, hi = CT_WINDOW_HU
    out = np.array(array, dtype=np.float32, copy=True)
    np.clip(out, lo, hi, out=out)
    out /= 1000.0
    return out


#: name -> per-volume intensity normalisation (``GridSpec.intensity``)
INTENSITY_NORMALISATIONS = {"zscore": normalise_intensity, "ct": normalise_ct}


@dataclass(frozen=True)
class IntensityMap:
    """A per-voxel normalisation ``(clip(v, low, high) - shift) / scale`` (float64 arithmetic, float32 out): what
    :data:`INTENSITY_NORMALISATIONS` does to a whole volume, with its statistics fixed, so it can be
    applied to a part of the volume (:func:`prepare_image` on an image much larger than the grid)."""

    low: float
    high: float
    shift: float
    scale: float

    def __call__(self, array: np.ndarray) -> np.ndarray:
        out = np.clip(np.asarray(array, dtype=np.float32).astype(np.float64), self.low, self.high)
        out -= self.shift
        out /= self.scale
        return out.astype(np.float32)


def _slabs(array: np.ndarray):
    """``array`` in slabs along its first axis of about :data:`CHUNK_VOXELS` voxels."""
    step = max(1, CHUNK_VOXELS // max(1, int(np.prod(array.shape[1:]))))
    for start in range(0, array.shape[0], step):
        yield array[start : start + step]


def intensity_map(array: np.ndarray, intensity: str) -> IntensityMap:
    """The :class:`IntensityMap` of normalisation ``intensity`` (``"zscore"`` or ``"ct"``) for a whole ``array``.

    ``"zscore"``: the percentiles of :func:`normalise_intensity` (one copy of ``array`` in its own dtype,
    for the partial sort), then the clipped values' mean and standard deviation accumulated in float64 a
    slab at a time: no float copies of the whole volume. Equal to :func:`normalise_intensity` up to the
    rounding of the mean and standard deviation.
    """
    if intensity == "ct":
        lo, hi = CT_WINDOW_HU
        return IntensityMap(lo, hi, 0.0, 1000.0)
    if intensity != "zscore":
        raise ValueError(f"unknown intensity normalisation {intensity!r}")
    lo, hi = (float(v) for v in np.percentile(array, ZSCORE_PERCENTILES))
    total = total_sq = 0.0
    for slab in _slabs(array):  # sums of (clipped - lo) >= 0: no cancellation in the variance
        offset = np.clip(np.asarray(slab, dtype=np.float32).astype(np.float64), lo, hi) - lo
        total += float(offset.sum())
        total_sq += float(np.square(offset).sum())
    count = max(1, array.size)
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    return IntensityMap(lo, hi, lo + mean, std if std > 1e-8 else 1.0)


def prepare_image(
    volume: Volume, spec: GridSpec, warn: bool = True, transform: GridTransform | None = None
) -> tuple[torch.Tensor, GridTransform]:
    """Normalise ``volume`` and resample it onto ``spec``; returns ``((D, H, W) float32, GridTransform)``.
    The grid is ``spec``'s centred on the image (:func:`model_grid_transform`), or ``transform`` (its own shape:
    a whole-scan grid, :func:`imagetomesh.scan.scan_grid`).

    Warns (does not fail) when the image's spacing differs from the model's or the image
    does not fit in the model's field of view, since the result may then be less accurate.

    The intensities are normalised over the whole image (:data:`INTENSITY_NORMALISATIONS`). When the
    grid covers only a small part of the image (a patch model on a whole head), only that part is
    normalised and resampled, with the whole image's statistics (:func:`intensity_map`): memory of
    about one copy of the image (for the percentiles), not several float32 copies.
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
    if transform is None:
        transform = model_grid_transform(volume, spec)
    sigma = antialias_sigmas(volume, transform)  # measured on the whole image as stored
    part = _footprint(volume, transform, _reach(sigma))
    if part is None or part is volume:  # the grid covers most of the image (or none of it): normalise it whole
        normalised = volume.with_array(INTENSITY_NORMALISATIONS[spec.intensity](volume.array))
        fill = float(normalised.array.min())
        return resample_to_grid(normalised, transform, "bilinear", fill, antialias=sigma, overwrite=True), transform
    # a grid much smaller than the image: the whole image's statistics, applied to the grid's footprint only
    mapping = intensity_map(volume.array, spec.intensity)
    fill = float(mapping(np.asarray([volume.array.min()]))[0])
    return resample_to_grid(
        part.with_array(mapping(part.array)), transform, "bilinear", fill, antialias=sigma, overwrite=True
    ), transform
