"""Make ``import imagetomesh`` find the library shipped with the module."""

import os
import sys
from typing import Optional


def addLibraryToPath() -> Optional[str]:
    """Put the folder holding the ``imagetomesh`` package on ``sys.path``; returns it (None if absent).

    Installed extension: ``<qt-scripted-modules>/ImageToMeshLib/imagetomesh`` beside
    ``<qt-scripted-modules>/ImageToMeshModule``; source tree: ``<repo>/ImageToMeshLib/imagetomesh``
    beside ``<repo>/ImageToMesh/ImageToMeshModule``.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    for levels in (1, 2):
        root = here
        for _ in range(levels):
            root = os.path.dirname(root)
        candidate = os.path.join(root, "ImageToMeshLib")
        if os.path.isfile(os.path.join(candidate, "imagetomesh", "__init__.py")):
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return candidate
    return None
