"""Synthetic head-and-neck-like CTs (HU) with cube organs, and an MSD folder of them, for the several-organ tests."""

import json
from pathlib import Path

import numpy as np

from imagetomesh.core.volume import Volume
from imagetomesh.io.images import write_image

#: The grid direction of the CT models: index axes along R, A, S.
LPS_RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def ct_case(shape=(24, 24, 32), seed=0, organs=((1, (6, 8, 10), -400.0), (2, (12, 14, 16), 1200.0))):
    """A synthetic CT (HU) with cubes of organs at given voxel corners (x, y, z) and intensities
    added to soft tissue (organ 1 fat-like, organ 2 bone-like: no organ looks like the rim of another)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 20.0, shape).astype(np.float32)
    image[:, :, :3] = -1000.0  # air
    label = np.zeros(shape, np.uint8)
    for value, (x, y, z), hu in organs:
        image[z : z + 4, y : y + 4, x : x + 4] += hu
        label[z : z + 4, y : y + 4, x : x + 4] = value
    return image, label


def write_ct_msd(root: Path, count: int, present_for=lambda n: [1, 2]) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    for n in range(count):
        image, label = ct_case(seed=n)
        present = present_for(n)
        label[~np.isin(label, present)] = 0  # uncontoured: no mask, the organ is still in the image
        name = f"ct_{n:03d}.nii.gz"
        spacing = (4.0, 4.0, 4.0)
        write_image(Volume(image, spacing, direction=np.diag([-1.0, -1.0, 1.0])), root / "imagesTr" / name)
        write_image(Volume(label, spacing, direction=np.diag([-1.0, -1.0, 1.0])), root / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}", "labels_present": present})
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    return root
