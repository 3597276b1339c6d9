"""The worker the Slicer module talks to: jobs run away from the user interface.

A *job* is one of the library's long operations on in-memory data (LPS millimetres):

========== ================================================ ==================
task       inputs                                            result
========== ================================================ ==================
segment    ``volume``; params ``model``, ``device``           :class:`Mesh`
fit_curves ``curves``; params ``prior``, ``lambda_dir``, ...  :class:`Mesh`
fit_points ``points``; params as fit_curves                   :class:`Mesh`
refine     ``volume`` (a mask); params as fit_curves          :class:`Mesh`
check      ``mesh``                                           ``dict`` (MeshCheck + summary)
repair     ``mesh``                                           :class:`Mesh`
models     (none)                                             ``list`` of ``{name, folder, card}``
ping       (none)                                             ``{"pid": ...}``
========== ================================================ ==================

Every backend has the same small interface (:class:`Backend`)::

    backend.start(job)          # non-blocking; BackendError if a job is already running
    backend.poll(timeout)       # -> list[Event]: progress / log / done / error / cancelled
    backend.cancel()            # ask the running job to stop
    backend.busy                # True between start() and its done/error/cancelled event
    backend.close()
    backend.run(job, progress=None, log=None)   # blocking helper built on the four above

Implementations:

- :class:`WorkerBackend`: a long-running worker *process* (:func:`worker_main`)
  that keeps models loaded between jobs. Messages are JSON lines over the worker's stdin and
  stdout (never pickles); arrays travel as ``.npy`` files in a private temporary folder.
  Cancel is cooperative (the job's progress callback raises :class:`InterruptedError`) and,
  when the job does not stop within ``cancel_grace`` seconds (a model's forward pass has no
  progress hooks), the worker is terminated and restarted on the next job. The worker runs in
  its own process group, and every way the backend ends it ends the whole process tree
  (:func:`terminate_process_tree`): Slicer's ``PythonSlicer`` is a launcher whose child is the
  real Python. A worker that dies is reported as an ``error`` event of type ``WorkerDied``
  with its exit code and last words.
- :class:`InProcessBackend`: the same jobs in a thread of the calling process, for scripts
  and tests (cooperative cancel only).

Tests substitute any object with ``start/poll/cancel/busy/close`` (see the Slicer tests).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.volume import Volume, transform_points
from imagetomesh.errors import InputError

__all__ = [
    "TASKS",
    "Job",
    "Event",
    "Backend",
    "BackendError",
    "WorkerDied",
    "JobCancelled",
    "InProcessBackend",
    "WorkerBackend",
    "execute",
    "crop_volume",
    "list_models",
    "terminate_process_tree",
]

_log = logging.getLogger(__name__)

#: Job names and what each needs (see the module docstring).
TASKS = ("segment", "fit_curves", "fit_points", "refine", "check", "repair", "models", "ping")

#: Card kinds of DALS shape priors (everything else in the zoo segments images).
PRIOR_KINDS = ("dals",)


# --- errors and messages -------------------------------------------------------------------
class BackendError(RuntimeError):
    """The backend could not run a job (not the user's input): a bug, a busy or broken worker."""


class WorkerDied(BackendError):
    """The worker process exited while a job was running."""


class JobCancelled(InterruptedError):
    """The job was cancelled; nothing was produced."""


@dataclass
class Job:
    """One unit of work for a backend. Arrays are in LPS millimetres.

    Attributes:
        task: one of :data:`TASKS`.
        params: JSON-serialisable options (``model``, ``prior``, ``device``, ``lambda_dir``, ...).
        volume: the image (segment) or mask (refine).
        curves: planar curves, ``(N_i, 3)`` each (fit_curves).
        points: ``(N, 3)`` points (fit_points).
        mesh: a mesh (check, repair).
    """

    task: str
    params: dict = field(default_factory=dict)
    volume: Volume | None = None
    curves: list | None = None
    points: np.ndarray | None = None
    mesh: Mesh | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown backend task {self.task!r}; known: {', '.join(TASKS)}")

    def describe(self) -> str:
        what = self.params.get("model") or self.params.get("prior") or ""
        return f"{self.task} {what}".strip()


@dataclass
class Event:
    """Something a backend reports from :meth:`Backend.poll`.

    Attributes:
        kind: ``progress`` (``fraction`` in 0..1 and ``message``), ``log`` (``message``),
            ``done`` (``result``), ``error`` (``message`` and ``error_type``: ``InputError``,
            ``WorkerDied``, ``MissingDependency`` or ``Error``) or ``cancelled``.
    """

    kind: str
    fraction: float = 0.0
    message: str = ""
    result: Any = None
    error_type: str = ""

    def exception(self) -> Exception:
        """The exception :meth:`Backend.run` raises for an ``error`` or ``cancelled`` event."""
        if self.kind == "cancelled":
            return JobCancelled(self.message or "cancelled")
        if self.error_type == "InputError":
            return InputError(self.message)
        if self.error_type == "WorkerDied":
            return WorkerDied(self.message)
        return BackendError(self.message)


ProgressCallback = Callable[[float, str], None]


# --- the jobs themselves ---------------------------------------------------------------------
def _resolve_device(device: str | None) -> str:
    from imagetomesh.zoo import resolve_device

    return resolve_device(device or "auto").type


def list_models() -> list[dict]:
    """Every model on the zoo's search path: ``[{name, folder, kind, card}]`` (segmenters and priors)."""
    from imagetomesh.weights import read_card
    from imagetomesh.zoo import available_models

    out = []
    for name, folder in available_models().items():
        try:
            card = read_card(folder)
        except InputError as err:
            card = {"kind": "unknown", "error": str(err)}
        out.append({"name": name, "folder": str(folder), "kind": str(card.get("kind", "unknown")), "card": card})
    return out


def _fit_options(params: dict, progress: Callable[[float], None]) -> dict:
    options = {"progress": progress, "device": _resolve_device(params.get("device", "cpu"))}
    for key in ("lambda_dir", "lambda_reg", "iterations", "remesh"):
        if params.get(key) is not None:
            options[key] = params[key]
    return options


def _require(value, what: str, task: str):
    if value is None:
        raise InputError(f"the {task} job needs {what}")
    return value


def execute(job: Job, progress: ProgressCallback, log: Callable[[str], None], cache: dict) -> Any:
    """Run ``job`` with the library and return its result (see the module docstring).

    ``progress(fraction, message)`` may raise :class:`InterruptedError` to cancel; ``cache``
    keeps loaded models between calls (the worker's whole point).
    """
    task, params = job.task, job.params
    if task == "ping":
        return {"pid": os.getpid()}
    if task == "models":
        return list_models()
    if task == "segment":
        from imagetomesh.inference import Segmenter

        volume = _require(job.volume, "an image", task)
        model = params.get("model")
        if not model:
            raise InputError("no segmentation method chosen; pick one of the bundled models")
        key = ("segmenter", str(model), str(params.get("device", "auto")))
        if key not in cache:
            progress(0.05, f"loading model {model}")
            cache[key] = Segmenter(str(model), str(params.get("device", "auto")))
            log(f"loaded {model} on {cache[key].model.device}")
        progress(0.2, f"segmenting with {model}")
        mesh = cache[key].segment(volume)  # preprocessing resamples into the model's orientation
        progress(1.0, "done")
        return mesh
    if task in ("fit_curves", "fit_points", "refine"):
        import imagetomesh.fitting as fitting

        prior = params.get("prior")
        if not prior:
            raise InputError("no DALS prior chosen; pick one of the bundled priors")
        function_name = {"fit_curves": "fit_curves", "fit_points": "fit_points", "refine": "refine_labelmap"}[task]
        function = getattr(fitting, function_name, None)
        if function is None:
            raise InputError(f"this version of imagetomesh has no DALS fitting ({function_name}); update the library")
        options = _fit_options(params, lambda fraction: progress(float(fraction), "fitting"))
        progress(0.0, f"fitting {prior}")
        if task == "fit_curves":
            curves = [np.asarray(c, dtype=np.float64) for c in _require(job.curves, "curves", task)]
            return function(curves, prior, **options)
        if task == "fit_points":
            return function(np.asarray(_require(job.points, "points", task), dtype=np.float64), prior, **options)
        return function(_require(job.volume, "a labelmap", task), prior, **options)
    if task == "check":
        from imagetomesh.geometry.quality import check_mesh

        check = check_mesh(_require(job.mesh, "a mesh", task))
        return dict(check.as_dict(), summary=check.summary())
    if task == "repair":
        from imagetomesh.geometry.quality import repair_mesh

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            repaired = repair_mesh(_require(job.mesh, "a mesh", task))
        for w in caught:
            log(str(w.message))
        return repaired
    raise ValueError(f"unknown task {task!r}")


def _error_event(err: BaseException) -> Event:
    if isinstance(err, InputError):
        return Event("error", message=str(err), error_type="InputError")
    if isinstance(err, ImportError):
        name = getattr(err, "name", None) or str(err)
        return Event(
            "error",
            message=f"a required Python package is missing ({name}); install the ImageToMesh dependencies and try again",
            error_type="MissingDependency",
        )
    return Event("error", message=f"{type(err).__name__}: {err}", error_type="Error")


def _run_captured(job: Job, progress: ProgressCallback, log: Callable[[str], None], cache: dict) -> Event:
    """Execute ``job`` and turn its outcome into a done / error / cancelled event."""
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


# --- ROI cropping ----------------------------------------------------------------------------
def crop_volume(volume: Volume, corners_lps: np.ndarray, margin: int = 0) -> Volume:
    """The part of ``volume`` inside the box spanned by ``corners_lps`` (any orientation).

    The box's corners are mapped to voxel indices; the voxel-aligned bounding box of those,
    grown by ``margin`` voxels and clipped to the image, is kept (same spacing and direction,
    origin moved to the first kept voxel).

    Raises:
        InputError: the box does not overlap the image.
    """
    corners = np.asarray(corners_lps, dtype=np.float64).reshape(-1, 3)
    ijk = transform_points(volume.lps_to_index, corners)
    lo = np.floor(ijk.min(0) + 1e-6).astype(np.int64) - margin
    hi = np.ceil(ijk.max(0) - 1e-6).astype(np.int64) + margin
    size = volume.size_ijk
    lo_c, hi_c = np.maximum(lo, 0), np.minimum(hi, size - 1)
    if np.any(hi_c < lo_c):
        raise InputError("the ROI lies outside the image; move the ROI over the image or clear it")
    array = volume.array[lo_c[2] : hi_c[2] + 1, lo_c[1] : hi_c[1] + 1, lo_c[0] : hi_c[0] + 1]
    origin = transform_points(volume.index_to_lps, lo_c[None].astype(np.float64))[0]
    return Volume(np.ascontiguousarray(array), volume.spacing, origin, volume.direction)


# --- the common interface --------------------------------------------------------------------
class Backend:
    """Base class: the interface of the module docstring plus the blocking :meth:`run`."""

    @property
    def busy(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self, job: Job) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def poll(self, timeout: float = 0.0) -> list[Event]:  # pragma: no cover - overridden
        raise NotImplementedError

    def cancel(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        pass

    def run(
        self,
        job: Job,
        progress: ProgressCallback | None = None,
        log: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Start ``job`` and wait for it; return its result.

        Raises:
            InputError: the job's input was bad (the library's one-line message).
            JobCancelled: :meth:`cancel` was called (e.g. from ``progress``) or the caller
                pressed Ctrl-C.
            WorkerDied / BackendError: the worker failed.
        """
        return wait_for(self, job, progress, log, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for(
    backend,
    job: Job,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> Any:
    """:meth:`Backend.run` for any object with the backend interface (fakes included)."""
    backend.start(job)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            for event in backend.poll(0.05):
                if event.kind == "progress":
                    if progress is not None:
                        progress(event.fraction, event.message)
                elif event.kind == "log":
                    if log is not None:
                        log(event.message)
                elif event.kind == "done":
                    return event.result
                elif event.kind in ("error", "cancelled"):
                    raise event.exception()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{job.describe()} did not finish within {timeout} s")
    except BaseException as err:  # Ctrl-C, a timeout, or a progress callback that raised
        if backend.busy:
            backend.cancel()
            _drain_until_idle(backend)
        if isinstance(err, JobCancelled):
            raise
        if isinstance(err, (InterruptedError, KeyboardInterrupt)):
            raise JobCancelled(str(err) or "cancelled") from None
        raise


def _drain_until_idle(backend, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while backend.busy and time.monotonic() < end:
        backend.poll(0.05)


# --- in-process ------------------------------------------------------------------------------
class InProcessBackend(Backend):
    """Runs jobs in a thread of this process; models stay cached in :attr:`cache`.

    Cancel is cooperative: it takes effect at the job's next progress report.
    """

    def __init__(self) -> None:
        self.cache: dict = {}
        self._events: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy

    def start(self, job: Job) -> None:
        if self._busy:
            raise BackendError("a job is already running; wait for it or cancel it first")
        _preload(job.task)
        self._cancel.clear()
        self._busy = True

        def progress(fraction: float, message: str = "") -> None:
            if self._cancel.is_set():
                raise InterruptedError("cancelled")
            self._events.put(Event("progress", fraction=float(fraction), message=message))

        def log(message: str) -> None:
            self._events.put(Event("log", message=message))

        def work() -> None:
            event = _run_captured(job, progress, log, self.cache)
            if self._cancel.is_set() and event.kind == "done":
                event = Event("cancelled", message="cancelled")
            self._events.put(event)

        self._thread = threading.Thread(target=work, name=f"imagetomesh-{job.task}", daemon=True)
        self._thread.start()

    def poll(self, timeout: float = 0.0) -> list[Event]:
        events = _drain(self._events, timeout)
        if any(e.kind in ("done", "error", "cancelled") for e in events):
            self._busy = False
        return events

    def cancel(self) -> None:
        if self._busy:
            self._cancel.set()

    def close(self) -> None:
        self.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.cache.clear()


#: Heavy modules each task imports. :class:`InProcessBackend` imports them in the caller's
#: thread before starting the job's thread: torch and pymeshlab both first imported in
#: secondary threads abort the interpreter at exit (glibc "malloc_consolidate").
_TASK_MODULES = {
    "segment": ("torch", "pymeshlab", "imagetomesh.inference"),
    "fit_curves": ("torch", "pymeshlab", "imagetomesh.fitting"),
    "fit_points": ("torch", "pymeshlab", "imagetomesh.fitting"),
    "refine": ("torch", "pymeshlab", "imagetomesh.fitting"),
    "check": ("pymeshlab", "imagetomesh.geometry.quality"),
    "repair": ("pymeshlab", "imagetomesh.geometry.quality"),
    "models": ("imagetomesh.zoo",),
}


def _preload(task: str) -> None:
    import importlib

    for name in _TASK_MODULES.get(task, ()):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the job itself reports the missing package


def _drain(q: queue.Queue, timeout: float) -> list:
    items = []
    try:
        items.append(q.get(timeout=timeout) if timeout > 0 else q.get_nowait())
    except queue.Empty:
        return items
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


# --- the worker process: wire format -------------------------------------------------------------
def _save_array(folder: Path, stem: str, array: np.ndarray) -> str:
    path = folder / f"{stem}.npy"
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return str(path)


def _load_array(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _volume_to_wire(volume: Volume, folder: Path, stem: str) -> dict:
    return {
        "array": _save_array(folder, stem, volume.array),
        "spacing": volume.spacing.tolist(),
        "origin": volume.origin.tolist(),
        "direction": volume.direction.tolist(),
    }


def _volume_from_wire(data: dict) -> Volume:
    return Volume(_load_array(data["array"]), np.array(data["spacing"]), np.array(data["origin"]), np.array(data["direction"]))


def _mesh_to_wire(mesh: Mesh, folder: Path, stem: str) -> dict:
    return {"vertices": _save_array(folder, stem + "-vertices", mesh.vertices), "faces": _save_array(folder, stem + "-faces", mesh.faces)}


def _mesh_from_wire(data: dict) -> Mesh:
    return Mesh(_load_array(data["vertices"]), _load_array(data["faces"]))


def _job_to_wire(job: Job, job_id: str, folder: Path) -> dict:
    message: dict = {"cmd": "run", "id": job_id, "task": job.task, "params": job.params, "folder": str(folder)}
    if job.volume is not None:
        message["volume"] = _volume_to_wire(job.volume, folder, f"{job_id}-volume")
    if job.curves is not None:
        message["curves"] = [_save_array(folder, f"{job_id}-curve{i}", np.asarray(c, np.float64)) for i, c in enumerate(job.curves)]
    if job.points is not None:
        message["points"] = _save_array(folder, f"{job_id}-points", np.asarray(job.points, np.float64))
    if job.mesh is not None:
        message["mesh"] = _mesh_to_wire(job.mesh, folder, f"{job_id}-mesh")
    return message


def _job_from_wire(message: dict) -> Job:
    return Job(
        task=message["task"],
        params=message.get("params") or {},
        volume=_volume_from_wire(message["volume"]) if "volume" in message else None,
        curves=[_load_array(p) for p in message["curves"]] if "curves" in message else None,
        points=_load_array(message["points"]) if "points" in message else None,
        mesh=_mesh_from_wire(message["mesh"]) if "mesh" in message else None,
    )


def _result_to_wire(result: Any, folder: Path, stem: str) -> dict:
    if isinstance(result, Mesh):
        return {"type": "mesh", **_mesh_to_wire(result, folder, stem)}
    return {"type": "json", "value": result}


def _result_from_wire(data: dict) -> Any:
    if data.get("type") == "mesh":
        return _mesh_from_wire(data)
    return data.get("value")


# --- the worker process: ending a process tree ---------------------------------------------------
def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a running member (POSIX).

    Zombies do not count: a killed grandchild stays a zombie until its new parent reaps it,
    and a container's PID 1 may never do that. Where ``/proc`` lists processes (Linux) the
    group's members are looked up there; elsewhere any member counts.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # not ours (the id was reused): nothing we could end anyway
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    if "self" not in entries:
        return True
    members = 0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        # after the command's closing parenthesis: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid).encode():
            if fields[0] not in (b"Z", b"X"):
                return True
            members += 1
    # only zombies: gone; no member listed at all (another pid namespace's /proc, or the
    # last one exited meanwhile): trust the signal check, which the next call repeats
    return members == 0


def _wait_for_group(process: subprocess.Popen, pgid: int, limit: float) -> bool:
    """Reap ``process`` and wait up to ``limit`` seconds for group ``pgid`` to empty; True if it did."""
    end = time.monotonic() + max(0.0, limit)
    while True:
        process.poll()  # reaps the leader, whose zombie would otherwise keep the group alive
        if not _group_alive(pgid):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except Exception:
        pass


def terminate_process_tree(process: subprocess.Popen, grace: float = 2.0) -> None:
    """End ``process`` and everything it started; return once they are gone (or after ~``grace`` s more).

    ``process`` must have been started as the leader of its own process group: on POSIX with
    ``start_new_session=True`` (its group id is its pid), on Windows with
    ``CREATE_NEW_PROCESS_GROUP``. This matters for launchers such as Slicer's ``PythonSlicer``,
    which start the real interpreter as a child: killing the launcher alone leaves that child
    running.

    - POSIX: SIGTERM to the whole group, up to ``grace`` seconds for every member to exit,
      then SIGKILL to whatever is left (and up to one more second for it to go). The group
      is addressed by its id, so children are ended even when the leader (the launcher) has
      already exited; a group that no longer exists is not an error.
    - Windows: ``taskkill /F /T /PID`` on the leader (the tree is found through parent ids, so
      this needs the leader still running), then ``process.kill()`` as a fallback.

    The leader is always waited for (reaped). Never raises for processes that are already gone.
    """
    if os.name == "nt":
        if process.poll() is None:
            try:
                subprocess.run(
                    ["taskkill", "/F", "/T", "/PID", str(process.pid)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=max(grace, 0.0) + 10.0,
                    creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
                )
            except (OSError, subprocess.SubprocessError):
                pass
        try:
            process.kill()
        except OSError:
            pass
        try:
            process.wait(timeout=max(grace, 0.0) + 5.0)
        except subprocess.TimeoutExpired:
            pass
        return
    pgid = process.pid
    if pgid == os.getpgrp():  # not started in its own group: never signal our own
        try:
            process.kill()
            process.wait(timeout=max(grace, 0.0) + 5.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        return
    for sig, limit in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break  # the group is gone (or is no longer ours)
        if _wait_for_group(process, pgid, limit):
            break
    if process.poll() is None:  # the leader alone, if it was somehow not in its group
        try:
            process.kill()
        except OSError:
            pass
    try:
        process.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass


# --- the worker process: parent side -----------------------------------------------------------
def library_root() -> Path:
    """The folder holding the ``imagetomesh`` package (put on the worker's ``PYTHONPATH``)."""
    return Path(__file__).resolve().parents[1]


class WorkerBackend(Backend):
    """Jobs in a long-running worker process that keeps models loaded between jobs.

    Args:
        python: interpreter for the worker (default ``sys.executable``; in 3D Slicer pass
            ``PythonSlicer``).
        env: extra environment variables for the worker (``IMAGETOMESH_MODEL_PATH``, ...).
        cancel_grace: seconds a cancelled job may take to stop by itself before the worker is
            terminated (it restarts, without its loaded models, on the next job).
        command: the whole worker command line instead of the default, which runs
            :func:`worker_main` (``python -m imagetomesh.backend --worker`` does the same);
            tests start a stand-in worker this way.
        temp_root: the folder under which the backend's private ``imagetomesh-worker-*``
            folder (arrays going to and coming from the worker) is created; it is made if
            missing. ``None``: the system's temporary folder. In 3D Slicer pass
            ``slicer.app.temporaryPath``.

    The worker (with any children, e.g. the real interpreter behind ``PythonSlicer``) runs in
    its own process group; a forced cancel, a restart, :meth:`close` and garbage collection
    end that whole tree (:func:`terminate_process_tree`). Each job's files are deleted when
    the job ends, however it ends; the private folder is deleted by :meth:`close` and on
    garbage collection.
    """

    def __init__(
        self,
        python: str | None = None,
        env: dict | None = None,
        cancel_grace: float = 2.0,
        command: list[str] | None = None,
        temp_root: str | os.PathLike | None = None,
    ) -> None:
        self.python = python or sys.executable
        self.extra_env = dict(env or {})
        self.cancel_grace = float(cancel_grace)
        # the library's folder goes on sys.path explicitly as well as on PYTHONPATH: launchers
        # such as Slicer's PythonSlicer set up their own environment
        bootstrap = (f"import sys; sys.path.insert(0, {str(library_root())!r}); "
                     "from imagetomesh.backend import worker_main; sys.exit(worker_main())")
        self.command = command or [self.python, "-u", "-c", bootstrap]
        self._process: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._stderr_tail: collections.deque = collections.deque(maxlen=20)
        if temp_root is not None:
            Path(temp_root).mkdir(parents=True, exist_ok=True)
        self._folder = Path(tempfile.mkdtemp(prefix="imagetomesh-worker-", dir=temp_root))
        self._job_id: str | None = None
        self._job_task = ""
        self._cancel_deadline: float | None = None
        self._write_lock = threading.Lock()

    # process management
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.update(self.extra_env)
        root = str(library_root())
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONIOENCODING", "utf-8")
        # its own process group, so that terminate_process_tree reaches the launcher's children
        kwargs: dict = {}
        if os.name == "nt":  # and no console window for the worker
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        else:
            kwargs["start_new_session"] = True
        try:
            process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                **kwargs,
            )
        except OSError as err:
            raise BackendError(f"could not start the ImageToMesh worker ({self.command[0]}): {err}") from None
        self._process = process
        self._stderr_tail.clear()
        # the reader threads get the queue and the deque, not self: a backend nobody holds any
        # more is garbage collected (and its worker ended by __del__) while they still run
        threading.Thread(
            target=self._read_stdout, args=(process, self._events, self._stderr_tail), daemon=True, name="imagetomesh-stdout"
        ).start()
        threading.Thread(target=self._read_stderr, args=(process, self._stderr_tail), daemon=True, name="imagetomesh-stderr").start()

    @staticmethod
    def _read_stdout(process: subprocess.Popen, events: queue.Queue, stderr_tail: collections.deque) -> None:
        try:
            for line in process.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    stderr_tail.append(line)
                    continue
                events.put(("message", process, message))
        except (OSError, ValueError):  # the stream was closed under us
            pass
        finally:
            _close_quietly(process.stdout)
        events.put(("exit", process, None))

    @staticmethod
    def _read_stderr(process: subprocess.Popen, stderr_tail: collections.deque) -> None:
        try:
            for line in process.stderr:
                line = line.rstrip()
                if line:
                    stderr_tail.append(line)
                    _log.debug("worker: %s", line)
        except (OSError, ValueError):
            pass
        finally:
            _close_quietly(process.stderr)

    def _send(self, message: dict) -> None:
        with self._write_lock:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()

    def _kill(self) -> None:
        """End the worker's whole process tree (even if the launcher itself already exited)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            terminate_process_tree(process)
        except Exception:  # already gone
            pass
        # only stdin: closing stdout/stderr while a reader thread blocks on them deadlocks
        # (if anything still holds the pipe open); the reader threads close them at their end
        try:
            process.stdin.close()
        except Exception:
            pass

    def _cleanup_job_files(self, job_id: str | None) -> None:
        if not job_id:
            return
        for path in self._folder.glob(f"{job_id}-*"):
            try:
                path.unlink()
            except OSError:
                pass

    # the interface
    @property
    def busy(self) -> bool:
        return self._job_id is not None

    def start(self, job: Job) -> None:
        if self.busy:
            raise BackendError("a job is already running; wait for it or cancel it first")
        if not self.alive:
            self._kill()
            self._spawn()
        job_id = uuid.uuid4().hex[:12]
        self._folder.mkdir(parents=True, exist_ok=True)
        message = _job_to_wire(job, job_id, self._folder)
        self._job_id, self._job_task, self._cancel_deadline = job_id, job.task, None
        try:
            self._send(message)
        except (OSError, ValueError):
            pass  # the worker is gone: poll() reports it with its exit code

    def cancel(self) -> None:
        if not self.busy or self._cancel_deadline is not None:
            return
        self._cancel_deadline = time.monotonic() + self.cancel_grace
        try:
            self._send({"cmd": "cancel", "id": self._job_id})
        except (OSError, ValueError, AttributeError):
            pass

    def _finish(self) -> None:
        self._cleanup_job_files(self._job_id)
        self._job_id, self._cancel_deadline = None, None

    def _died_message(self, process: subprocess.Popen) -> str:
        try:
            code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        time.sleep(0.05)  # let the stderr reader catch the last lines
        last = [line for line in self._stderr_tail if line.strip()]
        detail = f"; last message: {last[-1][:300]}" if last else ""
        return f"the ImageToMesh worker process stopped unexpectedly (exit code {code}) while running {self._job_task}{detail}"

    def poll(self, timeout: float = 0.0) -> list[Event]:
        out: list[Event] = []
        for kind, process, message in _drain(self._events, timeout):
            if kind == "exit":
                if process is self._process:
                    if self.busy:
                        if self._cancel_deadline is not None:
                            out.append(Event("cancelled", message="cancelled"))
                        else:
                            out.append(Event("error", message=self._died_message(process), error_type="WorkerDied"))
                        self._finish()
                    self._kill()
                continue
            if process is not self._process or message.get("id") != self._job_id or not self.busy:
                continue  # from a killed worker or a finished job
            event = message.get("event")
            if event == "progress":
                out.append(Event("progress", fraction=float(message.get("fraction", 0.0)), message=message.get("message", "")))
            elif event == "log":
                out.append(Event("log", message=message.get("message", "")))
            elif event == "done":
                try:
                    result = _result_from_wire(message.get("result") or {})
                    out.append(Event("done", fraction=1.0, result=result))
                except Exception as err:
                    out.append(Event("error", message=f"could not read the worker's result: {err}", error_type="Error"))
                self._finish()
            elif event == "error":
                out.append(Event("error", message=message.get("message", ""), error_type=message.get("type", "Error")))
                self._finish()
            elif event == "cancelled":
                out.append(Event("cancelled", message="cancelled"))
                self._finish()
        if self.busy and self._cancel_deadline is not None and time.monotonic() > self._cancel_deadline:
            self._kill()  # the job ignores the request (a forward pass): stop the worker
            out.append(Event("cancelled", message="cancelled (the worker was stopped; it restarts on the next run)"))
            self._finish()
        return out

    def close(self) -> None:
        """Stop the worker and delete the private folder.

        An idle worker is asked to quit (up to 2 s); then the whole process tree is ended
        whatever it is doing (a running job is abandoned without an event).
        """
        if self.alive and not self.busy:
            try:
                self._send({"cmd": "quit"})
                self._process.wait(timeout=2)
            except Exception:
                pass
        self._kill()
        self._job_id, self._cancel_deadline = None, None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __del__(self) -> None:
        try:
            self._kill()
        except Exception:
            pass
        try:
            shutil.rmtree(self._folder, ignore_errors=True)
        except Exception:
            pass


# --- the worker process: child side -------------------------------------------------------------
def worker_main(stdin=None, stdout=None) -> int:
    """Serve jobs on stdin/stdout (JSON lines) until ``quit`` or end of input."""
    if stdout is None:
        # The protocol owns the real stdout; anything else printed goes to stderr.
        protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout = sys.stderr
    else:
        protocol = stdout
    stdin = stdin or sys.stdin
    lock = threading.Lock()
    commands: queue.Queue = queue.Queue()
    cancelled: set = set()
    cache: dict = {}

    def send(message: dict) -> None:
        with lock:
            protocol.write(json.dumps(message, default=_json_default) + "\n")
            protocol.flush()

    def read_commands() -> None:
        for line in stdin:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if message.get("cmd") == "cancel":
                cancelled.add(message.get("id"))
            else:
                commands.put(message)
        cancelled.add("*")
        commands.put({"cmd": "quit"})

    threading.Thread(target=read_commands, daemon=True, name="imagetomesh-commands").start()
    while True:
        message = commands.get()
        if message.get("cmd") == "quit":
            return 0
        if message.get("cmd") != "run":
            continue
        job_id = message.get("id")
        try:
            job = _job_from_wire(message)
        except Exception as err:
            send({"event": "error", "id": job_id, "type": "Error", "message": f"bad job message: {err}"})
            continue

        def progress(fraction: float, text: str = "", job_id=job_id) -> None:
            if job_id in cancelled or "*" in cancelled:
                raise InterruptedError("cancelled")
            send({"event": "progress", "id": job_id, "fraction": float(fraction), "message": text})

        def log(text: str, job_id=job_id) -> None:
            send({"event": "log", "id": job_id, "message": text})

        event = _run_captured(job, progress, log, cache)
        if event.kind == "done" and (job_id in cancelled or "*" in cancelled):
            event = Event("cancelled")
        if event.kind == "done":
            out_folder = _wire_folder(message)
            try:
                send({"event": "done", "id": job_id, "result": _result_to_wire(event.result, out_folder, f"{job_id}-result")})
            except Exception as err:
                send({"event": "error", "id": job_id, "type": "Error", "message": f"could not send the result: {err}"})
        elif event.kind == "cancelled":
            send({"event": "cancelled", "id": job_id})
        else:
            send({"event": "error", "id": job_id, "type": event.error_type, "message": event.message})


def _wire_folder(message: dict) -> Path:
    """Where the parent wants the result files (its private temporary folder)."""
    return Path(message.get("folder") or tempfile.gettempdir())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        sys.exit(worker_main())
    print("usage: python -m imagetomesh.backend --worker   (serves ImageToMesh jobs on stdin/stdout)", file=sys.stderr)
    sys.exit(2)
