"""The interface every backend has (:class:`Backend`), and :func:`wait_for`, the blocking run built on it.

Tests substitute any object with ``start/poll/cancel/busy/close``; :func:`wait_for` runs a job
on such an object as :meth:`Backend.run` does on a real backend.
"""

from __future__ import annotations

import queue
import time
from typing import Any

from imagetomesh.backend.jobs import Event, Job, JobCancelled, LogCallback, ProgressCallback

__all__ = ["Backend", "wait_for", "drain_queue"]


class Backend:
    """Base class: the interface of :mod:`imagetomesh.backend` plus the blocking :meth:`run`."""

    @property
    def busy(self) -> bool:  # pragma: no cover - overridden
        """True between :meth:`start` and the job's done / error / cancelled event."""
        raise NotImplementedError

    def start(self, job: Job) -> None:  # pragma: no cover - overridden
        """Start ``job`` without waiting; :class:`~imagetomesh.backend.jobs.BackendError` if one is already running."""
        raise NotImplementedError

    def poll(self, timeout: float = 0.0) -> list[Event]:  # pragma: no cover - overridden
        """The events since the last poll, waiting up to ``timeout`` seconds for the first one."""
        raise NotImplementedError

    def cancel(self) -> None:  # pragma: no cover - overridden
        """Ask the running job to stop (it ends with a ``cancelled`` event)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds (threads, processes, files)."""

    def run(
        self,
        job: Job,
        progress: ProgressCallback | None = None,
        log: LogCallback | None = None,
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
    log: LogCallback | None = None,
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


def drain_queue(q: queue.Queue, timeout: float) -> list:
    """Everything in ``q``, waiting up to ``timeout`` seconds for the first item (none: ``[]``)."""
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
