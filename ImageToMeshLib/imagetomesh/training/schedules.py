"""The one-cycle learning-rate schedule of the image-to-mesh and NUDF runs, and resuming it with another length."""

from __future__ import annotations

import torch

#: The warm-up's share of a long run.
WARMUP = 0.05


def warmup_fraction(steps: int) -> float:
    """The warm-up's share of ``steps``: :data:`WARMUP`, or two steps where that would be one.

    ``OneCycleLR`` runs its warm-up from step 0 to step ``pct_start * steps - 1``; when that is
    exactly 0 (20 steps at 5 %) the phase has zero length and it divides by zero.
    """
    if float(WARMUP * steps) - 1 == 0:
        return 2.0 / steps
    return WARMUP


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """``OneCycleLR`` peaking at ``lr`` after 5 % of ``steps`` (:func:`warmup_fraction`), then annealing over the rest."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=warmup_fraction(steps))


def rescale_one_cycle(scheduler_state: dict, total_steps: int, pct_start: float | None = None) -> dict:
    """A saved ``OneCycleLR`` state whose schedule now ends at ``total_steps``.

    Lets a run resume with a different ``--steps``: the learning rate follows the new
    schedule from the current step on (the warm-up phase keeps its fraction).
    """
    state = dict(scheduler_state)
    if state.get("total_steps") == total_steps:
        return state
    if total_steps <= state["last_epoch"]:
        raise ValueError(
            f"cannot shorten the schedule to {total_steps} steps: the run is already at step {state['last_epoch']}"
        )
    if pct_start is None:
        pct_start = warmup_fraction(total_steps)
    phases = [dict(p) for p in state["_schedule_phases"]]
    phases[0]["end_step"] = float(pct_start * total_steps) - 1
    phases[-1]["end_step"] = total_steps - 1
    state.update(total_steps=total_steps, _schedule_phases=phases)
    return state
