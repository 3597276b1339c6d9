"""How many CPU threads each kind of work uses: decided here, once, for the CLI, training and the Slicer worker.

Measured on 2-core machines (issue 18, ``Testing/benchmarks/threads_benchmark.py``): on a loaded
machine every kind of work runs fastest on the cores nobody else is using — work made of many small
operations (the graph mesh decoders of Voxel2Mesh, Pixel2Mesh-3D and ImplicitMeshNet, DALS fits)
runs several times slower when its threads compete with another process (they spin-wait for each
other), and so does the U-Net; on an idle machine the same work gains from a second thread. So the
default is the cores idle right now (:func:`idle_cores`, sampled once at start-up), at least 1 and
at most the kind's cap in :data:`WORK_KINDS`:

- ``"graph"`` (mesh-decoder models) and ``"fit"`` (DALS fits and refinement): at most 2;
- ``"conv"`` (U-Net + marching cubes, NUDF, training): at most :data:`MAX_CONV_THREADS`;
- ``--threads N`` on a command, else the environment variable ``IMAGETOMESH_THREADS``, overrides
  the default for every kind.

:func:`configure` applies the choice to torch and, before numpy/scipy/torch load their OpenMP
and BLAS runtimes, to ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` (unless
the user set them). No torch import here: the CLI calls it before any heavy import.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from imagetomesh.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

#: Environment variable that sets the thread count of every kind of work (an integer >= 1).
ENV = "IMAGETOMESH_THREADS"
#: Convolutional work uses at most this many threads by default (beyond it the gain is small).
MAX_CONV_THREADS = 4
#: Kinds of work and the most threads their default uses (small-op work gains nothing beyond 2).
WORK_KINDS = {"graph": 2, "fit": 2, "conv": MAX_CONV_THREADS}
#: Seconds over which :func:`idle_cores` watches the machine.
LOAD_SAMPLE_S = 0.1
#: Model kinds whose inference is small-op graph work; every other segmentation kind is "conv".
GRAPH_MODEL_KINDS = frozenset({"voxel2mesh", "pixel2mesh3d", "implicitmeshnet"})
_RUNTIME_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def work_for_model(kind: str) -> str:
    """The kind of work of segmenting with a model of ``kind``."""
    return "graph" if kind in GRAPH_MODEL_KINDS else "conv"


def _cpu_times() -> tuple[int, int] | None:
    """``(idle, total)`` CPU time of the whole machine in clock ticks (Linux ``/proc/stat``), else None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return idle, sum(ticks[:8])  # guest time is already counted in user time


def idle_cores(sample_s: float = LOAD_SAMPLE_S) -> float:
    """Cores of :func:`available_cores` that other processes leave idle now: the machine's idle
    share of CPU time over ``sample_s`` seconds (``/proc/stat``) where the OS reports it, else the
    1-minute load average, else every available core."""
    cores = available_cores()
    before = _cpu_times()
    if before is not None:
        time.sleep(sample_s)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            idle_share = (after[0] - before[0]) / (after[1] - before[1])
            return min(cores, idle_share * (os.cpu_count() or cores))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return float(cores)
    return max(0.0, min(cores, (os.cpu_count() or cores) - load))


def threads_for(work: str, requested: int | None = None) -> int:
    """Threads for ``work`` (a key of :data:`WORK_KINDS`): ``requested`` (``--threads``), else
    ``$IMAGETOMESH_THREADS``, else the idle cores (:func:`idle_cores`, rounded, at least 1) up to
    the kind's cap; never more than :func:`available_cores`."""
    if work not in WORK_KINDS:
        raise ValueError(f"work must be one of {sorted(WORK_KINDS)}, got {work!r}")
    if requested is None:
        text = os.environ.get(ENV, "").strip()
        if text:
            try:
                requested = int(text)
            except ValueError:
                raise InputError(f"{ENV}={text!r} is not a whole number of threads; set it to 1 or more") from None
            if requested < 1:
                raise InputError(f"{ENV}={text!r}: the number of threads must be 1 or more")
    if requested is not None:
        return max(1, min(int(requested), available_cores()))
    idle = math.floor(idle_cores() + 0.5)
    return max(1, min(idle, WORK_KINDS[work], available_cores()))


def configure(work: str, requested: int | None = None) -> int:
    """Use :func:`threads_for` threads from now on; returns the count.

    Sets the OpenMP/BLAS environment variables the user did not set (they take effect only in
    libraries not loaded yet, so call this before importing torch where possible) and
    ``torch.set_num_threads`` when torch is already imported."""
    count = threads_for(work, requested)
    for name in _RUNTIME_VARIABLES:
        if name not in os.environ:
            os.environ[name] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
    return count


def import_in_this_thread(*modules: str) -> None:
    """Import ``modules`` (dotted names) in the calling thread, before work that may first need them runs in
    another: torch and pymeshlab first imported in a secondary thread corrupt the heap, and glibc aborts the
    interpreter at exit ("malloc_consolidate"). A module that is not installed is skipped, for its user to report."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def side_by_side(function: Callable[[T], R], items: Sequence[T], sizes: Sequence[float] | None = None) -> list[R]:
    """``[function(item) for item in items]``, the items run side by side in as many Python threads as torch has
    threads (at most one per item), each with one torch thread; torch's thread count is restored after. Work made
    of small operations (a mesh decoder per organ) keeps two cores busier this way than one item after another on
    two threads. ``sizes`` (one per item): the larger are taken first, so the threads end about together.
    Autograd's on/off, which is per thread, is the caller's in every thread. An item's exception is raised once
    all have ended. pymeshlab runs one call at a time (:mod:`imagetomesh.geometry.meshlab_calls`) and is imported
    here first (:func:`import_in_this_thread`)."""
    import_in_this_thread("pymeshlab")
    import torch

    threads = torch.get_num_threads()
    workers = min(threads, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    grad = torch.is_grad_enabled()

    def run(item: T) -> R:
        with torch.set_grad_enabled(grad):
            return function(item)

    order = sorted(range(len(items)), key=lambda i: -sizes[i]) if sizes is not None else range(len(items))
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="imagetomesh") as pool:
            futures = {i: pool.submit(run, items[i]) for i in order}
        return [futures[i].result() for i in range(len(items))]
    finally:
        torch.set_num_threads(threads)
