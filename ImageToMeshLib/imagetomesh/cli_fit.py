"""``imagetomesh fit points|curves`` and ``imagetomesh refine`` (``train dals``: :mod:`imagetomesh.cli_train`).

:func:`add_fit_commands` registers ``fit`` (with ``points`` and ``curves``) and ``refine`` on the
main parser's sub-parsers. Every command raises :class:`InputError` for bad input (``main`` turns it
into exit code 2) and writes its mesh atomically, only after the fit has finished.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from imagetomesh.cli import _add_output, _add_space, _progress
from imagetomesh.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def _lambda(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number (or 'inf'), got {text!r}") from None
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {text}")
        return value

    return parse


def _finite_weight(name: str):
    lam = _lambda(name)

    def parse(text: str) -> float:
        value = lam(text)
        if value == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number >= 0, got {text}")
        return value

    return parse


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {value}")
        return value

    return parse


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior", required=True, help="DALS prior: a bundled name (dals-hippocampus, dals-kidney) or a model folder")
    _add_output(p, "mesh file to write (.stl, .vtp, .vtk, .obj, .ply), millimetres (LPS unless --coordinate-system RAS)")
    p.add_argument("--lambda-dir", type=_lambda("--lambda-dir"), default=None,
                   help="weight of the latent smoothness term Tr(Z^T L^2 Z); 'inf' = one shared latent "
                        "(default: the task's, from the DALS paper)")
    p.add_argument("--lambda-reg", type=_lambda("--lambda-reg"), default=None,
                   help="weight of the triangle-quality regulariser (default: the task's)")
    p.add_argument("--iterations", type=_positive_int("--iterations"), default=None,
                   help="Adam iterations (default: the task's)")
    p.add_argument("--remesh", action="store_true", help="isotropic (Botsch-Kobbelt) remeshing of the result")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where to fit (default cpu)")
    _add_space(p)


def _fit_kwargs(args) -> dict:
    from imagetomesh.zoo import resolve_device

    return {
        "lambda_dir": args.lambda_dir,
        "lambda_reg": args.lambda_reg,
        "iterations": args.iterations,
        "remesh": args.remesh,
        "device": resolve_device(args.device).type,
    }


class _Bar:
    """A tqdm bar driven by the fitting's ``progress(fraction)`` callback."""

    def __init__(self, desc: str) -> None:
        self.bar = _progress(range(1000), desc, total=1000)
        self.done = 0

    def __call__(self, fraction: float) -> None:
        target = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        if target > self.done:
            self.bar.update(target - self.done)
            self.done = target

    def close(self) -> None:
        self.bar.close()


def _finish(mesh, args, what: str) -> int:
    from imagetomesh.geometry.quality import check_mesh
    from imagetomesh.io.meshes import write_mesh

    check = check_mesh(mesh, self_intersections=False)
    write_mesh(mesh, args.output, args.coordinate_system)
    print(f"wrote {args.output} ({what}: {mesh.num_vertices} vertices, {mesh.num_faces} triangles, "
          f"{'watertight' if check.watertight else 'NOT watertight'}, {args.coordinate_system})")
    return 0


def _check_mesh_output(path: Path) -> None:
    from imagetomesh.io.atomic import check_output_path, format_suffix
    from imagetomesh.io.meshes import MESH_SUFFIXES

    check_output_path(path)
    if format_suffix(path) not in MESH_SUFFIXES:
        raise InputError(f"output {path} needs a mesh extension: one of {', '.join(MESH_SUFFIXES)}")


def _run_fit(args, label: str, read, fit, summary) -> int:
    """The fit commands' common run: check the output path, load the prior, ``read()`` the
    observations, ``fit(observations, prior, ...)`` with a progress bar, write with ``summary(observations)``."""
    from imagetomesh.fitting import load_prior

    _check_mesh_output(args.output)
    prior = load_prior(args.prior, device=_fit_kwargs(args)["device"])
    observations = read()
    bar = _Bar(label)
    try:
        mesh = fit(observations, prior, progress=bar, **_fit_kwargs(args))
    finally:
        bar.close()
    return _finish(mesh, args, summary(observations))


