""":class:`InProcessBackend`: the jobs in a thread of the calling process, for scripts and tests."""

from __future__ import annotations

import queue
import threading

from imagetomesh.backend.jobs import BackendError, Event, Job
from imagetomesh.backend.protocol import Backend, drain_queue
from imagetomesh.backend.tasks import preload, run_captured

__all__ = ["InProcessBackend"]


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
        preload(job.task)
        self._cancel.clear()
        self._busy = True

        def progress(fraction: float, message: str = "") -> None:
            if self._cancel.is_set():
                raise InterruptedError("cancelled")
            self._events.put(Event("progress", fraction=float(fraction), message=message))

        def log(message: str) -> None:
            self._events.put(Event("log", message=message))

        def work() -> None:
            event = run_captured(job, progress, log, self.cache)
            if self._cancel.is_set() and event.kind == "done":
                event = Event("cancelled", message="cancelled")
            self._events.put(event)

        self._thread = threading.Thread(target=work, name=f"imagetomesh-{job.task}", daemon=True)
        self._thread.start()

    def poll(self, timeout: float = 0.0) -> list[Event]:
        events = drain_queue(self._events, timeout)
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
