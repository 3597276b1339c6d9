"""Fit DALS priors of head-and-neck CT organs to three orthogonal curves on held-out organs ("annotate three
slices and fit"): the numbers that choose which CT organs get a bundled prior.

Usage:
    python Testing/benchmarks/ct_prior_fits.py PRIOR[=SHAPES] ... [--split val|test] [--organs 12]

PRIOR is a bundled prior name (``dals-parotid``) or a run's model folder (``runs/dals-parotid/model``);
SHAPES (default: the shape source the prior was trained on, from its card) names the shape source
whose held-out organs are fitted (:data:`~imagetomesh.training.dals_shapes.OPENKBP_ORGANS`).
For each organ (contoured, not cut by the scan; both parotids of a case): three closed curves, the
organ's outline on the axial, coronal and sagittal planes through its centroid (as a user would click
them on the CT), fitted with ``fit_curves``; Dice, Chamfer and HD95 against the organ's voxels, as
``Testing/benchmarks/dals_report.py`` measures them. Choose on ``val``; ``test`` once, for the record.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dals_report import curves_for, shape_metrics  # noqa: E402

from imagetomesh.fitting import fit_curves  # noqa: E402
from imagetomesh.training.dals_shapes import organ_masks, shape_split  # noqa: E402
from imagetomesh.weights import read_card  # noqa: E402
from imagetomesh.zoo import find_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "openkbp-ct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("priors", nargs="+")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--organs", type=int, default=12, help="held-out organs per prior at most")
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    print(f"{'prior':<34}{'organs':>7}{'Dice':>8}{'Chamfer mm':>12}{'HD95 mm':>9}{'s/fit':>7}")
    for spec in args.priors:
        prior, _, shapes = spec.partition("=")
        shapes = shapes or read_card(find_model(prior))["training"]["config"]["shapes"]
        organs = []
        for case_id in shape_split(shapes, args.data)[args.split]:
            organs += organ_masks(shapes, args.data, case_id)
            if len(organs) >= args.organs:
                break
        rows, seconds = [], []
        for organ in organs[: args.organs]:
            start = time.perf_counter()
            mesh = fit_curves(curves_for(organ.mask, 3), prior)
            seconds.append(time.perf_counter() - start)
            rows.append(shape_metrics(mesh, organ.mask, self_intersections=False))
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "chamfer_mm", "hd95_mm")}
        print(
            f"{spec:<34}{len(rows):>7}{mean['dice']:>8.3f}{mean['chamfer_mm']:>12.2f}{mean['hd95_mm']:>9.2f}"
            f"{np.mean(seconds):>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
