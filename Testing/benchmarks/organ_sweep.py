"""What the per-organ setting sweeps on head-and-neck validation scans share (``nudf_surface_offsets.py``,
``v2m_move_scales.py``): their command line, the cases they score, and the table of mean Dice per organ and setting."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from headneck_ct_report import REPO, model_split

from imagetomesh.core.volume import Volume
from imagetomesh.io.images import read_image
from imagetomesh.training.msd import Case, read_msd


def sweep_parser(description: str, model: str) -> argparse.ArgumentParser:
    """A parser with ``--data``, ``--model`` (default ``model``), ``--split`` (validation only), ``--first``,
    ``--cases``, ``--threads`` and ``--json``; the sweep adds its own candidates."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--model", default=model)
    parser.add_argument("--split", default="val", choices=["val"])
    parser.add_argument("--first", type=int, default=0, help="skip this many cases of the split")
    parser.add_argument("--cases", type=int, default=10, help="score this many cases from --first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the per-case numbers here")
    return parser


def sweep_scans(args: argparse.Namespace, card: dict) -> Iterator[tuple[Case, Volume, Volume]]:
    """``(case, image, label)`` of each case of the model's ``args.split`` that ``--first`` and ``--cases`` choose."""
    msd = read_msd(args.data)
    for case_id in model_split(card)[args.split][args.first : args.first + args.cases]:
        case = msd[case_id]
        yield case, read_image(case.image), read_image(case.label)


def report_sweep(
    dice: dict[str, dict[str, list[float]]], settings: list[float], organs, name: str, args: argparse.Namespace
) -> list[float]:
    """Print the markdown table of ``dice`` (organ name -> case id -> Dice per setting) averaged over cases, one row
    per organ of ``organs`` that was scored, and each organ's best setting; write ``dice`` to ``--json`` with the
    ``settings`` under ``name``. Returns the best setting per scored organ."""
    print("| organ | cases | " + " | ".join(f"{s:+.2f}" for s in settings) + " | best |")
    print("|---|---|" + "---|" * (len(settings) + 1))
    best, columns = [], []
    for organ in organs:
        if organ.name not in dice:
            continue
        means = np.mean(list(dice[organ.name].values()), axis=0)
        columns.append(means)
        best.append(settings[int(np.argmax(means))])
        cells = " | ".join(f"{m:.3f}" for m in means)
        print(f"| {organ.title} | {len(dice[organ.name])} | {cells} | {best[-1]:+.2f} |")
    print("| mean | | " + " | ".join(f"{m:.3f}" for m in np.mean(columns, axis=0)) + " | |")
    print(f"best {name} per organ:", best)
    if args.json:
        Path(args.json).write_text(json.dumps({name: settings, "dice": dice}, indent=1))
    return best
