"""Training ImplicitMeshNet: pretraining ``g_phi`` on random shapes, then end to end on images.

1. Pretraining (skipped once ``sdf_pretrained.safetensors`` exists): ``g_phi`` learns the SDF
   of randomly deformed icospheres (:mod:`imagetomesh.training.implicitmeshnet_shapes`); the
   targets come from :func:`imagetomesh.nn.sdf.grid_sdf` (exact near the surface, distance
   transform beyond); MSE weighted towards the zero level set, on every decoder level.
2. End to end: ``D = g_phi(f_theta(image))`` on the image grid, ``S = sigmoid(-D / tau)`` and
   ``alpha BCE(S, label) + beta ||L V||^2 + gamma CE(U-Net logits, label)`` trains ``f_theta``
   only (``L`` the symmetric normalised Laplacian of the template, ``V`` the final vertices in
   the isotropic frame, ``beta`` cosine-annealed from ``beta_start`` to ``beta_end``). The
   gradient reaches ``f_theta`` through ``g_phi``'s input vertices (tested). ``g_phi`` keeps
   learning the exact SDF of the detached predicted meshes with its own optimiser.

Losses: :mod:`imagetomesh.training.implicitmeshnet_losses`. The engine runs both phases; the
run folder holds, besides what the engine writes, ``pretrain.pt`` (phase 1's checkpoint),
``sdf_pretrained.safetensors``, ``sdf_net.safetensors`` and ``best/`` + ``final/`` model folders
of ``f_theta``. Both phases stop at their step count or time limit, whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from imagetomesh.geometry.laplacian import sym_norm_laplacian
from imagetomesh.io.atomic import atomic_write
from imagetomesh.models.implicitmeshnet import ImplicitMeshNet, ImplicitMeshNetConfig, MeshToSDF, MeshToSDFConfig
from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig
from imagetomesh.training.configs import HIPPOCAMPUS_GRID, UNET_CPU, UNET_GPU_RESIDUAL, named_config
from imagetomesh.training.data import prepare_split, random_image_batch
from imagetomesh.training.implicitmeshnet_losses import (
    beta_at,
    lr_factor,
    sdf_loss,
    sdf_step,
    sdf_targets,
    surface_terms,
)
from imagetomesh.training.implicitmeshnet_shapes import random_shape
from imagetomesh.training.init_weights import init_from_model
from imagetomesh.training.tasks.base import EngineOptions, LoopSettings, RunState, Task, run_card
from imagetomesh.training.validation import segmentation_metrics
from imagetomesh.weights import upgrade_state

PRETRAINED = "sdf_pretrained.safetensors"


@dataclass
class ImplicitMeshNetTrainConfig(EngineOptions):
    """Everything a run needs besides the data; saved as ``config.json``.

    ``model`` is ``f_theta``'s architecture, ``sdf_net`` ``g_phi``'s. Losses: ``alpha`` BCE,
    ``gamma`` CE, ``beta`` cosine from ``beta_start`` to ``beta_end``, ``tau`` the sigmoid
    temperature (isotropic grid units). ``lr_schedule`` ``"constant"`` or ``"cosine"`` (both
    learning rates decay to 0 over the run, by steps or time, whichever is further). SDF targets:
    exact within ``truncation``; MSE weight ``1 + near_weight exp(-|sdf| / near_sigma)``; ``sdf_updates`` ``g_phi`` updates per end-to-end
    step. Time limits in seconds (0: none).
    """

    model: dict
    sdf_net: dict = field(default_factory=lambda: MeshToSDFConfig().to_dict())
    kind: str = "implicitmeshnet"
    grid: GridSpec = HIPPOCAMPUS_GRID
    steps: int = 3000
    batch_size: int = 2
    lr: float = 1e-4
    lr_sdf: float = 3e-5
    weight_decay: float = 1e-4
    lr_schedule: str = "constant"
    val_every: int = 100
    alpha: float = 1.0
    gamma: float = 0.1
    beta_start: float = 1000.0
    beta_end: float = 0.01
    tau: float = 1e-2
    truncation: float = 0.06
    near_weight: float = 10.0
    near_sigma: float = 0.03
    sdf_updates: int = 1
    pretrain_steps: int = 2000
    pretrain_batch: int = 4
    pretrain_lr: float = 1e-3
    pretrain_time_limit_s: float = 0.0
    time_limit_s: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: int = 1


def implicitmeshnet_configs() -> dict[str, ImplicitMeshNetTrainConfig]:
    """``gpu``: the paper's residual U-Net 16-32-64-128-256 and learning rates. ``cpu``: the plain
    U-Net of the bundled ``unet-hippocampus`` (start it with ``--init-from``), a higher
    learning rate and time limits that fit a ~1 hour run on 1 thread. ``cpu-finetune``: continues
    a ``cpu`` run (``--init-from RUN/best --sdf-from RUN/sdf_net.safetensors``) at the paper's
    learning rates, cosine-decayed to 0, with the Laplacian weight at its annealed end value."""
    cpu_model = {"unet": UNET_CPU, "hidden": 64}
    return {
        "cpu": ImplicitMeshNetTrainConfig(
            cpu_model,
            steps=3000,
            lr=5e-4,
            lr_sdf=3e-4,
            sdf_updates=2,
            val_every=50,
            pretrain_steps=2000,
            pretrain_batch=2,
            pretrain_time_limit_s=25 * 60,
            time_limit_s=80 * 60,
        ),
        "cpu-finetune": ImplicitMeshNetTrainConfig(
            cpu_model,
            steps=800,
            lr=1e-4,
            lr_sdf=3e-5,
            lr_schedule="cosine",
            beta_start=0.01,
            beta_end=0.01,
            sdf_updates=2,
            val_every=50,
            pretrain_steps=0,
            time_limit_s=60 * 60,
        ),
        "gpu": ImplicitMeshNetTrainConfig(
            {"unet": UNET_GPU_RESIDUAL, "hidden": 128},
            sdf_net=MeshToSDFConfig(64, (128, 64, 32, 16)).to_dict(),
            steps=30000,
            batch_size=4,
            val_every=500,
            pretrain_steps=20000,
            pretrain_batch=8,
            threads=2,
        ),
    }


def get_implicitmeshnet_config(name: str) -> ImplicitMeshNetTrainConfig:
    return named_config(implicitmeshnet_configs(), name, "implicitmeshnet")


def save_sdf_net(g_net: MeshToSDF, path: Path) -> None:
    """Write ``g_phi``'s weights as safetensors, atomically."""
    from safetensors.torch import save_file

    with atomic_write(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in g_net.state_dict().items()}, str(tmp))


