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
points in the spirit of PointWOLF (Kim et al., 2021): a few anchor points (farthest-point
sampled), a random local rotation / anisotropic scaling / translation about each, blended per
point with Gaussian kernel weights ``w_j(p) = exp(-|p - a_j|^2 / (2 sigma^2))``.

Outputs in ``out``: ``config.json``, ``log.jsonl``, ``checkpoint.pt`` (resumable; loaded with
``weights_only=True``), ``latents.safetensors`` and the model folder ``model/`` (safetensors +
card with the mean latent, normalisation, data, split and licence).
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

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
from imagetomesh.training.configs import named_config
from imagetomesh.training.dals_shapes import SHAPE_KINDS, load_shapes, shape_split
from imagetomesh.weights import save_weights


@dataclass
class WolfConfig:
    """Smooth non-rigid augmentation (PointWOLF-style) in the normalised frame."""

    probability: float = 0.5
    anchors: int = 4
    sigma: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05


@dataclass
class DALSTrainConfig:
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


def get_dals_config(shapes: str, name: str = "cpu") -> DALSTrainConfig:
    """Named configs: ``cpu`` (about 25 min on 2 shared CPU cores, 1 thread) and ``gpu``; :class:`InputError` for another name."""
    configs = {
        "cpu": lambda: DALSTrainConfig(shapes=shapes, steps=3500, batch_size=8, target_points=1536, surface_samples=768,
                                       bf16=_cpu_has_bf16(), time_limit_s=27 * 60),
        "gpu": lambda: DALSTrainConfig(shapes=shapes, steps=30000, batch_size=32, target_points=4096, surface_samples=4096,
                                       plateau_window=200, threads=4, checkpoint_every=1000, log_every=100, val_shapes=32),
    }
    return named_config(configs, name, "dals")()


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


# --- data description ----------------------------------------------------------------------------
DATA_CARDS = {
    "hippocampus": {
        "name": "Medical Segmentation Decathlon Task04 Hippocampus, training labels (labels 1 + 2 as one shape)",
        "source": "Vanderbilt University Medical Center, via the Medical Segmentation Decathlon "
                  "(Simpson et al., 2019; Antonelli et al., Nature Communications 2022)",
        "licence": "CC-BY-SA 4.0",
        "terms": "Derived from MSD Task04 (CC-BY-SA 4.0): keep this attribution and share adaptations under CC-BY-SA 4.0.",
        "split_file": "Resources/Splits/hippocampus.json",
    },
    "kidney": {
        "name": "KiTS19 kidney segmentations (kidney + tumour as one object, each case split into its two kidneys, "
                "right kidneys mirrored to the left, cavities and slice-wise holes filled: the renal sinus is "
                "learned as part of the organ's envelope)",
        "source": "KiTS19 challenge (Heller et al., 2019; Heller et al., Medical Image Analysis 2021)",
        "licence": "CC BY-NC-SA 4.0",
        "terms": "NON-COMMERCIAL USE ONLY. This shape model is derived from the KiTS19 segmentations, licensed "
                 "CC BY-NC-SA 4.0: you may use it only for non-commercial purposes, must credit the KiTS19 "
                 "challenge (Heller et al.), and must share anything built from it under the same licence.",
        "split_file": "Resources/Splits/kits19.json",
    },
}


# --- augmentation -------------------------------------------------------------------------------
def random_rotations(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """``(n, 3, 3)`` rotations uniform on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=1).reshape(n, 3, 3)
    return rot.to(dtype)


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``(n, 3)`` unit axes, ``(n,)`` angles -> ``(n, 3, 3)``."""
    k = torch.zeros(axis.shape[0], 3, 3, dtype=axis.dtype)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3, dtype=axis.dtype) + s * k + (1 - c) * (k @ k)


