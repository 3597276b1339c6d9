"""The three DALS fitting tasks: points, planar curves, labelmap.

Every task maps its observations (LPS mm) into a *fit frame* ``(lps - c0) / s0`` whose
centre ``c0`` and scale ``s0`` come from the observations (centroid and largest radius, as the
training shapes were normalised), runs :func:`~imagetomesh.fitting.optimise.run_fit` (for a
paired-organ prior also mirrored, keeping the fit with the lower task loss) and maps the mesh
back to LPS mm. The result is the deformed icosphere: closed, 2-manifold, faces outward;
optionally remeshed isotropically.

Defaults (``None``) are the DALS paper's per task: points ``lambda_reg 1e-3, lambda_dir 0.2``;
curves ``lambda_reg 1e-2, lambda_dir 100``; labelmap ``lambda_reg 0, lambda_dir inf``.

The labelmap task adds one term to the paper's loss (see :func:`refine_labelmap`): a robust
*coverage* of the mask's boundary by the surface. The paper's ``mean U(x_v)`` is one-sided: it
is zero for any surface whose vertices all lie somewhere on the boundary, so a fit can leave
parts of the organ uncovered (a missing slab let the surface settle on one piece).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Optional

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.volume import Volume
from imagetomesh.devices import resolve_device
from imagetomesh.errors import InputError
from imagetomesh.fitting.curves import CurveLoss, lps_points, planar_curves
from imagetomesh.fitting.distance_field import DistanceField, sample_distance
from imagetomesh.fitting.optimise import FitResult, FitSettings, chamfer, run_fit
from imagetomesh.fitting.prior import Prior, load_prior
from imagetomesh.fitting.remesh import finish_fitted_mesh
from imagetomesh.geometry.isosurface import check_structure_size
from imagetomesh.geometry.sampling import sample_points_on_mesh
from imagetomesh.models.dals import ShapeNormalisation

Progress = Optional[Callable[[float], None]]

#: The paper's defaults per task; ``iterations`` and the step sizes were chosen on the validation splits.
TASK_DEFAULTS = {
    "points": FitSettings(lambda_dir=0.2, lambda_reg=1e-3, iterations=250),
    "curves": FitSettings(lambda_dir=100.0, lambda_reg=1e-2, iterations=250),
    "labelmap": FitSettings(lambda_dir=math.inf, lambda_reg=0.0, iterations=250),
}
#: Points sampled on the fitted surface per iteration for the points task (besides its vertices).
SURFACE_SAMPLES = 1000
#: The points task fits to at most this many of the given points (a seeded random subset of a denser
#: cloud, :func:`subsample_points`): its Chamfer term costs time in proportion to the points, while the
#: fit does not improve past a few thousand (Dice is flat from 2,500 points on a kidney; the template has
#: 2,562 vertices). The subset is an unbiased sample of the cloud, so its density weighting is kept.
MAX_FIT_POINTS = 10_000
#: Iterations of the short shared-latent fits that decide between a paired prior and its mirror.
MIRROR_PROBE_ITERATIONS = 60
#: They run on a template this many levels coarser than the fit's (162 vertices for 2,562): the
#: side is decided by the overall shape.
MIRROR_PROBE_COARSENING = 2
#: Labelmap task: weight of the boundary-coverage term (0: the paper's loss alone) and the
#: distance (mm) beyond which a boundary point stops pulling (spurious blobs further away are
#: ignored); chosen on the validation hippocampi (docs/dals-results.md).
REFINE_COVERAGE = 3.0
COVERAGE_SCALE_MM = 1.0
#: Points sampled on the mask's boundary for the coverage term.
BOUNDARY_SAMPLES = 4000


def _settings(task: str, lambda_dir, lambda_reg, iterations) -> FitSettings:
    settings = TASK_DEFAULTS[task]
    changes = {}
    for name, value in (("lambda_dir", lambda_dir), ("lambda_reg", lambda_reg)):
        if value is not None:
            value = float(value)
            if not value >= 0:  # also rejects NaN
                raise InputError(f"{name} must be >= 0 (or inf for lambda_dir), got {value}")
            changes[name] = value
    if math.isinf(changes.get("lambda_reg", 0.0)):
        raise InputError("lambda_reg must be finite")
    if iterations is not None:
        if int(iterations) != iterations or int(iterations) < 1:
            raise InputError(f"iterations must be a whole number >= 1, got {iterations}")
        changes["iterations"] = int(iterations)
    return replace(settings, **changes)


def _fit(
    prior: Prior, loss: Callable, frame: ShapeNormalisation, settings: FitSettings, progress: Progress, remesh: bool
) -> Mesh:
    """Run the fit (for a paired prior: short shared-latent fits of both orientations pick the
    better one first) and map the result back to LPS mm."""
    if prior.paired:
        fine = prior.config.fit_template_level if settings.template_level is None else settings.template_level
        probe = replace(
            settings,
            lambda_dir=math.inf,
            iterations=min(MIRROR_PROBE_ITERATIONS, settings.iterations),
            template_level=max(0, fine - MIRROR_PROBE_COARSENING),
            coarse_fraction=0.0,
        )
        share = 0.15
        results = [
            run_fit(prior, loss, probe, mirrored, progress, (k * share, (k + 1) * share), final_decode=False)
            for k, mirrored in enumerate((False, True))
        ]
        mirrored = min(results, key=lambda r: r.task_loss).mirrored
        result = run_fit(prior, loss, settings, mirrored, progress, (2 * share, 1.0))
    else:
        result = run_fit(prior, loss, settings, False, progress, (0.0, 1.0))
    return _to_mesh(result, frame, remesh)


def _to_mesh(result: FitResult, frame: ShapeNormalisation, remesh: bool) -> Mesh:
    mesh = Mesh(frame.to_lps(result.verts), result.faces)
    return finish_fitted_mesh(mesh, remesh)


# --- points --------------------------------------------------------------------------------------
def subsample_points(points: np.ndarray, max_points: int | None = MAX_FIT_POINTS, seed: int = 0) -> np.ndarray:
    """``points (N, 3)`` when ``N <= max_points`` (or ``max_points`` is None), else ``max_points`` of them chosen
    at random without replacement (``seed``: the same subset every run), in their original order."""
    points = np.asarray(points)
    if max_points is None or len(points) <= int(max_points):
        return points
    if int(max_points) < 4:
        raise InputError(f"max_points must be at least 4, got {max_points}")
    keep = np.random.default_rng(seed).choice(len(points), int(max_points), replace=False)
    return points[np.sort(keep)]


def fit_points(
    points,
    prior,
    lambda_dir=None,
    lambda_reg=None,
    iterations=None,
    remesh=False,
    device="cpu",
    progress: Progress = None,
    max_points: int | None = MAX_FIT_POINTS,
) -> Mesh:
    """Fit a DALS prior to a point cloud on the organ's surface.

    Args:
        points: ``(N, 3)`` LPS mm, ``N >= 4``.
        max_points: fit to at most this many of the points (a seeded random subset,
            :func:`subsample_points`; default :data:`MAX_FIT_POINTS`; None: all). The frame (centre and
            scale) and the checks use every point.
        prior: a DALS prior name (``dals-kidney``), folder or :class:`Prior`.
        lambda_dir, lambda_reg, iterations: ``None`` = the task's default (see the module docstring);
            ``lambda_dir=float("inf")`` fits one latent shared by all vertices.
        remesh: isotropic remeshing of the result.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (see :func:`~imagetomesh.devices.resolve_device`).
        progress: ``progress(fraction)`` callback; raising :class:`InterruptedError` in it cancels.

    Returns:
        A watertight, outward :class:`Mesh` in LPS mm.
    """
    settings = _settings("points", lambda_dir, lambda_reg, iterations)
    dev = resolve_device(device)
    pts = lps_points(points, "points")
    if len(pts) < 4:
        raise InputError(f"{len(pts)} point(s) given; fitting a surface needs at least 4 points on it")
    centred = pts - pts.mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    if s[0] == 0 or s[1] <= 1e-9 * s[0]:
        raise InputError("the points all lie on one line (or one spot); give points spread over the surface")
    if s[2] <= 1e-3 * s[0]:
        warnings.warn(
            "the points all lie in one plane, so the shape is under-constrained across that plane; "
            "add points off the plane",
            stacklevel=2,
        )
    prior = load_prior(prior, dev)
    frame = ShapeNormalisation.of_points(pts)
    target = torch.as_tensor(frame.to_normalised(subsample_points(pts, max_points)), dtype=torch.float32, device=dev)
    generator = torch.Generator(device=dev).manual_seed(0)
    tree = cKDTree(target.cpu().numpy()) if dev.type == "cpu" else None

    def loss(verts, faces):
        samples = sample_points_on_mesh(verts, faces, SURFACE_SAMPLES, generator=generator)
        return chamfer(torch.cat([verts, samples]), target, tree)

    return _fit(prior, loss, frame, settings, progress, remesh)


# --- curves --------------------------------------------------------------------------------------
def fit_curves(
    curves,
    prior,
    lambda_dir=None,
    lambda_reg=None,
    iterations=None,
    remesh=False,
    device="cpu",
    progress: Progress = None,
) -> Mesh:
    """Fit a DALS prior to closed planar curves (one per plane, any planes).

    Args:
        curves: list of ``(N_i, 3)`` LPS mm control points of closed curves, ``N_i >= 3``,
            each in its own plane (a non-planar curve is projected onto its best-fit plane
            with a warning; two curves in one plane are an error).
        Other arguments as :func:`fit_points`.

    Returns:
        A watertight, outward :class:`Mesh` in LPS mm.
    """
    settings = _settings("curves", lambda_dir, lambda_reg, iterations)
    dev = resolve_device(device)
    if isinstance(curves, np.ndarray) and curves.ndim == 2:
        curves = [curves]
    planes = planar_curves(list(curves) if curves is not None else [])
    if len(planes) == 1:
        warnings.warn(
            "one curve gives a poor fit: across its plane the shape is only the prior's guess; "
            "draw closed curves on two or three roughly orthogonal planes",
            stacklevel=2,
        )
    prior = load_prior(prior, dev)
    all_points = np.vstack([p.points for p in planes])
    frame = ShapeNormalisation.of_points(all_points)
    return _fit(prior, CurveLoss(planes, frame.centre, frame.scale, dev), frame, settings, progress, remesh)


# --- labelmap ------------------------------------------------------------------------------------
#: Connected components smaller than this fraction of the largest are ignored when placing the prior.
MIN_COMPONENT_FRACTION = 0.1


def _main_components(mask: np.ndarray) -> np.ndarray:
    """The mask without its small connected components (< MIN_COMPONENT_FRACTION of the largest):
    spurious specks are dropped, a structure cut in pieces (a missing slab) is kept whole."""
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    keep = np.flatnonzero(sizes >= MIN_COMPONENT_FRACTION * sizes.max())
    return np.isin(labelled, keep)


def _cropped_to_object(mask: Volume) -> Volume:
    """``mask`` cropped to the box of its nonzero voxels plus one voxel (every later step works on that box, not
    on the whole image: a small organ in a 600^3 labelmap costs its box); unchanged when it is empty."""
    from imagetomesh.core.cropping import bounding_box, crop_to_box

    box = bounding_box(np.asarray(mask.array))
    return mask if box is None else crop_to_box(mask, box, margin=1)


def labelmap_frame(mask: Volume) -> ShapeNormalisation:
    """Centre and scale of a mask's main connected components (their surface's centroid and largest radius)."""
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.metrics import sample_surface

    component = _main_components(np.asarray(mask.array) != 0)
    surface = labelmap_to_mesh(mask.with_array(component.astype(np.uint8)))
    return ShapeNormalisation.of_points(sample_surface(surface, 4096, seed=0))


def coverage_loss(
    verts: torch.Tensor,
    faces: torch.Tensor,
    boundary: torch.Tensor,
    scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Robust mean distance from boundary points to the surface (Geman-McClure).

    For each boundary point ``b`` (``boundary`` ``(M, 3)``), ``d_b`` is the distance to the nearest
    of the surface's vertices and ``SURFACE_SAMPLES`` points sampled on its faces
    (``verts`` ``(V, 3)``, ``faces`` ``(F, 3)``); the loss is ``scale * mean_b rho(d_b / scale)``
    with ``rho(t) = t^2 / (1 + t^2)``: quadratic near the surface, flat beyond ``scale``, so
    far boundary points (a spurious blob) barely pull. Differentiable in ``verts``.
    """
    samples = sample_points_on_mesh(verts, faces, SURFACE_SAMPLES, generator=generator)
    surface = torch.cat([verts, samples])
    _, nearest = cKDTree(surface.detach().cpu().numpy()).query(boundary.detach().cpu().numpy())
    nearest = torch.as_tensor(np.asarray(nearest, dtype=np.int64), device=surface.device)
    d2 = ((boundary - surface[nearest]) ** 2).sum(1)
    return scale * (d2 / (d2 + scale**2)).mean()


