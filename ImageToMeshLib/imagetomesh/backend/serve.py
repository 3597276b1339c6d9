"""The child side of the worker process: :func:`worker_main` serves jobs on stdin/stdout.

Started by :class:`~imagetomesh.backend.worker.WorkerBackend` with
``from imagetomesh.backend import worker_main`` (or ``python -m imagetomesh.backend --worker``).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading

from imagetomesh.backend.jobs import Event
from imagetomesh.backend.tasks import run_captured
from imagetomesh.backend.wire import dumps, job_from_wire, result_to_wire, wire_folder

__all__ = ["worker_main"]


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
            protocol.write(dumps(message) + "\n")
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
            job = job_from_wire(message)
        except Exception as err:
            send({"event": "error", "id": job_id, "type": "Error", "message": f"bad job message: {err}"})
            continue

        def progress(fraction: float, text: str = "", job_id=job_id) -> None:
            if job_id in cancelled or "*" in cancelled:
                raise InterruptedError("cancelled")
            send({"event": "progress", "id": job_id, "fraction": float(fraction), "message": text})

        def log(text: str, job_id=job_id) -> None:
            send({"event": "log", "id": job_id, "message": text})

        event = run_captured(job, progress, log, cache)
        if event.kind == "done" and (job_id in cancelled or "*" in cancelled):
            event = Event("cancelled")
        if event.kind == "done":
            out_folder = wire_folder(message)
            try:
                send(
                    {
                        "event": "done",
                        "id": job_id,
                        "result": result_to_wire(event.result, out_folder, f"{job_id}-result"),
                    }
                )
            except Exception as err:
                send({"event": "error", "id": job_id, "type": "Error", "message": f"could not send the result: {err}"})
        elif event.kind == "cancelled":
            send({"event": "cancelled", "id": job_id})
        else:
            send({"event": "error", "id": job_id, "type": event.error_type, "message": event.message})
