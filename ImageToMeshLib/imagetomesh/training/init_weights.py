"""Starting a model from another saved model: fine-tuning (same kind) or its U-Net only (another kind)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from imagetomesh.errors import InputError
from imagetomesh.weights import load_state, read_card


def init_from_model(
    model: torch.nn.Module,
    kind: str,
    folder: str | Path,
    log: Callable[[str], None] = print,
    organs: list[dict] | None = None,
) -> None:
    """Start ``model`` (of ``kind``) from the model saved in ``folder`` (checked weights): all of
    its tensors when that model is of the same kind (a fine-tuning run; ``model`` may have more, e.g.
    Voxel2Mesh's ``refine_stages``, which keep their fresh initialisation, and its U-Net's first convolution
    may read more input channels, the config's input windows, which start at zero: :func:`widen_input`),
    else only its ``unet.*`` tensors, the other parameters keeping their fresh initialisation. A several-organ
    ``model`` (its config's ``organs``) starts only from a model of the same organs (:func:`check_same_organs`)."""
    if organs:
        check_same_organs(folder, organs)
    card = read_card(folder)
    state = load_state(folder, card)
    if card.get("kind") == kind:
        ours = model.state_dict()
        widened = [k for k, v in state.items() if k in ours and ours[k].shape != v.shape]
        if any(k not in ours for k in state) or not all(_is_widened_input(k, state[k], ours[k]) for k in widened):
            raise InputError(
                f"{folder} is a {kind} model of another architecture than this config's; "
                f"fine-tune it with the config that trained it ({card.get('train_config', '?')})"
            )
        for k in widened:
            state[k] = widen_input(state[k], ours[k].shape[1])
        model.load_state_dict(state, strict=False)
        fresh = len(ours) - len(state)
        log(
            f"initialised all {len(state)} tensors from the {kind} model in {folder}"
            + (f" ({fresh} others fresh)" if fresh else "")
            + (f"; its first convolution widened to the config's input windows, at zero: {widened}" if widened else "")
        )
        return
    unet_state = {k: v for k, v in state.items() if k.startswith("unet.")}
    missing = model.load_state_dict(unet_state, strict=False)
    log(f"initialised {len(unet_state)} U-Net tensors from {folder} ({len(missing.missing_keys)} others fresh)")


def _is_widened_input(key: str, theirs: torch.Tensor, ours: torch.Tensor) -> bool:
    """Whether ``ours`` is the U-Net's first-level convolution ``theirs`` reading more input channels
    (the config adds input windows, :class:`imagetomesh.nn.unet.UNetConfig`), everything else equal."""
    return (
        ".down.0." in f".{key}"
        and theirs.dim() == ours.dim() == 5
        and ours.shape[1] > theirs.shape[1]
        and ours.shape[:1] + ours.shape[2:] == theirs.shape[:1] + theirs.shape[2:]
    )


def widen_input(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A convolution's ``(O, I, k, k, k)`` weights reading ``channels`` > I inputs: the first I as before, the
    new ones at zero, so the widened network computes what the saved one did until training moves them."""
    extra = weight.new_zeros((weight.shape[0], channels - weight.shape[1], *weight.shape[2:]))
    return torch.cat([weight, extra], dim=1)


def check_same_organs(folder: str | Path, organs: list[dict]) -> None:
    """:class:`InputError` unless the model saved in ``folder`` has the classes ``organs`` (names, in order):
    its U-Net's class ``k`` must be the config's organ ``k``."""
    theirs = [o.get("name") for o in read_card(folder).get("organs") or []]
    ours = [o["name"] for o in organs]
    if theirs != ours:
        raise InputError(
            f"{folder} has the classes {theirs or ['one object']}, this config the organs {ours}: "
            "start from a model trained on the same organs (e.g. unet-headneck-ct)"
        )


@torch.no_grad()
def restart_classes(head: torch.nn.Conv3d, classes: list[int], prior: float = 0.01) -> None:
    """Give each of ``classes`` (output channels of a segmentation ``head``, ``(C, F, 1, 1, 1)`` weights)
    the background's (class 0) weights and its bias plus ``log(prior)``: the class then has ``prior``
    times the background's probability at every voxel, whatever the features.

    For a fine-tuning run (``--init-from``) whose model never learned an organ: its logits there can
    sit ~15 nats below the background's, where the softmax is saturated and neither the soft Dice nor
    the small share of the organ's voxels in the cross-entropy moves it in a CPU budget. Restarted at
    a small prior (as rare classes are initialised from scratch), the class learns again from
    unsaturated gradients while the rest of the network keeps what it learned."""
    for k in classes:
        if not 0 < k < head.out_channels:
            raise ValueError(f"class {k} is not an organ class of a head with {head.out_channels} outputs")
        head.weight[k] = head.weight[0]
        head.bias[k] = head.bias[0] + torch.log(torch.tensor(float(prior)))
