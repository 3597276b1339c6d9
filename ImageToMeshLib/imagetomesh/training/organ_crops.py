"""Crops around one labelled organ, for a model with one mesh decoder per organ (Voxel2Mesh or NUDF with
``organ_crops``): the crops :meth:`imagetomesh.inference.Segmenter.segment_organs` meshes each organ
in, centred on the box around the organ (jittered in training, since a localiser's box is off by a
few voxels), cut from a case prepared on the whole-scan grid (:mod:`imagetomesh.training.data`)."""

from __future__ import annotations

import numpy as np
import torch

from imagetomesh.geometry.isosurface import MIN_STRUCTURE_VOXELS
from imagetomesh.models.organ_decoders import centre_crop, context_shape
from imagetomesh.scan import box_centre, crop_padded, crop_start
from imagetomesh.training.augment import AugmentConfig, augment, transformed
from imagetomesh.training.data import UNKNOWN, PreparedCase
from imagetomesh.training.scan_guides import (
    GuideWindow,
    cached_scan_guides,
    guide_in_window,
    jitter_margin,
    most_probable,
)

#: Scanned slices below an organ's contour that :func:`meshable` forgives (a contour ending a slice or two
#: short of the scan's end is whole)
GAP_SLICES = 2
#: A slice whose voxels all lie within this of the image's lowest value is padding (or air), not scan:
#: resampling leaves the air of a normalised CT at -1 +- 1e-7, the padding at -1
PADDING_TOLERANCE = 1e-3


def meshable(case: PreparedCase, organ: int) -> bool:
    """Whether ``case`` can teach (or validate) class ``organ``'s mesh: the organ was contoured, has voxels,
    and its contour was not cut short at its inferior end — no voxel marked "maybe this organ"
    (:func:`~imagetomesh.training.data.mark_uncontoured_slices`) in the scanned axial slices below it
    (those holding more than the grid's padding; at most :data:`GAP_SLICES` of them are forgiven). That
    is where OpenKBP's partly contoured organs stop short (the oesophagus above the end of the scan);
    their upper ends are anatomical (the spinal cord meets the brainstem, the oesophagus the pharynx),
    and an organ cut by the scan's own edge is meshed as the scan cuts it. ``case.transform`` says
    which array axis runs inferior to superior."""
    if case.present is not None and not bool(case.present[organ]):
        return False
    label = case.label
    inside = label == organ
    if not bool(inside.any()):
        return False
    maybe = (label >= UNKNOWN) & ((label & (1 << (organ - 1))) > 0)
    if not bool(maybe.any()):
        return True
    axis, upward = _superior_axis(case.transform.grid_to_lps)
    others = tuple(a for a in range(3) if a != axis)
    organ_slices = torch.nonzero(inside.any(dim=others))[:, 0]
    scanned = case.image.amax(dim=others) > case.image.min() + PADDING_TOLERANCE
    maybe_slices = torch.nonzero(maybe.any(dim=others) & scanned)[:, 0]
    below = maybe_slices < organ_slices.min() if upward else maybe_slices > organ_slices.max()
    return int(below.sum()) <= GAP_SLICES


def _superior_axis(grid_to_lps: np.ndarray) -> tuple[int, bool]:
    """``(array axis (D, H, W order) nearest to the patient's inferior-superior one, whether its index grows
    towards superior)`` of a grid whose ``(4, 4)`` grid-to-LPS map is ``grid_to_lps`` (S is LPS +z)."""
    column = int(np.argmax(np.abs(grid_to_lps[2, :3])))  # grid x, y or z
    return 2 - column, bool(grid_to_lps[2, column] > 0)


def organ_crop_start(
    case: PreparedCase, organ: int, shape: tuple[int, int, int], offset: np.ndarray | None = None
) -> tuple[int, int, int]:
    """The first voxel ``(k, j, i)`` of the ``shape`` crop of ``case`` centred on the box around class ``organ``
    (moved by ``offset`` ``(k, j, i)`` voxels)."""
    centre = box_centre(case.label == organ) + (0.0 if offset is None else np.asarray(offset, dtype=np.float64))
    return crop_start(centre, shape)


