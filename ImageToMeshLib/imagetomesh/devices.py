"""Where models run: :func:`resolve_device` turns a user's device choice into a ``torch.device``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagetomesh.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or ``None``, ``""``) -> cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device`` as given.

    Raises:
        InputError: an unknown device, or cuda without a CUDA GPU.
    """
    import torch

    if not device or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return dev
