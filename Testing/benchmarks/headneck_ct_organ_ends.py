"""Where a head-and-neck CT model ends an organ along the body axis against where the planner's contour ends.

Usage:
    python Testing/benchmarks/headneck_ct_organ_ends.py [--data ../shared/data/openkbp-ct] [--split train]
        [--model unet-headneck-ct] [--organ brainstem] [--cases N] [--threads 1]

For every case of the split (the model card's, as ``headneck_ct_report.py`` reads it; ``train`` too: a split
the model was trained on is the largest sample of how the planners contour) where the organ was contoured,
``segment``'s mesh of it is rasterised on the label grid, as the report scores it, and compared slice by slice
with the contour: the Dice, the lowest and highest axial slice of each (mm; negative: the model's end lies
below the contour's), whether the contour reaches the scan's upper or lower end (an organ the scan cuts) and
how many slices it spans. The summary groups the Dice by the end differences and by the contoured length, and
gives the Dice the mesh would score with its lowest and/or highest 1 or 2 axial slices removed on the label grid
(does the model run an organ systematically past the planners' ends?), and the Dice of its voxels within the
contour's own axial slices (how much of the error is in-plane).

Why: the brainstem meets the spinal cord where the planner decided, and a scan cut above the skull base shows
only the brainstem's lowest slices; a case's brainstem Dice can hinge on either. Numbers only; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headneck_ct_report import REPO, model_split, scored_organs  # noqa: E402

from imagetomesh.geometry.raster import rasterize_mesh  # noqa: E402
from imagetomesh.inference import Segmenter  # noqa: E402
from imagetomesh.io.images import read_image  # noqa: E402
from imagetomesh.metrics import dice  # noqa: E402
from imagetomesh.training.msd import read_msd  # noqa: E402
from imagetomesh.zoo import load_model  # noqa: E402


def slab_ends(first: int, last: int, label) -> tuple[float, float]:
    """The label's axial slices ``first`` to ``last`` (array axis 0) as their lowest and highest position in mm
    along the patient's superior axis."""
    affine = label.index_to_lps
    if abs(affine[2, 2]) < abs(affine[2, :3]).max():
        raise SystemExit("the label's slices (array axis 0) are not axial: this script reads axial slices only")
    superior = affine[2, 2] * np.array([first, last]) + affine[2, 3]
    return float(superior.min()), float(superior.max())


def axial_ends(mask: np.ndarray, label) -> tuple[float, float] | None:
    """:func:`slab_ends` of the slices that hold ``mask`` ``(z, y, x)`` (the label's array), None for an empty mask."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    return slab_ends(slices[0], slices[-1], label) if len(slices) else None


#: (slices removed at the lower end, at the upper end) of the trimmed Dice in the summary
TRIMS = [(lower, upper) for lower in range(3) for upper in range(3)]


def trimmed(mask: np.ndarray, lower: int, upper: int, label) -> np.ndarray:
    """``mask (z, y, x)`` (the label's array) without its ``lower`` lowest and ``upper`` highest axial slices that
    hold it (lowest: inferior, whichever way the label's slices run)."""
    if label.index_to_lps[2, 2] < 0:
        lower, upper = upper, lower
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    out = mask.copy()
    if len(slices):
        out[slices[0] : slices[0] + lower] = False
        out[slices[-1] + 1 - upper : slices[-1] + 1] = False
    return out


def case_row(segmenter: Segmenter, image, label, organ) -> dict:
    truth = label.array == organ.label
    mesh = segmenter.segment_organs(image).get(organ.name)
    predicted = rasterize_mesh(mesh, label) > 0 if mesh is not None else np.zeros_like(truth)
    ends, contour = axial_ends(predicted, label), axial_ends(truth, label)
    scan = slab_ends(0, len(truth) - 1, label)
    return {
        "dice": dice(predicted, truth),
        "lower_mm": None if ends is None else ends[0] - contour[0],
        "upper_mm": None if ends is None else ends[1] - contour[1],
        "cut": contour[0] == scan[0] or contour[1] == scan[1],
        "slices": int(truth.any(axis=(1, 2)).sum()),
        "trimmed_dice": {f"{lo},{hi}": dice(trimmed(predicted, lo, hi, label), truth) for lo, hi in TRIMS},
        "dice_within_contour_slices": dice(predicted & truth.any(axis=(1, 2))[:, None, None], truth),
    }


def summary(rows: list[dict]) -> list[str]:
    dices = np.array([r["dice"] for r in rows])
    lines = [f"{len(rows)} cases: Dice {dices.mean():.3f}"]
    for key, name in (("lower_mm", "lower end"), ("upper_mm", "upper end")):
        diff = np.array([r[key] for r in rows if r[key] is not None])
        p10, p50, p90 = np.percentile(diff, [10, 50, 90])
        far = np.array([r[key] is None or abs(r[key]) >= 10 for r in rows])
        split = (
            f"Dice where it differs by 10 mm or more {dices[far].mean():.3f} ({far.sum()} cases), "
            f"elsewhere {dices[~far].mean():.3f}"
            if far.any()
            else "it differs by 10 mm or more in no case"
        )
        lines.append(
            f"{name}, model minus contour (mm): median {p50:+.1f}, 10th-90th percentile {p10:+.1f} to {p90:+.1f}; "
            + split
        )
    cut = np.array([r["cut"] for r in rows])
    if cut.any():
        lines.append(f"cut by the scan's end: Dice {dices[cut].mean():.3f} ({cut.sum()} cases)")
    slices = np.array([r["slices"] for r in rows])
    for lo, hi in ((0, 8), (8, 14), (14, 10**6)):
        sel = (slices >= lo) & (slices < hi)
        if sel.any():
            lines.append(
                f"contoured over {lo}-{hi if hi < 10**6 else ''} slices: Dice {dices[sel].mean():.3f} ({sel.sum()} cases)"
            )
    trims = ", ".join(f"{key} {np.mean([r['trimmed_dice'][key] for r in rows]):.3f}" for key in rows[0]["trimmed_dice"])
    lines.append(f"Dice with (lowest, highest) slices removed: {trims}")
    within = np.mean([r["dice_within_contour_slices"] for r in rows])
    lines.append(f"Dice of the mesh's voxels in the contour's own slices only (the in-plane part): {within:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--model", default="unet-headneck-ct")
    parser.add_argument("--organ", default="brainstem")
    parser.add_argument("--cases", type=int, default=0, help="only the first N cases of the split (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, "cpu")
    segmenter = Segmenter(model)
    organ = next((o for o in segmenter.organs if o.name == args.organ), None)
    if organ is None:
        raise SystemExit(f"{args.model} has no organ {args.organ!r}: {', '.join(o.name for o in segmenter.organs)}")
    msd = read_msd(args.data)
    ids = model_split(model.card)[args.split][: args.cases or None]
    rows = []
    for case_id in ids:
        case = msd[case_id]
        if organ not in scored_organs(case, [organ]):
            continue
        row = case_row(segmenter, read_image(case.image), read_image(case.label), organ)
        rows.append(row)
        print(json.dumps({"case": case_id, **row}), flush=True)
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main()
