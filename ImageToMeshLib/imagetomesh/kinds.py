"""Every model kind, one entry each: where its model lives and how it trains.

A kind names a model architecture. Its entry says where the config dataclass and the
``nn.Module`` class live (``"module:Config:Model"``, imported only when a model of the kind is
built; the class implements :class:`~imagetomesh.models.protocol.SegmentationModel`) and how it
trains (a :class:`~imagetomesh.training.task_entries.TaskEntry` naming its training task).
DALS is a shape prior: it trains, but ``segment`` does not use it (its model is ``None`` here).

Adding a kind: a model module (config dataclass + ``nn.Module`` with ``predict_meshes``), a
training task module (a :class:`~imagetomesh.training.tasks.base.Task` subclass with
``configs()``), and one entry in :data:`KINDS`. :mod:`imagetomesh.models.registry` (building
models) and :mod:`imagetomesh.training.tasks` (training them) read this table and nothing else.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from imagetomesh.training.task_entries import (
    INIT_FROM,
    PRETRAIN_STEPS,
    PRETRAIN_TIME_LIMIT,
    SDF_FROM,
    SHAPES,
    TAU,
    TIME_LIMIT,
    TaskEntry,
)


class Kind(NamedTuple):
    """One model kind: ``model`` ``"module:ConfigClass:ModelClass"`` (None for a prior) and ``training``."""

    model: Optional[str]
    training: TaskEntry


MSD = "MSD folder (dataset.json, imagesTr/, labelsTr/)"
_IMAGE = "imagetomesh.training.tasks.image_to_mesh:ImageToMeshTask"

#: kind -> :class:`Kind`
KINDS: dict[str, Kind] = {
    "voxel2mesh": Kind(
        "imagetomesh.models.voxel2mesh:Voxel2MeshConfig:Voxel2Mesh",
        TaskEntry(
            _IMAGE,
            "train voxel2mesh on a Medical Segmentation Decathlon folder",
            MSD,
            "named config, e.g. cpu, gpu, cpu-v2 or gpu-v2 (the version-2 mesh loss), cpu-v2-frozen (its mesh decoder fine-tuned on the --init-from model's frozen U-Net), cpu-v2-raster (the bundled voxel2mesh-hippocampus), headneck-ct-cpu-frozen (one decoder per head-and-neck organ on the frozen U-Net of --init-from unet-headneck-ct), headneck-ct-cpu-frozen-surface-scan-starts (the bundled voxel2mesh-headneck-ct) or an ablation (ps-umu, hs-umu, lns-umu, lns-amu = cpu)",
            (INIT_FROM, TIME_LIMIT),
        ),
    ),
    "pixel2mesh3d": Kind(
        "imagetomesh.models.pixel2mesh3d:Pixel2Mesh3DConfig:Pixel2Mesh3D",
        TaskEntry(
            _IMAGE,
            "train pixel2mesh3d on a Medical Segmentation Decathlon folder",
            MSD,
            "named config, e.g. cpu, gpu, cpu-v2 or gpu-v2 (the version-2 mesh loss; cpu-v2: the bundled pixel2mesh3d-hippocampus), cpu-v2-frozen (its mesh decoder fine-tuned on the --init-from model's frozen U-Net)",
            (INIT_FROM, TIME_LIMIT),
        ),
    ),
    "unet": Kind(
        "imagetomesh.models.unet_mc:UNetMCConfig:UNetMC",
        TaskEntry(
            _IMAGE,
            "train unet on a Medical Segmentation Decathlon folder",
            MSD,
            "named config, e.g. cpu, gpu, cpu-v2 or gpu-v2 (bf16 + channels-last; cpu-v2: the bundled unet-hippocampus), headneck-ct-cpu (seven CT organs, from scratch), headneck-ct-cpu-contoured-long (fine-tuning it: the bundled unet-headneck-ct's last run) or headneck-ct-gpu-wide (the bundled unet-headneck-ct-wide-gpu, on a GPU)",
            (INIT_FROM, TIME_LIMIT),
        ),
    ),
    "nudf": Kind(
        "imagetomesh.models.nudf:NUDFConfig:NUDF",
        TaskEntry(
            "imagetomesh.training.tasks.nudf:NUDFTask",
            "train nudf on a Medical Segmentation Decathlon folder",
            MSD,
            "named config, e.g. cpu (the bundled nudf-hippocampus), gpu, headneck-ct-cpu (seven CT organs, found by the --init-from unet model), headneck-ct-cpu-guided (its encoder also reading that U-Net's probability of the organ) or headneck-ct-cpu-ensemble-guided-finetune (the bundled nudf-headneck-ct's last run)",
            (INIT_FROM, TIME_LIMIT),
        ),
    ),
    "implicitmeshnet": Kind(
        "imagetomesh.models.implicitmeshnet:ImplicitMeshNetConfig:ImplicitMeshNet",
        TaskEntry(
            "imagetomesh.training.tasks.implicitmeshnet:ImplicitMeshNetTask",
            "train implicitmeshnet on a Medical Segmentation Decathlon folder",
            MSD,
            "named config, e.g. cpu, gpu, cpu-finetune or cpu-v2 (the bundled implicitmeshnet-hippocampus)",
            (INIT_FROM, TIME_LIMIT, PRETRAIN_STEPS, PRETRAIN_TIME_LIMIT, SDF_FROM, TAU),
        ),
    ),
    "dals": Kind(
        None,
        TaskEntry(
            "imagetomesh.training.tasks.dals:DALSTask",
            "train a DALS shape prior (hippocampus labels, KiTS19 kidneys, OpenKBP CT mandibles, parotids or brainstems)",
            "hippocampus MSD folder, kits19-masks folder or openkbp-ct folder",
            "named config: cpu or gpu (default: cpu, gpu on cuda)",
            (SHAPES, TIME_LIMIT),
            default_config=None,
            result_label="DALS prior",
            steps_without_time_limit=True,
        ),
    ),
}
