"""The labelmap task's distance image and its custom-gradient sampler.

From a binary mask: the unsigned distance ``U`` (mm) to the mask's boundary surface, the
surface midway between inside and outside voxel centres (where marching cubes puts it):

    ``sdf = edt(outside) - h/2`` outside, ``-(edt(inside) - h/2)`` inside, ``U = |sdf|``

(``scipy.ndimage.distance_transform_edt`` with ``sampling`` = the voxel spacing, ``h`` the
smallest spacing), and its gradient image ``G = grad U`` by Sobel filtering (the 3D Sobel
kernel is a central difference ``[-1, 0, 1]`` smoothed by ``[1, 2, 1]`` along the other two
axes, so ``dU/dx_a = sobel_a(U) / (32 spacing_a)``), rotated into LPS with the image's
direction. :func:`sample_distance` returns ``U`` trilinearly interpolated at LPS points and,
in the backward pass, ``G`` interpolated there (a ``torch.autograd.Function``), so the loss
``mean_v U(x_v)`` pulls vertices along the smooth Sobel gradient instead of the piecewise
constant gradient of the interpolated ``U``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from imagetomesh.core.transforms import index_to_grid_affine
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.nn.grid import transform_points


class DistanceField:
    """``U`` and ``G`` of a mask on a grid cropped around it (with ``margin_mm`` of outside).

    Attributes:
        u: ``(1, 1, D, H, W)`` float32 tensor, mm.
        g: ``(1, 3, D, H, W)`` float32 tensor, LPS components of ``grad U`` (mm/mm).
        lps_to_grid: ``(4, 4)`` float64 affine from LPS to ``grid_sample`` coordinates.
    """

    def __init__(self, mask: Volume, margin_mm: float | None = None, device="cpu") -> None:
        inside_full = np.asarray(mask.array) != 0
        slices = ndimage.find_objects(inside_full.astype(np.uint8))
        if not slices or slices[0] is None:
            raise InputError(
                "the labelmap is empty (no nonzero voxels); choose the right label or segment the structure first"
            )
        box = slices[0]
        extent_mm = np.array([s.stop - s.start for s in box][::-1]) * mask.spacing  # (i, j, k)
        if margin_mm is None:
            margin_mm = max(10.0, 0.5 * float(extent_mm.max()))
        margin = np.ceil(margin_mm / mask.spacing).astype(int)[::-1]  # (k, j, i) voxels
        start = np.array([s.start for s in box]) - margin
        stop = np.array([s.stop for s in box]) + margin
        inside = np.zeros(tuple(stop - start), dtype=bool)
        src_lo, src_hi = np.maximum(start, 0), np.minimum(stop, inside_full.shape)
        inside[tuple(slice(a - s, b - s) for a, b, s in zip(src_lo, src_hi, start))] = inside_full[
            tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
        ]
        sampling = mask.spacing[::-1]  # (k, j, i)
        half = 0.5 * float(mask.spacing.min())
        d_out = ndimage.distance_transform_edt(~inside, sampling=sampling)
        d_in = ndimage.distance_transform_edt(inside, sampling=sampling)
        u = np.where(inside, d_in - half, d_out - half).astype(np.float32)
        u = np.maximum(u, 0.0)
        grad_index = np.stack([ndimage.sobel(u, axis=2 - a) / (32.0 * mask.spacing[a]) for a in range(3)])  # (i, j, k)
        grad_lps = np.einsum("ab,bkji->akji", mask.direction, grad_index).astype(np.float32)

        start_ijk = start[::-1].astype(np.float64)
        index_to_lps = mask.index_to_lps.copy()
        index_to_lps[:3, 3] = mask.index_to_lps[:3, :3] @ start_ijk + mask.origin
        size_ijk = np.array(inside.shape[::-1], dtype=np.float64)
        self.lps_to_grid = index_to_grid_affine(size_ijk) @ np.linalg.inv(index_to_lps)
        self.index_to_lps = index_to_lps
        self.u = torch.from_numpy(u)[None, None].to(device)
        self.g = torch.from_numpy(np.ascontiguousarray(grad_lps))[None].to(device)
        self._affine = torch.as_tensor(self.lps_to_grid, dtype=torch.float32, device=device)

    def _grid(self, points: torch.Tensor) -> torch.Tensor:
        return transform_points(self._affine, points).reshape(1, 1, 1, -1, 3)

    def sample_u(self, points: torch.Tensor) -> torch.Tensor:
        """``(P,)`` trilinear ``U`` at ``(P, 3)`` LPS points (border values outside the grid)."""
        out = F.grid_sample(
            self.u.to(points.dtype), self._grid(points), mode="bilinear", padding_mode="border", align_corners=True
        )
        return out.reshape(-1)

    def sample_g(self, points: torch.Tensor) -> torch.Tensor:
        """``(P, 3)`` trilinear ``G`` (LPS) at ``(P, 3)`` LPS points (0 outside the grid)."""
        out = F.grid_sample(
            self.g.to(points.dtype), self._grid(points), mode="bilinear", padding_mode="zeros", align_corners=True
        )
        return out.reshape(3, -1).t()


class _SampleDistance(torch.autograd.Function):
    """``U(x)`` forward, ``G(x)`` backward."""

    @staticmethod
    def forward(ctx, points: torch.Tensor, field: DistanceField) -> torch.Tensor:
        ctx.field = field
        ctx.save_for_backward(points)
        return field.sample_u(points.detach())

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (points,) = ctx.saved_tensors
        return grad_output[:, None] * ctx.field.sample_g(points.detach()), None


def sample_distance(points: torch.Tensor, field: DistanceField) -> torch.Tensor:
    """``(P,)`` unsigned distance (mm) at ``(P, 3)`` LPS points; its gradient is the Sobel image ``G``."""
    return _SampleDistance.apply(points, field)
