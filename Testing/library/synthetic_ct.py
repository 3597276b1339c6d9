"""Synthetic head-and-neck-like CTs (HU) with cube organs, and an MSD folder of them, for the several-organ tests."""

import json
from pathlib import Path

import numpy as np
import torch

from imagetomesh.core.transforms import GridTransform
from imagetomesh.core.volume import Volume
from imagetomesh.io.images import write_image
from imagetomesh.training.data import PreparedCase

#: The grid direction of the CT models: index axes along R, A, S.
LPS_RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


#: The organs of :func:`ct_case`: (label value, voxel corner (x, y, z) of its 4-voxel cube, HU added)
ORGANS = ((1, (6, 8, 10), -400.0), (2, (12, 14, 16), 1200.0))


def ct_case(shape=(24, 24, 32), seed=0, organs=ORGANS):
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
    """An MSD folder of ``count`` :func:`ct_case` scans, each organ moved by up to 2 voxels along each axis
    (so that a model must tell organs by how they look, not where they are), the organs ``present_for(n)``
    contoured in case ``n``."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    for n in range(count):
        rng = np.random.default_rng(1000 + n)
        organs = tuple(
            (v, tuple(int(c) for c in np.add(corner, rng.integers(-2, 3, 3))), hu) for v, corner, hu in ORGANS
        )
        image, label = ct_case(seed=n, organs=organs)
        present = present_for(n)
        label[~np.isin(label, present)] = 0  # uncontoured: no mask, the organ is still in the image
        name = f"ct_{n:03d}.nii.gz"
        spacing = (4.0, 4.0, 4.0)
        write_image(Volume(image, spacing, direction=np.diag([-1.0, -1.0, 1.0])), root / "imagesTr" / name)
        write_image(Volume(label, spacing, direction=np.diag([-1.0, -1.0, 1.0])), root / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}", "labels_present": present})
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    return root


#: LPS centres (mm) of the two organ cubes of :func:`ct_case` (16 mm cubes at voxels (6.., 8.., 10..) and
#: (12.., 14.., 16..) of 4 mm; x and y negated: the index axes run along R and A)
ORGAN_CENTRES = {
    organ: np.array([-1.0, -1.0, 1.0]) * (np.array(corner) + 1.5) * 4.0
    for organ, corner in (("bright", (6, 8, 10)), ("brighter", (12, 14, 16)))
}


def segment_synthetic_scan(model_folder: Path, folder: Path) -> tuple[Path, Path, np.ndarray]:
    """``segment`` (the CLI) of a synthetic scan with a larger field of view than training, by the two-organ
    model in ``model_folder``, into ``folder/out``: ``(out folder, scan path, label array)``; checks that it
    wrote one mesh per organ."""
    from imagetomesh import cli

    image, label = ct_case(shape=(32, 24, 40), seed=9)
    path = folder / "scan_007.nii.gz"
    write_image(Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0])), path)
    out = folder / "out"
    out.mkdir()
    assert cli.main(["segment", str(path), "--model", str(model_folder), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scan_007_bright.stl", "scan_007_brighter.stl"]
    return out, path, label


def whole_scan_volume() -> Volume:
    """A synthetic scan larger than the test models' grids (:func:`ct_case`, 4 mm voxels, the CT models' direction)."""
    image, _ = ct_case(shape=(32, 24, 40), seed=9)
    return Volume(image, (4.0, 4.0, 4.0), direction=np.diag([-1.0, -1.0, 1.0]))


def whole_scan_crops(segmenter, volume: Volume) -> dict[int, torch.Tensor]:
    """Organ class -> the U-Net's class probabilities over the whole scan ``volume`` cropped to the organ's crop
    where ``segment`` places it, ``(K + 1, d, h, w)``: what a model that ``reads_localiser_probabilities`` must get."""
    from imagetomesh.scan import crop_padded, densest_crop_start, organ_masks

    _, _, probabilities = segmenter.scan_probabilities(volume)
    masks = organ_masks(probabilities, segmenter.organs)
    crops = {}
    for organ in segmenter.organs:
        crop = tuple(segmenter.model.module.config.organ_crops[organ.index - 1])
        start = densest_crop_start(masks[organ.name], crop)
        crops[organ.index] = crop_padded(probabilities, start, crop, 0.0)
    return crops


def holds_only_its_organ(mesh, organ: str) -> bool:
    """Whether ``mesh`` holds the centre of ``organ`` (of :data:`ORGAN_CENTRES`) and not the other organ's."""
    from imagetomesh.geometry.quality import winding_numbers

    other = next(name for name in ORGAN_CENTRES if name != organ)
    inside = winding_numbers(mesh, np.stack([ORGAN_CENTRES[organ], ORGAN_CENTRES[other]])) > 0.5
    return inside.tolist() == [True, False]


def prepared_case(label: np.ndarray, present=(True, True, True), superior=1.0) -> PreparedCase:
    """A prepared case of ``label`` on a grid whose array axis 0 runs towards superior (``superior`` 1) or inferior (-1)."""
    label = torch.from_numpy(label)
    transform = GridTransform(np.diag([-10.0, -10.0, 10.0 * superior, 1.0]), tuple(label.shape))
    image = torch.linspace(-1, 1, label.numel()).reshape(label.shape)
    return PreparedCase("c", image, label, transform, None, torch.tensor(present))


def two_organ_config():
    """The ``TrainConfig`` of the session's two-organ U-Net (the ``organ_model`` fixture): a small U-Net that a thousand
    steps on :func:`write_ct_msd` scans teach (intensity tells the organs apart)."""
    from imagetomesh.preprocessing import GridSpec
    from imagetomesh.training.augment import AugmentConfig
    from imagetomesh.training.configs import TrainConfig

    organs = [
        {"name": "bright", "label": 1, "colour": [255, 0, 0]},
        {"name": "brighter", "label": 2, "colour": [0, 0, 255]},
    ]
    return TrainConfig(
        "unet",
        {"unet": {"in_channels": 1, "num_classes": 3, "base": 8, "depth": 2, "norm": "batch"}},
        # the whole image and air around it (as the head-and-neck grid holds air beyond a scan's ends)
        grid=GridSpec((32, 32, 40), (4.0, 4.0, 4.0), LPS_RAS, "ct"),
        steps=1000,  # after 500 its fat-like organ came and went (and air became it) as the grid moved by a voxel
        lr=3e-2,
        val_every=500,
        threads=1,
        organs=organs,
        patch=[12, 12, 12],
        foreground=0.5,  # air and padding too: air must not look like the fat-like organ
        augment=AugmentConfig(flip=0, rotate_deg=0, scale=0, intensity_scale=0, intensity_shift=0, noise=0),
    )


def train_on_synthetic_cts(config, root: Path, init_from=None, card_input=None) -> tuple[Path, dict, list[str]]:
    """Train ``config`` (from ``init_from``) on a new MSD folder under ``root`` of six :func:`write_ct_msd` scans,
    organ 1 contoured in every other one; the best model's card gets ``card_input`` (its ``input``, as a
    bundled card has). ``(model folder, card, log lines)``."""
    from imagetomesh.training.engine import train

    msd = write_ct_msd(root / "msd", 6, present_for=lambda n: [1, 2] if n % 2 == 0 else [2])
    log: list[str] = []
    best = train(config, msd, root / "run", init_from=init_from, log=log.append)
    card = json.loads((best / "card.json").read_text())
    if card_input is not None:
        card["input"] = card_input
        (best / "card.json").write_text(json.dumps(card))
    return best, card, log
