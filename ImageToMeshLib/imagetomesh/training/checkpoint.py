"""A training run's resumable checkpoint file (``checkpoint.pt``, ``pretrain.pt``): the one format of every run.

It holds the ``state_dict`` of every named part (models, optimisers, schedulers, and through the
small adapters below plain tensors, a random generator, a list of floats, a value that must
match) beside the step, the best validation score so far and the seconds already trained. It is
written atomically (a run killed mid-write keeps the previous checkpoint) and read with
``weights_only=True`` (nothing is unpickled).

The keys are the part names, so files written before the training engine existed still load:
``model``/``optimizer``/``scheduler`` (U-Net, Voxel2Mesh, Pixel2Mesh-3D, NUDF),
``model``/``sdf_net``/``optimizer``/``sdf_optimizer`` (ImplicitMeshNet; ``pretrain.pt``:
``model``/``optimizer``), ``n_shapes``/``decoder``/``latents``/``optimiser``/``scheduler``/
``generator``/``window`` (DALS). Parts named ``optional`` may be missing from an older file.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Optional

import torch

from imagetomesh.errors import InputError
from imagetomesh.io.atomic import atomic_write


class TensorState:
    """A tensor (e.g. an ``nn.Parameter`` of per-shape latents ``(S, d)``) as a checkpoint part: restored in place."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def state_dict(self) -> torch.Tensor:
        return self.tensor.detach()

    def load_state_dict(self, saved: torch.Tensor) -> None:
        with torch.no_grad():
            self.tensor.copy_(saved)


class GeneratorState:
    """A ``torch.Generator`` as a checkpoint part; ``loaded`` says whether a saved state was restored."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.loaded = False

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, saved: torch.Tensor) -> None:
        self.generator.set_state(saved.cpu())
        self.loaded = True


class FloatListState:
    """A list of floats kept in place (e.g. a loss window), saved as a float64 tensor ``(n,)``."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def state_dict(self) -> torch.Tensor:
        return torch.tensor(self.values, dtype=torch.float64)

    def load_state_dict(self, saved: torch.Tensor) -> None:
        self.values[:] = [float(v) for v in saved]


class ExpectedValue:
    """A number the run must still have when it resumes (e.g. how many shapes the latents are for).

    Loading a different saved value raises :class:`InputError` with ``message.format(saved=..., value=...)``.
    """

    def __init__(self, value: int, message: str) -> None:
        self.value = value
        self.message = message

    def state_dict(self) -> int:
        return self.value

    def load_state_dict(self, saved) -> None:
        if int(saved) != self.value:
            raise InputError(self.message.format(saved=int(saved), value=self.value))


class RunCheckpoint:
    """``RunCheckpoint(path, model=model, optimizer=optimizer, ...)``: save and restore those parts.

    ``on_load`` maps a part's name to a function applied to its saved state before it is loaded
    (e.g. rescaling a one-cycle schedule to a new number of steps). Parts are loaded in the order
    given (put an :class:`ExpectedValue` first). ``optional``: names of parts that an older file
    may lack (they keep their current state).
    """

    def __init__(
        self,
        path: str | Path,
        on_load: Optional[dict[str, Callable[[dict], dict]]] = None,
        optional: Iterable[str] = (),
        **parts,
    ) -> None:
        self.path = Path(path)
        self.parts = parts
        self.on_load = on_load or {}
        self.optional = set(optional)

    def load(self, device) -> Optional[tuple[int, Optional[float], float]]:
        """Restore every part from the file: ``(step, best, elapsed seconds)``, or None when there is no file."""
        if not self.path.is_file():
            return None
        what = f"checkpoint {self.path} is not one this program wrote"
        remedy = "delete it (or the whole run folder) to start afresh, or choose another run folder"
        try:
            with warnings.catch_warnings():  # torch warns about a foreign pickle's protocol before refusing it
                warnings.simplefilter("ignore")
                state = torch.load(self.path, map_location=device, weights_only=True)  # never unpickles code
        except Exception as err:  # UnpicklingError (a foreign pickle), RuntimeError/EOFError (corrupt, truncated)
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            raise InputError(f"{what} ({reason}); {remedy}") from None
        if not isinstance(state, dict) or "step" not in state:
            raise InputError(f"{what} (no training state in it); {remedy}")
        for name, part in self.parts.items():
            if name in self.optional and name not in state:
                continue
            if name not in state:
                raise InputError(f"{what} (it has no '{name}'); {remedy}")
            part.load_state_dict(self.on_load.get(name, lambda saved: saved)(state[name]))
        return int(state["step"]), state.get("best"), float(state.get("elapsed", 0.0))

    def save(self, step: int, best: Optional[float] = None, elapsed: float = 0.0) -> None:
        with atomic_write(self.path) as tmp:
            torch.save(
                {
                    **{name: part.state_dict() for name, part in self.parts.items()},
                    "step": step,
                    "best": best,
                    "elapsed": elapsed,
                },
                tmp,
            )
