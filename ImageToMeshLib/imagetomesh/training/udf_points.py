"""Training points and their exact unsigned distances for NUDF, from a binary label on a model grid.

Frames: points are returned in model grid coordinates ((x, y, z) in [-1, 1]); distances in the
*isotropic grid frame* (grid coordinates times :func:`~imagetomesh.nn.grid.isotropic_scale`,
1 unit = half the longest grid extent), the normalised units of :mod:`imagetomesh.models.nudf`.

Recipe (Juhl et al. 2022, after NDF):

1. the label's surface: :func:`~imagetomesh.geometry.isosurface.labelmap_to_mesh` (the library's
   one voxels -> surface path, smoothed as the U-Net baseline is) built directly in the isotropic frame;
2. surface samples (area-uniform), re-drawn with probability ``~ diameter**-thin_power`` where
   ``diameter`` is the local shape diameter: the smaller of the thickness inside (twice the largest
   inside distance-transform value met along the inward normal) and the gap outside (the same
   outside, along the outward normal) -- so thin parts and almost-touching surfaces get more points;
3. each sample pushed along its normal by ``N(0, sigma)``, for a fine and a coarse ``sigma``,
   plus uniform points in the grid box;
4. exact distance from every point to the surface triangles
   (:func:`~imagetomesh.metrics.point_to_mesh_distance`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.volume import Volume
from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING, labelmap_to_mesh
from imagetomesh.geometry.sampling import sample_points_on_mesh
from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size


@dataclass
class UDFPointConfig:
    """``count`` points per case: ``near`` and ``mid`` fractions pushed off the surface by
    ``N(0, near_sigma)`` / ``N(0, mid_sigma)`` (normalised units; 0.01 = 0.275 mm on the
    hippocampus grid), the rest uniform in the grid box. ``thin_power`` 0 samples the surface
    uniformly; ``min_diameter`` (normalised units) caps the thin-part weight."""

    count: int = 16000
    near: float = 0.45
    mid: float = 0.40
    near_sigma: float = 0.01
    mid_sigma: float = 0.05
    thin_power: float = 1.0
    min_diameter: float = 0.05
    smoothing: float = DEFAULT_SMOOTHING

    def to_dict(self) -> dict:
        return asdict(self)


def label_surface(label: torch.Tensor, smoothing: float = DEFAULT_SMOOTHING) -> Mesh:
    """The closed surface of a binary ``(D, H, W)`` label in the isotropic grid frame."""
    scale = isotropic_scale(label.shape).numpy().astype(np.float64)
    voxel = isotropic_voxel_size(label.shape)
    volume = Volume(label.cpu().numpy().astype(np.uint8), np.full(3, voxel), -scale, np.eye(3))
    return labelmap_to_mesh(volume, smoothing=smoothing)


def surface_samples(
    label: torch.Tensor, count: int, generator: torch.Generator, smoothing: float = DEFAULT_SMOOTHING
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` area-uniform samples of a binary ``(D, H, W)`` label's smoothed surface
    (:func:`label_surface`): ``(points (count, 3) grid coordinates, normals (count, 3))``, the
    normals unit and outward in the isotropic frame."""
    surface = label_surface(label, smoothing)
    points, normals = sample_points_on_mesh(
        torch.from_numpy(surface.vertices),
        torch.from_numpy(surface.faces),
        count,
        return_normals=True,
        generator=generator,
    )
    return points / isotropic_scale(label.shape), normals


def _probe_max(
    field: torch.Tensor, start: torch.Tensor, direction: torch.Tensor, scale: torch.Tensor, steps: torch.Tensor
) -> torch.Tensor:
    """``max_t field(start + t * direction)`` over ``steps`` (isotropic frame); ``field (D, H, W)``."""
    probes = start[:, None, :] + steps[None, :, None] * direction[:, None, :]  # (P, T, 3)
    grid = (probes / scale).reshape(1, -1, 1, 1, 3)
    values = F.grid_sample(field[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return values.reshape(probes.shape[:2]).max(1).values


def shape_diameter(
    label: torch.Tensor, points: torch.Tensor, normals: torch.Tensor, max_voxels: int = 8
) -> torch.Tensor:
    """Local shape diameter ``(P,)`` (normalised units) at surface ``points (P, 3)`` with outward
    ``normals (P, 3)`` (isotropic frame): ``min(thickness inside, gap outside)``, each twice the
    largest distance-transform value met within ``max_voxels`` voxels along the normal."""
    from scipy.ndimage import distance_transform_edt

    inside = label.cpu().numpy() > 0
    voxel = isotropic_voxel_size(label.shape)
    # distance from a voxel centre to the boundary, which lies half a voxel before the nearest other voxel
    edt_in = (torch.from_numpy(distance_transform_edt(inside).astype(np.float32)) - 0.5).clamp(min=0) * voxel
    edt_out = (torch.from_numpy(distance_transform_edt(~inside).astype(np.float32)) - 0.5).clamp(min=0) * voxel
    scale = isotropic_scale(label.shape)
    steps = torch.arange(1, 2 * max_voxels + 1, dtype=torch.float32) * (voxel / 2)
    thickness = 2 * _probe_max(edt_in, points, -normals, scale, steps)
    gap = 2 * _probe_max(edt_out, points, normals, scale, steps)
    return torch.minimum(thickness, gap)


def sample_udf_points(label: torch.Tensor, config: UDFPointConfig, generator: torch.Generator):
    """``(points (N, 3) grid coordinates, distances (N,) normalised units)`` for one binary label ``(D, H, W)``."""
    from imagetomesh.metrics import point_to_mesh_distance

    surface = label_surface(label, config.smoothing)
    verts = torch.from_numpy(surface.vertices)
    faces = torch.from_numpy(surface.faces)
    scale = isotropic_scale(label.shape)
    n_near = int(round(config.count * config.near))
    n_mid = int(round(config.count * config.mid))
    n_uniform = config.count - n_near - n_mid
    n_surface = n_near + n_mid
    candidates, normals = sample_points_on_mesh(verts, faces, 4 * n_surface, return_normals=True, generator=generator)
    if config.thin_power > 0:
        diameter = shape_diameter(label, candidates, normals).clamp(min=config.min_diameter)
        weights = diameter.double() ** (-config.thin_power)
    else:
        weights = torch.ones(len(candidates), dtype=torch.float64)
    pick = torch.multinomial(weights, n_surface, replacement=True, generator=generator)
    base, normal = candidates[pick], normals[pick]
    sigma = torch.cat([torch.full((n_near,), config.near_sigma), torch.full((n_mid,), config.mid_sigma)])
    pushed = base + normal * (sigma * torch.randn(n_surface, generator=generator))[:, None]
    uniform = (torch.rand(n_uniform, 3, generator=generator) * 2 - 1) * scale
    points_iso = torch.cat([pushed, uniform])
    distances = point_to_mesh_distance(points_iso.numpy(), surface)
    return points_iso / scale, torch.from_numpy(distances.astype(np.float32))
