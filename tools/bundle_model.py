"""Copy a training run's best model into Resources/Models/<name> with a complete model card.

Usage:
    python tools/bundle_model.py RUN_DIR NAME --description TEXT --command "imagetomesh train ..." [--history TEXT]
        [--which best|final] [--into Resources/Ablations] [--data hippocampus|openkbp-ct] [--meshing JSON]
        [--average-with MODEL ...]

``--into`` another folder keeps a model out of the ``imagetomesh models`` list: the
Voxel2Mesh ablation variants live in ``Resources/Ablations`` and only the results report
loads them (by path).

The card keeps what the trainer wrote (kind, architecture config, grid, split, seed,
hardware, validation metrics, steps, organs) and adds the description, the training data and its
licence, what the model takes (the ``input`` block of :mod:`imagetomesh.compatibility`), the
command that reproduces the weights, the run's history and its training throughput (steps per
hour, from its log; training image passes, steps x batch x accumulation plus ``--init-passes``).
The run's split must be the data's split file. ``--average-with`` bundles the mean of the run's weights and
those of other models of the same architecture (a weight average of models fine-tuned from one another,
chosen on the validation split); the card names each (``training.averaged_with``: name and SHA-256), and its
steps and image passes are the largest of the averaged models'. A several-organ model's card also gets the organ
layout of its training labels (``input.organ_layout``, as ``tools/organ_layout.py`` writes it), read from ``--data-dir``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from imagetomesh.organs import organs_of
from imagetomesh.training.configs import HIPPOCAMPUS_GRID
from imagetomesh.training.msd import label_layout, read_msd
from imagetomesh.weights import CARD_NAME, WEIGHTS_NAME, average_states, load_state, read_card, sha256_of

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS_DATA = {
    "name": "Medical Segmentation Decathlon Task04 Hippocampus (labels 1 and 2 merged)",
    "source": "Vanderbilt University Medical Center via the Medical Segmentation Decathlon (Simpson et al. 2019; Antonelli et al. 2022)",
    "licence": "CC-BY-SA 4.0",
    "split_file": "Resources/Splits/hippocampus.json",
}


OPENKBP_DATA = {
    "name": "OpenKBP head-and-neck CT, 7 organs at risk (../shared/data/openkbp-ct, MSD layout; organs not "
    "contoured in a case were masked out of the loss, never taught as background)",
    "source": "OpenKBP grand challenge (A. Babier et al., Medical Physics 48:5549-5561, 2021; cite the paper), "
    "images from The Cancer Imaging Archive",
    "licence": "MIT-licensed repository (github.com/ababier/open-kbp); derived from TCIA collections; research use",
    "split_file": "Resources/Splits/openkbp-ct.json",
}
#: data name -> (card data block, the model's input block)
DATA = {
    "hippocampus": (
        HIPPOCAMPUS_DATA,
        {
            "modality": "MR",
            "body_region": "brain",
            "organs": ["hippocampus"],
            "intensity": "T1 MRI, normalised per volume",
            "max_extent_mm": [80, 96, 112],
            "note": "patch model: training crops are 27-41 x 33-43 x 42-55 mm around the hippocampus; "
            "the limit is twice the 40 x 48 x 56 mm model grid",
        },
    ),
    "openkbp-ct": (
        OPENKBP_DATA,
        {
            "modality": "CT",
            "body_region": "head and neck",
            "organs": [
                "brainstem",
                "spinal_cord",
                "right_parotid",
                "left_parotid",
                "esophagus",
                "larynx",
                "mandible",
            ],
            "intensity": "HU",
            "min_extent_mm": [40, 100, 100],
            "note": "whole scans: trained on head-and-neck CT slabs of 55-420 mm, 350-690 mm fields of view",
        },
    ),
}


def steps_per_hour(run: Path) -> float | None:
    """Optimiser steps per hour of training time, from the run's ``log.jsonl`` (last entry), or None.

    Entries of ImplicitMeshNet's ``g_phi`` pretraining phase (``"phase": "pretrain"``, its own step
    count and clock) are not the bundled network's steps and are skipped."""
    log = run / "log.jsonl"
    if not log.is_file():
        return None
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    entries = [e for e in entries if e.get("time_s") and e.get("phase") != "pretrain"]
    if not entries:
        return None
    return round(3600.0 * entries[-1]["step"] / entries[-1]["time_s"], 1)


def same_architecture(kind: str, config: dict | None, other: dict) -> bool:
    """Whether two model configs of ``kind`` build the same architecture: compared as the kind's config objects,
    so a field added to the code later, absent from an older card, counts at its default, and without the settings
    training never reads (``surface_offsets`` and the like: :func:`~imagetomesh.models.protocol.weights_config`)."""
    from imagetomesh.models.protocol import weights_config
    from imagetomesh.models.registry import model_kind

    architecture = model_kind(kind).config
    try:
        return isinstance(config, dict) and weights_config(architecture(**config)) == weights_config(
            architecture(**other)
        )
    except (TypeError, ValueError):  # a field the code does not know, or a value it refuses
        return False


