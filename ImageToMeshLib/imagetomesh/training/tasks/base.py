"""What a training task is: the part of a run that depends on the model kind.

The engine (:mod:`imagetomesh.training.engine`) owns the run folder, ``config.json``, device,
threads and seeds, the loop (gradient accumulation, optional bf16 autocast, clipping, the
optimiser and scheduler steps), validation at intervals, best/final models and their cards,
the checkpoint, the time limit and ``log.jsonl``. A :class:`Task` says, for one kind, how to
build the model and optimiser, make a batch, compute the loss and validate; a kind that trains
in several phases (ImplicitMeshNet pretrains ``g_phi`` first) returns them from :meth:`Task.phases`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from imagetomesh.errors import InputError
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.schedules import rescale_one_cycle

if TYPE_CHECKING:
    from imagetomesh.training.engine import Run


@dataclass(kw_only=True)
class EngineOptions:
    """Loop options every training config has (a base of each config dataclass).

    ``accumulate_steps``: mini-batches whose gradients are summed (each loss divided by their
    number) before one optimiser step; 1 = a plain step. ``bf16_autocast``: compute the losses
    under bfloat16 autocast (CPU with native bf16, or CUDA); float32 where unsupported.
    ``channels_last``: keep the model's 3D convolution weights (and so their activations) in
    ``torch.channels_last_3d`` memory order, which oneDNN's bf16 kernels run fastest in.
    ``batch_workers``: processes that draw the training batches ahead of the loop
    (:mod:`~imagetomesh.training.batch_workers`; for a GPU); 0 = drawn in the loop.
    ``fit_steps_to_time``: once the run has timed its steps, end it at the number of steps that fit in
    its time limit (:mod:`~imagetomesh.training.time_budget`; for a machine lent for a fixed time).
    """

    accumulate_steps: int = 1
    bf16_autocast: bool = False
    channels_last: bool = False
    batch_workers: int = 0
    fit_steps_to_time: bool = False

    def loop_options(self) -> dict:
        """These fields by name, as :class:`LoopSettings` takes them (``LoopSettings(steps=..., **c.loop_options())``)."""
        return {f.name: getattr(self, f.name) for f in fields(EngineOptions)}

    def to_dict(self) -> dict:
        """The config as JSON-ready values (a ``grid`` :class:`GridSpec` by its own ``to_dict``)."""
        d = asdict(self)
        if isinstance(getattr(self, "grid", None), GridSpec):
            d["grid"] = self.grid.to_dict()
        return d


@dataclass
class LoopSettings:
    """How the engine runs one phase.

    ``val_every``: validate (keeping the best model) and checkpoint every that many steps and at
    the last step; 0: never. ``log_every``: write ``log.jsonl`` (means over the steps since the
    last entry) every that many steps and at the last; 0: only when validating.
    ``checkpoint_every``: checkpoint besides validations (0: only then); the engine also
    checkpoints when the phase ends. ``time_limit_s``: stop after that many seconds of training
    counted over resumptions (None or 0: no limit). ``clip_norm``: gradient norm clipping of
    :meth:`Task.clip_parameters` (None: none). ``batch_workers``, ``fit_steps_to_time``: see
    :class:`EngineOptions` (the phase's steps are then :meth:`Task.set_steps`'s).
    """

    steps: int
    val_every: int = 0
    log_every: int = 0
    checkpoint_every: int = 0
    time_limit_s: Optional[float] = None
    clip_norm: Optional[float] = 5.0
    accumulate_steps: int = 1
    bf16_autocast: bool = False
    channels_last: bool = False
    batch_workers: int = 0
    fit_steps_to_time: bool = False


@dataclass
class RunState:
    """Where a phase stands: ``step`` done, ``best`` score so far (lower is better), ``elapsed_s``
    trained over every session, and whether the time limit stopped it."""

    step: int = 0
    best: Optional[float] = None
    elapsed_s: float = 0.0
    stopped_by_time_limit: bool = False


class Task:
    """One phase of training a model kind. Subclasses set :attr:`model` and :attr:`optimizer` (and
    optionally :attr:`scheduler`, stepped once per optimiser step) in :meth:`setup`.

    Class attributes: ``name`` (words before "resumed from step N" and in time-limit messages),
    ``log_fields`` (put first in every ``log.jsonl`` entry), ``checkpoint_name`` (file in the
    run folder), ``seed_offset`` (added to the seed of the batch generator), ``final_folder``
    (model folder written at the end, None: none), ``result_folder`` (what :func:`train`
    returns), ``result_label`` (how the command line names it), ``batches_in_workers``.
    """

    name = ""
    log_fields: dict = {}
    checkpoint_name = "checkpoint.pt"
    seed_offset = 0
    final_folder: Optional[str] = "final"
    result_folder: Optional[str] = "best"
    result_label = "best model"
    #: whether :meth:`batch` reads nothing a training step changes, so that worker processes forked once the
    #: task is set up may draw its batches ahead (``batch_workers``)
    batches_in_workers = False

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None

    def __init__(self, config, run: Run) -> None:
        self.config = config
        self.run = run

    # --- set-up ----------------------------------------------------------------------------
    def phases(self) -> list[Task]:
        """The phases to run in order (default: this task alone)."""
        return [self]

    def settings(self) -> LoopSettings:
        """The loop settings of this phase (default: from ``config.steps``, ``val_every``, the time
        limit and the :class:`EngineOptions` fields)."""
        c = self.config
        return LoopSettings(
            steps=c.steps,
            val_every=c.val_every,
            time_limit_s=getattr(c, "time_limit_s", None),
            **c.loop_options(),
        )

    def set_steps(self, steps: int) -> None:
        """End this phase at ``steps`` (its steps fitted to the time limit): ``config.steps``, and a one-cycle
        :attr:`scheduler` rescaled as on resuming with another ``--steps``. :class:`InputError` for a phase whose
        steps are not ``config.steps`` or whose scheduler cannot follow (the engine calls it before the first step
        with the settings' steps, as that check)."""
        if self.settings().steps != self.config.steps:
            raise InputError(
                f"{type(self).__name__} does not run config.steps: it cannot fit its steps to the time limit"
            )
        if self.scheduler is not None and not isinstance(self.scheduler, torch.optim.lr_scheduler.OneCycleLR):
            raise InputError(
                f"{type(self).__name__}'s {type(self.scheduler).__name__} cannot be fitted to the time limit: "
                "drop --fit-steps-to-time"
            )
        self.config.steps = steps
        if self.scheduler is not None:
            self.scheduler.load_state_dict(rescale_one_cycle(self.scheduler.state_dict(), steps))

    def setup(self) -> None:
        """Read the data, build the model(s) and optimiser(s) (the engine has seeded torch)."""
        raise NotImplementedError

    def checkpoint_parts(self) -> dict[str, Any]:
        """Checkpoint parts by key (see :class:`~imagetomesh.training.checkpoint.RunCheckpoint`)."""
        parts = {"model": self.model, "optimizer": self.optimizer}
        if self.scheduler is not None:
            parts["scheduler"] = self.scheduler
        return parts

    def on_load(self) -> dict:
        """Functions applied to saved part states before loading them (by key): the model's
        parameters saved before the graph layers moved to torch-geometric get their current names, and a
        one-cycle :attr:`scheduler`'s schedule ends at ``config.steps`` (a run resumed with another ``--steps``)."""
        from imagetomesh.weights import upgrade_state

        loaders = {"model": lambda saved: upgrade_state(getattr(self.config, "kind", None), saved)}
        if isinstance(self.scheduler, torch.optim.lr_scheduler.OneCycleLR):
            loaders["scheduler"] = lambda saved: rescale_one_cycle(saved, self.config.steps)
        return loaders

    # --- one step --------------------------------------------------------------------------
    def before_step(self, progress: float) -> None:
        """Called before each step with the run's progress in [0, 1] (by steps or time, whichever is further)."""

    def batch(self, generator: torch.Generator) -> Any:
        """One training mini-batch, drawn with ``generator``."""
        raise NotImplementedError

    def loss(self, batch: Any, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """``(scalar loss to minimise, {term: float} logged as means)``."""
        raise NotImplementedError

    def after_step(self, terms: dict[str, float]) -> None:
        """Called after the optimiser (and scheduler) step; may add to ``terms``."""

    def clip_parameters(self) -> Iterable[torch.Tensor]:
        return self.model.parameters()

    # --- validation and models -------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Validation metrics (the engine restores train mode afterwards)."""
        raise NotImplementedError

    def score(self, metrics: dict[str, float]) -> float:
        """The number the best model minimises."""
        raise NotImplementedError

    def after_validation(self) -> None:
        """Called after each validation (and best-model save), before the checkpoint."""

    def final_metrics(self, state: RunState) -> dict[str, float]:
        """The metrics of the ``final_folder`` model's card (default: a validation)."""
        return self.validate()

    def finish(self, state: RunState) -> None:
        """Called once the phase has ended and its checkpoint is saved, before the final model."""

    def card(self, metrics: dict, state: RunState) -> dict:
        """The model card of a saved model (engine adds the weights' name and checksum)."""
        raise NotImplementedError


def run_card(run: Run, kind: str, model_config: dict, grid, split: dict, metrics: dict, steps: int) -> dict:
    """The card of a model trained on an image grid: kind, architecture, grid, config name, data, split, seed,
    hardware, metrics and steps."""
    return {
        "kind": kind,
        "config": model_config,
        "grid": grid.to_dict(),
        "train_config": run.config_name,
        "training": {"data": str(run.data_dir), "split": split, "seed": run.seed, "hardware": run.hardware},
        "metrics": metrics,
        "steps": steps,
    }
