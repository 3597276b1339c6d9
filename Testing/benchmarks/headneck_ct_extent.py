"""Where a head-and-neck CT model's errors lie along the body axis: inside each organ's contoured slices or beyond them.

Usage:
    python Testing/benchmarks/headneck_ct_extent.py [--data ../shared/data/openkbp-ct] [--split val]
        [--models unet-headneck-ct ...] [--cases N] [--threads 1]

Planners contour some organs over part of their length (the oesophagus stops where the treatment
region stops), and the held-out labels call the rest background. For every case of the split (the
model card's split, as ``headneck_ct_report.py`` reads it) the several-organ model's voxels on the
whole-scan grid (:func:`~imagetomesh.scan.organ_masks`, what ``segment`` meshes) are compared with the
label resampled there (nearest), per organ where it was contoured:

- ``dice``: the voxel Dice;
- ``within contour``: the Dice after removing the predicted voxels in the axial slices beyond the
  label's contoured extent (an oracle: it reads the label); ``below`` / ``above``: only those beyond
  its lower / upper end.

It then prints, from the training split's labels, where each organ's contour ends (mm from the scan's
lower and upper ends) and how long it is. Numbers only; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headneck_ct_report import model_split, scored_organs  # noqa: E402

from imagetomesh.inference import Segmenter  # noqa: E402
from imagetomesh.io.images import read_image  # noqa: E402
from imagetomesh.metrics import dice  # noqa: E402
from imagetomesh.preprocessing import resample_to_grid  # noqa: E402
from imagetomesh.scan import organ_masks  # noqa: E402
from imagetomesh.training.msd import read_msd  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: columns of the per-organ table: the voxels kept in each
VARIANTS = ("dice", "within contour", "below", "above")


def beyond_removed(mask: np.ndarray, first: int, last: int, below: bool, above: bool) -> np.ndarray:
    """``mask (D, H, W)`` without its axial slices (axis 0, inferior first) below ``first`` and/or above ``last``."""
    out = mask.copy()
    if below:
        out[:first] = False
    if above:
        out[last + 1 :] = False
    return out


def case_scores(segmenter: Segmenter, image, label, organs) -> dict[str, tuple[float, ...]]:
    """``{organ name: Dice per VARIANTS}`` of one whole scan on the model's scan grid."""
    _, transform, probabilities = segmenter.scan_probabilities(image)
    if abs(transform.grid_to_lps[2, 2]) < abs(transform.grid_to_lps[2, :3]).max():
        raise SystemExit("the model grid's third axis is not the patient's superior-inferior one")
    labels = resample_to_grid(label.with_array(label.array.astype(np.float32)), transform, "nearest", 0.0)
    labels = labels.numpy().astype(np.int64)
    masks = organ_masks(probabilities, organs)
    flipped = transform.grid_to_lps[2, 2] < 0  # axis 0 runs superior -> inferior
    scores = {}
    for organ in organs:
        truth = labels == organ.label
        if not truth.any():
            continue
        mask = masks[organ.name]
        if mask is None:
            scores[organ.name] = (0.0,) * len(VARIANTS)
            continue
        slices = np.flatnonzero(truth.any(axis=(1, 2)))
        first, last = int(slices[0]), int(slices[-1])
        lower, upper = (False, True) if flipped else (True, False)
        scores[organ.name] = (
            dice(mask, truth),
            dice(beyond_removed(mask, first, last, True, True), truth),
            dice(beyond_removed(mask, first, last, lower, upper), truth),
            dice(beyond_removed(mask, first, last, upper, lower), truth),
        )
    return scores


def contour_extents(msd, ids, organs) -> None:
    """Print, per organ over the cases ``ids``, where its contour ends (mm from the scan's ends) and its length."""
    ends: dict[str, list[tuple[float, float, float]]] = {o.name: [] for o in organs}
    for case_id in ids:
        label = read_image(msd[case_id].label)
        array = np.asarray(label.array)
        axis_z = int(np.argmax(np.abs(label.direction[2])))  # the index axis (i, j, k) nearest to S
        spacing = float(label.spacing[axis_z])
        along = 2 - axis_z  # numpy axis of that index axis
        superior_last = label.direction[2, axis_z] > 0
        n = array.shape[along]
        for organ in organs:
            present = np.flatnonzero((array == organ.label).any(axis=tuple(a for a in range(3) if a != along)))
            if len(present) == 0:
                continue
            lo, hi = int(present[0]), int(present[-1])
            below, above = (lo, n - 1 - hi) if superior_last else (n - 1 - hi, lo)
            ends[organ.name].append((below * spacing, above * spacing, (hi - lo) * spacing))
    print(f"\ncontour ends in the {len(ids)} training cases (mm; median [10th, 90th percentile]):")
    for name, rows in ends.items():
        if not rows:
            continue
        values = np.array(rows)
        cells = [f"{np.median(v):.0f} [{np.percentile(v, 10):.0f}, {np.percentile(v, 90):.0f}]" for v in values.T]
        print(
            f"  {name:15s} n={len(rows):3d}  above scan's lower end {cells[0]:16s}  "
            f"below its upper end {cells[1]:16s}  length {cells[2]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--models", nargs="+", default=["unet-headneck-ct"])
    parser.add_argument("--cases", type=int, default=0, help="only the first N cases of the split (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    msd = read_msd(args.data)
    split = None
    for name in args.models:
        segmenter = Segmenter(name, device="cpu")
        split = model_split(segmenter.model.card)
        ids = split[args.split][: args.cases or None]
        per_organ: dict[str, list[tuple[float, ...]]] = {}
        for case_id in ids:
            case = msd[case_id]
            organs = scored_organs(case, segmenter.organs)
            scores = case_scores(segmenter, read_image(case.image), read_image(case.label), organs)
            for organ_name, values in scores.items():
                per_organ.setdefault(organ_name, []).append(values)
            print(f"{name} {case_id}", flush=True)
        print(f"\n{name}, {args.split} split, {len(ids)} cases: voxel Dice on the scan grid")
        print(f"  {'organ':15s} " + " ".join(f"{v:>15s}" for v in VARIANTS))
        means = {o: np.mean(v, axis=0) for o, v in per_organ.items()}
        for organ_name, m in means.items():
            print(f"  {organ_name:15s} " + " ".join(f"{x:15.3f}" for x in m))
        print(f"  {'mean':15s} " + " ".join(f"{x:15.3f}" for x in np.mean(list(means.values()), axis=0)))
    if split is not None:
        contour_extents(msd, split["train"], segmenter.organs)


if __name__ == "__main__":
    main()
