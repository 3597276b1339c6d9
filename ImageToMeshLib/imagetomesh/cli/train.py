"""``imagetomesh train KIND``: train a model (image-to-mesh models on an MSD folder, or a DALS prior).

Resumable: running the same command again continues the run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imagetomesh.cli.options import DEVICES
from imagetomesh.errors import InputError


def cmd_train(args) -> int:
    from imagetomesh.training.configs import get_config
    from imagetomesh.training.trainer import train
    from imagetomesh.zoo import resolve_device

    device = resolve_device(args.device)
    try:
        config = get_config(args.kind, args.config)
    except ValueError as err:
        raise InputError(str(err)) from None
    if args.steps:
        config.steps = args.steps
    extra = {}
    if args.kind == "nudf":
        from imagetomesh.training.nudf_trainer import train_nudf as train

        if args.init_from:
            raise InputError("NUDF trains from scratch (its encoder is not a U-Net); drop --init-from")
        if args.time_limit is not None:
            config.time_limit_s = 60.0 * args.time_limit
    elif args.kind == "implicitmeshnet":
        from imagetomesh.training.implicitmeshnet_trainer import train_implicitmeshnet as train

        if args.time_limit is not None:
            config.time_limit_s = 60.0 * args.time_limit
        if args.pretrain_steps is not None:
            config.pretrain_steps = args.pretrain_steps
        if args.pretrain_time_limit is not None:
            config.pretrain_time_limit_s = 60.0 * args.pretrain_time_limit
        extra = {"sdf_from": args.sdf_from}
    best = train(config, args.data, args.out, device=device.type, seed=args.seed, init_from=args.init_from,
                 config_name=args.config, log=lambda m: print(m, file=sys.stderr), **extra)
    print(f"best model: {best}")
    return 0


def cmd_train_dals(args) -> int:
    """Train a DALS prior. Needs ``args.shapes``, ``args.data``, ``args.out``, ``args.config``,
    ``args.device``, ``args.seed`` and optionally ``args.steps``."""
    from imagetomesh.training.dals_trainer import get_dals_config, train_dals
    from imagetomesh.zoo import resolve_device

    shapes = getattr(args, "shapes", None)
    if shapes is None:
        raise InputError("train dals needs --shapes hippocampus or --shapes kidney")
    data = Path(args.data)
    if not data.is_dir():
        raise InputError(f"--data {data} is not a folder; give the hippocampus (MSD) or kits19-masks folder")
    device = resolve_device(getattr(args, "device", "cpu") or "cpu")
    config = get_dals_config(shapes, getattr(args, "config", None) or ("gpu" if device.type == "cuda" else "cpu"))
    if getattr(args, "steps", None):
        config.steps = int(args.steps)
        config.time_limit_s = None  # an explicit number of steps is run in full (reproductions)
    folder = train_dals(config, data, args.out, device=device.type, seed=int(getattr(args, "seed", 0) or 0),
                        config_name=getattr(args, "config", None) or "cpu",
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"DALS prior: {folder}")
    return 0


def add_train_dals_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``train dals``."""
    p.add_argument("--shapes", required=True, choices=("hippocampus", "kidney"), help="which organ's shapes to learn")
    p.add_argument("--data", required=True, type=Path, help="hippocampus MSD folder or kits19-masks folder")
    p.add_argument("--out", required=True, type=Path, help="run folder: config, log, checkpoint, latents, model/")
    p.add_argument("--config", default=None, choices=("cpu", "gpu"), help="named config (default: cpu, gpu on cuda)")
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the config's number of steps (and run them all: no time limit)")


def register(sub) -> None:
    """Add ``train`` and its kinds (``voxel2mesh``, ..., ``dals``) to the main parser's sub-parsers ``sub``."""
    train = sub.add_parser("train", help="train a model (image-to-mesh models on an MSD folder, or a DALS prior)",
                           description="Train a model. Resumable: run the same command again to continue.")
    train_sub = train.add_subparsers(dest="kind", metavar="KIND")
    train_sub.required = True
    for kind in ("voxel2mesh", "pixel2mesh3d", "unet", "nudf", "implicitmeshnet"):
        p = train_sub.add_parser(kind, help=f"train {kind} on a Medical Segmentation Decathlon folder")
        p.add_argument("--data", required=True, type=Path, help="MSD folder (dataset.json, imagesTr/, labelsTr/)")
        p.add_argument("--out", required=True, type=Path, help="run folder: split, config, log, checkpoints, models")
        p.add_argument("--config", default="cpu",
                       help="named config: cpu, gpu, a Voxel2Mesh ablation (ps-umu, hs-umu, lns-umu, lns-amu) "
                            "or ImplicitMeshNet's cpu-finetune")
        p.add_argument("--device", default="cpu", choices=DEVICES)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
        p.add_argument("--init-from", type=Path, default=None,
                       help="model folder that starts the run: all its weights if it is a model of this kind "
                            "(fine-tuning), else its U-Net's")
        if kind in ("nudf", "implicitmeshnet"):
            p.add_argument("--time-limit", type=float, default=None,
                           help="stop after this many minutes (checkpointed; default: the config's)")
        if kind == "implicitmeshnet":
            p.add_argument("--pretrain-steps", type=int, default=None,
                           help="steps of the first phase, pretraining the mesh-to-SDF network g_phi on random "
                                "deformed spheres (skipped once RUN/sdf_pretrained.safetensors exists; 0: none)")
            p.add_argument("--pretrain-time-limit", type=float, default=None,
                           help="minutes of pretraining at most (default: the config's)")
            p.add_argument("--sdf-from", type=Path, default=None,
                           help="start the mesh-to-SDF network g_phi from this file (a run's sdf_net.safetensors) "
                                "instead of pretraining it; used by --config cpu-finetune")
        p.set_defaults(func=cmd_train)
    p = train_sub.add_parser("dals", help="train a DALS shape prior (hippocampus labels or KiTS19 kidneys)")
    add_train_dals_arguments(p)
    p.set_defaults(func=cmd_train_dals)
