"""imagetomesh: medical images to watertight surface meshes, with learned models and shape priors.

Physical space is LPS millimetres throughout; see :mod:`imagetomesh.core`.
"""

from imagetomesh.core import GridTransform, Mesh, Volume
from imagetomesh.errors import InputError

__version__ = "0.1.0"
__all__ = ["Volume", "Mesh", "GridTransform", "InputError", "__version__"]