def organ_crop(
    case: PreparedCase, organ: int, shape: tuple[int, int, int], offset: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image (d, h, w) float32, label (d, h, w) uint8)``: the ``shape`` crop of ``case`` centred on the box
    around class ``organ`` (moved by ``offset`` ``(k, j, i)`` voxels), padded with the image's lowest value
    (air) and label 0 where it leaves the grid."""
    return case_crop(case, organ_crop_start(case, organ, shape, offset), shape)


def case_crop(
    case: PreparedCase, start: tuple[int, int, int], shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image (d, h, w) float32, label (d, h, w) uint8)``: the ``shape`` window of ``case`` from voxel ``start``
    ``(k, j, i)``, padded with the image's lowest value (air) and label 0 where it leaves the grid."""
    return (
        crop_padded(case.image.float(), start, shape, float(case.image.min())),
        crop_padded(case.label, start, shape, 0),
    )


def organ_cases(cases: list[PreparedCase], organs: int) -> dict[int, list[PreparedCase]]:
    """``{class k: the cases that can teach organ k's mesh}`` (:func:`meshable`) for classes ``1..organs``."""
    return {k: [c for c in cases if meshable(c, k)] for k in range(1, organs + 1)}


def describe_organ_cases(cases_by_organ: dict[int, list[PreparedCase]], organs: list[dict]) -> str:
    """A log line: how many cases teach each organ (``organs[k - 1]`` names class ``k``)."""
    return "cases teaching each organ's mesh: " + ", ".join(
        f"{o['name']} {len(cases_by_organ[k])}" for k, o in enumerate(organs, 1)
    )


def random_organ(cases_by_organ: dict[int, list], generator: torch.Generator) -> int:
    """An organ class drawn uniformly among those of ``cases_by_organ`` with at least one entry."""
    organs = [k for k, cases in cases_by_organ.items() if cases]
    if not organs:
        raise ValueError("no case can teach any organ's mesh")
    return organs[int(torch.randint(len(organs), (1,), generator=generator))]


def random_offset(jitter: float, generator: torch.Generator) -> np.ndarray:
    """A crop-centre offset ``(k, j, i)`` voxels, uniform in ``[-jitter, jitter]`` along each axis."""
    return ((torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1) * jitter).numpy()


