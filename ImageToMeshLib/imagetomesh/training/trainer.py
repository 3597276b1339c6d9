"""The training loop for the image-to-mesh models: resumable, logged, optionally distributed.

Runs under ``torchrun --nproc_per_node N`` with DistributedDataParallel (each rank draws its
own cases; rank 0 validates and writes). Outputs in ``out``: ``split.json``, ``config.json``,
``log.jsonl`` (losses and validation metrics), ``checkpoint.pt`` (model, optimiser, step;
loaded with ``weights_only=True``), and ``final/`` + ``best/`` model folders (safetensors + card).
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from imagetomesh.io.atomic import atomic_write
from imagetomesh.metrics import dice
from imagetomesh.models.registry import build_model
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.training.augment import augment
from imagetomesh.training.checkpoint import RunCheckpoint
from imagetomesh.training.configs import TrainConfig
from imagetomesh.training.data import PreparedCase, boundary_points, prepare_cases
from imagetomesh.training.losses import mesh_decoder_loss, segmentation_loss
from imagetomesh.training.msd import load_or_make_split, read_msd
from imagetomesh.weights import save_weights


def rescale_one_cycle(scheduler_state: dict, total_steps: int, pct_start: float = 0.05) -> dict:
    """A saved ``OneCycleLR`` state whose schedule now ends at ``total_steps``.

    Lets a run resume with a different ``--steps``: the learning rate follows the new
    schedule from the current step on (the warm-up phase keeps its fraction).
    """
    state = dict(scheduler_state)
    if state.get("total_steps") == total_steps:
        return state
    if total_steps <= state["last_epoch"]:
        raise ValueError(f"cannot shorten the schedule to {total_steps} steps: the run is already at step {state['last_epoch']}")
    phases = [dict(p) for p in state["_schedule_phases"]]
    phases[0]["end_step"] = float(pct_start * total_steps) - 1
    phases[-1]["end_step"] = total_steps - 1
    state.update(total_steps=total_steps, _schedule_phases=phases)
    return state


def init_from_model(model: torch.nn.Module, kind: str, folder: str | Path, log=print) -> None:
    """Start ``model`` (of ``kind``) from the model saved in ``folder`` (checked weights): all of
    its tensors when that model is of the same kind (a fine-tuning run), else only its ``unet.*``
    tensors, the other parameters keeping their fresh initialisation."""
    from imagetomesh.errors import InputError
    from imagetomesh.weights import load_state, read_card

    card = read_card(folder)
    state = load_state(folder, card)
    if card.get("kind") == kind:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise InputError(f"{folder} is a {kind} model of another architecture than this config's; "
                             f"fine-tune it with the config that trained it ({card.get('train_config', '?')})") from err
        log(f"initialised all {len(state)} tensors from the {kind} model in {folder}")
        return
    unet_state = {k: v for k, v in state.items() if k.startswith("unet.")}
    missing = model.load_state_dict(unet_state, strict=False)
    log(f"initialised {len(unet_state)} U-Net tensors from {folder} ({len(missing.missing_keys)} others fresh)")


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _batch(cases: list[PreparedCase], config: TrainConfig, generator: torch.Generator, train: bool):
    images, labels = [], []
    for case in cases:
        image, label = (augment(case.image, case.label, config.augment, generator) if train else (case.image, case.label))
        images.append(image)
        labels.append(label)
    return torch.stack(images)[:, None], torch.stack(labels)


def _loss(model, kind: str, config: TrainConfig, images, labels, generator, device):
    logits, meshes = model(images.to(device))
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


@torch.no_grad()
def validate(model, kind: str, cases: list[PreparedCase], device) -> dict[str, float]:
    """Voxel Dice of the segmentation head, and for mesh models the symmetric Chamfer in mm
    (mean distance, both ways, between the final mesh's vertices and the label boundary)."""
    model.eval()
    dices, chamfers = [], []
    for case in cases:
        logits, meshes = model(case.image[None, None].to(device))
        pred = logits.argmax(1)[0].cpu()
        dices.append(dice(pred.numpy(), case.label.numpy()))
        if meshes is not None:
            half_mm = torch.tensor(case.transform.grid_to_lps[:3, :3]).norm(dim=0).float()  # mm per grid unit, (x, y, z)
            points, _ = boundary_points(case.label)
            verts = meshes[0][-1].verts.cpu()
            d = torch.cdist(verts * half_mm, points * half_mm)
            chamfers.append(float((d.min(1).values.mean() + d.min(0).values.mean()) / 2))
    model.train()
    out = {"val_dice": float(np.mean(dices))}
    if chamfers:
        out["val_chamfer_mm"] = float(np.mean(chamfers))
    return out


def train(
    config: TrainConfig, data_dir: str | Path, out: str | Path, device: str = "cpu", seed: int = 0,
    init_from: str | Path | None = None, config_name: str = "", log=print,
) -> Path:
    """Train (or resume) a model; returns the folder of the best model by validation."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        rank = dist.get_rank()
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
    if dev.type == "cpu":
        torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + rank)
    generator = torch.Generator().manual_seed(seed + 1000 * rank)

    cases = read_msd(data_dir)
    split = load_or_make_split(list(cases), out / "split.json", seed=seed)
    if rank == 0:
        with atomic_write(out / "config.json") as tmp:
            Path(tmp).write_text(json.dumps({"config_name": config_name, **config.to_dict()}, indent=1))
    train_cases = prepare_cases([cases[c] for c in split["train"]], config.grid, progress=rank == 0)
    val_cases = prepare_cases([cases[c] for c in split["val"]], config.grid, progress=rank == 0)

    model = build_model(config.kind, config.model).to(dev)
    if init_from:
        init_from_model(model, config.kind, init_from, log)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.05)
    step, best = 0, None
    checkpoint = RunCheckpoint(out / "checkpoint.pt", {"scheduler": lambda saved: rescale_one_cycle(saved, config.steps)},
                               model=model, optimizer=optimizer, scheduler=scheduler)
    resumed = checkpoint.load(dev)
    if resumed:
        step, best, _ = resumed
        generator.manual_seed(seed + 1000 * rank + step)
        log(f"resumed from step {step}")
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if distributed else model
    card_base = {
        "kind": config.kind, "config": config.model, "grid": config.grid.to_dict(), "train_config": config_name,
        "training": {"data": str(data_dir), "split": split, "seed": seed, "hardware": _hardware(dev)},
    }

    def save_model(folder: str, metrics: dict) -> None:
        save_weights(model, out / folder, dict(card_base, metrics=metrics, steps=step))

    model.train()
    started, window = time.time(), []
    while step < config.steps:
        pick = torch.randint(len(train_cases), (config.batch_size,), generator=generator)
        images, labels = _batch([train_cases[i] for i in pick], config, generator, train=True)
        loss, terms = _loss(net, config.kind, config, images, labels, generator, dev)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        step += 1
        window.append(terms)
        if rank == 0 and (step % config.val_every == 0 or step == config.steps):
            metrics = validate(model, config.kind, val_cases, dev)
            mean_terms = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            window = []
            score = metrics.get("val_chamfer_mm", -metrics["val_dice"])
            entry = {"step": step, "time_s": round(time.time() - started, 1), "lr": scheduler.get_last_lr()[0],
                     **mean_terms, **metrics}
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
            log(json.dumps(entry))
            if best is None or score < best:
                best = score
                save_model("best", dict(metrics, step=step))
            checkpoint.save(step, best)
    if rank == 0:
        save_model("final", validate(model, config.kind, val_cases, dev))
    if distributed:
        dist.destroy_process_group()
    return out / "best"
