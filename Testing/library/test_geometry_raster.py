"""rasterize_mesh against a slow ray-parity reference; VTK <-> Mesh conversion round trips."""

import numpy as np
import pytest
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
from vtkmodules.vtkFiltersSources import vtkSphereSource

from imagetomesh.core import Mesh, Volume
from imagetomesh.core.volume import transform_points
from imagetomesh.errors import InputError
from imagetomesh.geometry.isosurface import labelmap_to_mesh
from imagetomesh.geometry.raster import rasterize_mesh
from imagetomesh.geometry.vtk_convert import mesh_to_polydata, polydata_to_mesh

# axes permuted and flipped; the first is a proper rotation, the second a reflection
ROTATION = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
REFLECTION = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def sphere_mesh(radius, centre, resolution=24) -> Mesh:
    source = vtkSphereSource()
    source.SetRadius(radius)
    source.SetCenter(*centre)
    source.SetThetaResolution(resolution)
    source.SetPhiResolution(resolution)
    source.Update()
    return polydata_to_mesh(source.GetOutput())


def torus_mesh(major, minor, centre, n_u=40, n_v=16) -> Mesh:
    """A closed torus around the z axis (genus 1: not convex, has a hole)."""
    u = np.linspace(0, 2 * np.pi, n_u, endpoint=False)
    v = np.linspace(0, 2 * np.pi, n_v, endpoint=False)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    x = (major + minor * np.cos(vv)) * np.cos(uu)
    y = (major + minor * np.cos(vv)) * np.sin(uu)
    z = minor * np.sin(vv)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3) + np.asarray(centre)
    a = np.arange(n_u)[:, None] * n_v + np.arange(n_v)[None, :]
    b = ((np.arange(n_u)[:, None] + 1) % n_u) * n_v + np.arange(n_v)[None, :]
    c = ((np.arange(n_u)[:, None] + 1) % n_u) * n_v + (np.arange(n_v)[None, :] + 1) % n_v
    d = np.arange(n_u)[:, None] * n_v + (np.arange(n_v)[None, :] + 1) % n_v
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return Mesh(vertices, faces)


def ray_parity_inside(mesh: Mesh, points: np.ndarray) -> np.ndarray:
    """Slow reference: count crossings of a generic ray (Moller-Trumbore) per point."""
    direction = np.array([0.5773, 0.5917, 0.5628])
    direction /= np.linalg.norm(direction)
    tri = mesh.vertices.astype(np.float64)[mesh.faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    h = np.cross(direction, e2)
    a = np.einsum("fi,fi->f", e1, h)
    ok = np.abs(a) > 1e-12
    e1, e2, h, a, v0 = e1[ok], e2[ok], h[ok], a[ok], tri[ok, 0]
    inside = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), 256):
        p = points[start : start + 256]
        s = p[:, None, :] - v0[None]
        u = np.einsum("pfi,fi->pf", s, h) / a
        q = np.cross(s, e1[None])
        v = np.einsum("i,pfi->pf", direction, q) / a
        t = np.einsum("fi,pfi->pf", e2, q) / a
        hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        inside[start : start + 256] = hit.sum(1) % 2 == 1
    return inside


