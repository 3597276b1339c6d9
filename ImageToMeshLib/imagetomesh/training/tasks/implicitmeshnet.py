"""Training ImplicitMeshNet: pretraining ``g_phi`` on random shapes, then end to end on images.

1. Pretraining (skipped once ``sdf_pretrained.safetensors`` exists): ``g_phi`` learns the SDF
   of randomly deformed icospheres (:mod:`imagetomesh.training.implicitmeshnet_shapes`) and, with
   ``fitted_shapes`` > 0, of the template fitted to the training split's labels (never val or
   test; fitted once, cached in ``template_fits.safetensors``), randomly rotated, scaled and
   deformed each time one is drawn; the targets come from :func:`imagetomesh.nn.sdf.grid_sdf`
   (exact near the surface, distance transform beyond); MSE weighted towards the zero level
   set, on every decoder level.
2. End to end: ``D = g_phi(f_theta(image))`` on the image grid, ``S = sigmoid(-D / tau)`` and
   ``alpha BCE(S, label) + beta ||L V||^2 + gamma seg(U-Net logits, label)`` trains ``f_theta``
   only (``L`` the symmetric normalised Laplacian of the template, ``V`` the final vertices in
   the isotropic frame, ``beta`` cosine-annealed from ``beta_start`` to ``beta_end`` over the
   first ``beta_anneal`` of the run, ``seg`` cross-entropy or Dice + cross-entropy). The U-Net
   may learn at its own rate (``lr_unet``: a second parameter group). The gradient reaches
   ``f_theta`` through ``g_phi``'s input vertices (tested). ``g_phi`` keeps learning the exact
   SDF of the detached predicted meshes with its own optimiser.

Losses: :mod:`imagetomesh.training.implicitmeshnet_losses`. The engine runs both phases; the
run folder holds, besides what the engine writes, ``pretrain.pt`` (phase 1's checkpoint),
``sdf_pretrained.safetensors``, ``sdf_net.safetensors`` and ``best/`` + ``final/`` model folders
of ``f_theta``. Both phases stop at their step count or time limit, whichever comes first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from imagetomesh.geometry.laplacian import sym_norm_laplacian
from imagetomesh.io.atomic import atomic_write
from imagetomesh.models.implicitmeshnet import ImplicitMeshNet, ImplicitMeshNetConfig, MeshToSDF, MeshToSDFConfig
from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.nn.precision import to_channels_last
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig
from imagetomesh.training.configs import HIPPOCAMPUS_GRID, UNET_CPU, UNET_GPU_RESIDUAL, V2M_LOSS_V2, named_config
from imagetomesh.training.data import prepare_cases, prepare_split, random_image_batch
from imagetomesh.training.implicitmeshnet_losses import (
    beta_at,
    lr_factor,
    sdf_loss,
    sdf_step,
    sdf_targets,
    surface_terms,
)
from imagetomesh.training.implicitmeshnet_shapes import augment_fitted_shape, fit_template_to_label, random_shape
from imagetomesh.training.init_weights import init_from_model
from imagetomesh.training.tasks.base import EngineOptions, LoopSettings, RunState, Task, run_card
from imagetomesh.training.validation import segmentation_metrics
from imagetomesh.weights import upgrade_state

PRETRAINED = "sdf_pretrained.safetensors"
#: The template fitted to the training labels (``g_phi``'s organ-like pretraining shapes), in the run folder.
TEMPLATE_FITS = "template_fits.safetensors"
#: The loss that fits the template to a label: Voxel2Mesh's version-2 loss with the dense target
#: (``docs/mesh-losses.md``), regularised more (normal 1, Laplacian 1, edge 0.1 against 0.3, 0.3, 0):
#: on 3 training cases a 200-step fit from the label's ellipsoid keeps Dice 0.97 with the label and
#: 1.8 % self-intersecting faces against 9 % at Voxel2Mesh's weights (2562 vertices, not 1092).
FIT_WEIGHTS = replace(V2M_LOSS_V2, normal=1.0, laplacian=1.0, edge=0.1)


@dataclass
class ImplicitMeshNetTrainConfig(EngineOptions):
    """Everything a run needs besides the data; saved as ``config.json``.

    ``model`` is ``f_theta``'s architecture, ``sdf_net`` ``g_phi``'s. Losses: ``alpha`` BCE,
    ``gamma`` the segmentation head's loss (``seg_loss`` ``"ce"`` cross-entropy or ``"dice_ce"``
    soft Dice + cross-entropy, :func:`~imagetomesh.training.losses.segmentation_loss`), ``beta``
    cosine from ``beta_start`` to ``beta_end`` over the first ``beta_anneal`` (fraction) of the
    run and ``beta_end`` after, ``tau`` the sigmoid temperature (isotropic grid units; one voxel
    of the hippocampus grid is 2/55 = 0.036). Learning rates: ``lr`` ``f_theta``'s (its graph
    stages' when ``lr_unet`` is set, the U-Net's then ``lr_unet``), ``lr_sdf`` ``g_phi``'s;
    ``lr_schedule`` ``"constant"`` or ``"cosine"`` (all decay to 0 over the run, by steps or time,
    whichever is further). SDF targets: exact within ``truncation``; MSE weight ``1 + near_weight
    exp(-|sdf| / near_sigma)``; ``sdf_updates`` ``g_phi`` updates per end-to-end step.
    Pretraining shapes: a share ``fitted_shapes`` are the template fitted to training labels
    (``fit_steps`` optimisation steps each, the first ``fit_cases`` training cases, 0: all), the
    rest random deformed spheres. Time limits in seconds (0: none).
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
    lr_unet: Optional[float] = None
    seg_loss: str = "ce"
    beta_anneal: float = 1.0
    fitted_shapes: float = 0.0
    fit_steps: int = 200
    fit_cases: int = 0

    def __post_init__(self) -> None:
        if self.seg_loss not in ("ce", "dice_ce"):
            raise ValueError(f"seg_loss must be 'ce' or 'dice_ce', got {self.seg_loss!r}")
        if not 0 < self.beta_anneal <= 1:
            raise ValueError(f"beta_anneal must be in (0, 1], got {self.beta_anneal}")
        if not 0 <= self.fitted_shapes <= 1:
            raise ValueError(f"fitted_shapes must be in [0, 1], got {self.fitted_shapes}")

    @classmethod
    def from_dict(cls, d: dict) -> ImplicitMeshNetTrainConfig:
        """The config of a ``config.json`` (its ``config_name`` and ``seed`` ignored)."""
        d = {k: v for k, v in d.items() if k not in ("config_name", "seed")}
        d["grid"] = GridSpec.from_dict(d["grid"])
        d["augment"] = AugmentConfig(**d["augment"])
        return cls(**d)


