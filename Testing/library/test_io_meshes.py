"""Mesh I/O: every format both spaces, Slicer's space markers byte for byte, and bad input."""

import struct

import numpy as np
import pytest
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
from vtkmodules.vtkFiltersSources import vtkSphereSource
from vtkmodules.vtkImagingCore import vtkRTAnalyticSource
from vtkmodules.vtkIOGeometry import vtkSTLWriter
from vtkmodules.vtkIOLegacy import vtkDataSetWriter
from vtkmodules.vtkIOXML import vtkXMLPolyDataReader, vtkXMLPolyDataWriter

from imagetomesh.core import Mesh
from imagetomesh.errors import InputError
from imagetomesh.io import MESH_SUFFIXES, mesh_to_polydata, polydata_to_mesh, read_mesh, read_mesh_vertices, write_mesh
from imagetomesh.io import meshes as meshes_module


@pytest.fixture(scope="module")
def sphere() -> Mesh:
    """A closed, outward-facing sphere away from the origin (so LPS and RAS differ)."""
    source = vtkSphereSource()
    source.SetThetaResolution(12)
    source.SetPhiResolution(8)
    source.SetRadius(10.0)
    source.SetCenter(30.0, -45.5, 12.25)
    source.Update()
    mesh = polydata_to_mesh(source.GetOutput())
    assert mesh.signed_volume() > 0
    return mesh


