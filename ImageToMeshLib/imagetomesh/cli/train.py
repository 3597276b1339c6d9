"""``imagetomesh train KIND``: train a model (image-to-mesh models on an MSD folder, or a DALS prior).

One sub-command per training task, built from the task registry
(:data:`~imagetomesh.training.tasks.TASKS`): every kind takes ``--data --out --config --device
--seed --steps`` and the options its :class:`~imagetomesh.training.tasks.TaskEntry` lists;
nothing here is specific to a kind. Resumable: running the same command again continues the run.
"""

from __future__ import annotations

from imagetomesh.cli.options import (
    DEVICES,
    add_threads,
    checked_type,
    non_negative_int,
    path_arg,
    positive_int,
    seed,
)
from imagetomesh.errors import InputError


def cmd_train(args) -> int:
    """Train (or resume) the ``args.kind`` model described by the parsed arguments."""
    from imagetomesh.devices import resolve_device
    from imagetomesh.io.atomic import check_output_folder
    from imagetomesh.io.inputs import check_input_path
    from imagetomesh.training.engine import train
    from imagetomesh.training.tasks import TASKS, get_config

    entry = TASKS[args.kind]
    data = check_input_path(args.data, "--data", folder_ok=True)
    if not data.is_dir():
        raise InputError(f"--data {args.data} is not a folder; give the {entry.data}")
    check_output_folder(args.out, "--out")
    device = resolve_device(args.device)
    name = args.config or ("gpu" if device.type == "cuda" else "cpu")
    config = get_config(args.kind, name)
    options: dict = {}
    for option in entry.options:
        option.apply(getattr(args, option.dest), config, options)
    if args.threads and hasattr(config, "threads"):
        config.threads = args.threads
    if args.batch_workers is not None:
        config.batch_workers = args.batch_workers
    if args.fit_steps_to_time:
        config.fit_steps_to_time = True
    if args.steps:
        config.steps = args.steps
        if entry.steps_without_time_limit and getattr(args, "time_limit", None) is None:
            config.time_limit_s = None
    best = train(
        config,
        args.data,
        args.out,
        device=device.type,
        seed=args.seed,
        config_name=name,
        log=lambda m: print(m, flush=True),  # progress on stdout: stderr holds only warnings and the one error line
        **options,
    )
    print(f"{entry.result_label}: {best}")
    return 0


def register(sub) -> None:
    """Add ``train`` and its kinds (one per :data:`~imagetomesh.training.tasks.TASKS` entry) to the main parser's ``sub``."""
    from imagetomesh.training.tasks import TASKS

    train = sub.add_parser(
        "train",
        help="train a model (image-to-mesh models on an MSD folder, or a DALS prior)",
        description="Train a model. Resumable: run the same command again to continue.",
    )
    kinds = train.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    for kind, entry in TASKS.items():
        p = kinds.add_parser(kind, help=entry.help)
        p.add_argument("--data", required=True, type=path_arg, help=entry.data)
        p.add_argument(
            "--out", required=True, type=path_arg, help="run folder: split, config, log, checkpoints, models"
        )
        p.add_argument(
            "--config", default=entry.default_config, help=f"{entry.configs}; an unknown name lists every one"
        )
        p.add_argument("--device", default="cpu", choices=DEVICES)
        p.add_argument("--seed", type=seed("--seed"), default=0)
        p.add_argument(
            "--steps",
            type=positive_int("--steps"),
            default=None,
            help="override the config's number of steps"
            + (" (and run them all: no time limit)" if entry.steps_without_time_limit else ""),
        )
        add_threads(p, "the config's (1 for the CPU configs of mesh-decoder models)")
        p.add_argument(
            "--batch-workers",
            type=non_negative_int("--batch-workers"),
            default=None,
            help="processes that draw the training batches ahead of the loop, for a GPU (default: the config's; "
            "0: drawn in the loop)",
        )
        p.add_argument(
            "--fit-steps-to-time",
            action="store_true",
            help="once the run has timed its steps (at its first validation), end it at the number of steps that "
            "fits in --time-limit, its learning-rate schedule with it (for a machine lent for a fixed time)",
        )
        for option in entry.options:
            p.add_argument(
                option.flag,
                dest=option.dest,
                type=checked_type(option.flag, option.type),
                default=None,
                help=option.help,
                choices=option.choices,
                required=option.required,
            )
        p.set_defaults(func=cmd_train)
