"""MRML nodes <-> the library's types (LPS millimetres); RAS exists only on the scene side.

No Qt here: everything is usable from Slicer's Python console and testable on a bare scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import slicer
import vtk

from .libraryPath import addLibraryToPath

addLibraryToPath()

# Light parts of the library only (numpy): models, torch and fitting live in the worker.
from imagetomesh.core.mesh import Mesh  # noqa: E402
from imagetomesh.core.transforms import LPS_TO_RAS  # noqa: E402
from imagetomesh.core.volume import Volume  # noqa: E402
from imagetomesh.errors import InputError  # noqa: E402
from imagetomesh.organs import OrganMesh  # noqa: E402

#: Node attribute names the module writes.
ATTRIBUTE_PREFIX = "ImageToMesh."

#: Colours of the result models, by job kind.
COLORS = {
    "segment": (0.95, 0.78, 0.25),
    "fit": (0.35, 0.80, 0.45),
    "refine": (0.40, 0.62, 1.00),
}


def matrixToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """``(4, 4)`` float64 copy of a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def nodeToWorld(node) -> np.ndarray:
    """``(4, 4)`` RAS matrix of the node's parent transforms; InputError if one is non-linear."""
    transformNode = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    if transformNode is None:
        return np.eye(4)
    if not transformNode.IsTransformToWorldLinear():
        raise InputError(
            f"'{node.GetName()}' is under a non-linear transform; harden the transform first (Data module)"
        )
    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return matrixToNumpy(matrix)


def _volumeFromArray(array: np.ndarray, ijkToRas: np.ndarray, name: str) -> Volume:
    if array.ndim != 3:
        raise InputError(
            f"'{name}' has {array.shape[-1]} components per voxel; choose a single-component (scalar) volume"
        )
    ijkToLps = LPS_TO_RAS @ ijkToRas
    spacing = np.linalg.norm(ijkToLps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"'{name}' has a zero voxel spacing; fix the image geometry")
    return Volume(np.array(array), spacing, ijkToLps[:3, 3], ijkToLps[:3, :3] / spacing[None, :])


def check3D(volume: Volume, name: str) -> None:
    """InputError when ``volume`` is a single slice (or line)."""
    if min(volume.shape) < 2:
        w, h, d = volume.size_ijk.tolist()
        raise InputError(f"'{name}' is a 2D image ({w} x {h} x {d} voxels); ImageToMesh needs a 3D volume")


def underNonLinearTransform(node) -> bool:
    """Whether ``node``'s parent transforms to world include a non-linear one (a grid or B-spline transform:
    3D Slicer's DICOM acquisition-geometry regularisation of a tilted CT, a deformable registration)."""
    transformNode = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    return transformNode is not None and not transformNode.IsTransformToWorldLinear()


#: What the panel says when a volume's voxels were resampled through its non-linear transform.
NON_LINEAR_NOTE = (
    "'{name}' is under a non-linear transform: it was used as hardening the transform would make it "
    "(resampled into world space); the volume itself is unchanged"
)


def volumeFromNode(volumeNode, resampleNonLinear: bool = True) -> Volume:
    """The library's :class:`Volume` (LPS) of a scalar or labelmap volume node in world space: linear parent
    transforms applied to its geometry; under a non-linear one, its voxels resampled as hardening it would
    (:func:`_hardened`; seconds for a clinical CT), the node itself untouched. ``resampleNonLinear=False``
    leaves such a volume in its own space instead (its intensities and extent, for checks that need no more)."""
    if volumeNode is None:
        raise InputError("no input volume selected; choose a volume")
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{volumeNode.GetName()}' is not a scalar volume; choose a scalar or labelmap volume")
    if volumeNode.GetImageData() is None:
        raise InputError(f"'{volumeNode.GetName()}' holds no image data; load the image again")
    nonLinear = underNonLinearTransform(volumeNode)
    if nonLinear and resampleNonLinear:
        return _volumeFromArray(*_hardened(volumeNode), volumeNode.GetName())
    array = slicer.util.arrayFromVolume(volumeNode)
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    ijkToRas = (np.eye(4) if nonLinear else nodeToWorld(volumeNode)) @ matrixToNumpy(matrix)
    return _volumeFromArray(array, ijkToRas, volumeNode.GetName())


def _hardened(volumeNode) -> tuple:
    """``(array (K, J, I), IJK->RAS (4, 4))`` of ``volumeNode`` with its transform to world hardened by Slicer's
    own logic (``vtkSlicerTransformLogic.hardenTransform``: the voxels resampled into world space on a grid grown
    to hold them, nearest-neighbour for labelmaps, the corners' value outside), done on a copy in a private
    scene: the user's scene, node and transform are left as they were."""
    scene = slicer.vtkMRMLScene()
    copy = scene.AddNewNodeByClass(volumeNode.GetClassName())
    image = vtk.vtkImageData()
    image.DeepCopy(volumeNode.GetImageData())
    copy.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    copy.SetIJKToRASMatrix(matrix)
    toWorld = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(volumeNode.GetParentTransformNode(), None, toWorld)
    transformNode = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    transformNode.SetAndObserveTransformToParent(toWorld)
    copy.SetAndObserveTransformNodeID(transformNode.GetID())
    if not slicer.vtkSlicerTransformLogic().hardenTransform(copy):
        raise InputError(
            f"'{volumeNode.GetName()}' is under a non-linear transform that could not be applied to it; "
            "harden the transform first (Data module)"
        )
    copy.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVolume(copy).copy(), matrixToNumpy(matrix)


