"""The worker process really stops: the whole process tree behind a launcher, and its files.

In 3D Slicer the worker's interpreter is ``PythonSlicer``, a *launcher* that starts the real
Python as its child. These tests put a stand-in launcher in front of the worker (a script that
starts ``sys.executable`` with its own arguments as a child, records the child's pid and waits
for it) and check that a forced cancel, ``close()``, garbage collection and a launcher that
exits early all leave no process behind, and that the backend's temporary folder goes too.
"""

import gc
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from imagetomesh.backend import Job, JobCancelled, WorkerBackend, terminate_process_tree
from imagetomesh.core.mesh import Mesh

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")

PID_FILE_ENV = "IMAGETOMESH_TEST_CHILD_PID_FILE"
EXIT_EARLY_ENV = "IMAGETOMESH_TEST_LAUNCHER_EXITS"

# Behaves like PythonSlicer: the real interpreter runs as a child with the same arguments and
# the same stdin/stdout/stderr. With EXIT_EARLY_ENV set it exits without waiting (an orphan).
LAUNCHER = textwrap.dedent("""
    import os, subprocess, sys
    child = subprocess.Popen([sys.executable] + sys.argv[1:])
    path = os.environ.get("{pid_env}")
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(str(child.pid))
        os.replace(path + ".tmp", path)
    if os.environ.get("{exit_env}"):
        os._exit(0)
    sys.exit(child.wait())
""").format(pid_env=PID_FILE_ENV, exit_env=EXIT_EARLY_ENV)

# A worker that starts the job (one progress event, so the test knows it runs) and then never
# answers again: it ignores cancel, quit and the end of its input.
HANGING_WORKER = textwrap.dedent("""
    import json, signal, sys, time
    if "--ignore-sigterm" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("cmd") == "run":
            sys.stdout.write(json.dumps({"event": "progress", "id": message["id"], "fraction": 0.1, "message": "working"}) + "\\n")
            sys.stdout.flush()
            while True:
                time.sleep(0.05)
""")


# --- helpers -------------------------------------------------------------------------------------
def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs: no such process, or only its zombie is left."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # the pid now belongs to someone else's process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return state in (b"Z", b"X")


def _wait_gone(pids, limit: float = 5.0) -> list[int]:
    """Wait up to ``limit`` s for every pid to go; return those still running."""
    end = time.monotonic() + limit
    while True:
        left = [pid for pid in pids if pid is not None and not _gone(pid)]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


def _read_pid(path: Path, limit: float = 20.0) -> int:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if path.exists():
            return int(path.read_text())
        time.sleep(0.02)
    raise AssertionError(f"the launcher wrote no child pid to {path}")


