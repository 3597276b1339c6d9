"""Scan guides: the whole-scan localiser probabilities a mesh decoder reads, made for training as ``segment``
makes them.

``segment`` runs a card's U-Nets (its ensemble) once over the whole scan and gives each decoder that reads their
probabilities (NUDF's guided encoder; a surface-start Voxel2Mesh's decoders, as their start) the probabilities
cropped around its organ (:meth:`~imagetomesh.inference.Segmenter._organ_decoder_mesh`). These saw the organ's
surroundings, which a U-Net run on the crop alone does not. A training that reads them does the same: each prepared
case is run once through the frozen networks, and each :class:`GuideWindow` a training crop can take of an organ
keeps the organ's probability and its voxels (:func:`scan_guides`), saved so that a later start or resume of the
same run reads them back (:func:`cached_scan_guides`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imagetomesh.io.atomic import atomic_write
from imagetomesh.nn.precision import bf16_autocast, bf16_supported, to_channels_last
from imagetomesh.scan import ORGAN_BOX_MARGIN, class_mask, crop_padded, mean_probabilities, most_probable_class
from imagetomesh.training.data import PreparedCase
from imagetomesh.zoo import ensemble_unet

#: ``(winner (D, H, W) int array of most probable classes, class k) -> (D, H, W) bool or None``: which voxels of the
#: whole scan a guide marks as the organ's
OrganVoxels = Callable[[np.ndarray, int], "np.ndarray | None"]


def most_probable(winner: np.ndarray, organ: int) -> np.ndarray:
    """The voxels whose most probable class is ``organ``, every piece kept: what a surface-start Voxel2Mesh's
    start (:meth:`~imagetomesh.models.mesh_state.DecoderMesh.surface_of`) reads of its crop, before it drops the
    stray pieces there itself."""
    return winner == organ


def jitter_margin(jitter: float) -> int:
    """Voxels a guide is stored beyond its crop on every side so that a crop whose centre moves by up to ``jitter``
    voxels along each axis stays inside it (plus one for rounding)."""
    return int(np.ceil(jitter)) + 1


def guide_networks(
    carried: torch.nn.Module, ensemble: list[str], owner: str, organs: list[dict], grid: dict, device: torch.device
) -> tuple[list[torch.nn.Module], bool]:
    """``(networks, bf16)``: the ``carried`` U-Net and those of the bundled models ``ensemble`` whose probabilities
    the guides average (:func:`~imagetomesh.zoo.ensemble_unet` checks they find ``organs`` on ``grid``; ``owner``
    names who asks), and whether ``device`` runs them in bf16, as ``segment`` does."""
    remedy = "name bundled models of the config's organs and grid"
    members = [ensemble_unet(n, owner, organs, grid, device.type, remedy) for n in ensemble]
    return [carried, *members], bf16_supported(device)


def describe_guides(what: str, ensemble: list[str], bf16: bool) -> str:
    """A log line: ``what`` guides were made, from how many U-Nets (the carried one and ``ensemble``'s)."""
    return (
        f"{what}: the mean probabilities of {1 + len(ensemble)} U-Net(s) over every prepared case"
        f"{' (bf16)' if bf16 else ''}, kept around its crops"
        + (f"; the carried U-Net's averaged with {', '.join(ensemble)}'s" if ensemble else "")
    )


def guide_in_window(
    stored: tuple[torch.Tensor, torch.Tensor],
    stored_at: tuple[int, int, int],
    start: tuple[int, int, int],
    shape: tuple[int, int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probability (d, h, w) float32, voxels (d, h, w) bool)``: the ``shape`` window from voxel ``start`` of a
    ``stored`` guide ``(probability, voxels)`` that starts at voxel ``stored_at``; ``ValueError`` where the window
    leaves it."""
    guide, voxels = stored
    at = [a - b for a, b in zip(start, stored_at)]
    if min(at) < 0 or any(a + n > m for a, n, m in zip(at, shape, guide.shape)):
        raise ValueError(f"a crop from {start} leaves the scan guide stored from {stored_at}")
    window = tuple(slice(a, a + n) for a, n in zip(at, shape))
    return guide[window].float(), voxels[window]


@dataclass(frozen=True)
class GuideWindow:
    """The ``shape (d, h, w)`` window from voxel ``start (k, j, i)`` (may leave the grid) of ``case``, for class
    ``organ``."""

    case: PreparedCase
    organ: int
    start: tuple[int, int, int]
    shape: tuple[int, int, int]


def scan_guides(
    windows: list[GuideWindow],
    unets: list[torch.nn.Module],
    device,
    bf16: bool = False,
    organ_voxels: OrganVoxels = class_mask,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(probability (d, h, w) float16, voxels (d, h, w) bool)]``, one per window in order: the mean of the frozen
    ``unets``' class probabilities over the window's whole prepared case, as ``segment`` computes them over a scan
    with its ensemble (:func:`~imagetomesh.scan.mean_probabilities` in blocks of the case's grid; under bf16
    autocast with channels-last convolutions where ``bf16``, as ``segment`` runs them where the device has bf16),
    the organ's channel and ``organ_voxels`` of the most probable classes (default
    :func:`~imagetomesh.scan.class_mask`, as ``segment`` finds an organ), cut to the window (probability 0 and no
    voxel outside the grid). One pass of each network per case."""
    by_case: dict[str, list[int]] = {}
    for i, window in enumerate(windows):
        by_case.setdefault(window.case.case_id, []).append(i)
    # copies, so that channels-last never reaches a network that is trained or saved
    nets = [to_channels_last(copy.deepcopy(net)) if bf16 else net for net in unets]
    for net in nets:
        net.eval()
    guides: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(windows)
    for indices in by_case.values():
        image = windows[indices[0]].case.image.float()[None, None].to(device)
        with bf16_autocast(bf16, torch.device(device)):
            probabilities = mean_probabilities(nets, image, tuple(image.shape[2:]), box_margin=ORGAN_BOX_MARGIN)
        probabilities = probabilities.float().cpu()
        winner = most_probable_class(probabilities)
        for i in indices:
            w = windows[i]
            voxels = organ_voxels(winner, w.organ)
            voxels = torch.zeros(winner.shape, dtype=torch.bool) if voxels is None else torch.from_numpy(voxels)
            guides[i] = (
                crop_padded(probabilities[w.organ], w.start, w.shape, 0.0).half(),
                crop_padded(voxels, w.start, w.shape, False),
            )
    return guides


def cached_scan_guides(
    windows: list[GuideWindow],
    unets: list[torch.nn.Module],
    device,
    cache: Path | None = None,
    bf16: bool = False,
    organ_voxels: OrganVoxels = class_mask,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`scan_guides`, saved at ``cache`` (atomically) and read back from there where they were made from the
    same windows, networks (their weights), organ voxels and precision (about 20 minutes on one thread for the
    head-and-neck training set and ``unet-headneck-ct`` in float32)."""
    key = guides_key(windows, unets, bf16, organ_voxels)
    if cache is not None and cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key:
            return [tuple(entry) for entry in saved["guides"]]
    guides = scan_guides(windows, unets, device, bf16, organ_voxels)
    if cache is not None:
        with atomic_write(cache) as tmp:
            torch.save({"key": key, "guides": guides}, tmp)
    return guides


def guides_key(
    windows: list[GuideWindow], unets: list[torch.nn.Module], bf16: bool, organ_voxels: OrganVoxels = class_mask
) -> str:
    """What a set of scan guides was made from (the windows' cases, organs, starts and shapes, the organ voxels, the
    U-Nets' weights, the organ box the later U-Nets read, the precision), as a string to compare."""
    digests = []
    for unet in unets:
        digest = hashlib.sha256()
        for name, tensor in sorted(unet.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests.append(digest.hexdigest())
    crops = [[w.case.case_id, w.organ, list(w.start), list(w.shape)] for w in windows]
    made = {"crops": crops, "voxels": organ_voxels.__name__, "unets": digests, "box": ORGAN_BOX_MARGIN, "bf16": bf16}
    return json.dumps(made)