def _canonical_triangles(mesh: Mesh) -> np.ndarray:
    """Triangles as sorted rows of 9 coordinates, each rotated (winding kept) to start at its min vertex."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)  # (F, 3, 3)
    flat = tri.reshape(-1, 3)
    rank = np.empty(len(flat), np.int64)
    rank[np.lexsort(flat.T[::-1])] = np.arange(len(flat))
    first = rank.reshape(-1, 3).argmin(axis=1)
    order = (first[:, None] + np.arange(3)) % 3
    rolled = tri[np.arange(len(tri))[:, None], order].reshape(len(tri), 9)
    return rolled[np.lexsort(rolled.T[::-1])]


def _assert_same_surface(a: Mesh, b: Mesh, atol=1e-4):
    assert a.num_faces == b.num_faces
    np.testing.assert_allclose(_canonical_triangles(a), _canonical_triangles(b), atol=atol)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# --- polydata helpers ------------------------------------------------------------------------
def test_polydata_round_trip_exact(sphere):
    back = polydata_to_mesh(mesh_to_polydata(sphere))
    np.testing.assert_array_equal(back.vertices, sphere.vertices)
    np.testing.assert_array_equal(back.faces, sphere.faces)
    assert back.vertices.dtype == np.float32 and back.faces.dtype == np.int64


def test_polydata_to_mesh_triangulates_and_drops_lines():
    points = vtkPoints()
    for p in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (5, 5, 5)]:
        points.InsertNextPoint(p)
    polys = vtkCellArray()
    polys.InsertNextCell(4, [0, 1, 2, 3])  # a counter-clockwise quad seen from +z
    lines = vtkCellArray()
    lines.InsertNextCell(2, [0, 4])
    verts = vtkCellArray()
    verts.InsertNextCell(1, [4])
    polydata = vtkPolyData()
    polydata.SetPoints(points)
    polydata.SetPolys(polys)
    polydata.SetLines(lines)
    polydata.SetVerts(verts)
    mesh = polydata_to_mesh(polydata)
    assert mesh.num_faces == 2 and mesh.num_vertices == 5
    v = mesh.vertices.astype(np.float64)
    normals = np.cross(v[mesh.faces[:, 1]] - v[mesh.faces[:, 0]], v[mesh.faces[:, 2]] - v[mesh.faces[:, 0]])
    assert np.all(normals[:, 2] > 0)
    assert polydata_to_mesh(vtkPolyData()).num_faces == 0


# --- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["LPS", "RAS"])
@pytest.mark.parametrize("suffix", MESH_SUFFIXES)
def test_round_trip_every_format(tmp_path, sphere, suffix, space):
    path = write_mesh(sphere, tmp_path / f"mesh{suffix}", coordinate_system=space)
    assert _listing(tmp_path) == [f"mesh{suffix}"]
    back = read_mesh(path)
    if suffix == ".stl":  # STL stores triangle soup; the reader merges points in its own order
        _assert_same_surface(back, sphere)
    else:
        np.testing.assert_allclose(back.vertices, sphere.vertices, atol=1e-4)
        np.testing.assert_array_equal(back.faces, sphere.faces)
    assert back.signed_volume() == pytest.approx(sphere.signed_volume(), rel=1e-4)


@pytest.mark.parametrize("space", ["LPS", "RAS"])
def test_stl_header_bytes_exact(tmp_path, sphere, space):
    path = write_mesh(sphere, tmp_path / "m.stl", coordinate_system=space)
    data = path.read_bytes()
    header = f"3D Slicer output. SPACE={space}".encode("ascii")
    assert data[:80] == header + b"\0" * (80 - len(header))
    (count,) = struct.unpack("<I", data[80:84])
    assert count == sphere.num_faces and len(data) == 84 + 50 * count


def test_ras_file_holds_ras_coordinates(tmp_path, sphere):
    path = write_mesh(sphere, tmp_path / "m.stl", coordinate_system="RAS")
    data = path.read_bytes()
    records = np.frombuffer(data[84:], dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    raw = records["v"].reshape(-1, 3)
    expected = sphere.vertices[sphere.faces].reshape(-1, 3) * np.array([-1, -1, 1], np.float32)
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    # read back: equals the LPS original
    _assert_same_surface(read_mesh(path), sphere, atol=1e-4)


def test_space_markers_in_other_formats(tmp_path, sphere):
    vtk_text = write_mesh(sphere, tmp_path / "m.vtk", "RAS").read_bytes()[:200]
    assert vtk_text.split(b"\n")[1] == b"3D Slicer output. SPACE=RAS"
    obj_text = write_mesh(sphere, tmp_path / "m.obj", "RAS").read_text(encoding="utf-8")
    assert obj_text.startswith("# 3D Slicer output. SPACE=RAS\n")
    ply_head = write_mesh(sphere, tmp_path / "m.ply", "RAS").read_bytes()[:300]
    assert b"\ncomment SPACE=RAS\n" in ply_head
    reader = vtkXMLPolyDataReader()
    reader.SetFileName(str(write_mesh(sphere, tmp_path / "m.vtp", "RAS")))
    reader.Update()
    assert reader.GetOutput().GetFieldData().GetAbstractArray("SPACE").GetValue(0) == "RAS"
    np.testing.assert_allclose(
        polydata_to_mesh(reader.GetOutput()).vertices, sphere.vertices * np.array([-1, -1, 1]), atol=1e-5
    )


def test_unmarked_files_use_the_given_space(tmp_path, sphere):
    writer = vtkSTLWriter()  # VTK's own header, no SPACE marker
    writer.SetFileName(str(tmp_path / "plain.stl"))
    writer.SetFileTypeToBinary()
    writer.SetInputData(mesh_to_polydata(sphere))
    writer.Write()
    _assert_same_surface(read_mesh(tmp_path / "plain.stl"), sphere)
    flipped = Mesh(sphere.vertices * np.array([-1, -1, 1], np.float32), sphere.faces)
    _assert_same_surface(read_mesh(tmp_path / "plain.stl", coordinate_system="RAS"), flipped)

    xml = vtkXMLPolyDataWriter()  # a .vtp without the SPACE field
    xml.SetFileName(str(tmp_path / "plain.vtp"))
    xml.SetInputData(mesh_to_polydata(sphere))
    xml.Write()
    np.testing.assert_allclose(read_mesh(tmp_path / "plain.vtp", "ras").vertices, flipped.vertices, atol=1e-5)
    # a marker in the file wins over the argument
    write_mesh(sphere, tmp_path / "marked.ply", "LPS")
    np.testing.assert_allclose(read_mesh(tmp_path / "marked.ply", "RAS").vertices, sphere.vertices, atol=1e-5)


def test_read_mesh_vertices_accepts_point_clouds(tmp_path):
    points = vtkPoints()
    for p in [(1, 2, 3), (4, 5, 6)]:
        points.InsertNextPoint(p)
    cloud = vtkPolyData()
    cloud.SetPoints(points)
    writer = vtkXMLPolyDataWriter()
    writer.SetFileName(str(tmp_path / "cloud.vtp"))
    writer.SetInputData(cloud)
    writer.Write()
    np.testing.assert_allclose(read_mesh_vertices(tmp_path / "cloud.vtp"), [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(read_mesh_vertices(tmp_path / "cloud.vtp", "RAS"), [[-1, -2, 3], [-4, -5, 6]])
    with pytest.raises(InputError, match="has no triangles"):
        read_mesh(tmp_path / "cloud.vtp")


# --- bad input -------------------------------------------------------------------------------
def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_mesh(tmp_path / "nope.stl")
    (tmp_path / "dir.stl").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        read_mesh(tmp_path / "dir.stl")


@pytest.mark.parametrize("name", ["mesh.off", "mesh"])
def test_unknown_extension(tmp_path, sphere, name):
    (tmp_path / name).write_text("x")
    with pytest.raises(InputError, match=r"unknown extension.*\.stl, \.vtp, \.vtk, \.obj, \.ply"):
        read_mesh(tmp_path / name)
    with pytest.raises(InputError, match="unknown extension"):
        write_mesh(sphere, tmp_path / f"out_{name}")
    assert _listing(tmp_path) == [name]


@pytest.mark.parametrize("suffix", MESH_SUFFIXES)
def test_garbage_file(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"\x00\x01 garbage that is no mesh \xff" * 7)
    with pytest.raises(InputError, match="could not read|has no triangles"):
        read_mesh(path)


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".vtp", ".vtk"])
def test_truncated_file(tmp_path, sphere, suffix):
    data = write_mesh(sphere, tmp_path / f"full{suffix}").read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        read_mesh(cut)


def test_vtk_file_that_is_not_polydata(tmp_path):
    source = vtkRTAnalyticSource()
    source.SetWholeExtent(0, 2, 0, 2, 0, 2)
    writer = vtkDataSetWriter()
    writer.SetFileName(str(tmp_path / "volume.vtk"))
    writer.SetInputConnection(source.GetOutputPort())
    writer.Write()
    with pytest.raises(InputError, match="not a legacy VTK polydata"):
        read_mesh(tmp_path / "volume.vtk")


def test_write_errors_leave_nothing(tmp_path, sphere):
    empty = Mesh(np.zeros((3, 3), np.float32), np.zeros((0, 3), np.int64))
    with pytest.raises(InputError, match="no triangles"):
        write_mesh(empty, tmp_path / "empty.stl")
    with pytest.raises(InputError, match="unknown coordinate system"):
        write_mesh(sphere, tmp_path / "m.stl", coordinate_system="XYZ")
    with pytest.raises(InputError, match="does not exist; create it first"):
        write_mesh(sphere, tmp_path / "missing" / "m.stl")
    assert _listing(tmp_path) == []


def test_writer_failing_mid_way_keeps_old_file(tmp_path, sphere, monkeypatch):
    target = tmp_path / "m.stl"
    target.write_bytes(b"previous result")

    def write_then_fail(writer, target_path):
        writer.Write()  # a full temporary file exists now
        raise InputError(f"could not write {target_path}: disk full")

    monkeypatch.setattr(meshes_module, "_run_writer", write_then_fail)
    with pytest.raises(InputError, match="disk full"):
        write_mesh(sphere, target)
    assert target.read_bytes() == b"previous result"
    assert _listing(tmp_path) == ["m.stl"]


# --- files VTK's readers would crash on, and PLY/legacy-VTK variants ------------------------
def test_ply_variants(tmp_path):
    ascii_ply = (
        "ply\nformat ascii 1.0\ncomment SPACE=RAS\nelement vertex 5\n"
        "property float x\nproperty float y\nproperty float z\nproperty uchar red\n"
        "element face 2\nproperty list uchar int vertex_indices\nproperty float quality\nend_header\n"
        "0 0 0 1\n1 0 0 2\n1 1 0 3\n0 1 0 4\n0 0 1 5\n"
        "4 0 1 2 3 0.5\n3 0 1 4 0.25\n"
    )
    (tmp_path / "a.ply").write_text(ascii_ply)
    mesh = read_mesh(tmp_path / "a.ply")
    assert mesh.num_faces == 3 and mesh.num_vertices == 5  # the quad split in two
    np.testing.assert_allclose(mesh.vertices[1], [-1, 0, 0])  # RAS marker honoured

    # big-endian binary, mixed face sizes (walks record by record)
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], ">f4")
    header = (
        b"ply\nformat binary_big_endian 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
        b"property float z\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n"
    )
    faces = bytes([3]) + np.array([0, 1, 4], ">i4").tobytes() + bytes([4]) + np.array([0, 1, 2, 3], ">i4").tobytes()
    (tmp_path / "b.ply").write_bytes(header + vertices.tobytes() + faces)
    mesh = read_mesh(tmp_path / "b.ply")
    assert mesh.num_faces == 3
    np.testing.assert_array_equal(mesh.faces[0], [0, 1, 4])
    (tmp_path / "c.ply").write_bytes(header + vertices.tobytes() + faces[:-3])
    with pytest.raises(InputError, match="ends early"):
        read_mesh(tmp_path / "c.ply")
    bad = bytes([3]) + np.array([0, 1, 9], ">i4").tobytes() + bytes([3]) + np.array([0, 1, 2], ">i4").tobytes()
    (tmp_path / "d.ply").write_bytes(header + vertices.tobytes() + bad)
    with pytest.raises(InputError, match="outside"):
        read_mesh(tmp_path / "d.ply")


def test_corrupt_legacy_vtk_cells_raise_instead_of_crashing(tmp_path, sphere):
    data = bytearray(write_mesh(sphere, tmp_path / "m.vtk").read_bytes())
    start = data.index(b"POLYGONS")
    first_count = data.index(b"\n", start) + 1
    assert data[first_count : first_count + 4] == b"\0\0\0\x03"
    broken = bytearray(data)
    broken[first_count + 3] = 200  # a cell claiming 200 points
    (tmp_path / "count.vtk").write_bytes(bytes(broken))
    with pytest.raises(InputError, match="could not read"):
        read_mesh(tmp_path / "count.vtk")
    broken = bytearray(data)
    broken[first_count + 4 : first_count + 8] = b"\x00\x0f\x00\x00"  # point id far out of range
    (tmp_path / "id.vtk").write_bytes(bytes(broken))
    with pytest.raises(InputError, match="outside"):
        read_mesh(tmp_path / "id.vtk")


def test_legacy_vtk_51_ascii(tmp_path):
    text = (
        "# vtk DataFile Version 5.1\n3D Slicer output. SPACE=RAS\nASCII\nDATASET POLYDATA\n"
        "POINTS 4 float\n0 0 0 1 0 0 0 1 0 0 0 1\n"
        "POLYGONS 3 6\nOFFSETS vtktypeint64\n0 3 6\nCONNECTIVITY vtktypeint64\n0 1 2 0 1 3\n"
    )
    (tmp_path / "v51.vtk").write_text(text)
    mesh = read_mesh(tmp_path / "v51.vtk")
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 1, 3]])
    np.testing.assert_allclose(mesh.vertices[1], [-1, 0, 0])
    (tmp_path / "bad51.vtk").write_text(text.replace("0 1 2 0 1 3", "0 1 2 0 1 7"))
    with pytest.raises(InputError, match="outside"):
        read_mesh(tmp_path / "bad51.vtk")


def test_obj_with_out_of_range_face(tmp_path):
    (tmp_path / "bad.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 9\n")
    with pytest.raises(InputError):
        read_mesh(tmp_path / "bad.obj")


@pytest.mark.parametrize("suffix", [".ply", ".vtk"])
def test_random_damage_never_crashes(tmp_path, sphere, suffix):
    """Byte flips and cuts give a mesh or an InputError, never a crash (VTK's own readers segfault)."""
    data = write_mesh(sphere, tmp_path / f"m{suffix}").read_bytes()
    rng = np.random.default_rng(3)
    path = tmp_path / f"damaged{suffix}"
    for trial in range(60):
        damaged = bytearray(data)
        if trial % 3 == 0:
            damaged = damaged[: int(rng.integers(1, len(data)))]
        else:
            for index in rng.integers(0, len(data), size=3):
                damaged[index] = int(rng.integers(0, 256))
        path.write_bytes(bytes(damaged))
        try:
            read_mesh(path)
        except InputError:
            pass