# --- fit points ------------------------------------------------------------------------------
def cmd_fit_points(args) -> int:
    from imagetomesh.fitting import fit_points
    from imagetomesh.io.markups import read_points

    return _run_fit(args, "fit points", lambda: read_points(args.points), fit_points,
                    lambda points: f"fitted to {len(points)} points")


# --- fit curves ------------------------------------------------------------------------------
CURVE_KINDS = ("ClosedCurve", "Curve")


def read_curves(paths: list[Path]) -> list:
    """Every curve of the given ``.mrk.json`` files, ``(N_i, 3)`` LPS mm each."""
    from imagetomesh.io.markups import read_markups

    curves = []
    for path in paths:
        markups = read_markups(path)
        found = [m for m in markups if m.kind in CURVE_KINDS]
        if not found:
            kinds = ", ".join(sorted({m.kind for m in markups}))
            raise InputError(f"{path} holds no curve (it has {kinds}); draw closed curves in Slicer and save them as .mrk.json")
        for markup in found:
            if markup.kind == "Curve":
                warnings.warn(f"curve '{markup.name or path.name}' is open; it is treated as closed", stacklevel=2)
            curves.append(markup.points)
    return curves


def cmd_fit_curves(args) -> int:
    from imagetomesh.fitting import fit_curves

    return _run_fit(args, "fit curves", lambda: read_curves(args.curves), fit_curves,
                    lambda curves: f"fitted to {len(curves)} curve(s)")


# --- refine ------------------------------------------------------------------------------------
def cmd_refine(args) -> int:
    from imagetomesh.fitting import refine_labelmap
    from imagetomesh.io.images import read_labelmap

    from imagetomesh.fitting.tasks import REFINE_COVERAGE

    coverage = REFINE_COVERAGE if args.coverage is None else args.coverage
    return _run_fit(args, "refine", lambda: read_labelmap(args.label_file, args.label),
                    lambda mask, prior, **kwargs: refine_labelmap(mask, prior, coverage=coverage, **kwargs),
                    lambda mask: "refined labelmap")


def add_fit_commands(subparsers) -> None:
    """Register ``fit`` (``points``, ``curves``) and ``refine`` on ``subparsers``."""
    fit = subparsers.add_parser("fit", help="fit a DALS shape prior to points or planar curves",
                                description="Fit a learned DALS shape prior to observations in LPS mm.")
    fit_sub = fit.add_subparsers(dest="fit_command", metavar="WHAT")
    fit_sub.required = True

    p = fit_sub.add_parser("points", help="fit to a point cloud (csv x,y,z LPS mm, a mesh file, or a .mrk.json point list)")
    p.add_argument("points", metavar="POINTS", type=Path, help="csv/txt/xyz/fcsv (x,y,z LPS mm), mesh file, or .mrk.json")
    _add_fit_options(p)
    p.set_defaults(func=cmd_fit_points)

    p = fit_sub.add_parser("curves", help="fit to planar closed curves (Slicer .mrk.json, any number of planes)")
    p.add_argument("curves", metavar="CURVE.mrk.json", type=Path, nargs="+", help="Slicer markups files with closed curves")
    _add_fit_options(p)
    p.set_defaults(func=cmd_fit_curves)

    p = subparsers.add_parser("refine", help="refine a labelmap with a DALS shape prior into a smooth watertight surface")
    p.add_argument("label_file", metavar="LABEL", type=Path, help="labelmap image (NIfTI, NRRD, MHA, DICOM folder)")
    p.add_argument("--label", type=int, default=None, help="label value to refine (default: every non-zero voxel)")
    p.add_argument("--coverage", type=_finite_weight("--coverage"), default=None,
                   help="weight of the term pulling the surface over the whole mask boundary "
                        "(default 3, tuned on validation; 0 = the DALS paper's loss alone)")
    _add_fit_options(p)
    p.set_defaults(func=cmd_refine)


def build_fit_parser() -> argparse.ArgumentParser:
    """A stand-alone parser with only these commands (tests, and ``python -m imagetomesh.cli_fit``)."""
    parser = argparse.ArgumentParser(prog="imagetomesh")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_fit_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one of these commands with the main CLI's error handling (exit 2 on bad input)."""
    from imagetomesh.cli import _format_warning

    args = build_fit_parser().parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        return args.func(args)
    except InputError as err:
        print(f"imagetomesh: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imagetomesh: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
