"""`Volume`: a voxel array with its physical geometry in LPS millimetres.

Conventions (fixed for the whole library):

- ``array`` is indexed ``array[k, j, i]`` — shape ``(D, H, W)`` — exactly as SimpleITK's
  ``GetArrayFromImage`` returns it and as ``torch.nn.functional.grid_sample`` reads a
  ``(N, C, D, H, W)`` tensor.
- A continuous voxel *index* is the vector ``(i, j, k)`` = (x, y, z) order, ``i`` along W.
- Physical point ``p = origin + direction @ (spacing * ijk)`` in LPS millimetres
  (ITK/DICOM convention). ``direction`` columns are the world directions of the i, j, k axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from imagetomesh.errors import InputError


@dataclass(frozen=True)
class Volume:
    """A 3D image.

    Attributes:
        array: ``(D, H, W)`` voxel values, any numeric dtype.
        spacing: ``(3,)`` voxel size in mm along (i, j, k).
        origin: ``(3,)`` LPS position in mm of voxel (0, 0, 0)'s centre.
        direction: ``(3, 3)`` orthonormal matrix; column c is the LPS direction of index axis c.
    """

    array: np.ndarray
    spacing: np.ndarray = field(default_factory=lambda: np.ones(3))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise InputError(
                f"expected a 3D image but got {array.ndim} dimension(s) of shape {array.shape}; "
                "give a single 3D volume (split 4D series and stack 2D slices first)"
            )
        spacing = np.asarray(self.spacing, dtype=np.float64).reshape(3)
        origin = np.asarray(self.origin, dtype=np.float64).reshape(3)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
            raise InputError(f"voxel spacing must be positive and finite, got {spacing.tolist()}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise InputError("the image direction matrix is not orthonormal; fix the image header")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # --- geometry -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(D, H, W)``."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def size_ijk(self) -> np.ndarray:
        """Number of voxels along (i, j, k) = (W, H, D), int ``(3,)``."""
        return np.array(self.array.shape[::-1], dtype=np.int64)

    @property
    def index_to_lps(self) -> np.ndarray:
        """``(4, 4)`` homogeneous affine mapping (i, j, k, 1) to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * self.spacing[None, :]
        affine[:3, 3] = self.origin
        return affine

    @property
    def lps_to_index(self) -> np.ndarray:
        """``(4, 4)`` inverse of :attr:`index_to_lps` (exact for orthonormal directions)."""
        inverse = np.eye(4)
        rotation_inv = (self.direction / self.spacing[None, :]).T  # diag(1/s) @ D^T
        inverse[:3, :3] = rotation_inv
        inverse[:3, 3] = -rotation_inv @ self.origin
        return inverse

    def with_array(self, array: np.ndarray) -> Volume:
        """The same geometry holding another ``(D, H, W)`` array."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} differs from volume shape {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    def same_geometry(self, other: Volume, atol: float = 1e-4) -> bool:
        """True when both volumes share shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def bounds_lps(self) -> np.ndarray:
        """``(2, 3)`` min and max LPS corner of the voxel-centre box."""
        corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
        corners = corners * (self.size_ijk - 1)
        pts = transform_points(self.index_to_lps, corners)
        return np.stack([pts.min(0), pts.max(0)])

    def describe(self) -> str:
        """A short human-readable summary."""
        return (
            f"shape (D,H,W)={self.shape} spacing={np.round(self.spacing, 4).tolist()} mm "
            f"origin={np.round(self.origin, 3).tolist()} dtype={self.array.dtype}"
        )


def transform_points(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``(4, 4)`` homogeneous affine to ``(N, 3)`` points; returns float64 ``(N, 3)``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ affine[:3, :3].T + affine[:3, 3]
