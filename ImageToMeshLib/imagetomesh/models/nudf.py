"""NUDF (Juhl et al., ISBI 2022): a neural unsigned distance field conditioned on the image.

Image encoder: a pyramid of :class:`~imagetomesh.nn.unet.DoubleConv` blocks (3x3x3 conv + norm +
ReLU, twice) with a 2x max-pool between levels; level ``l`` has ``channels[l]`` channels at
``1 / 2**l`` of the grid resolution.

Point decoder: a query point ``p`` (model grid coordinates, (x, y, z) in [-1, 1]) is sampled,
together with the 6 points ``p +- offset * e_x``, ``+- e_y``, ``+- e_z`` (``offset_voxels`` of a
grid voxel along each axis), in the input image and in every feature level
(:func:`~imagetomesh.nn.feature_sampling.sample_features`, trilinear). The ``7 * (1 + sum
channels)`` numbers go through a point-wise MLP (``hidden`` units, two hidden layers, ReLU) that
regresses the unsigned distance; the output is ``|y|`` so that the field is exactly zero only
on a surface and its gradient never vanishes identically (as a ReLU output would).

Distance units ("normalised units"): lengths in the *isotropic grid frame*, grid coordinates
times :func:`~imagetomesh.nn.grid.isotropic_scale` of the grid, i.e. 1 unit is half
the longest grid extent (27.5 mm on the hippocampus grid of 56 x 1 mm along y). The training
clamp of 0.1 units is therefore 2.75 mm there.

Meshing (:meth:`NUDF.predict_meshes`) is in :mod:`imagetomesh.geometry.udf_meshing`:
projection along the UDF gradient, screened Poisson, support trimming.

Several organs (``unet`` and ``organ_crops``): the model also holds a trained several-organ U-Net, kept
as it was trained, that finds each organ in the whole scan (as a Voxel2Mesh with one decoder per organ
does); NUDF then meshes organ ``k`` in the crop ``organ_crops[k - 1]`` around it, its encoder reading
that crop and output ``k`` of the point decoder (one output per organ) giving that organ's distances.
With ``localiser_input`` the encoder reads, besides the crop, the U-Net's probability of organ ``k`` on it
(in training the U-Net run on the same crop; ``segment`` crops the U-Net's probabilities over the whole scan,
which saw the organ's surroundings): the field then refines where the U-Net puts the organ rather than finding
the organ from the image alone. ``surface_offsets`` move each organ's finished surface along its normals by an
amount chosen on validation (the field's zero set can sit a fraction of a voxel off the organ).
The surface is sought only near the U-Net's voxels of the organ (``near`` of :meth:`NUDF.predict_meshes`, grown by
the meshing config's ``region_margin_voxels``, and ``region_margin_slices`` along the body axis): the field is
trained on points concentrated around the organ and can fall to near zero far from it, in parts of the crop its
training barely sampled. Those voxels also orient the surface's normals (:meth:`VoxelGuide.outward`): a UDF has no
inside, and orienting its point cloud by propagation alone turned part of thin organs (the mandible) inside out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Optional

import numpy as np
import torch
from torch import nn

from imagetomesh.models.organ_decoders import check_organ_crops, checked_surface_offsets, organ_index
from imagetomesh.models.protocol import INFERENCE_ONLY, SegmentationModel
from imagetomesh.nn.feature_sampling import sample_features
from imagetomesh.nn.grid import grid_to_index, grid_voxel_size, isotropic_scale, isotropic_voxel_size
from imagetomesh.nn.unet import DoubleConv, UNet3D, UNetConfig


@dataclass
class NUDFConfig:
    """``channels`` per encoder level (finest first); ``norm`` "batch" | "instance" | "group";
    ``hidden`` MLP width; ``offset_voxels`` the 6 neighbour offsets in grid voxels; ``clamp``
    the distance clamp (normalised units, see the module docstring); ``chunk`` query points per
    decoder pass; ``meshing`` keyword arguments of :class:`~imagetomesh.geometry.udf_meshing.UDFMeshingConfig`.
    Several organs: ``unet`` the :class:`~imagetomesh.nn.unet.UNetConfig` (as a dict) of the localising
    U-Net, whose classes ``1..K`` are the organs, and ``organ_crops`` one ``(d, h, w)`` crop per organ,
    each size a multiple of ``2 ** (len(channels) - 1)`` (the encoder's poolings); ``norm`` then "group" or
    "instance" (a batch holds one organ's crops: measured on synthetic CTs, batch norm's mixed running
    statistics made the validation error grow while the training loss fell); ``localiser_input`` whether the
    encoder also reads that U-Net's probability of the organ on the crop (crop sizes then also a multiple of
    the U-Net's ``2 ** (depth - 1)``). ``surface_offsets``: one per organ (one for a one-object model), grid voxels
    that :meth:`NUDF.predict_meshes` moves the closed meshed surface along its outward normals (negative: inward;
    an open surface, ``segment --open``, is left where the field puts it), or None for none: a learned field's
    zero set can sit off the organ's surface by a fraction of a voxel, by a different amount per organ (the head-and-neck model's brainstem and parotids outwards, its spinal cord inwards: its
    learned distances, not the meshing, which more projection steps did not change), so these are chosen on
    validation cases (``Testing/benchmarks/nudf_surface_offsets.py``)."""

    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 64)
    norm: str = "batch"
    hidden: int = 256
    offset_voxels: float = 0.5
    clamp: float = 0.1
    chunk: int = 8192
    meshing: dict = field(default_factory=dict)
    unet: Optional[dict] = None
    organ_crops: Optional[list[list[int]]] = None
    localiser_input: bool = False
    surface_offsets: Optional[list[float]] = field(default=None, metadata=INFERENCE_ONLY)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.surface_offsets = checked_surface_offsets(self.surface_offsets, max(1, self.organs))
        if (self.unet is None) != (self.organ_crops is None):
            raise ValueError(
                "a several-organ NUDF needs both unet (the localiser) and organ_crops; give both or neither"
            )
        if self.localiser_input and self.unet is None:
            raise ValueError("localiser_input needs the localising U-Net (unet, organ_crops)")
        if self.unet is not None:
            if self.norm == "batch":
                raise ValueError(
                    "a several-organ NUDF trains on one organ's crops per batch, so batch norm's running statistics "
                    "would mix organs that no batch mixed: use norm 'group' or 'instance'"
                )
            organs = UNetConfig(**self.unet).num_classes - 1
            if organs < 1:
                raise ValueError(f"a several-organ NUDF's U-Net needs organ classes, got {self.unet}")
            check_organ_crops(self.organ_crops, organs, 2 ** (len(self.channels) - 1), "the encoder's poolings")
            if self.localiser_input:  # the U-Net runs on the crops too
                depth = UNetConfig(**self.unet).depth
                check_organ_crops(self.organ_crops, organs, 2 ** (depth - 1), "the localising U-Net's poolings")
        if not self.channels or min(self.channels) < 1 or self.in_channels < 1:
            raise ValueError(f"NUDF channels must be positive, got {self.channels}")
        if self.hidden < 1 or self.chunk < 1:
            raise ValueError("NUDF hidden and chunk must be positive")
        if not self.clamp > 0 or self.offset_voxels < 0:
            raise ValueError("NUDF clamp must be positive and offset_voxels non-negative")

    @property
    def organs(self) -> int:
        """Organs meshed (one decoder output each); 0 for a one-object model."""
        return len(self.organ_crops) if self.organ_crops else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class NUDF(nn.Module, SegmentationModel):
    """``encode(image (B, 1, D, H, W))`` -> feature list; ``query(features, points (B, N, 3), organ=None)`` ->
    ``(B, N)`` unsigned distances (of organ ``k``: several-organ models); ``forward(image, points, organ=None)``
    does both. A several-organ model's :attr:`unet` is its localiser."""

    #: ``segment --open`` is allowed: the surface can be returned without being closed.
    supports_open_surface = True
    #: ``predict_meshes(..., near=)`` seeks each surface only near the given voxels.
    meshes_near_mask = True

    def __init__(self, config: NUDFConfig) -> None:
        super().__init__()
        self.config = c = config
        inputs = c.in_channels + int(c.localiser_input)
        cins = (inputs,) + c.channels[:-1]
        self.encoder = nn.ModuleList(DoubleConv(cin, cout, c.norm) for cin, cout in zip(cins, c.channels))
        self.pool = nn.MaxPool3d(2)
        width = 7 * (inputs + sum(c.channels))
        self.decoder = nn.Sequential(
            nn.Linear(width, c.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(c.hidden, c.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(c.hidden, max(1, c.organs)),
        )
        if c.unet is not None:
            self.unet = UNet3D(UNetConfig(**c.unet))

    @property
    def reads_localiser_probabilities(self) -> bool:
        return self.config.localiser_input

    def encode(
        self, image: torch.Tensor, organ: int | None = None, probabilities: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """``[input, level 0, level 1, ...]``, each ``(B, C_l, D_l, H_l, W_l)``; the input is the image and,
        with ``localiser_input``, the localising U-Net's probability of ``organ`` on it: ``probabilities``
        ``(B, K + 1, D, H, W)``, that U-Net's softmax on ``image`` when the caller has it, else computed here."""
        if image.dim() != 5 or image.shape[1] != self.config.in_channels:
            raise ValueError(f"NUDF expects images (B, {self.config.in_channels}, D, H, W), got {tuple(image.shape)}")
        x = image
        if self.config.localiser_input:
            self._output(organ)
            if probabilities is None:
                with torch.no_grad():
                    probabilities = self.unet(image)[0].float().softmax(1)
            expected = (image.shape[0], self.config.organs + 1, *image.shape[2:])
            if tuple(probabilities.shape) != expected:
                raise ValueError(
                    f"probabilities must be {expected} (the U-Net's softmax), got {tuple(probabilities.shape)}"
                )
            x = torch.cat([image, probabilities[:, organ : organ + 1].to(image.dtype)], 1)
        features = [x]
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            features.append(x)
        return features

    def offsets(self, shape_dhw, device=None) -> torch.Tensor:
        """``(7, 3)`` grid-unit offsets: zero, then +-x, +-y, +-z by ``offset_voxels`` grid voxels."""
        voxel = grid_voxel_size(tuple(shape_dhw)[::-1], device=device)
        eye = torch.eye(3, device=device) * voxel * self.config.offset_voxels
        return torch.cat([torch.zeros(1, 3, device=device), eye, -eye])

    def _output(self, organ: int | None) -> int:
        """The decoder output of ``organ`` (required, 1..K, for a several-organ model; None otherwise)."""
        index = organ_index(organ, self.config.organs, "NUDF")
        return 0 if index is None else index

    def _query_block(self, features: list[torch.Tensor], points: torch.Tensor, output: int) -> torch.Tensor:
        b, n, _ = points.shape
        # point-major (each point's 7 samples adjacent): the samples of a point come out as its decoder input,
        # offset by offset, with no copy to reorder them, and neighbouring reads hit the same voxels
        moved = points[:, :, None, :] + self.offsets(features[0].shape[2:], points.device)[None, None, :, :]
        moved = moved.reshape(b, n * 7, 3)
        # the first layer reads each point's 7 samples of every level, offset by offset: (hidden, 7, C) of its weights;
        # applied level by level, as the sum of each level's part, the samples need no concatenating (nor their
        # gradient splitting): 12 % faster with a gradient at the points (meshing), the same up to float rounding
        first = self.decoder[0]
        weight = first.weight.view(first.out_features, 7, -1)
        hidden, start = first.bias, 0
        for f in features:
            c = f.shape[1]
            sampled = sample_features(f, moved).reshape(b, n, 7 * c)  # (B, N, 7 * C_l)
            hidden = hidden + sampled @ weight[:, :, start : start + c].reshape(first.out_features, 7 * c).t()
            start += c
        return self.decoder[1:](hidden)[..., output].abs()

    def query(
        self, features: list[torch.Tensor], points: torch.Tensor, chunk: int | None = None, organ: int | None = None
    ) -> torch.Tensor:
        """Unsigned distances ``(B, N)`` (normalised units) at ``points (B, N, 3)`` grid coordinates (to organ
        ``organ``'s surface: several-organ models), ``chunk`` points at a time (default ``config.chunk``) so
        memory is bounded whatever ``N``."""
        if points.dim() != 3 or points.shape[2] != 3 or points.shape[0] != features[0].shape[0]:
            raise ValueError(f"points must be (B, N, 3) with B = {features[0].shape[0]}, got {tuple(points.shape)}")
        output = self._output(organ)
        chunk = chunk or self.config.chunk
        if points.shape[1] <= chunk:
            return self._query_block(features, points, output)
        return torch.cat(
            [self._query_block(features, points[:, i : i + chunk], output) for i in range(0, points.shape[1], chunk)],
            1,
        )

    def forward(
        self,
        image: torch.Tensor,
        points: torch.Tensor,
        organ: int | None = None,
        probabilities: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unsigned distances ``(B, N)`` at ``points (B, N, 3)`` (:meth:`query`) of ``image``'s field (``organ``,
        ``probabilities``: see :meth:`encode`)."""
        return self.query(self.encode(image, organ, probabilities), points, organ=organ)

    def predict_meshes(
        self,
        images: torch.Tensor,
        open_surface: bool = False,
        organ: int | None = None,
        near: torch.Tensor | None = None,
        probabilities: torch.Tensor | None = None,
    ):
        """One :class:`~imagetomesh.core.mesh.Mesh` per image ``(B, C, D, H, W)``, in model grid coordinates
        (of organ ``organ``, whose crops ``images`` are: several-organ models). ``near`` ``(B, D, H, W)``
        bool: the surface of image ``b`` is sought only within the meshing config's ``region_margin_voxels``
        of ``near[b]``'s voxels (the localiser's voxels of the organ). ``probabilities``: see :meth:`encode`.

        Closed (the caller repairs it to watertight) unless ``open_surface``.
        """
        self._output(organ)  # a missing or unknown organ fails before the encoder runs
        from imagetomesh.geometry.udf_meshing import UDFMeshingConfig, mesh_udf

        config = UDFMeshingConfig(**self.config.meshing)
        scale = isotropic_scale(images.shape[2:]).to(images.device)
        voxel = isotropic_voxel_size(images.shape[2:])  # one grid voxel in the isotropic frame
        meshes = []
        with torch.no_grad():
            features = self.encode(images, organ, probabilities)
        for b in range(images.shape[0]):
            feats = [f[b : b + 1] for f in features]

            def udf(points_iso: torch.Tensor, feats=feats) -> torch.Tensor:  # CPU points in, CPU distances out
                grid = points_iso.to(images.device) / scale
                return self.query(feats, grid[None], chunk=self.config.chunk, organ=organ)[0].cpu()

            inside = outward = None
            organ_config = config
            if near is not None:
                guide = VoxelGuide(near[b], scale)
                inside = guide.region(config.region_margin_voxels, config.region_margin_slices)
                outward = guide.outward()
                organ_config = config.for_area(guide.surface_area())
            lo, hi = (-scale).cpu().numpy(), scale.cpu().numpy()
            mesh = mesh_udf(udf, lo, hi, voxel, organ_config, open_surface=open_surface, inside=inside, outward=outward)
            offset = self.config.surface_offsets[self._output(organ)] if self.config.surface_offsets else 0.0
            if offset and not open_surface:
                mesh = moved_along_normals(mesh, offset * voxel)
            meshes.append(mesh.transformed(_diag_affine(1.0 / scale.cpu().numpy())))
        return meshes


def moved_along_normals(mesh, distance: float):
    """The closed ``mesh`` with every vertex moved ``distance`` along its outward (area-weighted) vertex normal:
    a parallel surface, grown (``distance`` > 0) or shrunk, for distances small against its thickness."""
    from imagetomesh.core.mesh import Mesh
    from imagetomesh.geometry.normals import offset_along_normals
    from imagetomesh.geometry.quality import orient_outward

    mesh = orient_outward(mesh)
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float64)
    moved = offset_along_normals(vertices, torch.as_tensor(mesh.faces.astype(np.int64)), distance).numpy()
    return Mesh(moved.astype(mesh.vertices.dtype), mesh.faces)


class VoxelGuide:
    """What the localiser's voxels of an organ, ``voxels (D, H, W)`` bool, tell the meshing of its field, for
    points in the isotropic grid frame of ``scale`` (:func:`~imagetomesh.nn.grid.isotropic_scale`): where to
    seek the surface (:meth:`region`) and which way is out (:meth:`outward`). The distance transform both
    read is computed once."""

    def __init__(self, voxels: torch.Tensor, scale: torch.Tensor) -> None:
        self.mask = voxels.cpu().numpy().astype(bool)
        self.scale = scale.cpu()
        self.size_ijk = tuple(self.mask.shape)[::-1]

    @cached_property
    def outside(self) -> np.ndarray:
        """``(D, H, W)``: each voxel's distance (voxels, centre to centre) to the nearest True voxel (0 on them)."""
        from scipy.ndimage import distance_transform_edt

        return distance_transform_edt(~self.mask)

    def surface_area(self) -> int:
        """The area of the True voxels' boundary in square voxels: the faces between a True voxel and a False one
        or the grid's edge (a staircase, so about 1.5 times a smooth surface's area)."""
        padded = np.pad(self.mask, 1)
        return int(sum(np.count_nonzero(np.diff(padded, axis=axis)) for axis in range(3)))

    def region(self, margin: float, margin_slices: float | None = None):
        """``inside(points (N, 3)) -> (N,) bool``: whether the voxel nearest each point lies within ``margin``
        voxels (Euclidean, centre to centre) of a True voxel; with ``margin_slices``, within the ellipsoid of
        semi-axes ``margin_slices`` along the slice axis (D) and ``margin`` across it, centred on a True voxel."""
        if margin_slices is not None and not (margin > 0 and margin_slices > 0):
            raise ValueError(f"an ellipsoidal region needs positive margins, got {margin} and {margin_slices}")
        if not self.mask.any():
            grown = torch.as_tensor(self.mask)
        elif margin_slices is None or margin_slices == margin:
            grown = torch.as_tensor(self.outside <= margin)
        else:
            from scipy.ndimage import distance_transform_edt

            # a slice counts margin / margin_slices voxels: margin_slices slices away is margin away
            stretched = distance_transform_edt(~self.mask, sampling=(margin / margin_slices, 1.0, 1.0))
            grown = torch.as_tensor(stretched <= margin)
        upper = torch.tensor(self.size_ijk) - 1

        def inside(points: torch.Tensor) -> torch.Tensor:
            index = grid_to_index(points.detach().cpu().float() / self.scale, self.size_ijk).round().long()
            i, j, k = torch.minimum(index.clamp(min=0), upper).unbind(-1)
            return grown[k, j, i]

        return inside

    def outward(self):
        """``outward(points (N, 3) array) -> (N, 3)``: the gradient of the signed distance (voxels, positive
        outside) to the boundary of the True voxels, trilinear at each point (the frame is a voxel-index frame
        up to one factor, so the index gradient is the frame's direction); None when there is no boundary
        (all or none True)."""
        from imagetomesh.geometry.udf_meshing import mask_outward

        if self.mask.all() or not self.mask.any():
            return None
        scale = self.scale.double()

        def kji(points: np.ndarray) -> np.ndarray:  # (k, j, i) indices, as the mask is indexed
            return grid_to_index(torch.as_tensor(points, dtype=torch.float64) / scale, self.size_ijk).numpy()[:, ::-1]

        along_kji = mask_outward(self.mask, kji, self.outside)
        return lambda points: along_kji(points)[:, ::-1]  # along x, y, z


def _diag_affine(diag) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.diag(np.asarray(diag, dtype=np.float64))
    return affine
