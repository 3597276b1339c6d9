"""Training batches drawn ahead by worker processes (imagetomesh.training.batch_workers) through the engine."""

from __future__ import annotations

import pytest
import torch

from imagetomesh.errors import InputError
from imagetomesh.training.batch_workers import WorkerBatches, batch_generator
from imagetomesh.training.engine import Run, run_phase
from imagetomesh.training.tasks.base import LoopSettings, Task


class _DrawnLineTask(Task):
    """A linear least-squares fit whose batches are drawn with the generator it is given."""

    final_folder = None
    result_folder = None
    batches_in_workers = True

    def __init__(self, steps: int, workers: int) -> None:
        super().__init__(None, None)
        self.steps, self.workers = steps, workers

    def settings(self):
        return LoopSettings(steps=self.steps, clip_norm=None, accumulate_steps=2, batch_workers=self.workers)

    def setup(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def batch(self, generator):
        x = torch.randn(4, 3, generator=generator)
        return x, x.sum(1, keepdim=True) + 0.1 * torch.randn(4, 1, generator=generator)

    def loss(self, batch, generator):
        x, y = batch
        loss = ((self.model(x) - y) ** 2).mean()
        return loss, {"loss": float(loss.detach())}


def _run(folder, task):
    folder.mkdir(exist_ok=True)
    run = Run(folder, folder, torch.device("cpu"), 0, "", lambda m: None)
    task.run = run
    run_phase(task, run)
    return task.model


def test_each_batch_index_has_its_own_reproducible_stream():
    draws = [torch.rand(5, generator=batch_generator(7, i)) for i in range(4)]
    assert torch.equal(draws[2], torch.rand(5, generator=batch_generator(7, 2)))
    assert all(not torch.equal(draws[i], draws[j]) for i in range(4) for j in range(i))
    assert not torch.equal(draws[0], torch.rand(5, generator=batch_generator(8, 0)))


def test_workers_give_batches_in_order_as_drawn_in_the_training_process():
    task = _DrawnLineTask(1, 2)
    batches = WorkerBatches(task, 2, 5, 3, 11)
    got = [next(batches) for _ in range(8)]
    batches.close()
    assert next(batches, None) is None
    expected = [task.batch(batch_generator(5, i)) for i in range(3, 11)]
    assert len(got) == len(expected) == 8
    for (x, y), (ex, ey) in zip(got, expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_a_run_with_workers_resumed_half_way_ends_with_the_weights_of_one_run(tmp_path):
    whole = _run(tmp_path / "whole", _DrawnLineTask(6, 2))
    _run(tmp_path / "halves", _DrawnLineTask(3, 2))
    assert torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed = _run(tmp_path / "halves", _DrawnLineTask(6, 1))  # the number of workers may change
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    in_loop = _run(tmp_path / "in-loop", _DrawnLineTask(6, 0))  # the engine's one generator: other batches
    assert not torch.equal(in_loop.weight, whole.weight)


def test_a_task_whose_batches_follow_the_training_refuses_workers_before_its_set_up(tmp_path):
    task = _DrawnLineTask(2, 1)
    task.batches_in_workers = False
    with pytest.raises(InputError, match="batch_workers to 0"):
        _run(tmp_path, task)
    assert not hasattr(task, "model")
