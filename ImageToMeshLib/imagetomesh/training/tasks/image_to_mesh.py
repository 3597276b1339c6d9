"""Training U-Net, Voxel2Mesh and Pixel2Mesh-3D: cross-entropy on the segmentation head, plus the mesh losses.

Loss: ``ce CE(logits, label)`` plus, for the mesh models, the mean over cases of
:func:`~imagetomesh.training.losses.mesh_decoder_loss` against the label's Chamfer target
(``loss.target``: ``sample_points`` voxel-face midpoints of the augmented label, or the case's
dense surface samples, computed once in data preparation and moved with the augmentation). AdamW, one-cycle learning rate, gradient norm clipped
at 5. Best model: the highest validation Dice of the output mesh (``val_mesh_dice``) for mesh
models, of the voxel head for the U-Net. ``freeze_unet`` (configs ``cpu-v2-frozen``): the U-Net of
the ``--init-from`` model is kept as it is (eval mode, no gradient), only the mesh decoder trains.
Voxel2Mesh with one decoder per organ (``organ_crops`` in the model config, ``headneck-ct-cpu-frozen``)
trains its decoders on a trained several-organ U-Net kept frozen, each step on crops around one organ
(:mod:`imagetomesh.training.organ_crops`), and is selected by the mean over organs of the mesh Dice in
those crops; with ``scan_starts`` its surface-start decoders start, in training and validation, from the
probabilities of the U-Net and its ensemble over the whole case, as ``segment`` starts them
(:mod:`imagetomesh.training.scan_guides`). A U-Net with ``deep_supervision`` levels adds the same loss at its
coarser decoder levels (:mod:`imagetomesh.training.deep_supervision`).
Configs: :func:`imagetomesh.training.configs.image_configs`.
"""

from __future__ import annotations

import torch

from imagetomesh.errors import InputError
from imagetomesh.models.registry import build_model
from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size
from imagetomesh.organs import mirrored_classes
from imagetomesh.training.configs import TrainConfig, image_configs
from imagetomesh.training.data import (
    Mirror,
    chamfer_target,
    prepare_split,
    random_image_batch,
    random_patch_batch,
)
from imagetomesh.training.deep_supervision import DeeplySupervisedUNet, DeepSupervisionHeads, deep_supervised_loss
from imagetomesh.training.init_weights import init_from_model, restart_classes
from imagetomesh.training.losses import mesh_decoder_loss, partial_label_loss, segmentation_loss
from imagetomesh.training.organ_crops import (
    OrganCropGuides,
    describe_organ_cases,
    organ_cases,
    organ_crop_guides,
    random_organ_crop_batch,
    start_probabilities,
)
from imagetomesh.training.pseudo_labels import add_pseudo_labels, describe_pseudo_labels, teachers_key
from imagetomesh.training.scan_guides import describe_guides, guide_networks
from imagetomesh.training.schedules import one_cycle
from imagetomesh.training.tasks.base import RunState, Task, run_card
from imagetomesh.training.udf_points import surface_samples
from imagetomesh.training.validation import organ_mesh_metrics, organ_metrics, segmentation_metrics


