"""Image -> mesh with a trained model: preprocessing, batched prediction, mapping back to LPS mm."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from imagetomesh.compatibility import check_image
from imagetomesh.core.edges import cut_warning, mesh_touched_faces
from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import GridTransform, grid_volume  # noqa: F401  (re-exported: benchmarks import it from here)
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING
from imagetomesh.geometry.quality import orient_outward
from imagetomesh.models.organ_decoders import context_shape
from imagetomesh.models.protocol import DeformedTemplateModel
from imagetomesh.models.snapping import flip_averaged_probability, snap_vertices
from imagetomesh.nn.fast_inference import fast_inference_copy
from imagetomesh.nn.precision import bf16_autocast, bf16_supported, to_channels_last
from imagetomesh.organ_layout import OrganLayout, OrganPlace, layout_mismatch
from imagetomesh.organs import Organ, mirrored_classes, organs_of
from imagetomesh.preprocessing import GridSpec, prepare_image
from imagetomesh.scan import (
    body_crop,
    crop_padded,
    crop_to_scan_grid,
    densest_crop_start,
    mean_probabilities,
    organ_masks,
    scan_grid,
    within_slices,
)
from imagetomesh.scan_features import ScanFeatures, constant_image_features
from imagetomesh.threads import side_by_side
from imagetomesh.voxel_meshing import finish_mesh, voxel_organ_mesh
from imagetomesh.zoo import LoadedModel, ensemble_unet, load_model

#: Grid voxels run through a one-object model at once: a batch of more images is split (``segment
#: --batch-size`` is capped at this), since a batch's memory grows with its images (about 350 bytes per
#: grid voxel for the hippocampus U-Net: 37 MB per image). 2**20 voxels: 9 hippocampus patches.
MAX_BATCH_VOXELS = 1 << 20

#: An image on a model's grid: ``((D, H, W) float32 tensor, its GridTransform)`` (:meth:`Segmenter.prepare`).
Prepared = tuple[torch.Tensor, GridTransform]


class Segmenter:
    """Loads a model once and turns images into LPS-millimetre meshes.

    ``segment_batch`` resamples each image onto the model grid (:meth:`prepare`) and runs them together,
    at most :attr:`max_batch` at a time (:meth:`predict`), through the model's
    :meth:`~imagetomesh.models.protocol.SegmentationModel.predict_meshes` (meshes in grid coordinates),
    then maps each mesh to LPS mm and post-processes it.
    ``open_surface`` (only for models with ``supports_open_surface``) returns the surface as the
    model found it, without closing or repairing it; by default meshes are made watertight.
    ``untangle=False`` keeps the folds a network made (to measure the network itself).
    ``check_input=False`` segments images that the model's card says it was not made for (see
    :mod:`imagetomesh.compatibility`); by default they are refused with an :class:`InputError`.
    ``precision="auto"`` runs a several-organ model's network under bf16 autocast with channels-last
    convolutions where the device computes bf16 natively (about 2.5x faster on such CPUs; voxel
    labels agree with float32 on 99.998 % of a whole scan); ``"fp32"`` always uses float32.
    ``snap`` (template models only: Voxel2Mesh, Pixel2Mesh-3D, ImplicitMeshNet) moves each vertex of the
    network's mesh along its normal onto its own voxel head's flip-averaged surface
    (:mod:`imagetomesh.models.snapping`): an optional refinement, not the method's plain output.
    """

    def __init__(
        self,
        model: str | LoadedModel,
        device: str = "auto",
        open_surface: bool = False,
        untangle: bool = True,
        check_input: bool = True,
        precision: str = "auto",
        snap: bool = False,
    ) -> None:
        self.model = model if isinstance(model, LoadedModel) else load_model(model, device)
        self.spec = GridSpec.from_dict(self.model.card["grid"])
        if snap and not isinstance(self.model.module, DeformedTemplateModel):
            raise InputError(
                f"--snap moves a template model's mesh onto its own voxel head; model {self.model.name} is a "
                f"{self.model.kind} model: use voxel2mesh, pixel2mesh3d or implicitmeshnet, or drop --snap"
            )
        self.snap = snap
        if snap and self.organs is not None:
            raise InputError(
                f"--snap refines a one-object model's mesh; model {self.model.name} meshes several organs: drop --snap"
            )
        if open_surface and not self.model.module.supports_open_surface:
            raise InputError(
                f"model {self.model.name} ({self.model.kind}) only makes closed surfaces; "
                "drop --open or use a model that supports open surfaces (e.g. nudf-hippocampus)"
            )
        self.open_surface = open_surface
        self.untangle = untangle
        self.check_input = check_input
        if precision not in ("auto", "fp32"):
            raise InputError(f"precision must be auto or fp32, got {precision!r}")
        #: bf16 autocast with channels-last convolutions for several-organ (whole-scan U-Net) models
        #: where the device computes bf16 natively ("auto"); float32 otherwise or with "fp32"
        self.bf16 = precision == "auto" and self.organs is not None and bf16_supported(self.model.device)
        if self.bf16:
            to_channels_last(self.model.module)
        #: ``(array axis, class each class becomes)`` of the left-right mirror that a several-organ model trained
        #: on mirrored crops (card ``mirror_averaged``) is also run on; None: the scan alone
        self.mirror = None
        if self.organs is not None and self.model.card.get("mirror_averaged"):
            self.mirror = (self.spec.array_axis(0), mirrored_classes([o.name for o in self.organs]))
        #: the U-Nets of the models the card names in ``ensemble`` (same organs and grid), whose whole-scan
        #: probabilities :meth:`scan_probabilities` averages with this model's own U-Net's; empty for none.
        #: Each is a :func:`~imagetomesh.nn.fast_inference.fast_inference_copy` (batch norms folded)
        self.ensemble = [self._ensemble_unet(name) for name in self._ensemble_names()]
        #: what :meth:`_organ_decoder_mesh` runs on each organ's crop (a model with :attr:`organ_decoders`:
        #: Voxel2Mesh, NUDF): a :func:`~imagetomesh.nn.fast_inference.fast_inference_copy` of the model (its U-Net's
        #: batch norms folded, every convolution on oneDNN); None for other models
        self.decoder_module = (
            fast_inference_copy(self.model.module) if self.organs is not None and self.organ_decoders else None
        )
        #: what :meth:`scan_probabilities` runs over the whole scan: a
        #: :func:`~imagetomesh.nn.fast_inference.fast_inference_copy` of this model's U-Net (the same probabilities
        #: up to float rounding; on a CPU without bf16, the ensemble's forward over a scan 40-50 % faster), then
        #: :attr:`ensemble`; empty for a one-object model
        self.scan_unets = [self._scan_unet(self._fast_own_unet()), *self.ensemble] if self.organs is not None else []

    def _ensemble_names(self) -> list[str]:
        """The card's ``ensemble``: names of several-organ models (:class:`InputError` where it is not a list of them)."""
        names = self.model.card.get("ensemble", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"model {self.model.name}'s card has 'ensemble' {names!r}; restore the model card")
        if names and self.organs is None:
            raise InputError(f"model {self.model.name} meshes one object: its card's 'ensemble' is for several organs")
        return names

    def _ensemble_unet(self, name: str) -> torch.nn.Module:
        """A :func:`~imagetomesh.nn.fast_inference.fast_inference_copy` of model ``name``'s U-Net (on this model's
        device, channels-last under bf16), checked to find the same organs on the same grid as this model
        (:func:`~imagetomesh.zoo.ensemble_unet`)."""
        card = self.model.card
        owner = f"model {self.model.name}'s card"
        unet = ensemble_unet(
            name, owner, card["organs"], card["grid"], self.model.device.type, "restore the model card"
        )
        return self._scan_unet(fast_inference_copy(unet))

    def _fast_own_unet(self) -> torch.nn.Module:
        """A :func:`~imagetomesh.nn.fast_inference.fast_inference_copy` of the model's own U-Net: the one in
        :attr:`decoder_module` where there is one (the crops and the scan then share it), else a new one."""
        if self.decoder_module is not None:
            return self.decoder_module.unet
        return fast_inference_copy(self.model.module.unet)

    def _scan_unet(self, fast: torch.nn.Module) -> torch.nn.Module:
        """The :func:`~imagetomesh.nn.fast_inference.fast_inference_copy` ``fast`` as :meth:`scan_probabilities`
        runs it: channels-last under bf16 (as the copy already is on a CPU)."""
        return to_channels_last(fast) if self.bf16 else fast

    @property
    def max_batch(self) -> int:
        """The most images run through the model at once: :data:`MAX_BATCH_VOXELS` over the grid's voxels
        (at least 1). Bigger batches are split, so their memory stays bounded."""
        return max(1, MAX_BATCH_VOXELS // int(np.prod(self.spec.shape)))

    def prepare(self, volume: Volume) -> Prepared:
        """``volume`` checked (:class:`InputError` when it cannot be segmented), normalised and resampled onto the
        model's grid: all that :meth:`predict` needs of it, about the grid's size in memory (warnings as
        :func:`~imagetomesh.preprocessing.prepare_image`'s)."""
        self._check(volume)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image, transform = prepare_image(volume, self.spec)
        for w in caught:
            warnings.warn(str(w.message), stacklevel=2)
        return image, transform

    @torch.no_grad()
    def predict(self, prepared: list[Prepared]) -> list[Mesh]:
        """One LPS-mm mesh per :meth:`prepare`'d image, in the order given, run :attr:`max_batch` at a time."""
        meshes = []
        for start in range(0, len(prepared), self.max_batch):
            chunk = prepared[start : start + self.max_batch]
            images = torch.stack([image for image, _ in chunk])[:, None].to(self.model.device)
            grid_meshes = self.model.module.predict_meshes(images, open_surface=self.open_surface)
            if self.snap:
                grid_meshes = self._snapped(grid_meshes, images)
            del images
            meshes += [self._finish(m.transformed(t.grid_to_lps)) for m, (_, t) in zip(grid_meshes, chunk)]
        return meshes

    def _snapped(self, grid_meshes: list[Mesh], images: torch.Tensor) -> list[Mesh]:
        """``grid_meshes`` (grid coordinates) snapped onto the model's flip-averaged voxel probability of ``images``."""
        probability = flip_averaged_probability(self.model.module.unet, images).cpu()
        snapped = []
        for mesh, p in zip(grid_meshes, probability):
            verts = snap_vertices(torch.from_numpy(mesh.vertices).float(), torch.from_numpy(mesh.faces), p)
            snapped.append(Mesh(verts.numpy(), mesh.faces))
        return snapped

    def segment_batch(self, volumes: list[Volume]) -> list[Mesh]:
        """One mesh per volume, in the order given (:meth:`prepare` each, then :meth:`predict`)."""
        return self.predict([self.prepare(volume) for volume in volumes])

    def segment(self, volume: Volume) -> Mesh:
        if self.organs is not None:
            raise InputError(
                f"model {self.model.name} meshes several organs ({', '.join(o.name for o in self.organs)}): "
                "use segment_organs (on the command line, -o is then a folder)"
            )
        return self.segment_batch([volume])[0]

    @property
    def organs(self) -> list[Organ] | None:
        """The organs of a several-organ model (its card's ``organs``), None for a one-object model."""
        return organs_of(self.model.card)

    @property
    def organ_decoders(self) -> bool:
        """Whether a several-organ model meshes each organ with its own decoder on a crop (``organ_crops`` in its
        config: Voxel2Mesh, NUDF) rather than from its U-Net's voxels."""
        return getattr(self.model.module.config, "organ_crops", None) is not None

    @property
    def voxel_smoothing(self) -> float:
        """The smoothing of the meshes made from a U-Net's voxels (its config's ``smoothing``, else the default)."""
        return getattr(self.model.module.config, "smoothing", DEFAULT_SMOOTHING)

    @torch.no_grad()
    def segment_organs(self, volume: Volume, organs: list[Organ] | None = None) -> dict[str, Mesh | None]:
        """``{organ name: LPS-mm mesh, or None where the model found no such organ}`` for ``organs`` (default:
        all) of a several-organ model, from the whole scan (:mod:`imagetomesh.scan`: any field of view
        at the model's spacing, in windows of at most the card's grid shape's voxels). A U-Net meshes each organ's
        voxels; a mesh model with one decoder per organ (``organ_crops`` in its config: Voxel2Mesh, NUDF)
        runs its U-Net over the scan to find each organ, then that organ's decoder on a crop around it
        (:meth:`_organ_decoder_mesh`; on a CPU the organs side by side: :func:`~imagetomesh.threads.side_by_side`).
        An organ that reaches
        the edge of the scan is meshed capped there, with a warning naming it and the edge. With ``check_input``,
        a scan whose organs (all of the model's, whichever are chosen) do not lie as in the card's training
        labels is refused (:meth:`_check_layout`) before anything is meshed."""
        if self.organs is None:
            raise InputError(f"model {self.model.name} meshes one structure: use segment")
        self._check(volume)
        levels = [] if self.reads_scan_features else None
        image, transform, probabilities = self.scan_probabilities(volume, levels)
        features = None
        if levels:  # Voxel2Mesh's decoders read their U-Net's pass over the scan instead of one over each crop
            features = ScanFeatures(levels, constant_image_features(self.decoder_module.unet, float(image.min())))
        chosen = organs if organs is not None else self.organs
        masks = organ_masks(probabilities, self.organs)
        if self.check_input:
            self._check_layout(masks, transform)
        found = [organ for organ in chosen if masks[organ.name] is not None]

        def mesh_of(organ: Organ) -> Mesh | None:
            mask = masks[organ.name]
            try:
                if self.organ_decoders:
                    return self._organ_decoder_mesh(image, mask, organ, transform, probabilities, features)
                return voxel_organ_mesh(probabilities[organ.index], mask, transform, self.voxel_smoothing)
            except InputError:  # too small to mesh: as good as not found
                return None

        if self.organ_decoders and self.model.device.type == "cpu":
            # the decoders side by side, one thread each, largest organ first: the bundled case's Voxel2Mesh decoders
            # 4.5-5.4 -> 3.0-3.6 s on two threads, NUDF's 0.7-1 s faster (its Poisson reconstructions one at a time);
            # U-Net + MC's meshing gains nothing
            found_meshes = side_by_side(mesh_of, found, [float(masks[o.name].sum()) for o in found])
        else:
            found_meshes = [mesh_of(organ) for organ in found]
        meshes: dict[str, Mesh | None] = {organ.name: None for organ in chosen}
        meshes.update(zip((organ.name for organ in found), found_meshes))
        for organ in found:
            mesh = meshes[organ.name]
            warning = None if mesh is None else cut_warning(organ.title, mesh_touched_faces(mesh.vertices, volume))
            if warning:
                warnings.warn(warning, stacklevel=2)
        return meshes

    def scan_image(self, volume: Volume) -> tuple[torch.Tensor, GridTransform]:
        """The whole scan ``volume`` (a CT cropped to the body first) as the U-Nets read it: ``(image (D, H, W), its
        GridTransform)`` on the scan grid (:func:`~imagetomesh.scan.scan_grid`). Unchecked."""
        body = body_crop(volume) if self.spec.intensity == "ct" else volume
        return prepare_image(body, self.spec, warn=False, transform=scan_grid(body, self.spec))

    @property
    def reads_scan_features(self) -> bool:
        """The organ decoders read their U-Net's decoder features of each crop from :meth:`scan_probabilities`' pass
        of that U-Net over the whole scan (:mod:`imagetomesh.scan_features`; Voxel2Mesh), not from a pass over the
        crop: :attr:`decoder_module`'s U-Net is the first of :attr:`scan_unets`."""
        return self.decoder_module is not None and getattr(self.decoder_module, "decodes_unet_features", False)

    @torch.no_grad()
    def scan_probabilities(
        self, volume: Volume, features: list | None = None
    ) -> tuple[torch.Tensor, GridTransform, torch.Tensor]:
        """A several-organ model's U-Net over the whole scan ``volume`` (a CT cropped to the body first):
        ``(image (D, H, W), its GridTransform, class probabilities (C, D, H, W))`` on the scan grid
        (:func:`~imagetomesh.scan.scan_grid`), run in windows of at most the card's grid shape's voxels; with
        :attr:`mirror`, the mean of the scan's probabilities and its mirror's (mirrored back, left and right
        organs traded); with an :attr:`ensemble`, the mean of its U-Nets' and this model's, the ensemble's read
        only around the organs this model's U-Net finds (:func:`~imagetomesh.scan.mean_probabilities`). Unchecked:
        :meth:`segment_organs` checks the image first. ``features``: a list that receives this model's U-Net's
        decoder features over the scan (:func:`~imagetomesh.scan.windowed_logits`; empty with :attr:`mirror`)."""
        image, transform = self.scan_image(volume)
        batch = image[None, None].to(self.model.device)
        with bf16_autocast(self.bf16, self.model.device):
            probabilities = mean_probabilities(self.scan_unets, batch, self.spec.shape, self.mirror, features=features)
        return image, transform, probabilities

    def _organ_decoder_mesh(
        self,
        image: torch.Tensor,
        mask: np.ndarray,
        organ: Organ,
        transform: GridTransform,
        probabilities: torch.Tensor,
        features: ScanFeatures | None = None,
    ) -> Mesh:
        """Organ ``organ``'s decoder run on its crop (``config.organ_crops``) of the scan-grid ``image (D, H, W)``
        placed to hold the most of its ``mask`` (the U-Net's voxels of it: :func:`~imagetomesh.scan.densest_crop_start`;
        centred on their box when they fit; the model's input is that crop grown by
        its ``context_margin``, which its U-Net reads), as a finished LPS-mm mesh; the
        scan grid lies at ``transform``. A model that ``meshes_near_mask`` (NUDF) seeks the surface only near ``mask``;
        one that ``reads_localiser_probabilities`` (NUDF's encoder with ``localiser_input``, a surface-start
        Voxel2Mesh's decoders as their start) gets them cropped from the U-Net's ``probabilities (C, D, H, W)``
        over the whole scan, which saw the organ's surroundings (the U-Net run on the crop alone loses them:
        validation mean Dice 0.685 against 0.677 for NUDF, 0.743 against 0.739 for Voxel2Mesh). With the U-Net's
        ``features`` over the scan (:attr:`reads_scan_features`), the decoders read the crop's from them instead of
        running the U-Net on the crop. A model whose config has ``extent_margin_slices`` (Voxel2Mesh) keeps the mesh
        within that many slices of ``mask``'s first and last slices along the scan grid's slice axis
        (:func:`~imagetomesh.scan.within_slices`)."""
        net = self.decoder_module
        crop = tuple(net.config.organ_crops[organ.index - 1])
        start = densest_crop_start(mask, crop)
        extra = {}
        if net.meshes_near_mask:
            extra["near"] = crop_padded(torch.as_tensor(mask), start, crop, False)[None]
        if net.reads_localiser_probabilities:
            extra["probabilities"] = crop_padded(probabilities, start, crop, 0.0)[None].to(self.model.device)
        if features is not None:
            grid_mesh = net.predict_meshes_from_features(
                features.crop(start, crop), open_surface=self.open_surface, organ=organ.index, **extra
            )[0]
        else:
            margin = getattr(net.config, "context_margin", 0)  # the U-Net reads this much image around the crop
            shape = context_shape(crop, margin)
            window = crop_padded(image, tuple(s - margin for s in start), shape, float(image.min()))
            grid_mesh = net.predict_meshes(
                window[None, None].to(self.model.device), open_surface=self.open_surface, organ=organ.index, **extra
            )[0]
        verts = crop_to_scan_grid(grid_mesh.vertices, start, crop, tuple(image.shape))
        extent_margin = getattr(net.config, "extent_margin_slices", None)
        if extent_margin is not None:
            verts = within_slices(verts, mask, extent_margin)
        return self._finish(Mesh(verts.astype(np.float32), grid_mesh.faces).transformed(transform.grid_to_lps))

    def _check_layout(self, masks: dict[str, np.ndarray | None], transform: GridTransform) -> None:
        """:class:`InputError` where the organs found (``masks`` on the scan grid at ``transform``) do not lie as in
        the training labels of the card's ``input.organ_layout`` (:mod:`imagetomesh.organ_layout`); none without one."""
        block = self.model.card.get("input", {}).get("organ_layout")
        if not block:
            return
        places = {
            name: OrganPlace.of_mask(mask, transform.index_to_lps) for name, mask in masks.items() if mask is not None
        }
        region = self.model.card["input"].get("body_region") or "body region"
        reason = layout_mismatch(places, OrganLayout.from_dict(block), self.model.name, region)
        if reason is not None:
            raise InputError(f"{reason}; or pass --allow-mismatch to segment it anyway")

    def _check(self, volume: Volume) -> None:
        """:class:`InputError` for non-finite voxels, and (``check_input``) for an image the model was not made for."""
        _check_finite(volume)
        if self.check_input:
            check_image(volume, self.model.card, self.model.name)

    def _finish(self, mesh: Mesh) -> Mesh:
        return orient_outward(mesh) if self.open_surface else finish_mesh(mesh, self.untangle)


def _check_finite(volume: Volume) -> None:
    """:class:`InputError` for NaN/Inf voxels, a slab at a time (no whole-image temporary)."""
    array = np.asarray(volume.array)
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return
    step = max(1, (1 << 24) // max(1, int(np.prod(array.shape[1:]))))
    if not all(np.isfinite(array[k : k + step]).all() for k in range(0, array.shape[0], step)):
        raise InputError("the image contains NaN or Inf voxels; fix or mask them before segmenting")
