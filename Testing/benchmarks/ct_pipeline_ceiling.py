"""What `segment`'s CT pipeline loses with a perfect network: the labels themselves put through it.

Usage:
    python Testing/benchmarks/ct_pipeline_ceiling.py [--method unet|nudf] [--split val] [--cases 0]
        [--ids openkbp_004,...] [--no-region] [--meshing key=value ...] [--offsets] [--json FILE]

For each case of the split (``train`` or ``val``; never ``test``) and each organ contoured in it, the Dice
``headneck_ct_report.py`` scores (the mesh rasterised on the label's grid) of what ``segment_organs`` returns when the
network's output is replaced by the truth:

- ``--method unet`` (``unet-headneck-ct``): the class probabilities are the label's one-hot classes resampled
  trilinearly onto the scan grid (:meth:`~imagetomesh.inference.Segmenter.scan_image`: body crop, the 4 x 4 x 2.5 mm
  lattice), then meshed as U-Net + MC meshes a U-Net's (winning class, pieces, level 0.5 at 2x, smoothing).
- ``--method nudf`` (``nudf-headneck-ct``): the localiser (the card's U-Nets) runs as ``segment`` runs it and places
  each organ's crop and region, but the field is the exact unsigned distance (grid voxels, in the crop's isotropic
  frame, with its gradient) to the organ's label surface (``labelmap_to_mesh`` of its voxels, densely sampled), then
  meshed by NUDF's meshing (the card's ``meshing``, overridden by ``--meshing``); ``--no-region`` seeks the surface
  in the whole crop, with no localiser guide (its orientation then from the field alone); ``--offsets`` keeps the
  card's per-organ surface offsets (learned corrections of the network's field: off by default).

Why: a method's Dice is bounded by what its own pipeline keeps of a perfect prediction; where that bound is far
below 1, the pipeline (grid, meshing, region), not the network, is worth work. Numbers only; nothing is written but
``--json``. Validation results are in docs/headneck-ct-experiments.md (session 47).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from headneck_ct_report import REPO, evaluate_case, model_split, scored_organs
from nudf_surface_offsets import meshing_overrides
from scipy.spatial import cKDTree

from imagetomesh.core.transforms import grid_to_index_affine
from imagetomesh.geometry.isosurface import labelmap_to_mesh
from imagetomesh.geometry.sampling import sample_points_on_mesh
from imagetomesh.inference import Segmenter
from imagetomesh.io.images import read_image
from imagetomesh.nn.grid import grid_to_index, isotropic_voxel_size
from imagetomesh.preprocessing import resample_to_grid
from imagetomesh.scan import densest_crop_start
from imagetomesh.training.msd import read_msd
from imagetomesh.zoo import load_model

#: points sampled on an organ's label surface for its exact distance (about 0.1-0.2 mm apart on a mandible)
SURFACE_SAMPLES = 400_000


class LabelProbabilities(Segmenter):
    """U-Net + MC with the label (:attr:`label`, set per case) as its class probabilities."""

    label = None

    def scan_probabilities(self, volume, features=None):  # no U-Net ran: ``features`` stays empty
        image, transform = self.scan_image(volume)
        classes = len(self.organs) + 1
        probabilities = torch.stack(
            [
                resample_to_grid(self.label.with_array((self.label.array == c).astype(np.float32)), transform)
                for c in range(classes)
            ]
        )
        probabilities[0] += 1 - probabilities.sum(0)  # beyond the label image: background
        return image, transform, probabilities


class ExactField(Segmenter):
    """NUDF with the exact distance to the label's surface (:attr:`label`, set per case) as its field."""

    label = None

    def _organ_decoder_mesh(self, image, mask, organ, transform, probabilities, features=None):
        net = self.decoder_module  # what the parent runs on each crop (an inference copy of the model)
        surface = labelmap_to_mesh(self.label.with_array((self.label.array == organ.label).astype(np.uint8)))
        points = sample_points_on_mesh(
            torch.as_tensor(surface.vertices, dtype=torch.float64),
            torch.as_tensor(surface.faces.astype(np.int64)),
            SURFACE_SAMPLES,
            generator=torch.Generator().manual_seed(0),
        ).numpy()
        grid = transform.to_grid(points)
        scan_index = (np.c_[grid, np.ones(len(grid))] @ grid_to_index_affine(tuple(image.shape)[::-1]).T)[:, :3]
        tree = cKDTree(scan_index)
        crop = tuple(net.config.organ_crops[organ.index - 1])
        start = torch.as_tensor(densest_crop_start(mask, crop)[::-1], dtype=torch.float64)  # as the parent places it
        voxel = isotropic_voxel_size(crop)

        calls = []

        def exact_distance(features, crop_grid, chunk=None, organ=None):  # NUDF.query's signature
            """``crop_grid (1, N, 3)`` crop grid coordinates -> ``(1, N)`` distances, differentiable in the points."""
            calls.append(len(crop_grid[0]))
            index = grid_to_index(crop_grid[0].double().cpu(), crop[::-1]) + start
            _, nearest = tree.query(index.detach().numpy())
            gap = index - torch.as_tensor(tree.data[nearest])
            return ((gap**2).sum(-1).clamp_min(1e-12).sqrt() * voxel).float()[None]

        net.query = exact_distance
        try:
            mesh = super()._organ_decoder_mesh(image, mask, organ, transform, probabilities, features)
        finally:
            del net.query
        if not calls:  # the network's field was meshed, not the exact one: the patch missed the decoder `segment` runs
            raise RuntimeError("ExactField: the parent did not read the exact field; patch the module it runs")
        return mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--method", default="unet", choices=["unet", "nudf"])
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--cases", type=int, default=0, help="only the first N cases of the split (0: all)")
    parser.add_argument("--ids", default=None, help="comma-separated case ids instead of the split")
    parser.add_argument("--no-region", action="store_true", help="nudf: no localiser region or guide")
    parser.add_argument(
        "--meshing", nargs="*", default=[], metavar="KEY=VALUE", help="nudf: meshing config entries to override"
    )
    parser.add_argument("--offsets", action="store_true", help="nudf: keep the card's surface offsets")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the per-case Dice here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model("unet-headneck-ct" if args.method == "unet" else "nudf-headneck-ct", "cpu")
    if args.method == "nudf":
        config = model.module.config
        config.meshing = {**config.meshing, **meshing_overrides(args.meshing)}
        if not args.offsets:
            config.surface_offsets = None
        if args.no_region:
            model.module.meshes_near_mask = False
    segmenter = (LabelProbabilities if args.method == "unet" else ExactField)(model)
    segmenter.check_input = False  # the truth needs no guard; the localiser's layout check would refuse nothing here
    ids = args.ids.split(",") if args.ids else model_split(model.card)[args.split]
    if args.cases:
        ids = ids[: args.cases]
    msd = read_msd(args.data)
    per_case = {}
    for case_id in ids:
        case = msd[case_id]
        image, label = read_image(case.image), read_image(case.label)
        segmenter.label = label
        start = time.perf_counter()
        scores, _, _ = evaluate_case(segmenter, image, label, scored_organs(case, segmenter.organs))
        per_case[case_id] = {name: s["dice"] for name, s in scores.items()}
        shown = " ".join(f"{name} {dice:.3f}" for name, dice in per_case[case_id].items())
        print(f"{case_id}: {shown} ({time.perf_counter() - start:.0f} s)", flush=True)
    means = {
        o.name: float(np.mean([c[o.name] for c in per_case.values() if o.name in c]))
        for o in segmenter.organs
        if any(o.name in c for c in per_case.values())
    }
    print(" ".join(f"{name} {m:.4f}" for name, m in means.items()), f"mean {np.mean(list(means.values())):.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "per_case": per_case, "means": means}, indent=1))


if __name__ == "__main__":
    main()
