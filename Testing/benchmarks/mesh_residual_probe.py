"""Do a U-Net's features say where its own mesh is wrong? A probe of what a decoder on frozen features can learn.

Usage:
    python Testing/benchmarks/mesh_residual_probe.py [--data ../shared/data/hippocampus] [--model unet-hippocampus]
        [--train-cases 0] [--epochs 30] [--seed 0] [--features probability,decoder] [--folds RUN_MODEL ...]

For each case, U-Net + MC's mesh (what ``segment`` makes of the model's voxels) and, at each of its vertices:
the *residual*, the move along the outward normal that would put the vertex on the label's surface (minus the
label's signed distance there, in voxels, from the label put on the model grid as training puts it), and the
*features* a mesh decoder could read there (``--features``, any of): ``probability``, the frozen U-Net's voxel
head's probability along the normal (-2 .. 2 voxels, every half voxel); ``decoder``, its two finest decoder feature
maps at the vertex and a voxel either side along the normal; ``image``, the image's own intensities along the normal
(-3 .. 3 voxels, every half voxel), which no training label has shaped; ``image_context``, the image along the normal
(-4 .. 4 voxels) at the vertex and 1.5 voxels from it either way along two tangents (five profiles). A small MLP
(two hidden layers of 64, smooth-L1 on residuals clipped to 3 voxels) learns residual from features on the training
split's cases (``--train-cases``: the first N; 0: all) and is scored on the validation split (never ``test``): R^2 of
its predictions every 5 epochs (0 for predicting zero, negative for worse), then the validation IoU of the meshes
with each vertex moved by ``alpha`` times the prediction (``alpha`` 0 is U-Net + MC itself), rasterised on the label
grid as the results report scores them, and the IoU of the oracle that moves each vertex by its true residual (what
a decoder could reach by such moves).

``--folds`` (cross-fitting): U-Nets each trained on part of the training split (their cards' ``training.split``)
replace ``--model``. The probe is fitted twice, on the same training cases: *in-fold*, each case's mesh and features
from a U-Net that trained on it (what a decoder on a frozen U-Net learns from), and *out-of-fold*, from one that
did not (as a held-out case looks to it). Both are scored on every fold U-Net's validation meshes (means over the
U-Nets). If only the out-of-fold probe transfers, a decoder should learn its moves from starts made by U-Nets that
did not train on the case.

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
#: Offsets along the normal (voxels) where the image's intensity profile is read.
IMAGE_OFFSETS = torch.arange(-3.0, 3.01, 0.5)
#: Offsets along the normal (voxels) of the ``image_context`` profiles, and their tangential spacing.
CONTEXT_OFFSETS, CONTEXT_SHIFT = torch.arange(-4.0, 4.01, 0.5), 1.5
FEATURES = ("probability", "decoder", "image", "image_context")
#: Residuals beyond this (voxels) are clipped: a vertex that far off is not a local correction.
CLIP_VOXELS = 3.0


def signed_distance(inside: np.ndarray, sampling=None) -> np.ndarray:
    """``(D, H, W)`` float64 signed distance (negative inside) between voxel centres of ``inside`` and its outside:
    in voxels, or in the units of ``sampling`` (the spacing along the array's axes ``(D, H, W)``)."""
    outside = ndimage.distance_transform_edt(~inside, sampling=sampling)
    return outside - ndimage.distance_transform_edt(inside, sampling=sampling)


@torch.no_grad()
def vertex_samples(segmenter: Segmenter, case, kinds: tuple[str, ...] = FEATURES[:2]) -> dict:
    """U-Net + MC's mesh of ``case``'s image with, per vertex, its features ``X (N, F)`` of ``kinds`` (of
    :data:`FEATURES`) and residual ``y (N,)`` (voxels); image and label on the model grid as training prepares them."""
    prepared = prepare_case(case, segmenter.spec)
    logits, decoder = segmenter.model.module.unet(prepared.image[None, None])
    probability = logits.softmax(1)[0, 1]
    mesh = grid_mask_mesh(logits.argmax(1)[0].numpy(), segmenter.model.module.config.smoothing)
    size = torch.tensor(probability.shape[::-1], dtype=torch.float32)  # (i, j, k)
    ijk, normals = outward_voxel_normals(torch.from_numpy(mesh.vertices).float(), torch.from_numpy(mesh.faces), size)
    features = []
    if "probability" in kinds:
        features.append(along_normals(probability[None], ijk, normals, PROFILE_OFFSETS, size)[..., 0])
    if "decoder" in kinds:
        for level in decoder[-2:]:
            features.append(along_normals(level[0], ijk, normals, torch.tensor([-1.0, 0.0, 1.0]), size).flatten(1))
    if "image" in kinds:
        features.append(along_normals(prepared.image[None], ijk, normals, IMAGE_OFFSETS, size)[..., 0])
    if "image_context" in kinds:
        for shift in tangent_shifts(normals, CONTEXT_SHIFT):
            features.append(along_normals(prepared.image[None], ijk + shift, normals, CONTEXT_OFFSETS, size)[..., 0])
    distance = torch.from_numpy(signed_distance(prepared.label.numpy() > 0).astype(np.float32))[None]
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


def tangent_shifts(normals: torch.Tensor, length: float) -> list[torch.Tensor]:
    """Zero and ``length`` either way along two unit tangents orthogonal to ``normals (N, 3)``: five ``(N, 3)``."""
    helper = torch.zeros_like(normals)
    helper[:, 0] = 1.0
    helper[normals[:, 0].abs() > 0.9] = torch.tensor([0.0, 1.0, 0.0])
    first = torch.nn.functional.normalize(torch.cross(normals, helper, dim=1), dim=1)
    second = torch.cross(normals, first, dim=1)
    return [torch.zeros_like(normals), length * first, -length * first, length * second, -length * second]


def moved_iou(sample: dict, moves: torch.Tensor) -> float:
    """IoU (as the report scores it) of ``sample``'s mesh with each vertex moved ``moves (N,)`` voxels outward."""
    grid = index_to_grid(sample["ijk"] + moves[:, None] * sample["normals"], sample["size"]).numpy()
    mesh = Mesh(grid.astype(np.float64), sample["mesh"].faces).transformed(sample["transform"].grid_to_lps)
    return float(evaluate_mesh(mesh, sample["label"])["iou"])


def r_squared(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return float(1 - ((predicted - target) ** 2).mean() / ((target - target.mean()) ** 2).mean())


class Probe:
    """The MLP of the module docstring, fitted on ``train`` samples' features (standardised by their mean and
    spread) to their residuals clipped to ``clip`` (their unit); ``held`` (a list of sample lists) is scored every 5
    epochs."""

    def __init__(self, train: list[dict], held: list[list[dict]], epochs: int, clip: float = CLIP_VOXELS):
        x = torch.cat([s["X"] for s in train])
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        x, y = (x - self.mean) / self.std, torch.cat([s["y"] for s in train]).clamp(-clip, clip)
        held_flat = [s for samples in held for s in samples]
        y_held = torch.cat([s["y"] for s in held_flat]).clamp(-clip, clip)
        print(
            f"{len(train)} training meshes ({len(x)} vertices), {len(held_flat)} validation meshes; residual "
            f"mean {float(y.mean()):+.3f}, std {float(y.std()):.3f}; predicting zero: validation R^2 "
            f"{r_squared(torch.zeros_like(y_held), y_held):.3f}"
        )
        self.net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 1),
        )
        optimiser = torch.optim.Adam(self.net.parameters(), 1e-3, weight_decay=1e-4)
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(x))
            for start in range(0, len(order), 1024):
                batch = order[start : start + 1024]
                loss = torch.nn.functional.smooth_l1_loss(self.net(x[batch])[:, 0], y[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            if epoch % 5 == 0:
                with torch.no_grad():
                    fit = r_squared(self.net(x)[:, 0], y)
                    held_r2 = r_squared(torch.cat([self(s) for s in held_flat]), y_held)
                print(f"epoch {epoch}: R^2 training {fit:.3f}, validation {held_r2:.3f}", flush=True)

    @torch.no_grad()
    def __call__(self, sample: dict) -> torch.Tensor:
        """Predicted residuals ``(N,)`` of ``sample``'s vertices."""
        return self.net((sample["X"] - self.mean) / self.std)[:, 0]


def report_moves(probe: Probe, held: list[list[dict]]) -> None:
    """Validation IoU of the meshes moved by ``probe``'s predictions, per move fraction, averaged over ``held``'s
    sample lists (one per U-Net), and of the true residuals (oracle)."""
    for alpha in (0.0, 0.25, 0.5, 1.0):
        iou = np.mean([np.mean([moved_iou(s, alpha * probe(s)) for s in samples]) for samples in held])
        print(f"validation IoU, moves x {alpha}: {iou:.4f}" + ("  (U-Net + MC)" if alpha == 0 else ""))
    oracle = np.mean([np.mean([moved_iou(s, s["y"].clamp(-CLIP_VOXELS, CLIP_VOXELS)) for s in x]) for x in held])
    print(f"validation IoU, the true residuals (oracle): {oracle:.4f}")


def one_object_segmenter(name: str) -> Segmenter:
    model = load_model(name, "cpu")
    if model.kind != "unet" or model.card.get("organs"):
        raise SystemExit(f"{name} is not a one-object U-Net + MC model")
    return Segmenter(model)


def add_probe_arguments(parser: argparse.ArgumentParser, features: tuple[str, ...], default: str) -> None:
    """The options every residual probe takes: ``--train-cases``, ``--epochs``, ``--seed``, ``--features``."""
    parser.add_argument("--train-cases", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default=default, help=f"comma-separated, of {', '.join(features)}")


def probe_kinds(args: argparse.Namespace, features: tuple[str, ...]) -> tuple[str, ...]:
    """``args.features`` checked against ``features``; torch set to one thread and ``args.seed``."""
    kinds = tuple(args.features.split(","))
    if not kinds or not set(kinds) <= set(features):
        raise SystemExit(f"--features takes a comma-separated list of {', '.join(features)}, not {args.features!r}")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hippocampus")
    parser.add_argument("--model", default="unet-hippocampus")
    add_probe_arguments(parser, FEATURES, "probability,decoder")
    parser.add_argument(
        "--folds", nargs="+", default=None, help="U-Nets trained on parts of the training split (cross-fitting)"
    )
    args = parser.parse_args()
    kinds = probe_kinds(args, FEATURES)
    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    cases = read_msd(args.data)
    train_ids = split["train"][: args.train_cases or None]
    if not args.folds:
        segmenter = one_object_segmenter(args.model)
        val = [[vertex_samples(segmenter, cases[c], kinds) for c in split["val"]]]
        report_moves(Probe([vertex_samples(segmenter, cases[c], kinds) for c in train_ids], val, args.epochs), val)
        return
    folds = [one_object_segmenter(name) for name in args.folds]
    trained_on = [set(f.model.card["training"]["split"]["train"]) for f in folds]
    in_fold, out_of_fold = [], []
    for c in train_ids:
        inside = [f for f, ids in zip(folds, trained_on) if c in ids]
        outside = [f for f, ids in zip(folds, trained_on) if c not in ids]
        if not inside or not outside:
            raise SystemExit(f"training case {c} must be in some folds' training cases and not in others'")
        in_fold.append(vertex_samples(inside[0], cases[c], kinds))
        out_of_fold.append(vertex_samples(outside[0], cases[c], kinds))
    val = [[vertex_samples(f, cases[c], kinds) for c in split["val"]] for f in folds]
    for name, train in (("in-fold", in_fold), ("out-of-fold", out_of_fold)):
        print(f"--- probe fitted on each training case's {name} U-Net's mesh and features")
        report_moves(Probe(train, val, args.epochs), val)


if __name__ == "__main__":
    main()
