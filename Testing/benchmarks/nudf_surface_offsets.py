"""Choose a several-organ NUDF's ``surface_offsets`` on validation scans: per organ, the Dice of its meshes moved
along their outward normals by each candidate offset (grid voxels; negative: inward).

Usage:
    python Testing/benchmarks/nudf_surface_offsets.py [--model nudf-headneck-ct] [--split val]
        [--first 0] [--cases 10] [--offsets -0.6 -0.4 ... 0.4] [--meshing poisson_depth=7 ...] [--json out.json]

``segment`` meshes each whole scan once with the model's offsets set to zero
(:meth:`~imagetomesh.inference.Segmenter.segment_organs`); each organ's LPS mesh is then taken into the model
grid's voxel frame (divided by its voxel size along L, P, S), moved by ``d`` there with
:func:`~imagetomesh.models.nudf.moved_along_normals`, as ``predict_meshes`` moves it, and taken back (the mesh is
finished before rather than after the move). Dice as
``headneck_ct_report.py`` scores it (the mesh rasterised on the label grid, each organ where contoured). Choose
on one part of the validation split (``--first``/``--cases``) and confirm the choice with
``headneck_ct_report.py`` on the rest, the offsets set in a copy of the model's card. ``--meshing`` overrides
entries of the card's meshing config (:class:`~imagetomesh.geometry.udf_meshing.UDFMeshingConfig`) for the sweep, so
that meshing parameters are chosen on validation with the offsets that go with them.
"""

from __future__ import annotations

import numpy as np
import torch
from headneck_ct_report import scored_organs
from organ_sweep import report_sweep, sweep_parser, sweep_scans

from imagetomesh.core.mesh import Mesh
from imagetomesh.inference import Segmenter
from imagetomesh.metrics import mesh_dice_iou
from imagetomesh.models.nudf import moved_along_normals
from imagetomesh.zoo import load_model


def moved_in_voxels(mesh: Mesh, offset: float, spacing_xyz: np.ndarray) -> Mesh:
    """The LPS-mm ``mesh`` moved ``offset`` voxels along its normals in the frame of voxels of ``spacing_xyz`` (a grid
    whose axes are L, P, S up to order and sign)."""
    in_voxels = Mesh(mesh.vertices / spacing_xyz, mesh.faces)
    moved = moved_along_normals(in_voxels, offset)
    return Mesh((moved.vertices * spacing_xyz).astype(mesh.vertices.dtype), moved.faces)


def meshing_overrides(entries: list[str]) -> dict[str, bool | int | float]:
    """``["poisson_depth=7", "trim_closed=false"]`` -> ``{"poisson_depth": 7, "trim_closed": False}``, each key a field
    of :class:`~imagetomesh.geometry.udf_meshing.UDFMeshingConfig` (an unknown one, or a flag that is not true or
    false, is refused)."""
    from dataclasses import fields

    from imagetomesh.geometry.udf_meshing import UDFMeshingConfig

    known = {f.name: f.type for f in fields(UDFMeshingConfig)}
    overrides = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        if key not in known or not value:
            raise SystemExit(f"--meshing {entry}: expected KEY=VALUE with KEY one of {', '.join(known)}")
        if known[key] in (bool, "bool"):
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"--meshing {entry}: {key} is true or false")
            overrides[key] = value.lower() == "true"
        else:
            overrides[key] = int(value) if known[key] in (int, "int") else float(value)
    return overrides


def main() -> None:
    parser = sweep_parser(__doc__, "nudf-headneck-ct")
    parser.add_argument("--offsets", type=float, nargs="+", default=[-0.6, -0.5, -0.4, -0.3, -0.2, -0.1, 0, 0.1, 0.2])
    parser.add_argument(
        "--meshing", nargs="+", default=[], metavar="KEY=VALUE", help="meshing config entries to override (numbers)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, "cpu")
    if model.card["kind"] != "nudf" or not model.module.config.organs:
        raise SystemExit(f"{args.model} is not a several-organ NUDF")
    model.module.config.meshing = {**model.module.config.meshing, **meshing_overrides(args.meshing)}
    print("meshing:", model.module.config.meshing)
    model.module.config.surface_offsets = None  # meshed as the field puts the surface
    grid = model.card["grid"]  # the model grid's voxel size along L, P, S (its axes are those up to order and sign)
    direction = np.abs(np.asarray(grid["direction"] or np.eye(3).ravel(), dtype=np.float64).reshape(3, 3))
    spacing_xyz = direction @ np.asarray(grid["spacing"], dtype=np.float64)
    segmenter = Segmenter(model)
    dice: dict[str, dict[str, list[float]]] = {}  # organ -> case -> Dice per offset
    for case, image, label in sweep_scans(args, model.card):
        meshes = segmenter.segment_organs(image)
        for organ in scored_organs(case, segmenter.organs):
            truth = label.with_array((label.array == organ.label).astype(np.uint8))
            mesh = meshes.get(organ.name)
            scores = (
                [0.0] * len(args.offsets)
                if mesh is None
                else [mesh_dice_iou(moved_in_voxels(mesh, d, spacing_xyz), truth)[0] for d in args.offsets]
            )
            dice.setdefault(organ.name, {})[case.case_id] = scores
        print(case.case_id, flush=True)
    report_sweep(dice, args.offsets, segmenter.organs, "offsets", args)


if __name__ == "__main__":
    main()
