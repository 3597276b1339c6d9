"""U-Net + MC's validation Dice for other members and weights of the head-and-neck U-Net ensemble.

Usage:
    python Testing/benchmarks/ct_ensemble_members.py [--members unet-headneck-ct unet-headneck-ct-wide-gpu RUN/best]
        [--weights 0.5,0.5 0.6,0.4 ...] [--split val] [--cases 0] [--json FILE]

``segment`` meshes each organ of a whole scan from the mean of its card's U-Nets' class probabilities (the model's
own and its ``ensemble``'s, equal weights). Here each member (a bundled name or a model folder: a run's ``best/``
or ``final/``) runs once over each scan of the split (the scan grid ``segment`` builds, every member over the whole
grid, bf16 where ``segment`` uses it), and for each weighting (one weight per member, normalised to sum 1) the
weighted mean is meshed and scored by ``headneck_ct_report.py``'s own ``evaluate_case`` (its Dice: the mesh rasterised on the
label grid, each organ where it was contoured). The meshing is ``unet-headneck-ct``'s (its card's smoothing and organs);
every member must find the same organs on the same grid.

Why: to tell whether a weighting or an added member raises the ensemble before a card is changed, in one pass over
the scans (about 4 s a scan and weighting on one thread). Tune on ``--split val``; never ``test``. Results are in
docs/headneck-ct-experiments.md (session 57).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from headneck_ct_report import REPO, evaluate_case, model_split, scored_organs

from imagetomesh.inference import Segmenter
from imagetomesh.io.images import read_image
from imagetomesh.nn.precision import bf16_autocast
from imagetomesh.scan import net_probabilities
from imagetomesh.training.msd import read_msd
from imagetomesh.zoo import ensemble_unet, load_model


class WeightedMembers(Segmenter):
    """U-Net + MC meshing the weighted mean of probabilities given per scan (:attr:`members`, :attr:`weights`)."""

    members: tuple = ()
    weights: tuple = ()

    def scan_probabilities(self, volume, features=None):  # the members' probabilities were computed for this scan
        image, transform, probabilities = self.members
        return image, transform, sum(w * p for w, p in zip(self.weights, probabilities))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--members", nargs="+", default=["unet-headneck-ct", "unet-headneck-ct-wide-gpu"])
    parser.add_argument("--weights", nargs="+", default=None, help="comma-separated, one per member (default: equal)")
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--cases", type=int, default=0, help="only the first N cases of the split (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the per-case Dice here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weightings = [[float(w) for w in text.split(",")] for text in (args.weights or [])] or [[1.0] * len(args.members)]
    if any(len(w) != len(args.members) or min(w) < 0 or sum(w) <= 0 for w in weightings):
        parser.error("each --weights needs one non-negative weight per member, not all zero")
    weightings = [tuple(x / sum(w) for x in w) for w in weightings]

    model = load_model("unet-headneck-ct", "cpu")
    segmenter = WeightedMembers(model)
    segmenter.check_input = False  # validation scans: the layout guard refuses none of them
    card = model.card
    nets = [
        segmenter.scan_unets[0]
        if name == "unet-headneck-ct"
        else ensemble_unet(name, "this probe", card["organs"], card["grid"], "cpu", "choose a CT U-Net")
        for name in args.members
    ]
    ids = model_split(card)[args.split][: args.cases or None]
    msd = read_msd(args.data)
    per_case = {w: {} for w in weightings}
    for case_id in ids:
        case = msd[case_id]
        image, label = read_image(case.image), read_image(case.label)
        start = time.perf_counter()
        grid_image, transform = segmenter.scan_image(image)
        with bf16_autocast(segmenter.bf16, model.device):
            probabilities = [net_probabilities(net, grid_image[None, None], segmenter.spec.shape) for net in nets]
        segmenter.members = (grid_image, transform, probabilities)
        for weights in weightings:
            segmenter.weights = weights
            scores, _, _ = evaluate_case(segmenter, image, label, scored_organs(case, segmenter.organs))
            per_case[weights][case_id] = {name: s["dice"] for name, s in scores.items()}
        shown = " ".join(f"{np.mean(list(per_case[w][case_id].values())):.3f}" for w in weightings)
        print(f"{case_id}: {shown} ({time.perf_counter() - start:.0f} s)", flush=True)
    organs = [o.name for o in segmenter.organs]
    summary = {}
    for weights in weightings:
        cases = per_case[weights].values()
        means = {o: float(np.mean([c[o] for c in cases if o in c])) for o in organs if any(o in c for c in cases)}
        summary[",".join(f"{w:.3f}" for w in weights)] = {"organs": means, "mean": float(np.mean(list(means.values())))}
        shown = " ".join(f"{o} {m:.4f}" for o, m in means.items())
        print(f"weights {','.join(f'{w:.2f}' for w in weights)}: {shown} mean {np.mean(list(means.values())):.4f}")
    if args.json:
        per = {",".join(f"{w:.3f}" for w in k): v for k, v in per_case.items()}
        Path(args.json).write_text(json.dumps({"args": vars(args), "per_case": per, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
