"""Whether an image can be what a model was made for: modality and physical extent.

A segmentation model's card states what it was trained on in its ``input`` block::

    "input": {"modality": "MR", "body_region": "brain", "organs": ["hippocampus"],
              "intensity": "MR, normalised per volume", "max_extent_mm": [80, 96, 112]}

:func:`check_image` refuses, with one message naming the mismatch and what to do, an image that
cannot be that: a CT given to an MRI model or the reverse (told apart by Hounsfield units: a CT
holds air at about -1000), a volume far larger than the crops a patch model was trained on (a
whole head given to a hippocampus model: crop it, or give ``--roi``), or one too small to hold the
organs of a whole-scan model (``min_extent_mm``). Cards without an ``input``
block are not checked. numpy only: the Slicer module uses it to list the models that fit a volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError

#: A voxel at or below this is air or lung in Hounsfield units; no MR intensity scale goes there.
CT_AIR_HU = -500.0
#: An image is CT-like when at least this fraction of its voxels is air (-500 HU or below) ...
CT_AIR_FRACTION = 0.005
#: ... and at least this fraction lies within the Hounsfield range of a CT (with outside-FOV padding).
CT_RANGE_HU = (-3100.0, 4000.0)
CT_RANGE_FRACTION = 0.99
#: Voxels looked at (an even subsample: enough for fractions, cheap on a 512^3 CT).
SAMPLE_VOXELS = 200_000


@dataclass(frozen=True)
class InputSpec:
    """What a model was trained on (a card's ``input`` block).

    Attributes:
        modality: ``"CT"`` or ``"MR"``.
        body_region: e.g. ``"brain"``, ``"head and neck"``.
        organs: the structures it meshes.
        intensity: how intensities are read (``"HU"``, ``"MR, normalised per volume"``).
        max_extent_mm: largest physical extent of an input, per axis, sorted ascending (patch
            models trained on crops); None for models that take a whole scan.
        min_extent_mm: smallest physical extent, per axis, sorted ascending, that can hold the
            organs (whole-scan models); None: no lower limit.
    """

    modality: str
    body_region: str
    organs: tuple
    intensity: str
    max_extent_mm: tuple | None = None
    min_extent_mm: tuple | None = None

    @classmethod
    def from_card(cls, card: dict) -> InputSpec | None:
        block = card.get("input")
        if not isinstance(block, dict):
            return None
        extent, least = block.get("max_extent_mm"), block.get("min_extent_mm")
        return cls(
            str(block.get("modality", "")).upper(),
            str(block.get("body_region", "")),
            tuple(block.get("organs", ())),
            str(block.get("intensity", "")),
            tuple(sorted(float(e) for e in extent)) if extent else None,
            tuple(sorted(float(e) for e in least)) if least else None,
        )

    def describe(self) -> str:
        """``"T1 MRI crops around the hippocampus"``-style summary for messages."""
        organs = ", ".join(self.organs) or "the structure"
        kind = "CT" if self.modality == "CT" else "MRI"
        return f"{kind} of the {self.body_region} ({organs})" if self.body_region else f"{kind} ({organs})"


def looks_like_ct(volume: Volume) -> bool:
    """Whether the intensities are Hounsfield units: some air at -500 HU or below, nearly all within a CT's range."""
    values = np.asarray(volume.array).reshape(-1)
    step = max(1, values.size // SAMPLE_VOXELS)
    sample = values[::step].astype(np.float64)
    if sample.size == 0:
        return False
    air = np.mean(sample <= CT_AIR_HU)
    in_range = np.mean((sample >= CT_RANGE_HU[0]) & (sample <= CT_RANGE_HU[1]))
    return bool(air >= CT_AIR_FRACTION and in_range >= CT_RANGE_FRACTION)


def extent_mm(volume: Volume) -> np.ndarray:
    """Physical extent ``(3,)`` of the volume's voxel grid in mm, sorted ascending (orientation aside)."""
    return np.sort(
        np.asarray(volume.array.shape[::-1], dtype=np.float64) * np.asarray(volume.spacing, dtype=np.float64)
    )


def mismatch(volume: Volume, card: dict, name: str) -> str | None:
    """Why ``volume`` cannot be an input of model ``name`` (its ``card``), or None when it can (or the card does not say)."""
    spec = InputSpec.from_card(card)
    if spec is None:
        return None
    ct = looks_like_ct(volume)
    if spec.modality == "MR" and ct:
        return (
            f"the image looks like a CT (air at {CT_AIR_HU:g} HU or below), but {name} was trained on "
            f"{spec.describe()}; choose a CT model"
        )
    if spec.modality == "CT" and not ct:
        return (
            f"the image does not look like a CT (no air at {CT_AIR_HU:g} HU or below: an MRI, or a CT "
            f"rescaled away from Hounsfield units), but {name} was trained on {spec.describe()} in HU; "
            "choose a model for this modality"
        )
    if spec.max_extent_mm is not None:
        extent = extent_mm(volume)
        if np.any(extent > np.asarray(spec.max_extent_mm)):
            shown = " x ".join(f"{e:.0f}" for e in extent)
            limit = " x ".join(f"{e:.0f}" for e in spec.max_extent_mm)
            return (
                f"the image covers {shown} mm, but {name} takes crops of at most {limit} mm around the "
                f"{', '.join(spec.organs) or 'structure'}; crop the image to the structure (--roi)"
            )
    if spec.min_extent_mm is not None:
        extent = extent_mm(volume)
        if np.any(extent < np.asarray(spec.min_extent_mm)):
            shown = " x ".join(f"{e:.0f}" for e in extent)
            least = " x ".join(f"{e:.0f}" for e in spec.min_extent_mm)
            return (
                f"the image covers only {shown} mm, but {name} finds {', '.join(spec.organs) or 'its organs'} "
                f"in whole scans of the {spec.body_region or 'body region'} (at least {least} mm); "
                "give the whole scan, not a crop"
            )
    return None


def check_image(volume: Volume, card: dict, name: str) -> None:
    """InputError when ``volume`` cannot be an input of model ``name`` (see :func:`mismatch`)."""
    reason = mismatch(volume, card, name)
    if reason is not None:
        raise InputError(f"{reason}; or pass --allow-mismatch to segment it anyway")
