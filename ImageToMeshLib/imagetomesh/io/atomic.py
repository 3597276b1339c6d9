"""Atomic file output: a writer either leaves a complete file or nothing at all.

Every writer in the library goes through :func:`atomic_write`: it writes into a temporary
file in the target's own folder (so the final ``os.replace`` is a same-filesystem rename)
whose name keeps the target's extension (VTK and SimpleITK choose the format by it) but is
hidden (``.name.tmp-XXXX.stl``: a user's ``*.stl`` glob never picks up a partial file), and
only renames it over the target once the write has finished without an exception. SIGTERM
(what ``timeout``, systemd, containers and Slicer's Cancel send) is handled like Ctrl-C while a
file is being written: the partial file is removed before the process ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from imagetomesh.errors import InputError
from imagetomesh.io.inputs import read_input_owning

#: Extensions that only mean "compressed"; the one before them names the format.
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".zip"}


def format_suffix(path: str | os.PathLike) -> str:
    """The lower-case extension that names a file's format: ``.stl``, ``.nii.gz``, ``.json``."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if not suffixes:
        return ""
    if suffixes[-1] in _COMPRESSION_SUFFIXES and len(suffixes) >= 2:
        return suffixes[-2] + suffixes[-1]
    return suffixes[-1]


def check_output_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be written; return it as a :class:`Path`.

    Raises:
        InputError: the parent folder does not exist, is not a folder or is not writable,
            ``path`` itself is an existing folder, or it is a file this process has read
            (by any name or hard link: see :mod:`imagetomesh.io.inputs`).
    """
    target = Path(path).expanduser()
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InputError(
            f"output path {target} is a folder; give a file name such as {target / 'output'}{format_suffix(target) or '.ext'}"
        )
    if not parent.exists():
        raise InputError(f"output folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} is not a folder; choose an output path inside an existing folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output folder {parent} is not writable; choose another folder or fix its permissions")
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"output file {target} exists and is read-only; remove it or choose another name")
    source = read_input_owning(target)
    if source is not None:
        raise InputError(f"output {target} is an input of this command ({source}); choose another output name")
    return target


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check that ``path`` can be (or already is) a folder this command writes into; return it.

    Call it before anything is written: an existing folder is fine (a resumed run), a missing
    one is created later by the caller.

    Raises:
        InputError: ``path`` is an existing file, its parent does not exist or is not a writable
            folder, it is not writable, or it is a folder this process reads as an input.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise InputError(f"{what} {target} is a file, not a folder; choose a folder name")
    parent = target.parent if str(target.parent) else Path(".")
    if not target.exists():
        if not parent.exists():
            raise InputError(f"{what} {target}: its parent folder {parent} does not exist; create it first")
        if not parent.is_dir():
            raise InputError(f"{what} {target}: {parent} is a file, not a folder; choose a path inside a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{what} {target} cannot be created: {parent} is not writable")
    elif not os.access(target, os.W_OK | os.X_OK):
        raise InputError(f"{what} {target} is not writable; choose another folder or fix its permissions")
    source = read_input_owning(target)
    if source is not None:
        raise InputError(f"{what} {target} is an input of this command ({source}); choose another folder")
    return target


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class Terminated(SystemExit):
    """SIGTERM arrived while a file was being written (exit status 128 + 15, as the shell reports it)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextlib.contextmanager
def sigterm_raises(exception: type[BaseException] = Terminated, replace: bool = False) -> Iterator[None]:
    """While the block runs, SIGTERM raises ``exception()`` (main thread only; others keep theirs).

    A handler the program already installed is left to handle it unless ``replace`` (a training loop,
    which turns SIGTERM into its checkpointing stop, replaces the default; a file written inside that
    loop then raises the loop's exception, and is cleaned up all the same)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not replace and previous not in (signal.SIG_DFL, None):  # the program handles SIGTERM itself
        yield
        return

    def raise_exception(signum, frame) -> None:
        raise exception()

    signal.signal(signal.SIGTERM, raise_exception)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding a temporary path to write instead of ``path``.

    The temporary file lies next to ``path`` and keeps its format extension
    (``case.nii.gz`` -> ``.case.tmp-XXXX.nii.gz``). When the block ends normally it is renamed
    over ``path`` with :func:`os.replace`; when the block raises (SIGTERM included), or leaves
    an empty file, it is removed and ``path`` is left untouched.

    Raises:
        InputError: from :func:`check_output_path`.
        OSError: the block ended without writing anything to the temporary path.
    """
    target = check_output_path(path)
    suffix = format_suffix(target)
    name = target.name
    stem = name[: len(name) - len(suffix)] if suffix and name.lower().endswith(suffix) else name
    with sigterm_raises():
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=target.parent)
        except OSError as err:
            if err.errno != errno.ENAMETOOLONG:
                raise
            raise InputError(
                f"output file name {target.name} is too long for its file system "
                f"(a temporary name is {len(name) + 13} characters); choose a shorter name"
            ) from None
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise OSError(f"writing {target} produced no data")
            if target.exists():
                mode = target.stat().st_mode & 0o7777
            else:
                mode = _default_file_mode()
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
