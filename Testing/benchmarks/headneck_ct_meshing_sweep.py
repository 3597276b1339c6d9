"""How a several-organ CT U-Net's meshes score under other meshing settings: probability level, smoothing, upsampling.

Usage:
    python Testing/benchmarks/headneck_ct_meshing_sweep.py [--data ../shared/data/openkbp-ct] [--split val]
        [--model unet-headneck-ct] [--cases N] [--levels 0.4 0.5 0.6] [--smoothing 0.2 0.4 0.6]
        [--upsample 2 3] [--threads 1]

``segment`` meshes each organ of a U-Net from its class probability resampled twice finer and kept at
0.5 near the organ's voxels, smoothed at the model's smoothing (:func:`imagetomesh.voxel_meshing.voxel_organ_mesh`).
For every case of the split (the model card's split, as ``headneck_ct_report.py`` reads it) the whole scan's
probabilities are computed once, then every combination of the settings is meshed and scored as the
report scores it (the mesh rasterised on the label's grid, per organ where it was contoured; an organ
not found or too small to mesh scores 0). Prints, per organ, the default's Dice and the best setting's,
then the mean over organs of each setting. Tune on the validation split only. Numbers only; nothing is written.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headneck_ct_report import model_split, scored_organs  # noqa: E402

from imagetomesh.errors import InputError  # noqa: E402
from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING  # noqa: E402
from imagetomesh.inference import Segmenter  # noqa: E402
from imagetomesh.io.images import read_image  # noqa: E402
from imagetomesh.metrics import mesh_dice_iou  # noqa: E402
from imagetomesh.scan import organ_masks  # noqa: E402
from imagetomesh.training.msd import read_msd  # noqa: E402
from imagetomesh.voxel_meshing import voxel_organ_mesh  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def case_scores(segmenter: Segmenter, image, label, organs, settings) -> dict[tuple, float]:
    """``{(organ name, level, smoothing, upsample): mesh Dice}`` of one whole scan for every setting."""
    _, transform, probabilities = segmenter.scan_probabilities(image)
    masks = organ_masks(probabilities, organs)
    scores = {}
    for organ in organs:
        truth = label.with_array((label.array == organ.label).astype(np.uint8))
        if not truth.array.any():
            continue
        for setting in settings:
            level, smoothing, upsample = setting
            dice = 0.0
            if masks[organ.name] is not None:
                try:
                    mesh = voxel_organ_mesh(
                        probabilities[organ.index], masks[organ.name], transform, smoothing, level, upsample
                    )
                    dice = mesh_dice_iou(mesh, truth)[0]
                except InputError:  # too small to mesh: as segment does, not found
                    pass
            scores[(organ.name, *setting)] = dice
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--model", default="unet-headneck-ct")
    parser.add_argument("--cases", type=int, default=0, help="only the first N cases of the split (0: all)")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.4, 0.45, 0.5, 0.55, 0.6])
    parser.add_argument("--smoothing", type=float, nargs="+", default=[0.2, DEFAULT_SMOOTHING, 0.6])
    parser.add_argument("--upsample", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = Segmenter(args.model, device="cpu")
    if segmenter.organs is None or segmenter.organ_decoders:
        raise SystemExit(f"{args.model} is not a several-organ U-Net: its meshes do not come from its voxels")
    default = (0.5, segmenter.voxel_smoothing, 2)
    settings = sorted(set(itertools.product(args.levels, args.smoothing, args.upsample)) | {default})
    msd = read_msd(args.data)
    ids = model_split(segmenter.model.card)[args.split][: args.cases or None]
    per_key: dict[tuple, list[float]] = {}
    for case_id in ids:
        case = msd[case_id]
        organs = scored_organs(case, segmenter.organs)
        scores = case_scores(segmenter, read_image(case.image), read_image(case.label), organs, settings)
        for key, value in scores.items():
            per_key.setdefault(key, []).append(value)
        print(f"{args.model} {case_id}", flush=True)
    means = {key: float(np.mean(v)) for key, v in per_key.items()}
    organ_names = [o.name for o in segmenter.organs if (o.name, *default) in means]
    print(f"\n{args.model}, {args.split} split, {len(ids)} cases: mesh Dice (level, smoothing, upsample)")
    for name in organ_names:
        best = max(settings, key=lambda s: means[(name, *s)])
        print(f"  {name:15s} default {means[(name, *default)]:.4f}  best {means[(name, *best)]:.4f} at {best}")
    print("  mean over organs:")
    for setting in settings:
        mark = "  (default)" if setting == default else ""
        print(f"    {setting}: {np.mean([means[(n, *setting)] for n in organ_names]):.4f}{mark}")


if __name__ == "__main__":
    main()
