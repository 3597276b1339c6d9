"""Shared fixtures: paths to bundled sample data and to the shared real data beside the repo, and a
writer of tiny Medical Segmentation Decathlon folders for training tests."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "Resources" / "SampleData"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def write_msd():
    """``write_msd(root, cases) -> root``: an MSD task folder (``imagesTr``, ``labelsTr``,
    ``dataset.json``) holding ``cases``, ``(image, label)`` arrays named hippocampus_000, ..."""
    import numpy as np

    from imagetomesh.core.volume import Volume
    from imagetomesh.io.images import write_image

    def write(root: Path, cases) -> Path:
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        entries = []
        for n, (image, label) in enumerate(cases):
            name = f"hippocampus_{n:03d}.nii.gz"
            write_image(Volume(np.asarray(label, np.uint8)), root / "labelsTr" / name)
            write_image(Volume(np.asarray(image, np.float32)), root / "imagesTr" / name)
            entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        (root / "dataset.json").write_text(json.dumps({"training": entries}))
        return root

    return write
