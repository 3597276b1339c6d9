"""Choose a surface-start several-organ Voxel2Mesh's ``move_scales`` on validation scans: per organ, the Dice of the
meshes ``segment`` returns when the decoder's moves from its start (the U-Net's surface of the organ) are scaled by
each candidate factor (0: the start, 1: the decoder's mesh).

Usage:
    python Testing/benchmarks/v2m_move_scales.py [--model voxel2mesh-headneck-ct] [--split val]
        [--first 0] [--cases 10] [--scales 0 0.25 0.5 0.75 1] [--json out.json]

Each whole scan is segmented once per factor, every organ at that factor
(:meth:`~imagetomesh.inference.Segmenter.segment_organs`, the model's ``move_scales`` set in memory), and scored as
``headneck_ct_report.py`` scores it (the mesh rasterised on the label grid, each organ where contoured). Choose on one
part of the validation split (``--first``/``--cases``) and confirm the choice with ``headneck_ct_report.py`` on the
rest, the scales set in a copy of the model's card.
"""

from __future__ import annotations

import numpy as np
import torch
from headneck_ct_report import scored_organs
from organ_sweep import report_sweep, sweep_parser, sweep_scans

from imagetomesh.inference import Segmenter
from imagetomesh.metrics import mesh_dice_iou
from imagetomesh.zoo import load_model


def main() -> None:
    parser = sweep_parser(__doc__, "voxel2mesh-headneck-ct")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, "cpu")
    config = model.module.config
    if model.card["kind"] != "voxel2mesh" or config.start != "unet_surface" or not config.organs:
        raise SystemExit(f"{args.model} is not a several-organ surface-start Voxel2Mesh")
    segmenter = Segmenter(model)
    dice: dict[str, dict[str, list[float]]] = {}  # organ -> case -> Dice per factor
    for case, image, label in sweep_scans(args, model.card):
        organs = scored_organs(case, segmenter.organs)
        for factor in args.scales:
            config.move_scales = [factor] * config.organs
            meshes = segmenter.segment_organs(image)
            for organ in organs:
                truth = label.with_array((label.array == organ.label).astype(np.uint8))
                mesh = meshes.get(organ.name)
                score = 0.0 if mesh is None else mesh_dice_iou(mesh, truth)[0]
                dice.setdefault(organ.name, {}).setdefault(case.case_id, []).append(score)
        print(case.case_id, flush=True)
    report_sweep(dice, args.scales, segmenter.organs, "scales", args)


if __name__ == "__main__":
    main()
