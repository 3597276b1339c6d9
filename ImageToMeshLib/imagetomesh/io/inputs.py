"""Every input file is checked in one place before anything reads it, and remembered.

:func:`check_input_path` gives one clear :class:`~imagetomesh.errors.InputError` for what would
otherwise be a traceback, a crash or a hang further down: a missing path, a folder where a file
is needed, a name that is not valid UTF-8 (SimpleITK aborts the process on one), a pipe or
device (``/dev/zero`` reads forever), a file that cannot be read. Each file it accepts is
remembered by device and inode, so the output layer (:func:`imagetomesh.io.atomic.check_output_path`)
can refuse to replace a file this process has read, whatever name or hard link reaches it.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from imagetomesh.errors import InputError

#: The largest coordinate (mm, any axis) an input may hold: 1 km. Meshes are float32 (24-bit
#: mantissa), so beyond this a millimetre is no longer representable and nearby points collapse.
MAX_COORDINATE_MM = 1e6
#: The voxel sizes (mm) an image may have: 10 nm .. 100 m.
SPACING_RANGE_MM = (1e-5, 1e5)
#: What an image input may be, for messages that refuse one.
IMAGE_HINT = "give a NIfTI, NRRD, MHA/MHD file, a folder holding a DICOM series or a zip archive of one"

_read_files: dict = {}  # (st_dev, st_ino) -> the path it was read as
_lock = threading.Lock()


def _identity(status: os.stat_result) -> tuple:
    return status.st_dev, status.st_ino


def check_input_path(path: str | os.PathLike, what: str, folder_ok: bool = False) -> Path:
    """The checked ``Path`` of an input ``what`` ("image", "mesh file", ...); remembers it as read.

    Raises:
        InputError: the name is not valid UTF-8, the path does not exist or cannot be reached,
            is a folder (unless ``folder_ok``), is not a regular file (pipe, device, socket), or
            cannot be read.
    """
    path = Path(path).expanduser()
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise InputError(f"{what} {shown}: the file name is not valid UTF-8; rename the file") from None
    try:
        status = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist; check the path") from None
    except PermissionError:
        raise InputError(
            f"{what} {path} cannot be reached (permission denied on a folder); fix the permissions"
        ) from None
    except OSError as err:
        raise InputError(f"{what} {path} cannot be read: {err.strerror or err}; check the path") from None
    if stat.S_ISDIR(status.st_mode):
        if not folder_ok:
            raise InputError(f"{what} path {path} is a folder; give a file")
    elif not stat.S_ISREG(status.st_mode):
        raise InputError(
            f"{what} {path} is not a regular file (a pipe, device or socket); save the data to a file first"
        )
    if not os.access(path, os.R_OK | (os.X_OK if stat.S_ISDIR(status.st_mode) else 0)):
        raise InputError(f"{what} {path} cannot be read (permission denied); fix its permissions")
    with _lock:
        _read_files[_identity(status)] = path
    return path


def check_coordinates(points, what: str) -> None:
    """Refuse LPS coordinates (mm) a float32 mesh cannot hold to the millimetre (``|x| > MAX_COORDINATE_MM``).

    Raises:
        InputError: naming ``what`` (e.g. ``"points file p.csv"``), the largest coordinate and the limit.
    """
    import numpy as np

    points = np.asarray(points, dtype=np.float64)
    if not points.size:
        return
    largest = float(np.max(np.abs(points)))
    if largest > MAX_COORDINATE_MM:
        raise InputError(
            f"{what} has coordinates up to {largest:.3g} mm, beyond the {MAX_COORDINATE_MM:.0e} mm a mesh "
            "can hold to the millimetre (float32); are they in millimetres? shift or rescale them"
        )


def read_input_owning(path: str | os.PathLike) -> Path | None:
    """The path under which this process read the file that ``path`` names (same device and inode), or None.

    An entry counts only while its recorded path still names that same file: an input deleted
    since may have passed its inode number on to an unrelated new file.
    """
    try:
        identity = _identity(Path(path).expanduser().stat())
    except OSError:
        return None
    with _lock:
        recorded = _read_files.get(identity)
        if recorded is None:
            return None
        try:
            still = _identity(recorded.stat()) == identity
        except OSError:
            still = False
        if not still:
            del _read_files[identity]
            return None
        return recorded


def forget_inputs() -> None:
    """Forget every file read so far (a long-running program may then write over them again)."""
    with _lock:
        _read_files.clear()
