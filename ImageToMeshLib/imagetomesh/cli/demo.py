"""``imagetomesh demo``: the main job on the bundled sample data."""

from __future__ import annotations

from pathlib import Path

from imagetomesh.cli.options import path_arg


def cmd_demo(args) -> int:
    from imagetomesh.demo import run_demo

    run_demo(args.output, log=print)
    return 0


def register(sub) -> None:
    """Add ``demo`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser("demo", help="run the main job on the bundled sample data")
    p.add_argument(
        "-o",
        "--output",
        type=path_arg,
        default=Path("imagetomesh-demo"),
        help="folder to write (default ./imagetomesh-demo)",
    )
    p.set_defaults(func=cmd_demo)
