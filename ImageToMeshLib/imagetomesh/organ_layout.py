"""Whether the organs a several-organ model found lie as they do in the scans it was trained on.

A whole-scan model puts each of its organs wherever its U-Net's most probable class is, so a scan of
another body region comes back meshed: given the abdominal CT of ``Resources/SampleData/ct-example``,
the head-and-neck U-Net finds a "brainstem" of 8 ml in the pelvis, a "spinal cord" 156 mm wide above it
and crumbs of parotid and larynx beside the liver, and writes them. Intensities cannot tell that scan
from a head-and-neck CT (both are CT with air); where the organs were found can.

A card's ``input.organ_layout`` (:class:`OrganLayout`, made by :func:`layout_of_places` from the
training split's labels: ``tools/organ_layout.py``) holds each organ's largest size in those labels (ml,
and its extent along each LPS axis) and, for each pair of organs contoured together, the range of the
offset between their centroids (LPS mm). :func:`layout_mismatch` places each organ the model found
(:class:`OrganPlace`): it is *placed* when its size is within :data:`SIZE_FACTOR` x the largest
(+ :data:`MARGIN_MM` on the extents) and at least half of its offsets to the other found organs lie within
their ranges widened by :data:`MARGIN_MM`. A scan where fewer than half of the found organs are placed
is not what the model was made for. One stray organ among several (a parotid found in the shoulder)
leaves a scan accepted; only a layout that is wrong as a whole is refused.

Chosen on the models' own masks over the 147 training and 20 validation scans of OpenKBP (none
refused; 10 had one organ out of place, each time the oesophagus, found higher than the 66 contoured
ones reach) and the abdominal CT and five slabs of it (all refused), with the ranges from the training
labels alone. numpy only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: mm added to each side of every offset range and to every largest extent
MARGIN_MM = 20.0
#: an organ may be this many times the largest of its kind in the training labels (volume and extents)
SIZE_FACTOR = 1.5
#: at least this fraction of a found organ's offsets to the others must lie in range for it to be placed
PLACED_PAIRS = 0.5
#: ... and at least this fraction of the found organs must be placed for the scan to be accepted
PLACED_ORGANS = 0.5
#: where a positive / negative offset along each LPS axis puts an organ, and each axis's extent, for messages
SIDES = (("left of", "right of"), ("behind", "in front of"), ("above", "below"))
EXTENTS = ("from right to left", "from front to back", "from foot to head")


@dataclass(frozen=True)
class OrganPlace:
    """Where one organ lies.

    Attributes:
        ml: volume in millilitres.
        centroid: ``(3,)`` mean LPS mm of its voxels' centres.
        extent: ``(3,)`` mm between its outermost voxel centres along L, P and S.
    """

    ml: float
    centroid: np.ndarray
    extent: np.ndarray

    @classmethod
    def of_mask(cls, mask: np.ndarray, index_to_lps: np.ndarray) -> OrganPlace:
        """The place of the voxels of ``mask (D, H, W)`` (bool, not empty) on a grid whose ``(4, 4)``
        ``index_to_lps`` maps voxel (i, j, k) = (W, H, D) indices to LPS mm."""
        ijk = np.argwhere(mask)[:, ::-1].astype(np.float64)
        if len(ijk) == 0:
            raise ValueError("an empty mask has no place")
        lps = ijk @ index_to_lps[:3, :3].T + index_to_lps[:3, 3]
        voxel_ml = abs(float(np.linalg.det(index_to_lps[:3, :3]))) / 1000.0
        return cls(len(ijk) * voxel_ml, lps.mean(axis=0), lps.max(axis=0) - lps.min(axis=0))


@dataclass(frozen=True)
class OrganLayout:
    """How a model's organs lay in its training labels.

    Attributes:
        largest: ``{organ: (4,) [ml, extent L, P, S mm]}``, the largest of each over the cases.
        offsets: ``{(a, b): ((3,) least, (3,) most)}``: the range of ``centroid(b) - centroid(a)`` (LPS mm)
            over the cases where both were contoured; ``a`` comes before ``b`` in the model's organs.
        cases: how many label images it was made from.
    """

    largest: dict[str, np.ndarray]
    offsets: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
    cases: int

    def to_dict(self) -> dict:
        """The card's JSON form."""
        return {
            "source": f"the training split's labels ({self.cases} cases), organs where contoured",
            "cases": self.cases,
            "largest": {
                o: {"ml": round(float(v[0]), 2), "extent_mm": [round(float(x), 1) for x in v[1:]]}
                for o, v in self.largest.items()
            },
            "offsets_mm": {
                f"{a}->{b}": {"least": [round(float(x), 1) for x in lo], "most": [round(float(x), 1) for x in hi]}
                for (a, b), (lo, hi) in self.offsets.items()
            },
        }

    @classmethod
    def from_dict(cls, block: dict) -> OrganLayout:
        largest = {o: np.array([v["ml"], *v["extent_mm"]], dtype=np.float64) for o, v in block["largest"].items()}
        offsets = {}
        for key, v in block["offsets_mm"].items():
            a, b = key.split("->")
            offsets[(a, b)] = (np.asarray(v["least"], dtype=np.float64), np.asarray(v["most"], dtype=np.float64))
        return cls(largest, offsets, int(block.get("cases", 0)))