def segmentMaskFromNode(segmentationNode, segmentId: Optional[str] = None) -> tuple:
    """``(mask, segmentName)``: one segment of a segmentation node as a binary :class:`Volume` (LPS)."""
    segmentation = segmentationNode.GetSegmentation()
    name = segmentationNode.GetName()
    if segmentation.GetNumberOfSegments() == 0:
        raise InputError(f"segmentation '{name}' has no segments; add and paint a segment first")
    if not segmentId:
        segmentId = segmentation.GetNthSegmentID(0)
    segment = segmentation.GetSegment(segmentId)
    if segment is None:
        raise InputError(f"segmentation '{name}' has no segment with ID '{segmentId}'")
    image = slicer.vtkOrientedImageData()
    if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentationNode, segmentId, image
    ):
        raise InputError(
            f"segment '{segment.GetName()}' has no binary labelmap; paint it or convert it in the Segmentations module"
        )
    extent = image.GetExtent()
    if (
        extent[1] < extent[0]
        or extent[3] < extent[2]
        or extent[5] < extent[4]
        or image.GetPointData().GetScalars() is None
    ):
        raise InputError(f"segment '{segment.GetName()}' is empty; paint the structure first")
    from vtk.util.numpy_support import vtk_to_numpy

    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    scalars = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    shift = np.eye(4)
    shift[:3, 3] = [extent[0], extent[2], extent[4]]
    ijkToRas = nodeToWorld(segmentationNode) @ matrixToNumpy(matrix) @ shift
    # segments may share one labelmap: keep this segment's label value only
    mask = _volumeFromArray((scalars == segment.GetLabelValue()).astype(np.uint8), ijkToRas, segment.GetName())
    if not mask.array.any():
        raise InputError(f"segment '{segment.GetName()}' is empty; paint the structure first")
    return mask, segment.GetName()


def meshToPolyData(mesh: Mesh) -> vtk.vtkPolyData:
    """A ``vtkPolyData`` in RAS (with point normals for smooth shading) of an LPS :class:`Mesh`."""
    from imagetomesh.io.meshes import mesh_to_polydata

    polydata = mesh_to_polydata(mesh.transformed(LPS_TO_RAS))  # a rotation: faces stay outward
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputData(polydata)
    normals.SplittingOff()
    normals.ConsistencyOff()
    normals.AutoOrientNormalsOff()
    normals.ComputePointNormalsOn()
    normals.ComputeCellNormalsOff()
    normals.Update()
    result = vtk.vtkPolyData()
    result.DeepCopy(normals.GetOutput())
    return result


def meshFromModelNode(modelNode) -> Mesh:
    """The LPS :class:`Mesh` of a model node in world coordinates (parent transforms applied)."""
    from imagetomesh.io.meshes import polydata_to_mesh

    if modelNode is None:
        raise InputError("no model selected; choose a model")
    polydata = modelNode.GetPolyData()
    if polydata is None or polydata.GetNumberOfPoints() == 0:
        raise InputError(f"model '{modelNode.GetName()}' is empty")
    transformNode = modelNode.GetParentTransformNode()
    if transformNode is not None:
        transform = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(transformNode, None, transform)
        transformer = vtk.vtkTransformPolyDataFilter()
        transformer.SetInputData(polydata)
        transformer.SetTransform(transform)
        transformer.Update()
        polydata = transformer.GetOutput()
    mesh = polydata_to_mesh(polydata)
    if mesh.num_faces == 0:
        raise InputError(f"model '{modelNode.GetName()}' has no triangles; only surface models can be exported")
    return mesh.transformed(LPS_TO_RAS)


def roiCornersLPS(roiNode) -> np.ndarray:
    """``(8, 3)`` LPS corners of a markups ROI (rotated ROIs included)."""
    size = np.array(roiNode.GetSize(), dtype=np.float64)
    if np.any(size <= 0):
        raise InputError(f"ROI '{roiNode.GetName()}' has zero size; place the ROI over the structure")
    signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    objectToWorld = matrixToNumpy(roiNode.GetObjectToWorldMatrix())
    cornersRas = (signs * size) @ objectToWorld[:3, :3].T + objectToWorld[:3, 3]
    return cornersRas @ LPS_TO_RAS[:3, :3].T


def subjectHierarchy():
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)


def nodeInScene(node) -> bool:
    """Whether ``node`` is (still) a node of ``slicer.mrmlScene``."""
    return (
        node is not None and node.GetScene() is slicer.mrmlScene and slicer.mrmlScene.GetNodeByID(node.GetID()) is node
    )


