"""ImageToMeshLogic.exportModel: LPS and RAS files that read back aligned, the report, repair."""

from pathlib import Path

import numpy as np
import pytest
import slicer

from ImageToMeshModule import sceneAdapters

REPO = Path(__file__).resolve().parents[2]
HIPPO_LABEL = REPO / "Resources" / "SampleData" / "hippocampus" / "hippocampus_024_label.nii.gz"


@pytest.fixture(scope="module")
def mesh():
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.io.images import read_labelmap

    return labelmap_to_mesh(read_labelmap(HIPPO_LABEL))


@pytest.fixture(scope="module")
def in_process():
    from imagetomesh.backend import InProcessBackend

    backend = InProcessBackend()
    yield backend
    backend.close()


def add_model(itm, mesh, name="hippo model"):
    return itm.ImageToMeshLogic(backend=None).applyResult(mesh, sceneAdapters.ResultTarget("segment", name))


@pytest.mark.parametrize("suffix", [".stl", ".obj", ".ply"])
@pytest.mark.parametrize("space", ["LPS", "RAS"])
def test_export_reads_back_aligned(itm, scene, mesh, in_process, tmp_path, space, suffix):
    from imagetomesh.io.meshes import read_mesh

    model = add_model(itm, mesh)
    logic = itm.ImageToMeshLogic(backend=in_process)
    report = logic.exportModel(model, tmp_path / f"hippo{suffix}", space)
    assert report["watertight"] and report["manifold"] and report["self_intersecting_faces"] == 0
    assert report["coordinateSystem"] == space and not report["repaired"] and "watertight" in report["summary"]
    back = read_mesh(report["path"])  # the file says which space it is in; read_mesh returns LPS
    assert back.num_faces == mesh.num_faces
    assert np.abs(back.vertices - mesh.vertices).max() < 1e-3
    assert back.signed_volume() > 0  # still outward


def test_export_coordinates_in_the_file(itm, scene, mesh, in_process, tmp_path):
    """Raw file coordinates: LPS file = library mesh; RAS file = the model node's points."""
    import vtk

    model = add_model(itm, mesh)
    logic = itm.ImageToMeshLogic(backend=in_process)
    raw = {}
    for space in ("LPS", "RAS"):
        path = logic.exportModel(model, tmp_path / f"h-{space}.stl", space)["path"]
        reader = vtk.vtkSTLReader()
        reader.SetFileName(path)
        reader.Update()
        points = reader.GetOutput().GetPoints()
        raw[space] = np.array([points.GetPoint(i) for i in range(points.GetNumberOfPoints())])
        with open(path, "rb") as handle:
            assert handle.read(80).startswith(f"3D Slicer output. SPACE={space}".encode())
    model_ras = slicer.util.arrayFromModelPoints(model)
    lo_ras, hi_ras = model_ras.min(0), model_ras.max(0)
    np.testing.assert_allclose(raw["RAS"].min(0), lo_ras, atol=1e-3)
    np.testing.assert_allclose(raw["RAS"].max(0), hi_ras, atol=1e-3)
    np.testing.assert_allclose(raw["LPS"].min(0), mesh.vertices.min(0), atol=1e-3)


def test_export_applies_the_parent_transform(itm, scene, mesh, in_process, tmp_path):
    import vtk

    from imagetomesh.io.meshes import read_mesh

    model = add_model(itm, mesh)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 10.0)  # 10 mm towards R
    transform.SetMatrixTransformToParent(matrix)
    model.SetAndObserveTransformNodeID(transform.GetID())
    path = itm.ImageToMeshLogic(backend=in_process).exportModel(model, tmp_path / "moved.stl")["path"]
    back = read_mesh(path)
    np.testing.assert_allclose(back.vertices.mean(0), mesh.vertices.mean(0) + [-10.0, 0.0, 0.0], atol=1e-3)  # R = -L


def test_export_reports_problems_and_repairs_on_request(itm, scene, mesh, in_process, tmp_path):
    from imagetomesh.core.mesh import Mesh
    from imagetomesh.io.meshes import read_mesh

    holed = Mesh(mesh.vertices, mesh.faces[10:])  # ten triangles missing: not watertight
    model = add_model(itm, holed, "holed")
    logic = itm.ImageToMeshLogic(backend=in_process)
    report = logic.checkModel(model)
    assert not report["watertight"] and report["boundary_edges"] > 0 and "NOT watertight" in report["summary"]
    plain = logic.exportModel(model, tmp_path / "as-is.stl")
    assert not plain["watertight"] and not plain["repaired"]
    repaired = logic.exportModel(model, tmp_path / "repaired.stl", repair=True)
    assert repaired["repaired"] and repaired["watertight"]
    assert read_mesh(repaired["path"]).num_faces >= holed.num_faces
    # exporting never changes the model node
    assert model.GetPolyData().GetNumberOfCells() == holed.num_faces


@pytest.mark.slow
def test_export_through_the_worker_process(itm, scene, mesh, tmp_path, worker):
    """The mesh check runs in the real worker process (what the panel uses)."""
    from imagetomesh.io.meshes import read_mesh

    model = add_model(itm, mesh)
    logic = itm.ImageToMeshLogic(backend=worker)
    report = logic.exportModel(model, tmp_path / "worker.stl", "RAS")
    assert report["watertight"] and report["self_intersecting_faces"] == 0
    assert np.abs(read_mesh(report["path"]).vertices - mesh.vertices).max() < 1e-3