def layout_of_places(cases: list[dict[str, OrganPlace]], organs: list[str]) -> OrganLayout:
    """The :class:`OrganLayout` of ``cases`` (each ``{organ: its place}`` for the organs contoured in it),
    pairs ordered as ``organs``."""
    largest: dict[str, np.ndarray] = {}
    offsets: dict[tuple[str, str], list[np.ndarray]] = {}
    for places in cases:
        for organ, place in places.items():
            size = np.array([place.ml, *place.extent])
            largest[organ] = size if organ not in largest else np.maximum(largest[organ], size)
        for a, b in itertools.combinations([o for o in organs if o in places], 2):
            offsets.setdefault((a, b), []).append(places[b].centroid - places[a].centroid)
    ranges = {pair: (np.min(d, axis=0), np.max(d, axis=0)) for pair, d in offsets.items()}
    return OrganLayout(largest, ranges, len(cases))


def _offset_outside(offset: np.ndarray, least: np.ndarray, most: np.ndarray) -> int | None:
    """The first axis along which ``offset`` leaves ``[least, most]`` widened by :data:`MARGIN_MM`, else None."""
    outside = np.flatnonzero((offset < least - MARGIN_MM) | (offset > most + MARGIN_MM))
    return int(outside[0]) if len(outside) else None


def misplaced(places: dict[str, OrganPlace], layout: OrganLayout) -> dict[str, str]:
    """``{organ: why it is not placed}`` for the found organs (``places``) that are not placed (see the module)."""
    organs = list(places)
    why: dict[str, str] = {}
    agree: dict[str, list[bool]] = {o: [] for o in organs}
    first_wrong: dict[str, str] = {}
    for a, b in itertools.combinations(organs, 2):
        pair = (a, b) if (a, b) in layout.offsets else (b, a)
        if pair not in layout.offsets:
            continue
        offset = places[pair[1]].centroid - places[pair[0]].centroid
        axis = _offset_outside(offset, *layout.offsets[pair])
        agree[a].append(axis is None)
        agree[b].append(axis is None)
        if axis is not None:
            lo, hi = layout.offsets[pair][0][axis], layout.offsets[pair][1][axis]
            text = (
                f"the {_title(pair[1])} lies {_side(offset[axis], axis)} the {_title(pair[0])} "
                f"(training scans: {_side(lo, axis)} to {_side(hi, axis)})"
            )
            first_wrong.setdefault(a, text)
            first_wrong.setdefault(b, text)
    for organ in organs:
        size = np.array([places[organ].ml, *places[organ].extent])
        largest = layout.largest.get(organ)
        if largest is not None:
            bound = SIZE_FACTOR * largest + np.array([0.0, MARGIN_MM, MARGIN_MM, MARGIN_MM])
            over = np.flatnonzero(size > bound)
            if len(over):
                k = int(over[0])
                what = f"{size[0]:.0f} ml" if k == 0 else f"{size[k]:.0f} mm {EXTENTS[k - 1]}"
                limit = f"{largest[0]:.0f} ml" if k == 0 else f"{largest[k]:.0f} mm"
                why[organ] = f"the {_title(organ)} measures {what} (training scans: at most {limit})"
                continue
        if agree[organ] and np.mean(agree[organ]) < PLACED_PAIRS:
            why[organ] = first_wrong[organ]
    return why


def layout_mismatch(places: dict[str, OrganPlace], layout: OrganLayout, name: str, region: str) -> str | None:
    """Why the organs model ``name`` found (``places``) cannot be those of a scan of ``region``, or None
    when at least :data:`PLACED_ORGANS` of them are placed (or none was found)."""
    if not places:
        return None
    why = misplaced(places, layout)
    if len(places) - len(why) >= PLACED_ORGANS * len(places):
        return None
    shown = "; ".join(list(dict.fromkeys(why.values()))[:2])
    return (
        f"the organs {name} found do not lie as in the {region} CTs it was trained on ({len(why)} of "
        f"{len(places)} out of place: {shown}): is this a scan of the {region}, stored with its true orientation?"
    )


def _title(organ: str) -> str:
    return organ.replace("_", " ")


def _side(offset: float, axis: int) -> str:
    """``"102 mm above"``: where ``offset`` mm along LPS axis ``axis`` puts something."""
    return f"{abs(offset):.0f} mm {SIDES[axis][0 if offset >= 0 else 1]}"
