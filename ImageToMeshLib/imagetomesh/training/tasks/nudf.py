"""Training NUDF: clamped L1 on unsigned distances at points drawn around each label's surface.

Each case gets a pool of points with exact distances once (:mod:`imagetomesh.training.udf_points`);
every step draws ``points_per_case`` of them, and the case's augmentation (shift, small rotation
and scaling, intensity changes and noise: :func:`~imagetomesh.training.augment.augment`) moves
the points with the image and scales their distances with it. Loss (Juhl et al.):
``mean |min(f(p), c) - min(d(p), c)|`` with ``c = clamp`` (0.1 normalised units).

AdamW, one-cycle learning rate, gradient norm clipped at 5. The best model is the one with the
lowest clamped L1 on the validation cases' (unaugmented) points. The run also stops after
``time_limit_s`` (checkpointed, resumable). Run folder: as :mod:`imagetomesh.training.engine` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from imagetomesh.errors import InputError
from imagetomesh.models.nudf import NUDF, NUDFConfig
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig, augment
from imagetomesh.training.configs import HIPPOCAMPUS_GRID, named_config
from imagetomesh.training.data import PreparedCase, prepare_split
from imagetomesh.training.schedules import one_cycle, rescale_one_cycle
from imagetomesh.training.tasks.base import EngineOptions, RunState, Task, run_card
from imagetomesh.training.udf_points import UDFPointConfig, sample_udf_points


@dataclass
class NUDFTrainConfig(EngineOptions):
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
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(
            flip=0.0, rotate_deg=10.0, scale=0.05, intensity_scale=0.1, intensity_shift=0.1, noise=0.05, shift=0.05
        )
    )
    threads: int = 1


def nudf_configs() -> dict[str, NUDFTrainConfig]:
    """``cpu``: a small encoder, about 55 minutes on one CPU thread; ``gpu``: the paper's sizes."""
    cpu_model = NUDFConfig(channels=(16, 32, 64, 64), hidden=256).to_dict()
    gpu_model = NUDFConfig(channels=(32, 64, 128, 128), hidden=256).to_dict()
    return {
        "cpu": NUDFTrainConfig(
            cpu_model, steps=2400, batch_size=2, points_per_case=3000, time_limit_s=55 * 60, threads=1
        ),
        "gpu": NUDFTrainConfig(
            gpu_model,
            steps=30000,
            batch_size=8,
            points_per_case=20000,
            val_every=500,
            points=UDFPointConfig(count=60000),
            threads=4,
        ),
    }


@dataclass
class PointPool:
    """A case on the grid with its training points: ``points (N, 3)`` grid, ``distances (N,)``."""

    case: PreparedCase
    points: torch.Tensor
    distances: torch.Tensor


def make_pools(cases: list[PreparedCase], config: UDFPointConfig, seed: int, progress: bool = True) -> list[PointPool]:
    generator = torch.Generator().manual_seed(seed)
    return [
        PointPool(c, *sample_udf_points(c.label, config, generator))
        for c in tqdm(cases, desc="sampling points", disable=None if progress else True, leave=False)
    ]


def clamped_l1(pred: torch.Tensor, target: torch.Tensor, clamp: float) -> torch.Tensor:
    """``mean |min(pred, clamp) - min(target, clamp)|``."""
    return (pred.clamp(max=clamp) - target.clamp(max=clamp)).abs().mean()


def training_batch(pools: list[PointPool], config: NUDFTrainConfig, generator: torch.Generator):
    """Augmented ``images (B, 1, D, H, W)``, ``points (B, P, 3)`` grid, ``distances (B, P)``."""
    images, points, distances = [], [], []
    for pool in pools:
        image, _, linear, shift = augment(
            pool.case.image, pool.case.label, config.augment, generator, return_transform=True
        )
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


class NUDFTask(Task):
    """NUDF on an MSD folder: point pools made once per case, clamped L1 on augmented batches."""

    def __init__(self, config: NUDFTrainConfig, run, init_from=None) -> None:
        if init_from:
            raise InputError("NUDF trains from scratch (its encoder is not a U-Net); drop --init-from")
        super().__init__(config, run)

    @classmethod
    def configs(cls, kind: str = "nudf") -> dict[str, NUDFTrainConfig]:
        return nudf_configs()

    def setup(self) -> None:
        run, config = self.run, self.config
        self.split, train_cases, val_cases = prepare_split(run.data_dir, run.out, config.grid, run.seed)
        self.train_pools = make_pools(train_cases, config.points, run.seed)
        self.val_pools = make_pools(val_cases, config.points, run.seed + 1)
        self.model = NUDF(NUDFConfig(**config.model)).to(run.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = one_cycle(self.optimizer, config.lr, config.steps)

    def on_load(self) -> dict:
        return {**super().on_load(), "scheduler": lambda saved: rescale_one_cycle(saved, self.config.steps)}

    def batch(self, generator):
        pick = torch.randint(len(self.train_pools), (self.config.batch_size,), generator=generator)
        return training_batch([self.train_pools[i] for i in pick], self.config, generator)

    def loss(self, batch, generator):
        images, points, distances = batch
        dev = self.run.device
        loss = clamped_l1(self.model(images.to(dev), points.to(dev)), distances.to(dev), self.model.config.clamp)
        return loss, {"loss": float(loss.detach())}

    def validate(self) -> dict[str, float]:
        return validate(self.model, self.val_pools, self.config.val_points, self.run.device)

    def score(self, metrics: dict[str, float]) -> float:
        return metrics["val_l1"]

    def card(self, metrics: dict, state: RunState) -> dict:
        return run_card(self.run, "nudf", self.config.model, self.config.grid, self.split, metrics, state.step)


def get_nudf_config(name: str) -> NUDFTrainConfig:
    return named_config(nudf_configs(), name, "nudf")
