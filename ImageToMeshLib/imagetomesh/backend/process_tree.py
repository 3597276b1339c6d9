"""Ending a worker and everything it started: :func:`terminate_process_tree`.

Slicer's ``PythonSlicer`` is a launcher whose child is the real Python, so ending the
launcher alone is not enough: the worker runs as the leader of its own process group and
the whole group is ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

__all__ = ["terminate_process_tree"]


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
