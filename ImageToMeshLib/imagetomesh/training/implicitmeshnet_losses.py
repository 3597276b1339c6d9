"""ImplicitMeshNet's losses and schedules: ``g_phi``'s SDF regression (and its update on detached meshes), ``f_theta``'s end-to-end loss,
the Laplacian weight ``beta`` and the learning-rate factor over the run's progress.

``config`` is an :class:`~imagetomesh.training.tasks.implicitmeshnet.ImplicitMeshNetTrainConfig`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imagetomesh.models.implicitmeshnet import ImplicitMeshNet, MeshToSDF
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.nn.precision import float32_region
from imagetomesh.nn.sdf import grid_sdf
from imagetomesh.training.losses import segmentation_loss


def sdf_loss(preds: list[torch.Tensor], target: torch.Tensor, config) -> torch.Tensor:
    """Deep-supervised weighted MSE: ``preds`` ``(B, 1, d, h, w)`` coarsest first, ``target`` ``(B, D, H, W)``.

    Level l (of L) weighs ``2 ** (l - L + 1)``; its target is the full one sampled at its voxel centres.
    """
    total = 0.0
    for level, pred in enumerate(preds):
        t = F.interpolate(target[:, None], size=pred.shape[2:], mode="trilinear", align_corners=True)
        w = 1.0 + config.near_weight * torch.exp(-t.abs() / config.near_sigma)
        total = total + 2.0 ** (level - len(preds) + 1) * (w * (pred - t) ** 2).mean()
    return total


def beta_at(progress: float, config) -> float:
    """Cosine annealing of the Laplacian weight from ``beta_start`` (progress 0) to ``beta_end`` (progress
    ``beta_anneal``, 1 unless the config says otherwise), ``beta_end`` after."""
    p = min(max(progress / getattr(config, "beta_anneal", 1.0), 0.0), 1.0)
    return config.beta_end + 0.5 * (config.beta_start - config.beta_end) * (1 + math.cos(math.pi * p))


def lr_factor(progress: float, config) -> float:
    """The learning-rate multiplier at ``progress`` in [0, 1]: 1 (constant) or ``(1 + cos(pi p)) / 2`` (cosine)."""
    if config.lr_schedule == "constant":
        return 1.0
    if config.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")


def mean_vertex_laplacian_energy(verts: torch.Tensor, laplacian: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean over cases and vertices of ``||(L V)_i||^2``, ``V`` ``(B, N, 3)`` grid -> isotropic frame
    (float32 even under bf16 autocast, whose sparse products have no bf16 backward)."""
    with float32_region(verts.device):
        return torch.stack([torch.sparse.mm(laplacian, v.float() * scale).pow(2).sum(-1).mean() for v in verts]).mean()


def surface_terms(
    f_net: ImplicitMeshNet,
    g_net: MeshToSDF,
    images: torch.Tensor,
    labels: torch.Tensor,
    laplacian: torch.Tensor,
    beta: float,
    config,
):
    """The end-to-end loss of ``f_theta`` for a batch; ``g_phi`` is used frozen (its parameters get no gradient).

    The segmentation term is ``config.seg_loss``: ``"ce"`` cross-entropy (term ``ce``) or ``"dice_ce"``
    soft Dice + cross-entropy (:func:`~imagetomesh.training.losses.segmentation_loss`, term ``seg``).

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
    if getattr(config, "seg_loss", "ce") == "dice_ce":
        seg_name, seg = "seg", segmentation_loss(logits.float(), labels)
    else:
        seg_name, seg = "ce", F.cross_entropy(logits, labels.long())
    loss = config.alpha * bce + beta * lap + config.gamma * seg
    terms = {"bce": bce, "laplacian": lap, seg_name: seg, "loss": loss}
    return loss, dict({k: float(v.detach()) for k, v in terms.items()}, beta=beta), verts, faces


def sdf_targets(verts: torch.Tensor, faces: torch.Tensor, shape, config) -> torch.Tensor:
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
