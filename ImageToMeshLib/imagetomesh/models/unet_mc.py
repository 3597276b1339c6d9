"""The U-Net + marching-cubes baseline: voxel segmentation, then the labelmap -> surface path."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING
from imagetomesh.nn.unet import UNet3D, UNetConfig


@dataclass
class UNetMCConfig:
    """The U-Net and the surface extraction settings used at inference."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    smoothing: float = DEFAULT_SMOOTHING

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)

    def to_dict(self) -> dict:
        return asdict(self)


class UNetMC(nn.Module):
    """``forward(image (B, 1, D, H, W))`` -> (logits, None): no mesh decoder; meshing happens after."""

    def __init__(self, config: UNetMCConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet3D(config.unet)

    def forward(self, image: torch.Tensor):
        logits, _ = self.unet(image)
        return logits, None
