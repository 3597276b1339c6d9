"""Meshes from a network's voxels: the finishing every predicted closed mesh gets, a one-object U-Net's
mesh of its labelmap (U-Net + MC's) and a several-organ U-Net's mesh of one organ from its class probability
(what ``segment`` makes with a U-Net); the surface-start Voxel2Mesh variant begins from either."""

from __future__ import annotations

import numpy as np
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import GridTransform, grid_volume
from imagetomesh.errors import InputError
from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING, labelmap_to_mesh
from imagetomesh.geometry.quality import check_mesh, orient_outward, repair_mesh
from imagetomesh.geometry.untangle import untangle
from imagetomesh.scan import organ_mask_volume


def finish_mesh(mesh: Mesh, untangle_folds: bool = True) -> Mesh:
    """Post-processing of every predicted closed mesh: outward faces; repaired if it is not
    watertight; local folds smoothed away (:func:`~imagetomesh.geometry.untangle.untangle`:
    template-deforming models can push a few vertices through the opposite wall of a thin part)
    unless ``untangle_folds`` is False."""
    mesh = orient_outward(mesh)
    if not check_mesh(mesh, self_intersections=False).watertight:
        mesh = repair_mesh(mesh, remove_self_intersections=False)
    return untangle(mesh) if untangle_folds else mesh


def grid_mask_mesh(mask: np.ndarray, smoothing: float = DEFAULT_SMOOTHING) -> Mesh:
    """U-Net + MC's mesh of a one-object U-Net's labelmap ``mask (D, H, W)`` (bool or 0/1) in grid coordinates
    (voxel indices): marching cubes with ``smoothing``
    (:func:`~imagetomesh.geometry.isosurface.labelmap_to_mesh`). :class:`InputError` for an empty mask."""
    mask = np.asarray(mask).astype(np.uint8)
    if not mask.any():
        raise InputError(
            "the model found no object in the image; check that it shows the organ the model was trained on"
        )
    return labelmap_to_mesh(grid_volume(mask, GridTransform(np.eye(4), mask.shape)), smoothing=smoothing)


def voxel_organ_mesh(
    probability: torch.Tensor,
    mask: np.ndarray,
    transform: GridTransform,
    smoothing: float = DEFAULT_SMOOTHING,
    level: float = 0.5,
    upsample: int = 2,
) -> Mesh:
    """A several-organ U-Net's mesh of one organ: its class ``probability (D, H, W)`` on the scan grid at
    ``transform``, ``upsample`` times finer, kept at ``level`` near its voxels ``mask (D, H, W)``
    (:func:`~imagetomesh.scan.organ_mask_volume`), meshed with ``smoothing`` and finished (LPS mm).
    :class:`InputError` for a structure too small to mesh."""
    fine = organ_mask_volume(probability, mask, transform, upsample=upsample, level=level)
    return finish_mesh(labelmap_to_mesh(fine, smoothing=smoothing), untangle_folds=False)
