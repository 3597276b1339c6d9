"""Model kinds by name: config class, module class, and how predictions become meshes."""
from __future__ import annotations

from torch import nn

from imagetomesh.models.nudf import NUDF, NUDFConfig
from imagetomesh.models.implicitmeshnet import ImplicitMeshNet, ImplicitMeshNetConfig
from imagetomesh.models.pixel2mesh3d import Pixel2Mesh3D, Pixel2Mesh3DConfig
from imagetomesh.models.unet_mc import UNetMC, UNetMCConfig
from imagetomesh.models.voxel2mesh import Voxel2Mesh, Voxel2MeshConfig

#: kind -> (config dataclass, nn.Module class)
MODEL_KINDS = {
    "voxel2mesh": (Voxel2MeshConfig, Voxel2Mesh),
    "pixel2mesh3d": (Pixel2Mesh3DConfig, Pixel2Mesh3D),
    "unet": (UNetMCConfig, UNetMC),
    "implicitmeshnet": (ImplicitMeshNetConfig, ImplicitMeshNet),
    "nudf": (NUDFConfig, NUDF),
}


def build_model(kind: str, config: dict) -> nn.Module:
    """Instantiate a model of ``kind`` from its config dict (as saved in a model card)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    config_cls, model_cls = MODEL_KINDS[kind]
    return model_cls(config_cls(**config))
