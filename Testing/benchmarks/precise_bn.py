"""Would measuring a model's batch-norm statistics again ("precise BN") raise its validation Dice?

Usage:
    python Testing/benchmarks/precise_bn.py --out runs/precise-bn [--batches 400] [--models unet-headneck-ct ...]
    IMAGETOMESH_MODEL_PATH=runs/precise-bn python Testing/benchmarks/headneck_ct_report.py --split val ...

A U-Net's batch-norm layers normalise by each training batch's own statistics and keep running means of them
for inference (momentum 0.1: the last few dozen batches of two crops or images). Two bundled models
(``unet-headneck-ct``, ``voxel2mesh-hippocampus``) are besides weight means of two trainings
(``tools/bundle_model.py --average-with``), whose averaged running statistics are nobody's: the usual remedy
for weight averages is to measure them again on the averaged network (as ``torch.optim.swa_utils.update_bn``
does). This copies each of ``--models`` (models with a ``unet``, which holds all their batch norms) into
``--out`` with every batch-norm layer's statistics measured afresh: the U-Net in training mode, without
gradients, fed ``--batches`` batches drawn exactly as the card's training config draws them (crops, foreground
centring, augmentation, batch size, or whole augmented images), from the training split of the card's split
file, each layer's statistics the plain mean over the batches (momentum None). Put ``--out`` first on
``IMAGETOMESH_MODEL_PATH`` to score the copies (an ensemble member is found there by name too). Nothing else is
written.

Session 34 (validation only; tried, not kept): ``unet-headneck-ct`` alone, 400 batches of its training crops
(statistics moved by up to 7 %), all 20 whole validation scans (``headneck_ct_report.py --split val``): mean Dice
0.7520 against 0.7521, every organ within 0.003. ``voxel2mesh-hippocampus`` (400 batches of two whole training
images; up to 5.5 %): validation IoU 0.828 against 0.827 (Chamfer 0.352 against 0.353 mm), ``unet-hippocampus``
(not an average) 0.833 against 0.835 (``hippocampus_report.py --split val``): the averaged statistics were as good
as measured ones (docs/headneck-ct-experiments.md, docs/mesh-losses.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.configs import image_configs, named_config
from imagetomesh.training.data import prepare_split
from imagetomesh.training.tasks.image_to_mesh import image_batch
from imagetomesh.weights import read_card, save_weights
from imagetomesh.zoo import find_model, load_model

REPO = Path(__file__).resolve().parents[2]


def batch_norms(net: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of ``net``."""
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def measure_statistics(net: torch.nn.Module, batches) -> int:
    """Reset every batch-norm layer of ``net`` and set its running mean and variance to the plain means of its
    batch statistics over ``batches`` (an iterable of ``(B, 1, D, H, W)`` images), ``net`` in training mode as
    when it learned; ``net`` is left in eval mode. Returns the number of batches."""
    norms = batch_norms(net)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative mean
    net.train()
    count = 0
    try:
        for images in batches:
            net(images)
            count += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.eval()
    return count


def training_batches(config, cases, count: int, seed: int):
    """``count`` image batches ``(B, 1, d, h, w)`` drawn as ``config`` draws its training images or crops."""
    if config.augment.mirror > 0 or config.model.get("organ_crops"):
        raise SystemExit(f"{config.kind} config mirrors its crops or crops organs: not drawn here")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield image_batch(config, cases, generator)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="MSD folder (default: ../shared/data/ and the card's split file's name)")
    parser.add_argument("--out", required=True, help="folder for the copies (and the prepared split's split.json)")
    parser.add_argument("--models", nargs="+", default=["unet-headneck-ct", "unet-headneck-ct-wide-gpu"])
    parser.add_argument("--batches", type=int, default=400, help="training batches per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    prepared = {}  # (split file, grid, organs) -> training cases
    for name in args.models:
        folder = find_model(name)
        card = read_card(folder)
        config = named_config(image_configs()[card["kind"]], card["train_config"], card["kind"])
        split_file = REPO / card["data"]["split_file"]
        key = (str(split_file), json.dumps(card["grid"]), config.organ_labels)
        if key not in prepared:
            shutil.copyfile(split_file, out / "split.json")
            data = args.data or REPO.parent / "shared" / "data" / split_file.stem
            spec = GridSpec.from_dict(card["grid"])
            prepared[key] = prepare_split(data, out, spec, seed=0, organs=config.organ_labels, threads=args.threads)[1]
        model = load_model(str(folder), "cpu")
        unet = model.module.unet
        before = {k: v.clone() for k, v in unet.state_dict().items() if "running" in k}
        started = time.perf_counter()
        n = measure_statistics(unet, training_batches(config, prepared[key], args.batches, args.seed))
        after = unet.state_dict()
        change = max(float((after[k] - v).abs().max() / v.abs().max().clamp_min(1e-8)) for k, v in before.items())
        history = card.get("training", {}).get("history", "")
        card.setdefault("training", {})["history"] = (
            f"{history} Batch-norm statistics measured again on {n} of its training batches "
            f"(Testing/benchmarks/precise_bn.py, seed {args.seed})."
        ).strip()
        save_weights(model.module, out / folder.name, card)  # the checksum of the new weights replaces the card's
        print(
            json.dumps(
                {
                    "model": name,
                    "batches": n,
                    "seconds": round(time.perf_counter() - started, 1),
                    "max_rel_change": change,
                }
            )
        )


if __name__ == "__main__":
    main()
