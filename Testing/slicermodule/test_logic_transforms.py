"""Input volumes under parent transforms, on a real MRML scene.

A linear transform moves the volume's geometry. A non-linear one — 3D Slicer's DICOM module puts a grid
transform on every tilted or unevenly spaced CT it loads (acquisition-geometry regularisation, on by default),
and deformable registrations leave B-spline or grid transforms — is used as hardening it would make the volume,
by Slicer's own transform logic on a copy: the user's volume, transform and scene stay as they were.
"""

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ImageToMeshModule import sceneAdapters

SHEAR = 0.36  # mm along A per mm along S: a gantry tilt of 20 degrees


def field(ijk: np.ndarray) -> np.ndarray:
    """The test volume's value at continuous voxel indices ``ijk (..., 3)``: linear, so trilinear reads are exact."""
    return ijk[..., 0] + 10.0 * ijk[..., 1] + 100.0 * ijk[..., 2]


def field_volume_node(h, name="tilted"):
    from imagetomesh.core.volume import Volume

    k, j, i = np.meshgrid(np.arange(12), np.arange(30), np.arange(24), indexing="ij")
    array = field(np.stack([i, j, k], axis=-1).astype(np.float64)).astype(np.float32)
    return h.volume_to_node(Volume(array, (1.0, 1.2, 2.5), (5.0, -8.0, 20.0), np.eye(3)), name)


def shear_transform_node(scene):
    """A grid transform moving each point ``SHEAR`` mm along A per mm along S, as the DICOM module's
    regularisation of a tilted series does (a displacement grid in RAS over the volume and beyond)."""
    grid = vtk.vtkImageData()
    grid.SetOrigin(-60.0, -60.0, -20.0)
    grid.SetSpacing(10.0, 10.0, 5.0)
    grid.SetDimensions(13, 13, 18)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    displacement = numpy_support.vtk_to_numpy(grid.GetPointData().GetScalars()).reshape(18, 13, 13, 3)
    displacement[:] = 0.0
    displacement[..., 1] = SHEAR * (-20.0 + 5.0 * np.arange(18))[:, None, None]
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(grid)
    node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    node.SetAndObserveTransformToParent(transform)
    return node


def ras_of_voxels(volume) -> np.ndarray:
    """``(K, J, I, 3)`` RAS positions of every voxel of a library :class:`Volume` (LPS)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume.array.shape), indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(np.float64)
    return (ijk @ volume.index_to_lps.T)[..., :3] * np.array([-1.0, -1.0, 1.0])


def test_a_volume_under_a_grid_transform_is_read_as_hardening_makes_it(itm, scene, h):
    node = field_volume_node(h)
    transform = shear_transform_node(scene)
    node.SetAndObserveTransformNodeID(transform.GetID())
    before = slicer.util.arrayFromVolume(node).copy()
    nodes = scene.GetNumberOfNodes()
    volume = sceneAdapters.volumeFromNode(node)
    # each voxel read came from the point the transform moved there: the same S, SHEAR * S less along A
    ras = ras_of_voxels(volume)
    source = ras - np.stack([np.zeros(ras.shape[:-1]), SHEAR * ras[..., 2], np.zeros(ras.shape[:-1])], axis=-1)
    matrix = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(matrix)
    to_ijk = sceneAdapters.matrixToNumpy(matrix)
    ijk = source @ to_ijk[:3, :3].T + to_ijk[:3, 3]
    inside = np.all((ijk >= 0) & (ijk <= np.array([23, 29, 11])), axis=-1)
    assert inside.sum() > 0.8 * before.size  # the grid grew to hold the moved volume
    np.testing.assert_allclose(volume.array[inside], field(ijk[inside]), atol=1e-3)
    assert volume.array.shape[1] > before.shape[1]  # along A, the tilt widens the volume
    # nothing of the user's changed
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    assert node.GetParentTransformNode() is transform and scene.GetNumberOfNodes() == nodes


def test_segmenting_such_a_volume_says_how_it_was_read(itm, scene, h):
    node = field_volume_node(h)
    node.SetAndObserveTransformNodeID(shear_transform_node(scene).GetID())
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: None))
    job, target = logic.prepareSegment(node, "unet-hippocampus")
    assert any("'tilted' is under a non-linear transform" in w for w in target.warnings)
    assert job.volume.array.shape[1] > 30
    plain = field_volume_node(h, "plain")
    _, target = logic.prepareSegment(plain, "unet-hippocampus")
    assert target.warnings == []
    # listing the models that fit it (on each selection) reads it in its own space, without resampling
    assert logic.methodMismatches(node) == logic.methodMismatches(plain)


def test_a_linear_transform_moves_the_geometry_only(itm, scene, h):
    node = field_volume_node(h)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, 7.0)  # 7 mm towards A
    transform.SetMatrixTransformToParent(matrix)
    plain = sceneAdapters.volumeFromNode(node)
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = sceneAdapters.volumeFromNode(node)
    np.testing.assert_array_equal(moved.array, plain.array)
    np.testing.assert_allclose(moved.origin, plain.origin + [0.0, -7.0, 0.0])  # A = -P


def test_a_labelmap_under_a_grid_transform_keeps_its_labels(itm, scene, h):
    """Hardening resamples a labelmap by nearest voxels: no value between two labels, none lost."""
    from imagetomesh.core.volume import Volume

    array = np.zeros((12, 30, 24), np.int16)
    array[3:9, 8:20, 5:15] = 3
    array[5:7, 10:14, 7:10] = 7
    node = h.volume_to_node(
        Volume(array, (1.0, 1.2, 2.5), (0.0, 0.0, 0.0), np.eye(3)), "labels", "vtkMRMLLabelMapVolumeNode"
    )
    node.SetAndObserveTransformNodeID(shear_transform_node(scene).GetID())
    volume = sceneAdapters.volumeFromNode(node)
    assert set(np.unique(volume.array).tolist()) == {0, 3, 7}
    assert (volume.array == 3).sum() == (array == 3).sum() and (volume.array == 7).sum() == (array == 7).sum()
