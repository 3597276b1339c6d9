"""Randomly deformed icospheres: the shapes ``g_phi`` is pretrained on before it sees any image.

Each shape is the template sphere given a radius in [0.2, 0.8], then an affine map (rotation,
anisotropic scaling, shear, translation), a smooth control-point deformation (a random
displacement lattice interpolated trilinearly), sinusoidal waves along random axes and a
little vertex noise; finally it is shrunk if needed to fit inside the grid. All in the
isotropic grid frame; returned in grid coordinates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imagetomesh.training.augment import _rotation


def random_shape(
    sphere: torch.Tensor, scale: torch.Tensor, generator: torch.Generator, margin: float = 0.92
) -> torch.Tensor:
    """A random deformation of the unit-sphere template ``sphere`` ``(N, 3)``; ``(N, 3)`` grid coordinates.

    ``scale`` ``(3,)`` maps grid to the isotropic frame; the shape stays within ``margin`` of the grid.
    """

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(shape or (1,), generator=generator)

    v = sphere * uniform(0.2, 0.8)
    # affine: anisotropic scaling and shear, then rotation and translation
    linear = torch.diag(uniform(0.35, 1.3, 3)) + 0.15 * torch.randn(3, 3, generator=generator) * (1 - torch.eye(3))
    rotation = _rotation(uniform(-math.pi, math.pi, 3))
    v = v @ (rotation @ linear).T
    # smooth control-point deformation: a 5^3 lattice of displacements spanning the shape
    lattice = 0.06 * torch.randn(1, 3, 5, 5, 5, generator=generator)
    lo, hi = v.min(0).values, v.max(0).values
    where = (2 * (v - lo) / (hi - lo).clamp(min=1e-6) - 1).view(1, -1, 1, 1, 3)
    v = v + F.grid_sample(lattice, where, mode="bilinear", align_corners=True).view(3, -1).T * (hi - lo).max()
    # sinusoidal waves: coordinate a moves with sin of coordinate b
    for _ in range(2):
        a, b = torch.randperm(3, generator=generator)[:2].tolist()
        v[:, a] = v[:, a] + uniform(0.0, 0.04) * torch.sin(uniform(2.0, 7.0) * v[:, b] + uniform(0, 2 * math.pi))
    v = v + 0.002 * torch.randn(v.shape, generator=generator)
    v = v - v.mean(0) + uniform(-0.1, 0.1, 3) * scale
    grid = v / scale
    over = grid.abs().max() / margin
    if over > 1:
        grid = grid / over
    return grid
