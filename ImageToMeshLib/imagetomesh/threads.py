"""How many CPU threads each kind of work uses: decided here, once, for the CLI, training and the Slicer worker.

Measured on 2-core machines (issue 18): work made of many small operations (the graph mesh
decoders of Voxel2Mesh, Pixel2Mesh-3D and ImplicitMeshNet, DALS fits) runs fastest on one thread
and several times slower on two when the machine is loaded (the threads spin-wait for each other);
convolutional encoders (U-Net, NUDF) gain from more threads. So:

- ``"graph"`` (mesh-decoder models) and ``"fit"`` (DALS fits and refinement): 1 thread;
- ``"conv"`` (U-Net + marching cubes, NUDF, training): the available cores, at most
  :data:`MAX_CONV_THREADS`;
- ``--threads N`` on a command, else the environment variable ``IMAGETOMESH_THREADS``, overrides
  the default for every kind.

:func:`configure` applies the choice to torch and, before numpy/scipy/torch load their OpenMP
and BLAS runtimes, to ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` (unless
the user set them). No torch import here: the CLI calls it before any heavy import.
"""

from __future__ import annotations

import os
import sys

from imagetomesh.errors import InputError

#: Environment variable that sets the thread count of every kind of work (an integer >= 1).
ENV = "IMAGETOMESH_THREADS"
#: Kinds of work and their default thread counts (None: the available cores, capped).
WORK_KINDS = {"graph": 1, "fit": 1, "conv": None}
#: Convolutional work uses at most this many threads by default (beyond it the gain is small).
MAX_CONV_THREADS = 4
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


def threads_for(work: str, requested: int | None = None) -> int:
    """Threads for ``work`` (a key of :data:`WORK_KINDS`): ``requested`` (``--threads``), else
    ``$IMAGETOMESH_THREADS``, else the kind's default, never more than :func:`available_cores`."""
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
    default = WORK_KINDS[work]
    return default if default is not None else min(available_cores(), MAX_CONV_THREADS)


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
