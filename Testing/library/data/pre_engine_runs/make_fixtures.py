"""Made these fixtures with the training code of commit ab41b9f (before the training engine):

    git archive ab41b9f ImageToMeshLib | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/ImageToMeshLib python Testing/library/data/pre_engine_runs/make_fixtures.py

It writes, beside itself, ``configs.json`` (every named training config's ``to_dict()``) and
tiny run folders (``checkpoint.pt``, ``split.json``) of voxel2mesh, nudf and dals, two steps each,
on the MSD folder :func:`tiny_msd` makes (also used by the test that resumes them).
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # Testing/, for conftest's MSD writer


def tiny_msd(root: Path) -> Path:
    """Eight 16^3 noisy balls in MSD layout (hippocampus_000 ...)."""
    from imagetomesh.core.volume import Volume
    from imagetomesh.io.images import write_image

    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    k, j, i = np.indices((16, 16, 16))
    for n in range(8):
        c, r = rng.uniform(6, 9, 3), rng.uniform(3, 5)
        label = ((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2 <= r**2).astype(np.uint8)
        image = label.astype(np.float32) + rng.normal(0, 0.1, label.shape).astype(np.float32)
        name = f"hippocampus_{n:03d}.nii.gz"
        write_image(Volume(label), root / "labelsTr" / name)
        write_image(Volume(image), root / "imagesTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    return root


def main() -> None:
    from imagetomesh.models.dals import DALSConfig
    from imagetomesh.preprocessing import GridSpec
    from imagetomesh.training import configs
    from imagetomesh.training.dals_trainer import DALSTrainConfig, get_dals_config, train_dals
    from imagetomesh.training.implicitmeshnet_trainer import implicitmeshnet_configs
    from imagetomesh.training.nudf_trainer import NUDFTrainConfig, nudf_configs, train_nudf
    from imagetomesh.training.trainer import train
    from imagetomesh.training.udf_points import UDFPointConfig

    dump = {kind: {name: c.to_dict() for name, c in named.items()} for kind, named in configs._configs().items()}
    dump["nudf"] = {name: c.to_dict() for name, c in nudf_configs().items()}
    dump["implicitmeshnet"] = {name: c.to_dict() for name, c in implicitmeshnet_configs().items()}
    dump["dals"] = {
        f"{shapes}/{name}": get_dals_config(shapes, name).to_dict()
        for shapes in ("hippocampus", "kidney")
        for name in ("cpu", "gpu")
    }
    for c in dump["dals"].values():
        c.pop("bf16")  # depends on the CPU
    (HERE / "configs.json").write_text(json.dumps(dump, indent=1))

    grid = GridSpec((16, 16, 16), (1.0, 1.0, 1.0))
    unet = {"in_channels": 1, "num_classes": 2, "base": 4, "depth": 3, "norm": "batch"}
    with tempfile.TemporaryDirectory() as tmp:
        msd = tiny_msd(Path(tmp) / "msd")
        runs = {
            "voxel2mesh": lambda out: train(
                configs.TrainConfig(
                    "voxel2mesh", {"unet": unet, "hidden": 8, "stages": 2}, grid=grid, steps=2, val_every=1, threads=1
                ),
                msd,
                out,
            ),
            "nudf": lambda out: train_nudf(
                NUDFTrainConfig(
                    dict(channels=[2, 4], hidden=8),
                    grid=grid,
                    steps=2,
                    val_every=1,
                    points_per_case=200,
                    val_points=100,
                    points=UDFPointConfig(count=400),
                ),
                msd,
                out,
            ),
            "dals": lambda out: train_dals(
                DALSTrainConfig(
                    shapes="hippocampus",
                    model=DALSConfig(latent_dim=4, hidden=(8, 8, 8), train_template_level=1, fit_template_level=1),
                    steps=2,
                    batch_size=2,
                    target_points=100,
                    surface_samples=50,
                    val_shapes=1,
                    val_iterations=2,
                    checkpoint_every=1,
                    log_every=1,
                    bf16=False,
                ),
                msd,
                out,
                split_path=out / "split.json",
            ),
        }
        for kind, run in runs.items():
            out = Path(tmp) / kind
            torch.manual_seed(0)
            run(out)
            target = HERE / kind
            target.mkdir(exist_ok=True)
            for name in ("checkpoint.pt", "split.json"):
                shutil.copyfile(out / name, target / name)


if __name__ == "__main__":
    main()
