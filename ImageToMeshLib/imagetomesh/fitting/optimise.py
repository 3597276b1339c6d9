"""The DALS fitting loop shared by every task.

Unknowns: per-vertex latents ``Z (V, d)`` (one shared row when ``lambda_dir = inf``),
initialised at the prior's mean training latent, and a similarity pose in the *fit frame*
(``(lps - c0) / s0``, with ``c0, s0`` the initial centre and scale that the task estimated
from its observations): ``verts = exp(sigma) M y + t`` with ``y = x + D(Z, x)`` the decoded
template and ``M`` the identity or the L-mirror (paired organs). Loss:

    ``L_task(verts) + lambda_reg L_reg(verts) + lambda_dir Tr(Z^T L^2 Z)``

``L_reg`` the triangle-quality regulariser; ``L`` the uniform Laplacian in symmetric form,
``L = (D - A) / mean(deg)``: sparse, symmetric positive semi-definite (so
``Tr(Z^T L^2 Z) = |L Z|_F^2 >= 0``), zero on constant latents (a shared latent costs nothing,
consistent with ``lambda_dir = inf``), and equal to the uniform Laplacian ``I - D^{-1} A`` at
every vertex of the mean degree (all but the 12 valence-5 vertices of an icosphere; the
normalised ``I - D^{-1/2} A D^{-1/2}`` would not vanish on constants there). Adam on ``Z``
and on the pose.

``Z`` is parameterised as ``z_common + Delta`` (one row shared by all vertices plus a per-vertex
part, ``Delta = 0`` at the start). This is the same objective (``L`` vanishes on the common row,
so ``Tr(Z^T L^2 Z) = Tr(Delta^T L^2 Delta)``) but Adam moves the whole shape through the common
row with the gradient of every vertex at once, while ``Delta`` adds local detail; with
independent per-vertex rows alone, global changes have to diffuse through the ``L_dir`` term
and fits stall far from the optimum (two validation kidneys fitted to three curves with the
default weights: Dice 0.81 and 0.86 with independent rows, 0.94 and 0.95 with this form).

Coarse to fine: the decoder is evaluated at every vertex in every iteration, which is nearly all
of a fit's cost. By default the first ``coarse_fraction`` of the iterations run on the template
one level coarser (642 instead of 2,562 vertices: a quarter of the cost); the per-vertex latents
and their Adam moments are then prolonged to the full template (kept at the old vertices,
averaged onto the edge midpoints, which is how the icosphere levels nest) and the fit goes on
there. The coarse stage uses ``lambda_dir / 4``: for a smooth latent field, ``|L Z|^2`` summed
over the coarser mesh is about four times the fine one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from imagetomesh.errors import InputError
from imagetomesh.geometry.distances import chamfer_distance
from imagetomesh.geometry.laplacian import combinatorial_laplacian
from imagetomesh.geometry.mesh_losses import triangle_quality_regulariser
from imagetomesh.geometry.topology import edge_index_from_faces
from imagetomesh.models.dals import MIRROR_L

TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitSettings:
    """Hyper-parameters of one fit (the tasks fill in their defaults).

    Attributes:
        lambda_dir: weight of ``Tr(Z^T L^2 Z)``; ``inf`` = one latent shared by all vertices.
        lambda_reg: weight of the triangle-quality regulariser.
        iterations: Adam iterations.
        latent_lr: Adam step size of the latents, relative to the prior's latent spread
            (the standard deviation of its training latents; 1 when unknown).
        pose_lr: Adam step size of the pose (translation in fit-frame units, log-scale).
        optimise_pose: also fit translation and scale (else the initial pose is kept).
        template_level: icosphere level of the template (None: the prior's fitting level, 4 = 2562 vertices).
        bf16: evaluate the decoder in bfloat16 (CPU with native bfloat16 only; "auto" decides).
        coarse_fraction: fraction of the iterations run on the template one level coarser before
            prolonging to ``template_level`` (0: all on the full template; see the module docstring).
    """

    lambda_dir: float
    lambda_reg: float
    iterations: int
    latent_lr: float = 0.5
    pose_lr: float = 0.01
    optimise_pose: bool = True
    template_level: int | None = None
    bf16: bool | str = "auto"
    coarse_fraction: float = 0.9


@dataclass
class FitResult:
    """Fitted vertices (fit frame, float64), faces (outward, mirrored faces flipped), final task loss."""

    verts: np.ndarray
    faces: np.ndarray
    task_loss: float
    mirrored: bool


class Adam:
    """Adam (Kingma & Ba, 2015) for a few tensors: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr m_hat / (sqrt(v_hat) + eps)`` with bias-corrected ``m_hat, v_hat``.

    A few lines instead of ``torch.optim.Adam``, whose first use imports ``torch._dynamo``
    (seconds of start-up per process, more than a whole fit costs).
    """

    def __init__(self, groups: list[tuple[torch.Tensor, float]], betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups = [(p, float(lr), torch.zeros_like(p), torch.zeros_like(p)) for p, lr in groups]
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.t = 0

    def zero_grad(self) -> None:
        for p, _, _, _ in self.groups:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for p, lr, m, v in self.groups:
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)

    def replace(self, old: torch.Tensor, new: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Swap parameter ``old`` for ``new``; its moments become ``transform(m)``, ``transform(v)``."""
        for k, (p, lr, m, v) in enumerate(self.groups):
            if p is old:
                self.groups[k] = (new, lr, transform(m), transform(v))
                return
        raise KeyError("not a parameter of this optimiser")


def prolong(values: torch.Tensor, parent_edges: torch.Tensor) -> torch.Tensor:
    """Per-vertex ``values (N, C)`` of an icosphere level on the next level ``(N + E, C)``:
    kept at the ``N`` old vertices, the mean of the two ends at each edge midpoint
    (``parent_edges (E, 2)`` from :func:`~imagetomesh.geometry.topology.subdivide`)."""
    return torch.cat([values, values[parent_edges].mean(1)])


def latent_laplacian_energy(latents: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """``Tr(Z^T L^2 Z) = |L Z|_F^2`` for a symmetric sparse ``L (V, V)`` and ``Z (V, d)``; ``>= 0``."""
    lz = torch.sparse.mm(laplacian, latents)
    return (lz * lz).sum()


def template_laplacian(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Sparse symmetric PSD ``L = (D - A) / mean(deg)`` of the template mesh (see the module docstring)."""
    edge_index = edge_index_from_faces(faces)
    mean_degree = edge_index.shape[1] / num_vertices
    laplacian = combinatorial_laplacian(edge_index, num_vertices)
    return torch.sparse_coo_tensor(
        laplacian.indices(), laplacian.values() / mean_degree, laplacian.shape, check_invariants=False
    ).coalesce()


def _use_bf16(setting, device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    if setting == "auto":
        from imagetomesh.nn.precision import cpu_has_bf16

        return cpu_has_bf16()
    return bool(setting)


def _diverged(loss: float, settings: FitSettings) -> InputError:
    """The error of a fit whose arithmetic overflowed (weights far too large): one clear line, not a traceback later."""
    return InputError(
        f"the fit diverged (its loss became {loss:g}): the loss weights (lambda_reg {settings.lambda_reg:g}, "
        f"lambda_dir {settings.lambda_dir:g}) are too large; use values near the defaults"
    )


def run_fit(
    prior,
    task_loss: TaskLoss,
    settings: FitSettings,
    mirrored: bool = False,
    progress: Optional[Callable[[float], None]] = None,
    span: tuple[float, float] = (0.0, 1.0),
    final_decode: bool = True,
) -> FitResult:
    """Optimise latents and pose so that the decoded template minimises ``task_loss``.

    Args:
        prior: a :class:`~imagetomesh.fitting.prior.Prior`.
        task_loss: ``(verts (V, 3) fit frame, faces (F, 3)) -> scalar``, differentiable in verts.
        settings: see :class:`FitSettings`.
        mirrored: fit the L-mirrored prior (faces are flipped so they stay outward).
        progress: ``progress(fraction)``, called with fractions inside ``span``; may raise
            :class:`InterruptedError` to cancel.
        final_decode: decode the final latents once more in float32 and report the task loss
            there; when False (quick probes) the last iteration's vertices and task loss are returned.
    """
    device = prior.device
    fine_level = prior.config.fit_template_level if settings.template_level is None else int(settings.template_level)
    # at least the last iteration runs on the full template, so the result always has its vertices
    n_coarse = 0
    if fine_level > 0:
        n_coarse = min(int(round(settings.iterations * settings.coarse_fraction)), settings.iterations - 1)
    stages = [(fine_level - 1, n_coarse), (fine_level, settings.iterations - n_coarse)]
    stages = [(level, n) for level, n in stages if n > 0]
    mirror = torch.as_tensor(MIRROR_L if mirrored else np.eye(3), dtype=torch.float32, device=device)
    shared = math.isinf(settings.lambda_dir)
    common = prior.mean_latent.to(device).reshape(1, -1).clone().requires_grad_(True)
    spread = float(prior.card.get("latent_std", 1.0)) if prior.card else 1.0
    params = [(common, settings.latent_lr * spread)]
    detail = None
    if not shared:
        n_first = prior.template(stages[0][0])[0].shape[0]
        detail = torch.zeros(n_first, common.shape[1], device=device, requires_grad=True)
        params.append((detail, settings.latent_lr * spread))
    translation = torch.zeros(3, device=device, requires_grad=settings.optimise_pose)
    log_scale = torch.zeros(1, device=device, requires_grad=settings.optimise_pose)
    if settings.optimise_pose:
        params += [(translation, settings.pose_lr), (log_scale, settings.pose_lr)]
    optimiser = Adam(params)
    bf16 = _use_bf16(settings.bf16, device)

    def decode(template: torch.Tensor, z: torch.Tensor, low_precision: bool) -> torch.Tensor:
        if low_precision:
            y = prior.bf16_decoder()(template.bfloat16(), z.bfloat16()).float()
        else:
            y = prior.decoder(template, z)
        y = y @ mirror.t()
        return torch.exp(log_scale) * y + translation

    def latents() -> torch.Tensor:
        return common if detail is None else common + detail

    lo, hi = span
    every = max(1, settings.iterations // 100)
    done = 0
    for level, iterations in stages:
        template, faces = prior.template(level)
        if mirrored:
            faces = faces[:, [0, 2, 1]]
        if detail is not None and detail.shape[0] != template.shape[0]:
            parent_edges = prior.parent_edges(level)
            grown = prolong(detail.detach(), parent_edges).requires_grad_(True)
            optimiser.replace(detail, grown, lambda state, edges=parent_edges: prolong(state, edges))
            detail = grown
        lambda_dir = settings.lambda_dir / 4 ** (fine_level - level)
        laplacian = None if shared or lambda_dir == 0 else template_laplacian(faces, template.shape[0]).to(device)
        for _ in range(iterations):
            z = latents()
            verts = decode(template, z, bf16)
            if not torch.isfinite(verts).all():  # the last step overflowed
                raise _diverged(math.nan, settings)
            task = task_loss(verts, faces)
            loss = task
            if settings.lambda_reg > 0:
                loss = loss + settings.lambda_reg * triangle_quality_regulariser(verts, faces)
            if laplacian is not None:
                loss = loss + lambda_dir * latent_laplacian_energy(z, laplacian)
            if not torch.isfinite(loss):  # a weight so large that float arithmetic overflows
                raise _diverged(float(loss.detach()), settings)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if progress is not None and (done % every == 0):
                progress(lo + (hi - lo) * done / settings.iterations)
            done += 1
    final = float(task.detach())
    if final_decode:
        with torch.no_grad():
            verts = decode(template, latents(), False)
            final = float(task_loss(verts, faces))
    if progress is not None:
        progress(hi)
    return FitResult(verts.detach().cpu().double().numpy(), faces.cpu().numpy(), final, mirrored)


def chamfer(pred: torch.Tensor, target: torch.Tensor, target_tree=None) -> torch.Tensor:
    """Symmetric mean squared Chamfer distance, as :func:`imagetomesh.geometry.distances.chamfer_distance`.

    On the CPU the nearest neighbours are found with k-d trees (``scipy.spatial.cKDTree``;
    ``target_tree`` may be given when the target is fixed), several times faster than the
    brute-force search at the sizes of a fit; the distances to them are then computed
    differentiably. Elsewhere the library's chamfer_distance is used.
    """
    if pred.device.type != "cpu":
        return chamfer_distance(pred, target)
    from scipy.spatial import cKDTree

    pred_np = pred.detach().numpy()
    tree = target_tree if target_tree is not None else cKDTree(target.detach().numpy())
    _, to_target = tree.query(pred_np)
    _, to_pred = cKDTree(pred_np).query(target.detach().numpy())
    to_target = torch.from_numpy(np.asarray(to_target, dtype=np.int64))
    to_pred = torch.from_numpy(np.asarray(to_pred, dtype=np.int64))
    d_pt = ((pred - target[to_target]) ** 2).sum(1).mean()
    d_tp = ((target - pred[to_pred]) ** 2).sum(1).mean()
    return d_pt + d_tp
