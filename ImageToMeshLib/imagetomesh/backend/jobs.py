"""What a backend is given and what it reports: :class:`Job`, :class:`Event` and the backend's errors.

An ``error`` event carries the error's type by name (``error_type``) so that it survives the
worker's JSON wire; :meth:`Event.exception` and :func:`_error_event` map between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError

#: Job names (what each needs and returns: the table in :mod:`imagetomesh.backend`).
TASKS = ("segment", "fit_curves", "fit_points", "refine", "check", "repair", "models", "ping")

#: ``progress(fraction in 0..1, message)``; a job's progress callback may raise :class:`InterruptedError` to cancel it.
ProgressCallback = Callable[[float, str], None]

#: ``log(message)``.
LogCallback = Callable[[str], None]


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
        """``"<task> <model or prior>"``, for messages."""
        what = self.params.get("model") or self.params.get("prior") or ""
        return f"{self.task} {what}".strip()


@dataclass
class Event:
    """Something a backend reports from :meth:`~imagetomesh.backend.protocol.Backend.poll`.

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
        """The exception :meth:`~imagetomesh.backend.protocol.Backend.run` raises for an ``error`` or ``cancelled`` event."""
        if self.kind == "cancelled":
            return JobCancelled(self.message or "cancelled")
        if self.error_type == "InputError":
            return InputError(self.message)
        if self.error_type == "WorkerDied":
            return WorkerDied(self.message)
        return BackendError(self.message)


def _error_event(err: BaseException) -> Event:
    """The ``error`` event that reports ``err`` (the inverse of :meth:`Event.exception`)."""
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
