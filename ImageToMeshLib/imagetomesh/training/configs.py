"""Named training configurations: ``cpu`` trains on 2 CPU cores in about an hour, ``gpu`` is larger.

The CPU configs of the mesh models are meant to start from a trained U-Net (``--init-from``
a ``unet`` model folder): the bundled ones did, since three full trainings from scratch do
not fit in the CPU budget; the GPU configs train from scratch.

Voxel2Mesh's ablation variants of the paper are configs too: ``ps-umu``, ``hs-umu``,
``lns-umu`` and ``lns-amu`` (= Voxel2Mesh).

``cpu-v2`` / ``gpu-v2`` (Voxel2Mesh, Pixel2Mesh-3D) are ``cpu`` / ``gpu`` with the version-2 mesh
loss of issue 15 (:func:`~imagetomesh.training.losses.mesh_decoder_loss`: every term a length
squared, unsquared Laplacian smoothing or Pixel2Mesh's change of Laplacian coordinates, a dense
Chamfer target) and regulariser weights chosen on the validation split with
``Testing/benchmarks/mesh_loss_oracle.py`` (``docs/mesh-losses.md``). ``cpu`` and ``gpu`` keep
the loss the bundled models were trained with.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from imagetomesh.errors import InputError
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig
from imagetomesh.training.losses import MeshLossWeights
from imagetomesh.training.tasks.base import EngineOptions

#: The hippocampus models' grid, in the orientation every MSD Task04 image is stored in
#: (index axes along R, A, S): images stored otherwise are resampled into it.
HIPPOCAMPUS_GRID = GridSpec((48, 56, 40), (1.0, 1.0, 1.0), (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))


@dataclass
class TrainConfig(EngineOptions):
    """Everything a U-Net, Voxel2Mesh or Pixel2Mesh-3D run needs besides the data; saved as ``config.json``."""

    kind: str
    model: dict
    grid: GridSpec = HIPPOCAMPUS_GRID
    steps: int = 3000
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_every: int = 250
    loss: MeshLossWeights = field(default_factory=MeshLossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: int = 2

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["grid"] = GridSpec.from_dict(d["grid"])
        d["loss"] = MeshLossWeights(**d["loss"])
        d["augment"] = AugmentConfig(**d["augment"])
        return cls(**d)


#: U-Net presets of the named configs (``UNetConfig`` fields). Every bundled model was trained
#: with :data:`UNET_CPU` (its card's ``config.unet``).
#: The plain U-Net of every ``cpu`` config (and of the bundled ``unet-hippocampus``).
UNET_CPU = {"in_channels": 1, "num_classes": 2, "base": 12, "depth": 4, "norm": "batch"}
#: The plain, wider U-Net of the Voxel2Mesh, Pixel2Mesh-3D and U-Net ``gpu`` configs.
UNET_GPU = {"in_channels": 1, "num_classes": 2, "base": 32, "depth": 4, "norm": "batch"}
#: ImplicitMeshNet's ``gpu`` U-Net, the paper's: residual blocks, 16-32-64-128-256, instance norm, dropout 0.1.
UNET_GPU_RESIDUAL = {
    "in_channels": 1,
    "num_classes": 2,
    "base": 16,
    "depth": 5,
    "norm": "instance",
    "block": "residual",
    "dropout": 0.1,
}


#: Version-2 mesh losses of the ``*-v2`` configs; weights are unit-free ratios to the Chamfer term.
#: Voxel2Mesh's were chosen with Testing/benchmarks/mesh_loss_oracle.py on validation cases
#: (docs/mesh-losses.md): the setting with the IoU of the Chamfer alone and no self-intersecting face.
V2M_LOSS_V2 = MeshLossWeights(
    chamfer=1.0, ce=1.0, normal=0.3, laplacian=0.3, edge=0.0, sample_points=4000, version=2, target="dense"
)
#: Pixel2Mesh-3D's: the same normal and edge ratios (its normal term, edge-orthogonality to the dense
#: target's normals, is unit-free like normal consistency), its Laplacian ratio of Wang et al. (0.3,
#: a mean of squared changes like the Chamfer's mean of squared distances); not yet measured by the oracle.
P2M_LOSS_V2 = replace(V2M_LOSS_V2, pixel2mesh_normal=True)


def named_config(configs: dict, name: str, kind: str):
    """``configs[name]``; an unknown ``name`` is an :class:`InputError` naming the known configs of ``kind``."""
    if name not in configs:
        raise InputError(f"no config {name!r} for {kind}; known: {', '.join(configs)}")
    return configs[name]


def _v2m(sampling: str, unpooling: str, unet: dict, hidden: int) -> dict:
    return {"unet": unet, "sampling": sampling, "unpooling": unpooling, "hidden": hidden, "stages": 3}


def image_configs() -> dict[str, dict[str, TrainConfig]]:
    """``{kind: {name: config}}`` of the U-Net, Voxel2Mesh and Pixel2Mesh-3D runs (fresh objects)."""
    v2m = {}
    for name, (sampling, unpooling) in {
        "ps-umu": ("ps", "uniform"),
        "hs-umu": ("hs", "uniform"),
        "lns-umu": ("lns", "uniform"),
        "lns-amu": ("lns", "adaptive"),
    }.items():
        v2m[name] = TrainConfig(
            "voxel2mesh", _v2m(sampling, unpooling, UNET_CPU, 64), steps=1200, val_every=150, threads=1
        )
    v2m["cpu"] = copy.deepcopy(v2m["lns-amu"])
    v2m["gpu"] = TrainConfig("voxel2mesh", _v2m("lns", "adaptive", UNET_GPU, 128), steps=20000, batch_size=4)
    p2m_loss = MeshLossWeights(chamfer=1.0, ce=1.0, normal=1.6e-4, laplacian=0.3, edge=0.1, pixel2mesh_normal=True)
    p2m = {
        "cpu": TrainConfig(
            "pixel2mesh3d",
            {"unet": UNET_CPU, "hidden": 128, "residual_blocks": 3},
            steps=900,
            val_every=150,
            loss=p2m_loss,
            threads=1,
        ),
        "gpu": TrainConfig(
            "pixel2mesh3d",
            {"unet": UNET_GPU, "hidden": 128, "residual_blocks": 6},
            steps=20000,
            batch_size=4,
            loss=p2m_loss,
        ),
    }
    unet = {
        "cpu": TrainConfig("unet", {"unet": UNET_CPU}, steps=1200, batch_size=2, val_every=200),
        "gpu": TrainConfig("unet", {"unet": UNET_GPU}, steps=20000, batch_size=8),
    }
    for named, loss in ((v2m, V2M_LOSS_V2), (p2m, P2M_LOSS_V2)):
        for name in ("cpu", "gpu"):
            named[f"{name}-v2"] = copy.deepcopy(named[name])
            named[f"{name}-v2"].loss = copy.deepcopy(loss)
    return {"voxel2mesh": v2m, "pixel2mesh3d": p2m, "unet": unet}
