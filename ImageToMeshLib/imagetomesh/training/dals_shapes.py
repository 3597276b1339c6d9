"""Shape data for DALS priors: surface point clouds of real organs, in LPS mm.

Five sources:

- ``hippocampus``: the Medical Segmentation Decathlon Task04 labels (labels 1 + 2 together as
  one hippocampus), the split saved in ``Resources/Splits/hippocampus.json`` (the one every
  hippocampus model of the project uses; made with :func:`load_or_make_split` if missing).
- ``kidney``: KiTS19 segmentations (kidney + tumour, ``label > 0``, as one object). Each case
  is split into its kidneys: the two largest connected components (26-connectivity), the
  second kept only if it holds at least ``MIN_SECOND_FRACTION`` of the first's voxels (some
  patients have one kidney). The side is the patient's left for the component with the larger
  L coordinate (a lone kidney: left when right of the image's L centre). Right kidneys are
  mirrored along L (``x -> -x`` in LPS) so every training shape is a left kidney. The split is
  by case (both kidneys of a patient on the same side of it), seeded, saved to
  ``Resources/Splits/kits19.json``.

- ``mandible``, ``parotid`` and ``brainstem``: the OpenKBP head-and-neck CT contours
  (``../shared/data/openkbp-ct``, label 7 Mandible, 1 Brainstem; 3 RightParotid and 4 LeftParotid, the right ones mirrored along L so every
  training shape is a left parotid), only where the organ was contoured (``labels_present``) and
  does not reach the edge of the scanned slab (a cut organ is not the organ's shape). Split: the
  CT models' ``Resources/Splits/openkbp-ct.json``, so no test patient is seen.

Each shape's surface is :func:`~imagetomesh.geometry.isosurface.labelmap_to_mesh` of its mask
(cropped around the component first: the KiTS volumes are 611 x 512 x 512; for kidneys with
cavities and slice-wise holes filled, :func:`fill_cavities`, so the prior learns the envelope
rather than the renal sinus), sampled with ``n_points`` area-uniform points. Results are cached
as ``.npz`` files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from imagetomesh.core.cropping import bounding_box, crop_to_box
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.geometry.isosurface import labelmap_to_mesh
from imagetomesh.io.atomic import atomic_write
from imagetomesh.io.images import read_image
from imagetomesh.metrics import sample_surface
from imagetomesh.models.dals import MIRROR_L
from imagetomesh.training.msd import load_or_make_split, read_msd

SHAPE_KINDS = ("hippocampus", "kidney", "mandible", "parotid", "brainstem")
SPLITS_DIR = Path(__file__).resolve().parents[3] / "Resources" / "Splits"
HIPPOCAMPUS_SPLIT = SPLITS_DIR / "hippocampus.json"
KITS_SPLIT = SPLITS_DIR / "kits19.json"
OPENKBP_SPLIT = SPLITS_DIR / "openkbp-ct.json"
#: OpenKBP shape sources -> ((label value, side), ...): one organ, or a pair whose right one is mirrored
OPENKBP_ORGANS = {"mandible": ((7, ""),), "parotid": ((4, "left"), (3, "right")), "brainstem": ((1, ""),)}
#: The second-largest component is a kidney only when it has this fraction of the largest's voxels.
MIN_SECOND_FRACTION = 0.2
#: Zero voxels kept around a cropped component.
CROP_MARGIN = 3


@dataclass(frozen=True)
class OrganMask:
    """One organ's binary mask, cropped with a margin, in its image's LPS geometry.

    Attributes:
        shape_id: ``hippocampus_003`` or ``case_00000_left`` / ``case_00000_right``.
        mask: uint8 0/1 :class:`Volume` (cropped).
        side: ``"left"``, ``"right"`` or ``""`` (unpaired organ).
    """

    shape_id: str
    mask: Volume
    side: str = ""

    @property
    def mirrored(self) -> bool:
        """Whether training data of this organ is mirrored (right kidneys)."""
        return self.side == "right"


def _centroid_lps(volume: Volume, mask: np.ndarray) -> np.ndarray:
    kji = np.array(ndimage.center_of_mass(mask), dtype=np.float64)
    return volume.index_to_lps[:3, :3] @ kji[::-1] + volume.origin


def split_kidneys(label: Volume, case_id: str = "case") -> list[OrganMask]:
    """The kidneys (kidney + tumour) of one KiTS labelmap as cropped masks, left first.

    Raises :class:`InputError` when the labelmap has no kidney voxel.
    """
    whole = np.asarray(label.array) > 0
    box = bounding_box(whole)
    if box is None:
        raise InputError(f"{case_id} has no kidney voxels (label > 0); check the labelmap")
    crop = crop_to_box(label.with_array(whole.astype(np.uint8)), box)
    labelled, count = ndimage.label(crop.array, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labelled.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    keep = [order[0]]
    if count > 1 and sizes[order[1]] >= MIN_SECOND_FRACTION * sizes[order[0]]:
        keep.append(order[1])
    centroids = [_centroid_lps(crop, labelled == k + 1) for k in keep]
    if len(keep) == 2:
        sides = ["left", "right"] if centroids[0][0] > centroids[1][0] else ["right", "left"]
    else:
        image_centre = label.bounds_lps().mean(0)
        sides = ["left" if centroids[0][0] > image_centre[0] else "right"]
    organs = []
    for k, side in zip(keep, sides):
        component = (labelled == k + 1).astype(np.uint8)
        sub = crop_to_box(crop.with_array(component), bounding_box(component), CROP_MARGIN)
        organs.append(OrganMask(f"{case_id}_{side}", sub, side))
    return sorted(organs, key=lambda o: o.side)


def hippocampus_mask(label: Volume, shape_id: str) -> OrganMask:
    """Labels 1 + 2 of an MSD hippocampus labelmap as one cropped mask."""
    whole = np.asarray(label.array) > 0
    box = bounding_box(whole)
    if box is None:
        raise InputError(f"{shape_id} has an empty hippocampus label; check the labelmap")
    return OrganMask(shape_id, crop_to_box(label.with_array(whole.astype(np.uint8)), box, CROP_MARGIN))


# --- splits ------------------------------------------------------------------------------------
def kits_case_ids(data_dir: str | Path) -> list[str]:
    data_dir = Path(data_dir)
    ids = sorted(p.name[: -len(".nii.gz")] for p in data_dir.glob("case_*.nii.gz"))
    if not ids:
        raise InputError(f"{data_dir} holds no KiTS19 labelmaps (case_XXXXX.nii.gz); give the kits19-masks folder")
    return ids


def shape_split(kind: str, data_dir: str | Path, split_path: str | Path | None = None) -> dict:
    """The train/val/test case split of a shape source (read from, or saved to, ``Resources/Splits``)."""
    if kind == "hippocampus":
        if split_path is None and HIPPOCAMPUS_SPLIT.is_file():
            return json.loads(HIPPOCAMPUS_SPLIT.read_text(encoding="utf-8"))
        return load_or_make_split(list(read_msd(data_dir)), split_path or HIPPOCAMPUS_SPLIT, seed=0)
    if kind == "kidney":
        return load_or_make_split(kits_case_ids(data_dir), split_path or KITS_SPLIT, seed=0)
    if kind in OPENKBP_ORGANS:
        return load_or_make_split(list(read_msd(data_dir)), split_path or OPENKBP_SPLIT, seed=0)
    raise InputError(f"unknown shape source {kind!r}; use one of {', '.join(SHAPE_KINDS)}")


def openkbp_masks(kind: str, data_dir: str | Path, case_id: str) -> list[OrganMask]:
    """The contoured, uncut organs of ``kind`` (:data:`OPENKBP_ORGANS`) in one OpenKBP case."""
    from imagetomesh.core.edges import touched_faces

    case = read_msd(data_dir)[case_id]
    present = set(case.labels_present) if case.labels_present is not None else None
    label = read_image(case.label)
    organs = []
    for value, side in OPENKBP_ORGANS[kind]:
        if present is not None and value not in present:
            continue
        whole = np.asarray(label.array) == value
        box = bounding_box(whole)
        if box is None or touched_faces(label.with_array(whole.astype(np.uint8))):
            continue
        mask = crop_to_box(label.with_array(whole.astype(np.uint8)), box, CROP_MARGIN)
        organs.append(OrganMask(f"{case_id}_{side}" if side else case_id, mask, side))
    return organs


def organ_masks(kind: str, data_dir: str | Path, case_id: str) -> list[OrganMask]:
    """The organ masks of one case: one hippocampus, one or two kidneys, a mandible or up to two parotids."""
    data_dir = Path(data_dir)
    if kind == "hippocampus":
        case = read_msd(data_dir)[case_id]
        return [hippocampus_mask(read_image(case.label), case_id)]
    if kind == "kidney":
        return split_kidneys(read_image(data_dir / f"{case_id}.nii.gz"), case_id)
    if kind in OPENKBP_ORGANS:
        return openkbp_masks(kind, data_dir, case_id)
    raise InputError(f"unknown shape source {kind!r}; use one of {', '.join(SHAPE_KINDS)}")


def fill_cavities(mask: np.ndarray) -> np.ndarray:
    """``mask`` with enclosed cavities filled in 3D and holes filled in every slice along each axis.

    KiTS kidney masks leave out most of the renal sinus, a deep invagination that opens at the
    hilum; a sphere deformed into it folds through itself. The shape priors learn the organ's
    envelope instead (a slice-wise fill closes the sinus where a slice encloses it).
    """
    out = ndimage.binary_fill_holes(np.asarray(mask) != 0)
    for axis in range(3):
        moved = np.moveaxis(out, axis, 0)
        out = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in moved]), 0, axis)
    return out


#: Shape sources of paired organs: their right ones are mirrored to the left for training (the kidneys of
#: :func:`split_kidneys`, the sided OpenKBP organs), so fits try both sides.
PAIRED_SHAPES = frozenset(
    {"kidney"} | {kind for kind, organs in OPENKBP_ORGANS.items() if any(side for _, side in organs)}
)
#: Whether a shape source's training surfaces are taken from :func:`fill_cavities` of the mask.
FILL_CAVITIES = {"hippocampus": False, "kidney": True, "mandible": False, "parotid": False, "brainstem": False}


def surface_points(
    organ: OrganMask, n_points: int, seed: int = 0, mirror: bool = True, fill: bool = False
) -> np.ndarray:
    """``(n_points, 3)`` float32 area-uniform samples of the organ's surface in LPS mm
    (mirrored along L about the origin for right-side organs when ``mirror``; of the mask
    with its cavities filled when ``fill``, see :func:`fill_cavities`)."""
    mask = organ.mask.with_array(fill_cavities(organ.mask.array).astype(np.uint8)) if fill else organ.mask
    mesh = labelmap_to_mesh(mask)
    points = sample_surface(mesh, n_points, seed=seed)
    if mirror and organ.mirrored:
        points = points @ MIRROR_L.T
    return points.astype(np.float32)


@dataclass
class ShapeSet:
    """Surface samples of many shapes: ``ids (S,)``, ``points (S, P, 3)`` LPS mm, ``sides (S,)``."""

    ids: list[str]
    points: np.ndarray
    sides: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def load_shapes(
    kind: str,
    data_dir: str | Path,
    split: str = "train",
    n_points: int = 4096,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    split_path: str | Path | None = None,
) -> ShapeSet:
    """Surface samples of every shape of one split (cached in ``cache_dir`` when given).

    Right kidneys come mirrored (see the module docstring); hippocampi as they are.
    ``split_path``: the split file (default: the project's one in ``Resources/Splits``).
    """
    if split not in ("train", "val", "test"):
        raise InputError(f"unknown split {split!r}; use train, val or test")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(
            f"shape data folder {data_dir} does not exist; give the hippocampus, kits19-masks or openkbp-ct folder"
        )
    cases = shape_split(kind, data_dir, split_path)[split]
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{kind}-{split}-{n_points}{'-filled' if FILL_CAVITIES[kind] else ''}.npz"
        if cache.is_file():
            with np.load(cache) as data:
                if list(data["cases"]) == list(cases):
                    return ShapeSet(list(data["ids"]), data["points"], list(data["sides"]))
    ids, points, sides = [], [], []
    for number, case_id in enumerate(cases):
        for organ in organ_masks(kind, data_dir, case_id):
            ids.append(organ.shape_id)
            sides.append(organ.side)
            points.append(surface_points(organ, n_points, seed=number, fill=FILL_CAVITIES[kind]))
        if log and (number + 1) % 10 == 0:
            log(f"{kind} {split}: {number + 1}/{len(cases)} cases, {len(ids)} shapes")
    shapes = ShapeSet(ids, np.stack(points), sides)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, ids=np.array(ids), points=shapes.points, sides=np.array(sides), cases=np.array(cases))
    return shapes
