"""How close can the mesh-decoder loss bring a mesh to the label? Vertices optimised directly.

Usage:
    python Testing/benchmarks/mesh_loss_oracle.py [--data ../shared/data/hippocampus] [--cases 8]
        [--steps 300] [--lr 0.003] [--model voxel2mesh-hippocampus]
        --setting "version=1" --setting "version=1,normal=0.01,edge=0.1" --setting "normal=0,laplacian=0,edge=0"

For the first ``--cases`` cases of the ``val`` split of ``Resources/Splits/hippocampus.json``
(never ``test``), the label is put on the model grid exactly as training prepares it
(:func:`~imagetomesh.training.data.prepare_case`). The starting mesh is the final-stage topology
of the Voxel2Mesh template (the level-``template_level`` icosphere subdivided once per later
stage, at the template radius), or, with ``--model``, that model's final mesh for the case
(in evaluation mode, so after Voxel2Mesh's adaptive pruning). Its vertex positions are the only parameters: Adam for
``--steps`` steps (learning rate cosine-decayed from ``--lr`` to a tenth), one case at a time, on
:func:`~imagetomesh.training.losses.mesh_decoder_loss` with the target that training builds.

With ``--organ NAME`` (a several-organ Voxel2Mesh config, e.g. ``--base voxel2mesh:headneck-ct-cpu-frozen
--data ../shared/data/openkbp-ct``), each validation case that can teach the organ's mesh is cut to the
organ's crop centred on its label, as training does (:mod:`imagetomesh.training.organ_crops`); the start is
the organ's template (its ellipsoid, bent along its arc if the config gives one), the target the organ's smoothed surface samples in the crop, and Dice/IoU
are those of the mesh rasterised in the crop (as validation scores them).

Each ``--setting`` is a comma-separated list of :class:`~imagetomesh.training.losses.MeshLossWeights`
fields (unnamed ones keep their defaults; ``--base`` names a training config whose loss is the
default, ``voxel2mesh:cpu`` unless given). Printed per setting: the mean IoU and Dice of the
resulting mesh computed as the results report does (mapped to LPS with the case's grid
transform, rasterised on the original label grid: :func:`~imagetomesh.metrics.mesh_dice_iou`),
the mean self-intersecting faces (%) and the final loss terms.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.io.images import read_labelmap
from imagetomesh.metrics import mesh_dice_iou, self_intersection_percent
from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size
from imagetomesh.training.configs import image_configs
from imagetomesh.training.data import ChamferTarget, chamfer_target, prepare_case
from imagetomesh.training.losses import MeshLossWeights, mesh_decoder_loss
from imagetomesh.training.msd import read_msd

REPO = Path(__file__).resolve().parents[2]


def parse_setting(text: str, base: MeshLossWeights) -> MeshLossWeights:
    """``"normal=0.01,edge=0.1"`` -> ``base`` with those fields replaced (typed as the field's default)."""
    types = {f.name: type(getattr(base, f.name)) for f in fields(base)}
    changes = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"unknown loss field {key!r}; known: {', '.join(types)}")
        kind = types[key]
        changes[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return replace(base, **changes)


def start_mesh(config, case, model, organ: int | None = None) -> DecoderMesh:
    """The optimisation's starting mesh for ``case`` on the model grid (see the module docstring)."""
    if organ is not None:
        c = config.model
        arc = (c.get("organ_arcs") or [None] * organ)[organ - 1]
        mesh = DecoderMesh.template(c.get("template_level", 2), torch.tensor(c["organ_templates"][organ - 1]), arc=arc)
        for _ in range(c.get("stages", 3) - 1):
            mesh = mesh.subdivided()
        return DecoderMesh(mesh.verts.detach(), mesh.faces, mesh.sphere)
    if model is not None:
        with torch.no_grad():
            _, meshes = model(case.image[None, None])
        final = meshes[0][-1]
        return DecoderMesh(final.verts.detach().clone(), final.faces, final.sphere)
    c = config.model
    scale = isotropic_scale(case.label.shape)
    mesh = DecoderMesh.template(c.get("template_level", 2), c.get("template_radius", 0.35) / scale)
    for _ in range(c.get("stages", c.get("blocks", 3)) - 1):
        mesh = mesh.subdivided()
    return DecoderMesh(mesh.verts.detach(), mesh.faces, mesh.sphere)


def optimise(
    mesh: DecoderMesh,
    label: torch.Tensor,
    target: ChamferTarget,
    weights: MeshLossWeights,
    steps: int,
    lr: float,
    seed: int,
):
    """Adam on the vertex positions of ``mesh`` against ``target`` and the organ's ``label`` ``(D, H, W)`` on the
    model grid (the raster term's); returns ``(verts (N, 3), terms)``."""
    grid_shape = label.shape
    generator = torch.Generator().manual_seed(seed)
    verts = mesh.verts.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([verts], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    scale = isotropic_scale(grid_shape)
    voxel = isotropic_voxel_size(grid_shape)
    terms = {}
    for _ in range(steps):
        points, normals = target.draw(generator)
        stage = DecoderMesh(verts, mesh.faces, mesh.sphere, start=mesh.verts)
        terms = mesh_decoder_loss(
            [stage], points, normals, scale, weights, generator=generator, voxel=voxel, label=label > 0
        )
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        schedule.step()
    return verts.detach(), {k: float(v.detach()) for k, v in terms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hippocampus")
    parser.add_argument("--cases", type=int, default=8, help="first N validation cases")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.003, help="Adam learning rate (grid units)")
    parser.add_argument("--base", default="voxel2mesh:cpu", help="KIND:CONFIG whose grid, template and loss are used")
    parser.add_argument("--model", default=None, help="start from this model's predicted mesh (name or folder)")
    parser.add_argument("--setting", action="append", default=None, help="loss fields, e.g. normal=0.01,edge=0.1")
    parser.add_argument("--organ", default=None, help="an organ of a several-organ --base config: its crops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    kind, _, name = args.base.partition(":")
    config = copy.deepcopy(image_configs()[kind][name])
    model = None
    if args.model:
        from imagetomesh.zoo import load_model

        model = load_model(args.model, "cpu").module.eval()
    if args.organ:
        organ_oracle(args, config)
        return
    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    msd = read_msd(args.data)
    ids = split["val"][: args.cases]
    settings = args.setting or ["", "normal=0.01,edge=0.1", "normal=0,laplacian=0,edge=0"]
    dense = {
        (w.target_points, w.target_smoothing)
        for w in (parse_setting(t, config.loss) for t in settings)
        if w.target == "dense"
    }
    if len(dense) > 1:
        raise SystemExit("every dense setting must use the same target_points and target_smoothing")
    points, smoothing = dense.pop() if dense else (0, 0.0)
    cases = [prepare_case(msd[c], config.grid, surface_points=points, surface_smoothing=smoothing) for c in ids]
    labels = [read_labelmap(msd[c].label) for c in ids]

    rows = []
    for text in settings:
        weights = parse_setting(text, config.loss)
        started = time.perf_counter()
        scores, si, last = [], [], []
        for n, (case, label) in enumerate(zip(cases, labels)):
            mesh = start_mesh(config, case, model)
            target = chamfer_target(case.label, weights.target, weights.sample_points, case.surface)
            verts, terms = optimise(mesh, case.label, target, weights, args.steps, args.lr, args.seed + n)
            grid_mesh = Mesh(verts.numpy().astype(np.float32), mesh.faces.numpy())
            lps = grid_mesh.transformed(case.transform.grid_to_lps)
            scores.append(mesh_dice_iou(lps, label))
            si.append(self_intersection_percent(lps))
            last.append(terms)
        row = {
            "setting": text or "(config)",
            "iou": float(np.mean([s[1] for s in scores])),
            "dice": float(np.mean([s[0] for s in scores])),
            "min_iou": float(np.min([s[1] for s in scores])),
            "self_intersection_pct": float(np.mean(si)),
            "terms": {k: float(np.mean([t[k] for t in last])) for k in last[0]},
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_rows(rows, args.json)


def organ_oracle(args, config) -> None:
    """The oracle on one organ's crops of the validation cases that can teach its mesh (module docstring)."""
    from imagetomesh.metrics import dice
    from imagetomesh.nn.sdf import inside_mask
    from imagetomesh.training.organ_crops import meshable, organ_crop
    from imagetomesh.training.udf_points import surface_samples

    names = [o["name"] for o in config.organs]
    if args.organ not in names:
        raise SystemExit(f"--organ must be one of {', '.join(names)}")
    organ = names.index(args.organ) + 1
    split = json.loads((REPO / "Resources" / "Splits" / f"{args.data.name}.json").read_text(encoding="utf-8"))
    msd = read_msd(args.data)
    labels = tuple(o["label"] for o in config.organs)
    partly = config.organ_classes("partly_contoured")
    crops = []
    for c in split["val"]:
        case = prepare_case(msd[c], config.grid, organs=labels, partly_contoured=partly)
        if meshable(case, organ):
            crops.append(organ_crop(case, organ, tuple(config.model["organ_crops"][organ - 1]))[1] == organ)
        if len(crops) == args.cases:
            break
    rows = []
    for text in args.setting or [""]:
        weights = parse_setting(text, config.loss)
        started = time.perf_counter()
        scores, last = [], []
        for n, label in enumerate(crops):
            generator = torch.Generator().manual_seed(args.seed + n)
            target = ChamferTarget(*surface_samples(label, weights.target_points, generator, weights.target_smoothing))
            mesh = start_mesh(config, None, None, organ)
            verts, terms = optimise(mesh, label, target, weights, args.steps, args.lr, args.seed + n)
            inside = inside_mask(verts.float(), mesh.faces, tuple(label.shape)).numpy()
            start = inside_mask(mesh.verts.float(), mesh.faces, tuple(label.shape)).numpy()
            scores.append((dice(inside, label.numpy()), dice(start, label.numpy())))
            last.append(terms)
        row = {
            "setting": text or "(config)",
            "organ": args.organ,
            "cases": len(crops),
            "dice": float(np.mean([s[0] for s in scores])),
            "template_dice": float(np.mean([s[1] for s in scores])),
            "min_dice": float(np.min([s[0] for s in scores])),
            "terms": {k: float(np.mean([t[k] for t in last])) for k in last[0]},
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)


def print_rows(rows: list[dict], json_path) -> None:
    print()
    print("| setting | IoU | Dice | min IoU | self-int. % |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['setting']}` | {r['iou']:.3f} | {r['dice']:.3f} | {r['min_iou']:.3f} | {r['self_intersection_pct']:.2f} |"
        )
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
