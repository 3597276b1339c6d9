"""Auto-decoder training of a DALS shape prior (Jensen et al., 2022).

One latent ``z_i`` (``d = 128``) per training shape is learned together with the decoder
weights ``Theta`` by minimising, over mini-batches of shapes,

    ``sum_i Chamfer(M_Theta(z_i), S_i) + lambda_reg L_reg(M_Theta(z_i)) + lambda_n |z_i|^2``

with ``M_Theta(z) = x + D_Theta(z, x)`` on an icosphere template (level 3) that is randomly
rotated at every step, ``Chamfer`` the mean squared Chamfer distance between points on the
predicted mesh (its vertices plus area-uniform samples) and samples of the shape's surface,
``L_reg`` the triangle-quality regulariser ``1 - 4 sqrt(3)/|F| sum_f A_f / (a_f^2 + b_f^2 + c_f^2)``,
``lambda_reg = 1e-4``, ``lambda_n = 1e-3``. Shapes are in their normalised frame (centred on the
surface centroid, inside the unit sphere). Adam, lr 2e-3, halved when the windowed mean loss
stops improving, down to 1e-5. Augmentation: a smooth non-rigid deformation of the target
points in the spirit of PointWOLF (:mod:`imagetomesh.training.dals_augment`).

The engine runs the loop (no gradient
clipping; the plateau schedule is stepped here); the run folder holds ``config.json``,
``log.jsonl``, ``checkpoint.pt``, ``latents.safetensors`` and the model folder ``model/``
(safetensors + card with the mean latent, normalisation, data, split and licence: the data's
description comes from :mod:`imagetomesh.training.data_sources`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from imagetomesh.errors import InputError
from imagetomesh.geometry.distances import chamfer_distance
from imagetomesh.geometry.mesh_losses import triangle_quality_regulariser
from imagetomesh.geometry.sampling import sample_points_on_mesh
from imagetomesh.geometry.topology import icosphere
from imagetomesh.io.atomic import atomic_write
from imagetomesh.models.dals import NORMALISATION_DOC, DALSConfig, DALSDecoder
from imagetomesh.nn.precision import bf16_autocast, cpu_has_bf16
from imagetomesh.training.checkpoint import ExpectedValue, FloatListState, TensorState
from imagetomesh.training.configs import named_config
from imagetomesh.training.dals_augment import WolfConfig, random_rotations, wolf_deform
from imagetomesh.training.dals_shapes import PAIRED_SHAPES, SHAPE_KINDS, load_shapes, shape_split
from imagetomesh.training.data_sources import data_description
from imagetomesh.training.tasks.base import EngineOptions, LoopSettings, RunState, Task


@dataclass
class DALSTrainConfig(EngineOptions):
    """Everything a DALS training run needs besides the data; saved as ``config.json``."""

    shapes: str = "hippocampus"
    model: DALSConfig = field(default_factory=DALSConfig)
    steps: int = 2000
    batch_size: int = 8
    target_points: int = 2048
    surface_samples: int = 1024
    lr: float = 2e-3
    lr_min: float = 1e-5
    plateau_window: int = 50
    plateau_patience: int = 4
    lambda_reg: float = 1e-4
    lambda_n: float = 1e-3
    latent_init_std: float = 0.01
    augment: WolfConfig = field(default_factory=WolfConfig)
    bf16: bool = False
    threads: int = 1
    log_every: int = 25
    checkpoint_every: int = 200
    time_limit_s: float | None = None
    val_shapes: int = 8
    val_iterations: int = 150

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = DALSConfig(**self.model)
        if isinstance(self.augment, dict):
            self.augment = WolfConfig(**self.augment)
        if self.shapes not in SHAPE_KINDS:
            raise InputError(f"unknown shapes {self.shapes!r}; use one of {', '.join(SHAPE_KINDS)}")

    @property
    def kind(self) -> str:
        return "dals"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


def get_dals_config(shapes: str, name: str = "cpu") -> DALSTrainConfig:
    """Named configs: ``cpu`` (about 25 min on 2 shared CPU cores, 1 thread) and ``gpu``; :class:`InputError` for another name."""
    configs = {
        "cpu": lambda: DALSTrainConfig(
            shapes=shapes,
            steps=3500,
            batch_size=8,
            target_points=1536,
            surface_samples=768,
            bf16=cpu_has_bf16(),
            time_limit_s=27 * 60,
        ),
        "gpu": lambda: DALSTrainConfig(
            shapes=shapes,
            steps=30000,
            batch_size=32,
            target_points=4096,
            surface_samples=4096,
            plateau_window=200,
            threads=4,
            checkpoint_every=1000,
            log_every=100,
            val_shapes=32,
        ),
    }
    return named_config(configs, name, "dals")()


# --- training --------------------------------------------------------------------------------------
def normalise_shapes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-shape centre (mean) and scale (largest radius); returns normalised points, centres, scales."""
    centres = points.mean(1, keepdims=True)
    scales = np.linalg.norm(points - centres, axis=2).max(1)
    return (points - centres) / scales[:, None, None], centres[:, 0], scales


