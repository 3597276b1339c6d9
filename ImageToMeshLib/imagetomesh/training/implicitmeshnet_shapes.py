"""The shapes ``g_phi`` is pretrained on before it sees any image.

- :func:`random_shape`: the template sphere given a radius in [0.2, 0.8], then an affine map
  (rotation, anisotropic scaling, shear, translation), a smooth control-point deformation (a
  random displacement lattice interpolated trilinearly), sinusoidal waves along random axes and
  a little vertex noise; finally it is shrunk if needed to fit inside the grid.
- :func:`fit_template_to_label`: the template (same vertices and faces) fitted to a training
  label's surface by optimising its vertex positions directly (Chamfer + normal consistency +
  Laplacian smoothing, :func:`~imagetomesh.training.losses.mesh_decoder_loss` with the dense
  target of the version-2 mesh loss), so ``g_phi`` also learns organ-like shapes with the
  topology it will see; :func:`augment_fitted_shape` varies such a shape (rotation, scaling,
  smooth deformation, translation) each time it is drawn.

All in the isotropic grid frame; returned in grid coordinates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.nn.grid import index_to_grid, isotropic_scale, isotropic_voxel_size
from imagetomesh.training.augment import _rotation


def _uniform(generator: torch.Generator, lo, hi, *shape) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape or (1,), generator=generator)


def _lattice_deform(v: torch.Tensor, amplitude: float, generator: torch.Generator) -> torch.Tensor:
    """``v (N, 3)`` moved by a random 5^3 lattice of displacements spanning it, interpolated trilinearly;
    displacements ``amplitude`` x the shape's largest extent (standard deviation)."""
    lattice = amplitude * torch.randn(1, 3, 5, 5, 5, generator=generator)
    lo, hi = v.min(0).values, v.max(0).values
    where = (2 * (v - lo) / (hi - lo).clamp(min=1e-6) - 1).view(1, -1, 1, 1, 3)
    return v + F.grid_sample(lattice, where, mode="bilinear", align_corners=True).view(3, -1).T * (hi - lo).max()


def _inside(v: torch.Tensor, scale: torch.Tensor, margin: float) -> torch.Tensor:
    """Isotropic-frame ``v`` in grid coordinates, shrunk about the grid centre if needed to stay within ``margin``."""
    grid = v / scale
    over = grid.abs().max() / margin
    return grid / over if over > 1 else grid


def random_shape(
    sphere: torch.Tensor, scale: torch.Tensor, generator: torch.Generator, margin: float = 0.92
) -> torch.Tensor:
    """A random deformation of the unit-sphere template ``sphere`` ``(N, 3)``; ``(N, 3)`` grid coordinates.

    ``scale`` ``(3,)`` maps grid to the isotropic frame; the shape stays within ``margin`` of the grid.
    """

    def uniform(lo, hi, *shape):
        return _uniform(generator, lo, hi, *shape)

    v = sphere * uniform(0.2, 0.8)
    # affine: anisotropic scaling and shear, then rotation and translation
    linear = torch.diag(uniform(0.35, 1.3, 3)) + 0.15 * torch.randn(3, 3, generator=generator) * (1 - torch.eye(3))
    rotation = _rotation(uniform(-math.pi, math.pi, 3))
    v = v @ (rotation @ linear).T
    v = _lattice_deform(v, 0.06, generator)
    # sinusoidal waves: coordinate a moves with sin of coordinate b
    for _ in range(2):
        a, b = torch.randperm(3, generator=generator)[:2].tolist()
        v[:, a] = v[:, a] + uniform(0.0, 0.04) * torch.sin(uniform(2.0, 7.0) * v[:, b] + uniform(0, 2 * math.pi))
    v = v + 0.002 * torch.randn(v.shape, generator=generator)
    v = v - v.mean(0) + uniform(-0.1, 0.1, 3) * scale
    return _inside(v, scale, margin)


