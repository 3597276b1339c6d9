"""Native libraries' console output kept off the user's terminal while they read a file.

ITK prints ``WARNING: In .../itkGDCMSeriesFileNames.cxx ...`` and MetaIO writes
``MetaImage: M_ReadElementsData: data not read completely`` straight to the process's stderr
(file descriptor 2, below Python), around the one-line error the library already raises for the
same problem. :func:`native_output_quiet` silences ITK's warning display and points descriptor 2
at a temporary file for the duration of a read, then restores it; what was caught is returned
(for a message that needs it) and otherwise dropped. :func:`short_itk_message` keeps the informative line of
an ITK exception, for the one-line errors raised instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["native_output_quiet", "short_itk_message"]

_lock = threading.RLock()


@contextlib.contextmanager
def native_output_quiet() -> Iterator[list[str]]:
    """While the block runs, ITK warnings are off and native writes to stderr are caught.

    Yields a list that holds, after the block, the caught text (one string, maybe empty).
    Only the main thread redirects descriptor 2 (another thread's output is never swallowed
    unseen); nested uses are harmless.
    """
    import SimpleITK as sitk

    caught: list[str] = []
    with _lock:
        previous = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        redirect = threading.current_thread() is threading.main_thread()
        saved = sink = None
        if redirect:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            try:
                saved = os.dup(2)
                sink = tempfile.TemporaryFile()
                os.dup2(sink.fileno(), 2)
            except OSError:
                if saved is not None:
                    os.close(saved)
                saved = None
        try:
            yield caught
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            if sink is not None:
                sink.seek(0)
                caught.append(sink.read().decode("utf-8", "replace"))
                sink.close()
            sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def short_itk_message(err: BaseException) -> str:
    """The informative line of a SimpleITK/ITK exception, on one line."""
    text = str(err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    pick = None
    for ln in lines:
        if "ERROR" in ln:
            pick = ln
            break
    if pick is None:
        pick = lines[-1] if lines else type(err).__name__
    pick = re.sub(r"^.*?ERROR:\s*", "", pick)
    pick = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", pick)
    if pick.endswith(":") and lines and lines[-1] not in pick:
        pick = f"{pick} {lines[-1]}"  # NRRD: the last "[nrrd] ..." line says what went wrong
    pick = pick.replace("[nrrd] ", "")
    return pick[:240]