def refine_labelmap(
    mask: Volume,
    prior,
    lambda_dir=None,
    lambda_reg=None,
    iterations=None,
    remesh=False,
    device="cpu",
    progress: Progress = None,
    coverage: float = REFINE_COVERAGE,
) -> Mesh:
    """Fit a DALS prior to a (possibly flawed) binary labelmap: a smooth organ-shaped surface.

    Loss: the paper's mean over vertices of the unsigned distance ``U`` to the mask's boundary
    (with the Sobel gradient image as its gradient, :mod:`imagetomesh.fitting.distance_field`)
    plus ``coverage`` times :func:`coverage_loss` of ``BOUNDARY_SAMPLES`` points on the mask's
    boundary (scale ``COVERAGE_SCALE_MM``); initialised at the centre and scale of the mask's
    main connected components (specks smaller than a tenth of the largest component are ignored
    there, not in the loss). Memory is bounded by the object, not the image: the mask is cropped to the
    object's box first, and the distance field of a large box is computed on a coarser lattice
    (:data:`~imagetomesh.fitting.distance_field.MAX_FIELD_VOXELS`).

    Args:
        mask: :class:`Volume` whose nonzero voxels are the structure.
        coverage: weight of the coverage term, ``>= 0`` (0: the paper's loss alone).
        Other arguments as :func:`fit_points`.

    Returns:
        A watertight, outward :class:`Mesh` in LPS mm.
    """
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.metrics import sample_surface

    settings = _settings("labelmap", lambda_dir, lambda_reg, iterations)
    coverage = float(coverage)
    if not coverage >= 0 or math.isinf(coverage):
        raise InputError(f"coverage must be a finite weight >= 0, got {coverage}")
    dev = resolve_device(device)
    if not isinstance(mask, Volume):
        raise InputError("refine_labelmap needs a Volume; load the labelmap with imagetomesh.io.read_labelmap first")
    mask = _cropped_to_object(mask)
    check_structure_size(np.asarray(mask.array))
    prior = load_prior(prior, dev)
    frame = labelmap_frame(mask)
    field = DistanceField(mask, device=dev)
    centre = torch.as_tensor(frame.centre, dtype=torch.float32, device=dev)
    scale = float(frame.scale)
    if coverage > 0:
        binary = mask.with_array((np.asarray(mask.array) != 0).astype(np.uint8))
        boundary_lps = sample_surface(labelmap_to_mesh(binary, smoothing=0.0), BOUNDARY_SAMPLES, seed=0)
        boundary = torch.as_tensor(frame.to_normalised(boundary_lps), dtype=torch.float32, device=dev)
        generator = torch.Generator(device=dev).manual_seed(0)

    def loss(verts, faces):
        distance = sample_distance(centre + scale * verts, field).mean() / scale
        if coverage == 0:
            return distance
        return distance + coverage * coverage_loss(
            verts, faces, boundary, scale=COVERAGE_SCALE_MM / scale, generator=generator
        )

    return _fit(prior, loss, frame, settings, progress, remesh)
