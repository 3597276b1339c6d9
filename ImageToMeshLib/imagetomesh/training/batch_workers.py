"""Training batches drawn ahead of the loop in worker processes (``batch_workers`` of a config).

For a device that trains faster than one CPU process augments (a GPU: a 64 x 96 x 96 head-and-neck crop takes
~40 ms to cut and augment on one core, the wide U-Net's step on an H200 ~5 ms per crop). Mini-batch ``i``
of a phase (``i = step * accumulate_steps + k``) is drawn by :meth:`Task.batch` with a generator of its own,
seeded from the run's batch seed and ``i`` (:func:`batch_generator`), so a resumed run draws the batches it
would have drawn without the interruption, whatever the number of workers. Without workers the engine's
single generator draws them in the loop, as before.

Workers are forked from the training process once the task is set up (its cases are shared, not copied or
pickled), so only tasks whose :meth:`Task.batch` reads nothing that a step changes may use them
(``Task.batches_in_workers``), and only where processes can be forked (Linux, macOS).
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imagetomesh.errors import InputError

#: Batches each worker keeps ready.
PREFETCH = 4


def batch_generator(seed: int, index: int) -> torch.Generator:
    """The generator of mini-batch ``index`` of a run whose batch seed is ``seed`` (independent streams)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class IndexedBatches(Dataset):
    """Mini-batch ``i`` = ``task.batch(batch_generator(seed, i))``."""

    def __init__(self, task, seed: int) -> None:
        self.task = task
        self.seed = seed

    def __getitem__(self, index: int):
        return self.task.batch(batch_generator(self.seed, index))


def check_batch_workers(task, workers: int) -> None:
    """:class:`InputError` where ``task`` cannot draw its batches in ``workers`` (> 0) forked processes."""
    if workers <= 0:
        return
    if not getattr(task, "batches_in_workers", False):
        raise InputError(
            f"{type(task).__name__} draws batches that depend on the training's progress: set batch_workers to 0"
        )
    if "fork" not in multiprocessing.get_all_start_methods():
        raise InputError("batch_workers needs processes that can be forked (Linux, macOS): set batch_workers to 0")


class WorkerBatches:
    """Mini-batches ``first, first + 1, ...`` of ``task`` (see the module; no last one: a phase fitted to its
    time limit learns its length as it runs), drawn ``PREFETCH`` per worker ahead in ``workers`` forked
    processes and given in order by ``next``; ``pin_memory`` for a copy to a GPU that overlaps the step. The
    engine has checked the task with :func:`check_batch_workers`. :meth:`close` ends the workers (the loop's
    end: they would otherwise live until the iterator is collected)."""

    def __init__(self, task, workers: int, seed: int, first: int, pin_memory: bool = False) -> None:
        loader = DataLoader(
            IndexedBatches(task, seed),
            batch_size=None,
            sampler=itertools.count(first),
            num_workers=workers,
            prefetch_factor=PREFETCH,
            pin_memory=pin_memory,
            multiprocessing_context="fork",
        )
        self._batches = iter(loader)

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        return next(self._batches)

    def close(self) -> None:
        """End the worker processes now (what the loader's iterator does when it is collected)."""
        shutdown = getattr(self._batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._batches = iter(())
