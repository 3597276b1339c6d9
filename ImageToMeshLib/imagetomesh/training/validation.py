"""Validation metrics of image-to-mesh models on prepared cases (on the model grid)."""

from __future__ import annotations

import numpy as np
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.metrics import dice
from imagetomesh.models.organ_decoders import centre_crop, context_shape
from imagetomesh.models.protocol import last_stage_meshes
from imagetomesh.nn.sdf import inside_mask
from imagetomesh.training.data import PreparedCase, boundary_points
from imagetomesh.training.organ_crops import (
    OrganCropGuides,
    case_crop,
    meshable,
    organ_crop_start,
    start_probabilities,
)
from imagetomesh.voxel_meshing import finish_mesh


def rasterised_dice(verts, faces, truth: np.ndarray) -> float:
    """Dice of a closed mesh, ``verts (V, 3)`` in the grid coordinates of ``truth``'s grid and ``faces (F, 3)``
    (tensors or arrays), rasterised on that grid, against ``truth (D, H, W)`` bool."""
    inside = inside_mask(torch.as_tensor(verts), torch.as_tensor(faces), truth.shape)
    return dice(inside.numpy(), truth)


def segment_dice(mesh: Mesh, truth: np.ndarray) -> float:
    """Dice of a network's closed ``mesh`` (in the grid coordinates of ``truth``'s grid) as ``segment`` returns it:
    finished first (:func:`~imagetomesh.voxel_meshing.finish_mesh`: outward, repaired, its folds untangled; each
    step commutes with the affine map from the grid to LPS millimetres, where ``segment`` does it), then
    rasterised on the grid (:func:`rasterised_dice`) against ``truth (D, H, W)`` bool. Scored with its folds as
    they are (scan-line parity), a decoder whose meshes fold (a fresh Voxel2Mesh decoder at its peak learning
    rate, session 27) scored up to 0.019 Dice above what ``segment`` gave, and chose its best step by it."""
    finished = finish_mesh(mesh)
    return rasterised_dice(finished.vertices, finished.faces, truth)


def organ_means(scores: dict[str, list[float]], key: str) -> dict[str, float]:
    """``{key}_<organ>``: the mean of each organ's scores (organs without any are left out), and ``key``: the
    mean of those means."""
    out = {f"{key}_{name}": float(np.mean(v)) for name, v in scores.items() if v}
    out[key] = float(np.mean(list(out.values())))
    return out


@torch.no_grad()
def segmentation_metrics(model, cases: list[PreparedCase], device) -> dict[str, float]:
    """Voxel Dice of the segmentation head (``val_dice``), and for mesh models the Dice of the mesh
    ``segment`` returns (``val_mesh_dice``: the eval-mode forward's last stage, as :meth:`predict_meshes`
    returns it, pruned and unpooled as at inference, finished and rasterised on the model grid:
    :func:`segment_dice`) and the symmetric
    Chamfer in mm (``val_chamfer_mm``:
    mean distance, both ways, between the last decoder stage's vertices and the label boundary).
    ``model(image (1, 1, D, H, W)) -> (logits (1, C, D, H, W), meshes or None)``."""
    model.eval()
    dices, chamfers, mesh_dices = [], [], []
    for case in cases:
        image = case.image[None, None].to(device)
        logits, meshes = model(image)
        dices.append(dice(logits.argmax(1)[0].cpu().numpy(), case.label.numpy()))
        if meshes is not None:
            output = last_stage_meshes(meshes)[0]  # what predict_meshes returns, without a second forward
            mesh_dices.append(segment_dice(output, case.label.numpy().astype(bool)))
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
    return organ_means(scores, "val_dice")


@torch.no_grad()
def organ_mesh_metrics(
    model,
    cases: list[PreparedCase],
    device,
    organs: list[str],
    crops: list[list[int]],
    context: int = 0,
    guides: OrganCropGuides | None = None,
) -> dict[str, float]:
    """A Voxel2Mesh with one decoder per organ, on the crop of each case around each organ that it can be
    scored on (:func:`~imagetomesh.training.organ_crops.meshable`; ``crops[k - 1]`` ``(d, h, w)`` for class
    ``k``, centred on the labelled organ): the Dice of the mesh ``segment`` returns, finished and rasterised in
    the crop (:func:`segment_dice`; ``val_mesh_dice_<organ>``, mean ``val_mesh_dice``) and of the voxel head in
    the same crop
    (``val_dice_<organ>``, mean ``val_dice``). ``organs[k - 1]`` names class ``k``. The model reads each crop grown
    by ``context`` voxels per side (its ``context_margin``); with ``guides`` (of these cases) each decoder starts
    from the crop's scan guide (:func:`~imagetomesh.training.organ_crops.start_probabilities`), as in ``segment``."""
    model.eval()
    mesh_dices: dict[str, list[float]] = {name: [] for name in organs}
    voxel_dices: dict[str, list[float]] = {name: [] for name in organs}
    for k, name in enumerate(organs, start=1):
        for case in cases:
            if not meshable(case, k):
                continue
            shape = context_shape(crops[k - 1], context)
            start = organ_crop_start(case, k, shape)
            image, label = case_crop(case, start, shape)
            truth = (centre_crop(label, context) == k).numpy()
            probabilities = None
            if guides is not None:
                guide, voxels = (centre_crop(t, context)[None] for t in guides.crop(case, k, start, shape))
                probabilities = start_probabilities(guide, voxels, k, len(organs) + 1).to(device)
            logits, meshes = model(image[None, None].to(device), organ=k, probabilities=probabilities)
            voxel_dices[name].append(dice(logits.argmax(1)[0].cpu().numpy() == k, truth))
            mesh_dices[name].append(segment_dice(last_stage_meshes(meshes)[0], truth))
    model.train()
    return {**organ_means(voxel_dices, "val_dice"), **organ_means(mesh_dices, "val_mesh_dice")}
