"""A phase's number of steps fitted to its time limit (``fit_steps_to_time`` of a config, ``--fit-steps-to-time``).

For a machine lent for a fixed time (a GPU lease) whose step time is not known until the run has begun: a
schedule planned for more steps than fit is cut by the time limit before it anneals (session 24's run stopped
at 54 % of its one-cycle schedule, its rate still at half its peak). Once the run has measured its own step
time and a validation's (the engine does so at the first validation of a session with at least
:data:`MIN_TIMED_STEPS` timed steps), :func:`steps_that_fit` gives the number of steps whose training, periodic
validations and final validation fit in the time left; the engine then ends the phase there
(:meth:`~imagetomesh.training.tasks.base.Task.set_steps`: a one-cycle schedule follows, as on resuming with
another ``--steps``), and the number is checkpointed so a resumed run keeps it.
"""

from __future__ import annotations

#: Steps at the start of a session left out of the step time (cuDNN's autotuner, workers filling their queues).
UNTIMED_STEPS = 10
#: Timed steps a session needs before it fits its schedule (fewer: it waits for the next validation).
MIN_TIMED_STEPS = 20
#: Share of the time left kept in reserve (checkpoints, the final model's save, a slower step now and then).
RESERVE = 0.05


def validations_after(step: int, end: int, val_every: int) -> int:
    """Validations a phase ending at ``end`` runs after ``step``: each multiple of ``val_every`` in
    ``(step, end]``, the last step's (when ``end`` is not a multiple), and the final model's; 0 without
    periodic validation (``val_every`` 0: the final model's metrics only, counted by the caller's reserve)."""
    if not val_every:
        return 0
    return end // val_every - step // val_every + (end % val_every != 0) + 1


def steps_that_fit(step: int, seconds_left: float, step_s: float, val_s: float, val_every: int) -> int:
    """The largest phase end ``n > step`` whose ``n - step`` steps of ``step_s`` seconds and validations of
    ``val_s`` seconds (:func:`validations_after`) fit in ``(1 - RESERVE) * seconds_left``; ``step + 1`` when
    not even one does (the time limit then ends the phase).

    The cost grows with ``n``, so a bisection finds it (tested against a step-by-step simulation of the phase).
    """
    if step_s <= 0:
        raise ValueError(f"step time must be positive, got {step_s}")
    budget = (1 - RESERVE) * seconds_left

    def fits(end: int) -> bool:
        return (end - step) * step_s + validations_after(step, end, val_every) * val_s <= budget

    low, high = step + 1, step + 1 + int(max(budget, 0.0) / step_s)
    if not fits(low):
        return low
    while low < high:  # fits(low) holds; the answer is in [low, high]
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


class FittedSteps:
    """The steps a phase was fitted to (0: not yet), as a checkpoint part: loading a fitted number (before the
    scheduler, so that it is rescaled to it) ends the phase there again, so a resumed run keeps its schedule.

    ``task``: the phase (:meth:`~imagetomesh.training.tasks.base.Task.set_steps`); ``settings``: its
    :class:`~imagetomesh.training.tasks.base.LoopSettings`, whose ``steps`` the loop runs to."""

    def __init__(self, task, settings) -> None:
        self.task, self.settings, self.steps = task, settings, 0

    def fit(self, steps: int) -> None:
        self.task.set_steps(steps)
        self.settings.steps = self.steps = steps

    def state_dict(self) -> int:
        return self.steps

    def load_state_dict(self, saved) -> None:
        if int(saved):
            self.fit(int(saved))
