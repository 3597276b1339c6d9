"""Training tasks by model kind: the one registry behind ``train()`` and ``imagetomesh train KIND``.

Each :class:`TaskEntry` names its task class (imported only when used, so building the command
line needs no torch), its named configs' help, and the command-line options beyond the common
``--data --out --config --device --seed --steps``. Each :class:`Option` either sets a config
field (``config_field``, times ``scale``) or is passed to the task (``run_option``).
Adding a model kind = a task module (a :class:`~imagetomesh.training.tasks.base.Task` subclass
with a ``configs()`` class method) + one line in :data:`TASKS`.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from imagetomesh.errors import InputError


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
SHAPES = Option(
    "--shapes",
    type=str,
    config_field="shapes",
    choices=("hippocampus", "kidney"),
    required=True,
    help="which organ's shapes to learn",
)

MSD = "MSD folder (dataset.json, imagesTr/, labelsTr/)"
_IMAGE = "imagetomesh.training.tasks.image_to_mesh:ImageToMeshTask"

#: kind -> its training task
TASKS: dict[str, TaskEntry] = {
    "voxel2mesh": TaskEntry(
        _IMAGE,
        "train voxel2mesh on a Medical Segmentation Decathlon folder",
        MSD,
        "named config: cpu, gpu or an ablation (ps-umu, hs-umu, lns-umu, lns-amu = cpu)",
        (INIT_FROM,),
    ),
    "pixel2mesh3d": TaskEntry(
        _IMAGE,
        "train pixel2mesh3d on a Medical Segmentation Decathlon folder",
        MSD,
        "named config: cpu or gpu",
        (INIT_FROM,),
    ),
    "unet": TaskEntry(
        _IMAGE, "train unet on a Medical Segmentation Decathlon folder", MSD, "named config: cpu or gpu", (INIT_FROM,)
    ),
    "nudf": TaskEntry(
        "imagetomesh.training.tasks.nudf:NUDFTask",
        "train nudf on a Medical Segmentation Decathlon folder",
        MSD,
        "named config: cpu or gpu",
        (INIT_FROM, TIME_LIMIT),
    ),
    "implicitmeshnet": TaskEntry(
        "imagetomesh.training.tasks.implicitmeshnet:ImplicitMeshNetTask",
        "train implicitmeshnet on a Medical Segmentation Decathlon folder",
        MSD,
        "named config: cpu, gpu or cpu-finetune",
        (INIT_FROM, TIME_LIMIT, PRETRAIN_STEPS, PRETRAIN_TIME_LIMIT, SDF_FROM),
    ),
    "dals": TaskEntry(
        "imagetomesh.training.tasks.dals:DALSTask",
        "train a DALS shape prior (hippocampus labels or KiTS19 kidneys)",
        "hippocampus MSD folder or kits19-masks folder",
        "named config: cpu or gpu (default: cpu, gpu on cuda)",
        (SHAPES,),
        default_config=None,
        result_label="DALS prior",
        steps_without_time_limit=True,
    ),
}


def task_class(kind: str) -> type:
    """The task class that trains ``kind``; :class:`InputError` for an unknown kind."""
    if kind not in TASKS:
        raise InputError(f"no training task for {kind!r}; known: {', '.join(TASKS)}")
    return TASKS[kind].load()


def get_config(kind: str, name: str):
    """A copy of the named training config of ``kind``; :class:`InputError` (listing the known names) for an unknown one."""
    from imagetomesh.training.configs import named_config

    return copy.deepcopy(named_config(task_class(kind).configs(kind), name, kind))
