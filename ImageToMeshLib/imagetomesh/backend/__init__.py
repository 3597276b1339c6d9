"""The worker the Slicer module talks to: jobs run away from the user interface.

A *job* (:class:`Job`) is one of the library's long operations on in-memory data (LPS millimetres):

========== ================================================ ==================
task       inputs                                            result
========== ================================================ ==================
segment    ``volume``; params ``model``, ``device``           :class:`Mesh`
fit_curves ``curves``; params ``prior``, ``lambda_dir``, ...  :class:`Mesh`
fit_points ``points``; params as fit_curves                   :class:`Mesh`
refine     ``volume`` (a mask); params as fit_curves          :class:`Mesh`
check      ``mesh``                                           ``dict`` (MeshCheck + summary)
repair     ``mesh``                                           :class:`Mesh`
models     (none)                                             ``list`` of ``{name, folder, kind, card}``
ping       (none)                                             ``{"pid": ...}``
========== ================================================ ==================

Every backend has the same small interface (:class:`Backend`)::

    backend.start(job)          # non-blocking; BackendError if a job is already running
    backend.poll(timeout)       # -> list[Event]: progress / log / done / error / cancelled
    backend.cancel()            # ask the running job to stop
    backend.busy                # True between start() and its done/error/cancelled event
    backend.close()
    backend.run(job, progress=None, log=None)   # blocking helper built on the four above

Implementations: :class:`WorkerBackend` (a long-running worker process that keeps models
loaded; the Slicer module's) and :class:`InProcessBackend` (a thread of the calling process,
for scripts and tests; cooperative cancel only). Tests substitute any object with
``start/poll/cancel/busy/close`` and run jobs on it with :func:`wait_for`.

The package, a module per part:

- :mod:`~imagetomesh.backend.jobs`: :class:`Job`, :class:`Event` and the errors;
- :mod:`~imagetomesh.backend.tasks`: what each task does (a table);
- :mod:`~imagetomesh.backend.protocol`: :class:`Backend` and :func:`wait_for`;
- :mod:`~imagetomesh.backend.inprocess`: :class:`InProcessBackend`;
- :mod:`~imagetomesh.backend.wire`: the worker's message format;
- :mod:`~imagetomesh.backend.worker` and :mod:`~imagetomesh.backend.process_tree`: the worker,
  parent side (:class:`WorkerBackend`, :func:`terminate_process_tree`);
- :mod:`~imagetomesh.backend.serve`: the worker, child side (:func:`worker_main`).

Importing it needs neither torch nor pymeshlab (the Slicer module imports it in Slicer's process).
"""

from imagetomesh.backend.inprocess import InProcessBackend
from imagetomesh.backend.jobs import TASKS, BackendError, Event, Job, JobCancelled, WorkerDied
from imagetomesh.backend.jobs import _error_event as _error_event  # used by tests' fake backends
from imagetomesh.backend.process_tree import terminate_process_tree
from imagetomesh.backend.protocol import Backend, wait_for
from imagetomesh.backend.serve import worker_main
from imagetomesh.backend.tasks import execute
from imagetomesh.backend.worker import WorkerBackend
from imagetomesh.core.cropping import crop_volume
from imagetomesh.zoo import list_models

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
    "wait_for",
    "worker_main",
]
