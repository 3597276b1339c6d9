"""Starting a model from another saved model: fine-tuning (same kind) or its U-Net only (another kind)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from imagetomesh.errors import InputError
from imagetomesh.weights import load_state, read_card


def init_from_model(model: torch.nn.Module, kind: str, folder: str | Path, log: Callable[[str], None] = print) -> None:
    """Start ``model`` (of ``kind``) from the model saved in ``folder`` (checked weights): all of
    its tensors when that model is of the same kind (a fine-tuning run), else only its ``unet.*``
    tensors, the other parameters keeping their fresh initialisation."""
    card = read_card(folder)
    state = load_state(folder, card)
    if card.get("kind") == kind:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise InputError(
                f"{folder} is a {kind} model of another architecture than this config's; "
                f"fine-tune it with the config that trained it ({card.get('train_config', '?')})"
            ) from err
        log(f"initialised all {len(state)} tensors from the {kind} model in {folder}")
        return
    unet_state = {k: v for k, v in state.items() if k.startswith("unet.")}
    missing = model.load_state_dict(unet_state, strict=False)
    log(f"initialised {len(unet_state)} U-Net tensors from {folder} ({len(missing.missing_keys)} others fresh)")
