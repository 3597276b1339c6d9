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

Outputs in ``out``: ``split.json``, ``config.json``, ``log.jsonl``, ``pretrain.pt`` /
``checkpoint.pt`` (resumable, ``weights_only`` loads), ``sdf_pretrained.safetensors``,
``sdf_net.safetensors`` and ``best/`` + ``final/`` model folders of ``f_theta`` (safetensors + card).
Both phases stop at their step count or time limit, whichever comes first.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imagetomesh.geometry.laplacian import sym_norm_laplacian
from imagetomesh.io.atomic import atomic_write
from imagetomesh.metrics import dice
from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.models.implicitmeshnet import ImplicitMeshNet, ImplicitMeshNetConfig, MeshToSDF, MeshToSDFConfig
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.nn.sdf import grid_sdf, inside_mask
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig
from imagetomesh.training.configs import HIPPOCAMPUS_GRID, UNET_CPU, UNET_GPU_RESIDUAL, named_config
from imagetomesh.training.checkpoint import RunCheckpoint
from imagetomesh.training.data import prepare_cases
from imagetomesh.training.implicitmeshnet_shapes import random_shape
from imagetomesh.training.msd import load_or_make_split, read_msd
from imagetomesh.training.trainer import _batch, _hardware, init_from_model, validate
from imagetomesh.weights import save_weights


@dataclass
class ImplicitMeshNetTrainConfig:
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = self.grid.to_dict()
        return d


def implicitmeshnet_configs() -> dict[str, ImplicitMeshNetTrainConfig]:
    """``gpu``: the paper's residual U-Net 16-32-64-128-256 and learning rates. ``cpu``: the plain
    U-Net of the bundled ``unet-hippocampus`` (start it with ``--init-from``), a higher
    learning rate and time limits that fit a ~1 hour run on 1 thread. ``cpu-finetune``: continues
    a ``cpu`` run (``--init-from RUN/best --sdf-from RUN/sdf_net.safetensors``) at the paper's
    learning rates, cosine-decayed to 0, with the Laplacian weight at its annealed end value."""
    cpu_model = {"unet": UNET_CPU, "hidden": 64}
    return {
        "cpu": ImplicitMeshNetTrainConfig(
            cpu_model, steps=3000, lr=5e-4, lr_sdf=3e-4, sdf_updates=2, val_every=50,
            pretrain_steps=2000, pretrain_batch=2, pretrain_time_limit_s=25 * 60, time_limit_s=80 * 60,
        ),
        "cpu-finetune": ImplicitMeshNetTrainConfig(
            cpu_model, steps=800, lr=1e-4, lr_sdf=3e-5, lr_schedule="cosine", beta_start=0.01, beta_end=0.01,
            sdf_updates=2, val_every=50, pretrain_steps=0, time_limit_s=60 * 60,
        ),
        "gpu": ImplicitMeshNetTrainConfig(
            {"unet": UNET_GPU_RESIDUAL, "hidden": 128}, sdf_net=MeshToSDFConfig(64, (128, 64, 32, 16)).to_dict(),
            steps=30000, batch_size=4, val_every=500, pretrain_steps=20000, pretrain_batch=8, threads=2,
        ),
    }


def get_implicitmeshnet_config(name: str) -> ImplicitMeshNetTrainConfig:
    return named_config(implicitmeshnet_configs(), name, "implicitmeshnet")


# --- losses ------------------------------------------------------------------------------
def sdf_loss(preds: list[torch.Tensor], target: torch.Tensor, config: ImplicitMeshNetTrainConfig) -> torch.Tensor:
    """Deep-supervised weighted MSE: ``preds`` ``(B, 1, d, h, w)`` coarsest first, ``target`` ``(B, D, H, W)``.

    Level l (of L) weighs ``2 ** (l - L + 1)``; its target is the full one sampled at its voxel centres.
    """
    total = 0.0
    for l, pred in enumerate(preds):
        t = F.interpolate(target[:, None], size=pred.shape[2:], mode="trilinear", align_corners=True)
        w = 1.0 + config.near_weight * torch.exp(-t.abs() / config.near_sigma)
        total = total + 2.0 ** (l - len(preds) + 1) * (w * (pred - t) ** 2).mean()
    return total


