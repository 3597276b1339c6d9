"""``imagetomesh evaluate``: compare meshes with a labelmap (Dice, IoU, Chamfer, HD95, ...)."""

from __future__ import annotations

import json
from pathlib import Path

from imagetomesh.cli.options import path_arg, positive_number
from imagetomesh.errors import InputError


def _organ_labels(meshes: list[Path], model: str) -> list[tuple[str, int]]:
    """``[(organ name, label value)]`` for meshes named ``<image>_<organ>.<ext>`` as ``segment`` writes them
    with the several-organ ``model`` (its card's organs)."""
    from imagetomesh.organs import organs_of
    from imagetomesh.weights import read_card
    from imagetomesh.zoo import find_model

    organs = organs_of(read_card(find_model(model)))
    if organs is None:
        raise InputError(f"--model {model} meshes one structure; --model is for models of several organs")
    out = []
    for mesh in meshes:
        stem = mesh.name.split(".")[0]
        organ = next((o for o in sorted(organs, key=lambda o: -len(o.name)) if stem.endswith("_" + o.name)), None)
        if organ is None:
            raise InputError(
                f"{mesh.name} is not named <image>_<organ> for an organ of {model} "
                f"({', '.join(o.name for o in organs)}); name it as segment does, or give one mesh with --label"
            )
        out.append((organ.name, organ.label))
    return out


def cmd_evaluate(args) -> int:
    from imagetomesh.core.edges import touched_faces
    from imagetomesh.io.images import labelmap_mask, read_image
    from imagetomesh.io.meshes import read_mesh
    from imagetomesh.metrics import evaluate_mesh

    meshes = list(args.meshes)
    if args.model is None:
        if len(meshes) > 1:
            raise InputError(
                "several meshes need --model (a several-organ model whose organ names end the mesh names); "
                "or evaluate one mesh at a time"
            )
        targets = [(None, args.label)]
    else:
        if args.label is not None:
            raise InputError("--label and --model do not go together: with --model each mesh's name gives its label")
        targets = _organ_labels(meshes, args.model)
    labels = read_image(args.label_file)  # once, however many meshes
    results = {}
    for mesh_path, (organ, label) in zip(meshes, targets):
        mesh = read_mesh(mesh_path).require_triangles(str(mesh_path))
        reference = labelmap_mask(labels, label, args.label_file)
        result = evaluate_mesh(mesh, reference, threshold_mm=args.threshold)
        result["label_cut_by_image_edge"] = ",".join(touched_faces(reference)) or "no"
        results[organ] = result
    if args.json:  # one mesh: its metrics; with --model: {organ: metrics}
        print(json.dumps(results if args.model else results[None], indent=1))
        return 0
    for name, result in results.items():
        if name:
            print(f"== {name}")
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            print(f"{key:<{width}}  {shown}")
    return 0


def register(sub) -> None:
    """Add ``evaluate`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser(
        "evaluate",
        help="compare meshes with a labelmap (Dice, IoU, Chamfer, HD95, ...)",
        description="Compare a mesh with a labelmap, or (with --model) each organ mesh that segment wrote for a "
        "several-organ model with its organ's label.",
    )
    p.add_argument(
        "meshes", type=path_arg, nargs="+", metavar="MESH", help="mesh file(s) (LPS; STL headers are honoured)"
    )
    p.add_argument("label_file", metavar="LABEL", type=path_arg, help="reference labelmap")
    p.add_argument("--label", type=int, default=None, help="label value of the reference (default: any non-zero)")
    p.add_argument(
        "--model",
        default=None,
        help="several-organ model whose organs the meshes are (named <image>_<organ>.stl as segment writes them)",
    )
    p.add_argument(
        "--threshold",
        type=positive_number("--threshold"),
        default=1.0,
        help="F-score distance threshold in mm (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)
