"""ImplicitMeshNet (Laves et al., MIDL 2025): template deformation trained from voxel labels
through a learned mesh-to-SDF network.

- Shape estimation ``f_theta`` (:class:`ImplicitMeshNet`): a 3D U-Net and a graph decoder of
  Chebyshev convolutions (K = 2) in ``stages`` stages. Stage s samples image features
  trilinearly at the vertices from two consecutive decoder levels, concatenates them with the
  vertex positions and the previous stage's hidden features, and moves every vertex by
  ``offset_scale`` times the predicted offset. The template is an icosphere (2562 vertices,
  radius 0.5 in the isotropic grid frame); the topology never changes, so every output is
  closed. This is the only part needed at inference.
- Deep representation ``g_phi`` (:class:`MeshToSDF`): a mesh encoder (Chebyshev graph
  convolution 3 -> C, then residual graph blocks with dropout) whose block outputs are splatted
  onto voxel grids of increasing resolution (:func:`imagetomesh.nn.splat.splat_features`) and
  decoded by a 3D conv decoder (residual blocks, group norm, SiLU, trilinear upsampling) into
  the signed distance field on the image grid, with one SDF head per level (deep supervision).
  It turns a mesh into something comparable with a voxel label, differentiably in the vertices.

Meshes live in model grid coordinates (x, y, z) in [-1, 1] like Voxel2Mesh's; distances,
offsets and the template radius are in the isotropic frame ``grid * isotropic_scale``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from imagetomesh.geometry.laplacian import taubin_smooth
from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.models.organ_decoders import checked_surface_offsets
from imagetomesh.models.protocol import INFERENCE_ONLY, DeformedTemplateModel
from imagetomesh.nn.feature_sampling import sample_features
from imagetomesh.nn.graph import ChebConv
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.nn.precision import float32_region
from imagetomesh.nn.splat import splat_features
from imagetomesh.nn.unet import UNet3D, UNetConfig


@dataclass
class ImplicitMeshNetConfig:
    """Architecture of ``f_theta``. ``stages`` graph stages use ``stages + 1`` finest decoder levels
    (stage s: levels s and s + 1 of them, coarsest first); ``graph_layers`` Chebyshev convolutions
    of order ``cheb_k`` per stage; ``template_level`` 4 = 2562 vertices; ``smooth_iterations`` > 0
    applies that many Taubin smoothing steps to the final mesh at inference (eval mode) only, and
    ``surface_offsets`` ``[d]`` then moves it ``d`` grid voxels along its outward vertex normals
    (:meth:`~imagetomesh.models.mesh_state.DecoderMesh.grown`), also at inference only: a size calibration
    chosen on the validation split (one value: one object; the list form is every mesh model's)."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    stages: int = 3
    hidden: int = 64
    graph_layers: int = 3
    cheb_k: int = 2
    template_level: int = 4
    template_radius: float = 0.5
    offset_scale: float = 0.1
    smooth_iterations: int = field(default=0, metadata=INFERENCE_ONLY)
    surface_offsets: Optional[list[float]] = field(default=None, metadata=INFERENCE_ONLY)

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if not 1 <= self.stages <= self.unet.depth - 1:
            raise ValueError(
                f"stages must be between 1 and the U-Net depth - 1 ({self.unet.depth - 1}), got {self.stages}"
            )
        if self.graph_layers < 2:
            raise ValueError(f"graph_layers must be >= 2, got {self.graph_layers}")
        self.surface_offsets = checked_surface_offsets(self.surface_offsets, 1)

    def to_dict(self) -> dict:
        return asdict(self)


class ChebStage(nn.Module):
    """One deformation stage: ``(N, [B,] cin)`` vertex inputs -> hidden ``(N, [B,] hidden)`` and offsets ``(N, [B,] 3)``."""

    def __init__(self, cin: int, hidden: int, layers: int, k: int) -> None:
        super().__init__()
        dims = [cin] + [hidden] * (layers - 1)
        self.convs = nn.ModuleList(ChebConv(a, b, k) for a, b in zip(dims[:-1], dims[1:]))
        self.offset = ChebConv(hidden, 3, k)
        for lin in self.offset.lins:
            nn.init.normal_(lin.weight, std=1e-3)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor):
        for conv in self.convs:
            x = F.leaky_relu(conv(x, edge_index), 0.01)
        return x, self.offset(x, edge_index)


