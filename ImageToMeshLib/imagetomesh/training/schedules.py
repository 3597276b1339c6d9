"""The one-cycle learning-rate schedule of the image-to-mesh and NUDF runs, and resuming it with another length."""

from __future__ import annotations

import torch


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """``OneCycleLR`` peaking at ``lr`` after 5 % of ``steps`` (warm-up), then annealing over the rest."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.05)


def rescale_one_cycle(scheduler_state: dict, total_steps: int, pct_start: float = 0.05) -> dict:
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
    phases = [dict(p) for p in state["_schedule_phases"]]
    phases[0]["end_step"] = float(pct_start * total_steps) - 1
    phases[-1]["end_step"] = total_steps - 1
    state.update(total_steps=total_steps, _schedule_phases=phases)
    return state
