"""Training NUDF: clamped L1 on unsigned distances at points drawn around each label's surface.

Each case gets a pool of points with exact distances once (:mod:`imagetomesh.training.udf_points`);
every step draws ``points_per_case`` of them, and the case's augmentation (shift, small rotation
and scaling, intensity changes and noise: :func:`~imagetomesh.training.augment.augment`) moves
the points with the image and scales their distances with it. Loss (Juhl et al.):
``mean |min(f(p), c) - min(d(p), c)|`` with ``c = clamp`` (0.1 normalised units).

Outputs in ``out`` as :func:`imagetomesh.training.trainer.train` writes them (``split.json``,
``config.json``, ``log.jsonl``, ``checkpoint.pt``, ``best/``, ``final/``); the best model is
the one with the lowest clamped L1 on the validation cases' (unaugmented) points.
The run also stops after ``time_limit_s`` (checkpointed, resumable).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from imagetomesh.io.atomic import atomic_write
from imagetomesh.models.nudf import NUDF, NUDFConfig
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig, augment
from imagetomesh.training.checkpoint import RunCheckpoint
from imagetomesh.training.configs import HIPPOCAMPUS_GRID, named_config
from imagetomesh.training.data import PreparedCase, prepare_cases
from imagetomesh.training.msd import load_or_make_split, read_msd
from imagetomesh.training.trainer import _hardware, rescale_one_cycle
from imagetomesh.training.udf_points import UDFPointConfig, sample_udf_points
from imagetomesh.weights import save_weights


@dataclass
class NUDFTrainConfig:
    """Everything a NUDF run needs besides the data; saved next to every checkpoint."""

    model: dict
    kind: str = "nudf"
    grid: GridSpec = HIPPOCAMPUS_GRID
    steps: int = 3000
    batch_size: int = 2
    points_per_case: int = 3000
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_every: int = 100
    val_points: int = 4000
    time_limit_s: float = 0.0  # 0: no limit
    points: UDFPointConfig = field(default_factory=UDFPointConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        flip=0.0, rotate_deg=10.0, scale=0.05, intensity_scale=0.1, intensity_shift=0.1, noise=0.05, shift=0.05))
    threads: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = self.grid.to_dict()
        return d


def nudf_configs() -> dict[str, NUDFTrainConfig]:
    """``cpu``: a small encoder, about 55 minutes on one CPU thread; ``gpu``: the paper's sizes."""
    cpu_model = NUDFConfig(channels=(16, 32, 64, 64), hidden=256).to_dict()
    gpu_model = NUDFConfig(channels=(32, 64, 128, 128), hidden=256).to_dict()
    return {
        "cpu": NUDFTrainConfig(cpu_model, steps=2400, batch_size=2, points_per_case=3000, time_limit_s=55 * 60, threads=1),
        "gpu": NUDFTrainConfig(gpu_model, steps=30000, batch_size=8, points_per_case=20000, val_every=500,
                               points=UDFPointConfig(count=60000), threads=4),
    }


@dataclass
class PointPool:
    """A case on the grid with its training points: ``points (N, 3)`` grid, ``distances (N,)``."""

    case: PreparedCase
    points: torch.Tensor
    distances: torch.Tensor


def make_pools(cases: list[PreparedCase], config: UDFPointConfig, seed: int, progress: bool = True) -> list[PointPool]:
    generator = torch.Generator().manual_seed(seed)
    return [PointPool(c, *sample_udf_points(c.label, config, generator))
            for c in tqdm(cases, desc="sampling points", disable=not progress, leave=False)]


def clamped_l1(pred: torch.Tensor, target: torch.Tensor, clamp: float) -> torch.Tensor:
    """``mean |min(pred, clamp) - min(target, clamp)|``."""
    return (pred.clamp(max=clamp) - target.clamp(max=clamp)).abs().mean()


def training_batch(pools: list[PointPool], config: NUDFTrainConfig, generator: torch.Generator):
    """Augmented ``images (B, 1, D, H, W)``, ``points (B, P, 3)`` grid, ``distances (B, P)``."""
    images, points, distances = [], [], []
    for pool in pools:
        image, _, linear, shift = augment(pool.case.image, pool.case.label, config.augment, generator, return_transform=True)
        pick = torch.randint(len(pool.points), (config.points_per_case,), generator=generator)
        moved = (pool.points[pick] - shift) @ torch.linalg.inv(linear).T
        images.append(image)
        points.append(moved)
        distances.append(pool.distances[pick] * abs(float(torch.linalg.det(linear))) ** (-1.0 / 3.0))
    return torch.stack(images)[:, None], torch.stack(points), torch.stack(distances)


