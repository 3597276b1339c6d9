"""Validation metrics of image-to-mesh models on prepared cases (on the model grid)."""

from __future__ import annotations

import numpy as np
import torch

from imagetomesh.metrics import dice
from imagetomesh.nn.sdf import inside_mask
from imagetomesh.training.data import PreparedCase, boundary_points


@torch.no_grad()
def segmentation_metrics(model, cases: list[PreparedCase], device) -> dict[str, float]:
    """Voxel Dice of the segmentation head (``val_dice``), and for mesh models the symmetric Chamfer
    in mm (``val_chamfer_mm``: mean distance, both ways, between the final mesh's vertices and the
    label boundary). ``model(image (1, 1, D, H, W)) -> (logits (1, C, D, H, W), meshes or None)``."""
    model.eval()
    dices, chamfers = [], []
    for case in cases:
        logits, meshes = model(case.image[None, None].to(device))
        dices.append(dice(logits.argmax(1)[0].cpu().numpy(), case.label.numpy()))
        if meshes is not None:
            half_mm = (
                torch.tensor(case.transform.grid_to_lps[:3, :3]).norm(dim=0).float()
            )  # mm per grid unit, (x, y, z)
            points, _ = boundary_points(case.label)
            verts = meshes[0][-1].verts.cpu()
            d = torch.cdist(verts * half_mm, points * half_mm)
            chamfers.append(float((d.min(1).values.mean() + d.min(0).values.mean()) / 2))
    model.train()
    out = {"val_dice": float(np.mean(dices))}
    if chamfers:
        out["val_chamfer_mm"] = float(np.mean(chamfers))
    return out


@torch.no_grad()
def mesh_dice(model, cases: list[PreparedCase], device) -> float:
    """Mean Dice between the rasterised final meshes and the labels, on the model grid."""
    model.eval()
    scores = []
    for case in cases:
        _, meshes = model(case.image[None, None].to(device))
        mask = inside_mask(meshes[0][-1].verts, meshes[0][-1].faces, case.label.shape).cpu()
        scores.append(dice(mask.numpy(), case.label.numpy()))
    model.train()
    return float(np.mean(scores))
