"""``imagetomesh info``: the geometry of an image or mesh file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imagetomesh.cli.options import path_arg


def cmd_info(args) -> int:
    from imagetomesh.io.atomic import format_suffix
    from imagetomesh.io.meshes import MESH_SUFFIXES, read_mesh

    path = Path(args.file)  # the readers check it (io.inputs): missing, folder, unreadable, ...
    if format_suffix(path) in MESH_SUFFIXES:
        from imagetomesh.geometry.quality import check_mesh

        mesh = read_mesh(path)
        print(f"mesh    {path}")
        print(f"        {mesh.describe()} (LPS mm)")
        if mesh.num_faces:
            check = check_mesh(mesh)
            print(f"        area {mesh.area():.1f} mm2, volume {mesh.signed_volume():.1f} mm3")
            print(f"        {check.summary()}")
        return 0
    from imagetomesh.io.images import read_image

    volume = read_image(path)
    array = volume.array
    print(f"image   {path}")
    print(f"        {volume.describe()}")
    print(f"        direction {np.round(volume.direction, 4).tolist()}")
    lo, hi = volume.bounds_lps()
    print(f"        LPS extent {np.round(lo, 2).tolist()} .. {np.round(hi, 2).tolist()} mm")
    print(f"        values {float(array.min()):g} .. {float(array.max()):g}")
    if np.issubdtype(array.dtype, np.integer):
        values = np.unique(array)
        if len(values) <= 32:
            print(f"        labels present {values.tolist()}")
            from imagetomesh.core.edges import touched_faces

            for value in values[values != 0][:32]:
                faces = touched_faces(volume.with_array((array == value).astype(np.uint8)))
                if faces:
                    print(
                        f"        label {int(value)} reaches the {', '.join(faces)} edge of the image (cut by the scan?)"
                    )
    return 0


def register(sub) -> None:
    """Add ``info`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser("info", help="geometry of an image or mesh file")
    p.add_argument("file", type=path_arg)
    p.set_defaults(func=cmd_info)
