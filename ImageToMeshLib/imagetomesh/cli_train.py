"""``imagetomesh train KIND``: one sub-command per training task, built from the task registry.

Every kind takes ``--data --out --config --device --seed --steps`` and the options its
:class:`~imagetomesh.training.tasks.TaskEntry` lists; nothing here is specific to a kind.
"""
from __future__ import annotations

import sys
from pathlib import Path

from imagetomesh.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def add_train_command(subparsers) -> None:
    """Register ``train`` with one sub-command per kind of :data:`~imagetomesh.training.tasks.TASKS`."""
    from imagetomesh.training.tasks import TASKS

    train = subparsers.add_parser("train", help="train a model (image-to-mesh models on an MSD folder, or a DALS prior)",
                                  description="Train a model. Resumable: run the same command again to continue.")
    kinds = train.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    for kind, entry in TASKS.items():
        p = kinds.add_parser(kind, help=entry.help)
        p.add_argument("--data", required=True, type=Path, help=entry.data)
        p.add_argument("--out", required=True, type=Path, help="run folder: split, config, log, checkpoints, models")
        p.add_argument("--config", default=entry.default_config, help=entry.configs)
        p.add_argument("--device", default="cpu", choices=DEVICES)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--steps", type=int, default=None,
                       help="override the config's number of steps" + (" (and run them all: no time limit)"
                                                                       if entry.steps_without_time_limit else ""))
        for option in entry.options:
            p.add_argument(option.flag, dest=option.dest, type=option.type, default=None, help=option.help,
                           choices=option.choices, required=option.required)
        p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    """Train (or resume) the ``args.kind`` model described by the parsed arguments."""
    from imagetomesh.training.engine import train
    from imagetomesh.training.tasks import TASKS, get_config
    from imagetomesh.zoo import resolve_device

    entry = TASKS[args.kind]
    if not Path(args.data).is_dir():
        raise InputError(f"--data {args.data} is not a folder; give the {entry.data}")
    device = resolve_device(args.device)
    name = args.config or ("gpu" if device.type == "cuda" else "cpu")
    try:
        config = get_config(args.kind, name)
    except ValueError as err:
        raise InputError(str(err)) from None
    options: dict = {}
    for option in entry.options:
        option.apply(getattr(args, option.dest), config, options)
    if args.steps:
        config.steps = args.steps
        if entry.steps_without_time_limit:
            config.time_limit_s = None
    best = train(config, args.data, args.out, device=device.type, seed=args.seed, config_name=name,
                 log=lambda m: print(m, file=sys.stderr, flush=True), **options)
    print(f"{entry.result_label}: {best}")
    return 0