def farthest_points(points: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """``(m, 3)`` farthest-point sample of ``(N, 3)`` points, from a random start."""
    start = int(torch.randint(points.shape[0], (1,), generator=generator))
    chosen = [start]
    dist = ((points - points[start]) ** 2).sum(1)
    for _ in range(m - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, ((points - points[nxt]) ** 2).sum(1))
    return points[chosen]


def wolf_deform(points: torch.Tensor, config: WolfConfig, generator: torch.Generator) -> torch.Tensor:
    """Smooth non-rigid deformation of ``(N, 3)`` points (normalised frame).

    ``p' = sum_j w_j(p) T_j(p) / sum_j w_j(p)``, ``T_j(p) = R_j S_j (p - a_j) + a_j + t_j``,
    ``w_j(p) = exp(-|p - a_j|^2 / (2 sigma^2))``, anchors ``a_j`` by farthest-point sampling.
    """
    m = int(config.anchors)
    anchors = farthest_points(points, m, generator)
    axis = torch.randn(m, 3, generator=generator, dtype=points.dtype)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    angle = (2 * torch.rand(m, generator=generator, dtype=points.dtype) - 1) * math.radians(config.rotate_deg)
    rot = _axis_angle(axis, angle)
    scale = 1 + (2 * torch.rand(m, 3, generator=generator, dtype=points.dtype) - 1) * config.scale
    shift = (2 * torch.rand(m, 3, generator=generator, dtype=points.dtype) - 1) * config.translate
    local = points[None] - anchors[:, None]  # (m, N, 3)
    moved = torch.einsum("mij,mnj->mni", rot, local * scale[:, None]) + anchors[:, None] + shift[:, None]
    weights = torch.exp(-(local ** 2).sum(-1) / (2 * config.sigma ** 2))  # (m, N)
    weights = weights / weights.sum(0, keepdim=True).clamp_min(1e-12)
    return (weights[..., None] * moved).sum(0)


# --- training --------------------------------------------------------------------------------------
def normalise_shapes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-shape centre (mean) and scale (largest radius); returns normalised points, centres, scales."""
    centres = points.mean(1, keepdims=True)
    scales = np.linalg.norm(points - centres, axis=2).max(1)
    return (points - centres) / scales[:, None, None], centres[:, 0], scales


def _shape_loss(decoder, template, faces, z, target, config: DALSTrainConfig, generator):
    """Per-shape loss terms for one deformed template (``template (V, 3)``, ``z (1, d)``)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16 and template.device.type == "cpu"):
        verts = decoder(template, z)
    verts = verts.float()
    samples = sample_points_on_mesh(verts, faces, config.surface_samples, generator=generator)
    chamfer = chamfer_distance(torch.cat([verts, samples]), target)
    reg = triangle_quality_regulariser(verts, faces)
    return chamfer, reg


def autodecoder_loss(decoder, latents, targets, batch, template, faces, config: DALSTrainConfig,
                     generator: torch.Generator) -> tuple[torch.Tensor, dict]:
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
        norm = (z ** 2).sum()
        total = total + (chamfer + config.lambda_reg * reg + config.lambda_n * norm) / len(batch)
        terms["chamfer"] += chamfer.item() / len(batch)
        terms["reg"] += reg.item() / len(batch)
        terms["latent"] += norm.item() / len(batch)
    return total, terms


def _log_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def fit_latent(decoder, points: torch.Tensor, mean_latent: torch.Tensor, level: int, iterations: int,
               generator: torch.Generator, lr: float = 1e-2) -> tuple[torch.Tensor, float]:
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
        final = chamfer_distance(torch.cat([verts, sample_points_on_mesh(verts, faces, 4096, generator=generator)]),
                                 points, squared=False)
    return z.detach()[0], float(final) / 2.0