def beta_at(progress: float, config: ImplicitMeshNetTrainConfig) -> float:
    """Cosine annealing of the Laplacian weight from ``beta_start`` (progress 0) to ``beta_end`` (1)."""
    p = min(max(progress, 0.0), 1.0)
    return config.beta_end + 0.5 * (config.beta_start - config.beta_end) * (1 + math.cos(math.pi * p))


def lr_factor(progress: float, config: ImplicitMeshNetTrainConfig) -> float:
    """The learning-rate multiplier at ``progress`` in [0, 1]: 1 (constant) or ``(1 + cos(pi p)) / 2`` (cosine)."""
    if config.lr_schedule == "constant":
        return 1.0
    if config.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")


def mean_vertex_laplacian_energy(verts: torch.Tensor, laplacian: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean over cases and vertices of ``||(L V)_i||^2``, ``V`` ``(B, N, 3)`` grid -> isotropic frame."""
    return torch.stack([torch.sparse.mm(laplacian, v * scale).pow(2).sum(-1).mean() for v in verts]).mean()


def surface_terms(
    f_net: ImplicitMeshNet, g_net: MeshToSDF, images: torch.Tensor, labels: torch.Tensor,
    laplacian: torch.Tensor, beta: float, config: ImplicitMeshNetTrainConfig,
):
    """The end-to-end loss of ``f_theta`` for a batch; ``g_phi`` is used frozen (its parameters get no gradient).

    Returns ``(loss, terms dict, final vertices (B, N, 3) grid coordinates, faces)``.
    """
    logits, meshes = f_net(images)
    verts = torch.stack([m[-1].verts for m in meshes])
    faces = meshes[0][-1].faces
    shape = images.shape[2:]
    scale = isotropic_scale(shape).to(verts)
    was_training = g_net.training
    g_net.eval()
    for p in g_net.parameters():
        p.requires_grad_(False)
    try:
        sdf = g_net(verts, meshes[0][-1].edge_index, shape)[-1][:, 0]
    finally:
        for p in g_net.parameters():
            p.requires_grad_(True)
        g_net.train(was_training)
    bce = F.binary_cross_entropy_with_logits(-sdf / config.tau, labels.float())
    lap = mean_vertex_laplacian_energy(verts, laplacian, scale)
    ce = F.cross_entropy(logits, labels.long())
    loss = config.alpha * bce + beta * lap + config.gamma * ce
    terms = {"bce": bce, "laplacian": lap, "ce": ce, "loss": loss}
    return loss, dict({k: float(v.detach()) for k, v in terms.items()}, beta=beta), verts, faces


def sdf_targets(verts: torch.Tensor, faces: torch.Tensor, shape, config: ImplicitMeshNetTrainConfig) -> torch.Tensor:
    """``(B, D, H, W)`` SDF targets of ``(B, N, 3)`` meshes (grid coordinates)."""
    scale = isotropic_scale(shape).to(verts)
    return torch.stack([grid_sdf(v.detach(), faces, shape, scale, config.truncation, far_field=True) for v in verts])


def sdf_step(g_net, optimizer, verts, faces, edge_index, shape, config, updates: int = 1) -> float:
    """``updates`` ``g_phi`` updates on the exact SDFs of detached meshes (targets made once); returns the last loss."""
    target = sdf_targets(verts, faces, shape, config)
    for _ in range(updates):
        loss = sdf_loss(g_net(verts.detach(), edge_index, shape), target, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(g_net.parameters(), 5.0)
        optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def mesh_dice(model: ImplicitMeshNet, cases, device) -> float:
    """Mean Dice between the rasterised final meshes and the labels, on the model grid."""
    model.eval()
    scores = []
    for case in cases:
        _, meshes = model(case.image[None, None].to(device))
        mask = inside_mask(meshes[0][-1].verts, meshes[0][-1].faces, case.label.shape).cpu()
        scores.append(dice(mask.numpy(), case.label.numpy()))
    model.train()
    return float(np.mean(scores))


# --- the two phases --------------------------------------------------------------------------
def pretrain_sdf(g_net: MeshToSDF, config: ImplicitMeshNetTrainConfig, out: Path, device, seed: int, log=print) -> None:
    """Phase 1: fit ``g_phi`` to random shapes; resumable; writes ``sdf_pretrained.safetensors``."""
    shape = config.grid.shape
    model_config = ImplicitMeshNetConfig(**config.model)
    sphere_mesh = DecoderMesh.template(model_config.template_level, torch.ones(3))
    sphere, faces = sphere_mesh.sphere, sphere_mesh.faces
    edge_index = sphere_mesh.edge_index.to(device)
    scale = isotropic_scale(shape)
    optimizer = torch.optim.AdamW(g_net.parameters(), lr=config.pretrain_lr, weight_decay=config.weight_decay)
    step, elapsed = 0, 0.0
    checkpoint = RunCheckpoint(out / "pretrain.pt", model=g_net, optimizer=optimizer)
    resumed = checkpoint.load(device)
    if resumed:
        step, _, elapsed = resumed
        log(f"pretraining resumed from step {step}")
    generator = torch.Generator().manual_seed(seed + 7 + step)
    started, window = time.time(), []

    def save_checkpoint() -> None:
        checkpoint.save(step, elapsed=elapsed + time.time() - started)

    g_net.train()
    while step < config.pretrain_steps:
        if config.pretrain_time_limit_s and elapsed + time.time() - started >= config.pretrain_time_limit_s:
            log(f"pretraining time limit reached at step {step}")
            break
        verts = torch.stack([random_shape(sphere, scale, generator) for _ in range(config.pretrain_batch)]).to(device)
        window.append(sdf_step(g_net, optimizer, verts, faces.to(device), edge_index, shape, config))
        step += 1
        if step % 50 == 0:
            entry = {"phase": "pretrain", "step": step, "time_s": round(elapsed + time.time() - started, 1),
                     "sdf_mse": float(np.mean(window))}
            window = []
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
            log(json.dumps(entry))
            save_checkpoint()
    save_checkpoint()
    save_sdf_net(g_net, out / "sdf_pretrained.safetensors")


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
        g_net.load_state_dict(load_file(str(weights)))
    except (OSError, SafetensorError, RuntimeError) as err:
        raise InputError(f"--sdf-from {weights}: not the mesh-to-SDF network of this config ({err}); "
                         "give the sdf_net.safetensors of a run made with the same config family") from None
    save_sdf_net(g_net, pretrained)


def train_implicitmeshnet(
    config: ImplicitMeshNetTrainConfig, data_dir: str | Path, out: str | Path, device: str = "cpu", seed: int = 0,
    init_from: str | Path | None = None, config_name: str = "", log=print, sdf_from: str | Path | None = None,
) -> Path:
    """Pretrain ``g_phi`` (unless done), then train end to end (resumable); returns the best model folder.

    ``init_from``: a model folder starting ``f_theta`` (see :func:`init_from_model`); ``sdf_from``:
    a ``g_phi`` weights file (a run's ``sdf_net.safetensors``) that replaces pretraining.
    """
    from safetensors.torch import load_file

    dev = torch.device("cuda" if device == "cuda" else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with atomic_write(out / "config.json") as tmp:
        Path(tmp).write_text(json.dumps({"config_name": config_name, **config.to_dict()}, indent=1))

    g_net = MeshToSDF(MeshToSDFConfig(**config.sdf_net)).to(dev)
    if sdf_from and not (out / "sdf_pretrained.safetensors").is_file():
        start_sdf_net_from(g_net, sdf_from, out / "sdf_pretrained.safetensors")
    if not (out / "sdf_pretrained.safetensors").is_file():
        pretrain_sdf(g_net, config, out, dev, seed, log)
    cases = read_msd(data_dir)
    split = load_or_make_split(list(cases), out / "split.json", seed=seed)
    train_cases = prepare_cases([cases[c] for c in split["train"]], config.grid)
    val_cases = prepare_cases([cases[c] for c in split["val"]], config.grid)

    f_net = ImplicitMeshNet(ImplicitMeshNetConfig(**config.model)).to(dev)
    g_net.load_state_dict(load_file(str(out / "sdf_pretrained.safetensors")))
    if init_from:
        init_from_model(f_net, config.kind, init_from, log)
    opt_f = torch.optim.AdamW(f_net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    opt_g = torch.optim.AdamW(g_net.parameters(), lr=config.lr_sdf, weight_decay=config.weight_decay)
    step, best, elapsed = 0, None, 0.0
    checkpoint = RunCheckpoint(out / "checkpoint.pt", model=f_net, sdf_net=g_net, optimizer=opt_f, sdf_optimizer=opt_g)
    resumed = checkpoint.load(dev)
    if resumed:
        step, best, elapsed = resumed
        log(f"resumed from step {step}")
    generator = torch.Generator().manual_seed(seed + step)
    template = f_net.template(config.grid.shape, dev)
    edge_index = template.edge_index
    laplacian = sym_norm_laplacian(edge_index, len(template.verts)).to(dev)
    card_base = {
        "kind": config.kind, "config": ImplicitMeshNetConfig(**config.model).to_dict(), "grid": config.grid.to_dict(),
        "train_config": config_name, "training": {"data": str(data_dir), "split": split, "seed": seed, "hardware": _hardware(dev)},
    }
    started, window = time.time(), []

    def now() -> float:
        return elapsed + time.time() - started

    def progress() -> float:
        by_time = now() / config.time_limit_s if config.time_limit_s else 0.0
        return max(step / config.steps, by_time)

    f_net.train()
    while step < config.steps and not (config.time_limit_s and now() >= config.time_limit_s):
        pick = torch.randint(len(train_cases), (config.batch_size,), generator=generator)
        images, labels = _batch([train_cases[i] for i in pick], config, generator, train=True)
        images, labels = images.to(dev), labels.to(dev)
        at = progress()  # one value per step for the learning rates and beta
        for optimizer, base_lr in ((opt_f, config.lr), (opt_g, config.lr_sdf)):
            for group in optimizer.param_groups:
                group["lr"] = base_lr * lr_factor(at, config)
        loss, terms, verts, faces = surface_terms(f_net, g_net, images, labels, laplacian, beta_at(at, config), config)
        opt_f.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(f_net.parameters(), 5.0)
        opt_f.step()
        terms["sdf_mse"] = sdf_step(g_net, opt_g, verts, faces, edge_index, images.shape[2:], config, config.sdf_updates)
        step += 1
        window.append(terms)
        last = step >= config.steps or (config.time_limit_s and now() >= config.time_limit_s)
        if step % config.val_every == 0 or last:
            metrics = validate(f_net, config.kind, val_cases, dev)
            metrics["val_mesh_dice"] = mesh_dice(f_net, val_cases, dev)
            mean_terms = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            window = []
            entry = {"phase": "end-to-end", "step": step, "time_s": round(now(), 1), "lr": opt_f.param_groups[0]["lr"],
                     **mean_terms, **metrics}
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
            log(json.dumps(entry))
            score = -metrics["val_mesh_dice"]
            if best is None or score < best:
                best = score
                save_weights(f_net, out / "best", dict(card_base, metrics=dict(metrics, step=step), steps=step))
            save_sdf_net(g_net, out / "sdf_net.safetensors")
            checkpoint.save(step, best, now())
    final = validate(f_net, config.kind, val_cases, dev)
    final["val_mesh_dice"] = mesh_dice(f_net, val_cases, dev)
    save_weights(f_net, out / "final", dict(card_base, metrics=dict(final, step=step), steps=step))
    return out / "best"
