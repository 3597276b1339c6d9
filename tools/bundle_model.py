"""Copy a training run's best model into Resources/Models/<name> with a complete model card.

Usage:
    python tools/bundle_model.py RUN_DIR NAME --description TEXT --command "imagetomesh train ..." [--history TEXT]
        [--which best|final] [--into Resources/Ablations]

``--into`` another folder keeps a model out of the ``imagetomesh models`` list: the
Voxel2Mesh ablation variants live in ``Resources/Ablations`` and only the results report
loads them (by path).

The card keeps what the trainer wrote (kind, architecture config, grid, split, seed,
hardware, validation metrics, steps) and adds the description, the training data and its
licence, the command that reproduces the weights, and the run's history.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from imagetomesh.training.configs import HIPPOCAMPUS_GRID
from imagetomesh.weights import CARD_NAME, WEIGHTS_NAME, read_card, sha256_of

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS_DATA = {
    "name": "Medical Segmentation Decathlon Task04 Hippocampus (labels 1 and 2 merged)",
    "source": "Vanderbilt University Medical Center via the Medical Segmentation Decathlon (Simpson et al. 2019; Antonelli et al. 2022)",
    "licence": "CC-BY-SA 4.0",
    "split_file": "Resources/Splits/hippocampus.json",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--description", required=True)
    parser.add_argument("--command", required=True, help="the command that reproduces the weights")
    parser.add_argument("--history", default="", help="anything about this run that the command alone does not say")
    parser.add_argument("--which", default="best", choices=("best", "final"))
    parser.add_argument("--into", type=Path, default=REPO / "Resources" / "Models", help="folder of bundled models")
    args = parser.parse_args()

    source = args.run / args.which
    card = read_card(source)
    if sha256_of(source / WEIGHTS_NAME) != card["sha256"]:
        raise SystemExit(f"{source} weights do not match their card")
    target = args.into / args.name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / WEIGHTS_NAME, target / WEIGHTS_NAME)
    grid = HIPPOCAMPUS_GRID.to_dict()
    if card["grid"]["shape"] == grid["shape"] and card["grid"]["spacing"] == grid["spacing"]:
        # every training image is stored in this orientation, so the model was trained in it
        card["grid"] = grid
    split = card["training"].pop("split")
    card["training"]["data"] = HIPPOCAMPUS_DATA
    card["training"]["split_sizes"] = {k: len(v) for k, v in split.items() if isinstance(v, list)}
    card["training"]["command"] = args.command
    if args.history:
        card["training"]["history"] = args.history
    card = {"name": args.name, "description": args.description, "data": HIPPOCAMPUS_DATA, **card}
    card["validation_metrics"] = card.pop("metrics", {})
    (target / CARD_NAME).write_text(json.dumps(card, indent=2))
    print(f"bundled {target}")


if __name__ == "__main__":
    main()
