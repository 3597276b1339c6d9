"""Where the extension's other parts lie beside the module, and making ``import imagetomesh`` find the library."""

import os
import sys
from typing import Optional


def extensionPath(*parts: str) -> Optional[str]:
    """The existing path ``parts`` in the extension: in the folder holding ``ImageToMeshModule`` (an
    installed extension: ``<qt-scripted-modules>/...``) or the one above it (the source tree: ``<repo>/...``).
    None when neither has it."""
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.path.dirname(here), os.path.dirname(os.path.dirname(here))):
        candidate = os.path.join(root, *parts)
        if os.path.exists(candidate):
            return candidate
    return None


def addLibraryToPath() -> Optional[str]:
    """Put the folder holding the ``imagetomesh`` package on ``sys.path``; returns it (None if absent).

    Installed extension: ``<qt-scripted-modules>/ImageToMeshLib/imagetomesh`` beside
    ``<qt-scripted-modules>/ImageToMeshModule``; source tree: ``<repo>/ImageToMeshLib/imagetomesh``
    beside ``<repo>/ImageToMesh/ImageToMeshModule``.
    """
    package = extensionPath("ImageToMeshLib", "imagetomesh", "__init__.py")
    if package is None:
        return None
    folder = os.path.dirname(os.path.dirname(package))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return folder