def _shape_loss(decoder, template, faces, z, target, config: DALSTrainConfig, generator):
    """Per-shape loss terms for one deformed template (``template (V, 3)``, ``z (1, d)``)."""
    with bf16_autocast(config.bf16 and template.device.type == "cpu", template.device):
        verts = decoder(template, z)
    verts = verts.float()
    samples = sample_points_on_mesh(verts, faces, config.surface_samples, generator=generator)
    chamfer = chamfer_distance(torch.cat([verts, samples]), target)
    reg = triangle_quality_regulariser(verts, faces)
    return chamfer, reg


def autodecoder_loss(
    decoder, latents, targets, batch, template, faces, config: DALSTrainConfig, generator: torch.Generator
) -> tuple[torch.Tensor, dict]:
    """The training loss of one mini-batch (mean over its shapes) and its terms.

    Args:
        latents: ``(S, d)`` the per-shape latents (a parameter); targets: ``(S, P, 3)`` normalised
            surface samples; batch: ``(B,)`` shape indices; template/faces: the unit icosphere.
    """
    rotations = random_rotations(len(batch), generator).to(template.device)
    terms = {"chamfer": 0.0, "reg": 0.0, "latent": 0.0}
    total = template.new_zeros(())
    for b, index in enumerate(batch.tolist()):
        pick = torch.randperm(targets.shape[1], generator=generator)[: config.target_points]
        target = targets[index, pick.to(targets.device)]
        if float(torch.rand(1, generator=generator)) < config.augment.probability:
            target = wolf_deform(target.cpu(), config.augment, generator).to(targets.device)
        z = latents[index : index + 1]
        chamfer, reg = _shape_loss(decoder, template @ rotations[b].t(), faces, z, target, config, generator)
        norm = (z**2).sum()
        total = total + (chamfer + config.lambda_reg * reg + config.lambda_n * norm) / len(batch)
        terms["chamfer"] += chamfer.item() / len(batch)
        terms["reg"] += reg.item() / len(batch)
        terms["latent"] += norm.item() / len(batch)
    return total, terms


def fit_latent(
    decoder,
    points: torch.Tensor,
    mean_latent: torch.Tensor,
    level: int,
    iterations: int,
    generator: torch.Generator,
    lr: float = 1e-2,
) -> tuple[torch.Tensor, float]:
    """Auto-decoder inference: one shared latent fitted to normalised ``points``; returns (latent, chamfer)."""
    template, faces = icosphere(level)
    z = mean_latent.detach().clone().reshape(1, -1).requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    for _ in range(iterations):
        verts = decoder(template, z)
        samples = sample_points_on_mesh(verts, faces, 1024, generator=generator)
        loss = chamfer_distance(torch.cat([verts, samples]), points)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        verts = decoder(template, z)
        final = chamfer_distance(
            torch.cat([verts, sample_points_on_mesh(verts, faces, 4096, generator=generator)]), points, squared=False
        )
    return z.detach()[0], float(final) / 2.0


