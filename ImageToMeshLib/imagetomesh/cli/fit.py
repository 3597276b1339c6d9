"""``imagetomesh fit points|curves`` and ``imagetomesh refine``: a DALS shape prior fitted to observations in LPS mm.

Every command raises :class:`InputError` for bad input (exit code 2) and writes its mesh
atomically, only after the fit has finished.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagetomesh.cli.options import (
    DEVICES,
    add_output,
    add_space,
    add_threads,
    finite_weight,
    non_negative_int,
    path_arg,
    positive_int,
    weight,
)
from imagetomesh.cli.reporting import FractionBar, check_mesh_output, write_checked_mesh
from imagetomesh.errors import InputError

#: Markup kinds read as curves (an open ``Curve`` is closed, with a warning).
CURVE_KINDS = ("ClosedCurve", "Curve")
#: ``fit points --max-points`` default (:data:`imagetomesh.fitting.tasks.MAX_FIT_POINTS`; kept here so
#: ``--help`` does not import torch).
MAX_FIT_POINTS = 10_000


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prior", required=True, help="DALS prior: a bundled name (dals-hippocampus, dals-kidney) or a model folder"
    )
    add_output(p, "mesh file to write (.stl, .vtp, .vtk, .obj, .ply), millimetres (LPS unless --coordinate-system RAS)")
    p.add_argument(
        "--lambda-dir",
        type=weight("--lambda-dir"),
        default=None,
        help="weight of the latent smoothness term Tr(Z^T L^2 Z); 'inf' = one shared latent "
        "(default: the task's, from the DALS paper)",
    )
    p.add_argument(
        "--lambda-reg",
        type=finite_weight("--lambda-reg"),
        default=None,
        help="weight of the triangle-quality regulariser (default: the task's)",
    )
    p.add_argument(
        "--iterations", type=positive_int("--iterations"), default=None, help="Adam iterations (default: the task's)"
    )
    p.add_argument("--remesh", action="store_true", help="isotropic (Botsch-Kobbelt) remeshing of the result")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where to fit (default cpu)")
    add_threads(p, "1: a fit is many small operations")
    add_space(p)


def _run_fit(args, label: str, read: Callable[[], Any], fit: Callable, summary: Callable[[Any], str]) -> int:
    """The fit commands' common run: check the output path, load the prior, ``read()`` the
    observations, ``fit(observations, prior, ...)`` with a progress bar, write with ``summary(observations)``."""
    from imagetomesh.devices import resolve_device
    from imagetomesh.fitting import load_prior
    from imagetomesh.threads import configure as configure_threads

    check_mesh_output(args.output)
    configure_threads("fit", args.threads)
    device = resolve_device(args.device).type
    observations = read()  # the user's files first: a bad one is reported before seconds of prior loading
    prior = load_prior(args.prior, device=device)
    bar = FractionBar(label)
    try:
        mesh = fit(
            observations,
            prior,
            progress=bar,
            lambda_dir=args.lambda_dir,
            lambda_reg=args.lambda_reg,
            iterations=args.iterations,
            remesh=args.remesh,
            device=device,
        )
    finally:
        bar.close()
    write_checked_mesh(mesh, args.output, args.coordinate_system, summary(observations), self_intersections=True)
    return 0


# --- fit points ------------------------------------------------------------------------------
def cmd_fit_points(args) -> int:
    from imagetomesh.fitting import fit_points
    from imagetomesh.io.markups import read_points

    max_points = args.max_points or None  # 0: every point
    if max_points is not None and max_points < 4:
        raise InputError(f"--max-points must be 0 (every point) or at least 4, got {max_points}")

    def summary(points) -> str:
        if max_points is None or len(points) <= max_points:
            return f"fitted to {len(points)} points"
        return f"fitted to {max_points} of {len(points)} points (a seeded random subset; --max-points)"

    return _run_fit(
        args,
        "fit points",
        lambda: read_points(args.points),
        lambda points, prior, **kwargs: fit_points(points, prior, max_points=max_points, **kwargs),
        summary,
    )


# --- fit curves ------------------------------------------------------------------------------
def read_curves(paths: list[Path]) -> list:
    """Every curve of the given ``.mrk.json`` files, ``(N_i, 3)`` LPS mm each."""
    from imagetomesh.io.markups import read_markups

    curves = []
    for path in paths:
        markups = read_markups(path)
        found = [m for m in markups if m.kind in CURVE_KINDS]
        if not found:
            kinds = ", ".join(sorted({m.kind for m in markups}))
            raise InputError(
                f"{path} holds no curve (it has {kinds}); draw closed curves in Slicer and save them as .mrk.json"
            )
        for markup in found:
            if markup.kind == "Curve":
                warnings.warn(f"curve '{markup.name or path.name}' is open; it is treated as closed", stacklevel=2)
            curves.append(markup.points)
    return curves


def cmd_fit_curves(args) -> int:
    from imagetomesh.fitting import fit_curves

    return _run_fit(
        args,
        "fit curves",
        lambda: read_curves(args.curves),
        fit_curves,
        lambda curves: f"fitted to {len(curves)} curve(s)",
    )


# --- refine ------------------------------------------------------------------------------------
def cmd_refine(args) -> int:
    from imagetomesh.fitting import refine_labelmap
    from imagetomesh.fitting.tasks import REFINE_COVERAGE
    from imagetomesh.io.images import read_labelmap

    coverage = REFINE_COVERAGE if args.coverage is None else args.coverage
    return _run_fit(
        args,
        "refine",
        # only the label's box (plus a voxel) is kept: memory of about the file, not of a whole-image mask
        lambda: read_labelmap(args.label_file, args.label, crop_margin=1),
        lambda mask, prior, **kwargs: refine_labelmap(mask, prior, coverage=coverage, **kwargs),
        lambda mask: "refined labelmap",
    )


def register(sub) -> None:
    """Add ``fit`` (``points``, ``curves``) and ``refine`` to the main parser's sub-parsers ``sub``."""
    fit = sub.add_parser(
        "fit",
        help="fit a DALS shape prior to points or planar curves",
        description="Fit a learned DALS shape prior to observations in LPS mm.",
    )
    fit_sub = fit.add_subparsers(dest="fit_command", metavar="WHAT")
    fit_sub.required = True

    p = fit_sub.add_parser(
        "points", help="fit to a point cloud (csv x,y,z LPS mm, a mesh file, or a .mrk.json point list)"
    )
    p.add_argument(
        "points", metavar="POINTS", type=path_arg, help="csv/txt/xyz/fcsv (x,y,z LPS mm), mesh file, or .mrk.json"
    )
    p.add_argument(
        "--max-points",
        type=non_negative_int("--max-points"),
        default=MAX_FIT_POINTS,
        help=f"fit to at most this many points: a denser cloud is fitted through a seeded random subset "
        f"(default {MAX_FIT_POINTS:,}; the fit does not improve past a few thousand; 0 = every point)",
    )
    _add_fit_options(p)
    p.set_defaults(func=cmd_fit_points)

    p = fit_sub.add_parser("curves", help="fit to planar closed curves (Slicer .mrk.json, any number of planes)")
    p.add_argument(
        "curves", metavar="CURVE.mrk.json", type=path_arg, nargs="+", help="Slicer markups files with closed curves"
    )
    _add_fit_options(p)
    p.set_defaults(func=cmd_fit_curves)

    p = sub.add_parser("refine", help="refine a labelmap with a DALS shape prior into a smooth watertight surface")
    p.add_argument("label_file", metavar="LABEL", type=path_arg, help="labelmap image (NIfTI, NRRD, MHA, DICOM folder)")
    p.add_argument("--label", type=int, default=None, help="label value to refine (default: every non-zero voxel)")
    p.add_argument(
        "--coverage",
        type=finite_weight("--coverage"),
        default=None,
        help="weight of the term pulling the surface over the whole mask boundary "
        "(default 3, tuned on validation; 0 = the DALS paper's loss alone)",
    )
    _add_fit_options(p)
    p.set_defaults(func=cmd_refine)
