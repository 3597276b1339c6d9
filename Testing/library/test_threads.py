"""Threads by kind of work: one decision, overridable by --threads and IMAGETOMESH_THREADS."""

import pytest
import torch

from imagetomesh import threads
from imagetomesh.errors import InputError


def test_the_default_is_the_idle_cores_up_to_each_kinds_cap(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "idle_cores", lambda: 8.0)  # an idle machine
    assert threads.threads_for("graph") == 2 and threads.threads_for("fit") == 2
    assert threads.threads_for("conv") == threads.MAX_CONV_THREADS
    monkeypatch.setattr(threads, "idle_cores", lambda: 2.6)  # others keep 5.4 cores busy
    assert threads.threads_for("conv") == 3 and threads.threads_for("fit") == 2
    monkeypatch.setattr(threads, "idle_cores", lambda: 0.2)  # fully loaded: one thread, never none
    assert threads.threads_for("conv") == 1 and threads.threads_for("graph") == 1
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "idle_cores", lambda: 2.0)
    assert threads.threads_for("conv") == 2
    assert threads.work_for_model("voxel2mesh") == "graph" and threads.work_for_model("unet") == "conv"
    assert threads.work_for_model("nudf") == "conv" and threads.work_for_model("implicitmeshnet") == "graph"
    with pytest.raises(ValueError):
        threads.threads_for("gpu")


def test_idle_cores_reads_the_machines_idle_share_of_cpu_time(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    samples = iter([(1000, 4000), (1100, 4400)])  # idle 100 of 400 ticks: one core's worth
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    assert threads.idle_cores() == pytest.approx(1.0)
    monkeypatch.setattr(threads, "_cpu_times", lambda: None)  # no /proc/stat: the load average
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.5, 0.0, 0.0))
    assert threads.idle_cores() == pytest.approx(0.5)


def test_cpu_times_parses_proc_stat():
    times = threads._cpu_times()
    if times is None:
        pytest.skip("no /proc/stat on this system")
    idle, total = times
    assert 0 <= idle <= total


def test_the_option_beats_the_environment_which_beats_the_default(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.threads_for("graph") == 3 and threads.threads_for("graph", requested=2) == 2
    assert threads.threads_for("conv", requested=64) == 8  # never more than the cores
    for bad in ("zero", "0", "-2"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(InputError, match=threads.ENV):
            threads.threads_for("conv")


def test_configure_sets_torch_and_the_runtimes_the_user_did_not_set(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "idle_cores", lambda: 0.0)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the user's choice stays
    before = torch.get_num_threads()
    try:
        assert threads.configure("graph") == 1
        assert torch.get_num_threads() == 1
        import os

        assert os.environ["MKL_NUM_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "7"
    finally:
        torch.set_num_threads(before)


def test_side_by_side_returns_each_items_result_in_order_with_one_torch_thread_each():
    seen = []

    def work(item):
        seen.append((item, torch.get_num_threads(), torch.is_grad_enabled()))
        return item * item

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            assert threads.side_by_side(work, [1, 2, 3, 4, 5], sizes=[1, 2, 3, 5, 4]) == [1, 4, 9, 16, 25]
        assert torch.get_num_threads() == 2, "the caller's thread count is restored"
        assert sorted(seen) == [(i, 1, False) for i in range(1, 6)]  # one thread each, autograd as the caller's
        assert seen[0][0] in (4, 5)  # the two largest are taken first (either may begin first)
        torch.set_num_threads(1)  # one thread: one item after another, in order, in the caller's thread
        seen.clear()
        assert threads.side_by_side(work, [3, 1, 2], sizes=[1, 3, 2]) == [9, 1, 4]
        assert [item for item, _, _ in seen] == [3, 1, 2]
    finally:
        torch.set_num_threads(before)


def test_side_by_side_really_runs_items_at_once_and_raises_an_items_error():
    import threading

    barrier = threading.Barrier(2, timeout=20)  # broken (an error) unless two items wait at the same time

    def meet(item):
        barrier.wait()
        if item == "bad":
            raise ValueError("bad item")
        return item

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert threads.side_by_side(meet, ["a", "b"]) == ["a", "b"]
        barrier.reset()
        with pytest.raises(ValueError, match="bad item"):
            threads.side_by_side(meet, ["a", "bad"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_tasks_heavy_modules_are_imported_in_the_calling_thread_missing_ones_skipped(monkeypatch):
    """``preload`` (the Slicer worker) and ``side_by_side`` import torch / pymeshlab through
    ``import_in_this_thread``: in the thread that calls them (first imported in another, they abort the interpreter
    at exit), each module asked for, one that is not installed skipped."""
    import importlib
    import threading

    from imagetomesh.backend.tasks import TASK_TABLE, preload

    real = importlib.import_module
    imported = []

    def recording(name, *args):
        imported.append((name, threading.get_ident()))
        if name == "imagetomesh_no_such_module":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", recording)
    threads.import_in_this_thread("json", "imagetomesh_no_such_module")
    assert imported == [("json", threading.get_ident()), ("imagetomesh_no_such_module", threading.get_ident())]
    imported.clear()
    preload("segment")
    assert imported == [(name, threading.get_ident()) for name in TASK_TABLE["segment"].modules]
    assert {"torch", "pymeshlab"} <= {name for name, _ in imported}
    imported.clear()
    assert threads.side_by_side(lambda item: item * 2, [1, 2]) == [2, 4]
    assert ("pymeshlab", threading.get_ident()) in imported
