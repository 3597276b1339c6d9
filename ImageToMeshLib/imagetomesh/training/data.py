"""Training cases prepared once on a model grid and kept in memory, random augmented batches of them,
and their boundary targets."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from imagetomesh.core.transforms import GridTransform
from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING
from imagetomesh.io.images import read_image
from imagetomesh.nn.grid import index_to_grid, isotropic_scale
from imagetomesh.preprocessing import GridSpec, model_grid_transform, prepare_image, resample_to_grid
from imagetomesh.training.augment import AugmentConfig, augment
from imagetomesh.training.msd import Case, load_or_make_split, read_msd
from imagetomesh.training.udf_points import surface_samples


@dataclass
class PreparedCase:
    """One case on the model grid: ``image`` float32 ``(D, H, W)`` normalised, ``label`` uint8 ``(D, H, W)``;
    ``surface``: the dense Chamfer target ``(points (P, 3) grid, normals (P, 3) isotropic frame)``
    of the label (:func:`~imagetomesh.training.udf_points.surface_samples`), when asked for.
    For several organs ``label`` holds class indices (0 background, organ ``k`` -> ``k``) and
    ``present`` ``(C,)`` bool says which classes were contoured in the case (class 0 always):
    a voxel labelled 0 may belong to an organ that was not."""

    case_id: str
    image: torch.Tensor
    label: torch.Tensor
    transform: GridTransform
    surface: tuple[torch.Tensor, torch.Tensor] | None = None
    present: torch.Tensor | None = None


#: Label values from this up are "background, or one of the organs of the low bits, not contoured here":
#: ``UNKNOWN | 2**(k - 1)`` for class ``k`` (classes 1-7), combined with ``|`` (see :func:`mark_uncontoured_slices`).
UNKNOWN = 128


def mark_uncontoured_slices(label: torch.Tensor, classes: list[int], axis: int) -> torch.Tensor:
    """``label (D, H, W)`` (class indices) with the background voxels of the slices (along ``axis``) beyond the
    contoured extent of each of ``classes`` marked :data:`UNKNOWN` ``| 2**(k - 1)``: there the organ may
    be present but was not contoured, so no loss may call it background there.

    Some organs are contoured over part of their length only: in OpenKBP the oesophagus contour stops
    where the planner stopped (often 50 mm or more above the end of the scan) though the organ goes on.
    Taught as background below that, the oesophagus output was pushed to log-probability -10 on its
    own voxels while the larynx (contoured whole) was learned. A class with no voxels is left alone
    (it was not contoured at all: the case's ``present`` says so)."""
    out = label.clone()
    for k in classes:
        if not 1 <= k <= 7:
            raise ValueError(f"only classes 1-7 can be marked as partly contoured, got {k}")
        other = tuple(a for a in range(3) if a != axis)
        slices = torch.nonzero((label == k).any(dim=other))[:, 0]
        if len(slices) == 0:
            continue
        beyond = torch.ones(label.shape[axis], dtype=torch.bool)
        beyond[int(slices[0]) : int(slices[-1]) + 1] = False
        shape = [1, 1, 1]
        shape[axis] = -1
        where = beyond.view(shape).expand_as(label) & ((out == 0) | (out >= UNKNOWN))
        out[where] = out[where] | UNKNOWN | (1 << (k - 1))
    return out


@dataclass(frozen=True)
class Mirror:
    """A left-right mirror of several-organ training crops: ``axis`` is the ``(D, H, W)`` array axis across
    the body (:meth:`~imagetomesh.preprocessing.GridSpec.array_axis` of LPS axis 0), ``classes`` the class
    each class becomes (:func:`~imagetomesh.organs.mirrored_classes`: left and right organs trade)."""

    axis: int
    classes: tuple[int, ...]

    @cached_property
    def table(self) -> torch.Tensor:
        """uint8 ``(256,)``: label value -> its value mirrored (built once per mirror, used for every crop). Class ``k`` becomes ``classes[k]``; an
        :data:`UNKNOWN` value keeps its meaning, its organ bits moved to their mirrored classes."""

        def moved(k: int) -> int:
            return self.classes[k] if k < len(self.classes) else k

        table = torch.tensor([moved(v) for v in range(UNKNOWN)], dtype=torch.uint8)
        unknown = [
            UNKNOWN | sum(1 << (moved(k) - 1) for k in range(1, 8) if v & (1 << (k - 1))) for v in range(UNKNOWN)
        ]
        return torch.cat([table, torch.tensor(unknown, dtype=torch.uint8)])


def mirrored_crop(
    image: torch.Tensor, label: torch.Tensor, present: torch.Tensor, mirror: Mirror
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``image (D, H, W)``, ``label (D, H, W)`` uint8 and ``present (C,)`` of a crop, mirrored across
    ``mirror.axis`` with the left and right organs' classes (and contoured flags) traded."""
    classes = list(mirror.classes)
    return image.flip(mirror.axis), mirror.table[label.long()].flip(mirror.axis), present[classes]


def prepare_case(
    case: Case,
    spec: GridSpec,
    labels: tuple[int, ...] | None = None,
    surface_points: int = 0,
    surface_smoothing: float = DEFAULT_SMOOTHING,
    organs: tuple[int, ...] | None = None,
    partly_contoured: tuple[int, ...] = (),
) -> PreparedCase:
    """Read and resample a case; ``labels`` None merges every non-zero label into one object.
    ``surface_points`` > 0 also samples that many points of the label's surface smoothed with
    ``surface_smoothing`` (seeded by the case id, so every run draws the same ones).
    ``organs`` (label values) keeps them apart instead: organ ``organs[k - 1]`` becomes class ``k``
    and :attr:`PreparedCase.present` records which were contoured (``case.labels_present``);
    the organs of ``partly_contoured`` (classes) are unknown, not background, in the axial
    slices beyond their contour (:func:`mark_uncontoured_slices`; the grid axis nearest to the
    patient's superior-inferior one)."""
    image = read_image(case.image)
    label = read_image(case.label)
    grid_image, transform = prepare_image(image, spec, warn=False)
    present = None
    if organs is not None:
        classes = np.zeros(label.array.shape, np.float32)
        for k, value in enumerate(organs, start=1):
            classes[label.array == value] = k
        contoured = set(case.labels_present) if case.labels_present is not None else set(organs)
        present = torch.tensor([True] + [value in contoured for value in organs])
    else:
        classes = (label.array > 0 if labels is None else np.isin(label.array, labels)).astype(np.float32)
    grid_label = resample_to_grid(label.with_array(classes), model_grid_transform(label, spec), "nearest")
    label_grid = grid_label.round().to(torch.uint8)
    if organs is not None and partly_contoured:
        axial = spec.array_axis(2, label)
        label_grid = mark_uncontoured_slices(label_grid, list(partly_contoured), axial)
    surface = None
    if surface_points > 0:
        seed = int.from_bytes(hashlib.sha256(case.case_id.encode()).digest()[:8], "little")
        surface = surface_samples(label_grid, surface_points, torch.Generator().manual_seed(seed), surface_smoothing)
    return PreparedCase(case.case_id, grid_image, label_grid, transform, surface, present)


def prepare_cases(
    cases: list[Case],
    spec: GridSpec,
    progress: bool = True,
    surface_points: int = 0,
    surface_smoothing: float = DEFAULT_SMOOTHING,
    organs: tuple[int, ...] | None = None,
    partly_contoured: tuple[int, ...] = (),
    threads: int = 1,
) -> list[PreparedCase]:
    """:func:`prepare_case` of each case, in order; ``threads`` > 1 prepares that many at once (reading,
    decompressing and resampling release the interpreter lock: 1.75x on 2 cores), each on one torch thread."""

    def prepare(case: Case) -> PreparedCase:
        return prepare_case(
            case,
            spec,
            surface_points=surface_points,
            surface_smoothing=surface_smoothing,
            organs=organs,
            partly_contoured=partly_contoured,
        )

    bar = tqdm(total=len(cases), desc="preparing cases", disable=None if progress else True, leave=False)
    torch_threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    if pool is not None:
        torch.set_num_threads(1)
    try:
        prepared = []
        for case in pool.map(prepare, cases) if pool is not None else map(prepare, cases):
            prepared.append(case)
            bar.update(1)
        return prepared
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(torch_threads)
        bar.close()


def prepare_split(
    data_dir: str | Path,
    out: Path,
    spec: GridSpec,
    seed: int,
    progress: bool = True,
    surface_points: int = 0,
    surface_smoothing: float = DEFAULT_SMOOTHING,
    organs: tuple[int, ...] | None = None,
    partly_contoured: tuple[int, ...] = (),
    threads: int = 1,
) -> tuple[dict, list[PreparedCase], list[PreparedCase]]:
    """An MSD folder's run split (``out/split.json``, made with ``seed`` if missing) and its
    training and validation cases prepared on ``spec`` (``threads`` at once): ``(split, train cases, val cases)``
    (with ``surface_points`` dense surface samples each, or ``organs`` kept apart: see :func:`prepare_case`)."""
    cases = read_msd(data_dir)
    split = load_or_make_split(list(cases), out / "split.json", seed=seed)
    train, val = (
        prepare_cases(
            [cases[c] for c in split[part]],
            spec,
            progress,
            surface_points,
            surface_smoothing,
            organs,
            partly_contoured,
            threads,
        )
        for part in ("train", "val")
    )
    return split, train, val


def random_image_batch(
    cases: list[PreparedCase],
    batch_size: int,
    config: AugmentConfig,
    generator: torch.Generator,
    return_surfaces: bool = False,
):
    """``batch_size`` cases drawn with replacement from ``cases``, each augmented with ``config``:
    ``images (B, 1, D, H, W)`` float32 and ``labels (B, D, H, W)`` uint8; with ``return_surfaces``
    also each case's dense surface moved by the same augmentation (:func:`augment_surface`)."""
    pick = torch.randint(len(cases), (batch_size,), generator=generator)
    images, labels, surfaces = [], [], []
    for i in pick:
        image, label, linear, shift = augment(cases[i].image, cases[i].label, config, generator, return_transform=True)
        images.append(image)
        labels.append(label)
        if return_surfaces:
            surfaces.append(augment_surface(*cases[i].surface, linear, shift, image.shape))
    if return_surfaces:
        return torch.stack(images)[:, None], torch.stack(labels), surfaces
    return torch.stack(images)[:, None], torch.stack(labels)


def random_patch_batch(
    cases: list[PreparedCase],
    batch_size: int,
    patch: tuple[int, int, int],
    config: AugmentConfig,
    generator: torch.Generator,
    foreground: float = 0.5,
    balance_classes: bool = False,
    mirror: Mirror | None = None,
):
    """``batch_size`` augmented ``patch`` ``(d, h, w)`` crops of cases drawn with replacement:
    ``(images (B, 1, d, h, w) float32, labels (B, d, h, w) uint8, present (B, C) bool)``.

    With probability ``foreground`` a crop is centred on a random organ voxel (the organs are
    small in a whole scan) — with ``balance_classes``, a voxel of one of the case's labelled
    classes chosen uniformly, so small organs are centred as often as large ones — else anywhere;
    crops stay inside the grid (a grid smaller than the patch along an axis is padded with its
    lowest value and label 0). With ``mirror``, a crop is mirrored left to right with probability
    ``config.mirror`` (:func:`mirrored_crop`)."""
    pick = torch.randint(len(cases), (batch_size,), generator=generator)
    images, labels, present = [], [], []
    for i in pick:
        case = cases[int(i)]
        image, label = _padded(case.image, case.label, patch)
        organ = (label > 0) & (label < UNKNOWN)
        if float(torch.rand(1, generator=generator)) < foreground and bool(organ.any()):
            if balance_classes:
                classes = torch.unique(label[organ])
                chosen = classes[int(torch.randint(len(classes), (1,), generator=generator))]
                voxels = torch.nonzero(label == chosen)
            else:
                voxels = torch.nonzero(organ)
            centre = voxels[int(torch.randint(len(voxels), (1,), generator=generator))]
        else:
            centre = torch.tensor([int(torch.randint(n, (1,), generator=generator)) for n in label.shape])
        start = [min(max(int(c) - p // 2, 0), n - p) for c, p, n in zip(centre, patch, label.shape)]
        window = tuple(slice(s0, s0 + p) for s0, p in zip(start, patch))
        image, label = augment(image[window].float(), label[window], config, generator)
        contoured = case.present
        if mirror is not None and config.mirror > 0 and float(torch.rand(1, generator=generator)) < config.mirror:
            image, label, contoured = mirrored_crop(image, label, contoured, mirror)
        images.append(image)
        labels.append(label)
        present.append(contoured)
    return torch.stack(images)[:, None], torch.stack(labels), torch.stack(present)


def _padded(image: torch.Tensor, label: torch.Tensor, patch) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` and ``label`` padded at the far end of each axis shorter than ``patch``."""
    pad = [max(p - n, 0) for p, n in zip(patch, label.shape)]
    if not any(pad):
        return image, label
    widths = [w for p in reversed(pad) for w in (0, p)]
    fill = float(image.min())
    return F.pad(image, widths, value=fill), F.pad(label, widths, value=0)


def augment_surface(
    points: torch.Tensor, normals: torch.Tensor, linear: torch.Tensor, shift: torch.Tensor, grid_shape
) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface samples moved as :func:`~imagetomesh.training.augment.augment` moved the image.

    The output shows the input at ``linear @ g + shift``, so a point ``p (P, 3)`` (grid) moves to
    ``linear^-1 (p - shift)``. In the isotropic frame (``S = diag(isotropic_scale)``) that map's
    linear part is ``M = S linear^-1 S^-1``; normals ``(P, 3)`` (isotropic frame) move by the
    inverse transpose ``M^-T = S^-1 linear^T S`` and are renormalised (outward stays outward,
    flips included)."""
    inverse = torch.linalg.inv(linear)
    moved = (points - shift) @ inverse.T
    s = isotropic_scale(grid_shape)
    normal_map = linear.T * s[None, :] / s[:, None]  # S^-1 linear^T S
    return moved, torch.nn.functional.normalize(normals @ normal_map.T, dim=1)


@dataclass
class ChamferTarget:
    """The Chamfer target of one case: ``points (P, 3)`` in grid coordinates with unit outward
    ``normals (P, 3)`` (isotropic frame); :meth:`draw` gives ``count`` of them drawn without
    replacement (all when ``count`` is None or at least ``P``)."""

    points: torch.Tensor
    normals: torch.Tensor
    count: int | None = None

    def draw(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count is None or len(self.points) <= self.count:
            return self.points, self.normals
        pick = torch.randperm(len(self.points), generator=generator)[: self.count]
        return self.points[pick], self.normals[pick]


def chamfer_target(
    label: torch.Tensor, kind: str, count: int | None, surface: tuple[torch.Tensor, torch.Tensor] | None = None
) -> ChamferTarget:
    """The Chamfer target of a binary ``(D, H, W)`` label: ``kind="faces"``, the voxel-face midpoints
    of :func:`boundary_points`, ``count`` drawn per step; ``kind="dense"``, every point of ``surface``
    (``(points, normals)``: :attr:`PreparedCase.surface`, possibly augmented)."""
    if kind == "faces":
        return ChamferTarget(*boundary_points(label), count)
    if kind == "dense":
        if surface is None:
            raise ValueError("the dense Chamfer target needs the case's surface samples (prepare_case surface_points)")
        return ChamferTarget(*surface, None)
    raise ValueError(f"target must be 'faces' or 'dense', got {kind!r}")


def boundary_points(label: torch.Tensor, max_points: int | None = None, generator: torch.Generator | None = None):
    """Points on the boundary of a binary ``(D, H, W)`` label, in grid coordinates, with outward normals.

    Each pair of 6-neighbouring voxels (inside, outside) contributes the midpoint of their
    centres (the 0.5 iso-surface of the binary label) with the unit normal pointing outside.
    Returns ``(points (P, 3), normals (P, 3))`` in (x, y, z) grid order; a random subset of
    ``max_points`` if given.
    """
    inside = torch.nn.functional.pad(label.bool(), (1, 1, 1, 1, 1, 1))
    points, normals = [], []
    for axis_tensor, axis_xyz in ((2, 0), (1, 1), (0, 2)):  # tensor dim W->x, H->y, D->z
        a = inside.narrow(axis_tensor, 0, inside.shape[axis_tensor] - 1)
        b = inside.narrow(axis_tensor, 1, inside.shape[axis_tensor] - 1)
        for sign, mask in ((1.0, a & ~b), (-1.0, ~a & b)):
            kji = torch.nonzero(mask).to(torch.float32)  # padded index of the lower voxel
            ijk = kji.flip(1) - 1.0
            ijk[:, axis_xyz] += 0.5
            normal = torch.zeros_like(ijk)
            normal[:, axis_xyz] = sign
            points.append(ijk)
            normals.append(normal)
    ijk = torch.cat(points)
    normal = torch.cat(normals)
    grid = index_to_grid(ijk, label.shape[::-1])
    if max_points is not None and len(grid) > max_points:
        pick = torch.randperm(len(grid), generator=generator)[:max_points]
        grid, normal = grid[pick], normal[pick]
    return grid, normal
