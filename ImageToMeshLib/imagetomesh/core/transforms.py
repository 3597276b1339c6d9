"""The one set of coordinate maps: voxel index <-> LPS mm <-> RAS mm <-> model grid.

Model grid coordinates are normalised to ``[-1, 1]`` per axis and ordered (x, y, z) =
(W, H, D) = (i, j, k), exactly as ``torch.nn.functional.grid_sample`` reads them with
``align_corners=True`` (the only setting this library uses): grid ``-1`` is the centre of
voxel 0 and ``+1`` the centre of the last voxel along that axis.

Every model, sampler and splatter converts through these helpers; nothing else in the
library writes the formula again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imagetomesh.core.volume import Volume, transform_points

#: Flips L->R and P->A; its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _half_extent(size_ijk) -> np.ndarray:
    size = np.asarray(size_ijk, dtype=np.float64).reshape(3)
    return np.maximum(size - 1.0, 1.0) / 2.0  # a 1-voxel axis maps index 0 to grid -1


def index_to_grid_affine(size_ijk) -> np.ndarray:
    """``(4, 4)`` affine taking continuous (i, j, k) to grid (x, y, z) for a grid of ``size_ijk`` = (W, H, D)."""
    half = _half_extent(size_ijk)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(1.0 / half)
    affine[:3, 3] = -1.0
    return affine


def grid_to_index_affine(size_ijk) -> np.ndarray:
    """Inverse of :func:`index_to_grid_affine`."""
    half = _half_extent(size_ijk)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(half)
    affine[:3, 3] = half
    return affine


def centre_index(size_ijk) -> np.ndarray:
    """``(3,)`` continuous index (i, j, k) of the centre of the voxel-centre box of a grid or image of
    ``size_ijk`` = (W, H, D): ``(size - 1) / 2`` (grid 0 when every axis has at least 2 voxels)."""
    return (np.asarray(size_ijk) - 1) / 2.0


def index_to_grid(ijk: np.ndarray, size_ijk) -> np.ndarray:
    """``(N, 3)`` continuous voxel indices (i, j, k) -> ``(N, 3)`` grid coordinates (x, y, z)."""
    return transform_points(index_to_grid_affine(size_ijk), ijk)


def grid_to_index(grid: np.ndarray, size_ijk) -> np.ndarray:
    """``(N, 3)`` grid coordinates (x, y, z) -> ``(N, 3)`` continuous voxel indices (i, j, k)."""
    return transform_points(grid_to_index_affine(size_ijk), grid)


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """``(N, 3)`` LPS mm -> RAS mm (negate x and y)."""
    return transform_points(LPS_TO_RAS, points)


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """``(N, 3)`` RAS mm -> LPS mm (negate x and y)."""
    return transform_points(LPS_TO_RAS, points)


def grid_volume(array: np.ndarray, transform: GridTransform) -> Volume:
    """A ``(D, H, W)`` array on a model grid as a :class:`Volume` with that grid's LPS geometry
    (with ``GridTransform(np.eye(4), shape)``: a volume whose "LPS" is grid coordinates)."""
    index_to_lps = transform.index_to_lps
    spacing = np.linalg.norm(index_to_lps[:3, :3], axis=0)
    return Volume(array, spacing, index_to_lps[:3, 3], index_to_lps[:3, :3] / spacing[None, :])


@dataclass(frozen=True)
class GridTransform:
    """Where a model's normalised grid lies in LPS space.

    Preprocessing records one of these when it resamples, crops or pads an image onto a
    model's grid; the model predicts in grid coordinates and this maps the result back.

    Attributes:
        grid_to_lps: ``(4, 4)`` affine from grid (x, y, z) in [-1, 1] to LPS mm.
        shape: ``(D, H, W)`` of the grid the model sees.
    """

    grid_to_lps: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def of_volume(cls, volume: Volume) -> GridTransform:
        """The grid spanning ``volume``'s voxel centres."""
        affine = volume.index_to_lps @ grid_to_index_affine(volume.size_ijk)
        return cls(affine, volume.shape)

    @classmethod
    def of_lattice(cls, axes: np.ndarray, origin: np.ndarray, size_ijk) -> GridTransform:
        """The grid of ``size_ijk`` (W, H, D) voxels whose voxel ``(i, j, k)`` lies at ``origin + axes @ (i, j, k)``
        LPS mm: ``axes (3, 3)`` columns the LPS step of one voxel along i, j, k; ``origin (3,)`` voxel (0, 0, 0)."""
        size_ijk = np.asarray(size_ijk, dtype=np.float64)
        index_to_lps = np.eye(4)
        index_to_lps[:3, :3] = axes
        index_to_lps[:3, 3] = origin
        return cls(index_to_lps @ grid_to_index_affine(size_ijk), tuple(int(n) for n in size_ijk[::-1]))

    @property
    def lps_to_grid(self) -> np.ndarray:
        """``(4, 4)`` inverse affine, LPS mm -> grid."""
        return np.linalg.inv(self.grid_to_lps)

    def to_lps(self, grid_points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` grid -> ``(N, 3)`` LPS mm (float64)."""
        return transform_points(self.grid_to_lps, grid_points)

    def to_grid(self, lps_points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` LPS mm -> ``(N, 3)`` grid (float64)."""
        return transform_points(self.lps_to_grid, lps_points)

    @property
    def index_to_lps(self) -> np.ndarray:
        """``(4, 4)`` affine from the grid's voxel indices (i, j, k) = (W, H, D) to LPS mm."""
        return self.grid_to_lps @ index_to_grid_affine(np.asarray(self.shape[::-1], dtype=np.float64))

    @property
    def flips_orientation(self) -> bool:
        """True when the map is a reflection (its determinant is negative).

        A triangle wound counter-clockwise in grid space winds clockwise in LPS then,
        so the faces must be flipped to stay outward-facing.
        """
        return bool(np.linalg.det(self.grid_to_lps[:3, :3]) < 0)
