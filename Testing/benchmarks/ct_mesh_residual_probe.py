"""Does what a mesh decoder can read at U-Net + MC's CT organ surfaces say where they miss the labels?

Usage:
    python Testing/benchmarks/ct_mesh_residual_probe.py [--data ../shared/data/openkbp-ct] [--model unet-headneck-ct]
        [--train-cases 0] [--epochs 30] [--seed 0] [--features probability,image]

The head-and-neck version of ``mesh_residual_probe.py``. For each case of the model's split and each organ contoured
in it (``labels_present``), the U-Net + MC mesh ``segment`` makes of the whole scan (the card's ensemble included;
LPS mm) and, at each vertex: the *residual*, the move (mm) along the outward normal that puts the vertex on the
organ's label surface (minus the label's signed distance there, from the label's own grid: what the report's Dice
is scored against), and *features* (``--features``, any of): ``probability``, the organ's class probability along
the normal, -8 .. 8 mm every 2 mm, on the scan grid the U-Nets ran on; ``image``, the scan as the U-Nets read it
(HU / 1000) at the same points; the organ's one-hot code always. One MLP for all organs
(``mesh_residual_probe.Probe``: two hidden layers of 64, smooth-L1 on residuals clipped to 8 mm) learns the
residual on the training split's cases (``--train-cases``: the first N; 0: all) and is scored on the validation
split (never ``test``): R^2 every 5 epochs, then the mean over organs of each organ's validation Dice (the mesh
rasterised on the label grid, as ``headneck_ct_report.py`` scores it) with each vertex moved by ``alpha`` times
its prediction (``alpha`` 0 is U-Net + MC), and with the true residuals (the oracle).

Why: every CT mesh decoder (Voxel2Mesh's surface-start decoders, NUDF's guided field) ends at or below U-Net + MC
on validation, and the U-Nets score their own training scans ~0.05 higher than validation scans. If the probe finds
a residual on validation that local features predict, a decoder could gain it; if not, beating U-Net + MC needs
better image features than these U-Nets give. Numbers only; nothing is written.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from headneck_ct_report import model_split, scored_organs
from mesh_residual_probe import Probe, add_probe_arguments, probe_kinds, r_squared, signed_distance
from scipy import ndimage

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.normals import outward_vertex_normals
from imagetomesh.inference import Segmenter
from imagetomesh.io.images import read_image
from imagetomesh.metrics import mesh_dice_iou
from imagetomesh.nn.feature_sampling import sample_features
from imagetomesh.scan import organ_masks
from imagetomesh.training.msd import read_msd
from imagetomesh.voxel_meshing import voxel_organ_mesh
from imagetomesh.zoo import load_model

REPO = Path(__file__).resolve().parents[2]
#: Offsets (mm) along the normal where the profiles are read: about two scan voxels either way.
OFFSETS_MM = np.arange(-8.0, 8.01, 2.0)
#: Residuals beyond this (mm) are clipped: a vertex that far off is not a local correction.
CLIP_MM = 8.0
FEATURES = ("probability", "image")


def read_on_label(values: np.ndarray, label, points_lps: np.ndarray) -> np.ndarray:
    """``values (D, H, W)`` on ``label``'s grid (a Volume) read at ``points_lps (M, 3)``: trilinear, the nearest edge
    value outside."""
    ijk = points_lps @ label.lps_to_index[:3, :3].T + label.lps_to_index[:3, 3]
    return ndimage.map_coordinates(values, ijk[:, ::-1].T, order=1, mode="nearest")


@torch.no_grad()
def case_samples(segmenter: Segmenter, case, kinds: tuple[str, ...]) -> list[dict]:
    """One sample per organ contoured in ``case`` that the model finds: its U-Net + MC mesh (LPS mm), per-vertex
    features ``X (N, F)``, residuals ``y (N,)`` (mm) and normals, and the organ's label volume."""
    image, label = read_image(case.image), read_image(case.label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan, transform, probabilities = segmenter.scan_probabilities(image)
    organs = scored_organs(case, segmenter.organs)
    masks = organ_masks(probabilities, organs)
    samples = []
    for organ in organs:
        inside = label.array == organ.label
        if masks[organ.name] is None or not inside.any():
            continue
        mesh = voxel_organ_mesh(probabilities[organ.index], masks[organ.name], transform, segmenter.voxel_smoothing)
        normals = outward_vertex_normals(torch.from_numpy(mesh.vertices).double(), torch.from_numpy(mesh.faces)).numpy()
        points = mesh.vertices[:, None, :] + OFFSETS_MM[None, :, None] * normals[:, None, :]  # (N, T, 3)
        grid = torch.from_numpy(transform.to_grid(points.reshape(-1, 3))).float()[None]
        features = []
        if "probability" in kinds:
            read = sample_features(probabilities[organ.index][None, None].float(), grid)
            features.append(read.reshape(len(points), -1))
        if "image" in kinds:
            features.append(sample_features(scan[None, None].float(), grid).reshape(len(points), -1))
        one_hot = torch.zeros(len(points), len(segmenter.organs))
        one_hot[:, organ.index - 1] = 1.0
        distance = signed_distance(inside, np.asarray(label.spacing)[::-1])  # mm; the array is indexed [k, j, i]
        samples.append(
            {
                "X": torch.cat([*features, one_hot], 1),
                "y": -torch.from_numpy(read_on_label(distance, label, mesh.vertices)).float(),
                "normals": normals,
                "mesh": mesh,
                "organ": organ.name,
                "label": label.with_array(inside.astype(np.uint8)),
            }
        )
    return samples


def moved_dice(sample: dict, moves: torch.Tensor) -> float:
    """Dice (as the report scores it) of ``sample``'s mesh with each vertex moved ``moves (N,)`` mm outward."""
    verts = sample["mesh"].vertices + moves.numpy()[:, None] * sample["normals"]
    return mesh_dice_iou(Mesh(verts, sample["mesh"].faces), sample["label"])[0]


def organ_mean(samples: list[dict], dice: list[float]) -> float:
    """The mean over organs of each organ's mean Dice (the report's headline)."""
    by_organ: dict[str, list[float]] = {}
    for sample, d in zip(samples, dice):
        by_organ.setdefault(sample["organ"], []).append(d)
    return float(np.mean([np.mean(v) for v in by_organ.values()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--model", default="unet-headneck-ct")
    add_probe_arguments(parser, FEATURES, "probability,image")
    args = parser.parse_args()
    kinds = probe_kinds(args, FEATURES)
    model = load_model(args.model, "cpu")
    if model.kind != "unet" or not model.card.get("organs"):
        raise SystemExit(f"{args.model} is not a several-organ U-Net + MC model")
    segmenter = Segmenter(model)
    split, cases = model_split(model.card), read_msd(args.data)

    def samples(ids):
        return [s for c in ids for s in case_samples(segmenter, cases[c], kinds)]

    train, val = samples(split["train"][: args.train_cases or None]), samples(split["val"])
    for s in train + val:
        s["y"] = s["y"].clamp(-CLIP_MM, CLIP_MM)
    probe = Probe(train, [val], args.epochs, clip=CLIP_MM)
    y_val = torch.cat([s["y"] for s in val])
    print(f"validation R^2 at the end {r_squared(torch.cat([probe(s) for s in val]), y_val):.3f}")
    for alpha in (0.0, 0.25, 0.5, 1.0):
        dice = [moved_dice(s, alpha * probe(s)) for s in val]
        print(
            f"validation Dice, moves x {alpha}: {organ_mean(val, dice):.4f}" + ("  (U-Net + MC)" if not alpha else "")
        )
    print(f"validation Dice, the true residuals (oracle): {organ_mean(val, [moved_dice(s, s['y']) for s in val]):.4f}")


if __name__ == "__main__":
    main()
