"""ImageToMesh: medical images to watertight surface meshes in 3D Slicer.

A thin skin over the ``imagetomesh`` library (shipped beside this file in ``ImageToMeshLib``):
the Logic turns MRML nodes into the library's types (LPS millimetres), runs the long work in a
worker process through :mod:`imagetomesh.backend`, and puts the resulting meshes back into the
scene as model nodes (RAS). The Widget is the panel; it is the only place that needs Qt.

Scripting (Slicer's Python console)::

    logic = slicer.util.getModuleLogic("ImageToMesh")
    model = logic.segment(getNode("hippocampus_024"), "unet-hippocampus")
    model = logic.fitCurves([getNode("Curve Red"), getNode("Curve Green")], "dals-hippocampus")
    model = logic.refine(getNode("Segmentation"), "dals-hippocampus", segmentId="Segment_1")
    report = logic.exportModel(model, "/tmp/hippocampus.stl")   # LPS, as Slicer writes STL
"""

import importlib.util
import logging
import os
import pathlib
import shutil
import sys
from dataclasses import dataclass, field
from typing import Annotated, Optional, Union

import numpy as np
import vtk

import qt  # noqa: F401  (the Widget uses it; the Logic does not)
import ctk  # noqa: F401  (Slicer convention; the .ui uses ctk widgets)
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLModelNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)


def _addLibraryToPath() -> Optional[str]:
    """Make ``import imagetomesh`` find the copy shipped with this module.

    Installed extension: ``<qt-scripted-modules>/ImageToMeshLib/imagetomesh``; source tree:
    ``<repo>/ImageToMeshLib/imagetomesh`` beside ``<repo>/ImageToMesh/``.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "ImageToMeshLib"), os.path.join(os.path.dirname(here), "ImageToMeshLib")):
        if os.path.isfile(os.path.join(candidate, "imagetomesh", "__init__.py")):
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return candidate
    return None


_addLibraryToPath()

# Light parts of the library only (numpy): models, torch and fitting live in the worker.
from imagetomesh.backend import (  # noqa: E402
    BackendError,
    InProcessBackend,
    Job,
    JobCancelled,
    WorkerBackend,
    WorkerDied,
    crop_volume,
    wait_for,
)
from imagetomesh.core.mesh import Mesh  # noqa: E402
from imagetomesh.core.transforms import LPS_TO_RAS  # noqa: E402
from imagetomesh.core.volume import Volume  # noqa: E402
from imagetomesh.errors import InputError  # noqa: E402

#: Python modules the worker needs, and the requirement that provides each (torch comes from
#: the PyTorch extension; the others from ``requirements.txt``). numpy, vtk and SimpleITK
#: ship with Slicer.
DEPENDENCIES = {"torch": "torch", "scipy": "scipy", "pymeshlab": "pymeshlab", "safetensors": "safetensors"}

#: Device choices shown in the panel -> the library's device names.
DEVICES = {"auto": "auto", "CPU": "cpu", "GPU": "cuda"}

#: Model kinds of the bundled zoo, as shown to the user.
KIND_LABELS = {
    "voxel2mesh": "Voxel2Mesh",
    "pixel2mesh3d": "Pixel2Mesh-3D",
    "unet": "U-Net + marching cubes",
    "implicitmeshnet": "ImplicitMeshNet",
    "nudf": "NUDF (neural unsigned distance field)",
    "dals": "DALS shape prior",
}

#: Colours of the result models.
COLORS = {
    "segment": (0.95, 0.78, 0.25),
    "fit": (0.35, 0.80, 0.45),
    "refine": (0.40, 0.62, 1.00),
}

#: The DALS paper's weights for fitting planar curves, ``(lambda_dir, lambda_reg)``: where the
#: fit sliders start (the library's ``imagetomesh.fitting.TASK_DEFAULTS["curves"]``; a test keeps
#: them equal). Refining a labelmap defaults to one shared latent (lambda_dir = inf) and no
#: regulariser, which a log slider cannot show: a check box selects those defaults instead.
PAPER_CURVE_LAMBDAS = (100.0, 1e-2)

#: Ranges of the log10(lambda) sliders.
LOG_LAMBDA_DIR_RANGE = (-2.0, 5.0)
LOG_LAMBDA_REG_RANGE = (-5.0, 1.0)

#: Node attribute names the module writes.
ATTRIBUTE_PREFIX = "ImageToMesh."


#
# ImageToMesh
#


class ImageToMesh(ScriptedLoadableModule):
    """Module description (title, category, help)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Image To Mesh")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["ImageToMesh developers"]
        self.parent.helpText = _(
            "Turns medical images into watertight surface meshes with learned models "
            "(Voxel2Mesh, Pixel2Mesh-3D, U-Net + marching cubes), fits the DALS learned shape prior "
            "to closed curves drawn on slices or to an existing labelmap/segmentation, and exports "
            "meshes to STL/OBJ/PLY in LPS or RAS after a watertightness report. "
            "The work runs in a separate worker process; the panel never freezes."
        )
        self.parent.acknowledgementText = _(
            "Models trained on the Medical Segmentation Decathlon (CC-BY-SA 4.0) and KiTS data; "
            "see each model card for its data and licence."
        )


#
# Parameter node
#


