"""Training tasks by model kind: ``train()`` and ``imagetomesh train KIND`` find a kind's task here.

The table itself is :data:`imagetomesh.kinds.KINDS` (one entry per kind: its model and its
training); :data:`TASKS` is its training column. Adding a model kind = a task module (a
:class:`~imagetomesh.training.tasks.base.Task` subclass with a ``configs()`` class method), a
model module, and one entry in :data:`~imagetomesh.kinds.KINDS`.
"""

from __future__ import annotations

import copy

from imagetomesh.errors import InputError
from imagetomesh.kinds import KINDS
from imagetomesh.training.task_entries import Option, TaskEntry

__all__ = ["TASKS", "Option", "TaskEntry", "task_class", "get_config"]

#: kind -> its training task (the training column of :data:`imagetomesh.kinds.KINDS`)
TASKS: dict[str, TaskEntry] = {kind: entry.training for kind, entry in KINDS.items()}


def task_class(kind: str) -> type:
    """The task class that trains ``kind``; :class:`InputError` for an unknown kind."""
    if kind not in TASKS:
        raise InputError(f"no training task for {kind!r}; known: {', '.join(TASKS)}")
    return TASKS[kind].load()


def get_config(kind: str, name: str):
    """A copy of the named training config of ``kind``; :class:`InputError` (listing the known names) for an unknown one."""
    from imagetomesh.training.configs import named_config

    return copy.deepcopy(named_config(task_class(kind).configs(kind), name, kind))
