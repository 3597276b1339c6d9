"""``imagetomesh evaluate``: compare a mesh with a labelmap (Dice, IoU, Chamfer, HD95, ...)."""

from __future__ import annotations

import json

from imagetomesh.cli.options import path_arg, positive_number


def cmd_evaluate(args) -> int:
    from imagetomesh.core.edges import touched_faces
    from imagetomesh.io.images import read_labelmap
    from imagetomesh.io.meshes import read_mesh
    from imagetomesh.metrics import evaluate_mesh

    mesh = read_mesh(args.mesh).require_triangles(str(args.mesh))
    label = read_labelmap(args.label_file, args.label)
    result = evaluate_mesh(mesh, label, threshold_mm=args.threshold)
    result["label_cut_by_image_edge"] = ",".join(touched_faces(label)) or "no"
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            print(f"{key:<{width}}  {shown}")
    return 0


def register(sub) -> None:
    """Add ``evaluate`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser("evaluate", help="compare a mesh with a labelmap (Dice, IoU, Chamfer, HD95, ...)")
    p.add_argument("mesh", type=path_arg, help="mesh file (LPS; STL headers are honoured)")
    p.add_argument("label_file", metavar="LABEL", type=path_arg, help="reference labelmap")
    p.add_argument("--label", type=int, default=None, help="label value of the reference (default: any non-zero)")
    p.add_argument(
        "--threshold",
        type=positive_number("--threshold"),
        default=1.0,
        help="F-score distance threshold in mm (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)