def _kill_leftovers(pids) -> None:
    for pid in pids:
        if pid is not None and not _gone(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _wait_for_event(backend, kinds, limit: float = 30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        for event in backend.poll(0.05):
            if event.kind in kinds:
                return event
    raise AssertionError(f"no {'/'.join(kinds)} event within {limit} s")


@pytest.fixture
def launcher(tmp_path) -> Path:
    path = tmp_path / "PythonSlicer"
    path.write_text(f"#!{sys.executable}\n" + LAUNCHER)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IRUSR)
    return path


@pytest.fixture
def pid_file(tmp_path) -> Path:
    return tmp_path / "child.pid"


def _hanging_backend(launcher: Path, pid_file: Path, *extra, grace: float = 0.5, env=None, **kwargs) -> WorkerBackend:
    return WorkerBackend(
        python=str(launcher),
        env={PID_FILE_ENV: str(pid_file), **(env or {})},
        cancel_grace=grace,
        command=[str(launcher), "-u", "-c", HANGING_WORKER, *extra],
        **kwargs,
    )


def _start_hanging_job(backend: WorkerBackend, pid_file: Path) -> tuple[int, int]:
    """Start a job on the hanging worker; return (launcher pid, real worker pid) once it runs."""
    backend.start(Job("ping"))
    launcher_pid = backend.pid
    assert launcher_pid is not None
    child_pid = _read_pid(pid_file)
    assert child_pid != launcher_pid  # a two-level tree
    assert _wait_for_event(backend, ("progress",)).message == "working"
    assert not _gone(launcher_pid) and not _gone(child_pid)
    return launcher_pid, child_pid


def _tetrahedron() -> Mesh:
    vertices = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
    return Mesh(vertices, faces)


# --- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("worker_args", [(), ("--ignore-sigterm",)], ids=["sigterm", "needs-sigkill"])
def test_forced_cancel_ends_launcher_and_worker(launcher, pid_file, worker_args):
    backend = _hanging_backend(launcher, pid_file, *worker_args, grace=0.5)
    pids = [None, None]
    try:
        pids[:] = _start_hanging_job(backend, pid_file)
        folder = backend._folder
        backend.cancel()
        event = _wait_for_event(backend, ("done", "error", "cancelled"))
        assert event.kind == "cancelled" and "stopped" in event.message
        with pytest.raises(JobCancelled):
            raise event.exception()
        assert not backend.busy and backend.pid is None
        assert _wait_gone(pids) == []
        assert folder.is_dir() and list(folder.iterdir()) == []  # the job's files went with it
    finally:
        backend.close()
        _kill_leftovers(pids)


def test_close_while_a_job_runs_leaves_no_process_and_no_folder(launcher, pid_file):
    backend = _hanging_backend(launcher, pid_file)
    pids = [None, None]
    try:
        pids[:] = _start_hanging_job(backend, pid_file)
        folder = backend._folder
        assert folder.is_dir()
        backend.close()
        assert _wait_gone(pids) == []
        assert not folder.exists()
        assert not backend.busy and backend.pid is None
    finally:
        backend.close()
        _kill_leftovers(pids)


def test_garbage_collection_ends_the_tree(launcher, pid_file):
    backend = _hanging_backend(launcher, pid_file)
    pids = [None, None]
    try:
        pids[:] = _start_hanging_job(backend, pid_file)
        folder = backend._folder
        del backend
        gc.collect()
        assert _wait_gone(pids) == []
        assert not folder.exists()
    finally:
        _kill_leftovers(pids)


def test_a_launcher_that_exited_early_still_has_its_child_ended(launcher, pid_file):
    """The launcher exits at once, leaving the real worker running: close() still ends it."""
    backend = _hanging_backend(launcher, pid_file, env={EXIT_EARLY_ENV: "1"})
    pids = [None, None]
    try:
        backend.start(Job("ping"))
        process = backend._process
        pids[:] = [process.pid, _read_pid(pid_file)]
        assert _wait_for_event(backend, ("progress",)).message == "working"  # the orphan works
        process.wait(timeout=10)  # the launcher is gone, reaped
        assert not backend.alive and not _gone(pids[1])
        backend.close()
        assert _wait_gone(pids) == []
    finally:
        backend.close()
        _kill_leftovers(pids)


def test_terminate_process_tree_after_the_leader_exited(launcher, pid_file):
    process = subprocess.Popen(
        [str(launcher), "-c", "import time; time.sleep(60)"],
        env={**os.environ, PID_FILE_ENV: str(pid_file), EXIT_EARLY_ENV: "1"},
        start_new_session=True,
    )
    child = None
    try:
        child = _read_pid(pid_file)
        assert process.wait(timeout=10) == 0
        assert not _gone(child)
        start = time.monotonic()
        terminate_process_tree(process, grace=2.0)
        assert time.monotonic() - start < 3.5
        assert _wait_gone([child]) == []
        terminate_process_tree(process)  # again: nothing left, no error
    finally:
        _kill_leftovers([process.pid, child])


def test_temp_root_holds_the_worker_folder_and_it_is_removed(launcher, pid_file, tmp_path):
    root = tmp_path / "slicer-temp"  # made by the backend if missing
    backend = _hanging_backend(launcher, pid_file, temp_root=root)
    pids = [None, None]
    try:
        folder = backend._folder
        assert folder.parent == root and folder.name.startswith("imagetomesh-worker-") and folder.is_dir()
        backend.start(Job("check", mesh=_tetrahedron()))
        pids[:] = [backend.pid, _read_pid(pid_file)]
        assert _wait_for_event(backend, ("progress",)).message == "working"
        assert sorted(p.suffix for p in folder.iterdir()) == [".npy", ".npy"]  # the mesh, for the worker
        backend.close()
        assert _wait_gone(pids) == []
        assert not folder.exists() and root.is_dir() and list(root.iterdir()) == []
    finally:
        backend.close()
        _kill_leftovers(pids)


def test_real_worker_through_the_launcher(launcher, pid_file, tmp_path):
    root = tmp_path / "slicer-temp"
    backend = WorkerBackend(
        python=str(launcher), env={PID_FILE_ENV: str(pid_file), "OMP_NUM_THREADS": "1"}, temp_root=root
    )
    pids = [None, None]
    try:
        ping = backend.run(Job("ping"), timeout=60)
        pids[:] = [backend.pid, _read_pid(pid_file)]
        assert ping["pid"] == pids[1] != pids[0]  # the jobs run in the launcher's child
        check = backend.run(Job("check", mesh=_tetrahedron()), timeout=120)
        assert check["num_faces"] == 4 and check["components"] == 1 and check["watertight"]
        folder = backend._folder
        assert folder.parent == root and list(folder.iterdir()) == []  # job files removed
        assert backend.pid == pids[0]  # the same worker served both jobs
        backend.close()
        assert _wait_gone(pids) == []
        assert not folder.exists()
    finally:
        backend.close()
        _kill_leftovers(pids)