@parameterNodeWrapper
class ImageToMeshParameterNode:
    """The panel's state, saved with the scene.

    Method and prior names are plain strings (their combo boxes are filled at run time from the
    bundled models, so they are kept in sync by the Widget); log10 of the DALS weights drive
    the sliders.
    """

    # Segment
    inputVolume: vtkMRMLScalarVolumeNode
    roi: vtkMRMLMarkupsROINode
    method: str = ""
    device: Annotated[str, Choice(["auto", "CPU", "GPU"])] = "auto"
    outputModel: vtkMRMLModelNode
    # Annotate and fit (sliders start at the paper's weights for curves)
    prior: str = ""
    logLambdaDir: Annotated[float, WithinRange(*LOG_LAMBDA_DIR_RANGE)] = 2.0
    logLambdaReg: Annotated[float, WithinRange(*LOG_LAMBDA_REG_RANGE)] = -2.0
    fitOutputModel: vtkMRMLModelNode
    # Refine
    refineInput: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]
    refineSegmentId: str = ""
    refinePrior: str = ""
    refineUseDefaultLambdas: bool = True  # one shared latent, no regulariser (the paper's labelmap task)
    refineLogLambdaDir: Annotated[float, WithinRange(*LOG_LAMBDA_DIR_RANGE)] = 2.0
    refineLogLambdaReg: Annotated[float, WithinRange(*LOG_LAMBDA_REG_RANGE)] = -3.0
    refineOutputModel: vtkMRMLModelNode
    # Export
    exportFormat: Annotated[str, Choice(["STL", "OBJ", "PLY"])] = "STL"
    exportCoordinateSystem: Annotated[str, Choice(["LPS", "RAS"])] = "LPS"
    exportDirectory: pathlib.Path = pathlib.Path.home()


#
# Scene <-> library conversions (no Qt)
#


def _matrixToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _nodeToWorld(node) -> np.ndarray:
    """``(4, 4)`` RAS matrix of the node's parent transforms; InputError if one is non-linear."""
    transformNode = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    if transformNode is None:
        return np.eye(4)
    if not transformNode.IsTransformToWorldLinear():
        raise InputError(f"'{node.GetName()}' is under a non-linear transform; harden the transform first (Data module)")
    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return _matrixToNumpy(matrix)


def _volumeFromArray(array: np.ndarray, ijkToRas: np.ndarray, name: str) -> Volume:
    if array.ndim != 3:
        raise InputError(f"'{name}' has {array.shape[-1]} components per voxel; choose a single-component (scalar) volume")
    ijkToLps = LPS_TO_RAS @ ijkToRas
    spacing = np.linalg.norm(ijkToLps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"'{name}' has a zero voxel spacing; fix the image geometry")
    return Volume(np.array(array), spacing, ijkToLps[:3, 3], ijkToLps[:3, :3] / spacing[None, :])


def _check3D(volume: Volume, name: str) -> None:
    if min(volume.shape) < 2:
        w, h, d = volume.size_ijk.tolist()
        raise InputError(f"'{name}' is a 2D image ({w} x {h} x {d} voxels); ImageToMesh needs a 3D volume")


def volumeFromNode(volumeNode) -> Volume:
    """The library's :class:`Volume` (LPS) of a scalar or labelmap volume node (parent transforms applied)."""
    if volumeNode is None:
        raise InputError("no input volume selected; choose a volume")
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{volumeNode.GetName()}' is not a scalar volume; choose a scalar or labelmap volume")
    if volumeNode.GetImageData() is None:
        raise InputError(f"'{volumeNode.GetName()}' holds no image data; load the image again")
    array = slicer.util.arrayFromVolume(volumeNode)
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    ijkToRas = _nodeToWorld(volumeNode) @ _matrixToNumpy(matrix)
    return _volumeFromArray(array, ijkToRas, volumeNode.GetName())


def segmentMaskFromNode(segmentationNode, segmentId: Optional[str] = None) -> tuple[Volume, str]:
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
    if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(segmentationNode, segmentId, image):
        raise InputError(f"segment '{segment.GetName()}' has no binary labelmap; paint it or convert it in the Segmentations module")
    extent = image.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4] or image.GetPointData().GetScalars() is None:
        raise InputError(f"segment '{segment.GetName()}' is empty; paint the structure first")
    from vtk.util.numpy_support import vtk_to_numpy

    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    scalars = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    shift = np.eye(4)
    shift[:3, 3] = [extent[0], extent[2], extent[4]]
    ijkToRas = _nodeToWorld(segmentationNode) @ _matrixToNumpy(matrix) @ shift
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
    objectToWorld = _matrixToNumpy(roiNode.GetObjectToWorldMatrix())
    cornersRas = (signs * size) @ objectToWorld[:3, :3].T + objectToWorld[:3, 3]
    return cornersRas @ LPS_TO_RAS[:3, :3].T


def curvePointsLPS(curveNode) -> Optional[np.ndarray]:
    """``(N, 3)`` LPS points along a closed curve, or None when fewer than 3 points are placed."""
    count = curveNode.GetNumberOfDefinedControlPoints() if hasattr(curveNode, "GetNumberOfDefinedControlPoints") else curveNode.GetNumberOfControlPoints()
    if count < 3:
        return None
    points = slicer.util.arrayFromMarkupsCurvePoints(curveNode, world=True)
    if points is None or len(points) < 3:
        return None
    return np.asarray(points, dtype=np.float64) @ LPS_TO_RAS[:3, :3].T


def _subjectHierarchy():
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)


def _nodeInScene(node) -> bool:
    return node is not None and node.GetScene() is slicer.mrmlScene and slicer.mrmlScene.GetNodeByID(node.GetID()) is node


def _isClean(report: dict) -> bool:
    return bool(report.get("watertight")) and bool(report.get("manifold")) and report.get("self_intersecting_faces", 0) <= 0


@dataclass
class ResultTarget:
    """Where a job's mesh goes once it arrives (everything the scene needs, nothing computed).

    Attributes:
        kind: ``segment``, ``fit`` or ``refine`` (sets the colour).
        name: name for a new model node.
        referenceNode: the input; the result is placed in its subject-hierarchy folder.
        outputModel: existing model node to replace, or None for a new one.
        attributes: node attributes recording how the model was made.
    """

    kind: str
    name: str
    referenceNode: object = None
    outputModel: object = None
    attributes: dict = field(default_factory=dict)


#
# ImageToMeshLogic
#


class ImageToMeshLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable without the panel (console, scripts, tests).

    Each public call blocks until the worker is done and returns the model node; on any error
    (:class:`InputError` for bad input, :class:`JobCancelled`, :class:`WorkerDied`,
    :class:`BackendError`) the scene is left unchanged. Long work runs in :attr:`backend`
    (a :class:`~imagetomesh.backend.WorkerBackend` by default; tests substitute a fake).
    """

    def __init__(self, backend=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._backend = backend
        self.progressCallback = None  # (fraction, message) -> None, for the blocking calls
        self.logCallback = None  # (message) -> None
        self._models = None

    # --- backend ----------------------------------------------------------------------------
    @property
    def backend(self):
        if self._backend is None:
            self._backend = WorkerBackend(python=self.workerPython())
        return self._backend

    @backend.setter
    def backend(self, value) -> None:
        if self._backend is not None and self._backend is not value:
            self._backend.close()
        self._backend = value

    @staticmethod
    def workerPython() -> str:
        """The interpreter for the worker: Slicer's ``PythonSlicer`` inside the application."""
        if hasattr(slicer, "app"):
            found = shutil.which("PythonSlicer")
            if found:
                return found
            candidate = os.path.join(os.path.dirname(sys.executable), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
            if os.path.isfile(candidate):
                return candidate
        return sys.executable

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def _run(self, job: Job, progress=None):
        return wait_for(self.backend, job, progress or self.progressCallback, self.logCallback)

    # --- dependencies -------------------------------------------------------------------------
    @staticmethod
    def missingDependencies() -> list:
        """Import names of the worker's dependencies that are not installed (never imports them)."""
        return [name for name in DEPENDENCIES if importlib.util.find_spec(name) is None]

    @staticmethod
    def requirementsPath() -> str:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.txt")

    # --- models ---------------------------------------------------------------------------------
    def availableModels(self, refresh: bool = False) -> list:
        """``[{name, folder, kind, card}]`` of the bundled models (segmenters and DALS priors)."""
        if self._models is None or refresh:
            from imagetomesh.backend import list_models

            self._models = list_models()
        return self._models

    def segmentationMethods(self) -> list:
        return [m["name"] for m in self.availableModels() if m["kind"] not in ("dals", "unknown")]

    def priors(self) -> list:
        return [m["name"] for m in self.availableModels() if m["kind"] == "dals"]

    def modelCard(self, name: str) -> dict:
        for model in self.availableModels():
            if model["name"] == name:
                return model["card"]
        return {}

    @staticmethod
    def describeCard(name: str, card: dict) -> str:
        """A short HTML summary of a model card for the panel."""
        if not card:
            return ""
        lines = [f"<b>{name}</b> ({KIND_LABELS.get(card.get('kind', ''), card.get('kind', '?'))})"]
        if card.get("description"):
            lines.append(str(card["description"]))
        data = card.get("data") or {}
        if data:
            lines.append(f"Data: {data.get('name', '?')} ({data.get('licence', data.get('license', 'licence unknown'))})")
        metrics = card.get("test_metrics") or card.get("metrics") or {}
        if isinstance(metrics, dict) and metrics:
            shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in list(metrics.items())[:6])
            lines.append(f"Test metrics: {shown}")
        return "<br>".join(lines)

    # --- parameter node -----------------------------------------------------------------------
    def getParameterNode(self):
        return ImageToMeshParameterNode(super().getParameterNode())

    # --- segment ------------------------------------------------------------------------------
    def prepareSegment(self, inputVolume, method, outputModel=None, roi=None, device="auto"):
        """Validate the inputs and build the job and its result target (nothing runs, the scene is untouched)."""
        if inputVolume is None:
            raise InputError("no input volume selected; choose a volume")
        if not method:
            raise InputError("no segmentation method chosen; choose one of the bundled models")
        volume = volumeFromNode(inputVolume)
        _check3D(volume, inputVolume.GetName())
        if roi is not None:
            volume = crop_volume(volume, roiCornersLPS(roi))
            _check3D(volume, f"{inputVolume.GetName()} inside ROI {roi.GetName()}")
        job = Job("segment", {"model": str(method), "device": DEVICES.get(device, device) or "auto"}, volume=volume)
        target = ResultTarget(
            "segment",
            f"{inputVolume.GetName()} {method}",
            inputVolume,
            outputModel,
            {"Method": str(method), "Input": inputVolume.GetID()},
        )
        return job, target

    def segment(self, inputVolume, method, outputModel=None, roi=None, device="auto", progress=None):
        """Segment ``inputVolume`` with bundled model ``method``; returns the model node (RAS).

        Args:
            inputVolume: scalar volume node (any IJK->RAS orientation; linear parent transforms applied).
            method: name of a bundled segmentation model (see :meth:`segmentationMethods`).
            outputModel: model node to replace, or None to create ``"<volume> <method>"``.
            roi: optional markups ROI node; only the image inside it is segmented.
            device: ``auto``, ``CPU``/``cpu`` or ``GPU``/``cuda``.
            progress: optional ``(fraction, message)`` callback.
        """
        job, target = self.prepareSegment(inputVolume, method, outputModel, roi, device)
        return self.applyResult(self._run(job, progress), target)

    # --- annotate and fit -------------------------------------------------------------------
    def createAnnotationCurves(self, referenceNode=None, sliceNames=("Red", "Yellow", "Green")) -> list:
        """Empty closed-curve nodes, one per slice view, for the user to draw on that view's current plane.

        Each curve is shown in its own slice view (and 3D), coloured like the view, and records
        the plane (``ImageToMesh.SliceToRAS``) and the slice node it belongs to.
        """
        scene = slicer.mrmlScene
        base = referenceNode.GetName() if referenceNode is not None else "ImageToMesh"
        threeDViews = [node.GetID() for node in slicer.util.getNodesByClass("vtkMRMLViewNode")]
        created = []
        try:
            for sliceName in sliceNames:
                sliceNode = scene.GetNodeByID(f"vtkMRMLSliceNode{sliceName}")
                if sliceNode is None:
                    continue
                curve = scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", scene.GenerateUniqueName(f"{base} {sliceName} curve"))
                created.append(curve)
                curve.CreateDefaultDisplayNodes()
                display = curve.GetDisplayNode()
                color = sliceNode.GetLayoutColor()
                display.SetSelectedColor(color)
                display.SetActiveColor(color)
                display.SetViewNodeIDs([sliceNode.GetID()] + threeDViews)
                sliceToRas = _matrixToNumpy(sliceNode.GetSliceToRAS())
                curve.SetAttribute(ATTRIBUTE_PREFIX + "SliceNode", sliceNode.GetID())
                curve.SetAttribute(ATTRIBUTE_PREFIX + "SliceToRAS", " ".join(f"{v:.6g}" for v in sliceToRas.reshape(-1)))
                if referenceNode is not None:
                    curve.SetAttribute(ATTRIBUTE_PREFIX + "Reference", referenceNode.GetID())
                self._placeInFolder(curve, referenceNode)
        except Exception:
            for node in reversed(created):
                scene.RemoveNode(node)
            raise
        if not created:
            raise InputError("no Red, Yellow or Green slice view found; choose a layout with slice views")
        return created

    def prepareFitCurves(self, curveNodes, prior, lambdaDir=None, lambdaReg=None, outputModel=None, device="auto",
                         iterations=None):
        if curveNodes is None:
            curveNodes = []
        elif not isinstance(curveNodes, (list, tuple)):
            curveNodes = [curveNodes]
        if not prior:
            raise InputError("no DALS prior chosen; choose one of the bundled priors")
        curves, used = [], []
        for node in curveNodes:
            if node is None:
                continue
            if not node.IsA("vtkMRMLMarkupsClosedCurveNode"):
                raise InputError(f"'{node.GetName()}' is not a closed curve; draw closed curves (Annotate)")
            points = curvePointsLPS(node)
            if points is not None:
                curves.append(points)
                used.append(node)
        if not curves:
            raise InputError("no curves drawn: click Annotate and draw a closed curve (3 points or more) on at least one slice")
        reference = None
        referenceId = used[0].GetAttribute(ATTRIBUTE_PREFIX + "Reference")
        if referenceId:
            reference = slicer.mrmlScene.GetNodeByID(referenceId)
        base = reference.GetName() if reference is not None else used[0].GetName()
        params = _fitParams(prior, lambdaDir, lambdaReg, device, iterations)
        job = Job("fit_curves", params, curves=curves)
        target = ResultTarget(
            "fit",
            f"{base} {prior}",
            reference if reference is not None else used[0],
            outputModel,
            {"Method": str(prior), "Curves": " ".join(n.GetID() for n in used)},
        )
        return job, target

    def fitCurves(self, curveNodes, prior, lambdaDir=None, lambdaReg=None, outputModel=None, device="auto", progress=None,
                  iterations=None):
        """Fit DALS prior ``prior`` to closed-curve nodes (planar curves on slices); returns the model node.

        ``lambdaDir`` / ``lambdaReg`` / ``iterations`` of None mean the paper's defaults. Curves
        with fewer than three points are ignored; none at all is an :class:`InputError`.
        """
        job, target = self.prepareFitCurves(curveNodes, prior, lambdaDir, lambdaReg, outputModel, device, iterations)
        return self.applyResult(self._run(job, progress), target)

    # --- refine ---------------------------------------------------------------------------------
    def prepareRefine(self, inputNode, prior, segmentId=None, lambdaDir=None, lambdaReg=None, outputModel=None, device="auto",
                      iterations=None):
        if inputNode is None:
            raise InputError("no labelmap or segmentation selected; choose one to refine")
        if not prior:
            raise InputError("no DALS prior chosen; choose one of the bundled priors")
        if inputNode.IsA("vtkMRMLSegmentationNode"):
            mask, segmentName = segmentMaskFromNode(inputNode, segmentId)
            base = segmentName
        elif inputNode.IsA("vtkMRMLScalarVolumeNode"):
            volume = volumeFromNode(inputNode)
            mask = volume.with_array((volume.array != 0).astype(np.uint8))
            base = inputNode.GetName()
        else:
            raise InputError(f"'{inputNode.GetName()}' is neither a labelmap volume nor a segmentation")
        _check3D(mask, base)
        if not mask.array.any():
            raise InputError(f"'{base}' is empty; paint the structure first")
        params = _fitParams(prior, lambdaDir, lambdaReg, device, iterations)
        job = Job("refine", params, volume=mask)
        attributes = {"Method": str(prior), "Input": inputNode.GetID()}
        if segmentId:
            attributes["Segment"] = str(segmentId)
        return job, ResultTarget("refine", f"{base} {prior}", inputNode, outputModel, attributes)

    def refine(self, inputNode, prior, segmentId=None, lambdaDir=None, lambdaReg=None, outputModel=None, device="auto",
               progress=None, iterations=None):
        """Refine a labelmap volume node or one segment of a segmentation node with DALS prior ``prior``.

        ``segmentId`` None takes the segmentation's first segment; a labelmap counts every
        nonzero voxel. ``lambdaDir`` / ``lambdaReg`` / ``iterations`` of None mean the paper's
        defaults for this task (one latent shared by all vertices, no regulariser).
        """
        job, target = self.prepareRefine(inputNode, prior, segmentId, lambdaDir, lambdaReg, outputModel, device, iterations)
        return self.applyResult(self._run(job, progress), target)

    # --- results into the scene ---------------------------------------------------------------
    def applyResult(self, mesh, target: ResultTarget):
        """Put ``mesh`` (LPS) into the scene as described by ``target``; all or nothing."""
        if not isinstance(mesh, Mesh) or mesh.num_faces == 0:
            raise BackendError("the worker returned no surface")
        polydata = meshToPolyData(mesh)  # everything that can fail before the scene is touched
        scene = slicer.mrmlScene
        output = target.outputModel if _nodeInScene(target.outputModel) else None
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
            referenceNode = target.referenceNode if _nodeInScene(target.referenceNode) else None
            self._placeInFolder(output, referenceNode)
        except Exception:
            for node in reversed(created):
                if _nodeInScene(node):
                    scene.RemoveNode(node)
            if output is not None and _nodeInScene(output) and previous is not None:
                output.SetAndObservePolyData(previous)
            raise
        return output

    @staticmethod
    def _placeInFolder(node, referenceNode) -> None:
        """Put ``node`` in the subject-hierarchy folder that holds ``referenceNode`` (scene root otherwise)."""
        shNode = _subjectHierarchy()
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

    # --- export -------------------------------------------------------------------------------
    def checkModel(self, modelNode) -> dict:
        """The mesh-check report (watertight, manifold, self-intersections, ``summary``) of a model node."""
        return self._run(Job("check", mesh=meshFromModelNode(modelNode)))

    def exportModel(self, modelNode, path, coordinateSystem="LPS", repair=False) -> dict:
        """Write a model node to ``path`` (``.stl``, ``.obj``, ``.ply``, ``.vtp``, ``.vtk``); returns the report.

        The file is in ``coordinateSystem`` (``LPS``, the default as Slicer writes it, or ``RAS``)
        and records it the way Slicer reads it back. ``repair=True`` repairs a mesh that is not
        watertight/manifold or self-intersects before writing. The report is
        :meth:`checkModel`'s for the written mesh plus ``path``, ``coordinateSystem`` and ``repaired``.
        """
        from imagetomesh.io.meshes import write_mesh

        space = str(coordinateSystem).upper()
        if space not in ("LPS", "RAS"):
            raise InputError(f"unknown coordinate system '{coordinateSystem}'; use LPS or RAS")
        if not path:
            raise InputError("no output file given; choose where to export")
        mesh = meshFromModelNode(modelNode)
        report = self._run(Job("check", mesh=mesh))
        repaired = False
        if repair and not _isClean(report):
            mesh = self._run(Job("repair", mesh=mesh))
            report = self._run(Job("check", mesh=mesh))
            repaired = True
        written = write_mesh(mesh, path, space)
        return dict(report, path=str(written), coordinateSystem=space, repaired=repaired)


