"""The U-Net + marching-cubes baseline: voxel segmentation, then the labelmap -> surface path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import GridTransform, grid_volume
from imagetomesh.errors import InputError
from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING, labelmap_to_mesh
from imagetomesh.models.protocol import SegmentationModel
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
        argmax label (:func:`~imagetomesh.geometry.isosurface.labelmap_to_mesh`, ``config.smoothing``)."""
        self._check_open_surface(open_surface)
        logits, _ = self(images)
        meshes = []
        for mask in logits.argmax(1).to(torch.uint8).cpu().numpy():
            if not mask.any():
                raise InputError(
                    "the model found no object in the image; check that it shows the organ the model was trained on"
                )
            on_grid = grid_volume(mask, GridTransform(np.eye(4), mask.shape))  # its "LPS" is grid coordinates
            meshes.append(labelmap_to_mesh(on_grid, smoothing=self.config.smoothing))
        return meshes