def start_sdf_net_from(g_net: MeshToSDF, weights: str | Path, pretrained: Path) -> None:
    """Load ``g_phi`` from a safetensors file and keep it as the run's ``pretrained`` weights (so a
    resumed run starts from them too); a file that does not fit this config's ``g_phi`` is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from imagetomesh.errors import InputError

    try:
        g_net.load_state_dict(upgrade_state("implicitmeshnet", load_file(str(weights))))
    except (OSError, SafetensorError, RuntimeError) as err:
        raise InputError(
            f"--sdf-from {weights}: not the mesh-to-SDF network of this config ({err}); "
            "give the sdf_net.safetensors of a run made with the same config family"
        ) from None
    save_sdf_net(g_net, pretrained)


class SDFPretraining(Task):
    """Phase 1: ``g_phi`` learns the SDF of random deformed spheres (checkpoint ``pretrain.pt``,
    log entries every 50 steps); writes ``sdf_pretrained.safetensors``."""

    name = "pretraining"
    log_fields = {"phase": "pretrain"}
    checkpoint_name = "pretrain.pt"
    seed_offset = 7
    final_folder = None
    result_folder = None

    def __init__(self, config: ImplicitMeshNetTrainConfig, run, g_net: MeshToSDF) -> None:
        super().__init__(config, run)
        self.model = g_net

    def settings(self) -> LoopSettings:
        c = self.config
        return LoopSettings(
            steps=c.pretrain_steps,
            log_every=50,
            checkpoint_every=50,
            time_limit_s=c.pretrain_time_limit_s,
            accumulate_steps=c.accumulate_steps,
            bf16_autocast=c.bf16_autocast,
            channels_last=c.channels_last,
        )

    def setup(self) -> None:
        config, dev = self.config, self.run.device
        mesh = DecoderMesh.template(ImplicitMeshNetConfig(**config.model).template_level, torch.ones(3))
        self.sphere, self.faces, self.edge_index = mesh.sphere, mesh.faces.to(dev), mesh.edge_index.to(dev)
        self.scale = isotropic_scale(config.grid.shape)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.pretrain_lr, weight_decay=config.weight_decay
        )

    def batch(self, generator):
        """``(pretrain_batch, N, 3)`` random shapes, grid coordinates."""
        shapes = [random_shape(self.sphere, self.scale, generator) for _ in range(self.config.pretrain_batch)]
        return torch.stack(shapes).to(self.run.device)

    def loss(self, verts, generator):
        shape = self.config.grid.shape
        target = sdf_targets(verts, self.faces, shape, self.config)
        loss = sdf_loss(self.model(verts.detach(), self.edge_index, shape), target, self.config)
        return loss, {"sdf_mse": float(loss.detach())}

    def finish(self, state: RunState) -> None:
        save_sdf_net(self.model, self.run.out / PRETRAINED)


class ImplicitMeshNetTask(Task):
    """Phase 2 (after :class:`SDFPretraining` unless ``sdf_pretrained.safetensors`` exists): ``f_theta``
    end to end through a frozen ``g_phi``, then ``sdf_updates`` ``g_phi`` updates on the detached meshes.

    ``init_from``: a model folder starting ``f_theta`` (see :func:`init_from_model`); ``sdf_from``:
    a ``g_phi`` weights file (a run's ``sdf_net.safetensors``) that replaces pretraining.
    """

    log_fields = {"phase": "end-to-end"}

    def __init__(self, config: ImplicitMeshNetTrainConfig, run, init_from=None, sdf_from=None) -> None:
        super().__init__(config, run)
        self.init_from, self.sdf_from = init_from, sdf_from

    @classmethod
    def configs(cls, kind: str = "implicitmeshnet") -> dict[str, ImplicitMeshNetTrainConfig]:
        return implicitmeshnet_configs()

    def phases(self) -> list[Task]:
        """Pretraining (unless its weights are in the run folder or come from ``sdf_from``), then this."""
        self.g_net = MeshToSDF(MeshToSDFConfig(**self.config.sdf_net)).to(self.run.device)
        pretrained = self.run.out / PRETRAINED
        if self.sdf_from and not pretrained.is_file():
            start_sdf_net_from(self.g_net, self.sdf_from, pretrained)
        first = [] if pretrained.is_file() else [SDFPretraining(self.config, self.run, self.g_net)]
        return first + [self]

    def setup(self) -> None:
        from safetensors.torch import load_file

        run, config, dev = self.run, self.config, self.run.device
        self.split, self.train_cases, self.val_cases = prepare_split(run.data_dir, run.out, config.grid, run.seed)
        self.model = ImplicitMeshNet(ImplicitMeshNetConfig(**config.model)).to(dev)
        self.g_net.load_state_dict(upgrade_state("implicitmeshnet", load_file(str(run.out / PRETRAINED))))
        if self.init_from:
            init_from_model(self.model, config.kind, self.init_from, run.log)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sdf_optimizer = torch.optim.AdamW(
            self.g_net.parameters(), lr=config.lr_sdf, weight_decay=config.weight_decay
        )
        template = self.model.template(config.grid.shape, dev)
        self.edge_index = template.edge_index
        self.laplacian = sym_norm_laplacian(self.edge_index, len(template.verts)).to(dev)

    def checkpoint_parts(self) -> dict:
        return {
            "model": self.model,
            "sdf_net": self.g_net,
            "optimizer": self.optimizer,
            "sdf_optimizer": self.sdf_optimizer,
        }

    def on_load(self) -> dict:
        return {**super().on_load(), "sdf_net": lambda saved: upgrade_state("implicitmeshnet", saved)}

    def before_step(self, progress: float) -> None:
        """Both learning rates and ``beta`` from one reading of the progress."""
        for optimizer, base_lr in ((self.optimizer, self.config.lr), (self.sdf_optimizer, self.config.lr_sdf)):
            for group in optimizer.param_groups:
                group["lr"] = base_lr * lr_factor(progress, self.config)
        self.beta = beta_at(progress, self.config)

    def batch(self, generator):
        images, labels = random_image_batch(self.train_cases, self.config.batch_size, self.config.augment, generator)
        return images.to(self.run.device), labels.to(self.run.device)

    def loss(self, batch, generator):
        images, labels = batch
        loss, terms, self.verts, self.faces = surface_terms(
            self.model, self.g_net, images, labels, self.laplacian, self.beta, self.config
        )
        self.shape = images.shape[2:]
        return loss, terms

    def after_step(self, terms: dict[str, float]) -> None:
        terms["sdf_mse"] = sdf_step(
            self.g_net,
            self.sdf_optimizer,
            self.verts,
            self.faces,
            self.edge_index,
            self.shape,
            self.config,
            self.config.sdf_updates,
        )

    def validate(self) -> dict[str, float]:
        return segmentation_metrics(self.model, self.val_cases, self.run.device)

    def score(self, metrics: dict[str, float]) -> float:
        return -metrics["val_mesh_dice"]

    def after_validation(self) -> None:
        save_sdf_net(self.g_net, self.run.out / "sdf_net.safetensors")

    def final_metrics(self, state: RunState) -> dict[str, float]:
        return dict(self.validate(), step=state.step)

    def card(self, metrics: dict, state: RunState) -> dict:
        c = self.config
        return run_card(
            self.run, c.kind, ImplicitMeshNetConfig(**c.model).to_dict(), c.grid, self.split, metrics, state.step
        )


def pretrain_sdf(g_net: MeshToSDF, config: ImplicitMeshNetTrainConfig, out: Path, device, seed: int, log=print) -> None:
    """Run phase 1 alone in the run folder ``out`` (resumable); writes ``sdf_pretrained.safetensors``."""
    from imagetomesh.training.engine import Run, hardware, run_phase

    device = torch.device(device)
    phase = SDFPretraining(config, Run(Path(out), Path(out), device, seed, "", log, hardware=hardware(device)), g_net)
    run_phase(phase, phase.run)