def _optionalFloat(value):
    return None if value is None else float(value)


def _fitParams(prior, lambdaDir, lambdaReg, device, iterations) -> dict:
    return {
        "prior": str(prior),
        "lambda_dir": _optionalFloat(lambdaDir),
        "lambda_reg": _optionalFloat(lambdaReg),
        "iterations": None if iterations is None else int(iterations),
        "device": DEVICES.get(device, device) or "auto",
    }


#
# ImageToMeshWidget
#


class ImageToMeshWidget(ScriptedLoadableModuleWidget, slicer.util.VTKObservationMixin):
    """The panel. Jobs run in the Logic's worker; a timer polls it so the UI never blocks."""

    POLL_MS = 100
    REFIT_DELAY_MS = 400

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        slicer.util.VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # the running job: dict(kind, target, button, label)
        self._lastFit = None  # what the last fit used, for refits when a slider moves
        self._refitPending = False
        self._updatingGui = False

    # --- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ImageToMesh.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ImageToMeshLogic()
        self.logic.logCallback = self._log

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(self.POLL_MS)
        self._pollTimer.connect("timeout()", self._onPoll)
        self._refitTimer = qt.QTimer()
        self._refitTimer.setSingleShot(True)
        self._refitTimer.setInterval(self.REFIT_DELAY_MS)
        self._refitTimer.connect("timeout()", self._onRefitTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.annotateButton.connect("clicked(bool)", self.onAnnotateButton)
        self.ui.drawRedButton.connect("clicked(bool)", lambda: self.onDrawButton("Red"))
        self.ui.drawYellowButton.connect("clicked(bool)", lambda: self.onDrawButton("Yellow"))
        self.ui.drawGreenButton.connect("clicked(bool)", lambda: self.onDrawButton("Green"))
        self.ui.fitButton.connect("clicked(bool)", self.onFitButton)
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda: self._fillModelLists(refresh=True))
        self.ui.installDependenciesButton.connect("clicked(bool)", self._ensureDependencies)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self._onMethodChanged)
        self.ui.priorComboBox.connect("currentIndexChanged(int)", lambda i: self._storeText("prior", self.ui.priorComboBox))
        self.ui.refinePriorComboBox.connect("currentIndexChanged(int)", lambda i: self._storeText("refinePrior", self.ui.refinePriorComboBox))
        self.ui.segmentComboBox.connect("currentIndexChanged(int)", self._onSegmentChanged)
        self.ui.refineInputSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: self._fillSegments())
        self.ui.curvesSelector.connect("checkedNodesChanged()", self._updateButtons)
        self.ui.exportModelsSelector.connect("checkedNodesChanged()", self._updateButtons)
        for slider in (self.ui.lambdaDirSlider, self.ui.lambdaRegSlider):
            slider.connect("valueChanged(double)", self._onFitLambdaChanged)
        for slider in (self.ui.refineLambdaDirSlider, self.ui.refineLambdaRegSlider):
            slider.connect("valueChanged(double)", lambda value: self._updateLambdaLabels())
        self.ui.resetLambdasButton.connect("clicked(bool)", self.onResetLambdas)
        self.ui.refineDefaultLambdasCheckBox.connect("toggled(bool)", lambda checked: self._updateLambdaLabels())

        self.ui.progressBar.setVisible(False)
        self._fillModelLists()
        self.initializeParameterNode()
        self._updateButtons()

    def cleanup(self) -> None:
        self.removeObservers()
        self._pollTimer.stop()
        self._refitTimer.stop()
        if self.logic is not None:
            self.logic.close()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._job["discard"] = True
            self._refitPending = False
            self.logic.backend.cancel()
        self._lastFit = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # --- parameter node -----------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is None or self._updatingGui:
            return
        self._updatingGui = True
        try:
            for name, combo in (("method", self.ui.methodComboBox), ("prior", self.ui.priorComboBox),
                                ("refinePrior", self.ui.refinePriorComboBox)):
                value = getattr(self._parameterNode, name)
                index = combo.findText(value) if value else -1
                if index >= 0 and combo.currentIndex != index:
                    combo.currentIndex = index
            self._showModelCard()
        finally:
            self._updatingGui = False
        self._updateLambdaLabels()
        self._updateButtons()

    def _storeText(self, name, combo) -> None:
        if self._parameterNode is not None and not self._updatingGui and combo.currentText:
            setattr(self._parameterNode, name, combo.currentText)

    # --- lists --------------------------------------------------------------------------------
    def _fillModelLists(self, refresh=False) -> None:
        missing = self.logic.missingDependencies()
        self.ui.installDependenciesButton.setVisible(bool(missing))
        try:
            methods, priors = [], []
            if not missing:
                self.logic.availableModels(refresh=refresh)
                methods, priors = self.logic.segmentationMethods(), self.logic.priors()
            else:
                self._setStatus(_("The worker's Python packages are not installed yet ({names}): "
                                  "click 'Install dependencies...'.").format(names=", ".join(missing)))
        except Exception as err:  # a broken model folder must not break the panel
            methods, priors = [], []
            self._log(f"could not list the bundled models: {err}")
        for combo, names in ((self.ui.methodComboBox, methods), (self.ui.priorComboBox, priors),
                             (self.ui.refinePriorComboBox, priors)):
            wasBlocked = combo.blockSignals(True)
            current = combo.currentText
            combo.clear()
            for name in names:
                combo.addItem(name)
            if current and combo.findText(current) >= 0:
                combo.currentIndex = combo.findText(current)
            combo.blockSignals(wasBlocked)
        if self._parameterNode is not None:
            for name, combo in (("method", self.ui.methodComboBox), ("prior", self.ui.priorComboBox),
                                ("refinePrior", self.ui.refinePriorComboBox)):
                if not getattr(self._parameterNode, name) and combo.count:
                    setattr(self._parameterNode, name, combo.currentText)
        self._showModelCard()

    def _onMethodChanged(self, index) -> None:
        self._storeText("method", self.ui.methodComboBox)
        self._showModelCard()

    def _showModelCard(self) -> None:
        name = self.ui.methodComboBox.currentText
        try:
            self.ui.modelCardLabel.text = self.logic.describeCard(name, self.logic.modelCard(name)) if name else ""
        except Exception:
            self.ui.modelCardLabel.text = ""

    def _fillSegments(self) -> None:
        node = self.ui.refineInputSelector.currentNode()
        combo = self.ui.segmentComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        if node is not None and node.IsA("vtkMRMLSegmentationNode"):
            segmentation = node.GetSegmentation()
            for i in range(segmentation.GetNumberOfSegments()):
                segmentId = segmentation.GetNthSegmentID(i)
                combo.addItem(segmentation.GetSegment(segmentId).GetName(), segmentId)
            if self._parameterNode is not None and self._parameterNode.refineSegmentId:
                index = combo.findData(self._parameterNode.refineSegmentId)
                if index >= 0:
                    combo.currentIndex = index
        combo.enabled = combo.count > 0
        combo.blockSignals(wasBlocked)
        self._onSegmentChanged()

    def _onSegmentChanged(self, index=None) -> None:
        if self._parameterNode is not None and self.ui.segmentComboBox.count:
            self._parameterNode.refineSegmentId = self.ui.segmentComboBox.itemData(self.ui.segmentComboBox.currentIndex) or ""
        self._updateButtons()

    # --- lambdas --------------------------------------------------------------------------------
    def _lambdas(self, refine=False):
        p = self._parameterNode
        if refine:
            if p.refineUseDefaultLambdas:
                return None, None
            return 10.0 ** p.refineLogLambdaDir, 10.0 ** p.refineLogLambdaReg
        return 10.0 ** p.logLambdaDir, 10.0 ** p.logLambdaReg

    def _updateLambdaLabels(self) -> None:
        if self._parameterNode is None:
            return
        for refine, dirLabel, regLabel in (
            (False, self.ui.lambdaDirValueLabel, self.ui.lambdaRegValueLabel),
            (True, self.ui.refineLambdaDirValueLabel, self.ui.refineLambdaRegValueLabel),
        ):
            lambdaDir, lambdaReg = self._lambdas(refine)
            dirLabel.text = _("inf (shared)") if lambdaDir is None else f"λ = {lambdaDir:.3g}"
            regLabel.text = _("0") if lambdaReg is None else f"λ = {lambdaReg:.3g}"
        useDefault = self._parameterNode.refineUseDefaultLambdas
        for slider in (self.ui.refineLambdaDirSlider, self.ui.refineLambdaRegSlider):
            slider.enabled = not useDefault

    def onResetLambdas(self) -> None:
        """Sliders back to the paper's weights for curves (refits when a fit exists)."""
        with slicer.util.NodeModify(self._parameterNode):
            self._parameterNode.logLambdaDir = float(np.log10(PAPER_CURVE_LAMBDAS[0]))
            self._parameterNode.logLambdaReg = float(np.log10(PAPER_CURVE_LAMBDAS[1]))

    def _onFitLambdaChanged(self, value=None) -> None:
        self._updateLambdaLabels()
        if self._lastFit is not None:
            self._refitTimer.start()  # refit when the slider rests, without blocking

    def _onRefitTimer(self) -> None:
        if self._lastFit is None:
            return
        if self._job is not None:
            if self._job["kind"] == "fit":
                self._refitPending = True
                self.logic.backend.cancel()
            return
        self._startFit(refit=True)

    # --- buttons --------------------------------------------------------------------------------
    def _updateButtons(self, *args) -> None:
        if self._parameterNode is None:
            return
        running = self._job is not None
        p = self._parameterNode
        buttons = {
            "segment": (self.ui.applyButton, bool(p.inputVolume and self.ui.methodComboBox.currentText)),
            "fit": (self.ui.fitButton, bool(self.ui.priorComboBox.currentText)),
            "refine": (self.ui.refineButton, bool(p.refineInput and self.ui.refinePriorComboBox.currentText)),
        }
        for kind, (button, ready) in buttons.items():
            if running:
                button.enabled = self._job["kind"] == kind  # the running one is the Cancel button
            else:
                button.enabled = ready
        self.ui.exportButton.enabled = not running and bool(self.ui.exportModelsSelector.checkedNodes())

    def onApplyButton(self) -> None:
        if self._cancelIfRunning("segment"):
            return
        if not self._ensureDependencies():
            return
        p = self._parameterNode
        self._start("segment", self.ui.applyButton,
                    lambda: self.logic.prepareSegment(p.inputVolume, self.ui.methodComboBox.currentText,
                                                      p.outputModel, p.roi, p.device))

    def onAnnotateButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not create the curves."), waitCursor=True):
            curves = self.logic.createAnnotationCurves(self._parameterNode.inputVolume)
            for curve in curves:
                self.ui.curvesSelector.setCheckState(curve, qt.Qt.Checked)
            self._annotationCurves = {c.GetAttribute(ATTRIBUTE_PREFIX + "SliceNode"): c for c in curves}
            self._log(_("Draw a closed curve on each slice view (Red first); use the Draw buttons to switch views."))
            self.onDrawButton("Red")

    def onDrawButton(self, sliceName) -> None:
        curves = getattr(self, "_annotationCurves", {})
        curve = curves.get(f"vtkMRMLSliceNode{sliceName}")
        if curve is None or not _nodeInScene(curve):
            self._setStatus(_("Click Annotate first."))
            return
        markupsLogic = slicer.modules.markups.logic()
        markupsLogic.SetActiveList(curve)
        markupsLogic.StartPlaceMode(True)

    def onFitButton(self) -> None:
        if self._cancelIfRunning("fit"):
            return
        if not self._ensureDependencies():
            return
        self._startFit(refit=False)

    def _startFit(self, refit: bool) -> None:
        p = self._parameterNode
        lambdaDir, lambdaReg = self._lambdas()
        if refit and self._lastFit is not None:
            curves = [c for c in self._lastFit["curves"] if _nodeInScene(c)]
            output = self._lastFit["output"] if _nodeInScene(self._lastFit["output"]) else p.fitOutputModel
        else:
            curves = list(self.ui.curvesSelector.checkedNodes())
            output = p.fitOutputModel

        def prepare():
            job, target = self.logic.prepareFitCurves(curves, self.ui.priorComboBox.currentText, lambdaDir, lambdaReg,
                                                      output, p.device)
            self._lastFit = {"curves": curves, "output": output}
            return job, target

        self._start("fit", self.ui.fitButton, prepare)

    def onRefineButton(self) -> None:
        if self._cancelIfRunning("refine"):
            return
        if not self._ensureDependencies():
            return
        p = self._parameterNode
        lambdaDir, lambdaReg = self._lambdas(refine=True)
        segmentId = p.refineSegmentId if p.refineInput is not None and p.refineInput.IsA("vtkMRMLSegmentationNode") else None
        self._start("refine", self.ui.refineButton,
                    lambda: self.logic.prepareRefine(p.refineInput, self.ui.refinePriorComboBox.currentText, segmentId,
                                                     lambdaDir, lambdaReg, p.refineOutputModel, p.device))

    def onExportButton(self) -> None:
        if self._job is not None:
            self._setStatus(_("Wait for the running job to finish (or cancel it) before exporting."))
            return
        if not self._ensureDependencies():
            return
        p = self._parameterNode
        folder = str(p.exportDirectory)
        suffix = "." + p.exportFormat.lower()
        for node in self.ui.exportModelsSelector.checkedNodes():
            with slicer.util.tryWithErrorDisplay(_("Export of '{name}' failed.").format(name=node.GetName()), waitCursor=True):
                report = self.logic.checkModel(node)
                self._log(f"{node.GetName()}: {report['summary']}")
                repair = False
                if not _isClean(report):
                    answer = qt.QMessageBox.question(
                        slicer.util.mainWindow(), _("Export"),
                        _("'{name}' is not clean: {summary}.\n\nRepair it before exporting?").format(
                            name=node.GetName(), summary=report["summary"]),
                        qt.QMessageBox.Yes | qt.QMessageBox.No | qt.QMessageBox.Cancel)
                    if answer == qt.QMessageBox.Cancel:
                        continue
                    repair = answer == qt.QMessageBox.Yes
                path = os.path.join(folder, _safeFileName(node.GetName()) + suffix)
                result = self.logic.exportModel(node, path, p.exportCoordinateSystem, repair=repair)
                note = " (repaired)" if result["repaired"] else ""
                self._log(f"wrote {result['path']} in {result['coordinateSystem']}{note}: {result['summary']}")
                self._setStatus(_("Exported to {folder}").format(folder=folder))

    # --- dependencies -------------------------------------------------------------------------
    def _ensureDependencies(self) -> bool:
        missing = self.logic.missingDependencies()
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(
            _("ImageToMesh needs these Python packages: {names}.\n\nDownload and install them now? "
              "(PyTorch comes through the PyTorch extension; this can take several minutes.)").format(names=", ".join(missing))):
            self._setStatus(_("Dependencies are missing; nothing was run."))
            return False
        with slicer.util.tryWithErrorDisplay(_("Installing the dependencies failed."), waitCursor=True):
            if "torch" in missing:
                try:
                    import PyTorchUtils
                except ImportError:
                    slicer.util.errorDisplay(_("Install the 'PyTorch' extension from the Extensions Manager, restart Slicer and try again."))
                    return False
                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=">=2.1") is None:
                    return False
            others = [name for name in missing if name != "torch"]
            if others:
                for requirement in _readRequirements(self.logic.requirementsPath()):
                    if any(requirement.lower().startswith(DEPENDENCIES[name].lower()) for name in others):
                        slicer.util.pip_install(requirement)
            self._fillModelLists(refresh=True)
        return not self.logic.missingDependencies()

    # --- running jobs -------------------------------------------------------------------------
    def _cancelIfRunning(self, kind) -> bool:
        if self._job is None:
            return False
        if self._job["kind"] == kind:
            self._refitPending = False
            self._setStatus(_("Cancelling..."))
            self.logic.backend.cancel()
        return True

    def _start(self, kind, button, prepare) -> None:
        try:
            job, target = prepare()
            self.logic.backend.start(job)
        except Exception as err:
            self._showError(err)
            return
        self._job = {"kind": kind, "target": target, "button": button, "label": button.text}
        button.text = _("Cancel")
        self.ui.progressBar.value = 0
        self.ui.progressBar.setVisible(True)
        self._setStatus(_("Running {what}...").format(what=job.describe()))
        self._log(f"started {job.describe()}")
        self._updateButtons()
        self._pollTimer.start()

    def _onPoll(self) -> None:
        if self._job is None:
            self._pollTimer.stop()
            return
        try:
            # a short wait, not 0: it lets the backend's reader threads run even where the
            # application holds Python's lock between timer ticks
            events = self.logic.backend.poll(0.02)
        except Exception as err:
            self._finishJob(error=err)
            return
        for event in events:
            if event.kind == "progress":
                self.ui.progressBar.value = int(round(100 * max(0.0, min(1.0, event.fraction))))
                if event.message:
                    self._setStatus(event.message)
            elif event.kind == "log":
                self._log(event.message)
            elif event.kind == "done":
                if self._job.get("discard"):  # the scene was closed meanwhile
                    self._finishJob(error=JobCancelled("cancelled"))
                    return
                try:
                    node = self.logic.applyResult(event.result, self._job["target"])
                except Exception as err:
                    self._finishJob(error=err)
                    return
                if self._job["kind"] == "fit" and self._lastFit is not None:
                    self._lastFit["output"] = node
                self._finishJob(node=node)
                return
            elif event.kind in ("error", "cancelled"):
                self._finishJob(error=event.exception())
                return

    def _finishJob(self, node=None, error=None) -> None:
        job, self._job = self._job, None
        self._pollTimer.stop()
        if job is not None:
            job["button"].text = job["label"]
        self.ui.progressBar.setVisible(False)
        if node is not None:
            self._setStatus(_("Created '{name}'.").format(name=node.GetName()))
            self._log(f"result: {node.GetName()}")
            self._selectOutput(job["kind"], node)
        elif isinstance(error, JobCancelled):
            self._setStatus(_("Cancelled; the scene is unchanged."))
            self._log("cancelled")
        elif error is not None:
            self._showError(error)
        self._updateButtons()
        if self._refitPending:
            self._refitPending = False
            self._startFit(refit=True)

    def _selectOutput(self, kind, node) -> None:
        name = {"segment": "outputModel", "fit": "fitOutputModel", "refine": "refineOutputModel"}[kind]
        if getattr(self._parameterNode, name) is None:
            setattr(self._parameterNode, name, node)
        self.ui.exportModelsSelector.setCheckState(node, qt.Qt.Checked)

    def _showError(self, err) -> None:
        if isinstance(err, InputError):
            message = str(err)
        elif isinstance(err, WorkerDied):
            message = f"{err}. Nothing was added to the scene; the worker restarts on the next run."
        elif isinstance(err, BackendError):
            message = f"{err}. Nothing was added to the scene."
        else:
            message = f"{type(err).__name__}: {err}"
            logging.exception("ImageToMesh error", exc_info=err)
        self._setStatus(message, error=True)
        self._log("error: " + message)

    def _setStatus(self, text, error=False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    def _log(self, message) -> None:
        if hasattr(self, "ui"):
            self.ui.logTextEdit.appendPlainText(str(message))
        logging.info("ImageToMesh: %s", message)


def _readRequirements(path) -> list:
    with open(path, encoding="utf-8") as handle:
        return [line.split("#", 1)[0].strip() for line in handle if line.split("#", 1)[0].strip()]


def _safeFileName(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_. " else "_" for c in name).strip() or "model"


#
# ImageToMeshTest
#


class ImageToMeshTest(ScriptedLoadableModuleTest):
    """Slicer's own test runner (the pytest suite in Testing/slicer covers far more)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ExportRoundTrip()
        self.setUp()
        self.test_Segment()

    def _sphereVolume(self):
        k, j, i = np.mgrid[0:24, 0:28, 0:32]
        array = (((i - 16) / 9.0) ** 2 + ((j - 14) / 8.0) ** 2 + ((k - 12) / 7.0) ** 2 <= 1.0).astype(np.uint8)
        ijkToRas = np.array([[0, 0, -1.5, 20], [1.2, 0, 0, -10], [0, -1.0, 0, 5], [0, 0, 0, 1]], dtype=float)
        return slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRas, name="sphere", nodeClassName="vtkMRMLLabelMapVolumeNode")

    def test_ExportRoundTrip(self):
        import tempfile

        from imagetomesh.geometry.isosurface import labelmap_to_mesh
        from imagetomesh.io.meshes import read_mesh

        self.delayDisplay("Export round trip")
        logic = ImageToMeshLogic(backend=InProcessBackend())
        try:
            labelNode = self._sphereVolume()
            mesh = labelmap_to_mesh(volumeFromNode(labelNode))
            model = logic.applyResult(mesh, ResultTarget("segment", "sphere mesh", labelNode))
            with tempfile.TemporaryDirectory() as folder:
                for space in ("LPS", "RAS"):
                    report = logic.exportModel(model, os.path.join(folder, f"sphere-{space}.stl"), space)
                    self.assertTrue(report["watertight"])
                    back = read_mesh(report["path"])
                    self.assertLess(np.abs(back.vertices - mesh.vertices).max(), 1e-3)
        finally:
            logic.close()
        self.delayDisplay("Export round trip passed")

    def test_Segment(self):
        logic = ImageToMeshLogic()
        try:
            if logic.missingDependencies() or not logic.segmentationMethods():
                self.delayDisplay("No segmentation model or dependencies installed; segmentation test skipped")
                return
            method = logic.segmentationMethods()[0]
            import imagetomesh

            # Resources/ sits beside ImageToMeshLib/ in a checkout and in the installed extension
            resources = pathlib.Path(imagetomesh.__file__).resolve().parents[2] / "Resources"
            image = str(resources / "SampleData" / "hippocampus" / "hippocampus_024.nii.gz")
            if not os.path.isfile(image):
                self.delayDisplay("Sample image not found; segmentation test skipped")
                return
            self.delayDisplay(f"Segmenting the sample with {method}")
            volumeNode = slicer.util.loadVolume(image)
            model = logic.segment(volumeNode, method)
            self.assertIsNotNone(model)
            self.assertGreater(model.GetPolyData().GetNumberOfPoints(), 100)
        finally:
            logic.close()
        self.delayDisplay("Segmentation test passed")
