"""A training run's resumable checkpoint file (``checkpoint.pt``, ``pretrain.pt``).

It holds the ``state_dict`` of every named part (models, optimisers, schedulers) beside the
step, the best validation score so far and the seconds already trained. It is written
atomically (a run killed mid-write keeps the previous checkpoint) and read with
``weights_only=True`` (nothing is unpickled).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from imagetomesh.io.atomic import atomic_write


class RunCheckpoint:
    """``RunCheckpoint(path, model=model, optimizer=optimizer, ...)``: save and restore those parts.

    ``on_load`` maps a part's name to a function applied to its saved state before it is loaded
    (e.g. rescaling a one-cycle schedule to a new number of steps).
    """

    def __init__(self, path: str | Path, on_load: Optional[dict[str, Callable[[dict], dict]]] = None, **parts) -> None:
        self.path = Path(path)
        self.parts = parts
        self.on_load = on_load or {}

    def load(self, device) -> Optional[tuple[int, Optional[float], float]]:
        """Restore every part from the file: ``(step, best, elapsed seconds)``, or None when there is no file."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location=device, weights_only=True)
        for name, part in self.parts.items():
            part.load_state_dict(self.on_load.get(name, lambda saved: saved)(state[name]))
        return int(state["step"]), state.get("best"), float(state.get("elapsed", 0.0))

    def save(self, step: int, best: Optional[float] = None, elapsed: float = 0.0) -> None:
        with atomic_write(self.path) as tmp:
            torch.save({**{name: part.state_dict() for name, part in self.parts.items()},
                        "step": step, "best": best, "elapsed": elapsed}, tmp)
