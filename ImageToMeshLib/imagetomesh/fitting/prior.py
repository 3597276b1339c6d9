"""A DALS prior ready for fitting: the decoder, its mean training latent, and its card.

Priors are model folders (``model.safetensors`` + ``card.json`` with ``"kind": "dals"``) found
by :func:`imagetomesh.zoo.find_model`: a bundled name (``dals-hippocampus``, ``dals-kidney``)
or a folder path. The weights are checked against the card's checksum before loading.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from imagetomesh.errors import InputError
from imagetomesh.geometry.topology import icosphere, subdivide
from imagetomesh.models.dals import DALSConfig, DALSDecoder
from imagetomesh.weights import build_from_card, read_card
from imagetomesh.zoo import available_models, find_model

DALS_KIND = "dals"


@dataclass
class Prior:
    """A loaded DALS prior.

    Attributes:
        name: the model's name (folder name).
        decoder: :class:`DALSDecoder` in eval mode with frozen weights.
        mean_latent: ``(d,)`` mean of the training latents (where every fit starts).
        paired: True for a paired organ (kidney): fits also try the mirrored prior.
        card: the model card (empty for priors built in memory).
    """

    name: str
    decoder: DALSDecoder
    mean_latent: torch.Tensor
    paired: bool = False
    card: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.decoder.eval()
        for p in self.decoder.parameters():
            p.requires_grad_(False)
        self.mean_latent = torch.as_tensor(self.mean_latent, dtype=torch.float32).reshape(-1)
        if self.mean_latent.numel() != self.decoder.latent_dim:
            raise InputError(
                f"prior {self.name}: mean latent has {self.mean_latent.numel()} values, "
                f"the decoder expects {self.decoder.latent_dim}"
            )
        self._templates: dict = {}
        self._bf16_decoder: DALSDecoder | None = None

    @property
    def config(self) -> DALSConfig:
        return self.decoder.config

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def to(self, device: str | torch.device) -> Prior:
        device = torch.device(device)
        if device == self.device:
            return self
        return Prior(self.name, self.decoder.to(device), self.mean_latent.to(device), self.paired, self.card)

    def template(self, level: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit icosphere of ``level`` (default: the config's fitting level) on the prior's device."""
        level = self.config.fit_template_level if level is None else int(level)
        if level not in self._templates:
            verts, faces = icosphere(level)
            self._templates[level] = (verts.to(self.device), faces.to(self.device))
        return self._templates[level]

    def parent_edges(self, level: int) -> torch.Tensor:
        """``(E, 2)``: vertex ``N + e`` of the level-``level`` template is the midpoint of edge
        ``e`` of the level ``level - 1`` template (``N`` vertices); see ``subdivide``."""
        key = ("parents", int(level))
        if key not in self._templates:
            verts, faces = self.template(level - 1)
            *_, parents = subdivide(verts, faces)
            self._templates[key] = parents
        return self._templates[key]

    def bf16_decoder(self) -> DALSDecoder:
        """A bfloat16 copy of the decoder (made once): faster than autocasting on every call."""
        if self._bf16_decoder is None:
            self._bf16_decoder = copy.deepcopy(self.decoder).to(torch.bfloat16)
        return self._bf16_decoder


def dals_priors() -> list[str]:
    """Names of the installed models whose card says ``"kind": "dals"``."""
    names = []
    for name, folder in available_models().items():
        try:
            if read_card(folder).get("kind") == DALS_KIND:
                names.append(name)
        except InputError:
            continue
    return names


_CACHE: dict = {}


def load_prior(name_or_folder: str | Path | Prior, device: str | torch.device = "cpu") -> Prior:
    """Find, check and load a DALS prior (a :class:`Prior` passes through, moved to ``device``).

    Raises:
        InputError: unknown name (the message lists the installed DALS priors), a model of
            another kind, a card without the DALS entries, damaged weights.
    """
    if isinstance(name_or_folder, Prior):
        return name_or_folder.to(device)
    name = str(name_or_folder)
    try:
        folder = find_model(name)
    except InputError:
        known = ", ".join(dals_priors()) or "none installed"
        raise InputError(f"unknown prior {name!r}; available DALS priors: {known} (or give a prior's folder)") from None
    card = read_card(folder)
    if card.get("kind") != DALS_KIND:
        known = ", ".join(dals_priors()) or "none installed"
        raise InputError(
            f"model {folder.name} is a {card.get('kind', 'unknown')!r} model, not a DALS prior; "
            f"available DALS priors: {known}"
        )
    key = (str(Path(folder).resolve()), card.get("sha256"), str(torch.device(device)))
    if key in _CACHE:
        return _CACHE[key]
    decoder = build_from_card(
        folder, card, lambda c: DALSDecoder(DALSConfig(**c["config"])), required=("config", "mean_latent")
    )
    prior = Prior(
        folder.name,
        decoder.to(device),
        torch.tensor(card["mean_latent"]).to(device),
        bool(card.get("paired", False)),
        card,
    )
    _CACHE[key] = prior
    return prior
