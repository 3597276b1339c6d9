"""A phase's steps fitted to its time limit (``--fit-steps-to-time``): the count against a step-by-step
simulation, and the engine's loop on a clock that a small task advances by known amounts."""

import itertools
import json
from types import SimpleNamespace

import pytest
import torch

import imagetomesh.training.engine as engine
from imagetomesh import cli
from imagetomesh.errors import InputError
from imagetomesh.training.engine import Run, run_phase
from imagetomesh.training.schedules import one_cycle
from imagetomesh.training.tasks.base import LoopSettings, Task
from imagetomesh.training.time_budget import (
    RESERVE,
    UNTIMED_STEPS,
    steps_that_fit,
    validations_after,
)


def steps_that_fit_by_counting(step: int, seconds_left: float, step_s: float, val_s: float, val_every: int) -> int:
    """:func:`steps_that_fit` by simulating the phase one step at a time: the slow, plain reference."""
    budget, spent, end = (1 - RESERVE) * seconds_left, 0.0, step
    final = val_s if val_every else 0.0
    while True:
        cost = step_s + (val_s if val_every and (end + 1) % val_every == 0 else 0.0)
        last = val_s if val_every and (end + 1) % val_every != 0 else 0.0  # if the phase ended at end + 1
        if spent + cost + last + final > budget:
            return max(end, step + 1)
        spent += cost
        end += 1


def test_validations_counted_as_the_loop_runs_them():
    assert validations_after(0, 100, 25) == 4 + 1  # steps 25, 50, 75, 100 and the final model's
    assert validations_after(0, 110, 25) == 4 + 1 + 1  # ... and the last step's, 110
    assert validations_after(30, 50, 25) == 1 + 1
    assert validations_after(30, 40, 0) == 0


@pytest.mark.parametrize("val_every", [0, 1, 7, 25, 500])
def test_the_bisection_finds_the_steps_a_simulated_phase_fits(val_every):
    g = torch.Generator().manual_seed(val_every)
    for _ in range(40):
        step = int(torch.randint(0, 600, (1,), generator=g))
        left = float(torch.rand(1, generator=g)) * 60
        step_s = 0.01 + float(torch.rand(1, generator=g)) * 0.2
        val_s = float(torch.rand(1, generator=g)) * 3
        expected = steps_that_fit_by_counting(step, left, step_s, val_s, val_every)
        assert steps_that_fit(step, left, step_s, val_s, val_every) == expected


def test_a_phase_with_no_time_for_a_step_gets_one():
    assert steps_that_fit(40, 0.5, 1.0, 10.0, 25) == 41
    assert steps_that_fit(40, -3.0, 1.0, 0.0, 0) == 41