def image_to_mesh_loss(
    net,
    config: TrainConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    device,
    surfaces: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of a batch (``images (B, 1, D, H, W)``, ``labels (B, D, H, W)``, for the dense target
    each case's augmented ``surfaces``) and its terms (``seg``, the mesh terms averaged over cases, ``loss``)."""
    logits, meshes = net(images.to(device))
    terms = {"seg": segmentation_loss(logits, labels.to(device))}
    total = config.loss.ce * terms["seg"]
    if meshes is not None:
        targets = [
            chamfer_target(
                label, config.loss.target, config.loss.sample_points, surfaces[b] if surfaces is not None else None
            ).draw(generator)
            for b, label in enumerate(labels)
        ]
        terms.update(mean_mesh_terms(meshes, targets, images.shape[2:], config, device, labels > 0))
        total = total + terms["total"]
    terms["loss"] = total
    return total, logged_terms(terms)


def mean_mesh_terms(
    meshes: list,
    targets: list[tuple[torch.Tensor, torch.Tensor]],
    grid_shape,
    config: TrainConfig,
    device,
    masks: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """:func:`~imagetomesh.training.losses.mesh_decoder_loss` of each case's ``meshes[b]`` against its
    ``targets[b]`` (``points (P, 3)``, ``normals (P, 3)`` grid coordinates) and its organ's ``masks[b]``
    (``(B, D, H, W)`` bool, for the raster term), averaged over the cases of a batch on a grid of
    ``grid_shape`` ``(D, H, W)``: ``{term: tensor}``, ``total`` the loss."""
    scale = isotropic_scale(grid_shape).to(device)
    voxel = isotropic_voxel_size(grid_shape)
    terms: dict[str, torch.Tensor] = {}
    for case_meshes, (points, normals), mask in zip(meshes, targets, masks):
        case_terms = mesh_decoder_loss(
            case_meshes, points.to(device), normals.to(device), scale, config.loss, voxel=voxel, label=mask.to(device)
        )
        for k, v in case_terms.items():
            terms[k] = terms.get(k, 0.0) + v / len(meshes)
    return terms


def logged_terms(terms: dict) -> dict[str, float]:
    """Loss terms (tensors or numbers) as floats for the log."""
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}


def organ_decoder_loss(
    net,
    config: TrainConfig,
    organ: int,
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    device,
    starts: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The mesh loss of organ ``organ``'s decoder on a batch of crops around that organ (``images (B, 1, d + 2m,
    h + 2m, w + 2m)`` with the model's ``context_margin`` m, ``labels (B, d, h, w)`` class indices of the crops):
    each case's target is ``loss.target_points`` samples of the organ's smoothed surface in the crop
    (``loss.target_smoothing``), the terms averaged over cases, in the isotropic frame of the crop (whose grid
    the meshes are in), not of the grown image. ``starts``: the crops' scan guides ``(probabilities (B, d, h, w),
    voxels (B, d, h, w))`` the decoders start from (:func:`~imagetomesh.training.organ_crops.start_probabilities`);
    None: each starts from its U-Net's softmax of the crop."""
    probabilities = None
    if starts is not None:
        probabilities = start_probabilities(*starts, organ, len(config.organs) + 1).to(device)
    _, meshes = net(images.to(device), organ=organ, probabilities=probabilities)
    targets = [
        surface_samples(label == organ, config.loss.target_points, generator, config.loss.target_smoothing)
        for label in labels
    ]
    terms = mean_mesh_terms(meshes, targets, labels.shape[1:], config, device, labels == organ)
    terms["loss"] = terms["total"]
    return terms["total"], logged_terms(terms)


def image_batch(config: TrainConfig, cases, generator, mirror: Mirror | None = None, surfaces: bool = False):
    """A training batch of the prepared ``cases`` as ``config`` draws it, organ crops aside: ``config.patch`` crops
    (:func:`~imagetomesh.training.data.random_patch_batch`: foreground-centred, class-balanced, mirrored by
    ``mirror``) or whole augmented images (:func:`~imagetomesh.training.data.random_image_batch`, with their
    surface samples when ``surfaces``). The batch's images come first."""
    if config.patch:
        return random_patch_batch(
            cases,
            config.batch_size,
            tuple(config.patch),
            config.augment,
            generator,
            config.foreground,
            config.balance_classes,
            mirror,
        )
    return random_image_batch(cases, config.batch_size, config.augment, generator, return_surfaces=surfaces)


class ImageToMeshTask(Task):
    """``unet``, ``voxel2mesh`` or ``pixel2mesh3d`` (``config.kind``) on an MSD folder; ``init_from``: a model folder."""

    batches_in_workers = True  # crops of the prepared cases, nothing a step changes

    def __init__(self, config: TrainConfig, run, init_from=None) -> None:
        super().__init__(config, run)
        self.init_from = init_from

    @classmethod
    def configs(cls, kind: str) -> dict[str, TrainConfig]:
        return image_configs()[kind]

    def setup(self) -> None:
        run, config = self.run, self.config
        if config.deep_supervision and config.kind != "unet":
            raise InputError(f"deep_supervision trains the levels of a unet; set it to 0 for {config.kind}")
        dense = config.kind != "unet" and config.loss.target == "dense"
        self.split, self.train_cases, self.val_cases = prepare_split(
            run.data_dir,
            run.out,
            config.grid,
            run.seed,
            progress=run.writer,
            surface_points=config.loss.target_points if dense else 0,
            surface_smoothing=config.loss.target_smoothing,
            organs=config.organ_labels,
            partly_contoured=config.organ_classes("partly_contoured"),
            # the batch workers' cores are free until the loop starts
            threads=max(config.threads, config.batch_workers),
        )
        if config.pseudo_label_teachers:
            if not config.organs or config.kind != "unet":
                raise InputError("pseudo_label_teachers complete several-organ labels: they are for a unet with organs")
            added = add_pseudo_labels(
                self.train_cases,
                config.pseudo_label_teachers,
                config.pseudo_label_band,
                config.pseudo_label_min_fraction,
                run.out / "pseudo-labels.pt",
            )
            run.log(describe_pseudo_labels(added, config.organs))
            #: the teachers' weights, for the card (read once, not at every checkpoint)
            self.teachers_sha256_16 = teachers_key(config.pseudo_label_teachers)
        self.organ_decoders = bool(config.model.get("organ_crops"))
        if config.organs and config.kind != "unet" and not self.organ_decoders:
            raise InputError(
                f"several organs (config.organs) are for the unet kind or a voxel2mesh with organ_crops, not {config.kind}"
            )
        if self.organ_decoders:
            if not config.freeze_unet:
                raise InputError(
                    "a voxel2mesh with one decoder per organ trains its decoders on a trained several-organ U-Net: "
                    "set freeze_unet and give --init-from a unet model of the same organs (e.g. unet-headneck-ct)"
                )
            self.cases_by_organ = organ_cases(self.train_cases, len(config.organs))
            run.log(describe_organ_cases(self.cases_by_organ, config.organs))
        elif config.scan_starts is not None:
            raise InputError("scan_starts start the decoders of a voxel2mesh with organ_crops: set it to None")
        self.mirror = self._mirror()
        self.model = build_model(config.kind, config.model).to(run.device)
        #: voxels of image around each organ crop that the U-Net reads (Voxel2Mesh's ``context_margin``)
        self.context = self.model.config.context_margin if self.organ_decoders else 0
        if self.init_from:
            init_from_model(self.model, config.kind, self.init_from, run.log, config.organs)
            if config.restart_classes:
                restart_classes(self.model.unet.head, config.organ_classes("restart_classes"))
                run.log(f"restarted the outputs of {', '.join(config.restart_classes)} at a 1 % prior")
        if config.freeze_unet:
            if config.kind == "unet" or not self.init_from:
                raise InputError(
                    "freeze_unet fine-tunes the mesh decoder of a voxel2mesh or pixel2mesh3d model on a trained "
                    "U-Net: give --init-from a trained model (and a mesh-model kind)"
                )
            self.model.unet.requires_grad_(False)
        #: the training and validation crops' scan guides (``config.scan_starts``), None without
        self.train_guides, self.val_guides = self._scan_starts()
        #: the coarse decoder levels' logit heads (``config.deep_supervision``), None without
        self.supervision_heads = self._supervision_heads()
        #: what trains: the model, with its supervision heads where there are some
        self.trained = (
            self.model if self.supervision_heads is None else DeeplySupervisedUNet(self.model, self.supervision_heads)
        )
        self.net = run.wrap(self.trained)
        learned = [p for p in self.trained.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(learned, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = one_cycle(self.optimizer, config.lr, config.steps)

    def _scan_starts(self) -> tuple[OrganCropGuides | None, OrganCropGuides | None]:
        """The scan guides of the training crops (jittered by ``crop_jitter``) and of the validation crops that
        ``config.scan_starts`` asks for (made once and kept in the run folder), or ``(None, None)``."""
        c, run = self.config, self.run
        if c.scan_starts is None:
            return None, None
        if not self.model.reads_localiser_probabilities:
            raise InputError(
                'scan_starts are the starts of surface-start decoders: set the model\'s start "unet_surface"'
            )
        owner = "this training config's scan_starts"
        nets, bf16 = guide_networks(self.model.unet, c.scan_starts, owner, c.organs, c.grid.to_dict(), run.device)
        crops, val_by_organ = c.model["organ_crops"], organ_cases(self.val_cases, len(c.organs))
        guides = [
            organ_crop_guides(
                by_organ, crops, self.context, jitter, nets, run.device, run.out / f"{name}_scan_starts.pt", bf16
            )
            for by_organ, jitter, name in ((self.cases_by_organ, c.crop_jitter, "train"), (val_by_organ, 0.0, "val"))
        ]
        run.log(describe_guides("scan starts", c.scan_starts, bf16))
        return guides[0], guides[1]

    def _supervision_heads(self) -> DeepSupervisionHeads | None:
        """The heads of ``config.deep_supervision`` coarser levels of the U-Net, on the run's device; None for 0;
        :class:`InputError` for a U-Net with fewer levels."""
        levels = self.config.deep_supervision
        if not levels:
            return None
        unet = self.model.unet
        try:
            heads = DeepSupervisionHeads(unet.decoder_channels, unet.config.num_classes, levels)
        except ValueError as e:
            raise InputError(f"deep_supervision: {e}") from None
        return heads.to(self.run.device)

    def checkpoint_parts(self) -> dict:
        parts = super().checkpoint_parts()
        if self.supervision_heads is not None:
            parts["supervision_heads"] = self.supervision_heads
        return parts

    def clip_parameters(self):
        return self.trained.parameters()

    def _mirror(self) -> Mirror | None:
        """The left-right mirror of the training crops (``augment.mirror`` > 0), None without one;
        :class:`InputError` where the config cannot mirror (one object, organ decoders, no grid direction)."""
        c = self.config
        if c.augment.mirror <= 0:
            return None
        if not c.organs or not c.patch or self.organ_decoders or c.grid.direction is None:
            raise InputError(
                "augment.mirror mirrors several-organ U-Net crops (organs and patch set) on a grid with a fixed "
                "direction; use augment.flip for one object, and set augment.mirror to 0 for organ decoders"
            )
        return Mirror(c.grid.array_axis(0), tuple(mirrored_classes([o["name"] for o in c.organs])))

    def before_step(self, progress: float) -> None:
        if self.config.freeze_unet:  # the engine sets train mode (after each validation too)
            self.model.unet.eval()

    def batch(self, generator):
        dense = self.config.kind != "unet" and self.config.loss.target == "dense"
        c = self.config
        if self.organ_decoders:
            crops = c.model["organ_crops"]
            return random_organ_crop_batch(
                self.cases_by_organ,
                crops,
                c.batch_size,
                c.augment,
                generator,
                c.crop_jitter,
                self.context,
                self.train_guides,
            )
        return image_batch(c, self.train_cases, generator, self.mirror, dense)

    def loss(self, batch, generator):
        if self.organ_decoders:
            organ, images, labels, starts = batch
            return organ_decoder_loss(self.net, self.config, organ, images, labels, generator, self.run.device, starts)
        if self.supervision_heads is not None:
            return self._deep_supervised_loss(batch)
        if self.config.organs:
            images, labels, present = batch
            logits, _ = self.net(images.to(self.run.device))
            loss = partial_label_loss(
                logits, labels.to(self.run.device), present.to(self.run.device), self.config.balanced_ce
            )
            return loss, {"seg": float(loss.detach()), "loss": float(loss.detach())}
        return image_to_mesh_loss(self.net, self.config, batch[0], batch[1], generator, self.run.device, *batch[2:])

    def _deep_supervised_loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The U-Net's loss at the full resolution and its supervised coarser levels
        (:func:`~imagetomesh.training.deep_supervision.deep_supervised_loss`): the several-organ
        :func:`~imagetomesh.training.losses.partial_label_loss`, or ``loss.ce`` times the one-object
        :func:`~imagetomesh.training.losses.segmentation_loss`."""
        device = self.run.device
        logits, coarse = self.net(batch[0].to(device))
        labels = batch[1].to(device)
        if self.config.organs:
            present = batch[2].to(device)
            loss = deep_supervised_loss(partial_label_loss, logits, coarse, labels, present, self.config.balanced_ce)
        else:
            loss = self.config.loss.ce * deep_supervised_loss(segmentation_loss, logits, coarse, labels)
        return loss, {"seg": float(loss.detach()), "loss": float(loss.detach())}

    def validate(self) -> dict[str, float]:
        names = [o["name"] for o in self.config.organs or []]
        if self.organ_decoders:
            crops = self.config.model["organ_crops"]
            return organ_mesh_metrics(
                self.model, self.val_cases, self.run.device, names, crops, self.context, self.val_guides
            )
        if self.config.organs:
            return organ_metrics(self.model, self.val_cases, self.run.device, names)
        return segmentation_metrics(self.model, self.val_cases, self.run.device)

    def score(self, metrics: dict[str, float]) -> float:
        return -metrics.get("val_mesh_dice", metrics["val_dice"])

    def card(self, metrics: dict, state: RunState) -> dict:
        c = self.config
        card = run_card(self.run, c.kind, c.model, c.grid, self.split, metrics, state.step)
        if c.organs:
            card["organs"] = c.organs
        if c.pseudo_label_teachers:  # the labels it learned from are partly its teachers' (training.pseudo_labels)
            card["training"]["pseudo_labels"] = {
                "teachers": list(c.pseudo_label_teachers),
                "teachers_sha256_16": self.teachers_sha256_16,
                "band": c.pseudo_label_band,
                "min_fraction": c.pseudo_label_min_fraction,
            }
        if c.scan_starts:  # segment then starts the decoders from the probabilities they trained on
            card["ensemble"] = list(c.scan_starts)
        if self.mirror is not None:  # trained on mirrored crops: segment averages a scan with its mirror
            card["mirror_averaged"] = True
        return card
