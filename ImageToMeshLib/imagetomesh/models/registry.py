"""Model kinds by name: config class, module class, and how predictions become meshes.

A kind's module is imported when a model of that kind is built, so a U-Net or NUDF run does not
import torch-geometric (the graph models' dependency, seconds of start-up) or other kinds' code.
"""
from __future__ import annotations

import importlib

from torch import nn

#: kind -> (module, config dataclass name, nn.Module class name)
MODEL_KINDS = {
    "voxel2mesh": ("imagetomesh.models.voxel2mesh", "Voxel2MeshConfig", "Voxel2Mesh"),
    "pixel2mesh3d": ("imagetomesh.models.pixel2mesh3d", "Pixel2Mesh3DConfig", "Pixel2Mesh3D"),
    "unet": ("imagetomesh.models.unet_mc", "UNetMCConfig", "UNetMC"),
    "implicitmeshnet": ("imagetomesh.models.implicitmeshnet", "ImplicitMeshNetConfig", "ImplicitMeshNet"),
    "nudf": ("imagetomesh.models.nudf", "NUDFConfig", "NUDF"),
}


def build_model(kind: str, config: dict) -> nn.Module:
    """Instantiate a model of ``kind`` from its config dict (as saved in a model card)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    module_name, config_name, model_name = MODEL_KINDS[kind]
    module = importlib.import_module(module_name)
    return getattr(module, model_name)(getattr(module, config_name)(**config))
