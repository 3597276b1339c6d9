"""``imagetomesh segment``: image(s) -> mesh(es) with a trained model."""
from __future__ import annotations

from pathlib import Path

from imagetomesh.cli.options import DEVICES, add_output, add_space
from imagetomesh.cli.reporting import progress_bar
from imagetomesh.errors import InputError

def cmd_segment(args) -> int:
    from imagetomesh.inference import Segmenter
    from imagetomesh.io.atomic import check_output_path, format_suffix
    from imagetomesh.io.images import image_stem, read_image
    from imagetomesh.io.meshes import MESH_SUFFIXES, write_mesh

    images = [Path(p) for p in args.images]
    if len(images) == 1 and not args.output.is_dir():
        if format_suffix(args.output) not in MESH_SUFFIXES:
            raise InputError(f"output {args.output} needs a mesh extension ({', '.join(MESH_SUFFIXES)}) or must be an existing folder")
        check_output_path(args.output)
        targets = [args.output]
    else:
        if not args.output.is_dir():
            raise InputError(f"with several images, -o must be an existing folder; {args.output} is not (create it first)")
        check_output_path(args.output / "probe.stl")
        targets = [args.output / f"{image_stem(p)}.stl" for p in images]
        if len(set(targets)) != len(targets):
            raise InputError("two input images have the same name, so their meshes would overwrite each other; rename one")
    segmenter = Segmenter(args.model, args.device, open_surface=args.open)
    volumes = [read_image(p) for p in progress_bar(images, "reading images")]
    for start in progress_bar(range(0, len(volumes), args.batch_size), "segmenting",
                              total=(len(volumes) + args.batch_size - 1) // args.batch_size):
        chunk = volumes[start : start + args.batch_size]
        for target, mesh in zip(targets[start : start + args.batch_size], segmenter.segment_batch(chunk)):
            write_mesh(mesh, target, args.coordinate_system)
            print(f"wrote {target} ({mesh.num_vertices} vertices, {mesh.num_faces} triangles)")
    return 0


def register(sub) -> None:
    """Add ``segment`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser("segment", help="image(s) -> mesh(es) with a trained model")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True, help="bundled model name (see 'imagetomesh models') or model folder")
    add_output(p, "mesh file (one image) or existing folder (several images)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--batch-size", type=int, default=8, help="images predicted together (default 8)")
    p.add_argument("--open", action="store_true",
                   help="keep the surface open where the model found no surface (NUDF models only; default: watertight)")
    add_space(p)
    p.set_defaults(func=cmd_segment)
