"""pymeshlab, one call at a time in a process.

pymeshlab lets go of Python's lock inside its filters but cannot run two of them at once: two screened Poisson
reconstructions in two threads crash the process (a segmentation fault; session 49). Every function of this package
that makes a ``pymeshlab.MeshSet`` is decorated with :func:`one_at_a_time` (``Testing/library/test_meshlab_calls.py``
checks the sources), so code that meshes several organs in threads
(:meth:`imagetomesh.inference.Segmenter.segment_organs`) is safe. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: Held while a function decorated with :func:`one_at_a_time` runs (reentrant: such a function may call another).
MESHLAB_LOCK = threading.RLock()


def one_at_a_time(function: F) -> F:
    """``function`` run while holding :data:`MESHLAB_LOCK`: at most one thread of a process in pymeshlab."""

    @functools.wraps(function)
    def locked(*args, **kwargs):
        with MESHLAB_LOCK:
            return function(*args, **kwargs)

    return locked  # type: ignore[return-value]
