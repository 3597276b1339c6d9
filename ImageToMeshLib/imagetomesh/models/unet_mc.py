"""The U-Net + marching-cubes baseline: voxel segmentation, then the labelmap -> surface path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING
from imagetomesh.models.protocol import SegmentationModel
from imagetomesh.nn.unet import UNet3D, UNetConfig
from imagetomesh.voxel_meshing import grid_mask_mesh


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


class UNetMC(nn.Module, SegmentationModel):
    """``forward(image (B, 1, D, H, W))`` -> (logits, None): no mesh decoder; :meth:`predict_meshes`
    meshes the voxel segmentation."""

    def __init__(self, config: UNetMCConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet3D(config.unet)

    def forward(self, image: torch.Tensor):
        logits, _ = self.unet(image)
        return logits, None

    def predict_meshes(self, images: torch.Tensor, open_surface: bool = False) -> list[Mesh]:
        """``images (B, C, D, H, W)`` -> ``B`` closed meshes in grid coordinates: marching cubes of each
        argmax label (:func:`~imagetomesh.voxel_meshing.grid_mask_mesh`, ``config.smoothing``)."""
        self._check_open_surface(open_surface)
        logits, _ = self(images)
        return [grid_mask_mesh(mask, self.config.smoothing) for mask in logits.argmax(1).cpu().numpy()]