def train_dals(
    config: DALSTrainConfig,
    data_dir: str | Path,
    out: str | Path,
    device: str = "cpu",
    seed: int = 0,
    config_name: str = "custom",
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    split_path: str | Path | None = None,
) -> Path:
    """Train (or resume) a DALS prior; returns the written model folder ``out/model``.

    ``split_path``: the train/val/test split file (default: the project's in ``Resources/Splits``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, int(config.threads)))
    dev = torch.device(device)
    if config.bf16 and dev.type != "cpu":
        config = dataclasses.replace(config, bf16=False)
    cache_dir = Path(cache_dir) if cache_dir is not None else out / "shapes"
    log(f"loading {config.shapes} training shapes from {data_dir}")
    shapes = load_shapes(config.shapes, data_dir, "train", 4096, cache_dir, log=log, split_path=split_path)
    split = shape_split(config.shapes, data_dir, split_path)
    normalised, centres, scales = normalise_shapes(shapes.points.astype(np.float64))
    targets = torch.from_numpy(normalised.astype(np.float32)).to(dev)
    n_shapes = len(shapes)
    log(f"{n_shapes} training shapes; mean scale {scales.mean():.1f} mm")
    with atomic_write(out / "config.json") as tmp:
        Path(tmp).write_text(json.dumps({"config": config.to_dict(), "config_name": config_name, "seed": seed}, indent=1))

    torch.manual_seed(seed)
    decoder = DALSDecoder(config.model).to(dev)
    latents = torch.nn.Parameter(torch.randn(n_shapes, config.model.latent_dim, device=dev) * config.latent_init_std)
    optimiser = torch.optim.Adam([{"params": decoder.parameters()}, {"params": [latents]}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, mode="min", factor=0.5, patience=config.plateau_patience, min_lr=config.lr_min, threshold=1e-3)
    generator = torch.Generator().manual_seed(seed)
    step, elapsed = 0, 0.0
    resumed_window: list[float] = []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=dev, weights_only=True)
        if state["n_shapes"] != n_shapes:
            raise InputError(f"{checkpoint} was trained on {state['n_shapes']} shapes, the data has {n_shapes}; "
                             "use another --out folder")
        decoder.load_state_dict(state["decoder"])
        with torch.no_grad():
            latents.copy_(state["latents"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        resumed_window = [float(v) for v in state.get("window", torch.zeros(0))]
        log(f"resumed at step {step}")

    template, faces = icosphere(config.model.train_template_level, device=dev)
    window: list[float] = resumed_window
    started = time.time() - elapsed
    log_path = out / "log.jsonl"

    def save_state() -> None:
        _save_checkpoint(checkpoint, {
            "decoder": decoder.state_dict(), "latents": latents.detach(), "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "step": step,
            "elapsed": time.time() - started, "n_shapes": n_shapes, "window": torch.tensor(window, dtype=torch.float64),
        })

    stopped_early = False
    while step < config.steps:
        if config.time_limit_s is not None and time.time() - started > config.time_limit_s:
            log(f"time limit of {config.time_limit_s:.0f} s reached at step {step}; stopping")
            stopped_early = True
            break
        batch = torch.randperm(n_shapes, generator=generator)[: config.batch_size]
        total, terms = autodecoder_loss(decoder, latents, targets, batch, template, faces, config, generator)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        step += 1
        window.append(total.item())
        if len(window) == config.plateau_window:
            scheduler.step(float(np.mean(window)))
            window = []
        if step % config.log_every == 0 or step == config.steps:
            record = {"step": step, "loss": total.item(), **terms, "lr": optimiser.param_groups[0]["lr"],
                      "time_s": round(time.time() - started, 1)}
            _log_line(log_path, record)
            log(json.dumps(record))
        if step % config.checkpoint_every == 0:
            save_state()
    save_state()
    wall = time.time() - started

    # latents, mean latent, a quick auto-decoder check on validation shapes
    with atomic_write(out / "latents.safetensors") as tmp:
        save_file({"latents": latents.detach().cpu().contiguous()}, str(tmp))
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    mean_latent = latents.detach().mean(0)
    val_metrics = {}
    if config.val_shapes > 0:
        val = load_shapes(config.shapes, data_dir, "val", 4096, cache_dir, log=log, split_path=split_path)
        val_norm, _, val_scales = normalise_shapes(val.points.astype(np.float64))
        chosen = list(range(min(config.val_shapes, len(val))))
        errors = []
        for i in chosen:
            pts = torch.from_numpy(val_norm[i].astype(np.float32)).to(dev)
            _, err = fit_latent(decoder, pts, mean_latent, config.model.train_template_level, config.val_iterations,
                                torch.Generator().manual_seed(i))
            errors.append(err * val_scales[i])
        val_metrics = {"val_shapes": len(chosen), "val_chamfer_mm_shared_latent": float(np.mean(errors))}
        log(f"validation (shared latent, {config.val_iterations} its): chamfer {np.mean(errors):.3f} mm")
    card = {
        "kind": "dals",
        "name": f"dals-{config.shapes}",
        "description": f"DALS shape prior of the {config.shapes} (decoder of a deformed icosphere; fit to points, "
                       "planar curves or a labelmap with 'imagetomesh fit' / 'imagetomesh refine')",
        "config": config.model.to_dict(),
        "mean_latent": [float(v) for v in mean_latent.cpu()],
        "latent_std": float(latents.detach().std()),
        "paired": config.shapes == "kidney",
        "mirror_axis": "L" if config.shapes == "kidney" else None,
        "normalisation": dict(NORMALISATION_DOC, mean_scale_mm=float(scales.mean()), std_scale_mm=float(scales.std()),
                              min_scale_mm=float(scales.min()), max_scale_mm=float(scales.max())),
        "data": dict(DATA_CARDS[config.shapes], training_shapes=n_shapes,
                     split={k: split[k] for k in ("train", "val", "test")}),
        "licence": DATA_CARDS[config.shapes]["licence"],
        "training": {
            "config_name": config_name, "config": config.to_dict(), "seed": seed, "steps": step,
            "stopped_by_time_limit": stopped_early, "wall_time_s": round(wall, 1),
            "hardware": f"{platform.machine()} {dev.type}, {torch.get_num_threads()} thread(s)",
            "torch": torch.__version__,
        },
        "metrics": val_metrics,
        "reproduce": f"imagetomesh train dals --shapes {config.shapes} --data DATA --out RUN --config {config_name} "
                     f"--seed {seed} --steps {step}",
    }
    folder = save_weights(decoder, out / "model", card)
    log(f"wrote {folder}")
    return folder