def placeInFolder(node, referenceNode) -> None:
    """Put ``node`` in the subject-hierarchy folder that holds ``referenceNode`` (scene root otherwise)."""
    shNode = subjectHierarchy()
    if shNode is None:
        return
    parent = shNode.GetSceneItemID()
    if referenceNode is not None:
        referenceItem = shNode.GetItemByDataNode(referenceNode)
        if referenceItem:
            parent = shNode.GetItemParent(referenceItem)
    item = shNode.GetItemByDataNode(node)
    if item:
        if shNode.GetItemParent(item) != parent:
            shNode.SetItemParent(item, parent)
    else:
        shNode.CreateItem(parent, node)


@dataclass
class ResultTarget:
    """Where a job's mesh goes once it arrives (everything the scene needs, nothing computed).

    Attributes:
        kind: ``segment``, ``fit`` or ``refine`` (sets the colour).
        name: name for a new model node.
        referenceNode: the input; the result is placed in its subject-hierarchy folder.
        outputModel: existing model node to replace, or None for a new one.
        attributes: node attributes recording how the model was made.
        warnings: what the user should know about the inputs (shown in the panel).
    """

    kind: str
    name: str
    referenceNode: object = None
    outputModel: object = None
    attributes: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def addResultModel(mesh: Mesh, target: ResultTarget):
    """Put ``mesh`` (LPS) into the scene as described by ``target``; all or nothing. Returns the model node."""
    if not isinstance(mesh, Mesh) or mesh.num_faces == 0:
        from imagetomesh.backend import BackendError

        raise BackendError("the worker returned no surface")
    polydata = meshToPolyData(mesh)  # everything that can fail before the scene is touched
    scene = slicer.mrmlScene
    output = target.outputModel if nodeInScene(target.outputModel) else None
    created = []
    previous = output.GetPolyData() if output is not None else None
    try:
        if output is None:
            output = scene.AddNewNodeByClass("vtkMRMLModelNode", scene.GenerateUniqueName(target.name))
            created.append(output)
        wasModifying = output.StartModify()
        output.SetAndObservePolyData(polydata)
        for key, value in target.attributes.items():
            output.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
        output.EndModify(wasModifying)
        display = output.GetDisplayNode()
        if display is None:
            output.CreateDefaultDisplayNodes()
            display = output.GetDisplayNode()
            created.append(display)
        if created and created[0] is output:
            display.SetColor(*COLORS.get(target.kind, (0.9, 0.9, 0.9)))
        display.SetVisibility(True)
        display.SetVisibility2D(True)  # slice intersections
        display.SetSliceIntersectionThickness(2)
        placeInFolder(output, target.referenceNode if nodeInScene(target.referenceNode) else None)
    except Exception:
        for node in reversed(created):
            if nodeInScene(node):
                scene.RemoveNode(node)
        if output is not None and nodeInScene(output) and previous is not None:
            output.SetAndObservePolyData(previous)
        raise
    return output


def addOrganModels(results: list, target: ResultTarget) -> list:
    """One model node per organ found (:class:`~imagetomesh.organs.OrganMesh` list, LPS meshes), named
    after the organ and in its colour, in a new subject-hierarchy folder ``target.name`` beside the
    input; all or nothing. Organs the model did not find are added to ``target.warnings``.
    Returns the model nodes, in the model's organ order."""
    found = [r for r in results if isinstance(r, OrganMesh) and r.mesh is not None and r.mesh.num_faces > 0]
    if not found:
        from imagetomesh.backend import BackendError

        raise BackendError("the model found none of its organs in this image")
    polydata = [meshToPolyData(r.mesh) for r in found]  # everything that can fail before the scene is touched
    scene = slicer.mrmlScene
    created = []
    try:
        for result, surface in zip(found, polydata):
            node = scene.AddNewNodeByClass("vtkMRMLModelNode", scene.GenerateUniqueName(result.organ.title))
            created.append(node)
            node.SetAndObservePolyData(surface)
            for key, value in {**target.attributes, "Organ": result.organ.name}.items():
                node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            created.append(display)
            display.SetColor(*(c / 255.0 for c in result.organ.colour))
            display.SetVisibility(True)
            display.SetVisibility2D(True)
            display.SetSliceIntersectionThickness(2)
    except Exception:
        for node in reversed(created):
            if nodeInScene(node):
                scene.RemoveNode(node)
        raise
    models = [node for node in created if node.IsA("vtkMRMLModelNode")]
    shNode = subjectHierarchy()
    if shNode is not None:  # the folder last: nothing above can leave an empty one behind
        parent = shNode.GetSceneItemID()
        if nodeInScene(target.referenceNode):
            referenceItem = shNode.GetItemByDataNode(target.referenceNode)
            if referenceItem:
                parent = shNode.GetItemParent(referenceItem)
        folder = shNode.CreateFolderItem(parent, scene.GenerateUniqueName(target.name))
        for node in models:
            item = shNode.GetItemByDataNode(node)
            if item:
                shNode.SetItemParent(item, folder)
            else:
                shNode.CreateItem(folder, node)
    missing = [r.organ.title for r in results if r not in found]
    if missing:
        target.warnings.append(f"not found in this image: {', '.join(missing)}")
    return models
