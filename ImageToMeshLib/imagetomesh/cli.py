"""The ``imagetomesh`` command.

Every sub-command reports bad input as one line on stderr and exit code 2, with no traceback
and no output file left behind (all writers are atomic).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from imagetomesh import __version__
from imagetomesh.errors import InputError

PROG = "imagetomesh"
COORDINATE_SYSTEMS = ("LPS", "RAS")


def _progress(iterable, desc: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, disable=None)


def _fraction(name: str, hi: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not 0.0 <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be between 0 and {hi}, got {value}")
        return value

    return parse


def _add_output(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help=help_text)


def _add_space(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinate-system", choices=COORDINATE_SYSTEMS, default="LPS", type=str.upper,
                   help="space of the written mesh; STL headers record it as 3D Slicer does (default LPS)")


# --- mesh-from-label --------------------------------------------------------------------
def cmd_mesh_from_label(args) -> int:
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.geometry.quality import check_mesh
    from imagetomesh.io.atomic import check_output_path
    from imagetomesh.io.images import read_labelmap
    from imagetomesh.io.meshes import write_mesh

    check_output_path(args.output)
    steps = _progress(range(3), "mesh-from-label")
    mask = read_labelmap(args.label_file, args.label)
    steps.update()
    smoothing = {} if args.smoothing is None else {"smoothing": args.smoothing}
    mesh = labelmap_to_mesh(mask, decimation=args.decimation, largest_component=args.largest_component, **smoothing)
    steps.update()
    check = check_mesh(mesh, self_intersections=False)
    write_mesh(mesh, args.output, args.coordinate_system)
    steps.update()
    steps.close()
    print(f"wrote {args.output} ({mesh.num_vertices} vertices, {mesh.num_faces} triangles, "
          f"{'watertight' if check.watertight else 'NOT watertight'}, {args.coordinate_system})")
    return 0


# --- evaluate ---------------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    from imagetomesh.io.images import read_labelmap
    from imagetomesh.io.meshes import read_mesh
    from imagetomesh.metrics import evaluate_mesh

    mesh = read_mesh(args.mesh).require_triangles(str(args.mesh))
    label = read_labelmap(args.label_file, args.label)
    result = evaluate_mesh(mesh, label, threshold_mm=args.threshold)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            print(f"{key:<{width}}  {shown}")
    return 0


# --- preview ----------------------------------------------------------------------------
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


# --- info -------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from imagetomesh.io.atomic import format_suffix
    from imagetomesh.io.meshes import MESH_SUFFIXES, read_mesh

    path = Path(args.file)
    if not path.exists():
        raise InputError(f"{path} does not exist")
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
    return 0


# --- segment ----------------------------------------------------------------------------
def _mesh_name(image: Path, suffix: str) -> str:
    name = image.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(ext):
            return name[: -len(ext)] + suffix
    return image.stem + suffix


def cmd_segment(args) -> int:
    from imagetomesh.inference import Segmenter
    from imagetomesh.io.atomic import check_output_path, format_suffix
    from imagetomesh.io.images import read_image
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
        targets = [args.output / _mesh_name(p, ".stl") for p in images]
        if len(set(targets)) != len(targets):
            raise InputError("two input images have the same name, so their meshes would overwrite each other; rename one")
    segmenter = Segmenter(args.model, args.device, open_surface=args.open)
    volumes = [read_image(p) for p in _progress(images, "reading images")]
    for start in _progress(range(0, len(volumes), args.batch_size), "segmenting",
                           total=(len(volumes) + args.batch_size - 1) // args.batch_size):
        chunk = volumes[start : start + args.batch_size]
        for target, mesh in zip(targets[start : start + args.batch_size], segmenter.segment_batch(chunk)):
            write_mesh(mesh, target, args.coordinate_system)
            print(f"wrote {target} ({mesh.num_vertices} vertices, {mesh.num_faces} triangles)")
    return 0


# --- models -----------------------------------------------------------------------------
def _format_metrics(metrics: dict, prefix: str = "") -> str:
    """``{"a": 0.12345, "mesh": {"b": 1}}`` -> ``"a 0.123, mesh.b 1"`` (nested blocks flattened)."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            parts.append(_format_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, float):
            parts.append(f"{prefix}{key} {value:.3f}")
        else:
            parts.append(f"{prefix}{key} {value}")
    return ", ".join(parts)


