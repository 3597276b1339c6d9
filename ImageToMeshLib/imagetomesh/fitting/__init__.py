"""DALS fitting tasks: a learned shape prior fitted to points, planar curves or a labelmap.

The public API (all inputs and outputs in LPS millimetres; each returns a watertight,
outward :class:`~imagetomesh.core.mesh.Mesh`):

- ``fit_points(points (N, 3), prior, lambda_dir=None, lambda_reg=None, iterations=None, remesh=False, device="cpu", progress=None, max_points=MAX_FIT_POINTS) -> Mesh``
  (a denser cloud is fitted through a seeded random subset of ``max_points``, :func:`subsample_points`)
- ``fit_curves(curves: list[(N_i, 3)], prior, lambda_dir=None, lambda_reg=None, iterations=None, remesh=False, device="cpu", progress=None) -> Mesh``
- ``refine_labelmap(mask: Volume, prior, lambda_dir=None, lambda_reg=None, iterations=None, remesh=False, device="cpu", progress=None) -> Mesh``

``None`` means the paper's default for that task (:data:`TASK_DEFAULTS`); ``lambda_dir=float("inf")``
fits one latent shared by all vertices. ``progress`` is an optional callable
``(fraction: float) -> None``, whose raising :class:`InterruptedError` cancels the fit.
``prior`` is a bundled prior name (``dals-hippocampus``, ``dals-kidney``), a model folder, or a
:class:`Prior` from :func:`load_prior`. Bad input raises :class:`~imagetomesh.errors.InputError`.
"""

from imagetomesh.fitting.prior import Prior, dals_priors, load_prior
from imagetomesh.fitting.tasks import (
    MAX_FIT_POINTS,
    TASK_DEFAULTS,
    fit_curves,
    fit_points,
    refine_labelmap,
    subsample_points,
)

__all__ = [
    "fit_points",
    "fit_curves",
    "refine_labelmap",
    "load_prior",
    "dals_priors",
    "Prior",
    "TASK_DEFAULTS",
    "MAX_FIT_POINTS",
    "subsample_points",
]
