"""Write the organ layout of a several-organ model's training labels into its card (``input.organ_layout``).

Usage:
    python tools/organ_layout.py MODEL_DIR [MODEL_DIR ...] [--data ../shared/data/openkbp-ct]

For each model folder: its card's organs, the training cases of its split (``data.split_file``), their labels
read from ``--data`` (an MSD folder), and :func:`imagetomesh.training.msd.label_layout` of them, stored in the
card's ``input`` block, where ``segment`` reads it to refuse a scan whose organs do not lie as in those labels
(:mod:`imagetomesh.organ_layout`). ``tools/bundle_model.py`` does the same for a model it bundles; this is for
cards bundled before. Only the card changes (written atomically); the weights and their checksum stay.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imagetomesh.io.atomic import atomic_write
from imagetomesh.organs import organs_of
from imagetomesh.training.msd import label_layout, read_msd
from imagetomesh.weights import CARD_NAME, read_card

REPO = Path(__file__).resolve().parents[1]


def layout_block(card: dict, data: Path) -> dict:
    """The ``organ_layout`` block of ``card``'s training labels, read from the MSD folder ``data``."""
    organs = organs_of(card)
    if organs is None:
        raise SystemExit(f"model {card.get('name')} meshes one object: an organ layout is for several organs")
    split = json.loads((REPO / card["data"]["split_file"]).read_text(encoding="utf-8"))
    cases = read_msd(data)
    return label_layout([cases[c] for c in split["train"]], organs).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "openkbp-ct")
    args = parser.parse_args()
    made: dict[str, dict] = {}
    for folder in args.models:
        card = read_card(folder)
        key = json.dumps([card["data"]["split_file"], card["organs"]], sort_keys=True)
        if key not in made:
            made[key] = layout_block(card, args.data)
        card["input"]["organ_layout"] = made[key]
        lines = (folder / CARD_NAME).read_text(encoding="utf-8").splitlines()
        indent = len(lines[1]) - len(lines[1].lstrip(" ")) if len(lines) > 1 else 2  # keep the card's own
        with atomic_write(folder / CARD_NAME) as tmp:
            tmp.write_text(json.dumps(card, indent=indent))
        print(f"{folder}: organ layout of {made[key]['cases']} training cases")


if __name__ == "__main__":
    main()