def cmd_models(args) -> int:
    from imagetomesh.weights import read_card
    from imagetomesh.zoo import available_models

    models = available_models()
    if not models:
        print("no models installed")
        return 0
    for name, folder in models.items():
        card = read_card(folder)
        if args.json:
            print(json.dumps({"name": name, "folder": str(folder), **card}))
            continue
        print(f"{name}")
        print(f"    kind      {card.get('kind')}")
        if "description" in card:
            print(f"    about     {card['description']}")
        data = card.get("data", {})
        if data:
            print(f"    data      {data.get('name', '')} ({data.get('licence', 'licence unknown')})")
        metrics = card.get("test_metrics") or card.get("validation_metrics") or {}
        if metrics:
            print(f"    metrics   {_format_metrics(metrics)}")
        print(f"    folder    {folder}")
    return 0


# --- demo -------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from imagetomesh.demo import run_demo

    run_demo(args.output, log=print)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Medical images to watertight surface meshes (LPS millimetres).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("mesh-from-label", help="labelmap -> watertight surface (marching cubes + smoothing)",
                       description="Turn a labelmap into a watertight surface mesh, as Slicer's segmentation export does.")
    p.add_argument("label_file", metavar="LABEL", type=Path, help="labelmap image (NIfTI, NRRD, MHA, DICOM folder)")
    _add_output(p, "mesh file to write (.stl, .vtp, .vtk, .obj, .ply)")
    p.add_argument("--label", type=int, default=None, help="label value to mesh (default: every non-zero voxel)")
    p.add_argument("--smoothing", type=_fraction("--smoothing", 1.0), default=None,
                   help="0 (none) .. 1 (strong), non-shrinking windowed-sinc (default: the library's)")
    p.add_argument("--decimation", type=_fraction("--decimation", 0.95), default=0.0,
                   help="fraction of triangles to remove, 0 .. 0.95 (default 0)")
    p.add_argument("--largest-component", action="store_true", help="keep only the largest connected surface")
    _add_space(p)
    p.set_defaults(func=cmd_mesh_from_label)

    p = sub.add_parser("evaluate", help="compare a mesh with a labelmap (Dice, IoU, Chamfer, HD95, ...)")
    p.add_argument("mesh", type=Path, help="mesh file (LPS; STL headers are honoured)")
    p.add_argument("label_file", metavar="LABEL", type=Path, help="reference labelmap")
    p.add_argument("--label", type=int, default=None, help="label value of the reference (default: any non-zero)")
    p.add_argument("--threshold", type=float, default=1.0, help="F-score distance threshold in mm (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("preview", help="mesh outlines over three orthogonal slices, as PNG")
    p.add_argument("image", type=Path)
    p.add_argument("meshes", type=Path, nargs="+", metavar="MESH")
    _add_output(p, "PNG file to write")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("info", help="geometry of an image or mesh file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("segment", help="image(s) -> mesh(es) with a trained model")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True, help="bundled model name (see 'imagetomesh models') or model folder")
    _add_output(p, "mesh file (one image) or existing folder (several images)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=8, help="images predicted together (default 8)")
    p.add_argument("--open", action="store_true",
                   help="keep the surface open where the model found no surface (NUDF models only; default: watertight)")
    _add_space(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("models", help="list the installed models and their cards")
    p.add_argument("--json", action="store_true", help="one JSON card per line")
    p.set_defaults(func=cmd_models)

    from imagetomesh.cli_fit import add_fit_commands
    from imagetomesh.cli_train import add_train_command

    add_train_command(sub)
    add_fit_commands(sub)

    p = sub.add_parser("demo", help="run the main job on the bundled sample data")
    p.add_argument("-o", "--output", type=Path, default=Path("imagetomesh-demo"), help="folder to write (default ./imagetomesh-demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"{PROG}: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        return args.func(args)
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