class ImplicitMeshNet(nn.Module, DeformedTemplateModel):
    """``f_theta``: ``forward(image (B, 1, D, H, W))`` -> (U-Net logits, per-case list of stage meshes)."""

    def __init__(self, config: ImplicitMeshNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.unet = UNet3D(c.unet)
        levels = self.unet.decoder_channels[-(c.stages + 1) :]
        self.stages = nn.ModuleList(
            ChebStage(levels[s] + levels[s + 1] + 3 + (c.hidden if s else 0), c.hidden, c.graph_layers, c.cheb_k)
            for s in range(c.stages)
        )

    def template(self, grid_shape, device=None) -> DecoderMesh:
        """The icosphere template in grid coordinates (a sphere in the isotropic frame)."""
        scale = isotropic_scale(grid_shape).to(device)
        return DecoderMesh.template(self.config.template_level, self.config.template_radius / scale, device=device)

    def decode_mesh(self, decoder_features: list[torch.Tensor], grid_shape) -> list[DecoderMesh]:
        """Deform the template for a batch; ``decoder_features`` each ``(B, C, d, h, w)``, coarsest first.

        Returns ``[b][stage]`` meshes; all share the template's faces. Computed in float32 even under
        bf16 autocast (:func:`~imagetomesh.nn.precision.float32_region`): only the U-Net runs in bf16.
        """
        with float32_region(decoder_features[0].device):
            return self._decode_mesh([f.float() for f in decoder_features], grid_shape)

    def _decode_mesh(self, decoder_features: list[torch.Tensor], grid_shape) -> list[DecoderMesh]:
        c = self.config
        device = decoder_features[0].device
        scale = isotropic_scale(grid_shape).to(device)
        template = self.template(grid_shape, device)
        edge_index = template.edge_index
        levels = decoder_features[-(c.stages + 1) :]
        batch = levels[0].shape[0]
        verts = template.verts[None].expand(batch, -1, -1)
        hidden, out = None, [[] for _ in range(batch)]
        for s, stage in enumerate(self.stages):
            inputs = [sample_features(levels[s], verts), sample_features(levels[s + 1], verts), verts * scale]
            x = torch.cat(inputs + ([hidden] if hidden is not None else []), dim=-1)
            hidden, offsets = stage(x.transpose(0, 1), edge_index)  # (N, B, C): one graph for the batch
            hidden, offsets = hidden.transpose(0, 1), offsets.transpose(0, 1)
            verts = verts + c.offset_scale * offsets / scale
            if s == c.stages - 1 and c.smooth_iterations and not self.training:
                # uniform Laplacian smoothing acts per coordinate, so grid or isotropic frame alike
                verts = torch.stack([taubin_smooth(v, edge_index, c.smooth_iterations) for v in verts])
            for b in range(batch):
                out[b].append(DecoderMesh(verts[b], template.faces, template.sphere, hidden[b]))
        if c.surface_offsets is not None and not self.training:
            for stages in out:
                stages[-1] = stages[-1].grown(c.surface_offsets[0], grid_shape)
        return out

    def forward(self, image: torch.Tensor):
        logits, decoder = self.unet(image)
        return logits, self.decode_mesh(decoder, image.shape[2:])


# --- g_phi -------------------------------------------------------------------------------
@dataclass
class MeshToSDFConfig:
    """Architecture of ``g_phi``. ``channels`` of the conv decoder coarsest first: level l works at
    the grid shape divided by ``2 ** (len(channels) - 1 - l)``, and takes the splatted output of
    mesh-encoder block l; ``graph_channels`` C of the mesh encoder."""

    graph_channels: int = 32
    channels: tuple = (64, 32, 16, 8)
    dropout: float = 0.1
    cheb_k: int = 2

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) < 1 or min(self.channels) < 1:
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {self.channels}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class GraphResBlock(nn.Module):
    """``x + dropout(W2 act(W1 x))`` with Chebyshev graph convolutions and SiLU."""

    def __init__(self, channels: int, k: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = ChebConv(channels, channels, k)
        self.conv2 = ChebConv(channels, channels, k)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.conv2(F.silu(self.conv1(x, edge_index)), edge_index))


class ConvResBlock(nn.Module):
    """3D residual block: ``skip(x) + conv(SiLU(GN(conv(SiLU(GN(x))))))``; group norm of up to 8 groups."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(8, cin), cin)
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(math.gcd(8, cout), cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(y)))


def level_shapes(grid_shape, levels: int) -> list[tuple[int, int, int]]:
    """Grid shapes of ``levels`` decoder levels, coarsest first (the finest is ``grid_shape``)."""
    return [tuple(max(1, int(s) // 2 ** (levels - 1 - level)) for s in grid_shape) for level in range(levels)]


class MeshToSDF(nn.Module):
    """``g_phi``: ``forward(verts (B, N, 3) grid coordinates, edge_index (2, E), grid_shape)`` ->
    list of SDF maps ``(B, 1, d, h, w)``, coarsest first, the last on the full grid (isotropic
    grid units, negative inside). Under bf16 autocast the mesh encoder and the splatting stay
    float32 (:func:`~imagetomesh.nn.precision.float32_region`); only the conv decoder runs in bf16."""

    def __init__(self, config: MeshToSDFConfig) -> None:
        super().__init__()
        self.config = c = config
        g = c.graph_channels
        self.encode_in = ChebConv(3, g, c.cheb_k)
        self.blocks = nn.ModuleList(GraphResBlock(g, c.cheb_k, c.dropout) for _ in c.channels)
        self.project = nn.ModuleList(nn.Linear(g, ch) for ch in c.channels)
        self.decoder = nn.ModuleList(
            ConvResBlock(ch + (c.channels[level - 1] if level else 0), ch) for level, ch in enumerate(c.channels)
        )
        self.heads = nn.ModuleList(nn.Conv3d(ch, 1, 1) for ch in c.channels)

    def forward(self, verts: torch.Tensor, edge_index: torch.Tensor, grid_shape) -> list[torch.Tensor]:
        shapes = level_shapes(grid_shape, len(self.config.channels))
        with float32_region(verts.device):
            verts = verts.float()
            scale = isotropic_scale(grid_shape).to(verts)
            x = self.encode_in((verts * scale).transpose(0, 1), edge_index)  # (N, B, g): one graph for the batch
            splatted = []
            for block, project, shape in zip(self.blocks, self.project, shapes):
                x = block(x, edge_index)
                splatted.append(splat_features(project(x).transpose(0, 1), verts, shape))
        outputs, y = [], None
        for level, (grid, conv, head) in enumerate(zip(splatted, self.decoder, self.heads)):
            if y is not None:
                y = F.interpolate(y, size=shapes[level], mode="trilinear", align_corners=True)
                grid = torch.cat([grid.to(y.dtype), y], dim=1)
            y = conv(grid)
            outputs.append(head(y))
        return outputs