@torch.no_grad()
def validate(model: NUDF, pools: list[PointPool], n_points: int, device) -> dict[str, float]:
    """Clamped L1 on every validation case's first ``n_points`` points (unaugmented), overall and
    for points within 0.02 units of the surface (``val_l1_near``)."""
    model.eval()
    losses, near = [], []
    clamp = model.config.clamp
    for pool in pools:
        pts, dist = pool.points[:n_points].to(device), pool.distances[:n_points].to(device)
        pred = model(pool.case.image[None, None].to(device), pts[None])[0]
        losses.append(float(clamped_l1(pred, dist, clamp)))
        mask = dist < 0.02
        near.append(float((pred[mask] - dist[mask]).abs().mean()))
    model.train()
    return {"val_l1": float(np.mean(losses)), "val_l1_near": float(np.mean(near))}


def train_nudf(
    config: NUDFTrainConfig, data_dir: str | Path, out: str | Path, device: str = "cpu", seed: int = 0,
    init_from: str | Path | None = None, config_name: str = "", log=print,
) -> Path:
    """Train (or resume) NUDF; returns the folder of the best model by validation."""
    if init_from:
        raise ValueError("NUDF trains from scratch (its encoder is not a U-Net); drop --init-from")
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    cases = read_msd(data_dir)
    split = load_or_make_split(list(cases), out / "split.json", seed=seed)
    with atomic_write(out / "config.json") as tmp:
        Path(tmp).write_text(json.dumps({"config_name": config_name, **config.to_dict()}, indent=1))
    train_pools = make_pools(prepare_cases([cases[c] for c in split["train"]], config.grid), config.points, seed)
    val_pools = make_pools(prepare_cases([cases[c] for c in split["val"]], config.grid), config.points, seed + 1)

    model = NUDF(NUDFConfig(**config.model)).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.05)
    step, best, elapsed = 0, None, 0.0
    checkpoint = RunCheckpoint(out / "checkpoint.pt", {"scheduler": lambda saved: rescale_one_cycle(saved, config.steps)},
                               model=model, optimizer=optimizer, scheduler=scheduler)
    resumed = checkpoint.load(dev)
    if resumed:
        step, best, elapsed = resumed
        generator.manual_seed(seed + step)
        log(f"resumed from step {step}")
    card_base = {
        "kind": "nudf", "config": config.model, "grid": config.grid.to_dict(), "train_config": config_name,
        "training": {"data": str(data_dir), "split": split, "seed": seed, "hardware": _hardware(dev)},
    }

    def save_model(folder: str, metrics: dict) -> None:
        save_weights(model, out / folder, dict(card_base, metrics=metrics, steps=step))

    def out_of_time() -> bool:
        return config.time_limit_s > 0 and elapsed + time.time() - started >= config.time_limit_s

    model.train()
    started, window = time.time(), []
    while step < config.steps and not out_of_time():
        pick = torch.randint(len(train_pools), (config.batch_size,), generator=generator)
        images, points, distances = training_batch([train_pools[i] for i in pick], config, generator)
        pred = model(images.to(dev), points.to(dev))
        loss = clamped_l1(pred, distances.to(dev), model.config.clamp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        step += 1
        window.append(float(loss.detach()))
        if step % config.val_every == 0 or step == config.steps or out_of_time():
            metrics = validate(model, val_pools, config.val_points, dev)
            now = elapsed + time.time() - started
            entry = {"step": step, "time_s": round(now, 1), "lr": scheduler.get_last_lr()[0],
                     "loss": float(np.mean(window)), **metrics}
            window = []
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
            log(json.dumps(entry))
            if best is None or metrics["val_l1"] < best:
                best = metrics["val_l1"]
                save_model("best", dict(metrics, step=step))
            checkpoint.save(step, best, now)
    save_model("final", validate(model, val_pools, config.val_points, dev))
    return out / "best"


def get_nudf_config(name: str) -> NUDFTrainConfig:
    return copy.deepcopy(named_config(nudf_configs(), name, "nudf"))
