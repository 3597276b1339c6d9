"""How a model kind trains, as the registry (:mod:`imagetomesh.kinds`) records it: the task class
(imported only when used, so building the command line needs no torch), its named configs' help,
and the command-line options of ``imagetomesh train KIND`` beyond the common
``--data --out --config --device --seed --steps``. Each :class:`Option` either sets a config field
(``config_field``, times ``scale``) or is passed to the task (``run_option``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class Option:
    """A command-line option of ``imagetomesh train KIND``; ``None`` (not given) changes nothing."""

    flag: str
    help: str
    type: Callable[[str], Any] = float
    config_field: Optional[str] = None
    scale: float = 1.0
    run_option: Optional[str] = None
    choices: Optional[tuple] = None
    required: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def apply(self, value, config, run_options: dict) -> None:
        """Put a parsed ``value`` into ``config`` or ``run_options``."""
        if value is None:
            return
        if self.config_field:
            setattr(config, self.config_field, value * self.scale if self.scale != 1.0 else value)
        if self.run_option:
            run_options[self.run_option] = value


@dataclass(frozen=True)
class TaskEntry:
    """``task``: ``"module:Class"``; ``help``: one line for ``imagetomesh train --help``; ``data``: what
    ``--data`` is; ``configs``: help of ``--config``; ``default_config``: a name, or ``None`` for
    ``gpu`` on CUDA and ``cpu`` otherwise; ``result_label``: how the command names the result;
    ``steps_without_time_limit``: an explicit ``--steps`` also lifts the config's time limit (all steps run)."""

    task: str
    help: str
    data: str
    configs: str
    options: tuple[Option, ...] = ()
    default_config: Optional[str] = "cpu"
    result_label: str = "best model"
    steps_without_time_limit: bool = False

    def load(self) -> type:
        module, name = self.task.split(":")
        return getattr(importlib.import_module(module), name)


INIT_FROM = Option(
    "--init-from",
    type=Path,
    run_option="init_from",
    help="model folder that starts the run: all its weights if it is a model of this kind "
    "(fine-tuning), else its U-Net's",
)
TIME_LIMIT = Option(
    "--time-limit",
    config_field="time_limit_s",
    scale=60.0,
    help="stop after this many minutes (checkpointed; default: the config's)",
)
PRETRAIN_STEPS = Option(
    "--pretrain-steps",
    type=int,
    config_field="pretrain_steps",
    help="steps of the first phase, pretraining the mesh-to-SDF network g_phi on random "
    "deformed spheres (skipped once RUN/sdf_pretrained.safetensors exists; 0: none)",
)
PRETRAIN_TIME_LIMIT = Option(
    "--pretrain-time-limit",
    config_field="pretrain_time_limit_s",
    scale=60.0,
    help="minutes of pretraining at most (default: the config's)",
)
SDF_FROM = Option(
    "--sdf-from",
    type=Path,
    run_option="sdf_from",
    help="start the mesh-to-SDF network g_phi from this file (a run's sdf_net.safetensors) "
    "instead of pretraining it; used by --config cpu-finetune",
)
TAU = Option(
    "--tau",
    config_field="tau",
    help="temperature of ImplicitMeshNet's surface loss sigmoid(-SDF / tau), isotropic grid units "
    "(default: the config's; for the validation sweep of docs/implicitmeshnet.md)",
)
SHAPES = Option(
    "--shapes",
    type=str,
    config_field="shapes",
    choices=("hippocampus", "kidney", "mandible", "parotid", "brainstem"),
    required=True,
    help="which organ's shapes to learn",
)
