"""Segmenting model kinds by name: their config dataclass and model class.

How a kind's prediction becomes a mesh is the model class's own business: every class here is a
:class:`~imagetomesh.models.protocol.SegmentationModel` (``predict_meshes(images)`` -> meshes in
grid coordinates), which is all that inference uses. DALS, a shape prior rather than a segmenter,
is not a kind here.
"""
from __future__ import annotations

from typing import NamedTuple

from imagetomesh.models.implicitmeshnet import ImplicitMeshNet, ImplicitMeshNetConfig
from imagetomesh.models.nudf import NUDF, NUDFConfig
from imagetomesh.models.pixel2mesh3d import Pixel2Mesh3D, Pixel2Mesh3DConfig
from imagetomesh.models.protocol import SegmentationModel
from imagetomesh.models.unet_mc import UNetMC, UNetMCConfig
from imagetomesh.models.voxel2mesh import Voxel2Mesh, Voxel2MeshConfig


class ModelKind(NamedTuple):
    """What a kind name stands for: ``config`` dataclass (built from a card's ``config`` dict) and
    ``model``, an ``nn.Module`` that is a :class:`SegmentationModel`."""

    config: type
    model: type[SegmentationModel]


#: kind -> :class:`ModelKind`
MODEL_KINDS: dict[str, ModelKind] = {
    "voxel2mesh": ModelKind(Voxel2MeshConfig, Voxel2Mesh),
    "pixel2mesh3d": ModelKind(Pixel2Mesh3DConfig, Pixel2Mesh3D),
    "unet": ModelKind(UNetMCConfig, UNetMC),
    "implicitmeshnet": ModelKind(ImplicitMeshNetConfig, ImplicitMeshNet),
    "nudf": ModelKind(NUDFConfig, NUDF),
}


def build_model(kind: str, config: dict) -> SegmentationModel:
    """Instantiate a model (an ``nn.Module``) of ``kind`` from its config dict (as saved in a model card)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    config_cls, model_cls = MODEL_KINDS[kind]
    return model_cls(config_cls(**config))
