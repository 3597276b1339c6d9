"""Write the run splits of K U-Nets, each trained on one part of a split file's training cases (cross-fitting).

Usage:
    python tools/fold_splits.py Resources/Splits/hippocampus.json runs/hip-fold [--folds 2] [--seed 0]

The training cases (sorted, then shuffled by Python's ``random.Random(seed)``) are cut into ``--folds`` parts of
equal size (within one case); fold ``k`` (``a``, ``b``, ...) gets ``PREFIX-k/split.json``: ``train`` its part,
``val`` and ``test`` the split file's, and ``heldout_train`` the other parts' cases, which that fold's model never
sees. ``imagetomesh train ... --out PREFIX-k`` then trains on that part (a run folder's ``split.json`` is its split).
The folds' models give every training case a model that did not train on it
(``Testing/benchmarks/mesh_residual_probe.py --folds``). A run folder that has a split already is left as it is.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path


def fold_splits(split: dict[str, list[str]], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """``folds`` run splits that share ``split``'s ``val`` and ``test`` and cut its ``train`` into parts."""
    if not 2 <= folds <= min(len(split["train"]), len(string.ascii_lowercase)):
        raise ValueError(f"--folds must be between 2 and {min(len(split['train']), 26)}, not {folds}")
    train = sorted(split["train"])
    random.Random(seed).shuffle(train)
    bounds = [k * len(train) // folds for k in range(folds + 1)]
    parts = [train[a:b] for a, b in zip(bounds, bounds[1:])]
    return [
        {
            "train": sorted(part),
            "val": split["val"],
            "test": split["test"],
            "heldout_train": sorted(c for other in parts if other is not part for c in other),
        }
        for part in parts
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("split_file", type=Path)
    parser.add_argument("prefix", help="run folders PREFIX-a, PREFIX-b, ...")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    split = json.loads(args.split_file.read_text(encoding="utf-8"))
    try:
        splits = fold_splits(split, args.folds, args.seed)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    for letter, fold in zip(string.ascii_lowercase, splits):
        path = Path(f"{args.prefix}-{letter}") / "split.json"
        if path.exists():
            print(f"{path}: exists, left as it is")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(fold, indent=1), encoding="utf-8")
        tmp.replace(path)
        print(f"{path}: {len(fold['train'])} training cases")


if __name__ == "__main__":
    main()