def augment_fitted_shape(
    verts: torch.Tensor,
    scale: torch.Tensor,
    generator: torch.Generator,
    rotate_deg: float = 25.0,
    scaling: float = 0.15,
    deform: float = 0.02,
    shift: float = 0.1,
    margin: float = 0.92,
) -> torch.Tensor:
    """A random variant of a fitted shape ``verts`` ``(N, 3)`` (grid coordinates) -> ``(N, 3)`` grid coordinates.

    In the isotropic frame, about the shape's centroid: a rotation of up to ``rotate_deg`` about each
    axis, an anisotropic scaling by ``1 +- scaling`` per axis, a smooth lattice deformation of
    ``deform`` x the shape's extent, then a translation of up to ``shift`` x the grid's half extent
    per axis; shrunk if needed to stay within ``margin`` of the grid. The vertex order (and so the
    faces) is unchanged.
    """
    v = verts * scale
    centre = v.mean(0)
    v = v - centre
    rotation = _rotation(_uniform(generator, -1, 1, 3) * math.radians(rotate_deg))
    v = v @ (rotation @ torch.diag(1 + _uniform(generator, -scaling, scaling, 3))).T
    v = _lattice_deform(v, deform, generator) if deform > 0 else v
    v = v + centre + _uniform(generator, -shift, shift, 3) * scale
    return _inside(v, scale, margin)


def label_ellipsoid(sphere: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The unit sphere ``(N, 3)`` mapped onto the ellipsoid with the moments of a binary label ``(D, H, W)``.

    In the isotropic frame a solid ellipsoid with semi-axes ``a_k`` has variance ``a_k^2 / 5`` along
    axis ``k``, so ``u -> mean + (5 C)^(1/2) u`` with ``C`` the covariance of the label's voxel centres.
    Returns grid coordinates.
    """
    scale = isotropic_scale(label.shape)
    points = index_to_grid(torch.nonzero(label).flip(1).float(), label.shape[::-1]) * scale
    if len(points) < 4:
        raise ValueError("the label has fewer than 4 voxels: nothing to fit")
    mean = points.mean(0)
    cov = torch.cov(points.T) + (isotropic_voxel_size(label.shape) ** 2 / 12) * torch.eye(3)
    values, vectors = torch.linalg.eigh(cov)
    root = vectors @ torch.diag((5 * values.clamp(min=0)).sqrt()) @ vectors.T
    return (mean + sphere @ root.T) / scale


def fit_template_to_label(
    sphere: torch.Tensor,
    faces: torch.Tensor,
    label: torch.Tensor,
    weights,
    steps: int = 300,
    lr: float = 0.003,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The template ``(sphere (N, 3) unit sphere, faces (F, 3))`` fitted to a binary label ``(D, H, W)``.

    Starts from :func:`label_ellipsoid` and optimises the vertex positions alone (Adam, ``lr`` in grid
    units cosine-decayed to a tenth over ``steps``) on
    :func:`~imagetomesh.training.losses.mesh_decoder_loss` with ``weights``
    (:class:`~imagetomesh.training.losses.MeshLossWeights`, version 2, dense target: the label's
    surface smoothed with ``weights.target_smoothing``, ``weights.target_points`` samples), as
    ``Testing/benchmarks/mesh_loss_oracle.py`` does for Voxel2Mesh. Returns ``(N, 3)`` grid
    coordinates; the faces are the template's.
    """
    from imagetomesh.training.losses import mesh_decoder_loss
    from imagetomesh.training.udf_points import surface_samples

    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if weights.version != 2 or weights.target != "dense":
        raise ValueError("fit_template_to_label takes the version-2 loss with the dense target")
    points, normals = surface_samples(label, weights.target_points, generator, weights.target_smoothing)
    scale = isotropic_scale(label.shape)
    voxel = isotropic_voxel_size(label.shape)
    start = label_ellipsoid(sphere, label)
    verts = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([verts], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / max(steps, 1)))
    )
    for _ in range(steps):
        mesh = DecoderMesh(verts, faces, sphere, start=start)
        terms = mesh_decoder_loss([mesh], points, normals, scale, weights, generator=generator, voxel=voxel)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        schedule.step()
    return verts.detach()
