"""Vectorised conversion between :class:`~imagetomesh.core.Mesh` and ``vtkPolyData``.

Both directions copy whole arrays through ``vtkmodules.util.numpy_support``; there is no
Python loop over faces. Coordinates pass through unchanged (whatever space the mesh is in).
The one implementation: io, geometry and metrics all use it.
"""

from __future__ import annotations

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
from vtkmodules.vtkFiltersCore import vtkTriangleFilter

from imagetomesh.core.mesh import Mesh

__all__ = ["mesh_to_polydata", "polydata_to_mesh", "polydata_from_arrays"]


def mesh_to_polydata(mesh: Mesh) -> vtkPolyData:
    """A ``vtkPolyData`` holding ``mesh``'s vertices (float32 points) and triangles (deep copies)."""
    offsets = np.arange(0, 3 * mesh.num_faces + 1, 3, dtype=np.int64)
    return polydata_from_arrays(mesh.vertices, offsets, mesh.faces.reshape(-1))


def polydata_from_arrays(points: np.ndarray, offsets: np.ndarray, connectivity: np.ndarray) -> vtkPolyData:
    """A ``vtkPolyData`` of ``(N, 3)`` points (dtype kept) and polygons as offsets + connectivity."""
    vtk_points = vtkPoints()
    vtk_points.SetData(numpy_to_vtk(np.ascontiguousarray(points).reshape(-1, 3), deep=True))
    cells = vtkCellArray()
    cells.SetData(
        numpy_to_vtkIdTypeArray(np.ascontiguousarray(offsets, dtype=np.int64), deep=True),
        numpy_to_vtkIdTypeArray(np.ascontiguousarray(connectivity, dtype=np.int64), deep=True),
    )
    polydata = vtkPolyData()
    polydata.SetPoints(vtk_points)
    polydata.SetPolys(cells)
    return polydata


def polydata_to_mesh(polydata: vtkPolyData) -> Mesh:
    """A :class:`Mesh` from a ``vtkPolyData``: every point, polygons and strips as triangles.

    Polygons with more than three corners and triangle strips are split by
    ``vtkTriangleFilter``; vertex and line cells are dropped. All points are kept (also ones no
    triangle uses), so point indices match the polydata's. Vertices become float32 ``(N, 3)``,
    faces int64 ``(F, 3)``; a polydata without triangles gives ``F = 0``.

    Raises:
        ValueError: a polygon or strip refers to a point the polydata does not have.
    """
    if polydata is None or polydata.GetPoints() is None or polydata.GetNumberOfPoints() == 0:
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    n_points = polydata.GetNumberOfPoints()
    for cells in (polydata.GetPolys(), polydata.GetStrips()):
        if cells is not None and cells.GetNumberOfCells() > 0:
            ids = vtk_to_numpy(cells.GetConnectivityArray())
            if ids.size and (ids.min() < 0 or ids.max() >= n_points):
                raise ValueError(f"polydata cells refer to points outside 0..{n_points - 1}")
    polys = polydata.GetPolys()
    n_polys = polys.GetNumberOfCells() if polys is not None else 0
    needs_split = polydata.GetNumberOfStrips() > 0 or (n_polys > 0 and polys.IsHomogeneous() != 3)
    if needs_split:
        triangulate = vtkTriangleFilter()
        triangulate.SetInputData(polydata)
        triangulate.PassVertsOff()
        triangulate.PassLinesOff()
        triangulate.Update()
        polydata = triangulate.GetOutput()
        polys = polydata.GetPolys()
        n_polys = polys.GetNumberOfCells()
    vertices = np.array(vtk_to_numpy(polydata.GetPoints().GetData()), dtype=np.float32).reshape(-1, 3)
    if n_polys == 0:
        faces = np.zeros((0, 3), np.int64)
    else:
        faces = np.array(vtk_to_numpy(polys.GetConnectivityArray()), dtype=np.int64).reshape(-1, 3)
    return Mesh(vertices, faces)


# --- checks VTK's readers need (they crash on some corrupt files) ---------------------------
