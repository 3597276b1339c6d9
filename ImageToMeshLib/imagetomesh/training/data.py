"""Training cases prepared once on a model grid and kept in memory, random augmented batches of them,
and their boundary targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from imagetomesh.core.transforms import GridTransform
from imagetomesh.io.images import read_image
from imagetomesh.nn.grid import index_to_grid
from imagetomesh.preprocessing import GridSpec, model_grid_transform, prepare_image, resample_to_grid
from imagetomesh.training.augment import AugmentConfig, augment
from imagetomesh.training.msd import Case, load_or_make_split, read_msd


@dataclass
class PreparedCase:
    """One case on the model grid: ``image`` float32 ``(D, H, W)`` normalised, ``label`` uint8 ``(D, H, W)``."""

    case_id: str
    image: torch.Tensor
    label: torch.Tensor
    transform: GridTransform


def prepare_case(case: Case, spec: GridSpec, labels: tuple[int, ...] | None = None) -> PreparedCase:
    """Read and resample a case; ``labels`` None merges every non-zero label into one object."""
    image = read_image(case.image)
    label = read_image(case.label)
    mask = label.array > 0 if labels is None else np.isin(label.array, labels)
    grid_image, transform = prepare_image(image, spec, warn=False)
    grid_label = resample_to_grid(
        label.with_array(mask.astype(np.float32)), model_grid_transform(label, spec), "nearest"
    )
    return PreparedCase(case.case_id, grid_image, (grid_label > 0.5).to(torch.uint8), transform)


def prepare_cases(cases: list[Case], spec: GridSpec, progress: bool = True) -> list[PreparedCase]:
    return [
        prepare_case(c, spec)
        for c in tqdm(cases, desc="preparing cases", disable=None if progress else True, leave=False)
    ]


def prepare_split(
    data_dir: str | Path, out: Path, spec: GridSpec, seed: int, progress: bool = True
) -> tuple[dict, list[PreparedCase], list[PreparedCase]]:
    """An MSD folder's run split (``out/split.json``, made with ``seed`` if missing) and its
    training and validation cases prepared on ``spec``: ``(split, train cases, val cases)``."""
    cases = read_msd(data_dir)
    split = load_or_make_split(list(cases), out / "split.json", seed=seed)
    train = prepare_cases([cases[c] for c in split["train"]], spec, progress=progress)
    val = prepare_cases([cases[c] for c in split["val"]], spec, progress=progress)
    return split, train, val


def random_image_batch(cases: list[PreparedCase], batch_size: int, config: AugmentConfig, generator: torch.Generator):
    """``batch_size`` cases drawn with replacement from ``cases``, each augmented with ``config``:
    ``images (B, 1, D, H, W)`` float32 and ``labels (B, D, H, W)`` uint8."""
    pick = torch.randint(len(cases), (batch_size,), generator=generator)
    images, labels = [], []
    for i in pick:
        image, label = augment(cases[i].image, cases[i].label, config, generator)
        images.append(image)
        labels.append(label)
    return torch.stack(images)[:, None], torch.stack(labels)


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
