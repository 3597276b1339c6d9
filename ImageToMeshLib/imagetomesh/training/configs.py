"""Named training configurations: ``cpu`` trains on 2 CPU cores in about an hour, ``gpu`` is larger.

The CPU configs of the mesh models are meant to start from a trained U-Net (``--init-from``
a ``unet`` model folder): the bundled ones did, since three full trainings from scratch do
not fit in the CPU budget; the GPU configs train from scratch.

Voxel2Mesh's ablation variants of the paper are configs too: ``ps-umu``, ``hs-umu``,
``lns-umu`` and ``lns-amu`` (= Voxel2Mesh).

``cpu-v2`` / ``gpu-v2`` are ``cpu`` / ``gpu`` under bf16 autocast with channels-last convolutions
(about 2x the U-Net's CPU steps per hour: ``Testing/benchmarks/training_throughput.py``) and, for
Voxel2Mesh and Pixel2Mesh-3D, the version-2 mesh loss of issue 15 (:func:`~imagetomesh.training.losses.mesh_decoder_loss`: every term a length
squared, unsquared Laplacian smoothing or Pixel2Mesh's change of Laplacian coordinates, a dense
Chamfer target) and regulariser weights chosen on the validation split with
``Testing/benchmarks/mesh_loss_oracle.py`` (``docs/mesh-losses.md``). ``cpu`` and ``gpu`` keep
the loss the bundled models were trained with.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from imagetomesh.core.transforms import grid_to_index_affine
from imagetomesh.errors import InputError
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig
from imagetomesh.training.losses import MeshLossWeights
from imagetomesh.training.tasks.base import EngineOptions

#: The hippocampus models' grid, in the orientation every MSD Task04 image is stored in
#: (index axes along R, A, S): images stored otherwise are resampled into it.
HIPPOCAMPUS_GRID = GridSpec((48, 56, 40), (1.0, 1.0, 1.0), (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))


@dataclass(kw_only=True)
class OrganOptions:
    """Several-organ options (a base of the config dataclasses of the kinds that can learn several organs)."""

    #: several organs: ``[{"name", "label" (value in the label files), "colour" [r, g, b] 0-255,
    #: "terminology"}, ...]``, class ``k`` = ``organs[k - 1]``; None: one object (every non-zero label)
    organs: Optional[list] = None
    #: organ names contoured over part of their length in the training labels (the oesophagus in
    #: OpenKBP): unknown, not background, in the slices beyond their contour
    #: (:func:`~imagetomesh.training.data.mark_uncontoured_slices`); None: every contour is whole
    partly_contoured: Optional[list] = None
    #: models with one decoder per organ (``organ_crops``): each training crop's centre is moved by up to
    #: this many voxels along each axis from the organ's box centre (a localiser's box is off by a few voxels)
    crop_jitter: float = 3.0

    def organ_classes(self, option: str) -> tuple[int, ...]:
        """Output classes of the organs the config's list ``option`` (e.g. ``"partly_contoured"``) names
        (class ``k`` = ``organs[k - 1]``); :class:`InputError` naming ``option`` for a name that is not one
        of :attr:`organs`."""
        names = getattr(self, option)
        organs = [o["name"] for o in self.organs or []]
        unknown = [n for n in names or [] if n not in organs]
        if unknown:
            raise InputError(f"{option} {unknown} are not organs of this config ({', '.join(organs)})")
        return tuple(organs.index(n) + 1 for n in names or [])

    @property
    def organ_labels(self) -> Optional[tuple[int, ...]]:
        """The label values of :attr:`organs` (class ``k`` = ``organ_labels[k - 1]``), None for one object."""
        return tuple(o["label"] for o in self.organs) if self.organs else None


@dataclass
class TrainConfig(EngineOptions, OrganOptions):
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
    #: train on random ``(D, H, W)`` crops of the grid (inference still sees the whole grid); None: whole grid
    patch: Optional[list] = None
    #: probability that a training crop is centred on a labelled voxel
    foreground: float = 0.5
    #: centre foreground crops on each labelled class equally often (small organs as often as large ones)
    balance_classes: bool = False
    #: average the cross-entropy per class (:func:`~imagetomesh.training.losses.partial_label_loss`)
    balanced_ce: bool = False
    #: U-Nets: this many coarser decoder levels also predict the label, each through its own 1x1x1 head, their
    #: losses added with weights 1/2, 1/4, ... (:mod:`~imagetomesh.training.deep_supervision`; training only: the
    #: saved model is the plain U-Net); 0: the full resolution alone
    deep_supervision: int = 0
    #: stop after this many seconds of training, counted over resumptions (None: no limit)
    time_limit_s: Optional[float] = None
    #: organ names whose output channel restarts at a small prior when the run starts from
    #: ``--init-from`` (:func:`~imagetomesh.training.init_weights.restart_classes`); None: none
    restart_classes: Optional[list] = None
    #: mesh models fine-tuned from ``--init-from``: the U-Net (encoder, decoder, voxel head) keeps its
    #: weights and batch-norm statistics, only the mesh decoder learns (no backward pass through the U-Net)
    freeze_unet: bool = False
    #: several-organ U-Nets: models (names or folders) whose mean probabilities label, in each training case, the
    #: organs its planner did not contour (:mod:`~imagetomesh.training.pseudo_labels`); None: they stay unknown
    pseudo_label_teachers: Optional[list] = None
    #: where an uncontoured organ's teacher probability is at least this without winning, it stays unknown there
    pseudo_label_band: float = 0.1
    #: an uncontoured organ is pseudo-labelled only where the teachers find this fraction of its median contoured size
    pseudo_label_min_fraction: float = 0.25
    #: surface-start Voxel2Mesh decoders (``organ_crops``, ``start="unet_surface"``): each training crop's decoder
    #: starts from the crop's scan guide, as ``segment`` starts it: the whole case's probabilities of the carried
    #: U-Net averaged with these bundled models' (the card's ``ensemble``; ``[]``: the carried U-Net alone;
    #: :mod:`~imagetomesh.training.scan_guides`); None: from its U-Net's softmax of the crop
    scan_starts: Optional[list] = None

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
#: Pixel2Mesh-3D's own terms (edge-orthogonality to the dense target's normals, the change of Laplacian
#: coordinates across a block), chosen with the same oracle (docs/mesh-losses.md): its terms do not keep
#: a mesh from folding without the edge-length term; edge 0.5 is the least that leaves no self-intersecting
#: face, at the IoU of the Chamfer alone.
P2M_LOSS_V2 = replace(V2M_LOSS_V2, pixel2mesh_normal=True, edge=0.5)


#: The head-and-neck CT grid: the whole scan around the image centre, 512 x 512 mm in-plane and
#: 400 mm cranio-caudal at 4 x 4 x 2.5 mm (OpenKBP's 128 x 128 in-plane grid is 2.7-5.4 mm, most
#: 3.9 mm; its slices 1.5-3.3 mm, most 2.5 mm), index axes along R, A, S, Hounsfield units.
HEADNECK_CT_GRID = GridSpec((160, 128, 128), (4.0, 4.0, 2.5), (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0), "ct")


def _sct(code: str, meaning: str, laterality: Optional[tuple[str, str]] = None) -> dict:
    """A Slicer-style terminology entry (SNOMED CT anatomic region, optional laterality modifier)."""
    entry = {"scheme": "SCT", "code": code, "meaning": meaning}
    if laterality:
        entry["modifier"] = {"scheme": "SCT", "code": laterality[0], "meaning": laterality[1]}
    return entry


_RIGHT, _LEFT = ("24028007", "Right"), ("7771000", "Left")
#: The seven OpenKBP organs at risk: label value, colour, terminology.
HEADNECK_CT_ORGANS = [
    {"name": "brainstem", "label": 1, "colour": [250, 210, 160], "terminology": _sct("15926001", "Brainstem")},
    {"name": "spinal_cord", "label": 2, "colour": [244, 214, 49], "terminology": _sct("2748008", "Spinal cord")},
    {
        "name": "right_parotid",
        "label": 3,
        "colour": [120, 170, 240],
        "terminology": _sct("45289007", "Parotid gland", _RIGHT),
    },
    {
        "name": "left_parotid",
        "label": 4,
        "colour": [240, 120, 200],
        "terminology": _sct("45289007", "Parotid gland", _LEFT),
    },
    {"name": "esophagus", "label": 5, "colour": [211, 171, 143], "terminology": _sct("32849002", "Esophagus")},
    {"name": "larynx", "label": 6, "colour": [140, 220, 150], "terminology": _sct("4596009", "Larynx")},
    {"name": "mandible", "label": 7, "colour": [241, 238, 226], "terminology": _sct("91609006", "Mandible")},
]
#: CT augmentation: no flips (they would swap the left and right parotids), small Hounsfield changes.
CT_AUGMENT = AugmentConfig(flip=0.0, rotate_deg=10.0, scale=0.1, intensity_scale=0.03, intensity_shift=0.02, noise=0.01)
#: The head-and-neck U-Net: eight classes (background + seven organs), a wider first level.
UNET_HEADNECK_CT = {"in_channels": 1, "num_classes": 8, "base": 16, "depth": 4, "norm": "batch"}
#: A wider head-and-neck U-Net (1.5x the channels, ~2.25x the compute): the base-16 one plateaus with its
#: training loss where its validation Dice is (no overfitting to blame), so capacity is tried next.
UNET_HEADNECK_CT_WIDE = dict(UNET_HEADNECK_CT, base=24)
#: The soft-tissue CT window (level 40 HU, width 400 HU) in the models' ``HU / 1000`` input unit
#: (:func:`imagetomesh.preprocessing.normalise_ct`).
CT_SOFT_TISSUE_WINDOW = (-0.16, 0.24)


#: Voxel2Mesh's crop around each head-and-neck organ, (d, h, w) voxels of :data:`HEADNECK_CT_GRID`: the
#: organ's largest box in the OpenKBP labels (brainstem 81 x 42 x 59 mm z, y, x; spinal cord 261 x 117 x 33;
#: parotids 78 x 70 x 59, one 113-mm-wide outlier aside; oesophagus 136 x 66 x 39; larynx 78 x 56 x 55;
#: mandible 108 x 119 x 133) plus 16 mm on each side, rounded up to 8 voxels.
HEADNECK_CT_CROPS = {
    "brainstem": [48, 24, 24],
    "spinal_cord": [120, 40, 24],
    "right_parotid": [48, 32, 32],
    "left_parotid": [48, 32, 32],
    "esophagus": [72, 32, 24],
    "larynx": [48, 24, 24],
    "mandible": [56, 40, 48],
}
#: Semi-axes (x, y, z) mm of each organ's template ellipsoid: half its median box in the OpenKBP labels,
#: but for the spinal cord's and the oesophagus's y, their cross-section (their box's y is their curve).
HEADNECK_CT_TEMPLATE_MM = {
    "brainstem": [16.5, 14.0, 22.5],
    "spinal_cord": [10.0, 8.0, 82.0],
    "right_parotid": [17.5, 21.5, 26.0],
    "left_parotid": [17.5, 21.5, 26.0],
    "esophagus": [13.5, 10.0, 36.0],
    "larynx": [18.0, 19.0, 17.5],
    "mandible": [58.5, 49.0, 35.5],
}


#: Organs whose template ellipsoid is bent into a horseshoe, ``[angle_deg, thickness_y, thickness_z]``
#: (:func:`~imagetomesh.models.mesh_state.arc_sphere`). The mandible's was chosen with
#: ``Testing/benchmarks/mesh_loss_oracle.py --organ mandible`` on 3 validation cases (vertices optimised
#: 200 steps under the config's loss): its ellipsoid reached Dice 0.475 (0.64 after 500 steps), arcs of
#: 80 / 95 / 110 / 125 degrees 0.884 / 0.898 / 0.882 / 0.790 (thickness 0.3, 0.8).
HEADNECK_CT_ARCS = {"mandible": [95.0, 0.3, 0.8]}


def organ_decoders(organs: list[dict], grid: GridSpec) -> dict:
    """Voxel2Mesh's ``organ_crops``, ``organ_templates`` (semi-axes in each crop's grid coordinates) and
    ``organ_arcs`` for ``organs`` (their ``name`` keys :data:`HEADNECK_CT_CROPS`, :data:`HEADNECK_CT_TEMPLATE_MM`
    and :data:`HEADNECK_CT_ARCS`) on ``grid``."""
    crops = [HEADNECK_CT_CROPS[o["name"]] for o in organs]
    templates = []
    for organ, crop in zip(organs, crops):
        half_mm = np.asarray(grid.spacing) * np.diag(grid_to_index_affine(crop[::-1]))[:3]  # (x, y, z)
        templates.append([round(float(v), 4) for v in np.asarray(HEADNECK_CT_TEMPLATE_MM[organ["name"]]) / half_mm])
    arcs = [HEADNECK_CT_ARCS.get(o["name"]) for o in organs]
    return {"organ_crops": crops, "organ_templates": templates, "organ_arcs": arcs}


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
    unet["headneck-ct-cpu"] = TrainConfig(
        "unet",
        {"unet": UNET_HEADNECK_CT},
        grid=HEADNECK_CT_GRID,
        steps=2400,
        batch_size=2,
        lr=2e-3,
        val_every=300,
        augment=copy.deepcopy(CT_AUGMENT),
        threads=1,
        organs=copy.deepcopy(HEADNECK_CT_ORGANS),
        patch=[48, 80, 80],
        foreground=0.67,
        bf16_autocast=True,
        channels_last=True,
    )
    # fine-tuning a trained head-and-neck U-Net (--init-from) with class-balanced crops, so the small
    # organs (oesophagus, larynx) are centred as often as the mandible
    unet["headneck-ct-cpu-balanced"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu"]), steps=700, lr=5e-4, val_every=350, balance_classes=True
    )
    # fine-tuning a head-and-neck U-Net whose oesophagus and larynx never came out (their softmax
    # saturated under the soft Dice of organs outside the crop, since fixed): those two outputs restart
    # at a 1 % prior, the rest of the network is kept
    unet["headneck-ct-cpu-restart"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-balanced"]), steps=1400, restart_classes=["esophagus", "larynx"]
    )
    # fine-tuning a head-and-neck U-Net (--init-from) whose oesophagus output was pushed down by the slices
    # below the oesophagus contour, labelled background though the organ goes on there: the spinal cord and
    # the oesophagus are unknown beyond their contours, and the oesophagus output restarts at a 1 % prior
    unet["headneck-ct-cpu-partly"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu"]),
        steps=2400,
        lr=1e-3,
        partly_contoured=["spinal_cord", "esophagus"],
        restart_classes=["esophagus"],
    )
    # a longer second cycle for the bundled head-and-neck U-Net (--init-from unet-headneck-ct, 4,290 steps,
    # whose last cycle ended on a validation plateau at a low rate): the partly-contoured loss, all
    # outputs kept, a one-cycle rate of at most 1e-3 over 6,000 steps (several sessions; it resumes)
    unet["headneck-ct-cpu-long"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-partly"]), steps=6000, restart_classes=None
    )
    # the wider U-Net from scratch with the loss the bundled one ended with (partly contoured organs), one
    # one-cycle schedule over 9,000 steps (several sessions on one CPU thread; it resumes)
    unet["headneck-ct-cpu-wide"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-partly"]),
        model={"unet": copy.deepcopy(UNET_HEADNECK_CT_WIDE)},
        steps=9000,
        lr=2e-3,
        restart_classes=None,
    )
    # the bundled head-and-neck U-Net (--init-from unet-headneck-ct) fine-tuned to the contoured extent: every
    # voxel the label calls background is background again, the slices beyond the oesophagus's and the spinal
    # cord's contours included (there the held-out labels are background too: removing the predicted voxels
    # beyond each contour would raise validation voxel Dice from 0.721 to 0.761; docs/headneck-ct-experiments.md)
    unet["headneck-ct-cpu-contoured"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-long"]), steps=1500, lr=3e-4, partly_contoured=None
    )
    # a full one-cycle schedule of the same loss (--init-from the unet-headneck-ct it made): 1,500 steps at a
    # peak rate of 3e-4 narrowed the oesophagus's gap beyond its contours (validation voxel Dice 0.504 -> 0.535,
    # 0.626 within them) without closing it
    unet["headneck-ct-cpu-contoured-long"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured"]), steps=6000, lr=1e-3
    )
    # the bundled head-and-neck U-Net (--init-from unet-headneck-ct) fine-tuned with the same schedule on labels
    # completed by its ensemble: in each training case, the organs its planner did not contour are labelled where
    # the two bundled U-Nets' mean probabilities find them (training.pseudo_labels; 0.1-probability rims unknown).
    # Run (session 31, --time-limit 115 --fit-steps-to-time: 5,712 steps on one thread): training-grid validation
    # voxel Dice 0.742 at step 4,800 (the bundled run 0.737), but whole scans 0.7524 alone (the bundled 0.7521) and
    # 0.7587 with the wide U-Net (0.7586): not bundled (docs/headneck-ct-experiments.md)
    unet["headneck-ct-cpu-contoured-pseudo"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured-long"]),
        pseudo_label_teachers=["unet-headneck-ct", "unet-headneck-ct-wide-gpu"],
    )
    # the bundled head-and-neck U-Net (--init-from unet-headneck-ct) fine-tuned with the same schedule on taller
    # crops: 80 slices (200 mm) of 96 x 96 instead of 48 (120 mm) of 80 x 80, so that a crop holds the skull base,
    # the brainstem and the top of the cord together, and the larynx with the oesophagus below it: where planners end
    # the brainstem, larynx and oesophagus is where the model's outlines part from theirs most (session 26). Tried
    # (session 32, --time-limit 95 --fit-steps-to-time: 2.9 s a step on one thread, 1,760 steps, stopped at 1,600):
    # training-grid validation voxel Dice 0.730-0.735 (best 0.735 at step 1,200; the bundled run 0.737); whole scans
    # 0.750 alone (the bundled U-Net 0.752), 0.758 with the wide U-Net (0.759): not bundled (docs/headneck-ct-experiments.md)
    unet["headneck-ct-cpu-contoured-tall"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured-long"]), patch=[80, 96, 96], lr=5e-4
    )
    # the bundled head-and-neck U-Net (--init-from unet-headneck-ct) fine-tuned with the same schedule on crops as wide
    # as the scans: 48 slices of 96 x 144 (front to back, left to right; most scan grids are 80 x 128, at most
    # 104 x 176) instead of 80 x 80, so that training sees both sides of the neck as segment does. Every training crop
    # so far cut the scan from left to right, and run on windows that do so, the bundled U-Net loses 0.005 on the
    # validation scans (0.754 against one pass's 0.759; front to back 0.743: session 46). Tried (session 46,
    # --time-limit 68 --fit-steps-to-time: 3.9 s a step on one thread, 900 steps): training-grid validation voxel Dice
    # 0.734 at step 600 (best; its own wider crops); whole scans 0.752 alone (the bundled U-Net alone, today's code:
    # 0.756; larynx 0.729 -> 0.709), 0.756 with the wide U-Net (the bundled ensemble 0.759): not bundled
    unet["headneck-ct-cpu-contoured-wide-crops"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured-long"]), patch=[48, 96, 144], lr=5e-4
    )
    # the bundled head-and-neck U-Net (--init-from unet-headneck-ct) fine-tuned on crops mirrored left to right
    # half the time, the parotids trading classes: twice the parotid shapes, and a network that sees a mirrored
    # scan as a scan, so segment can average it with its mirror. Tried (session 21), not bundled: whole-scan
    # validation 0.747 mirror-averaged against 0.752, the oesophagus (left of the midline) 0.03 lower
    unet["headneck-ct-cpu-contoured-mirror"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured"]), augment=replace(copy.deepcopy(CT_AUGMENT), mirror=0.5)
    )
    # the bundled head-and-neck U-Net (--init-from unet-headneck-ct) reading, besides its HU / 1000 input, the
    # soft-tissue window (-160..240 HU, level 40 width 400) rescaled to [-1, 1]: its first convolution's new
    # channel starts at zero. The base-16 U-Net underfits (its training loss plateaus where its validation Dice
    # does), and the parotids, brainstem, oesophagus and larynx differ from their surroundings by tens of HU,
    # 0.01-0.05 of its input's unit, where the mandible stands 1.0 above them. Tried (session 22), not bundled: its
    # training matched the same 1,500 steps without the window step for step (validation voxel Dice 0.7358 against
    # 0.7359), the window's weights grew to 2 % of the image's, and whole-scan validation gave 0.751 (0.751 without)
    unet["headneck-ct-cpu-contoured-softwindow"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured"]),
        model={"unet": dict(UNET_HEADNECK_CT, windows=[list(CT_SOFT_TISSUE_WINDOW)])},
    )
    # the bundled head-and-neck U-Net (--init-from unet-headneck-ct) fine-tuned with a third of its crops blurred by
    # up to 0.75 grid voxels per axis (AugmentConfig.blur). Why: its larynx and oesophagus move most between a scan
    # and its 1 mm in-plane copy (per validation case from -0.09 to +0.065 Dice; openkbp_004's larynx a slice longer
    # at each end on the copy), which reaches the grid about 0.5 voxel blurrier in-plane (its linear interpolation and
    # the antialiasing: sqrt(3.9^2 / 6 + 1.25) mm). Tried (session 28, --steps 1200), not kept: alone on the 20
    # validation scans 0.746 against the bundled U-Net's 0.752 alone, and the per-case Dice changes of the 1 mm copy
    # wider, not narrower (mean |change| 0.012 against 0.0096; its larynx +0.031 on average: docs/headneck-ct-experiments.md)
    unet["headneck-ct-cpu-contoured-blur"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured"]),
        augment=replace(copy.deepcopy(CT_AUGMENT), blur=0.3, blur_sigma=0.75),
    )
    # the wider U-Net from scratch on one GPU (an H200 lease of 15 minutes, start and data preparation included;
    # tools/train_from_arrays.py) with the loss the bundled one ended with (the contoured extent): 64 x 96 x 96 crops
    # in batches of 8, drawn by 14 worker processes; --steps set to what the lease holds. Run (session 24): 44 ms
    # per step on random tensors with a plain cross-entropy, 103 ms on real crops with validations (not profiled),
    # so --time-limit stopped it at step 3,996 of 7,400, its rate still at 9.5e-4: validation voxel Dice 0.739 (the
    # bundled U-Net 0.737), whole-scan 0.750 (0.752); averaging the two's probabilities gave 0.756
    # (docs/headneck-ct-experiments.md). Session 25, seed 1, --time-limit 7.5 --fit-steps-to-time: 81 ms a step (the
    # workers kept up: 0.1 ms waited a step), so its schedule was fitted to 4,502 steps and ran to its end:
    # validation voxel Dice 0.649 at half the rate, 0.724 at a tenth, 0.727 at the end (below the unfinished run's)
    unet["headneck-ct-gpu-wide"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured"]),
        model={"unet": copy.deepcopy(UNET_HEADNECK_CT_WIDE)},
        steps=6000,
        batch_size=8,
        patch=[64, 96, 96],
        lr=2e-3,
        val_every=500,
        threads=2,
        batch_workers=14,
    )
    # its annealing (--init-from a headneck-ct-gpu-wide model whose lease ended before its schedule did): a short
    # one-cycle schedule of a fresh optimiser at half the rate the first run had reached. Run (session 24, the
    # lease's last 3 minutes): validation voxel Dice 0.738, whole-scan 0.748: no gain. Session 25, a longer one
    # (--steps 3000 --time-limit 4.2 --fit-steps-to-time: 2,864 steps, seed 2): 0.743 at step 800 (rate 4.4e-4),
    # then 0.738, 0.730, 0.731 as the rate fell to 0: the wide U-Net overfits its 147 training scans as it anneals
    unet["headneck-ct-gpu-wide-anneal"] = replace(
        copy.deepcopy(unet["headneck-ct-gpu-wide"]), steps=800, lr=5e-4, val_every=800
    )
    # the wide U-Net regularised against that overfitting, from scratch (not run yet: for a GPU lease, with
    # --fit-steps-to-time): decoupled weight decay 0.05 (every other run: 1e-5) and stronger augmentation
    # (rotations up to 15 degrees, scale 0.15, intensity scale 0.05 and shift 0.03: the bundled runs' 10, 0.1, 0.03, 0.02)
    unet["headneck-ct-gpu-wide-regularised"] = replace(
        copy.deepcopy(unet["headneck-ct-gpu-wide"]),
        weight_decay=0.05,
        augment=replace(CT_AUGMENT, rotate_deg=15.0, scale=0.15, intensity_scale=0.05, intensity_shift=0.03),
    )
    # the same regularisation on the CPU, stronger, as a long fine-tune of the bundled head-and-neck U-Net
    # (--init-from unet-headneck-ct; ~0.9 s a step on one thread; it resumes): the bundled U-Net scores 0.790 on
    # its own training scans and 0.752 on validation (whole scans), and its fine-tunes with the bundled runs'
    # augmentation all ended at 0.745-0.752. Decoupled weight decay 0.05, rotations up to 20 degrees, scale 0.2,
    # intensity scale 0.1 and shift 0.05, noise 0.02 (nnU-Net's defaults are stronger still). Run (session 29, 8,000
    # steps, 2 h): training-grid validation voxel Dice 0.648 at the peak rate (oesophagus 0.17), then 0.711 .. 0.734 as
    # it annealed, against 0.733 .. 0.737 for the same schedule without the regularisation; whole scans 0.753 alone
    # (the bundled U-Net alone 0.752) and 0.760 with the ensemble (0.759): within noise, not bundled
    unet["headneck-ct-cpu-contoured-regularised"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured"]),
        steps=8000,
        lr=1e-3,
        val_every=800,
        weight_decay=0.05,
        augment=replace(CT_AUGMENT, rotate_deg=20.0, scale=0.2, intensity_scale=0.1, intensity_shift=0.05, noise=0.02),
    )
    # the ensemble's other member, the wide U-Net trained on a GPU (--init-from unet-headneck-ct-wide-gpu), fine-tuned
    # on the CPU with the same regularisation: the CPU crops and batches of the bundled CPU U-Net, half its peak rate
    # (the wide U-Net's GPU annealing gained at 5e-4 and lost below it); ~1.7 s a step on one thread. Run (session 29):
    # training-grid validation voxel Dice 0.724 / 0.737 / 0.739 / 0.737 / 0.739 at steps 500-2,500; whole scans 0.752
    # alone (its start 0.751), and in the ensemble 0.758 in its start's place (0.759): not bundled
    unet["headneck-ct-cpu-wide-contoured-regularised"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured-regularised"]),
        model={"unet": copy.deepcopy(UNET_HEADNECK_CT_WIDE)},
        steps=2500,
        lr=5e-4,
        val_every=500,
    )
    # the ensemble's wide member (--init-from unet-headneck-ct-wide-gpu) fine-tuned on the same completed labels, at
    # the CPU crops and batches and half the peak rate (as headneck-ct-cpu-wide-contoured-regularised). Run (session
    # 31, --time-limit 95 --fit-steps-to-time: 2,840 steps): training-grid validation 0.738 at step 1,000; whole
    # scans 0.7508 alone (its start 0.7507), 0.7582 with the CPU student, 0.7580 with the bundled CPU U-Net: not bundled
    unet["headneck-ct-cpu-wide-contoured-pseudo"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured-pseudo"]),
        model={"unet": copy.deepcopy(UNET_HEADNECK_CT_WIDE)},
        lr=5e-4,
        val_every=500,
    )
    # the bundled head-and-neck U-Net (--init-from unet-headneck-ct) fine-tuned with the contoured-extent schedule and
    # deep supervision of its two coarser decoder levels (1/2 and 1/4 of the grid; nnU-Net trains so; every run above
    # supervised the full resolution alone): the coarse levels, which see an organ's whole neighbourhood, are taught
    # to tell the organs apart themselves. Tried (session 36, --time-limit 120 --fit-steps-to-time: 6,502 steps on one
    # thread): training-grid validation voxel Dice 0.742 at step 5,400 (the bundled run 0.737); whole scans 0.754 alone
    # (the bundled U-Net 0.752), 0.7575 with the wide U-Net (0.7586): not bundled (docs/headneck-ct-experiments.md)
    unet["headneck-ct-cpu-contoured-deepsup"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured-long"]), deep_supervision=2, val_every=600
    )
    # the ensemble's wide member (--init-from unet-headneck-ct-wide-gpu) fine-tuned with the same deep supervision, at
    # the CPU crops and batches and half the peak rate (as headneck-ct-cpu-wide-contoured-regularised). Tried (session
    # 36, --time-limit 85 --fit-steps-to-time: 2,245 steps): training-grid validation 0.734 at step 1,000 (its start
    # 0.739); whole scans 0.7552 with the bundled CPU U-Net (the bundled ensemble 0.7586): not bundled
    unet["headneck-ct-cpu-wide-contoured-deepsup"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured-deepsup"]),
        model={"unet": copy.deepcopy(UNET_HEADNECK_CT_WIDE)},
        lr=5e-4,
        val_every=500,
    )
    # a third member for the ensemble, trained apart from the other two: the base-16 U-Net from scratch (no
    # --init-from) with the contoured-extent loss from its first step, one one-cycle schedule at the first run's peak
    # rate. Every third member tried so far (session 25: a wide U-Net cut at 4,502 steps; the fine-tunes) started
    # from a member or stopped early; the wide U-Net, trained apart, is the one network that moved the ensemble.
    # Tried (session 57, --seed 7 --threads 2 --time-limit 120 --fit-steps-to-time: 8,456 steps, 95 min):
    # training-grid validation voxel Dice 0.725 at its best step (8,100; the bundled run 0.737); whole scans 0.738
    # alone, and as a third member 0.7579 at equal weights, 0.7587 at a fifth (the two members 0.7586): not bundled
    unet["headneck-ct-cpu-contoured-scratch"] = replace(
        copy.deepcopy(unet["headneck-ct-cpu-contoured-long"]), steps=9000, lr=2e-3, val_every=900
    )
    for named, loss in ((v2m, V2M_LOSS_V2), (p2m, P2M_LOSS_V2), (unet, None)):
        for name in ("cpu", "gpu"):
            v2 = named[f"{name}-v2"] = copy.deepcopy(named[name])
            if loss is not None:
                v2.loss = copy.deepcopy(loss)
            v2.bf16_autocast = v2.channels_last = True
    for named in (v2m, p2m):
        named["cpu-v2-frozen"] = replace(copy.deepcopy(named["cpu-v2"]), freeze_unet=True)
    # the bundled Voxel2Mesh's decoder (--init-from voxel2mesh-hippocampus) grown by one refinement stage on
    # the finest level (fresh; the other stages start from the model), fine-tuned on its frozen U-Net
    v2m["cpu-v2-refine"] = replace(
        copy.deepcopy(v2m["cpu-v2-frozen"]), model={**v2m["cpu-v2-frozen"].model, "refine_stages": 1}, steps=2400
    )
    # the same fine-tuning of the bundled Voxel2Mesh's decoder (--init-from voxel2mesh-hippocampus) with a third
    # of the regularisers (its meshes are 2.7 % smaller than the labels on validation; docs/mesh-losses.md)
    v2m["cpu-v2-frozen-lightreg"] = replace(
        copy.deepcopy(v2m["cpu-v2-frozen"]), loss=replace(V2M_LOSS_V2, normal=0.1, laplacian=0.1), steps=2400
    )
    # the same fine-tuning with the rasterised-voxel margin term (training.losses.voxel_margin_loss) at the
    # weight whose oracle reaches the highest IoU (docs/mesh-losses.md)
    v2m["cpu-v2-frozen-raster"] = replace(
        copy.deepcopy(v2m["cpu-v2-frozen"]), loss=replace(V2M_LOSS_V2, raster=3.0), steps=2400
    )
    # U-Net and decoder trained together (--init-from voxel2mesh-hippocampus) with the raster term, so the image
    # features can serve the mesh: the frozen-U-Net fine-tunings all stopped at the bundled model's IoU
    v2m["cpu-v2-raster"] = replace(copy.deepcopy(v2m["cpu-v2"]), loss=replace(V2M_LOSS_V2, raster=3.0), steps=6000)
    # a second such cycle at half the peak rate (--init-from the model the first one bundled): the first one's
    # validation mesh Dice fell from 0.900 to 0.82 at its 1e-3 peak and peaked (0.904) as the rate fell to 6e-4
    v2m["cpu-v2-raster-half-rate"] = replace(copy.deepcopy(v2m["cpu-v2-raster"]), lr=v2m["cpu-v2-raster"].lr / 2)
    # the bundled decoder (--init-from voxel2mesh-hippocampus) grown by the head-probability inputs
    # (Voxel2MeshConfig.head_probabilities, fresh and starting at zero), fine-tuned on its frozen U-Net with the
    # raster term: the decoder placed the surface 0.005 Dice short of its own head's voxels. Run (session 26): validation
    # IoU 0.827 -> 0.829, its own head's marching cubes 0.836 (docs/mesh-losses.md); not bundled
    v2m["cpu-v2-frozen-raster-head"] = replace(
        copy.deepcopy(v2m["cpu-v2-frozen-raster"]),
        model={**v2m["cpu-v2-frozen-raster"].model, "head_probabilities": True},
    )
    # the same inputs with the U-Net and decoder trained together (--init-from voxel2mesh-hippocampus), at the half
    # rate of the second joint cycle, for as many steps as the frozen fine-tuning. Run (session 26): 0.828; not bundled
    v2m["cpu-v2-raster-head"] = replace(
        copy.deepcopy(v2m["cpu-v2-raster-half-rate"]),
        model={**v2m["cpu-v2-raster"].model, "head_probabilities": True},
        steps=2400,
    )
    # a decoder twice as wide (the gpu config's hidden 128), fresh, on the frozen U-Net of --init-from unet-hippocampus:
    # the bundled decoder underfits its training set (training IoU 0.827, its head's marching cubes 0.837) while it
    # can fit one case alone to 0.875 (docs/mesh-losses.md). Run (sessions 26-28, to its end): its meshes fold (14-23 %
    # of the network's faces) and validation IoU ended at 0.814-0.817 against the bundled decoder's 0.827: not bundled
    v2m["cpu-v2-frozen-raster-wide"] = replace(
        copy.deepcopy(v2m["cpu-v2-frozen-raster"]),
        model={**v2m["cpu-v2-frozen-raster"].model, "hidden": 128},
        steps=12000,
    )
    # a variant (not the paper's template), as the head-and-neck decoders have it: a fresh decoder on the frozen U-Net
    # of --init-from unet-hippocampus starts from that U-Net's own surface (the mesh U-Net + MC returns, validation IoU
    # 0.835) and moves it through three stages without unpooling; its moves start near zero, so it starts as U-Net + MC
    # and learns corrections to it. A quarter of the template decoders' peak rate (the wide decoder folded at 1e-3).
    # Run (session 28, stopped at step 1,153): best validation IoU 0.835 = U-Net + MC's (step 300), then the Dice fell as
    # the moves grew (docs/mesh-losses.md); not bundled
    v2m["cpu-v2-frozen-raster-surface"] = replace(
        copy.deepcopy(v2m["cpu-v2-frozen-raster"]),
        model={**v2m["cpu-v2-frozen-raster"].model, "start": "unet_surface", "unpooling": "none"},
        lr=v2m["cpu-v2-frozen-raster"].lr / 4,
    )
    # one mesh decoder per head-and-neck organ, each in a crop around its organ, on a trained
    # several-organ U-Net (--init-from unet-headneck-ct, kept frozen: it is also the localiser)
    organs = copy.deepcopy(HEADNECK_CT_ORGANS)
    v2m["headneck-ct-cpu-frozen"] = TrainConfig(
        "voxel2mesh",
        {**_v2m("lns", "adaptive", UNET_HEADNECK_CT, 64), **organ_decoders(organs, HEADNECK_CT_GRID)},
        grid=HEADNECK_CT_GRID,
        steps=8400,  # one organ per step: 1,200 steps (2,400 crops) per decoder
        batch_size=2,
        lr=v2m["cpu-v2"].lr,
        val_every=300,
        loss=copy.deepcopy(V2M_LOSS_V2),
        augment=copy.deepcopy(CT_AUGMENT),
        threads=1,
        organs=organs,
        partly_contoured=["spinal_cord", "esophagus"],
        freeze_unet=True,
        # float32: under bf16 autocast a step on these crops took 9-35x longer on this CPU (the frozen
        # U-Net's convolutions fell to a slow path: 13-51 s against 1.3-3.2 s per step of batch 2)
        bf16_autocast=False,
        channels_last=False,
    )
    # its decoders fine-tuned with the rasterised-voxel margin term (--init-from a headneck-ct-cpu-frozen model;
    # its U-Net stays frozen): 400 steps per organ
    v2m["headneck-ct-cpu-frozen-raster"] = replace(
        copy.deepcopy(v2m["headneck-ct-cpu-frozen"]), loss=replace(V2M_LOSS_V2, raster=3.0), steps=2800
    )
    # a variant (not the paper's template): each decoder starts from the frozen U-Net's own surface of its organ in
    # the crop and moves it through its three stages without unpooling, learning corrections to the U-Net's mesh
    # (the template decoders lost most where the ellipsoid is furthest from the organ: cord, oesophagus, mandible)
    v2m["headneck-ct-cpu-frozen-surface"] = replace(
        copy.deepcopy(v2m["headneck-ct-cpu-frozen"]),
        # context_margin: the U-Net reads 8 voxels around each crop (validation voxel Dice in the crops 0.698 -> 0.722;
        # 16 voxels 0.724)
        model={
            **v2m["headneck-ct-cpu-frozen"].model,
            "unpooling": "none",
            "start": "unet_surface",
            "context_margin": 8,
        },
        steps=4200,  # 600 steps (1,200 crops) per decoder
        lr=v2m["cpu-v2"].lr / 2,  # the decoders start at the U-Net's surface: smaller first moves
    )
    # the bundled voxel2mesh-headneck-ct's decoders (--init-from it, a new seed) trained for 8,400 more steps (1,200
    # per decoder, twice their 600), the frozen U-Net in bf16. On their own first 12 training crops the parotid
    # decoders end further from the label's surface than their start (Chamfer, voxels^2: left 1.18 -> 1.43, right
    # 1.10 -> 1.20; Testing/benchmarks/organ_decoder_fit.py), while 40 Adam steps on one such crop take the left
    # one below its start (0.97 -> 0.67, Dice 0.831 -> 0.855): they can fit a case, and have not learned to fit
    # the training set. Peak rate 1e-4, a fifth of theirs: one decoder trained alone at a constant 2e-4 gained on
    # validation crops (left parotid 0.735 -> 0.745 in 400 steps) or lost (brainstem 0.800 -> 0.754)
    v2m["headneck-ct-cpu-frozen-surface-long"] = replace(
        copy.deepcopy(v2m["headneck-ct-cpu-frozen-surface"]),
        steps=8400,
        lr=1e-4,
        bf16_autocast=True,
        channels_last=True,
    )
    # the same decoders trained on with the rasterised-voxel margin term (raster=3, docs/mesh-losses.md): the Chamfer
    # alone let the brainstem's decoder approach its target points while losing voxels (training Dice 0.776 -> 0.730
    # as its Chamfer fell 2.10 -> 1.93); the term counts the voxel centres a mesh puts on the wrong side. 400 steps
    # per decoder. Tried (session 23, 2.8 s per step): validation mesh Dice in the crops 0.716 / 0.719 / 0.715 at
    # steps 300 / 600 / 900 against 0.718 / 0.718 / 0.712 without the term; stopped (docs/headneck-ct-experiments.md)
    v2m["headneck-ct-cpu-frozen-surface-raster"] = replace(
        copy.deepcopy(v2m["headneck-ct-cpu-frozen-surface-long"]),
        loss=replace(v2m["headneck-ct-cpu-frozen-surface-long"].loss, raster=3.0),
        steps=2800,
    )
    # the bundled voxel2mesh-headneck-ct's decoders (--init-from it) taught the contoured extent, as the U-Net's sixth
    # training was: every case that contoured the spinal cord or the oesophagus teaches its surface where the planner
    # ended it (the partly contoured configs leave out each case whose contour stops short of the scan's lower end, so
    # the oesophagus decoder learned from 18 training cases, now 46, and the spinal cord's from 104, now 145). The
    # long fine-tune's rate and precision; 600 steps per decoder. Tried (session 44, --time-limit 90 --fit-steps-to-time,
    # stopped at step 1,908 of 2,314): crop validation best at step 300 (0.721), then 0.711-0.718; step 300 on the 20
    # validation scans 0.750 against the bundled decoders' 0.749: not kept (docs/headneck-ct-experiments.md)
    v2m["headneck-ct-cpu-frozen-surface-contoured"] = replace(
        copy.deepcopy(v2m["headneck-ct-cpu-frozen-surface-long"]), steps=4200, partly_contoured=None
    )
    # those decoders (--init-from voxel2mesh-headneck-ct) trained from the starts segment gives them: each crop's
    # start is the mean probability of the carried U-Net and unet-headneck-ct-wide-gpu over the whole case (the
    # card's ensemble), not the carried U-Net's softmax of the crop alone. With these decoders segment lost 0.010 on
    # the 20 validation scans against their unmoved starts (0.749 against 0.759, which is U-Net + MC's; the
    # oesophagus 0.564 against 0.600, HD95 median 21.5 against 8.5 mm): they learned corrections of a start they
    # never get. The contoured extent, as the config above. Bundled (session 45, --time-limit 60 --fit-steps-to-time,
    # stopped by hand after step 900): crop validation 0.741 / 0.736 / 0.735 at steps 300 / 600 / 900 against 0.736
    # for the bundled decoders and 0.745 for their unmoved starts; step 300 on the 20 validation scans 0.752 against
    # 0.749 (test 0.738 against 0.739; docs/headneck-ct-experiments.md)
    v2m["headneck-ct-cpu-frozen-surface-scan-starts"] = replace(
        copy.deepcopy(v2m["headneck-ct-cpu-frozen-surface-contoured"]), scan_starts=["unet-headneck-ct-wide-gpu"]
    )
    return {"voxel2mesh": v2m, "pixel2mesh3d": p2m, "unet": unet}
