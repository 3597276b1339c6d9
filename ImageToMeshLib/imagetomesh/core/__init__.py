"""Core types and coordinate maps: :class:`Volume`, :class:`Mesh`, :class:`GridTransform`."""

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import (
    GridTransform,
    grid_to_index,
    index_to_grid,
    lps_to_ras,
    ras_to_lps,
)
from imagetomesh.core.volume import Volume

__all__ = ["Volume", "Mesh", "GridTransform", "index_to_grid", "grid_to_index", "lps_to_ras", "ras_to_lps"]