class DALSTask(Task):
    """A DALS prior of ``config.shapes``; ``split_path``: the split file (default: the project's in
    ``Resources/Splits``), ``cache_dir``: where surface samples are cached (default ``RUN/shapes``)."""

    final_folder = "model"
    result_folder = "model"
    result_label = "DALS prior"

    def __init__(self, config: DALSTrainConfig, run, split_path=None, cache_dir=None) -> None:
        super().__init__(config, run)
        self.split_path = split_path
        self.cache_dir = cache_dir

    @classmethod
    def configs(cls, kind: str = "dals") -> dict[str, DALSTrainConfig]:
        """The named configs for hippocampus shapes (set ``shapes`` for another organ)."""
        return {name: get_dals_config("hippocampus", name) for name in ("cpu", "gpu")}

    def settings(self) -> LoopSettings:
        c = self.config
        return LoopSettings(
            steps=c.steps,
            log_every=c.log_every,
            checkpoint_every=c.checkpoint_every,
            time_limit_s=c.time_limit_s,
            clip_norm=None,
            **c.loop_options(),
        )

    def setup(self) -> None:
        run, dev = self.run, self.run.device
        if self.config.bf16 and dev.type != "cpu":
            self.config = dataclasses.replace(self.config, bf16=False)
        config = self.config
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else run.out / "shapes"
        run.log(f"loading {config.shapes} training shapes from {run.data_dir}")
        shapes = load_shapes(
            config.shapes, run.data_dir, "train", 4096, self.cache_dir, log=run.log, split_path=self.split_path
        )
        self.split = shape_split(config.shapes, run.data_dir, self.split_path)
        normalised, _, self.scales = normalise_shapes(shapes.points.astype(np.float64))
        self.targets = torch.from_numpy(normalised.astype(np.float32)).to(dev)
        self.n_shapes = len(shapes)
        run.log(f"{self.n_shapes} training shapes; mean scale {self.scales.mean():.1f} mm")
        self.model = DALSDecoder(config.model).to(dev)
        self.latents = torch.nn.Parameter(
            torch.randn(self.n_shapes, config.model.latent_dim, device=dev) * config.latent_init_std
        )
        self.optimizer = torch.optim.Adam(
            [{"params": self.model.parameters()}, {"params": [self.latents]}], lr=config.lr
        )
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="min",
            factor=0.5,
            patience=config.plateau_patience,
            min_lr=config.lr_min,
            threshold=1e-3,
        )
        self.window: list[float] = []  # losses since the last plateau step
        self.template, self.faces = icosphere(config.model.train_template_level, device=dev)

    def checkpoint_parts(self) -> dict:
        return {
            "n_shapes": ExpectedValue(
                self.n_shapes,
                f"{self.run.out / self.checkpoint_name} was trained on {{saved}} "
                "shapes, the data has {value}; use another --out folder",
            ),
            "decoder": self.model,
            "latents": TensorState(self.latents),
            "optimiser": self.optimizer,
            "scheduler": self.plateau,
            "window": FloatListState(self.window),
        }

    def batch(self, generator):
        return torch.randperm(self.n_shapes, generator=generator)[: self.config.batch_size]

    def loss(self, batch, generator):
        total, terms = autodecoder_loss(
            self.model, self.latents, self.targets, batch, self.template, self.faces, self.config, generator
        )
        return total, {"loss": total.item(), **terms}

    def after_step(self, terms: dict[str, float]) -> None:
        self.window.append(terms["loss"])
        if len(self.window) == self.config.plateau_window:
            self.plateau.step(float(np.mean(self.window)))
            self.window.clear()

    def final_metrics(self, state: RunState) -> dict[str, float]:
        """Write ``latents.safetensors``, freeze the decoder, and fit one shared latent to each of the
        first ``val_shapes`` validation shapes: their mean Chamfer in mm."""
        config, run = self.config, self.run
        with atomic_write(run.out / "latents.safetensors") as tmp:
            save_file({"latents": self.latents.detach().cpu().contiguous()}, str(tmp))
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if config.val_shapes <= 0:
            return {}
        val = load_shapes(
            config.shapes, run.data_dir, "val", 4096, self.cache_dir, log=run.log, split_path=self.split_path
        )
        val_norm, _, val_scales = normalise_shapes(val.points.astype(np.float64))
        chosen = list(range(min(config.val_shapes, len(val))))
        errors = []
        for i in chosen:
            pts = torch.from_numpy(val_norm[i].astype(np.float32)).to(run.device)
            _, err = fit_latent(
                self.model,
                pts,
                self.latents.detach().mean(0),
                config.model.train_template_level,
                config.val_iterations,
                torch.Generator().manual_seed(i),
            )
            errors.append(err * val_scales[i])
        run.log(f"validation (shared latent, {config.val_iterations} its): chamfer {np.mean(errors):.3f} mm")
        return {"val_shapes": len(chosen), "val_chamfer_mm_shared_latent": float(np.mean(errors))}

    def card(self, metrics: dict, state: RunState) -> dict:
        config, run, scales = self.config, self.run, self.scales
        latents = self.latents.detach()
        data = data_description(config.shapes, run.data_dir)
        return {
            "kind": "dals",
            "name": f"dals-{config.shapes}",
            "description": f"DALS shape prior of the {config.shapes} (decoder of a deformed icosphere; fit to points, "
            "planar curves or a labelmap with 'imagetomesh fit' / 'imagetomesh refine')",
            "config": config.model.to_dict(),
            "mean_latent": [float(v) for v in latents.mean(0).cpu()],
            "latent_std": float(latents.std()),
            "paired": config.shapes in PAIRED_SHAPES,
            "mirror_axis": "L" if config.shapes in PAIRED_SHAPES else None,
            "normalisation": dict(
                NORMALISATION_DOC,
                mean_scale_mm=float(scales.mean()),
                std_scale_mm=float(scales.std()),
                min_scale_mm=float(scales.min()),
                max_scale_mm=float(scales.max()),
            ),
            "data": dict(
                data, training_shapes=self.n_shapes, split={k: self.split[k] for k in ("train", "val", "test")}
            ),
            "licence": data["licence"],
            "training": {
                "config_name": run.config_name,
                "config": config.to_dict(),
                "seed": run.seed,
                "steps": state.step,
                "stopped_by_time_limit": state.stopped_by_time_limit,
                "wall_time_s": round(state.elapsed_s, 1),
                "hardware": run.hardware,
                "torch": torch.__version__,
            },
            "metrics": metrics,
            "reproduce": f"imagetomesh train dals --shapes {config.shapes} --data DATA --out RUN --config {run.config_name} "
            f"--seed {run.seed} --steps {state.step}",
        }
