"""Training NUDF: clamped L1 on unsigned distances at points drawn around each label's surface.

Each case gets a pool of points with exact distances once (:mod:`imagetomesh.training.udf_points`);
every step draws ``points_per_case`` of them, and the case's augmentation (shift, small rotation
and scaling, intensity changes and noise: :func:`~imagetomesh.training.augment.augment`) moves
the points with the image and scales their distances with it. Loss (Juhl et al.):
``mean |min(f(p), c) - min(d(p), c)|`` with ``c = clamp`` (0.1 normalised units).

AdamW, one-cycle learning rate, gradient norm clipped at 5. The best model is the one with the
lowest clamped L1 on the validation cases' (unaugmented) points. The run also stops after
``time_limit_s`` (checkpointed, resumable). Run folder: as :mod:`imagetomesh.training.engine` writes it.

Several organs (``organ_crops`` in the model config, ``headneck-ct-cpu``): the model's localising U-Net
comes from ``--init-from`` (a trained several-organ ``unet`` model of the same organs) and is not trained;
each (case, organ) that can teach the organ's surface (:func:`~imagetomesh.training.organ_crops.meshable`)
gets a pool of points around that organ's surface in its crop centred on the labelled organ; each step
draws one organ, crops its cases with the centre jittered by up to ``crop_jitter`` voxels (the pool's
points moved with the crop), augments them, and trains that organ's decoder output. A guided encoder
(``localiser_input``) reads the U-Net's probability of the organ: with ``guide="scan"`` the U-Net's over the whole
case, cropped and augmented with the image (:func:`add_scan_guides`), as ``segment`` gives it. Validation: clamped
L1 per organ on the validation cases' crops (``val_l1_<organ>``), their mean ``val_l1`` selects -- or, with
``val_mesh_cases``, the mean Dice of the meshes ``segment`` would make in the crops of that many validation
cases per organ (``val_mesh_dice``): the L1 does not rank checkpoints as their meshes do (a run's step 8,400
had a lower L1 than its step 4,200 and a lower whole-scan mesh Dice, 0.605 against 0.630 on 4 cases).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from imagetomesh.errors import InputError
from imagetomesh.io.atomic import atomic_write
from imagetomesh.models.nudf import NUDF, NUDFConfig
from imagetomesh.organs import Organ
from imagetomesh.preprocessing import GridSpec
from imagetomesh.scan import crop_padded, crop_to_scan_grid, organ_masks
from imagetomesh.training.augment import AugmentConfig, augment, transformed
from imagetomesh.training.configs import (
    CT_AUGMENT,
    HEADNECK_CT_CROPS,
    HEADNECK_CT_GRID,
    HEADNECK_CT_ORGANS,
    HIPPOCAMPUS_GRID,
    UNET_HEADNECK_CT,
    OrganOptions,
    named_config,
)
from imagetomesh.training.data import PreparedCase, prepare_split
from imagetomesh.training.init_weights import init_from_model
from imagetomesh.training.organ_crops import (
    case_crop,
    describe_organ_cases,
    organ_cases,
    organ_crop_start,
    random_offset,
    random_organ,
)
from imagetomesh.training.scan_guides import (
    GuideWindow,
    cached_scan_guides,
    describe_guides,
    guide_in_window,
    guide_networks,
    jitter_margin,
)
from imagetomesh.training.schedules import one_cycle
from imagetomesh.training.tasks.base import EngineOptions, RunState, Task, run_card
from imagetomesh.training.udf_points import UDFPointConfig, sample_udf_points
from imagetomesh.training.validation import organ_means, rasterised_dice


@dataclass
class NUDFTrainConfig(EngineOptions, OrganOptions):
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
    #: train with :func:`clamped_l1`'s ``live`` form (validation reports the plain clamped L1)
    live_clamp: bool = False
    #: several-organ models: also mesh every organ in the crops of the first ``val_mesh_cases`` validation cases
    #: that have it, as ``segment`` does (:func:`organ_mesh_dice`), and select by that mesh Dice (0: by ``val_l1``)
    val_mesh_cases: int = 0
    #: with ``localiser_input``: what the encoder reads as the localiser's probability of the organ in training and
    #: validation. ``"crop"``: the U-Net run on the (augmented) crop alone; ``"scan"``: the U-Net's probabilities
    #: over the whole prepared case, cropped and augmented with the image -- what ``segment`` gives it (the U-Net
    #: over the whole scan, cropped), which saw the organ's surroundings (:func:`add_scan_guides`)
    guide: str = "crop"
    #: with ``guide="scan"``: models (bundled names) whose U-Nets' probabilities the scan guides average with the
    #: carried U-Net's, as ``segment`` averages them when the card names them in ``ensemble`` (the run's card does)
    guide_ensemble: list[str] = field(default_factory=list)
    points: UDFPointConfig = field(default_factory=UDFPointConfig)
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(
            flip=0.0, rotate_deg=10.0, scale=0.05, intensity_scale=0.1, intensity_shift=0.1, noise=0.05, shift=0.05
        )
    )
    threads: int = 1


def nudf_configs() -> dict[str, NUDFTrainConfig]:
    """``cpu``: a small encoder, about 55 minutes on one CPU thread; ``gpu``: the paper's sizes;
    ``headneck-ct-cpu``: the seven OpenKBP organs, each in its crop of the head-and-neck grid, found by
    the U-Net of ``--init-from`` (``unet-headneck-ct``); ``headneck-ct-cpu-guided``: the same with that
    U-Net's probability of the organ as a second encoder input; ``headneck-ct-cpu-guided-meshsel``: that, with
    :data:`HEADNECK_CT_MESHING` and the checkpoint selected by the validation mesh Dice (``val_mesh_cases``);
    ``headneck-ct-cpu-scan-guided``: that, the encoder reading the U-Net's probabilities over the whole case
    (``guide="scan"``), as ``segment`` gives them; ``headneck-ct-cpu-ensemble-guided``: that, those probabilities
    averaged with ``unet-headneck-ct-wide-gpu``'s, as ``segment`` averages them (``guide_ensemble``);
    ``...-finetune``: that at a third of the rate for 2,100 steps, for ``--init-from`` a trained field."""
    cpu_model = NUDFConfig(channels=(16, 32, 64, 64), hidden=256).to_dict()
    gpu_model = NUDFConfig(channels=(32, 64, 128, 128), hidden=256).to_dict()
    organs = copy.deepcopy(HEADNECK_CT_ORGANS)
    ct_model = NUDFConfig(
        channels=(16, 32, 64, 64),
        norm="group",
        hidden=256,
        unet=dict(UNET_HEADNECK_CT),
        organ_crops=[HEADNECK_CT_CROPS[o["name"]] for o in organs],
    ).to_dict()
    configs = {
        "cpu": NUDFTrainConfig(
            cpu_model, steps=2400, batch_size=2, points_per_case=3000, time_limit_s=55 * 60, threads=1
        ),
        "headneck-ct-cpu": NUDFTrainConfig(
            ct_model,
            grid=HEADNECK_CT_GRID,
            steps=4200,  # one organ per step: 600 steps (1,200 crops) per organ
            batch_size=2,
            points_per_case=3000,
            val_every=300,
            augment=copy.deepcopy(CT_AUGMENT),
            threads=1,
            organs=organs,
            partly_contoured=["spinal_cord", "esophagus"],
            live_clamp=True,
            # an organ fills ~1 % of its crop: with the hippocampus mix (15 % uniform points, mid 0.05) the
            # field fell to near zero 3-10 voxels from the organ in ~10 % of the crop, which meshing turned
            # into surface (measured on 3 validation cases; val_spurious now watches it)
            points=UDFPointConfig(near=0.3, mid=0.3, mid_sigma=0.1),
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
    # the same, its encoder also reading the localiser's probability of the organ on the crop
    guided = copy.deepcopy(configs["headneck-ct-cpu"])
    guided.model["localiser_input"] = True
    # the same, selected by the validation mesh Dice (4 cases per organ), meshed as nudf-headneck-ct is (settings
    # chosen on validation cases: docs/headneck-ct-experiments.md)
    selected = copy.deepcopy(guided)
    selected.model["meshing"] = dict(HEADNECK_CT_MESHING)
    selected.val_mesh_cases = 4
    # the same, its encoder reading in training what segment gives it: the U-Net's probabilities over the whole case
    # (the bundled nudf-headneck-ct trained on the U-Net run on the crop alone, and segment's whole-scan
    # probabilities raised its validation Dice without retraining, 0.677 -> 0.685 on 8 scans)
    scan_guided = copy.deepcopy(selected)
    scan_guided.guide = "scan"
    # the same, its guides the mean of the carried U-Net's and the wide GPU U-Net's probabilities: segment averages
    # them since session 24 (card 'ensemble'), while the bundled field trained on the carried U-Net's alone
    ensemble_guided = copy.deepcopy(scan_guided)
    ensemble_guided.guide_ensemble = ["unet-headneck-ct-wide-gpu"]
    # that, fine-tuning a field trained on the carried U-Net's guides (--init-from nudf-headneck-ct): a third of the
    # peak rate for half the steps
    ensemble_finetune = copy.deepcopy(ensemble_guided)
    ensemble_finetune.lr, ensemble_finetune.steps = 3e-4, 2100
    # that, teaching the contoured extent (--init-from nudf-headneck-ct): every case that contoured the spinal cord or
    # the oesophagus teaches its surface where the planner ended it, as the held-out labels end it. The partly
    # contoured configs leave out every case whose contour stops short of the scan's lower end (meshable), so the
    # field learned organs that run on, and its oesophagus ran about 6 mm past the U-Net's at each end (the U-Net
    # learned the contoured extent in its sixth training: validation oesophagus Dice 0.547 -> 0.576). Tried (session 44, 2,100
    # steps, 30 min on one thread; the oesophagus taught by 46 training cases instead of 18, the spinal cord by 145
    # instead of 104): offsets chosen again on the 20 validation scans, 0.754 (oesophagus 0.585 -> 0.595, left parotid
    # 0.768 -> 0.751), its weight mean with its start 0.756, the bundled field 0.756: not kept
    contoured_finetune = copy.deepcopy(ensemble_finetune)
    contoured_finetune.partly_contoured = None
    return {
        **configs,
        "headneck-ct-cpu-guided": guided,
        "headneck-ct-cpu-guided-meshsel": selected,
        "headneck-ct-cpu-scan-guided": scan_guided,
        "headneck-ct-cpu-ensemble-guided": ensemble_guided,
        "headneck-ct-cpu-ensemble-guided-finetune": ensemble_finetune,
        "headneck-ct-cpu-ensemble-guided-contoured-finetune": contoured_finetune,
    }


#: NUDF meshing of head-and-neck organ crops (:class:`~imagetomesh.geometry.udf_meshing.UDFMeshingConfig` fields), as
#: the bundled ``nudf-headneck-ct`` card has it, each chosen on the validation scans (docs/headneck-ct-experiments.md):
#: the surface within 3 voxels of the localiser's voxels of the organ (1 slice along the body axis: the localiser
#: learned where planners end an organ, the field did not; oesophagus Dice 0.585 -> 0.595, HD95 median 14.5 -> 10.2
#: mm); normals from the points within 1.5 voxels; projected points kept within 1 voxel of the surface after one
#: projection step; point counts that mesh a whole scan in about 10 s at the Dice of counts 3-5 times larger, grown in
#: proportion for a surface larger than 600 square voxels (the mandible's, 3-5 times the others': Dice 0.839 -> 0.850,
#: session 55); screened Poisson at least 5 deep with cells of at most one voxel (the spinal cord's 120-voxel crop
#: needs depth 7-8: cord Dice 0.776 -> 0.786) in an octree complete only to depth 3 (pymeshlab's 5 took half the
#: reconstruction time); every trimmed piece of at least a fifth of the largest's triangles kept.
HEADNECK_CT_MESHING = {
    "region_margin_voxels": 3.0,
    "region_margin_slices": 1.0,
    "normal_radius_voxels": 1.5,
    "drop_voxels": 1.0,
    "initial_points": 1500,
    "dense_points": 3000,
    "poisson_points": 2500,
    "iterations": 1,
    "poisson_cell_voxels": 1.0,
    "poisson_full_depth": 3,
    "min_piece_fraction": 0.2,
    "poisson_depth": 5,
    "reference_area_voxels": 600.0,
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


def clamped_l1(pred: torch.Tensor, target: torch.Tensor, clamp: float, live: bool = False) -> torch.Tensor:
    """``mean |min(pred, clamp) - min(target, clamp)|``. ``live``: where ``target < clamp``, ``|pred - target|``
    instead -- the same value wherever ``pred <= clamp``, and a gradient where the clamped loss has none
    (``pred > clamp``): a field pushed above the clamp everywhere otherwise never comes back (measured on the
    head-and-neck crops: every organ's output above the clamp by step 300, the loss flat from then on)."""
    clamped = pred.clamp(max=clamp)
    if live:
        clamped = torch.where(target < clamp, pred, clamped)
    return (clamped - target.clamp(max=clamp)).abs().mean()


@dataclass
class OrganPointPool:
    """Organ ``organ`` of ``case``: its training points around the organ's surface in the crop of the
    organ's ``shape`` ``(d, h, w)`` starting at voxel ``start`` ``(k, j, i)`` (centred on the labelled
    organ): ``points (N, 3)`` grid coordinates of that crop, ``distances (N,)``."""

    case: PreparedCase
    organ: int
    shape: tuple[int, int, int]
    start: tuple[int, int, int]
    points: torch.Tensor
    distances: torch.Tensor
    #: the whole-case U-Net's probability of the organ ``(d + 2m, h + 2m, w + 2m)`` float16 and its voxels of the
    #: organ (bool, same shape) over the pool's crop grown by ``guide_margin`` m voxels: :func:`add_scan_guides`
    guide: torch.Tensor | None = None
    guide_mask: torch.Tensor | None = None
    guide_margin: int = 0

    def crop_start(self, offset: np.ndarray | None = None) -> tuple[int, int, int]:
        """The first voxel ``(k, j, i)`` of the crop with its centre moved by ``offset`` ``(k, j, i)`` voxels (none:
        the pool's own crop)."""
        return self.start if offset is None else organ_crop_start(self.case, self.organ, self.shape, offset)

    def scan_guide(self, start: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probability (d, h, w) float32, voxels (d, h, w) bool)`` of the stored scan guide in the crop from
        ``start`` (:meth:`crop_start`)."""
        if self.guide is None:
            raise ValueError("this pool has no scan guide: add_scan_guides makes them")
        stored_at = tuple(a - self.guide_margin for a in self.start)
        return guide_in_window((self.guide, self.guide_mask), stored_at, start, self.shape)

    def crop(self, offset: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image (d, h, w), label (d, h, w), points (N, 3))``: the crop with its centre moved by ``offset``
        ``(k, j, i)`` voxels (none: the pool's own crop), the pool's points in its grid coordinates."""
        return self.crop_from(self.crop_start(offset))

    def crop_from(self, start: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`crop` of the crop from voxel ``start`` (:meth:`crop_start`)."""
        image, label = case_crop(self.case, start, self.shape)
        if start == self.start:
            return image, label, self.points
        moved_from = tuple(a - b for a, b in zip(self.start, start))  # the pool's crop inside the new one
        points = crop_to_scan_grid(self.points.double().numpy(), moved_from, self.shape, self.shape)
        return image, label, torch.from_numpy(points).float()


def make_organ_pools(
    cases_by_organ: dict[int, list[PreparedCase]],
    crops: list[list[int]],
    config: UDFPointConfig,
    seed: int,
    progress: bool = True,
    cache: Path | None = None,
) -> dict[int, list[OrganPointPool]]:
    """``{class k: one pool per case of cases_by_organ[k]}``, each from the organ's crop ``crops[k - 1]``.
    With ``cache`` the pools are saved there (written atomically) and read back from there by a later start
    or resume of the run when they were made from the same cases, crops, point config and seed (sampling
    the head-and-neck pools takes minutes; reading them, seconds)."""
    key = _pools_key(cases_by_organ, crops, config, seed)
    saved = _read_pools(cache, key, cases_by_organ, crops) if cache is not None else None
    if saved is not None:
        return saved
    generator = torch.Generator().manual_seed(seed)
    pairs = [(k, case) for k, cases in cases_by_organ.items() for case in cases]
    pools: dict[int, list[OrganPointPool]] = {k: [] for k in cases_by_organ}
    for k, case in tqdm(pairs, desc="sampling points", disable=None if progress else True, leave=False):
        shape = tuple(crops[k - 1])
        start = organ_crop_start(case, k, shape)
        label = crop_padded(case.label, start, shape, 0) == k
        pools[k].append(OrganPointPool(case, k, shape, start, *sample_udf_points(label, config, generator)))
    if cache is not None:
        _write_pools(cache, key, pools)
    return pools


@torch.no_grad()
def add_scan_guides(
    pools_by_organ: dict[int, list[OrganPointPool]],
    unets: list[torch.nn.Module],
    jitter: float,
    device,
    cache: Path | None = None,
    bf16: bool = False,
) -> None:
    """Give every pool its scan guide (:attr:`OrganPointPool.guide`): the mean of the frozen ``unets``' class
    probabilities over the pool's whole prepared case, the organ's channel and its voxels
    (:func:`~imagetomesh.scan.class_mask` of the mean) kept around the pool's crop, grown by the voxels a crop-centre
    ``jitter`` can move it (plus one for rounding): :func:`~imagetomesh.training.scan_guides.cached_scan_guides`,
    saved at ``cache`` where given."""
    margin = jitter_margin(jitter)
    pools = [pool for entries in pools_by_organ.values() for pool in entries]
    windows = [
        GuideWindow(
            pool.case, pool.organ, tuple(a - margin for a in pool.start), tuple(n + 2 * margin for n in pool.shape)
        )
        for pool in pools
    ]
    for pool, (guide, mask) in zip(pools, cached_scan_guides(windows, unets, device, cache, bf16)):
        pool.guide, pool.guide_mask, pool.guide_margin = guide, mask, margin


def organ_probabilities(guides: torch.Tensor, organ: int, organs: int) -> torch.Tensor:
    """``(B, organs + 1, d, h, w)`` class probabilities holding organ ``organ``'s ``guides (B, d, h, w)`` and zero
    elsewhere: what NUDF's encoder reads of the localiser (its channel ``organ``) in the shape it checks."""
    out = torch.zeros((guides.shape[0], organs + 1, *guides.shape[1:]), dtype=guides.dtype, device=guides.device)
    out[:, organ] = guides
    return out


def _pools_key(cases_by_organ: dict[int, list[PreparedCase]], crops, config: UDFPointConfig, seed: int) -> str:
    """What a set of organ pools was made from, as a string to compare."""
    cases = {str(k): [c.case_id for c in entries] for k, entries in cases_by_organ.items()}
    made_from = {"cases": cases, "crops": [list(c) for c in crops], "points": config.to_dict(), "seed": seed}
    return json.dumps(made_from, sort_keys=True)


def _write_pools(cache: Path, key: str, pools: dict[int, list[OrganPointPool]]) -> None:
    entries = {str(k): [(p.case.case_id, list(p.start), p.points, p.distances) for p in ps] for k, ps in pools.items()}
    with atomic_write(cache) as tmp:
        torch.save({"key": key, "pools": entries}, tmp)


def _read_pools(
    cache: Path, key: str, cases_by_organ: dict[int, list[PreparedCase]], crops
) -> dict[int, list[OrganPointPool]] | None:
    """The pools saved at ``cache`` if they were made from ``key``, else None."""
    if not cache.exists():
        return None
    saved = torch.load(cache, weights_only=True)
    if saved.get("key") != key:
        return None
    by_id = {c.case_id: c for entries in cases_by_organ.values() for c in entries}
    return {
        int(k): [
            OrganPointPool(by_id[case_id], int(k), tuple(crops[int(k) - 1]), tuple(start), points, distances)
            for case_id, start, points, distances in entries
        ]
        for k, entries in saved["pools"].items()
    }


def augmented_points(
    image: torch.Tensor,
    label: torch.Tensor,
    points: torch.Tensor,
    distances: torch.Tensor,
    config: NUDFTrainConfig,
    generator: torch.Generator,
    guide: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``image (D, H, W)`` augmented, with ``points_per_case`` of its ``points (N, 3)`` (grid) drawn and moved
    with it and their ``distances (N,)`` scaled with it, and the localiser's probability ``guide (D, H, W)`` (or
    None) moved with it: ``(image, points (P, 3), distances (P,), guide)``."""
    image, _, linear, shift = augment(image, label, config.augment, generator, return_transform=True)
    if guide is not None:
        guide = transformed(guide, linear, shift, "bilinear")
    pick = torch.randint(len(points), (config.points_per_case,), generator=generator)
    moved = (points[pick] - shift) @ torch.linalg.inv(linear).T
    return image, moved, distances[pick] * abs(float(torch.linalg.det(linear))) ** (-1.0 / 3.0), guide


def training_batch(pools: list[PointPool], config: NUDFTrainConfig, generator: torch.Generator):
    """Augmented ``images (B, 1, D, H, W)``, ``points (B, P, 3)`` grid, ``distances (B, P)``, None (no guide)."""
    cases = [
        augmented_points(pool.case.image, pool.case.label, pool.points, pool.distances, config, generator)
        for pool in pools
    ]
    return _stacked(cases)


def organ_training_batch(
    pools_by_organ: dict[int, list[OrganPointPool]], config: NUDFTrainConfig, generator: torch.Generator
):
    """One organ ``k`` drawn uniformly (among those with pools), ``batch_size`` of its pools with replacement,
    each cropped with a jittered centre and augmented: ``(k, images (B, 1, d, h, w), points (B, P, 3),
    distances (B, P), guides (B, d, h, w))``; ``guides``: the pools' scan guides cropped and augmented with their
    images (:func:`add_scan_guides`), None when the pools have none (the encoder's U-Net then runs on the crop)."""
    organ = random_organ(pools_by_organ, generator)
    pools = pools_by_organ[organ]
    cases = []
    for i in torch.randint(len(pools), (config.batch_size,), generator=generator):
        pool = pools[int(i)]
        start = pool.crop_start(random_offset(config.crop_jitter, generator))
        image, label, points = pool.crop_from(start)
        guide = None if pool.guide is None else pool.scan_guide(start)[0]
        cases.append(augmented_points(image, label, points, pool.distances, config, generator, guide))
    return (organ, *_stacked(cases))


def _stacked(cases: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]):
    images, points, distances, guides = zip(*cases)
    guides = None if guides[0] is None else torch.stack(guides)
    return torch.stack(images)[:, None], torch.stack(points), torch.stack(distances), guides


#: What :func:`validate` reports (:func:`_pool_errors`): clamped L1, the error near the surface, spurious fraction.
VALIDATION_ERRORS = ("val_l1", "val_l1_near", "val_spurious")


@torch.no_grad()
def validate(model: NUDF, pools: list[PointPool], n_points: int, device) -> dict[str, float]:
    """:data:`VALIDATION_ERRORS` on ``n_points`` of every validation case's points (unaugmented; :func:`_pool_errors`),
    averaged over cases."""
    model.eval()
    errors = np.array([_pool_errors(model, pool.case.image, pool, n_points, device) for pool in pools]).mean(0)
    model.train()
    return dict(zip(VALIDATION_ERRORS, map(float, errors)))


@torch.no_grad()
def validate_organs(
    model: NUDF, pools_by_organ: dict[int, list[OrganPointPool]], n_points: int, device, organs: list[str]
) -> dict[str, float]:
    """:func:`validate` per organ on its pools' own crops (``organs[k - 1]`` names class ``k``): each of
    :data:`VALIDATION_ERRORS` per organ (``val_l1_<organ>``, ...) and as the mean over organs."""
    model.eval()
    per_organ = {}
    for k, pools in pools_by_organ.items():
        if pools:
            errors = [
                _pool_errors(
                    model, pool.crop()[0], pool, n_points, device, organ=k, probabilities=_pool_guide(pool, len(organs))
                )
                for pool in pools
            ]
            per_organ[organs[k - 1]] = np.array(errors).mean(0)
    model.train()
    out = {
        f"{metric}_{name}": float(e[i]) for i, metric in enumerate(VALIDATION_ERRORS) for name, e in per_organ.items()
    }
    means = np.mean(list(per_organ.values()), axis=0)
    return {**out, **{metric: float(means[i]) for i, metric in enumerate(VALIDATION_ERRORS)}}


@torch.no_grad()
def organ_mesh_dice(
    model: NUDF, pools_by_organ: dict[int, list[OrganPointPool]], cases: int, device, organs: list[str]
) -> dict[str, float]:
    """Per organ (``organs[k - 1]`` names class ``k``), the Dice of the mesh ``segment`` makes in the crops of its
    first ``cases`` pools (centred on the labelled organ): the surface sought near the localiser's voxels of the
    organ in the crop (:func:`~imagetomesh.scan.organ_masks`), rasterised in the crop against the organ's label
    (``val_mesh_dice_<organ>``; 0 where the localiser finds nothing or no surface is found), and their mean over
    organs (``val_mesh_dice``)."""
    model.eval()
    dices = {
        organs[k - 1]: [_crop_mesh_dice(model, pool, k, organs[k - 1], device) for pool in pools[:cases]]
        for k, pools in pools_by_organ.items()
    }
    model.train()
    return organ_means(dices, "val_mesh_dice")


def _pool_guide(pool: OrganPointPool, organs: int) -> torch.Tensor | None:
    """The class probabilities ``(1, organs + 1, d, h, w)`` the encoder reads of the localiser in ``pool``'s own crop: its
    scan guide (:func:`organ_probabilities`), or None (no guide: the encoder runs its U-Net on the crop)."""
    if pool.guide is None:
        return None
    return organ_probabilities(pool.scan_guide(pool.start)[0][None], pool.organ, organs)


def _crop_mesh_dice(model: NUDF, pool: OrganPointPool, organ: int, name: str, device) -> float:
    """:func:`organ_mesh_dice` of one pool's crop of class ``organ`` (named ``name``): the localiser's voxels and
    probabilities are the pool's scan guide's where it has one, else its U-Net's on the crop."""
    image, label, _ = pool.crop()
    batch = image[None, None].float().to(device)
    if pool.guide is not None:
        guide, voxels = pool.scan_guide(pool.start)
        probabilities = organ_probabilities(guide[None], organ, model.config.organs).to(device)
        near = voxels.numpy() if bool(voxels.any()) else None
    else:
        probabilities = model.unet(batch)[0].float().softmax(1)
        near = organ_masks(probabilities[0], [Organ(name, organ, organ)])[name]
    if near is None:  # the localiser finds nothing
        return 0.0
    try:
        around = torch.from_numpy(near)[None]
        mesh = model.predict_meshes(batch, organ=organ, near=around, probabilities=probabilities)[0]
    except InputError:  # no surface near the localiser's voxels
        return 0.0
    return rasterised_dice(mesh.vertices, mesh.faces, (label == organ).numpy())


def _pool_errors(
    model: NUDF, image: torch.Tensor, pool, n_points: int, device, organ: int | None = None, probabilities=None
):
    """``(clamped L1, mean error within 0.02 units of the surface, spurious fraction)`` of ``model`` on ``image
    (D, H, W)`` at ``n_points`` of ``pool``'s points, evenly spaced through the pool (which holds its
    near-surface points first and its uniform ones last). Spurious: of the points at least half the clamp
    from the surface, the fraction where the field is below a tenth of the clamp -- where meshing would
    find a surface that is not there. ``probabilities``: what the encoder reads of the localiser (see
    :meth:`~imagetomesh.models.nudf.NUDF.encode`)."""
    pick = torch.linspace(0, len(pool.points) - 1, min(n_points, len(pool.points))).round().long()
    pts, dist = pool.points[pick].to(device), pool.distances[pick].to(device)
    if probabilities is not None:
        probabilities = probabilities.to(device)
    pred = model(image[None, None].float().to(device), pts[None], organ=organ, probabilities=probabilities)[0]
    near = dist < 0.02
    clamp = model.config.clamp
    far = dist >= clamp / 2
    spurious = float((pred[far] < clamp / 10).float().mean()) if bool(far.any()) else 0.0
    return float(clamped_l1(pred, dist, clamp)), float((pred[near] - dist[near]).abs().mean()), spurious


class NUDFTask(Task):
    """NUDF on an MSD folder: point pools made once per case, clamped L1 on augmented batches."""

    def __init__(self, config: NUDFTrainConfig, run, init_from=None) -> None:
        self.organ_model = bool(config.model.get("organ_crops"))
        if init_from and not self.organ_model:
            raise InputError("NUDF trains from scratch (its encoder is not a U-Net); drop --init-from")
        if self.organ_model and not init_from:
            raise InputError(
                "a several-organ NUDF finds its organs with a trained several-organ U-Net: give --init-from a unet "
                "model of the same organs (e.g. Resources/Models/unet-headneck-ct)"
            )
        if config.guide_ensemble and config.guide != "scan":
            raise InputError("guide_ensemble averages the scan guides: it needs guide 'scan'")
        if config.guide not in ("crop", "scan") or (config.guide == "scan" and not config.model.get("localiser_input")):
            raise InputError(
                f"guide must be 'crop' or 'scan', and 'scan' needs a model with localiser_input; got {config.guide!r}"
            )
        super().__init__(config, run)
        self.init_from = init_from

    @classmethod
    def configs(cls, kind: str = "nudf") -> dict[str, NUDFTrainConfig]:
        return nudf_configs()

    def setup(self) -> None:
        run, config = self.run, self.config
        self.split, train_cases, val_cases = prepare_split(
            run.data_dir,
            run.out,
            config.grid,
            run.seed,
            progress=run.writer,
            organs=config.organ_labels,
            partly_contoured=config.organ_classes("partly_contoured"),
        )
        self.model = NUDF(NUDFConfig(**config.model)).to(run.device)
        if self.organ_model:
            if not config.organs or len(config.organs) != self.model.config.organs:
                raise InputError("a several-organ NUDF config needs organs, one per organ_crops entry")
            init_from_model(self.model, "nudf", self.init_from, run.log, config.organs)
            self.model.unet.requires_grad_(False)
            crops = config.model["organ_crops"]
            train_by_organ = organ_cases(train_cases, len(config.organs))
            run.log(describe_organ_cases(train_by_organ, config.organs))
            self.train_pools = make_organ_pools(
                train_by_organ, crops, config.points, run.seed, run.writer, cache=run.out / "train_pools.pt"
            )
            val_by_organ = organ_cases(val_cases, len(config.organs))
            self.val_pools = make_organ_pools(
                val_by_organ, crops, config.points, run.seed + 1, run.writer, cache=run.out / "val_pools.pt"
            )
            if config.guide == "scan":
                owner, grid = "this training config's guide_ensemble", config.grid.to_dict()
                nets, bf16 = guide_networks(
                    self.model.unet, config.guide_ensemble, owner, config.organs, grid, run.device
                )
                for pools, name in ((self.train_pools, "train"), (self.val_pools, "val")):
                    cache = run.out / f"{name}_scan_guides.pt"
                    add_scan_guides(pools, nets, config.crop_jitter, run.device, cache, bf16)
                run.log(describe_guides("scan guides", config.guide_ensemble, bf16))
        else:
            self.train_pools = make_pools(train_cases, config.points, run.seed)
            self.val_pools = make_pools(val_cases, config.points, run.seed + 1)
        learned = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(learned, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = one_cycle(self.optimizer, config.lr, config.steps)

    def before_step(self, progress: float) -> None:
        if self.organ_model:  # the localiser keeps its batch-norm statistics (the engine sets train mode)
            self.model.unet.eval()

    def batch(self, generator):
        if self.organ_model:
            return organ_training_batch(self.train_pools, self.config, generator)
        pick = torch.randint(len(self.train_pools), (self.config.batch_size,), generator=generator)
        return (None, *training_batch([self.train_pools[i] for i in pick], self.config, generator))

    def loss(self, batch, generator):
        organ, images, points, distances, guides = batch
        dev = self.run.device
        probabilities = None if guides is None else organ_probabilities(guides.to(dev), organ, self.model.config.organs)
        predicted = self.model(images.to(dev), points.to(dev), organ=organ, probabilities=probabilities)
        loss = clamped_l1(predicted, distances.to(dev), self.model.config.clamp, self.config.live_clamp)
        return loss, {"loss": float(loss.detach())}

    def validate(self) -> dict[str, float]:
        if self.organ_model:
            names = [o["name"] for o in self.config.organs]
            metrics = validate_organs(self.model, self.val_pools, self.config.val_points, self.run.device, names)
            if self.config.val_mesh_cases:
                cases = self.config.val_mesh_cases
                metrics.update(organ_mesh_dice(self.model, self.val_pools, cases, self.run.device, names))
            return metrics
        return validate(self.model, self.val_pools, self.config.val_points, self.run.device)

    def score(self, metrics: dict[str, float]) -> float:
        return -metrics["val_mesh_dice"] if "val_mesh_dice" in metrics else metrics["val_l1"]

    def card(self, metrics: dict, state: RunState) -> dict:
        card = run_card(self.run, "nudf", self.config.model, self.config.grid, self.split, metrics, state.step)
        if self.config.organs:
            card["organs"] = self.config.organs
        if self.config.guide_ensemble:  # segment then gives the field the guides it trained on
            card["ensemble"] = list(self.config.guide_ensemble)
        return card


def get_nudf_config(name: str) -> NUDFTrainConfig:
    return named_config(nudf_configs(), name, "nudf")
