"""Pixel2Mesh-3D: the 3D extension of Pixel2Mesh (Wang et al., ECCV 2018), Voxel2Mesh's baseline.

Perceptual feature pooling samples every U-Net level at each vertex; three G-ResNet blocks
(graph residual convolutions, 128-wide hidden features, a coordinate branch) deform an
icosphere, with uniform edge-midpoint unpooling between blocks (162 -> 642 -> 2562 vertices).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import nn

from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.models.organ_decoders import checked_surface_offsets
from imagetomesh.models.protocol import INFERENCE_ONLY, DeformedTemplateModel
from imagetomesh.nn.feature_sampling import sample_features
from imagetomesh.nn.graph import GraphConv
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.nn.unet import UNet3D, UNetConfig


@dataclass
class Pixel2Mesh3DConfig:
    """``blocks`` G-ResNet blocks of ``residual_blocks`` residual pairs, ``hidden`` wide. ``surface_offsets``
    ``[d]`` (set in the card, chosen on validation) moves the last block's mesh ``d`` grid voxels along its
    outward vertex normals at inference (:meth:`~imagetomesh.models.mesh_state.DecoderMesh.grown`); training
    never reads it."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    blocks: int = 3
    residual_blocks: int = 6
    hidden: int = 128
    template_level: int = 2
    template_radius: float = 0.35
    surface_offsets: Optional[list[float]] = field(default=None, metadata=INFERENCE_ONLY)

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.blocks < 1 or self.residual_blocks < 1:
            raise ValueError("Pixel2Mesh3D needs at least one block and one residual pair")
        self.surface_offsets = checked_surface_offsets(self.surface_offsets, 1)

    def to_dict(self) -> dict:
        return asdict(self)


class GResBlock(nn.Module):
    """Two graph convolutions with a skip connection: ``x + conv2(relu(conv1(x)))``, then ReLU."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = GraphConv(width, width)
        self.conv2 = GraphConv(width, width)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index))


class GResNet(nn.Module):
    """One deformation block: input conv, residual blocks, and a coordinate branch giving offsets."""

    def __init__(self, cin: int, hidden: int, n_residual: int) -> None:
        super().__init__()
        self.inp = GraphConv(cin, hidden)
        self.res = nn.ModuleList(GResBlock(hidden) for _ in range(n_residual))
        self.coords = GraphConv(hidden, 3)
        nn.init.normal_(self.coords.lin_root.weight, std=1e-3)
        nn.init.zeros_(self.coords.lin_rel.bias)
        nn.init.normal_(self.coords.lin_rel.weight, std=1e-3)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.inp(x, edge_index))
        for block in self.res:
            x = block(x, edge_index)
        return x, self.coords(x, edge_index)


class Pixel2Mesh3D(nn.Module, DeformedTemplateModel):
    """U-Net + G-ResNet mesh decoder. ``forward(image)`` -> (logits, per-case list of block meshes)."""

    def __init__(self, config: Pixel2Mesh3DConfig) -> None:
        super().__init__()
        self.config = c = config
        self.unet = UNet3D(c.unet)
        pooled = sum(self.unet.encoder_channels) + sum(self.unet.decoder_channels)
        self.blocks = nn.ModuleList(
            GResNet(pooled + 3 + (0 if i == 0 else c.hidden), c.hidden, c.residual_blocks) for i in range(c.blocks)
        )

    def decode_mesh(self, features: list[torch.Tensor], grid_shape) -> list[DecoderMesh]:
        """``features``: every U-Net level for one case, each ``(1, C, d, h, w)``."""
        c = self.config
        scale = isotropic_scale(grid_shape).to(features[0].device)
        mesh = DecoderMesh.template(c.template_level, c.template_radius / scale, device=scale.device)
        meshes = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                mesh = mesh.subdivided()
            pooled = torch.cat([sample_features(f, mesh.verts[None])[0] for f in features], dim=1)
            inputs = [pooled, mesh.verts] + ([mesh.features] if mesh.features is not None else [])
            hidden, offsets = block(torch.cat(inputs, dim=1), mesh.edge_index)
            mesh = DecoderMesh(mesh.verts + offsets, mesh.faces, mesh.sphere, hidden, None, start=mesh.verts)
            meshes.append(mesh)
        if c.surface_offsets is not None and not self.training:
            meshes[-1] = meshes[-1].grown(c.surface_offsets[0], grid_shape)
        return meshes

    def forward(self, image: torch.Tensor):
        logits, decoder, encoder = self.unet(image, return_encoder=True)
        levels = encoder + decoder
        meshes = [self.decode_mesh([f[b : b + 1] for f in levels], image.shape[2:]) for b in range(image.shape[0])]
        return logits, meshes
