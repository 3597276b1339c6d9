"""Voxel2Mesh (Wickramasinghe et al., MICCAI 2020): a U-Net plus a mesh decoder that deforms
an icosphere stage by stage, one stage per decoder level.

At stage l each vertex gathers image features (point sampling, fixed hypothesis sampling or
learned neighbourhood sampling, LNS), then
``z_l = h_l(x_l, z_{l-1}, v_{l-1})`` and ``v_l = v_{l-1} + Delta_l(z_l)``, where h_l and
Delta_l are four distance-weighted graph convolutions each. Between stages the mesh is
unpooled uniformly (UMU) or adaptively (AMU: new vertices that stay close to their parent
edge are dropped and connectivity is rebuilt from the template sphere). Optional refinement
stages (``refine_stages``, not in the paper) repeat the last stage's step on the finest level
without unpooling: each gathers features again where the previous stage left the vertices.
Head probabilities (``head_probabilities``, not in the paper): every stage also reads the U-Net head's
probability of its object around each vertex (:class:`HeadGather`), the information ``segment --snap`` moves
vertices with after the fact, here an input the decoder learns to use.

Several organs (``organ_templates``): one mesh decoder per organ, as the paper does for several
classes, all reading the same U-Net (whose classes are the organs). Each organ is meshed in a crop
around it (:func:`imagetomesh.scan.crop_padded`; in training :mod:`imagetomesh.training.organ_crops`),
its decoder starting from an ellipsoid of the organ's typical size there. With ``context_margin`` m the
U-Net reads the crop grown by m voxels on every side (the model's input) and the decoder sees the centre:
a U-Net run on a tight crop alone loses its context (the head-and-neck brainstem's voxel Dice in its
validation crops: 0.738 alone, 0.807 with 8 voxels around it, 0.83 on the whole scan).

Surface start (``start="unet_surface"``, a variant, not the paper's template): each decoder starts from its
own U-Net's mesh of the object in the image it is given (the organ's class probability there, meshed as
``segment`` meshes a U-Net's organ: :func:`imagetomesh.voxel_meshing.voxel_organ_mesh`; a one-object model's
as U-Net + MC meshes its labelmap: :func:`imagetomesh.voxel_meshing.grid_mask_mesh`), and its stages
move that surface without unpooling (``unpooling="none"``): the decoder learns corrections to the U-Net's
surface rather than the whole shape. Where the U-Net finds no such object, the template is the start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import torch
from torch import nn

from imagetomesh.core.mesh import Mesh
from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.models.organ_decoders import centre_crop, check_organ_crops, checked_surface_offsets, organ_index
from imagetomesh.models.protocol import INFERENCE_ONLY, DeformedTemplateModel, last_stage_meshes
from imagetomesh.nn.feature_sampling import neighbourhood_offsets, sample_features
from imagetomesh.nn.graph import DistanceWeightedGraphConv
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.nn.linear import relu_linear_of_concat
from imagetomesh.nn.unet import UNet3D, UNetConfig

SAMPLING_MODES = ("lns", "hs", "ps")
UNPOOLING_MODES = ("adaptive", "uniform", "none")
START_MODES = ("template", "unet_surface")


@dataclass
class Voxel2MeshConfig:
    """Architecture of :class:`Voxel2Mesh`.

    ``stages`` mesh stages use the finest ``stages`` decoder levels (coarsest first);
    ``template_level`` 2 is the 162-vertex icosphere; ``template_radius`` is in isotropic
    grid units (see :func:`~imagetomesh.nn.grid.isotropic_scale`); ``amu_threshold`` likewise
    (a new vertex closer than it to its parent edge is dropped). 0.001 (~0.03 voxel) was chosen on the hippocampus
    validation split: with the step-4050 weights 0.003 / 0.001 / 0.0003 kept 414 / 1062 / 1936 of
    2562 vertices at IoU 0.774 / 0.781 / 0.783 (uniform unpooling: 0.783).

    ``unpooling`` ``"none"`` keeps the starting mesh's vertices through every stage (the surface start's).
    ``start`` ``"template"`` (the paper's) starts each case from the icosphere or organ template;
    ``"unet_surface"`` from the U-Net's own surface of the object in the image (see the module docstring),
    with ``unpooling="none"`` (an unpooled marching-cubes mesh would quadruple its vertices per stage).

    ``context_margin`` (several organs): voxels of image around an organ's crop on every side that the U-Net
    reads; the model's input is then the crop grown by it (:func:`~imagetomesh.models.organ_decoders.context_shape`),
    its logits and meshes are those of the crop at the centre. A multiple of the U-Net's poolings.

    ``refine_stages`` more stages follow the last one on the finest decoder level, on the same
    vertices (no unpooling; adaptive pruning then comes after the last of them): each gathers the
    image features again at the vertices' new positions and moves them once more.

    ``head_probabilities``: each stage adds to the image features it gathers at a vertex those of the U-Net
    head's probability of the decoder's object (class 1, or organ ``k``) around it (:class:`HeadGather`;
    the probabilities are read, not trained through: the head learns from the voxel loss only).

    ``organ_templates`` (several organs): organ ``k``'s decoder (``organ=k``, class ``k`` of the U-Net)
    starts from an ellipsoid of semi-axes ``organ_templates[k - 1]`` ``(x, y, z)`` in the grid
    coordinates of its crop, ``organ_crops[k - 1]`` ``(d, h, w)`` voxels of the model's grid around the
    organ (``template_radius`` is then unused); None: one object, one decoder. ``organ_arcs[k - 1]``
    ``[angle_deg, thickness_y, thickness_z]`` bends organ ``k``'s ellipsoid into a horseshoe
    (:func:`~imagetomesh.models.mesh_state.arc_sphere`; the mandible), None keeps it an ellipsoid.

    ``move_scales`` (surface start with several organs; set in the card, chosen on validation scans): organ
    ``k``'s returned mesh is ``start + move_scales[k - 1] (v - start)`` at inference, with ``v`` its last stage's
    vertices: 1 the decoder's mesh, 0 its start (the U-Net's surface), between them its moves shortened. None: 1
    for every organ; a decoder that started from the template (no surface found) is not scaled. Training never
    reads it.

    ``surface_offsets`` (set in the card, chosen on validation): organ ``k``'s returned mesh (the one object's: a
    single value) is moved ``surface_offsets[k - 1]`` voxels of its grid along its outward vertex normals at
    inference, after ``move_scales`` (:meth:`~imagetomesh.models.mesh_state.DecoderMesh.grown`; negative: inward).
    None: not moved. Training never reads it.

    ``extent_margin_slices`` (several organs; set in the card, chosen on validation): ``segment`` keeps each organ's
    mesh within this many slices of the first and last slices that hold the localiser's voxels of the organ along the
    scan grid's slice (body) axis, moving the vertices beyond onto those planes
    (:func:`~imagetomesh.scan.within_slices`; NUDF's meshing region has the same margin along that axis). Where
    planners end a tube, a decoder that carried its end further lost it (the oesophagus). None: not kept. Training
    never reads it.
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    stages: int = 3
    hidden: int = 64
    template_level: int = 2
    template_radius: float = 0.35
    sampling: str = "lns"
    unpooling: str = "adaptive"
    num_offsets: int = 27
    amu_threshold: float = 0.001
    graph_layers: int = 4
    refine_stages: int = 0
    head_probabilities: bool = False
    organ_templates: Optional[list[list[float]]] = None
    organ_crops: Optional[list[list[int]]] = None
    organ_arcs: Optional[list[Optional[list[float]]]] = None
    start: str = "template"
    context_margin: int = 0
    move_scales: Optional[list[float]] = field(default=None, metadata=INFERENCE_ONLY)
    surface_offsets: Optional[list[float]] = field(default=None, metadata=INFERENCE_ONLY)
    extent_margin_slices: Optional[float] = field(default=None, metadata=INFERENCE_ONLY)

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if self.unpooling not in UNPOOLING_MODES:
            raise ValueError(f"unpooling must be one of {UNPOOLING_MODES}, got {self.unpooling!r}")
        if self.start not in START_MODES:
            raise ValueError(f"start must be one of {START_MODES}, got {self.start!r}")
        if self.start == "unet_surface" and self.unpooling != "none":
            raise ValueError(
                f"start unet_surface deforms the U-Net's marching-cubes surface without unpooling: set unpooling "
                f"to 'none' (got {self.unpooling!r})"
            )
        if not 1 <= self.stages <= self.unet.depth:
            raise ValueError(f"stages must be between 1 and the U-Net depth {self.unet.depth}, got {self.stages}")
        if self.refine_stages < 0:
            raise ValueError(f"refine_stages must be 0 or more, got {self.refine_stages}")
        if self.organ_templates is not None:
            if len(self.organ_templates) != self.unet.num_classes - 1:
                raise ValueError(
                    f"organ_templates gives {len(self.organ_templates)} organs for a U-Net of "
                    f"{self.unet.num_classes - 1} organ classes: give one (x, y, z) semi-axes triple per organ"
                )
            if any(len(r) != 3 or min(r) <= 0 for r in self.organ_templates):
                raise ValueError(f"organ_templates must be positive (x, y, z) semi-axes, got {self.organ_templates}")
            check_organ_crops(
                self.organ_crops or [], len(self.organ_templates), 2 ** (self.unet.depth - 1), "the U-Net's poolings"
            )
            arcs = self.organ_arcs
            if arcs is not None and (
                len(arcs) != len(self.organ_templates)
                or any(a is not None and (len(a) != 3 or not 0 < a[0] < 180 or not 0 < min(a[1:]) <= 1) for a in arcs)
            ):
                raise ValueError(
                    "organ_arcs must give, per organ, null or [angle_deg in (0, 180), thickness_y and thickness_z "
                    f"in (0, 1]], got {arcs}"
                )
        elif self.organ_crops is not None or self.organ_arcs is not None:
            raise ValueError("organ_crops and organ_arcs need organ_templates (one template per organ)")
        if self.move_scales is not None and (
            self.start != "unet_surface" or len(self.move_scales) != self.organs or min(self.move_scales) < 0
        ):
            raise ValueError(
                "move_scales scales a surface-start decoder's moves: give one scale >= 0 per organ of a model with "
                f"start 'unet_surface' and organ_templates, got {self.move_scales}"
            )
        self.surface_offsets = checked_surface_offsets(self.surface_offsets, max(self.organs, 1))
        factor = 2 ** (self.unet.depth - 1)
        if self.context_margin < 0 or self.context_margin % factor or (self.context_margin and not self.organs):
            raise ValueError(
                f"context_margin must be 0 or, for a model with organ_crops, a positive multiple of {factor} "
                f"(the U-Net's poolings), got {self.context_margin}"
            )
        if self.extent_margin_slices is not None and (not self.organs or not self.extent_margin_slices >= 0):
            raise ValueError(
                "extent_margin_slices keeps each organ's mesh near its localiser's voxels: give a number of slices "
                f">= 0 for a model with organ_templates, got {self.extent_margin_slices}"
            )

    def per_stage(self, levels: list) -> list:
        """What each mesh stage reads of ``levels`` (one item per decoder level, coarsest first: channel counts
        or feature maps): the finest ``stages`` levels, then the finest again for each of ``refine_stages``."""
        finest = list(levels[-self.stages :])
        return finest + finest[-1:] * self.refine_stages

    @property
    def organs(self) -> int:
        """Number of organ decoders (0: one object)."""
        return len(self.organ_templates) if self.organ_templates else 0

    def to_dict(self) -> dict:
        return asdict(self)


class FeatureGather(nn.Module):
    """Gathers image features at vertices: point (PS), fixed 27-neighbourhood (HS) or learned (LNS).

    Returns ``(N, hidden)``.
    """

    def __init__(self, channels: int, hidden: int, mode: str, num_offsets: int) -> None:
        super().__init__()
        self.mode = mode
        self.num_offsets = num_offsets if mode == "lns" else 27
        if mode == "lns":
            self.offset_net = nn.Linear(channels + 3, 3 * num_offsets)
            nn.init.zeros_(self.offset_net.weight)
            nn.init.zeros_(self.offset_net.bias)
        if mode in ("lns", "hs"):
            self.per_offset = nn.Sequential(nn.Linear(channels + 3, hidden), nn.ReLU(inplace=True))
            self.combine = nn.Linear(hidden + channels + 3, hidden)
        else:
            self.combine = nn.Linear(channels + 3, hidden)

    def forward(self, features: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
        """``features`` ``(1, C, D, H, W)``; ``verts`` ``(N, 3)`` grid coordinates."""
        y = sample_features(features, verts[None])[0]
        if self.mode == "ps":
            return self.combine(torch.cat([y, verts], dim=1))
        if self.mode == "lns":
            offsets = self.offset_net(torch.cat([y, verts], dim=1)).view(-1, self.num_offsets, 3)
            # zero-initialised predictions start at the fixed neighbourhood, then learn to move
            size = torch.tensor(features.shape[2:][::-1], device=verts.device)
            offsets = offsets + neighbourhood_offsets(1.0, size).to(verts)[None, : self.num_offsets]
        else:
            size = torch.tensor(features.shape[2:][::-1], device=verts.device)
            offsets = neighbourhood_offsets(1.0, size).to(verts)[None].expand(len(verts), -1, -1)
        points = (verts[:, None, :] + offsets).reshape(1, -1, 3)
        samples = sample_features(features, points)[0]  # (N * K, C)
        # self.per_offset is Linear + ReLU
        per_offset = relu_linear_of_concat(self.per_offset[0], samples, offsets.reshape(-1, 3))
        pooled = per_offset.view(len(verts), offsets.shape[1], -1).mean(dim=1)
        return self.combine(torch.cat([pooled, y, verts], dim=1))


class HeadGather(nn.Module):
    """Features of the U-Net head's probability of an object around each vertex: the probability sampled at the
    27 points of the vertex's 3 x 3 x 3 neighbourhood at each of ``RADII`` voxels (of the head's grid), as
    ``2 p - 1``, through two linear layers. The second starts at zero, so a model grown by this module (a
    fine-tuning from one without it) computes what it did until training moves it. Returns ``(N, hidden)``."""

    RADII = (0.5, 1.0)

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(27 * len(self.RADII), hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden)
        )
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, probability: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
        """``probability`` ``(1, 1, D, H, W)``; ``verts`` ``(N, 3)`` grid coordinates."""
        size = torch.tensor(probability.shape[2:][::-1], device=verts.device)
        offsets = torch.cat([neighbourhood_offsets(r, size) for r in self.RADII]).to(verts)
        points = (verts[:, None, :] + offsets[None]).reshape(1, -1, 3)
        p = sample_features(probability, points)[0].view(len(verts), len(offsets))
        return self.net(2 * p - 1)


class GraphStack(nn.Module):
    """``n`` distance-weighted graph convolutions with ReLU between them."""

    def __init__(self, cin: int, hidden: int, cout: int, n: int) -> None:
        super().__init__()
        dims = [cin] + [hidden] * (n - 1) + [cout]
        self.layers = nn.ModuleList(DistanceWeightedGraphConv(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, edge_index, positions)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class MeshStage(nn.Module):
    """One Voxel2Mesh stage: gather features, update latent ``z``, move vertices."""

    def __init__(self, channels: int, config: Voxel2MeshConfig, first: bool) -> None:
        super().__init__()
        h = config.hidden
        self.gather = FeatureGather(channels, h, config.sampling, config.num_offsets)
        self.head_gather = HeadGather(h) if config.head_probabilities else None
        self.h = GraphStack(h + (0 if first else h) + 3, h, h, config.graph_layers)
        self.delta = GraphStack(h, h, 3, config.graph_layers)
        last = self.delta.layers[-1]
        nn.init.normal_(last.lin_root.weight, std=1e-3)
        nn.init.zeros_(last.lin_rel.bias)
        nn.init.normal_(last.lin_rel.weight, std=1e-3)

    def forward(self, mesh: DecoderMesh, features: torch.Tensor, head: torch.Tensor | None = None) -> DecoderMesh:
        """``features`` ``(1, C, d, h, w)`` of the stage's level; ``head`` ``(1, 1, D, H, W)`` the head's probability
        of the object (read only with ``head_probabilities``)."""
        edge_index = mesh.edge_index
        x = self.gather(features, mesh.verts)
        if self.head_gather is not None:
            if head is None:
                raise ValueError("this decoder reads the head's probabilities (head_probabilities): pass them")
            x = x + self.head_gather(head, mesh.verts)
        inputs = [x] + ([mesh.features] if mesh.features is not None else []) + [mesh.verts]
        z = torch.relu(self.h(torch.cat(inputs, dim=1), edge_index, mesh.verts))
        verts = mesh.verts + self.delta(z, edge_index, mesh.verts)
        return DecoderMesh(verts, mesh.faces, mesh.sphere, z, mesh.parent_edges)


class Voxel2Mesh(nn.Module, DeformedTemplateModel):
    """U-Net + mesh decoder. ``forward(image (B, 1, D, H, W), organ=None)`` -> (logits, per-case list of
    stage meshes); ``organ`` ``k`` (several-organ models only) runs organ ``k``'s decoder. With
    ``context_margin`` m the image is the organ's crop grown by m voxels per side; the logits
    ``(B, C, D - 2m, H - 2m, W - 2m)`` and the meshes (grid coordinates) are the centre crop's."""

    def __init__(self, config: Voxel2MeshConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet3D(config.unet)
        channels = config.per_stage(self.unet.decoder_channels)

        def decoder() -> nn.ModuleList:
            return nn.ModuleList(MeshStage(c, config, first=(i == 0)) for i, c in enumerate(channels))

        if config.organs:
            self.organ_stages = nn.ModuleList(decoder() for _ in range(config.organs))
        else:
            self.stages = decoder()

    def _decoder(self, organ: int | None) -> tuple[nn.ModuleList, torch.Tensor | None, list[float] | None]:
        """Organ ``organ``'s stages, template semi-axes (grid) and arc, or the one decoder's (and None, None)
        for ``organ`` None."""
        index = organ_index(organ, self.config.organs, "Voxel2Mesh")
        if index is None:
            return self.stages, None, None
        semi_axes = torch.tensor(self.config.organ_templates[index], dtype=torch.float32)
        arc = self.config.organ_arcs[index] if self.config.organ_arcs else None
        return self.organ_stages[index], semi_axes, arc

    def decode_mesh(
        self,
        decoder_features: list[torch.Tensor],
        grid_shape,
        organ: int | None = None,
        start: DecoderMesh | None = None,
        head: torch.Tensor | None = None,
    ) -> list[DecoderMesh]:
        """Run the mesh stages for one case (of ``organ``'s decoder: several-organ models); ``decoder_features``
        each ``(1, C, d, h, w)``; from ``start`` (the surface start's mesh) or, when None, the template; ``head``
        ``(1, 1, D, H, W)`` the head's probability of the object (``head_probabilities`` models: see
        :meth:`head_probability`). Returns every stage's mesh (``stages + refine_stages`` of them)."""
        c = self.config
        stages, semi_axes, arc = self._decoder(organ)
        scale = isotropic_scale(grid_shape).to(decoder_features[0].device)
        from_surface = start is not None
        if start is None:
            radius = c.template_radius / scale if semi_axes is None else semi_axes.to(scale.device)
            start = DecoderMesh.template(c.template_level, radius, device=scale.device, arc=arc)
        mesh = start
        levels = c.per_stage(decoder_features)
        last = len(levels) - 1
        meshes = []
        for i, (stage, features) in enumerate(zip(stages, levels)):
            if 0 < i < c.stages and c.unpooling != "none":
                mesh = mesh.subdivided()
            mesh = stage(mesh, features, head)
            # prune each unpooled level once its last stage has moved the new vertices
            if 0 < i and (i < c.stages - 1 or i == last) and c.unpooling == "adaptive" and not self.training:
                mesh = mesh.adaptively_pruned(c.amu_threshold, scale)
            meshes.append(mesh)
        if c.move_scales is not None and from_surface and not self.training:
            factor = c.move_scales[organ_index(organ, c.organs, "Voxel2Mesh")]
            meshes[-1] = replace(meshes[-1], verts=start.verts + factor * (meshes[-1].verts - start.verts))
        if c.surface_offsets is not None and not self.training:
            index = organ_index(organ, c.organs, "Voxel2Mesh")
            meshes[-1] = meshes[-1].grown(c.surface_offsets[index or 0], grid_shape)
        return meshes

    def head_probability(self, logits: torch.Tensor, organ: int | None) -> torch.Tensor | None:
        """What a ``head_probabilities`` decoder reads: the head's probability ``(B, 1, D, H, W)`` of class
        ``organ`` (1 for a one-object model), detached; None for a model without them."""
        if not self.config.head_probabilities:
            return None
        index = 1 if organ is None else organ
        return logits.detach().float().softmax(1)[:, index : index + 1]

    @property
    def reads_localiser_probabilities(self) -> bool:
        """A several-organ surface-start model: its decoders can start from the localiser's probabilities."""
        return self.config.start == "unet_surface" and bool(self.config.organs)

    def start_meshes(self, probabilities: torch.Tensor, organ: int | None) -> list[DecoderMesh | None]:
        """Each case's start: the surface of class ``organ`` (1 for a one-object model, meshed as U-Net + MC
        meshes it) in the class ``probabilities (B, C, D, H, W)`` with ``start="unet_surface"``
        (:func:`~imagetomesh.models.mesh_state.DecoderMesh.surface_of`), else (or where it finds none) None: the
        template."""
        if self.config.start == "template":
            return [None] * len(probabilities)
        index = 1 if organ is None else organ
        return [
            DecoderMesh.surface_of(p, index, one_object=not self.config.organs) for p in probabilities.detach().float()
        ]

    def forward(self, image: torch.Tensor, organ: int | None = None, probabilities: torch.Tensor | None = None):
        """See the class docstring; a surface-start decoder starts from ``probabilities`` ``(B, C, D - 2m, H - 2m,
        W - 2m)`` when given (the localiser's over the crop), else from its U-Net's softmax of the crop."""
        logits, decoder = self.unet(image)
        margin = self.config.context_margin
        if margin:
            decoder = [centre_crop(f, margin * f.shape[-1] // image.shape[-1]) for f in decoder]
            logits = centre_crop(logits, margin)
        if probabilities is not None and probabilities.shape != logits.shape:
            raise ValueError(
                f"probabilities must be {tuple(logits.shape)} (the crop's classes), got {tuple(probabilities.shape)}"
            )
        if probabilities is None and self.config.start == "unet_surface":
            probabilities = logits.detach().float().softmax(1)
        return logits, self._decoded(decoder, organ, probabilities, self.head_probability(logits, organ))

    def _decoded(
        self,
        decoder: list[torch.Tensor],
        organ: int | None,
        probabilities: torch.Tensor | None,
        head: torch.Tensor | None,
    ) -> list[list[DecoderMesh]]:
        """Each case's stage meshes (:meth:`decode_mesh`) from the U-Net's ``decoder`` features of the crop (coarsest
        first, each ``(B, C_l, d / f, h / f, w / f)``), starting from ``probabilities (B, C, d, h, w)`` where given
        (:meth:`start_meshes`), the template otherwise; ``head (B, 1, d, h, w)`` or None (:meth:`head_probability`)."""
        grid_shape = decoder[-1].shape[2:]
        cases = decoder[0].shape[0]
        starts = [None] * cases if probabilities is None else self.start_meshes(probabilities, organ)
        return [
            self.decode_mesh(
                [f[b : b + 1] for f in decoder], grid_shape, organ, starts[b], None if head is None else head[b : b + 1]
            )
            for b in range(cases)
        ]

    @property
    def decodes_unet_features(self) -> bool:
        """Its organ decoders read nothing of the crop but its U-Net's decoder features (and a start from the
        localiser's probabilities), so a pass of that U-Net over the whole scan can give them
        (:meth:`predict_meshes_from_features`): several organs, no ``head_probabilities`` (the U-Net's logits)."""
        return bool(self.config.organs) and not self.config.head_probabilities

    def predict_meshes_from_features(
        self,
        decoder: list[torch.Tensor],
        open_surface: bool = False,
        organ: int | None = None,
        probabilities: torch.Tensor | None = None,
    ) -> list[Mesh]:
        """As :meth:`predict_meshes`, from the U-Net's ``decoder`` features of the crop (coarsest first, each
        ``(B, C_l, d / f, h / f, w / f)``; ``segment`` reads them from its pass over the whole scan:
        :mod:`imagetomesh.scan_features`) instead of an image. A surface-start decoder needs ``probabilities (B, C,
        d, h, w)``; a model that is not :attr:`decodes_unet_features` raises ``ValueError``."""
        self._check_open_surface(open_surface)
        if not self.decodes_unet_features:
            raise ValueError("this Voxel2Mesh reads more than its U-Net's decoder features: give it the image")
        if probabilities is None and self.config.start == "unet_surface":
            raise ValueError("a surface-start Voxel2Mesh meshed from features needs the localiser's probabilities")
        if probabilities is not None and probabilities.shape[2:] != decoder[-1].shape[2:]:
            raise ValueError(
                f"probabilities must cover the crop {tuple(decoder[-1].shape[2:])}, got {tuple(probabilities.shape)}"
            )
        return last_stage_meshes(self._decoded(decoder, organ, probabilities, None))

    def predict_meshes(
        self,
        images: torch.Tensor,
        open_surface: bool = False,
        organ: int | None = None,
        probabilities: torch.Tensor | None = None,
    ) -> list[Mesh]:
        """As :meth:`DeformedTemplateModel.predict_meshes`; a surface-start decoder starts from ``probabilities``
        when given (see :meth:`forward`; ``segment`` gives the whole-scan U-Net's, cropped)."""
        self._check_open_surface(open_surface)
        _, meshes = self(images, organ=organ, probabilities=probabilities)
        return last_stage_meshes(meshes)
