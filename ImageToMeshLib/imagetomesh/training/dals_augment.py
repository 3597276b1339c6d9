"""Augmentation of DALS training shapes (normalised frame): random rotations of the template and a
smooth non-rigid deformation of the target points in the spirit of PointWOLF (Kim et al., 2021).

A few anchor points (farthest-point sampled), a random local rotation / anisotropic scaling /
translation about each, blended per point with Gaussian kernel weights
``w_j(p) = exp(-|p - a_j|^2 / (2 sigma^2))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WolfConfig:
    """Smooth non-rigid augmentation (PointWOLF-style) in the normalised frame."""

    probability: float = 0.5
    anchors: int = 4
    sigma: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05


def random_rotations(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """``(n, 3, 3)`` rotations uniform on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        dim=1,
    ).reshape(n, 3, 3)
    return rot.to(dtype)


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``(n, 3)`` unit axes, ``(n,)`` angles -> ``(n, 3, 3)``."""
    k = torch.zeros(axis.shape[0], 3, 3, dtype=axis.dtype)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3, dtype=axis.dtype) + s * k + (1 - c) * (k @ k)


def farthest_points(points: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """``(m, 3)`` farthest-point sample of ``(N, 3)`` points, from a random start."""
    start = int(torch.randint(points.shape[0], (1,), generator=generator))
    chosen = [start]
    dist = ((points - points[start]) ** 2).sum(1)
    for _ in range(m - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, ((points - points[nxt]) ** 2).sum(1))
    return points[chosen]


def wolf_deform(points: torch.Tensor, config: WolfConfig, generator: torch.Generator) -> torch.Tensor:
    """Smooth non-rigid deformation of ``(N, 3)`` points (normalised frame).

    ``p' = sum_j w_j(p) T_j(p) / sum_j w_j(p)``, ``T_j(p) = R_j S_j (p - a_j) + a_j + t_j``,
    ``w_j(p) = exp(-|p - a_j|^2 / (2 sigma^2))``, anchors ``a_j`` by farthest-point sampling.
    """
    m = int(config.anchors)
    anchors = farthest_points(points, m, generator)
    axis = torch.randn(m, 3, generator=generator, dtype=points.dtype)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    angle = (2 * torch.rand(m, generator=generator, dtype=points.dtype) - 1) * math.radians(config.rotate_deg)
    rot = _axis_angle(axis, angle)
    scale = 1 + (2 * torch.rand(m, 3, generator=generator, dtype=points.dtype) - 1) * config.scale
    shift = (2 * torch.rand(m, 3, generator=generator, dtype=points.dtype) - 1) * config.translate
    local = points[None] - anchors[:, None]  # (m, N, 3)
    moved = torch.einsum("mij,mnj->mni", rot, local * scale[:, None]) + anchors[:, None] + shift[:, None]
    weights = torch.exp(-(local**2).sum(-1) / (2 * config.sigma**2))  # (m, N)
    weights = weights / weights.sum(0, keepdim=True).clamp_min(1e-12)
    return (weights[..., None] * moved).sum(0)
