"""Where training data come from and under which licence: the one table the model cards quote.

A data folder's own ``dataset.json`` (MSD layout) states its licence (``"licence"``); that
statement wins over the table's, and a folder whose ``dataset.json`` names another licence than
the table's gets the table's name and source but not its terms (which are about that licence).
"""

from __future__ import annotations

import json
from pathlib import Path

#: shape source -> description of the data a DALS prior is learned from
DATA_SOURCES: dict[str, dict[str, str]] = {
    "hippocampus": {
        "name": "Medical Segmentation Decathlon Task04 Hippocampus, training labels (labels 1 + 2 as one shape)",
        "source": "Vanderbilt University Medical Center, via the Medical Segmentation Decathlon "
        "(Simpson et al., 2019; Antonelli et al., Nature Communications 2022)",
        "licence": "CC-BY-SA 4.0",
        "terms": "Derived from MSD Task04 (CC-BY-SA 4.0): keep this attribution and share adaptations under CC-BY-SA 4.0.",
        "split_file": "Resources/Splits/hippocampus.json",
    },
    "kidney": {
        "name": "KiTS19 kidney segmentations (kidney + tumour as one object, each case split into its two kidneys, "
        "right kidneys mirrored to the left, cavities and slice-wise holes filled: the renal sinus is "
        "learned as part of the organ's envelope)",
        "source": "KiTS19 challenge (Heller et al., 2019; Heller et al., Medical Image Analysis 2021)",
        "licence": "CC BY-NC-SA 4.0",
        "terms": "NON-COMMERCIAL USE ONLY. This shape model is derived from the KiTS19 segmentations, licensed "
        "CC BY-NC-SA 4.0: you may use it only for non-commercial purposes, must credit the KiTS19 "
        "challenge (Heller et al.), and must share anything built from it under the same licence.",
        "split_file": "Resources/Splits/kits19.json",
    },
}
_OPENKBP = {
    "source": "OpenKBP grand challenge (A. Babier et al., Medical Physics 48:5549-5561, 2021; cite the paper), "
    "images from The Cancer Imaging Archive",
    "licence": "MIT-licensed repository (github.com/ababier/open-kbp); derived from TCIA collections; cite the paper; "
    "research use",
    "terms": "Research use. Cite Babier et al. 2021 (OpenKBP); the TCIA data-use terms of the source collections apply.",
    "split_file": "Resources/Splits/openkbp-ct.json",
}
DATA_SOURCES["mandible"] = {
    "name": "OpenKBP head-and-neck CT contours, Mandible (label 7), contoured and not cut by the scanned slab",
    **_OPENKBP,
}
DATA_SOURCES["brainstem"] = {
    "name": "OpenKBP head-and-neck CT contours, Brainstem (label 1), contoured and not cut by the scanned slab",
    **_OPENKBP,
}
DATA_SOURCES["parotid"] = {
    "name": "OpenKBP head-and-neck CT contours, parotid glands (labels 3 right, 4 left; right ones mirrored to "
    "the left), contoured and not cut by the scanned slab",
    **_OPENKBP,
}


def data_description(source: str, data_dir: str | Path) -> dict[str, str]:
    """The card's description of the training data of ``source`` read from ``data_dir``: the table's
    entry, with the licence ``data_dir/dataset.json`` states (if it states one)."""
    entry = dict(DATA_SOURCES[source])
    manifest = Path(data_dir) / "dataset.json"
    stated = None
    if manifest.is_file():
        try:
            stated = json.loads(manifest.read_text(encoding="utf-8")).get("licence")
        except (json.JSONDecodeError, AttributeError):
            stated = None
    if stated and stated != entry["licence"]:
        entry["licence"] = stated
        entry["terms"] = f"Licensed {stated} (as the data's dataset.json states): follow its terms."
    return entry
