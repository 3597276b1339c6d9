"""Segmenting model kinds by name: their config dataclass and model class (from :mod:`imagetomesh.kinds`).

How a kind's prediction becomes a mesh is the model class's own business: every class here is a
:class:`~imagetomesh.models.protocol.SegmentationModel` (``predict_meshes(images)`` -> meshes in
grid coordinates), which is all that inference uses. DALS, a shape prior rather than a segmenter,
is not a kind here.

A kind's module is imported only when a model of that kind is built (:func:`model_kind`), so a
U-Net or NUDF run does not import torch-geometric (the graph models' dependency, seconds of
start-up) or other kinds' code.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from imagetomesh.kinds import KINDS
from imagetomesh.models.protocol import SegmentationModel


class ModelKind(NamedTuple):
    """What a kind name stands for: ``config`` dataclass (built from a card's ``config`` dict) and
    ``model``, an ``nn.Module`` that is a :class:`SegmentationModel`."""

    config: type
    model: type[SegmentationModel]


#: segmenting kind -> ``"module:ConfigClass:ModelClass"`` (the model column of
#: :data:`imagetomesh.kinds.KINDS`; priors have none), imported on first use
MODEL_KINDS: dict[str, str] = {kind: entry.model for kind, entry in KINDS.items() if entry.model}


def model_kind(kind: str) -> ModelKind:
    """The :class:`ModelKind` of ``kind`` (imports its module); ValueError lists the known kinds."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    module_name, config_name, model_name = MODEL_KINDS[kind].split(":")
    module = importlib.import_module(module_name)
    return ModelKind(getattr(module, config_name), getattr(module, model_name))


def build_model(kind: str, config: dict) -> SegmentationModel:
    """Instantiate a model (an ``nn.Module``) of ``kind`` from its config dict (as saved in a model card)."""
    entry = model_kind(kind)
    return entry.model(entry.config(**config))
