"""Training U-Net, Voxel2Mesh and Pixel2Mesh-3D: cross-entropy on the segmentation head, plus the mesh losses.

Loss: ``ce CE(logits, label)`` plus, for the mesh models, the mean over cases of
:func:`~imagetomesh.training.losses.mesh_decoder_loss` against ``loss.sample_points`` boundary
points of the label (isotropic frame). AdamW, one-cycle learning rate, gradient norm clipped
at 5. Best model: the lowest validation Chamfer (mm) for mesh models, the highest Dice for the
U-Net. Configs: :func:`imagetomesh.training.configs.image_configs`.
"""

from __future__ import annotations

import torch

from imagetomesh.models.registry import build_model
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.training.configs import TrainConfig, image_configs
from imagetomesh.training.data import boundary_points, prepare_split, random_image_batch
from imagetomesh.training.init_weights import init_from_model
from imagetomesh.training.losses import mesh_decoder_loss, segmentation_loss
from imagetomesh.training.schedules import one_cycle, rescale_one_cycle
from imagetomesh.training.tasks.base import RunState, Task, run_card
from imagetomesh.training.validation import segmentation_metrics


def image_to_mesh_loss(
    net, config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, device
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of a batch (``images (B, 1, D, H, W)``, ``labels (B, D, H, W)``) and its terms
    (``seg``, the mesh terms averaged over cases, ``loss``)."""
    logits, meshes = net(images.to(device))
    terms = {"seg": segmentation_loss(logits, labels.to(device))}
    total = config.loss.ce * terms["seg"]
    if meshes is not None:
        scale = isotropic_scale(images.shape[2:]).to(device)
        for b, case_meshes in enumerate(meshes):
            points, normals = boundary_points(labels[b], max_points=config.loss.sample_points, generator=generator)
            mesh_terms = mesh_decoder_loss(case_meshes, points.to(device), normals.to(device), scale, config.loss)
            for k, v in mesh_terms.items():
                terms[k] = terms.get(k, 0.0) + v / len(meshes)
        total = total + terms["total"]
    terms["loss"] = total
    return total, {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}


class ImageToMeshTask(Task):
    """``unet``, ``voxel2mesh`` or ``pixel2mesh3d`` (``config.kind``) on an MSD folder; ``init_from``: a model folder."""

    def __init__(self, config: TrainConfig, run, init_from=None) -> None:
        super().__init__(config, run)
        self.init_from = init_from

    @classmethod
    def configs(cls, kind: str) -> dict[str, TrainConfig]:
        return image_configs()[kind]

    def setup(self) -> None:
        run, config = self.run, self.config
        self.split, self.train_cases, self.val_cases = prepare_split(
            run.data_dir, run.out, config.grid, run.seed, progress=run.writer
        )
        self.model = build_model(config.kind, config.model).to(run.device)
        if self.init_from:
            init_from_model(self.model, config.kind, self.init_from, run.log)
        self.net = run.wrap(self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = one_cycle(self.optimizer, config.lr, config.steps)

    def on_load(self) -> dict:
        return {**super().on_load(), "scheduler": lambda saved: rescale_one_cycle(saved, self.config.steps)}

    def batch(self, generator):
        return random_image_batch(self.train_cases, self.config.batch_size, self.config.augment, generator)

    def loss(self, batch, generator):
        return image_to_mesh_loss(self.net, self.config, *batch, generator, self.run.device)

    def validate(self) -> dict[str, float]:
        return segmentation_metrics(self.model, self.val_cases, self.run.device)

    def score(self, metrics: dict[str, float]) -> float:
        return metrics.get("val_chamfer_mm", -metrics["val_dice"])

    def card(self, metrics: dict, state: RunState) -> dict:
        c = self.config
        return run_card(self.run, c.kind, c.model, c.grid, self.split, metrics, state.step)
