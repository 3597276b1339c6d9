"""The bundled model registry: ``Resources/Models/<name>/{model.safetensors,card.json}``.

Listing models needs no torch; loading one imports it.

Models are looked up in the folders of ``$IMAGETOMESH_MODEL_PATH`` (``os.pathsep``-separated),
then in the extension's ``Resources/Models``. A model can also be named by its folder path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imagetomesh.devices import resolve_device
from imagetomesh.errors import InputError
from imagetomesh.weights import CARD_NAME, SEGMENTER_FIELDS, build_from_card, check_card_fields, read_card

if TYPE_CHECKING:
    import torch

__all__ = [
    "RESOURCES",
    "model_search_path",
    "available_models",
    "list_models",
    "find_model",
    "LoadedModel",
    "load_model",
    "ensemble_unet",
    "resolve_device",
]

#: ``Resources/`` of the source tree or the installed Slicer extension.
RESOURCES = Path(__file__).resolve().parents[2] / "Resources"


def model_search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("IMAGETOMESH_MODEL_PATH", "").split(os.pathsep) if p]
    return extra + [RESOURCES / "Models"]


def available_models() -> dict[str, Path]:
    """``{name: folder}`` of every model folder (one holding a card) on the search path; first wins."""
    found: dict[str, Path] = {}
    for root in model_search_path():
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / CARD_NAME).is_file() and folder.name not in found:
                    found[folder.name] = folder
    return found


def list_models() -> list[dict]:
    """Every model on the search path with its card: ``[{name, folder, kind, card}]`` (segmenters and priors).

    A model whose card cannot be read is listed with kind ``unknown`` and the reason in ``card["error"]``.
    """
    out = []
    for name, folder in available_models().items():
        try:
            card = read_card(folder)
        except InputError as err:
            card = {"kind": "unknown", "error": str(err)}
        out.append({"name": name, "folder": str(folder), "kind": str(card.get("kind", "unknown")), "card": card})
    return out


def find_model(name: str) -> Path:
    """The folder of model ``name`` (a bundled name or a folder path); :class:`InputError` lists the known ones."""
    path = Path(name)
    if path.is_dir() and (path / CARD_NAME).is_file():
        return path
    models = available_models()
    if name in models:
        return models[name]
    known = ", ".join(models) or "none installed"
    raise InputError(f"unknown model {name!r}; available models: {known} (see 'imagetomesh models')")


@dataclass
class LoadedModel:
    """A model ready for inference: its name, card, ``nn.Module`` (eval mode) and device."""

    name: str
    card: dict
    module: torch.nn.Module
    device: torch.device

    @property
    def kind(self) -> str:
        return self.card["kind"]


def load_model(name: str, device: str = "auto") -> LoadedModel:
    """Find, check (safetensors + checksum) and instantiate a model for inference."""
    from imagetomesh.models.registry import build_model

    folder = find_model(name)
    card = read_card(folder)
    if card["kind"] == "dals":
        raise InputError(
            f"{folder.name} is a DALS shape prior, not a segmentation model; use it with "
            f"'imagetomesh fit points|curves --prior {folder.name}' or 'imagetomesh refine --prior {folder.name}'"
        )
    check_card_fields(card, folder / CARD_NAME, SEGMENTER_FIELDS)
    module = build_from_card(folder, card, lambda c: build_model(c["kind"], c["config"]), required=("kind", "config"))
    dev = resolve_device(device)
    return LoadedModel(folder.name, card, module.to(dev).eval(), dev)


def ensemble_unet(name: str, owner: str, organs: list[dict], grid: dict, device: str, remedy: str) -> torch.nn.Module:
    """The U-Net of several-organ model ``name`` (eval mode, on ``device``), for averaging its class probabilities
    with those of ``owner``'s (a model or training run finding ``organs`` ``[{name, label}]`` on the grid ``grid``,
    a card's grid dict): :class:`InputError` unless ``name`` finds the same organs, with the same labels, on the
    same grid (the error ends with ``remedy``, what to do)."""
    from imagetomesh.preprocessing import GridSpec

    member = load_model(name, device)
    ours = [(o["name"], o["label"]) for o in organs]
    theirs = [(o.get("name"), o.get("label")) for o in member.card.get("organs") or []]
    if theirs != ours or GridSpec.from_dict(member.card["grid"]) != GridSpec.from_dict(grid):
        raise InputError(
            f"{owner} averages its U-Net with {name}'s, which finds other organs or works on another grid; {remedy}"
        )
    return member.module.unet
