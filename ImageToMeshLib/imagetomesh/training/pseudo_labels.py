"""Pseudo-labels for the organs a planner did not contour in a training case, from trained teacher U-Nets.

In OpenKBP an organ is left uncontoured in many scans that hold it (the oesophagus in 130 of 196, the larynx in
105, the mandible in 64): the partial-label loss then teaches nothing about it there. Self-training fills those
gaps with what trained U-Nets (the teachers) find: where the teachers' mean probabilities make an uncontoured
organ the most probable class, the voxel is labelled that organ; where the organ's probability is at least a
``band`` without winning, the voxel stays unknown for it ("background or that organ", the partial-label loss's
own code), so the student is not taught the teachers' uncertain rim either way. An organ the teachers find in
less than ``min_fraction`` of its median contoured size stays uncontoured (absent, cut by the scan's edge, or
missed), never background. Contoured organs keep the planner's labels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from imagetomesh.io.atomic import atomic_write
from imagetomesh.nn.precision import bf16_autocast, bf16_supported, to_channels_last
from imagetomesh.scan import class_mask, mean_probabilities, most_probable_class
from imagetomesh.training.data import UNKNOWN, PreparedCase
from imagetomesh.weights import WEIGHTS_NAME

#: cases pseudo-labelled between two writes of the cache (a run stopped meanwhile labels them again)
SAVE_EVERY = 16


@torch.no_grad()
def teacher_probabilities(
    nets: list[torch.nn.Module], image: torch.Tensor, block: tuple[int, int, int]
) -> torch.Tensor:
    """The mean class probabilities ``(C, D, H, W)`` of the U-Nets ``nets`` (eval mode) over ``image (D, H, W)``,
    each run in blocks of at most ``block`` voxels (:func:`~imagetomesh.scan.mean_probabilities`, as ``segment``
    averages an ensemble's)."""
    batch = image[None, None]
    bf16 = bf16_supported(batch.device)
    with bf16_autocast(bf16, batch.device):
        return mean_probabilities(nets, batch, block)


def contoured_sizes(cases: list[PreparedCase], n_classes: int) -> np.ndarray:
    """``(C,)`` the median voxel count of each class over the cases where it was contoured and has voxels
    (infinite for a class that never does, which then cannot be pseudo-labelled; class 0 unused)."""
    sizes = np.full(n_classes, np.inf)
    for k in range(1, n_classes):
        counts = [int((c.label == k).sum()) for c in cases if bool(c.present[k])]
        counts = [n for n in counts if n > 0]
        if counts:
            sizes[k] = float(np.median(counts))
    return sizes


def pseudo_label(
    label: torch.Tensor,
    present: torch.Tensor,
    probabilities: torch.Tensor,
    min_voxels: np.ndarray,
    band: float,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(label (D, H, W) uint8, present (C,) bool, the classes added)``: ``label`` with each class ``k`` that
    ``present`` says was not contoured labelled where it is the most probable class of ``probabilities
    (C, D, H, W)`` (without stray pieces: :func:`~imagetomesh.scan.class_mask`) on voxels that no contour claims
    (0 or :data:`~imagetomesh.training.data.UNKNOWN` codes), and marked unknown for ``k`` (``UNKNOWN | 2**(k - 1)``)
    on such voxels where its probability is at least ``band`` without winning; ``present[k]`` then set. A class
    found in fewer than ``min_voxels[k]`` voxels (``(C,)``; infinite: never) is left as it was. The inputs are not modified."""
    out, now = label.clone(), present.clone()
    winner = most_probable_class(probabilities)
    added = []
    for k in range(1, probabilities.shape[0]):
        if bool(present[k]):
            continue
        mask = class_mask(winner, k)
        if mask is None or mask.sum() < min_voxels[k]:
            continue
        free = (out == 0) | (out >= UNKNOWN)
        organ = torch.from_numpy(mask) & free
        rim = (probabilities[k].cpu() >= band) & free & ~organ
        out[organ] = k
        out[rim] = out[rim] | UNKNOWN | (1 << (k - 1))
        now[k] = True
        added.append(k)
    return out, now, added


def teachers_key(teacher_names: list[str]) -> str:
    """The first 16 hex digits of the SHA-256 of the named models' weights (their folders' ``model.safetensors``,
    concatenated in order)."""
    from imagetomesh.zoo import find_model

    digest = hashlib.sha256()
    for name in teacher_names:
        digest.update((Path(find_model(name)) / WEIGHTS_NAME).read_bytes())
    return digest.hexdigest()[:16]


def add_pseudo_labels(
    cases: list[PreparedCase],
    teacher_names: list[str],
    band: float,
    min_fraction: float,
    cache: Path,
) -> dict[str, list[int]]:
    """Pseudo-label (:func:`pseudo_label`) the uncontoured organs of ``cases`` (in place: their ``label`` and
    ``present``) with the mean probabilities of the several-organ models ``teacher_names`` on each case's grid,
    an organ needing ``min_fraction`` of its median contoured size (:func:`contoured_sizes`). The changed voxels
    are kept in ``cache`` (a ``.pt`` file, keyed by the teachers' weights and the two knobs), so a resumed run
    reads them instead of running the teachers again. Returns ``{case id: the classes added}``."""
    from imagetomesh.zoo import load_model

    teachers = [load_model(name, "cpu") for name in teacher_names]
    key = f"changes-{teachers_key(teacher_names)}-{band}-{min_fraction}"
    stored = torch.load(cache, weights_only=True) if cache.exists() else {}
    if stored.get("key") != key:
        stored = {"key": key, "cases": {}}
    nets = [t.module.unet.eval() for t in teachers]
    if bf16_supported(torch.device("cpu")):
        for net in nets:
            to_channels_last(net)
    block = tuple(teachers[0].card["grid"]["shape"])
    n_classes = int(cases[0].present.shape[0])
    min_voxels = min_fraction * contoured_sizes(cases, n_classes)
    added, unsaved = {}, 0
    for n, case in enumerate(cases):
        if case.case_id not in stored["cases"]:
            probabilities = teacher_probabilities(nets, case.image, block)
            label, present, new = pseudo_label(case.label, case.present, probabilities, min_voxels, band)
            changed = torch.nonzero((label != case.label).flatten())[:, 0]
            stored["cases"][case.case_id] = {
                "changed": changed,
                "values": label.flatten()[changed],
                "present": present,
                "added": torch.tensor(new),
            }
            unsaved += 1
        if unsaved and (unsaved == SAVE_EVERY or n == len(cases) - 1):
            with atomic_write(cache) as tmp:
                torch.save(stored, tmp)
            unsaved = 0
        entry = stored["cases"][case.case_id]
        label = case.label.clone()
        label.view(-1)[entry["changed"]] = entry["values"]
        case.label, case.present = label, entry["present"]
        added[case.case_id] = entry["added"].tolist()
    return added


def describe_pseudo_labels(added: dict[str, list[int]], organs: list[dict]) -> str:
    """A log line: in how many cases each organ was pseudo-labelled (``organs[k - 1]`` names class ``k``)."""
    counts = [sum(k in classes for classes in added.values()) for k in range(1, len(organs) + 1)]
    listed = ", ".join(f"{o['name']} {n}" for o, n in zip(organs, counts))
    return f"pseudo-labelled (cases of {len(added)}): {listed}"