def averaged(source: Path, card: dict, others: list[Path], out: Path) -> list[dict]:
    """Write to ``out`` the mean of the weights in ``source`` (of ``card``) and in the model folders ``others``
    (each of ``card``'s kind and architecture config); returns ``[{name, sha256}]`` of the others."""
    from safetensors.torch import save_file

    from imagetomesh.io.atomic import atomic_write

    states, named = [load_state(source, card)], []
    for folder in others:
        theirs = read_card(folder)
        same = theirs.get("kind") == card["kind"] and same_architecture(
            card["kind"], theirs.get("config"), card["config"]
        )
        if not same:
            raise SystemExit(f"{folder} is not a {card['kind']} model of the run's architecture: it cannot be averaged")
        states.append(load_state(folder, theirs))
        named.append({"name": theirs.get("name", folder.name), "sha256": theirs["sha256"]})
    mean = {k: v.contiguous() for k, v in average_states(states).items()}
    with atomic_write(out) as tmp:
        save_file(mean, str(tmp))
    return named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--description", required=True)
    parser.add_argument("--command", required=True, help="the command that reproduces the weights")
    parser.add_argument("--history", default="", help="anything about this run that the command alone does not say")
    parser.add_argument("--which", default="best", choices=("best", "final"))
    parser.add_argument("--into", type=Path, default=REPO / "Resources" / "Models", help="folder of bundled models")
    parser.add_argument("--data", default="hippocampus", choices=sorted(DATA), help="the training data")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the training data's MSD folder, whose training labels give a several-organ model's organ layout "
        "(default: ../shared/data/<--data>)",
    )
    parser.add_argument(
        "--init-passes",
        type=int,
        default=0,
        help="training image passes of the model the run started from (--init-from), added to the run's own",
    )
    parser.add_argument(
        "--meshing",
        type=json.loads,
        default=None,
        help="NUDF: meshing settings chosen on the validation split after training (JSON of UDFMeshingConfig "
        "fields), stored in the card's config.meshing and noted in its history",
    )
    parser.add_argument(
        "--average-with",
        nargs="+",
        type=Path,
        default=[],
        help="model folders of the same kind and architecture: bundle the mean of their weights and the run's; "
        "the card's steps and image passes are the largest of the averaged models' (bundle each with the same "
        "--init-passes)",
    )
    args = parser.parse_args()
    data, input_block = DATA[args.data]

    source = args.run / args.which
    card = read_card(source)
    if sha256_of(source / WEIGHTS_NAME) != card["sha256"]:
        raise SystemExit(f"{source} weights do not match their card")
    if args.meshing is not None:
        if card["kind"] != "nudf":
            raise SystemExit("--meshing is for NUDF models")
        from imagetomesh.geometry.udf_meshing import UDFMeshingConfig

        meshing = {**card["config"].get("meshing", {}), **args.meshing}
        UDFMeshingConfig(**meshing)  # unknown fields fail here
        card["config"]["meshing"] = meshing
        args.history = (args.history + " " if args.history else "") + (
            f"Meshing settings chosen on the validation split after training: {json.dumps(args.meshing)}."
        )
    target = args.into / args.name
    target.mkdir(parents=True, exist_ok=True)
    if args.average_with:
        card["training"]["averaged_with"] = averaged(source, card, args.average_with, target / WEIGHTS_NAME)
        card["sha256"] = sha256_of(target / WEIGHTS_NAME)
    else:
        shutil.copyfile(source / WEIGHTS_NAME, target / WEIGHTS_NAME)
    grid = HIPPOCAMPUS_GRID.to_dict()
    if card["grid"]["shape"] == grid["shape"] and card["grid"]["spacing"] == grid["spacing"]:
        # every training image is stored in this orientation, so the model was trained in it
        card["grid"] = grid
    split = card["training"].pop("split")
    saved = json.loads((REPO / data["split_file"]).read_text(encoding="utf-8"))
    if any(sorted(split[k]) != sorted(saved[k]) for k in ("train", "val", "test")):
        raise SystemExit(f"the run's split is not {data['split_file']}: its test cases would not be held out")
    card["training"]["data"] = data
    card["training"]["split_sizes"] = {k: len(v) for k, v in split.items() if isinstance(v, list)}
    card["training"]["command"] = args.command
    run_config = json.loads((args.run / "config.json").read_text(encoding="utf-8"))
    passes = card.get("steps", 0) * run_config.get("batch_size", 1) * run_config.get("accumulate_steps", 1)
    if args.init_passes:
        passes += args.init_passes
    for theirs in map(read_card, args.average_with):
        # an average embodies the training of its most-trained model (e.g. a run's best and final steps)
        card["steps"] = max(card.get("steps", 0), theirs.get("steps", 0))
        passes = max(passes, theirs.get("training", {}).get("image_passes", 0))
    card["training"]["image_passes"] = passes
    rate = steps_per_hour(args.run)
    if rate is not None:
        card["training"]["steps_per_hour"] = rate
    if args.history:
        card["training"]["history"] = args.history
    card = {"name": args.name, "description": args.description, "data": data, **card}
    card["validation_metrics"] = card.pop("metrics", {})
    if "val_mesh_dice" in card["validation_metrics"]:
        card["validation_metrics_note"] = (
            "val_mesh_dice: Dice of the mesh segment returns (rasterised on the model grid; the selection score); "
            "val_dice: the network's voxel head, not the mesh; val_chamfer_mm: the last decoder stage's vertices "
            "against the label boundary (mm)"
        )
    if args.average_with:
        note = card.get("validation_metrics_note")
        card["validation_metrics_note"] = (f"{note}; " if note else "") + (
            f"of the run's {args.which} checkpoint before averaging (the average's own validation is in the history)"
        )
    card["input"] = dict(input_block)
    if card.get("organs"):
        cases = read_msd(args.data_dir or REPO.parent / "shared" / "data" / args.data)
        card["input"]["organ_layout"] = label_layout([cases[c] for c in split["train"]], organs_of(card)).to_dict()
    (target / CARD_NAME).write_text(json.dumps(card, indent=2))
    print(f"bundled {target}")


if __name__ == "__main__":
    main()
