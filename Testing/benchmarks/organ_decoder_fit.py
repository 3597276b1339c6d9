"""Do a several-organ Voxel2Mesh's decoders fit their labels better than the surface they start from?

Usage:
    python Testing/benchmarks/organ_decoder_fit.py [--model voxel2mesh-headneck-ct] [--split train]
        [--cases 12] [--threads 1] [--data ../shared/data/openkbp-ct]

For each organ and each of the first ``--cases`` cases of the split (the model card's split, as
``headneck_ct_report.py`` reads it) that contour it, the model runs on the crop its training draws
(:func:`~imagetomesh.training.organ_crops.organ_crop`, centred on the labelled organ, unaugmented, with the
model's context margin) and its decoder starts where training starts it (the U-Net's surface of the organ in
the crop, ``start="unet_surface"``). For the start and after each stage it prints the mean over cases of

- ``dice``: the mesh rasterised in the crop against the label (as training's validation scores it);
- ``chamfer``: the training loss's Chamfer term against the training target (samples of the label's smoothed
  surface, the config's ``target_points`` and ``target_smoothing``), in voxels squared of the crop's
  isotropic frame.

On the training split this tells whether a decoder fits what it was trained on: a Chamfer above the start's
means it moves its own training cases away from their labels. ``--overfit ORGAN`` then asks whether it can:
``--steps`` Adam steps (rate ``--lr``) of that organ's decoder alone on the training loss of the first case's
crop (the U-Net frozen), printing the loss per stage (compare the start's Chamfer) and the last stage's Dice
every 10 steps. Numbers only; nothing is written (the model on disk is not changed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headneck_ct_report import REPO, model_split  # noqa: E402

from imagetomesh.models.organ_decoders import centre_crop, context_shape  # noqa: E402
from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size  # noqa: E402
from imagetomesh.training.data import prepare_cases  # noqa: E402
from imagetomesh.training.losses import mesh_decoder_loss  # noqa: E402
from imagetomesh.training.msd import read_msd  # noqa: E402
from imagetomesh.training.organ_crops import meshable, organ_crop  # noqa: E402
from imagetomesh.training.tasks import get_config  # noqa: E402
from imagetomesh.training.udf_points import surface_samples  # noqa: E402
from imagetomesh.training.validation import rasterised_dice  # noqa: E402
from imagetomesh.zoo import load_model  # noqa: E402


def training_crop(net, config, case, organ: int, generator: torch.Generator):
    """``case``'s unaugmented training crop around ``organ``: ``(image (1, 1, d + 2m, h + 2m, w + 2m), truth (d, h, w)
    bool, (target points (P, 3), normals (P, 3)), scale (3,), voxel)``, the last two of the crop's isotropic frame."""
    margin = net.config.context_margin
    image, label = organ_crop(case, organ, context_shape(net.config.organ_crops[organ - 1], margin))
    truth = centre_crop(label, margin) == organ
    target = surface_samples(truth, config.loss.target_points, generator, config.loss.target_smoothing)
    return image[None, None], truth, target, isotropic_scale(truth.shape), isotropic_voxel_size(truth.shape)


@torch.no_grad()
def fit_scores(net, config, case, organ: int, generator: torch.Generator) -> np.ndarray:
    """``(1 + stages, 2)``: (Dice, Chamfer in voxels squared) of the start and of each stage's mesh of ``organ``
    on ``case``'s training crop."""
    image, truth, (points, normals), scale, voxel = training_crop(net, config, case, organ, generator)
    logits, meshes = net(image, organ=organ)
    start = net.start_meshes(logits.float().softmax(1), organ)[0]
    rows = []
    for mesh in [start, *meshes[0]]:
        terms = mesh_decoder_loss([mesh], points, normals, scale, config.loss, generator, voxel=voxel)
        rows.append((rasterised_dice(mesh.verts, mesh.faces, truth.numpy()), float(terms["chamfer"]) / voxel**2))
    return np.array(rows)


def overfit_one_crop(net, config, case, organ: int, steps: int, lr: float, generator: torch.Generator) -> None:
    """Train ``organ``'s decoder of ``net`` on ``case``'s training crop alone (:func:`fit_scores` says where)."""
    image, truth, (points, normals), scale, voxel = training_crop(net, config, case, organ, generator)
    net.unet.requires_grad_(False)
    optimizer = torch.optim.Adam(net.organ_stages[organ - 1].parameters(), lr=lr)
    start = fit_scores(net, config, case, organ, generator)[0]
    print(f"start: Dice {start[0]:.3f}, Chamfer {start[1]:.2f} voxels^2")
    for step in range(steps + 1):
        _, meshes = net(image, organ=organ)
        terms = mesh_decoder_loss(meshes[0], points, normals, scale, config.loss, generator, voxel=voxel)
        if step % 10 == 0:
            last = meshes[0][-1]
            dice = rasterised_dice(last.verts.detach(), last.faces, truth.numpy())
            loss = float(terms["total"].detach()) / voxel**2 / len(meshes[0])
            print(f"step {step}: loss {loss:.2f} voxels^2 per stage, Dice {dice:.3f}")
        if step < steps:
            optimizer.zero_grad()
            terms["total"].backward()
            optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp-ct"))
    parser.add_argument("--model", default="voxel2mesh-headneck-ct")
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overfit", default=None, help="organ name: train its decoder on one training crop")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, "cpu")
    net = model.module.eval()
    if model.card["kind"] != "voxel2mesh" or not net.config.organs or net.config.start != "unet_surface":
        raise SystemExit(
            f"{args.model} is not a several-organ Voxel2Mesh with decoders that start at the U-Net's surface"
        )
    config = get_config("voxel2mesh", model.card["train_config"])
    msd = read_msd(args.data)
    ids = model_split(model.card)[args.split][: args.cases]
    cases = prepare_cases(
        [msd[i] for i in ids],
        config.grid,
        progress=False,
        organs=config.organ_labels,
        partly_contoured=config.organ_classes("partly_contoured"),
    )
    generator = torch.Generator().manual_seed(0)
    if args.overfit:
        names = [o["name"] for o in config.organs]
        if args.overfit not in names:
            raise SystemExit(f"--overfit must name one of the model's organs {names}, got {args.overfit!r}")
        k = names.index(args.overfit) + 1
        case = next((case for case in cases if meshable(case, k)), None)
        if case is None:
            raise SystemExit(f"none of the first {args.cases} {args.split} cases contours {args.overfit}")
        overfit_one_crop(net, config, case, k, args.steps, args.lr, generator)
        return
    stages = ["start"] + [f"stage {i + 1}" for i in range(net.config.stages + net.config.refine_stages)]
    print(
        "| organ | cases | "
        + " | ".join(f"Dice {s}" for s in stages)
        + " | "
        + " | ".join(f"Chamfer {s}" for s in stages)
        + " |"
    )
    print("|---|---|" + "---|" * (2 * len(stages)))
    for k, organ in enumerate(config.organs, start=1):
        scores = [fit_scores(net, config, case, k, generator) for case in cases if meshable(case, k)]
        if not scores:
            continue
        means = np.mean(scores, axis=0)
        cells = [f"{d:.3f}" for d in means[:, 0]] + [f"{c:.2f}" for c in means[:, 1]]
        print(f"| {organ['name']} | {len(scores)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
