"""``imagetomesh mesh-from-label``: a labelmap -> a watertight surface, as Slicer's segmentation export does."""

from __future__ import annotations

import warnings

from imagetomesh.cli.options import add_output, add_space, fraction, path_arg
from imagetomesh.cli.reporting import progress_bar, write_checked_mesh


def cmd_mesh_from_label(args) -> int:
    from imagetomesh.core.edges import cut_warning, touched_faces
    from imagetomesh.geometry.isosurface import EXPORT_SMOOTHING, labelmap_to_mesh
    from imagetomesh.io.atomic import check_output_path
    from imagetomesh.io.images import read_labelmap

    check_output_path(args.output)
    steps = progress_bar(range(3), "mesh-from-label")
    # only the label's bounding box (+1 voxel, so touched_faces still sees the image's faces) is ever
    # selected and copied: a small structure in a 600^3 labelmap costs about the file's size in memory
    mask = read_labelmap(args.label_file, args.label, crop_margin=1)
    warning = cut_warning(
        f"label {args.label}" if args.label is not None else "the labelled object", touched_faces(mask)
    )
    if warning:
        warnings.warn(warning, stacklevel=1)
    steps.update()
    smoothing = EXPORT_SMOOTHING if args.smoothing is None else args.smoothing
    mesh = labelmap_to_mesh(
        mask,
        smoothing=smoothing,
        smoothing_iterations=None,  # 3D Slicer's count: --smoothing F is Slicer's smoothing factor F
        decimation=args.decimation,
        largest_component=args.largest_component,
    )
    steps.update()
    write_checked_mesh(mesh, args.output, args.coordinate_system)
    steps.update()
    steps.close()
    return 0


def register(sub) -> None:
    """Add ``mesh-from-label`` to the main parser's sub-parsers ``sub``."""
    p = sub.add_parser(
        "mesh-from-label",
        help="labelmap -> watertight surface (marching cubes + smoothing)",
        description="Turn a labelmap into a watertight surface mesh, as Slicer's segmentation export does.",
    )
    p.add_argument("label_file", metavar="LABEL", type=path_arg, help="labelmap image (NIfTI, NRRD, MHA, DICOM folder)")
    add_output(p, "mesh file to write (.stl, .vtp, .vtk, .obj, .ply)")
    p.add_argument("--label", type=int, default=None, help="label value to mesh (default: every non-zero voxel)")
    p.add_argument(
        "--smoothing",
        type=fraction("--smoothing", 1.0),
        default=None,
        help="0 (none) .. 1 (strong): 3D Slicer's smoothing factor (the same non-shrinking windowed-sinc "
        "filter, pass band and iteration count as Slicer's closed-surface conversion, whose default is 0.5); "
        "default 0.18, as faithful to the label as marching cubes + Taubin smoothing",
    )
    p.add_argument(
        "--decimation",
        type=fraction("--decimation", 0.95),
        default=0.0,
        help="fraction of triangles to remove, 0 .. 0.95 (default 0)",
    )
    p.add_argument("--largest-component", action="store_true", help="keep only the largest connected surface")
    add_space(p)
    p.set_defaults(func=cmd_mesh_from_label)
