"""Medical Segmentation Decathlon layout: ``dataset.json``, ``imagesTr/``, ``labelsTr/``.

A deterministic split (seeded shuffle of the sorted case ids) is saved as JSON so that
training, validation and reporting all read the same lists. :func:`label_layout` places a
several-organ dataset's organs in its labels (a card's ``input.organ_layout``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imagetomesh.errors import InputError
from imagetomesh.io.atomic import atomic_write
from imagetomesh.io.images import image_stem, read_image
from imagetomesh.organ_layout import OrganLayout, OrganPlace, layout_of_places


@dataclass(frozen=True)
class Case:
    """One training case: its id (file name without extension), image and label paths, and the label
    values contoured in it (``labels_present`` of its ``dataset.json`` entry; None: every label was
    contoured, so a voxel labelled 0 is background for every organ)."""

    case_id: str
    image: Path
    label: Path
    labels_present: tuple[int, ...] | None = None


def read_msd(root: str | Path) -> dict[str, Case]:
    """Read an MSD dataset folder; returns ``{case_id: Case}`` sorted by id.

    Raises :class:`InputError` if ``dataset.json`` is missing or lists files that do not exist.
    """
    root = Path(root)
    manifest = root / "dataset.json"
    if not manifest.is_file():
        raise InputError(f"{root} is not a Medical Segmentation Decathlon folder: no dataset.json in it")
    needs = "it needs a 'training' list of {'image': ..., 'label': ...} entries"
    try:
        document = json.loads(manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise InputError(f"{manifest} is not a valid MSD dataset.json ({err}); {needs}") from None
    entries = document.get("training") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{manifest} is not a valid MSD dataset.json (no 'training' list); {needs}")
    cases = {}
    for n, entry in enumerate(entries):
        if not (
            isinstance(entry, dict) and isinstance(entry.get("image"), str) and isinstance(entry.get("label"), str)
        ):
            raise InputError(f"{manifest}: training entry {n} is {str(entry)[:60]!r}; {needs}")
        image, label = root / entry["image"], root / entry["label"]
        for path in (image, label):
            if not path.is_file():
                raise InputError(f"{manifest} lists {path.relative_to(root)}, which does not exist")
        present = entry.get("labels_present")
        if present is not None and not (
            isinstance(present, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in present)
        ):
            raise InputError(
                f"{manifest}: training entry {n} has labels_present {str(present)[:60]!r}; give a list of label values"
            )
        case_id = image_stem(entry["image"])
        cases[case_id] = Case(case_id, image, label, tuple(present) if present is not None else None)
    if not cases:
        raise InputError(f"{manifest} lists no training cases")
    return dict(sorted(cases.items()))


def make_split(case_ids, fractions=(0.75, 0.10, 0.15), seed: int = 0) -> dict[str, list[str]]:
    """Split ids into ``train``/``val``/``test`` by a seeded shuffle of the sorted ids."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    ids = sorted(case_ids)
    random.Random(seed).shuffle(ids)
    n_val = round(fractions[1] * len(ids))
    n_test = round(fractions[2] * len(ids))
    n_train = len(ids) - n_val - n_test
    return {
        "train": sorted(ids[:n_train]),
        "val": sorted(ids[n_train : n_train + n_val]),
        "test": sorted(ids[n_train + n_val :]),
        "seed": seed,
    }


def load_or_make_split(case_ids, path: str | Path, seed: int = 0) -> dict[str, list[str]]:
    """Read the split saved at ``path``; make and save one if the file does not exist.

    Raises :class:`InputError` if a saved split names cases the dataset does not have.
    """
    path = Path(path)
    if path.is_file():
        split = json.loads(path.read_text(encoding="utf-8"))
        missing = sorted(set(split["train"] + split["val"] + split["test"]) - set(case_ids))
        if missing:
            raise InputError(
                f"split {path} names cases not in the dataset: {missing[:5]}...; delete it to make a new one"
            )
        return split
    split = make_split(case_ids, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(split, indent=1))
    return split


def label_layout(cases: list[Case], organs) -> OrganLayout:
    """The :class:`~imagetomesh.organ_layout.OrganLayout` of ``cases``' labels: each organ (``organs``:
    :class:`~imagetomesh.organs.Organ` list) placed where it was contoured (``labels_present``) and has voxels."""
    places = []
    for case in cases:
        label = read_image(case.label)
        values = np.asarray(label.array)
        contoured = {}
        for organ in organs:
            if case.labels_present is not None and organ.label not in case.labels_present:
                continue
            mask = values == organ.label
            if mask.any():
                contoured[organ.name] = OrganPlace.of_mask(mask, label.index_to_lps)
        places.append(contoured)
    return layout_of_places(places, [o.name for o in organs])
