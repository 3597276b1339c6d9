"""What several commands share on the command line: argument types that check numbers, ``-o``,
``--coordinate-system`` and the device choices."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "COORDINATE_SYSTEMS",
    "DEVICES",
    "checked_number",
    "fraction",
    "weight",
    "finite_weight",
    "positive_int",
    "positive_number",
    "non_negative_int",
    "seed",
    "path_arg",
    "checked_type",
    "add_output",
    "add_space",
]

COORDINATE_SYSTEMS = ("LPS", "RAS")
DEVICES = ("auto", "cpu", "cuda")


def checked_number(
    name: str, convert: Callable[[str], float], what: str, problem: Callable[[float, str], str | None] | None = None
) -> Callable[[str], float]:
    """An argparse ``type`` for option ``name``: ``convert(text)``, then ``problem(value, text)``.

    Messages: ``"<name> must be <what>, got <text!r>"`` when ``convert`` fails, and
    ``"<name> must be <problem>"`` when ``problem`` returns a text (the value is refused).
    """

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {text!r}") from None
        message = problem(value, text) if problem is not None else None
        if message:
            raise argparse.ArgumentTypeError(f"{name} must be {message}")
        return value

    return parse


def fraction(name: str, hi: float) -> Callable[[str], float]:
    """A number in ``[0, hi]``."""
    return checked_number(
        name, float, "a number", lambda value, text: None if 0.0 <= value <= hi else f"between 0 and {hi}, got {value}"
    )


def _non_negative(value: float, text: str) -> str | None:
    return None if value >= 0 else f">= 0, got {text}"


def weight(name: str) -> Callable[[str], float]:
    """A loss weight: a number >= 0, ``inf`` allowed."""
    return checked_number(name, float, "a number (or 'inf')", _non_negative)


def finite_weight(name: str) -> Callable[[str], float]:
    """A loss weight: a finite number >= 0."""
    return checked_number(
        name,
        float,
        "a number (or 'inf')",
        lambda value, text: (
            _non_negative(value, text) or (f"a finite number >= 0, got {text}" if value == float("inf") else None)
        ),
    )


#: The largest count (iterations, steps, batch size) an option takes: more is a typo, not a plan.
MAX_COUNT = 10**9


def whole_number_from(name: str, low: int) -> Callable[[str], int]:
    """A whole number from ``low`` to :data:`MAX_COUNT`."""
    return checked_number(
        name,
        int,
        "a whole number",
        lambda value, text: None if low <= value <= MAX_COUNT else f"between {low} and {MAX_COUNT:.0e}, got {text}",
    )


def positive_int(name: str) -> Callable[[str], int]:
    """A whole number >= 1 (and at most :data:`MAX_COUNT`)."""
    return whole_number_from(name, 1)


def non_negative_int(name: str) -> Callable[[str], int]:
    """A whole number >= 0 (and at most :data:`MAX_COUNT`)."""
    return whole_number_from(name, 0)


def seed(name: str) -> Callable[[str], int]:
    """A random seed: a whole number in ``[0, 2**63)`` (what numpy and torch both accept)."""
    return checked_number(
        name,
        int,
        "a whole number",
        lambda value, text: None if 0 <= value < 2**63 else f"between 0 and 2**63 - 1, got {text}",
    )


def positive_number(name: str) -> Callable[[str], float]:
    """A finite number > 0 (a distance, a time)."""
    return checked_number(
        name,
        float,
        "a number",
        lambda value, text: None if 0 < value < float("inf") else f"a finite number > 0, got {text}",
    )


def path_arg(text: str) -> Path:
    """A path argument; an empty one (``""``, which ``Path`` would turn into the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path was given; give a file or folder name")
    return Path(text)


def checked_type(flag: str, kind: Callable[[str], object]) -> Callable[[str], object]:
    """The checked option type for a plain ``kind`` a library table declares: ``float`` -> a finite
    number > 0, ``int`` -> a whole number >= 0, ``Path`` -> :func:`path_arg`; others unchanged."""
    if kind is float:
        return positive_number(flag)
    if kind is int:
        return non_negative_int(flag)
    if kind is Path:
        return path_arg
    return kind


def add_output(p: argparse.ArgumentParser, help_text: str) -> None:
    """``-o/--output`` (required), a path."""
    p.add_argument("-o", "--output", required=True, type=path_arg, help=help_text)


def add_space(p: argparse.ArgumentParser) -> None:
    """``--coordinate-system LPS|RAS`` of the written mesh."""
    p.add_argument(
        "--coordinate-system",
        choices=COORDINATE_SYSTEMS,
        default="LPS",
        type=str.upper,
        help="space of the written mesh; STL headers record it as 3D Slicer does (default LPS)",
    )


def add_threads(p: argparse.ArgumentParser, default_text: str) -> None:
    """``--threads N``: CPU threads of the command's work (:mod:`imagetomesh.threads`)."""
    p.add_argument(
        "--threads",
        type=positive_int("--threads"),
        default=None,
        help=f"CPU threads (default: ${{IMAGETOMESH_THREADS}}, else {default_text})",
    )
