"""The ``imagetomesh`` command: one parser (:func:`build_parser`) and one :func:`main`.

Each command's code lives in its own module beside the others (``mesh_from_label``,
``evaluate``, ``preview``, ``info``, ``segment``, ``models``, ``train``, ``fit``, ``demo``),
each with a ``register(sub)`` that adds its sub-parser; ``options`` and ``reporting`` hold
what several commands share.

Every sub-command reports bad input as one line on stderr and exit code 2, with no traceback
and no output file left behind (all writers are atomic).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import NoReturn

from imagetomesh import __version__
from imagetomesh.cli import demo, evaluate, fit, info, mesh_from_label, models, preview, segment, train
from imagetomesh.cli.models import _format_metrics
from imagetomesh.cli.reporting import PROG
from imagetomesh.errors import InputError

__all__ = ["PROG", "Parser", "build_parser", "main", "_format_metrics"]

#: The commands, in the order ``imagetomesh --help`` lists them.
COMMANDS = (mesh_from_label, evaluate, preview, info, segment, models, train, fit, demo)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors keep the CLI's promise: one line on stderr
    (``imagetomesh: error: COMMAND: problem (see 'imagetomesh COMMAND --help')``), exit code 2.
    Sub-parsers are of the same class (argparse makes them so)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog[len(PROG) :].strip()
        where = f"{command}: " if command else ""
        message = " ".join(message.split())
        if message.endswith("expected one argument"):  # ``--threshold -inf``: argparse took the value for an option
            message += "; a value that starts with '-' must be attached: --option=-value"
        self.exit(2, f"{PROG}: error: {where}{message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``imagetomesh`` parser with every command; each parsed command's ``func(args)`` runs it."""
    parser = Parser(prog=PROG, description="Medical images to watertight surface meshes (LPS millimetres).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"{PROG}: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Bad input (:class:`InputError`) is one line on stderr and exit code 2; Ctrl-C is 130 (a training
    run stopped by SIGTERM, which checkpoints first, 143).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        return args.func(args)
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except BrokenPipeError:  # the reader went away (``imagetomesh models --json | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # as a shell reports SIGPIPE
