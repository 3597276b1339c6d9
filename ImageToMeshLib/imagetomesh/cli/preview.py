"""``imagetomesh preview``: mesh outlines over three orthogonal slices, as PNG."""

from __future__ import annotations

from pathlib import Path

from imagetomesh.cli.options import add_output, path_arg
from imagetomesh.errors import InputError


def cmd_preview(args) -> int:
    from imagetomesh.io.atomic import check_output_path
    from imagetomesh.io.images import read_image
    from imagetomesh.io.meshes import read_mesh
    from imagetomesh.preview import render_preview

    check_output_path(args.output)
    if args.output.suffix.lower() != ".png":
        raise InputError(f"preview writes PNG; give an output name ending in .png, not {args.output.name}")
    volume = read_image(args.image)
    meshes = [read_mesh(m).require_triangles(str(m)) for m in args.meshes]
    render_preview(volume, meshes, args.output, labels=[Path(m).name for m in args.meshes])
    print(f"wrote {args.output}")
    return 0


def register(sub) -> None:
    """Add ``preview`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser("preview", help="mesh outlines over three orthogonal slices, as PNG")
    p.add_argument("image", type=path_arg)
    p.add_argument("meshes", type=path_arg, nargs="+", metavar="MESH")
    add_output(p, "PNG file to write")
    p.set_defaults(func=cmd_preview)