class _Clock:
    """``time.time`` and ``time.perf_counter`` of the engine: seconds advanced only by :meth:`spend`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    perf_counter = time

    def spend(self, seconds: float) -> None:
        self.now += seconds


class _TimedLineTask(Task):
    """A line fit whose step takes ``step_s`` and validation ``val_s`` seconds of :class:`_Clock`, on a one-cycle
    schedule planned for ``steps`` (the config's, before fitting)."""

    final_folder = None
    result_folder = None

    def __init__(self, clock, steps, time_limit_s, step_s=0.1, val_s=1.0, val_every=40, scheduler=one_cycle):
        super().__init__(SimpleNamespace(steps=steps), None)
        self.clock, self.step_s, self.val_s, self.val_every = clock, step_s, val_s, val_every
        self.time_limit_s, self.make_scheduler, self.rates = time_limit_s, scheduler, []

    def settings(self):
        return LoopSettings(
            steps=self.config.steps,
            val_every=self.val_every,
            time_limit_s=self.time_limit_s,
            clip_norm=None,
            fit_steps_to_time=True,
        )

    def setup(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.scheduler = self.make_scheduler(self.optimizer, 0.1, self.config.steps)

    def batch(self, generator):
        x = torch.randn(4, 3, generator=generator)
        return x, x.sum(1, keepdim=True)

    def loss(self, batch, generator):
        self.clock.spend(self.step_s)
        self.rates.append(self.optimizer.param_groups[0]["lr"])
        x, y = batch
        loss = ((self.model(x) - y) ** 2).mean()
        return loss, {"loss": float(loss.detach())}

    def validate(self):
        self.clock.spend(self.val_s)
        return {"val": 0.0}

    def score(self, metrics):
        return 0.0

    def card(self, metrics, state):
        return {"kind": "line"}


def _run(tmp_path, task, monkeypatch):
    tmp_path.mkdir(exist_ok=True)
    monkeypatch.setattr(engine, "time", task.clock)
    run = Run(tmp_path, tmp_path, torch.device("cpu"), 0, "", lambda m: None)
    task.run = run
    run_phase(task, run)
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


def test_a_phase_planned_too_long_ends_its_schedule_within_the_time_limit(tmp_path, monkeypatch):
    clock = _Clock()
    task = _TimedLineTask(clock, steps=1000, time_limit_s=20.0)
    log = _run(tmp_path, task, monkeypatch)
    fitted = [e["fitted_steps"] for e in log if "fitted_steps" in e]
    assert [e["step"] for e in log if "fitted_steps" in e] == [40]  # fitted once, at the first validation
    # at step 40, 5 s spent (40 steps of 0.1 s, a validation of 1 s): the rest of the 20 s, less the reserve
    expected = steps_that_fit(40, 20.0 - 5.0, 0.1, 1.0, 40)
    assert fitted == [expected] and 40 < expected < 1000
    assert task.config.steps == expected and len(task.rates) == expected
    assert clock.now - 1000.0 <= 20.0 * (1 - RESERVE / 2)  # all steps and validations ran inside the limit
    assert task.rates[-1] < 1e-4 < max(task.rates)  # the one-cycle schedule annealed to its end
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["fitted_steps"] == expected


def test_a_phase_planned_too_short_runs_longer(tmp_path, monkeypatch):
    task = _TimedLineTask(_Clock(), steps=40, time_limit_s=30.0)  # its last step's validation fits it
    _run(tmp_path, task, monkeypatch)
    assert task.config.steps == steps_that_fit(40, 30.0 - 5.0, 0.1, 1.0, 40) > 200
    assert len(task.rates) == task.config.steps and task.rates[-1] < 1e-4


def test_a_resumed_run_keeps_the_fitted_steps_and_schedule(tmp_path, monkeypatch):
    whole = _TimedLineTask(_Clock(), steps=1000, time_limit_s=20.0)
    _run(tmp_path / "whole", whole, monkeypatch)
    first = _TimedLineTask(_Clock(), steps=1000, time_limit_s=20.0)
    first.loss = _stop_after(first.loss, 60)  # interrupted at step 60, after the fit at step 40
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "halves", first, monkeypatch)
    second = _TimedLineTask(_Clock(), steps=1000, time_limit_s=20.0, step_s=0.05)  # faster: not fitted again
    _run(tmp_path / "halves", second, monkeypatch)
    assert second.config.steps == whole.config.steps
    assert first.rates[:60] + second.rates == pytest.approx(whole.rates)


def _stop_after(loss, steps):
    calls = itertools.count(1)

    def stopping(batch, generator):
        if next(calls) > steps:
            raise KeyboardInterrupt
        return loss(batch, generator)

    return stopping


def test_untimed_first_steps_leave_out_their_slowness(tmp_path, monkeypatch):
    task = _TimedLineTask(_Clock(), steps=1000, time_limit_s=80.0)
    plain, calls = task.loss, itertools.count()

    def slow_start(batch, generator):
        task.clock.spend(5.0 if next(calls) < UNTIMED_STEPS else 0.0)
        return plain(batch, generator)

    task.loss = slow_start
    _run(tmp_path, task, monkeypatch)
    # the steps' 0.1 s, not the 1.35 s the first 40 averaged: 55 s spent at the fit (10 x 5.1 + 30 x 0.1 + 1)
    assert task.config.steps == steps_that_fit(40, 80.0 - 55.0, 0.1, 1.0, 40)


def test_phases_that_cannot_fit_their_steps_refuse_before_a_step(tmp_path, monkeypatch):
    plateau = lambda optimizer, lr, steps: torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)  # noqa: E731
    task = _TimedLineTask(_Clock(), steps=100, time_limit_s=20.0, scheduler=plateau)
    with pytest.raises(InputError, match="ReduceLROnPlateau cannot be fitted"):
        _run(tmp_path, task, monkeypatch)
    assert task.rates == []
    task = _TimedLineTask(_Clock(), steps=100, time_limit_s=None)
    with pytest.raises(InputError, match="--time-limit"):
        _run(tmp_path, task, monkeypatch)


def test_the_command_line_sets_the_config_field(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "train", lambda config, data, out, **kw: calls.append(config) or out / "best")
    args = ["train", "unet", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--time-limit", "5"]
    assert cli.main(args + ["--fit-steps-to-time"]) == 0
    assert cli.main(args) == 0
    assert [c.fit_steps_to_time for c in calls] == [True, False]
