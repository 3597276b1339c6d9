"""Do a U-Net's features say where its own mesh is wrong? A probe of what a decoder on frozen features can learn.

Usage:
    python Testing/benchmarks/mesh_residual_probe.py [--data ../shared/data/hippocampus] [--model unet-hippocampus]
        [--train-cases 0] [--epochs 30] [--seed 0]

For each case, U-Net + MC's mesh (what ``segment`` makes of the model's voxels) and, at each of its vertices:
the *residual*, the move along the outward normal that would put the vertex on the label's surface (minus the
label's signed distance there, in voxels, from the label put on the model grid as training puts it), and the
*features* a mesh decoder on the frozen U-Net could read there: the voxel head's probability along the normal
(-2 .. 2 voxels, every half voxel) and the U-Net's two finest decoder feature maps at the vertex and a voxel
either side along the normal. A small MLP (two hidden layers of 64, smooth-L1 on residuals clipped to 3 voxels)
learns residual from features on the training split's cases (``--train-cases``: the first N; 0: all) and is
scored on the validation split (never ``test``): R^2 of its predictions every 5 epochs (0 for predicting zero,
negative for worse), then the validation IoU of the meshes with each vertex moved by ``alpha`` times the
prediction (``alpha`` 0 is U-Net + MC itself), rasterised on the label grid as the results report scores them, and
the IoU of the oracle that moves each vertex by its true residual (what a decoder could reach by such moves).

Why: every learned decoder tried on hippocampus (template, wider, refined, head-probability inputs, raster term,
a start from U-Net + MC's own surface) ended at or below U-Net + MC (``docs/mesh-losses.md``). If this probe finds
no R^2 above zero on validation, the frozen features hold no information about the residual on unseen cases, and no
decoder reading them can beat the mesh it starts from. Numbers only; nothing is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from imagetomesh.core.mesh import Mesh
from imagetomesh.inference import Segmenter
from imagetomesh.io.images import read_labelmap
from imagetomesh.metrics import evaluate_mesh
from imagetomesh.models.snapping import along_normals, outward_voxel_normals
from imagetomesh.nn.grid import index_to_grid
from imagetomesh.training.data import prepare_case
from imagetomesh.training.msd import read_msd
from imagetomesh.voxel_meshing import grid_mask_mesh
from imagetomesh.zoo import load_model

REPO = Path(__file__).resolve().parents[2]
#: Offsets along the normal (voxels) where the probability profile is read.
PROFILE_OFFSETS = torch.arange(-2.0, 2.01, 0.5)
#: Residuals beyond this (voxels) are clipped: a vertex that far off is not a local correction.
CLIP_VOXELS = 3.0


def signed_distance(inside: np.ndarray) -> torch.Tensor:
    """``(D, H, W)`` signed distance (voxels; negative inside) between voxel centres of ``inside`` and its outside."""
    outside = ndimage.distance_transform_edt(~inside)
    return torch.from_numpy((outside - ndimage.distance_transform_edt(inside)).astype(np.float32))


@torch.no_grad()
def vertex_samples(segmenter: Segmenter, case) -> dict:
    """U-Net + MC's mesh of ``case``'s image with, per vertex, its features ``X (N, F)`` and residual ``y (N,)``
    (voxels); image and label on the model grid as training prepares them."""
    prepared = prepare_case(case, segmenter.spec)
    logits, decoder = segmenter.model.module.unet(prepared.image[None, None])
    probability = logits.softmax(1)[0, 1]
    mesh = grid_mask_mesh(logits.argmax(1)[0].numpy(), segmenter.model.module.config.smoothing)
    size = torch.tensor(probability.shape[::-1], dtype=torch.float32)  # (i, j, k)
    ijk, normals = outward_voxel_normals(torch.from_numpy(mesh.vertices).float(), torch.from_numpy(mesh.faces), size)
    features = [along_normals(probability[None], ijk, normals, PROFILE_OFFSETS, size)[..., 0]]
    for level in decoder[-2:]:
        features.append(along_normals(level[0], ijk, normals, torch.tensor([-1.0, 0.0, 1.0]), size).flatten(1))
    distance = signed_distance(prepared.label.numpy() > 0)[None]
    residual = -along_normals(distance, ijk, normals, torch.zeros(1), size)[:, 0, 0]
    return {
        "X": torch.cat(features, 1),
        "y": residual,
        "ijk": ijk,
        "normals": normals,
        "mesh": mesh,
        "transform": prepared.transform,
        "size": size,
        "label": read_labelmap(case.label),
    }


def moved_iou(sample: dict, moves: torch.Tensor) -> float:
    """IoU (as the report scores it) of ``sample``'s mesh with each vertex moved ``moves (N,)`` voxels outward."""
    grid = index_to_grid(sample["ijk"] + moves[:, None] * sample["normals"], sample["size"]).numpy()
    mesh = Mesh(grid.astype(np.float64), sample["mesh"].faces).transformed(sample["transform"].grid_to_lps)
    return float(evaluate_mesh(mesh, sample["label"])["iou"])


def r_squared(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return float(1 - ((predicted - target) ** 2).mean() / ((target - target.mean()) ** 2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hippocampus")
    parser.add_argument("--model", default="unet-hippocampus")
    parser.add_argument("--train-cases", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = load_model(args.model, "cpu")
    if model.kind != "unet" or model.card.get("organs"):
        raise SystemExit(f"{args.model} is not a one-object U-Net + MC model")
    segmenter = Segmenter(model)
    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    cases = read_msd(args.data)

    def samples(ids):
        return [vertex_samples(segmenter, cases[c]) for c in ids]

    train = samples(split["train"][: args.train_cases or None])
    val = samples(split["val"])
    x = torch.cat([s["X"] for s in train])
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, y = (x - mean) / std, torch.cat([s["y"] for s in train]).clamp(-CLIP_VOXELS, CLIP_VOXELS)
    x_val = torch.cat([(s["X"] - mean) / std for s in val])
    y_val = torch.cat([s["y"] for s in val]).clamp(-CLIP_VOXELS, CLIP_VOXELS)
    print(
        f"{len(train)} training cases ({len(x)} vertices), {len(val)} validation cases; residual (voxels) mean "
        f"{float(y.mean()):+.3f}, std {float(y.std()):.3f}; predicting zero: validation R^2 "
        f"{r_squared(torch.zeros_like(y_val), y_val):.3f}"
    )
    probe = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    )
    optimiser = torch.optim.Adam(probe.parameters(), 1e-3, weight_decay=1e-4)
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x))
        for start in range(0, len(order), 1024):
            batch = order[start : start + 1024]
            loss = torch.nn.functional.smooth_l1_loss(probe(x[batch])[:, 0], y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if epoch % 5 == 0:
            with torch.no_grad():
                fit, held = r_squared(probe(x)[:, 0], y), r_squared(probe(x_val)[:, 0], y_val)
            print(f"epoch {epoch}: R^2 training {fit:.3f}, validation {held:.3f}", flush=True)
    with torch.no_grad():
        predictions = [probe((s["X"] - mean) / std)[:, 0] for s in val]
    for alpha in (0.0, 0.25, 0.5, 1.0):
        ious = [moved_iou(s, alpha * p) for s, p in zip(val, predictions)]
        print(f"validation IoU, moves x {alpha}: {np.mean(ious):.4f}" + ("  (U-Net + MC)" if alpha == 0 else ""))
    oracle = [moved_iou(s, s["y"].clamp(-CLIP_VOXELS, CLIP_VOXELS)) for s in val]
    print(f"validation IoU, the true residuals (oracle): {np.mean(oracle):.4f}")


if __name__ == "__main__":
    main()