def implicitmeshnet_configs() -> dict[str, ImplicitMeshNetTrainConfig]:
    """``gpu``: the paper's residual U-Net 16-32-64-128-256 and learning rates. ``cpu``: the plain
    U-Net of the bundled ``unet-hippocampus`` (start it with ``--init-from``), a higher
    learning rate and time limits that fit a ~1 hour run on 1 thread. ``cpu-finetune``: continues
    a ``cpu`` run (``--init-from RUN/best --sdf-from RUN/sdf_net.safetensors``) at the paper's
    learning rates, cosine-decayed to 0, with the Laplacian weight at its annealed end value.

    ``cpu-v2`` (issue 15): the retraining recipe of ``implicitmeshnet-hippocampus``, started with
    ``--init-from Resources/Models/voxel2mesh-hippocampus`` (the better voxel head on the 21
    validation cases: Dice 0.905 against ``unet-hippocampus``'s 0.889). The U-Net learns at a tenth
    of the graph stages' rate (3e-5 against 3e-4, both cosine-decayed to 0) under Dice +
    cross-entropy at weight 1, as it was trained, so its head stays healthy; weight decay 1e-6 (the
    paper's); ``beta`` annealed 1000 -> 0.01 over the first 30 % of the steps; ``g_phi``
    pretrained 2500 steps, half of its shapes the template fitted to the training labels
    (randomly rotated, scaled and deformed), half random deformed spheres; bf16 autocast and
    channels-last convolutions (the graph parts and splatting stay float32).
    ``tau`` = 0.0175 (0.48 voxel; the previous 0.01 is 0.27 voxel, the paper's ~0.64 voxel) is the
    middle candidate of the validation sweep that chooses it, not yet a measured optimum. The label
    itself constrains nothing: with the exact SDF of the template fitted to 8 validation labels the
    likelihood of the labels under ``sigmoid(-D / tau)`` keeps rising down to 0.15 voxel
    (``Testing/benchmarks/implicitmeshnet_tau.py``), so ``tau`` only has to cover ``g_phi``'s error.
    The sweep (``docs/implicitmeshnet.md``): (1) once this run's pretraining has written
    ``RUN/sdf_pretrained.safetensors``, the benchmark with ``--sdf-net`` that file gives the
    maximum-likelihood ``tau`` under that ``g_phi``; (2) end-to-end runs from that ``g_phi``
    (``--sdf-from``) with ``--tau`` 0.0098, 0.0175 and 0.0233 (0.27, 0.48, 0.64 voxel; the
    benchmark's value too if it is outside them), each stopped with Ctrl-C after its step-300
    validation; (3) the highest ``val_mesh_dice`` at step 300 wins and its run is resumed with its
    own command to the end; the others are deleted.
    """
    cpu_model = {"unet": UNET_CPU, "hidden": 64}
    configs = {
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
        "cpu-v2": ImplicitMeshNetTrainConfig(
            cpu_model,
            steps=3000,
            batch_size=2,
            lr=3e-4,
            lr_unet=3e-5,
            lr_sdf=1e-4,
            lr_schedule="cosine",
            weight_decay=1e-6,
            seg_loss="dice_ce",
            gamma=1.0,
            beta_anneal=0.3,
            tau=0.0175,
            sdf_updates=2,
            val_every=100,
            pretrain_steps=2500,
            pretrain_batch=2,
            fitted_shapes=0.5,
            fit_steps=200,
            bf16_autocast=True,
            channels_last=True,
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
    # the bundled cpu-v2 model (--init-from Resources/Models/implicitmeshnet-hippocampus) fine-tuned with the
    # Laplacian weight held at 1 instead of annealed to 0.01, to see whether fewer folds in the network's
    # meshes (13.5 % of their faces cross another at 0.01) raise the mesh's Dice; g_phi, which is not
    # bundled, pretrained again as cpu-v2's was. Tried (session 33), not bundled: validation mesh Dice 0.877
    # at its best step (500) against the bundled model's 0.878, its network's folds 10.6 % against 14.6 %
    configs["cpu-v2-smooth"] = replace(
        configs["cpu-v2"], steps=600, lr=1e-4, lr_unet=1e-5, beta_start=1.0, beta_end=1.0, beta_anneal=1.0
    )
    # the same fine-tuning at the Laplacian weight the bundled model ended with (0.01): with cpu-v2-smooth's run, a
    # second model fine-tuned from the bundled one, for weight means with it ("model soups"). Tried (session 34, seed 1),
    # not bundled: its best step (500) 0.877 alone; validation Dice of the soups 0.8783 (with the bundled model), 0.8785
    # (cpu-v2-smooth's best with it), 0.8779 (all three), against the bundled model's 0.8785 (docs/implicitmeshnet.md)
    configs["cpu-v2-tail"] = replace(configs["cpu-v2-smooth"], beta_start=0.01, beta_end=0.01)
    return configs


def get_implicitmeshnet_config(name: str) -> ImplicitMeshNetTrainConfig:
    return named_config(implicitmeshnet_configs(), name, "implicitmeshnet")


def parameter_groups(model: ImplicitMeshNet, config: ImplicitMeshNetTrainConfig) -> tuple[list[dict], list[float]]:
    """``f_theta``'s optimiser parameter groups and their base learning rates: one group at ``lr``, or
    with ``lr_unet`` set the graph stages at ``lr`` (first: the engine logs its rate) and the U-Net at ``lr_unet``."""
    if config.lr_unet is None:
        return [{"params": list(model.parameters()), "lr": config.lr}], [config.lr]
    unet = list(model.unet.parameters())
    in_unet = {id(p) for p in unet}
    head = [p for p in model.parameters() if id(p) not in in_unet]
    return [{"params": head, "lr": config.lr}, {"params": unet, "lr": config.lr_unet}], [config.lr, config.lr_unet]


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


def _case_seed(case_id: str) -> int:
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little")


def template_fits(run, config: ImplicitMeshNetTrainConfig, sphere: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``(K, N, 3)`` the template fitted to the labels of the run's training cases (grid coordinates).

    Only the ``train`` part of the run's split (``split.json``, made as training makes it) is read,
    never ``val`` or ``test``: the first ``config.fit_cases`` of it (0: all). Each fit
    (:func:`~imagetomesh.training.implicitmeshnet_shapes.fit_template_to_label`, ``config.fit_steps``
    steps of :data:`FIT_WEIGHTS`, seeded by the case id) is cached in the run folder's
    :data:`TEMPLATE_FITS` (every 10 cases, so an interrupted fitting resumes where it stopped).
    """
    from safetensors.torch import load_file, save_file

    from imagetomesh.training.msd import load_or_make_split, read_msd

    path = run.out / TEMPLATE_FITS
    cases = read_msd(run.data_dir)
    ids = load_or_make_split(list(cases), run.out / "split.json", seed=run.seed)["train"]
    if config.fit_cases:
        ids = ids[: config.fit_cases]
    done: dict[str, torch.Tensor] = {}
    if path.is_file():
        saved = load_file(str(path))
        done = {k: v for k, v in saved.items() if k in ids}
    todo = [c for c in ids if c not in done]
    if todo:
        run.log(f"fitting the template to {len(todo)} training labels ({len(done)} cached in {path.name})")
    for n, case_id in enumerate(todo, start=1):
        case = prepare_cases([cases[case_id]], config.grid, progress=False)[0]
        generator = torch.Generator().manual_seed(_case_seed(case_id))
        done[case_id] = fit_template_to_label(
            sphere, faces, case.label, FIT_WEIGHTS, config.fit_steps, generator=generator
        )
        if n % 10 == 0 or n == len(todo):
            with atomic_write(path) as tmp:
                save_file(
                    {k: v.contiguous() for k, v in done.items()},
                    str(tmp),
                    metadata={"fit_steps": str(config.fit_steps), "weights": json.dumps(FIT_WEIGHTS.__dict__)},
                )
    return torch.stack([done[c] for c in ids])


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
            # its own pretrain_steps and time limit: only the main phase's steps are fitted to the time limit
            **{**c.loop_options(), "fit_steps_to_time": False},
        )

    def setup(self) -> None:
        config, dev = self.config, self.run.device
        mesh = DecoderMesh.template(ImplicitMeshNetConfig(**config.model).template_level, torch.ones(3))
        self.sphere, self.faces, self.edge_index = mesh.sphere, mesh.faces.to(dev), mesh.edge_index.to(dev)
        self.scale = isotropic_scale(config.grid.shape)
        self.fitted = template_fits(self.run, config, self.sphere, mesh.faces) if config.fitted_shapes > 0 else None
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.pretrain_lr, weight_decay=config.weight_decay
        )

    def batch(self, generator):
        """``(pretrain_batch, N, 3)`` shapes, grid coordinates: each a random deformed sphere or, with
        probability ``fitted_shapes``, a randomly varied template fit of a training label."""
        shapes = []
        for _ in range(self.config.pretrain_batch):
            if self.fitted is not None and float(torch.rand(1, generator=generator)) < self.config.fitted_shapes:
                pick = int(torch.randint(len(self.fitted), (1,), generator=generator))
                shapes.append(augment_fitted_shape(self.fitted[pick], self.scale, generator))
            else:
                shapes.append(random_shape(self.sphere, self.scale, generator))
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
        import math

        from imagetomesh.errors import InputError

        if not (math.isfinite(config.tau) and config.tau > 0):
            raise InputError(f"--tau must be a positive number (isotropic grid units), got {config.tau}")
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
        groups, self.base_lrs = parameter_groups(self.model, config)
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.sdf_optimizer = torch.optim.AdamW(
            self.g_net.parameters(), lr=config.lr_sdf, weight_decay=config.weight_decay
        )
        if config.channels_last:
            to_channels_last(self.g_net)  # the engine converts f_theta, the phase's model
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
        """Every learning rate and ``beta`` from one reading of the progress."""
        factor = lr_factor(progress, self.config)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * factor
        for group in self.sdf_optimizer.param_groups:
            group["lr"] = self.config.lr_sdf * factor
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
        if len(self.optimizer.param_groups) > 1:  # logged as a mean over the entry's steps (``lr``: the last step's)
            terms["lr_unet"] = self.optimizer.param_groups[1]["lr"]

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