class OrganCropGuides:
    """The scan guides of a surface-start Voxel2Mesh's training crops (:mod:`~imagetomesh.training.scan_guides`): for
    each (case, organ) a batch can draw, the organ's probability (float16) and its most probable voxels
    (:func:`~imagetomesh.training.scan_guides.most_probable`) over the organ's input window (its crop grown by the
    model's context, centred on the labelled organ), grown by the most a jittered crop moves
    (:func:`~imagetomesh.training.scan_guides.jitter_margin`). Made by :func:`organ_crop_guides`."""

    def __init__(self, windows: list[GuideWindow], guides: list[tuple[torch.Tensor, torch.Tensor]]):
        self._stored = {(w.case.case_id, w.organ): (w.start, g, v) for w, (g, v) in zip(windows, guides)}

    def crop(
        self, case: PreparedCase, organ: int, start: tuple[int, int, int], shape: tuple[int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probability (d, h, w) float32, voxels (d, h, w) bool)`` in the ``shape`` window from voxel ``start``;
        ``ValueError`` where the window leaves what was stored around the organ."""
        stored_at, guide, voxels = self._stored[(case.case_id, organ)]
        return guide_in_window((guide, voxels), stored_at, start, shape)


def organ_crop_guides(
    cases_by_organ: dict[int, list[PreparedCase]],
    crops: list[list[int]],
    context: int,
    jitter: float,
    unets: list[torch.nn.Module],
    device,
    cache=None,
    bf16: bool = False,
) -> OrganCropGuides:
    """The :class:`OrganCropGuides` of every (case, organ) of ``cases_by_organ`` for crops ``crops[k - 1]`` of class
    ``k`` grown by ``context`` voxels (the model's ``context_margin``) and centres moved by up to ``jitter`` voxels:
    the mean probabilities of the frozen ``unets`` over each whole case
    (:func:`~imagetomesh.training.scan_guides.cached_scan_guides`, saved at ``cache`` where given)."""
    margin = jitter_margin(jitter)
    windows = []
    for organ, cases in cases_by_organ.items():
        shape = context_shape(crops[organ - 1], context)
        for case in cases:
            start = organ_crop_start(case, organ, shape)
            grown = tuple(n + 2 * margin for n in shape)
            windows.append(GuideWindow(case, organ, tuple(a - margin for a in start), grown))
    guides = cached_scan_guides(windows, unets, device, cache, bf16, most_probable)
    return OrganCropGuides(windows, guides)


def start_probabilities(guides: torch.Tensor, voxels: torch.Tensor, organ: int, classes: int) -> torch.Tensor:
    """``(B, classes, d, h, w)`` class probabilities whose most probable class is ``organ`` exactly at ``voxels (B, d,
    h, w)`` bool and background elsewhere, the organ's channel ``guides (B, d, h, w)``: all that a surface-start
    decoder's start (:meth:`~imagetomesh.models.mesh_state.DecoderMesh.surface_of`: the most probable class's voxels
    and the organ's probability) reads of the whole-scan probabilities, from a stored scan guide."""
    out = torch.zeros((guides.shape[0], classes, *guides.shape[1:]), dtype=torch.float32, device=guides.device)
    out[:, 0] = (~voxels).float()
    out[:, organ] = torch.where(voxels, guides.float().clamp_min(1e-3), guides.float())
    return out


def random_organ_crop_batch(
    cases_by_organ: dict[int, list[PreparedCase]],
    crops: list[list[int]],
    batch_size: int,
    config: AugmentConfig,
    generator: torch.Generator,
    jitter: float,
    context: int = 0,
    guides: OrganCropGuides | None = None,
) -> tuple[int, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """One organ drawn uniformly (among those with cases), then ``batch_size`` of its cases with replacement,
    each cropped around the organ (``crops[k - 1]`` ``(d, h, w)`` for class ``k``; centre moved by up to
    ``jitter`` voxels along each axis) and augmented: ``(k, images (B, 1, d, h, w), labels (B, d, h, w), starts)``;
    with ``context`` m (a model's ``context_margin``) the images are the crops grown by m voxels on every side
    (augmented with their labels, which are then cut to the crop),
    labels as prepared (class indices, :data:`~imagetomesh.training.data.UNKNOWN` codes). ``starts``: with
    ``guides``, the crops' scan guides ``(probabilities (B, d, h, w), voxels (B, d, h, w) bool)``, moved by each
    crop's augmentation (bilinear, nearest) and cut to the crop as its label (:func:`start_probabilities` makes a
    decoder's start of them); None without. A crop whose organ
    was left too small to mesh (:data:`~imagetomesh.geometry.isosurface.MIN_STRUCTURE_VOXELS`: an organ cut by
    the scan, moved to the crop's edge and shrunk by the augmentation) is drawn again, up to
    :data:`REDRAWS` times."""
    organ = random_organ(cases_by_organ, generator)
    cases = cases_by_organ[organ]
    shape = context_shape(crops[organ - 1], context)
    images, labels, probabilities, voxels = [], [], [], []
    while len(images) < batch_size:
        for _ in range(REDRAWS):
            case = cases[int(torch.randint(len(cases), (1,), generator=generator))]
            start = organ_crop_start(case, organ, shape, random_offset(jitter, generator))
            image, label = case_crop(case, start, shape)
            image, label, linear, shift = augment(image, label, config, generator, return_transform=True)
            label = centre_crop(label, context)
            if int((label == organ).sum()) >= MIN_STRUCTURE_VOXELS:
                break
        else:
            raise ValueError(f"{REDRAWS} crops of organ {organ} in a row held too little of it to mesh")
        images.append(image)
        labels.append(label)
        if guides is not None:
            guide, near = guides.crop(case, organ, start, shape)
            probabilities.append(centre_crop(transformed(guide, linear, shift, "bilinear"), context))
            voxels.append(centre_crop(transformed(near.float(), linear, shift, "nearest"), context) > 0.5)
    starts = (torch.stack(probabilities), torch.stack(voxels)) if guides is not None else None
    return organ, torch.stack(images)[:, None], torch.stack(labels), starts


#: Crops :func:`random_organ_crop_batch` draws at most for one batch entry.
REDRAWS = 20
