"""Validation metrics of image-to-mesh models on prepared cases (on the model grid)."""

from __future__ import annotations

import numpy as np
import torch

from imagetomesh.metrics import dice
from imagetomesh.nn.sdf import inside_mask
from imagetomesh.training.data import PreparedCase, boundary_points


@torch.no_grad()
def segmentation_metrics(model, cases: list[PreparedCase], device) -> dict[str, float]:
    """Voxel Dice of the segmentation head (``val_dice``), and for mesh models the Dice of the mesh
    ``segment`` returns (``val_mesh_dice``: :meth:`predict_meshes`, pruned and unpooled as at
    inference, rasterised on the model grid) and the symmetric Chamfer in mm (``val_chamfer_mm``:
    mean distance, both ways, between the last decoder stage's vertices and the label boundary).
    ``model(image (1, 1, D, H, W)) -> (logits (1, C, D, H, W), meshes or None)``."""
    model.eval()
    dices, chamfers, mesh_dices = [], [], []
    for case in cases:
        image = case.image[None, None].to(device)
        logits, meshes = model(image)
        dices.append(dice(logits.argmax(1)[0].cpu().numpy(), case.label.numpy()))
        if meshes is not None:
            output = model.predict_meshes(image)[0]
            mask = inside_mask(torch.from_numpy(output.vertices), torch.from_numpy(output.faces), case.label.shape)
            mesh_dices.append(dice(mask.numpy(), case.label.numpy()))
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
        out["val_mesh_dice"] = float(np.mean(mesh_dices))
    return out


@torch.no_grad()
def organ_metrics(model, cases: list[PreparedCase], device, organs: list[str]) -> dict[str, float]:
    """Per-organ voxel Dice of a several-organ model's head on whole prepared cases, each organ
    scored only in the cases where it was contoured (``case.present``): ``val_dice_<organ>`` and
    their mean ``val_dice``. ``organs[k - 1]`` names class ``k``."""
    model.eval()
    scores: dict[str, list[float]] = {name: [] for name in organs}
    for case in cases:
        logits, _ = model(case.image[None, None].float().to(device))
        predicted = logits.argmax(1)[0].cpu().numpy()
        label = case.label.numpy()
        for k, name in enumerate(organs, start=1):
            if case.present is None or bool(case.present[k]):
                scores[name].append(dice(predicted == k, label == k))
    model.train()
    out = {f"val_dice_{name}": float(np.mean(v)) for name, v in scores.items() if v}
    out["val_dice"] = float(np.mean(list(out.values())))
    return out
