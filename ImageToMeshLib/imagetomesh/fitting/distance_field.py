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

from imagetomesh.core.transforms import centre_index, index_to_grid_affine
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.nn.grid import transform_points

#: Most voxels of a distance field (box around the mask plus its margin): a larger box is computed on a
#: coarser lattice (whole multiples of the mask's voxels, about isotropic; :func:`coarsen_mask`). About
#: 50 bytes a voxel while it is built: 2**23 voxels (203^3) keep it near 400 MB; a hippocampus at 1 mm
#: (about 80^3) or a kidney at 0.8 mm (about 190^3) stays at its own resolution.
MAX_FIELD_VOXELS = 1 << 23


def coarsen_mask(mask: Volume, factors) -> Volume:
    """``mask`` (nonzero = inside) on a lattice ``factors`` ``(i, j, k)`` times coarser: each coarse voxel is the
    block of ``factors`` fine voxels it covers (the grid padded with outside voxels to whole blocks), inside
    when at least half of them are; its centre is the block's centre. uint8 0/1."""
    f = np.asarray(factors, dtype=np.int64)[::-1]  # (k, j, i)
    array = np.asarray(mask.array) != 0
    blocks = -(-np.asarray(array.shape) // f)
    padded = np.zeros(tuple(blocks * f), dtype=bool)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    counts = padded.reshape(blocks[0], f[0], blocks[1], f[1], blocks[2], f[2]).sum(axis=(1, 3, 5), dtype=np.int32)
    fine_spacing = np.asarray(mask.spacing, dtype=np.float64)
    spacing = fine_spacing * f[::-1]
    origin = mask.origin + mask.direction @ (fine_spacing * centre_index(f[::-1]))  # a block's centre
    inside = (2 * counts >= int(np.prod(f))).astype(np.uint8)
    return Volume(inside, spacing, origin, mask.direction)


class DistanceField:
    """``U`` and ``G`` of a mask on a grid cropped around it (with ``margin_mm`` of outside).

    When that grid would have more than ``max_voxels`` voxels (a big organ in a fine image), the mask is
    first put on a coarser lattice (:func:`coarsen_mask`, spacing about ``(box volume / max_voxels)^(1/3)``
    mm), so the memory of the field is bounded whatever the image.

    Attributes:
        u: ``(1, 1, D, H, W)`` float32 tensor, mm.
        g: ``(1, 3, D, H, W)`` float32 tensor, LPS components of ``grad U`` (mm/mm).
        lps_to_grid: ``(4, 4)`` float64 affine from LPS to ``grid_sample`` coordinates.
        coarsening: ``(3,)`` whole factors ``(i, j, k)`` of the field's voxels over the mask's (1: none).
    """

    def __init__(
        self, mask: Volume, margin_mm: float | None = None, device="cpu", max_voxels: int = MAX_FIELD_VOXELS
    ) -> None:
        from imagetomesh.core.cropping import bounding_box, crop_to_box

        box = bounding_box(np.asarray(mask.array))
        if box is None:
            raise InputError(
                "the labelmap is empty (no nonzero voxels); choose the right label or segment the structure first"
            )
        extent_mm = np.array([s.stop - s.start for s in box][::-1]) * mask.spacing  # (i, j, k)
        if margin_mm is None:
            margin_mm = max(10.0, 0.5 * float(extent_mm.max()))
        mask = crop_to_box(mask, box)  # only the object's box: the rest is outside
        field_mm = extent_mm + 2.0 * margin_mm
        self.coarsening = np.ones(3, dtype=np.int64)
        if np.prod(np.ceil(field_mm / mask.spacing)) > max_voxels:
            target = float(np.cbrt(np.prod(field_mm) / max_voxels))
            self.coarsening = np.maximum(1, np.ceil(target / mask.spacing - 1e-9)).astype(np.int64)
            mask = coarsen_mask(mask, self.coarsening)
        inside_box = np.asarray(mask.array) != 0
        margin = np.ceil(margin_mm / mask.spacing).astype(int)[::-1]  # (k, j, i) voxels
        start = -margin
        stop = np.asarray(inside_box.shape) + margin
        inside = np.zeros(tuple(stop - start), dtype=bool)
        inside[tuple(slice(m, m + n) for m, n in zip(margin, inside_box.shape))] = inside_box
        del inside_box
        sampling = mask.spacing[::-1]  # (k, j, i)
        half = 0.5 * float(mask.spacing.min())
        distance = ndimage.distance_transform_edt(~inside, sampling=sampling)  # outside: to the inside voxels
        np.copyto(distance, ndimage.distance_transform_edt(inside, sampling=sampling), where=inside)
        del inside
        distance -= half
        u = np.maximum(distance.astype(np.float32), 0.0)
        del distance
        grad_index = [ndimage.sobel(u, axis=2 - a) / (32.0 * mask.spacing[a]) for a in range(3)]  # (i, j, k)
        grad_lps = np.empty((3, *u.shape), dtype=np.float32)
        for b in range(3):  # rotated into LPS one component at a time (float64 sums, float32 kept)
            component = mask.direction[b, 0] * grad_index[0].astype(np.float64)
            component += mask.direction[b, 1] * grad_index[1]
            component += mask.direction[b, 2] * grad_index[2]
            grad_lps[b] = component
        del grad_index, component

        start_ijk = start[::-1].astype(np.float64)
        index_to_lps = mask.index_to_lps.copy()
        index_to_lps[:3, 3] = mask.index_to_lps[:3, :3] @ start_ijk + mask.origin
        size_ijk = np.array(u.shape[::-1], dtype=np.float64)
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
