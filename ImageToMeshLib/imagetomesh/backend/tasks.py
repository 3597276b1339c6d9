"""The jobs themselves: one function per task, found in a table (:data:`TASK_TABLE`).

Each task's function takes ``(job, progress, log, cache)`` and returns the job's result;
``cache`` keeps loaded models between jobs (the worker's whole point). The library is
imported inside the functions, so that importing the backend stays light (no torch in
Slicer's own process).
"""

from __future__ import annotations

import os
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from imagetomesh.backend.jobs import TASKS, Event, Job, LogCallback, ProgressCallback, _error_event
from imagetomesh.errors import InputError
from imagetomesh.threads import configure as configure_threads
from imagetomesh.threads import import_in_this_thread

__all__ = ["TASK_TABLE", "Task", "execute", "run_captured", "preload"]


def _require(value: Any, what: str, task: str) -> Any:
    """``value``, or an :class:`InputError` saying that the ``task`` job needs ``what``."""
    if value is None:
        raise InputError(f"the {task} job needs {what}")
    return value


def _ping(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict) -> dict:
    return {"pid": os.getpid()}


def _models(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict) -> list[dict]:
    from imagetomesh.zoo import list_models

    return list_models()


def _segment(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict):
    """A mesh, or for a model of several organs a list of :class:`~imagetomesh.organs.OrganMesh`."""
    from imagetomesh.inference import Segmenter
    from imagetomesh.organs import OrganMesh
    from imagetomesh.threads import work_for_model

    volume = _require(job.volume, "an image", job.task)
    model = job.params.get("model")
    if not model:
        raise InputError("no segmentation method chosen; pick one of the bundled models")
    device = str(job.params.get("device", "auto"))
    key = ("segmenter", str(model), device)
    if key not in cache:
        progress(0.05, f"loading model {model}")
        cache[key] = Segmenter(str(model), device)
        log(f"loaded {model} on {cache[key].model.device}")
    progress(0.2, f"segmenting with {model}")
    segmenter = cache[key]
    configure_threads(work_for_model(segmenter.model.kind), job.params.get("threads"))
    segmenter.check_input = not bool(job.params.get("allow_mismatch", False))
    if segmenter.organs is not None:  # a whole scan, one mesh per organ (None where not found)
        meshes = segmenter.segment_organs(volume)
        progress(1.0, "done")
        return [OrganMesh(organ, meshes[organ.name]) for organ in segmenter.organs]
    mesh = segmenter.segment(volume)  # preprocessing resamples into the model's orientation
    progress(1.0, "done")
    return mesh


def _fit(job: Job, progress: ProgressCallback, fit: Callable, observations: Callable[[], Any]):
    """The DALS fits' common run: ``fit(observations(), prior, progress=..., device=..., <options>)``."""
    configure_threads("fit", job.params.get("threads"))
    prior = job.params.get("prior")
    if not prior:
        raise InputError("no DALS prior chosen; pick one of the bundled priors")
    options = {
        "progress": lambda fraction: progress(float(fraction), "fitting"),
        "device": job.params.get("device", "cpu"),
    }
    for key in ("lambda_dir", "lambda_reg", "iterations", "remesh"):
        if job.params.get(key) is not None:
            options[key] = job.params[key]
    progress(0.0, f"fitting {prior}")
    return fit(observations(), prior, **options)


def _fit_curves(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict):
    from imagetomesh.fitting import fit_curves

    return _fit(
        job,
        progress,
        fit_curves,
        lambda: [np.asarray(c, dtype=np.float64) for c in _require(job.curves, "curves", job.task)],
    )


def _fit_points(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict):
    from imagetomesh.fitting import fit_points

    return _fit(
        job, progress, fit_points, lambda: np.asarray(_require(job.points, "points", job.task), dtype=np.float64)
    )


def _refine(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict):
    from imagetomesh.fitting import refine_labelmap

    return _fit(job, progress, refine_labelmap, lambda: _require(job.volume, "a labelmap", job.task))


def _check(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict) -> dict:
    from imagetomesh.geometry.quality import check_mesh

    check = check_mesh(_require(job.mesh, "a mesh", job.task))
    return dict(check.as_dict(), summary=check.summary())


def _repair(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict):
    from imagetomesh.geometry.quality import repair_mesh

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        repaired = repair_mesh(_require(job.mesh, "a mesh", job.task))
    for w in caught:
        log(str(w.message))
    return repaired


@dataclass(frozen=True)
class Task:
    """One task: its function and the heavy modules it imports.

    Attributes:
        run: ``run(job, progress, log, cache) -> result``.
        modules: imported by :func:`preload` in the caller's thread before a job of this task
            runs in another thread (:func:`~imagetomesh.threads.import_in_this_thread`).
    """

    run: Callable[[Job, ProgressCallback, LogCallback, dict], Any]
    modules: tuple[str, ...] = ()


_FIT_MODULES = ("torch", "pymeshlab", "imagetomesh.fitting")
_MESH_MODULES = ("pymeshlab", "imagetomesh.geometry.quality")

#: Every task of :data:`~imagetomesh.backend.jobs.TASKS`, by name.
TASK_TABLE: dict[str, Task] = {
    "segment": Task(_segment, ("torch", "pymeshlab", "imagetomesh.inference")),
    "fit_curves": Task(_fit_curves, _FIT_MODULES),
    "fit_points": Task(_fit_points, _FIT_MODULES),
    "refine": Task(_refine, _FIT_MODULES),
    "check": Task(_check, _MESH_MODULES),
    "repair": Task(_repair, _MESH_MODULES),
    "models": Task(_models, ("imagetomesh.zoo",)),
    "ping": Task(_ping),
}
assert tuple(TASK_TABLE) == TASKS, "TASK_TABLE and jobs.TASKS name the same tasks"


def execute(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict) -> Any:
    """Run ``job`` with the library and return its result (see the table in :mod:`imagetomesh.backend`).

    ``progress(fraction, message)`` may raise :class:`InterruptedError` to cancel; ``cache``
    keeps loaded models between calls.
    """
    return TASK_TABLE[job.task].run(job, progress, log, cache)


def run_captured(job: Job, progress: ProgressCallback, log: LogCallback, cache: dict) -> Event:
    """:func:`execute` ``job`` and turn its outcome into a done / error / cancelled :class:`Event`.

    Warnings are logged; a traceback is logged for errors that are neither bad input nor a
    missing package.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = execute(job, progress, log, cache)
        for w in caught:
            log(f"warning: {w.message}")
        return Event("done", fraction=1.0, result=result)
    except InterruptedError:
        return Event("cancelled", message="cancelled")
    except Exception as err:  # reported to the caller, who decides how to show it
        if not isinstance(err, (InputError, ImportError)):
            log(traceback.format_exc())
        return _error_event(err)


def preload(task: str) -> None:
    """Import ``task``'s heavy modules (see :attr:`Task.modules`); a missing one is left for the job to report."""
    import_in_this_thread(*TASK_TABLE[task].modules)
