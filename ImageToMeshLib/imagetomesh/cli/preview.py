"""``imagetomesh preview``: mesh outlines over the axial, coronal and sagittal planes, as PNG."""

from __future__ import annotations

import math
from pathlib import Path

from imagetomesh.cli.options import add_output, checked_number, path_arg
from imagetomesh.errors import InputError


def numbers(name: str, count: int, what: str):
    """An argparse ``type`` for ``count`` comma-separated finite numbers (``name`` and ``what`` for messages)."""

    def convert(text: str) -> tuple[float, ...]:
        values = tuple(float(v) for v in text.split(","))
        if len(values) != count or not all(math.isfinite(v) for v in values):
            raise ValueError(text)
        return values

    return checked_number(name, convert, what)


def cmd_preview(args) -> int:
    from imagetomesh.io.atomic import check_output_path
    from imagetomesh.io.images import read_image, read_labelmap
    from imagetomesh.io.markups import read_markups
    from imagetomesh.io.meshes import read_mesh
    from imagetomesh.preview import render_preview

    check_output_path(args.output)
    if args.output.suffix.lower() != ".png":
        raise InputError(f"preview writes PNG; give an output name ending in .png, not {args.output.name}")
    if args.window is not None and not args.window[0] < args.window[1]:
        raise InputError(f"--window must be LOW,HIGH with LOW < HIGH, got {args.window[0]:g},{args.window[1]:g}")
    volume = read_image(args.image)
    meshes = [read_mesh(m).require_triangles(str(m)) for m in args.meshes]
    reference = read_labelmap(args.label) if args.label else None
    curves = [m.points for path in args.curves or [] for m in read_markups(path) if len(m.points)]
    render_preview(
        volume,
        meshes,
        args.output,
        centre_lps=args.centre,
        labels=[Path(m).name for m in args.meshes],
        window=args.window,
        reference=reference,
        curves=curves,
    )
    print(f"wrote {args.output}")
    return 0


def register(sub) -> None:
    """Add ``preview`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser(
        "preview",
        help="mesh outlines over the axial, coronal and sagittal planes, as PNG",
        description="Draw each MESH over the image's axial, coronal and sagittal planes (whatever its "
        "direction matrix), in radiological convention (patient right on the viewer's left) with "
        "R/L/A/P/S/I markers and millimetre axes; CT in a soft-tissue window (W 400, L 40 HU).",
    )
    p.add_argument("image", type=path_arg)
    p.add_argument("meshes", type=path_arg, nargs="*", metavar="MESH")
    add_output(p, "PNG file to write")
    p.add_argument(
        "--centre",
        type=numbers("--centre", 3, "x,y,z in LPS mm"),
        help="point the three planes go through, x,y,z in LPS mm (default: the centre of the first mesh's "
        "largest piece; write --centre=-10,... when the first number is negative)",
    )
    p.add_argument(
        "--window",
        type=numbers("--window", 2, "LOW,HIGH grey levels"),
        help="grey levels LOW,HIGH (default: W 400 / L 40 HU for CT, else the 0.5-99.5 percentiles)",
    )
    p.add_argument("--label", type=path_arg, help="reference labelmap, outlined dashed (every nonzero voxel)")
    p.add_argument(
        "--curves",
        type=path_arg,
        nargs="+",
        metavar="MRK_JSON",
        help="Slicer .mrk.json curves to draw in the planes they lie in",
    )
    p.set_defaults(func=cmd_preview)
