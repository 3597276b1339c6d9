"""The parent side of the worker process: :class:`WorkerBackend`.

A long-running worker *process* (:func:`~imagetomesh.backend.serve.worker_main`) keeps models
loaded between jobs. Messages are JSON lines over the worker's stdin and stdout
(:mod:`~imagetomesh.backend.wire`); arrays travel as ``.npy`` files in a private temporary
folder. Cancel is cooperative (the job's progress callback raises :class:`InterruptedError`)
and, when the job does not stop within ``cancel_grace`` seconds (a model's forward pass has no
progress hooks), the worker is terminated and restarted on the next job. The worker runs in
its own process group, and every way the backend ends it ends the whole process tree
(:func:`~imagetomesh.backend.process_tree.terminate_process_tree`). A worker that dies is
reported as an ``error`` event of type ``WorkerDied`` with its exit code and last words.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from imagetomesh.backend.jobs import BackendError, Event, Job
from imagetomesh.backend.process_tree import terminate_process_tree
from imagetomesh.backend.protocol import Backend, drain_queue
from imagetomesh.backend.wire import dumps, job_to_wire, result_from_wire

__all__ = ["WorkerBackend", "library_root"]

_log = logging.getLogger(__name__)


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except Exception:
        pass


def library_root() -> Path:
    """The folder holding the ``imagetomesh`` package (put on the worker's ``PYTHONPATH``)."""
    return Path(__file__).resolve().parents[2]


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
        bootstrap = (
            f"import sys; sys.path.insert(0, {str(library_root())!r}); "
            "from imagetomesh.backend import worker_main; sys.exit(worker_main())"
        )
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
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0) | getattr(
                subprocess, "CREATE_NEW_PROCESS_GROUP", 0
            )
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
            target=self._read_stdout,
            args=(process, self._events, self._stderr_tail),
            daemon=True,
            name="imagetomesh-stdout",
        ).start()
        threading.Thread(
            target=self._read_stderr, args=(process, self._stderr_tail), daemon=True, name="imagetomesh-stderr"
        ).start()

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
            self._process.stdin.write(dumps(message) + "\n")
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
        message = job_to_wire(job, job_id, self._folder)
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
        for kind, process, message in drain_queue(self._events, timeout):
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
                out.append(
                    Event("progress", fraction=float(message.get("fraction", 0.0)), message=message.get("message", ""))
                )
            elif event == "log":
                out.append(Event("log", message=message.get("message", "")))
            elif event == "done":
                try:
                    result = result_from_wire(message.get("result") or {})
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