def voxel_centres(volume: Volume) -> np.ndarray:
    """LPS centres of all voxels in array (C) order."""
    k, j, i = np.meshgrid(*(np.arange(s) for s in volume.shape), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(np.float64)
    return transform_points(volume.index_to_lps, ijk)


def grid(direction) -> Volume:
    array = np.zeros((18, 22, 20), np.uint8)
    return Volume(array, spacing=(1.1, 0.9, 1.3), origin=(3.0, -7.0, 11.0), direction=direction)


@pytest.mark.parametrize("method", ["scanline", "vtk"])
@pytest.mark.parametrize("direction", [ROTATION, REFLECTION], ids=["rotation", "reflection"])
@pytest.mark.parametrize("shape", ["sphere", "torus"])
def test_rasterize_matches_ray_parity(method, direction, shape):
    volume = grid(direction)
    centre = transform_points(volume.index_to_lps, np.array([[9.3, 10.7, 8.6]]))[0]
    mesh = sphere_mesh(7.3, centre) if shape == "sphere" else torus_mesh(6.5, 2.6, centre, 36, 14)
    fast = rasterize_mesh(mesh, volume, method=method)
    assert fast.dtype == np.uint8 and fast.shape == volume.shape
    slow = ray_parity_inside(mesh, voxel_centres(volume)).reshape(volume.shape)
    assert slow.sum() > 300  # the shape is well inside the grid
    agreement = np.mean(fast.astype(bool) == slow)
    assert agreement >= 0.995
    # disagreements may only sit on the surface itself (none expected for these shapes)
    assert np.sum(fast.astype(bool) != slow) == 0
    # orientation does not matter
    np.testing.assert_array_equal(rasterize_mesh(mesh.flipped(), volume, method=method), fast)


@pytest.mark.parametrize("direction", [ROTATION, REFLECTION], ids=["rotation", "reflection"])
def test_marching_cubes_surface_rasterises_back_exactly(direction):
    # vertices of the unsmoothed surface sit on lattice lines: the tie-breaking must be exact
    rng = np.random.default_rng(3)
    mask = np.zeros((14, 16, 15), np.uint8)
    mask[3:11, 4:12, 3:12] = 1
    mask[5:8, 2:14, 6:9] = 1  # an arm to make it non-convex
    mask[6:9, 6:10, 5:10] = 0  # and a cavity
    mask[rng.random(mask.shape) < 0.03] = 1  # scattered single voxels touching edges/corners
    volume = Volume(mask, spacing=(0.8, 1.0, 1.7), origin=(10.0, 0.0, -5.0), direction=direction)
    mesh = labelmap_to_mesh(volume, smoothing=0.0)
    for method in ("scanline", "vtk"):
        np.testing.assert_array_equal(rasterize_mesh(mesh, volume, method=method), mask)


def test_rasterize_outside_and_partly_outside():
    volume = grid(np.eye(3))
    far = sphere_mesh(3.0, (500.0, 500.0, 500.0))
    assert rasterize_mesh(far, volume).sum() == 0
    corner = transform_points(volume.index_to_lps, np.array([[0.0, 0.0, 0.0]]))[0]
    clipped = sphere_mesh(5.0, corner, 32)
    fast = rasterize_mesh(clipped, volume)
    slow = ray_parity_inside(clipped, voxel_centres(volume)).reshape(volume.shape)
    np.testing.assert_array_equal(fast.astype(bool), slow)


def test_rasterize_rejects_bad_input():
    with pytest.raises(InputError):
        rasterize_mesh(sphere_mesh(3.0, (0, 0, 0)), np.zeros((4, 4, 4)))
    with pytest.raises(InputError):
        rasterize_mesh(Mesh(np.zeros((3, 3)), np.zeros((0, 3))), grid(np.eye(3)))
    with pytest.raises(InputError):
        rasterize_mesh(sphere_mesh(3.0, (0, 0, 0)), grid(np.eye(3)), method="nearest")


def test_vtk_round_trip_and_triangulation():
    mesh = torus_mesh(5.0, 2.0, (1.0, 2.0, 3.0), 12, 8)
    polydata = mesh_to_polydata(mesh)
    assert polydata.GetNumberOfPoints() == mesh.num_vertices and polydata.GetNumberOfPolys() == mesh.num_faces
    back = polydata_to_mesh(polydata)
    np.testing.assert_array_equal(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)

    # a quad and a triangle: the quad is split, the triangle kept
    points = vtkPoints()
    for p in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (2, 0, 0)]:
        points.InsertNextPoint(*p)
    cells = vtkCellArray()
    cells.InsertNextCell(4)
    for i in (0, 1, 2, 3):
        cells.InsertCellPoint(i)
    cells.InsertNextCell(3)
    for i in (1, 4, 2):
        cells.InsertCellPoint(i)
    polydata = vtkPolyData()
    polydata.SetPoints(points)
    polydata.SetPolys(cells)
    mixed = polydata_to_mesh(polydata)
    assert mixed.num_faces == 3 and mixed.faces.dtype == np.int64
    assert mixed.area() == pytest.approx(1.5)
    empty = polydata_to_mesh(vtkPolyData())
    assert empty.num_vertices == 0 and empty.num_faces == 0
