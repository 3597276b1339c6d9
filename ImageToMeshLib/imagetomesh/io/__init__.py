"""File input and output: images (SimpleITK), meshes (VTK), Slicer markups and point lists.

Everything read comes back in LPS millimetres; every writer is atomic (complete file or none).
"""

from imagetomesh.io.atomic import atomic_write, check_output_path
from imagetomesh.io.images import read_image, read_labelmap, volume_from_sitk, volume_to_sitk, write_image
from imagetomesh.io.markups import Markup, read_markups, read_points, write_markups
from imagetomesh.io.meshes import (
    MESH_SUFFIXES,
    mesh_to_polydata,
    polydata_to_mesh,
    read_mesh,
    read_mesh_vertices,
    write_mesh,
)

__all__ = [
    "atomic_write",
    "check_output_path",
    "read_image",
    "read_labelmap",
    "write_image",
    "volume_to_sitk",
    "volume_from_sitk",
    "read_mesh",
    "read_mesh_vertices",
    "write_mesh",
    "mesh_to_polydata",
    "polydata_to_mesh",
    "MESH_SUFFIXES",
    "Markup",
    "read_markups",
    "write_markups",
    "read_points",
]
