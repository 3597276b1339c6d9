"""The bundled sample images in Slicer's Sample Data module (category "ImageToMesh").

Registered when the application has started, so a clinician loads an example with one click.
The files are local (``Resources/SampleData`` beside the library), so nothing is downloaded:
their ``file://`` URIs go through Sample Data's normal loading and checksum checks.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from .libraryPath import extensionPath

CATEGORY = "ImageToMesh"


@dataclass(frozen=True)
class SampleSource:
    """One Sample Data entry: ``files`` are ``(relative path, node name, load type)`` under ``Resources/SampleData``."""

    name: str
    files: tuple
    thumbnail: str = ""


SAMPLES = (
    SampleSource(
        "ImageToMeshHippocampus",
        (
            ("hippocampus/hippocampus_024.nii.gz", "hippocampus_024", "VolumeFile"),
            ("hippocampus/hippocampus_024_label.nii.gz", "hippocampus_024_label", "SegmentationFile"),
        ),
    ),
    SampleSource(
        "ImageToMeshHeadNeckCT",
        (
            ("headneck-ct/openkbp_082.nii.gz", "openkbp_082", "VolumeFile"),
            ("headneck-ct/openkbp_082_label.nii.gz", "openkbp_082_organs", "SegmentationFile"),
        ),
    ),
    SampleSource(
        "ImageToMeshAbdomenCT",
        (
            ("ct-example/example_ct.nii.gz", "example_ct", "VolumeFile"),
            ("ct-example/kidney_left.nii.gz", "kidney_left", "SegmentationFile"),
        ),
    ),
)


def sampleDataFolder() -> str:
    """``Resources/SampleData`` of the extension (beside ``ImageToMeshLib`` in a checkout and when installed)."""
    found = extensionPath("Resources", "SampleData")
    return found or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "SampleData")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "SHA256:" + digest.hexdigest()


def registrations(folder: str = "") -> list:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for each sample whose files exist."""
    import pathlib

    folder = folder or sampleDataFolder()
    out = []
    for sample in SAMPLES:
        paths = [os.path.join(folder, relative) for relative, _, _ in sample.files]
        if not all(os.path.isfile(p) for p in paths):
            continue
        out.append(
            dict(
                category=CATEGORY,
                sampleName=sample.name,
                uris=[pathlib.Path(p).resolve().as_uri() for p in paths],
                fileNames=[os.path.basename(p) for p in paths],
                nodeNames=[name for _, name, _ in sample.files],
                thumbnailFileName=os.path.join(folder, sample.thumbnail) if sample.thumbnail else None,
                loadFileType=[kind for _, _, kind in sample.files],
                checksums=[_sha256(p) for p in paths],
            )
        )
    return out


def registerSampleData() -> int:
    """Register the samples with the Sample Data module (absent module: nothing); returns how many."""
    try:
        import SampleData
    except ImportError:
        return 0
    count = 0
    for kwargs in registrations():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**kwargs)
        count += 1
    return count
