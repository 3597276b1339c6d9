"""``ImageToMeshLogic``: everything the module does, usable without the panel (console, scripts, tests).

Scripting (Slicer's Python console)::

    logic = slicer.util.getModuleLogic("ImageToMesh")
    model = logic.segment(getNode("hippocampus_024"), "unet-hippocampus")
    model = logic.fitCurves([getNode("Curve Red"), getNode("Curve Green")], "dals-hippocampus")
    model = logic.refine(getNode("Segmentation"), "dals-hippocampus", segmentId="Segment_1")
    report = logic.exportModel(model, "/tmp/hippocampus.stl")   # LPS, as Slicer writes STL
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from imagetomesh.backend import Job, WorkerBackend, crop_volume, wait_for  # noqa: E402  (path set by sceneAdapters)
from imagetomesh.errors import InputError  # noqa: E402

from . import annotation, dependencies
from .parameterNode import DEVICES, ImageToMeshParameterNode
from .sceneAdapters import (
    NON_LINEAR_NOTE,
    ResultTarget,
    addOrganModels,
    addResultModel,
    check3D,
    meshFromModelNode,
    roiCornersLPS,
    segmentMaskFromNode,
    underNonLinearTransform,
    volumeFromNode,
)

#: Model kinds of the bundled zoo, as shown to the user.
KIND_LABELS = {
    "voxel2mesh": "Voxel2Mesh",
    "pixel2mesh3d": "Pixel2Mesh-3D",
    "unet": "U-Net + marching cubes",
    "implicitmeshnet": "ImplicitMeshNet",
    "nudf": "NUDF (neural unsigned distance field)",
    "dals": "DALS shape prior",
}


def isClean(report: dict) -> bool:
    """Whether a mesh-check report says watertight, manifold and free of self-intersections."""
    return (
        bool(report.get("watertight"))
        and bool(report.get("manifold"))
        and report.get("self_intersecting_faces", 0) <= 0
    )


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


class ImageToMeshLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable without the panel.

    Each public call blocks until the worker is done and returns the model node; on any error
    (:class:`InputError` for bad input, ``JobCancelled``, ``WorkerDied``, ``BackendError``) the
    scene is left unchanged. Long work runs in :attr:`backend` (a
    :class:`~imagetomesh.backend.WorkerBackend` by default; tests substitute a fake). The
    ``prepare*`` methods validate inputs and build ``(job, target)`` without running anything;
    the panel starts the job itself and polls, so it never blocks.
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
            self._backend = WorkerBackend(python=self.workerPython(), temp_root=self.temporaryFolder())
        return self._backend

    @backend.setter
    def backend(self, value) -> None:
        if self._backend is not None and self._backend is not value:
            self._backend.close()
        self._backend = value

    @staticmethod
    def temporaryFolder():
        """Slicer's temporary folder (Application Settings), or None outside the application."""
        app = getattr(slicer, "app", None)
        path = getattr(app, "temporaryPath", None) if app is not None else None
        return path if path and os.path.isdir(path) else None

    @staticmethod
    def workerPython() -> str:
        """The interpreter for the worker: Slicer's ``PythonSlicer`` launcher inside the application."""
        if hasattr(slicer, "app"):
            found = shutil.which("PythonSlicer")
            if found:
                return found
            candidate = os.path.join(
                os.path.dirname(sys.executable), "PythonSlicer" + (".exe" if os.name == "nt" else "")
            )
            if os.path.isfile(candidate):
                return candidate
        return sys.executable

    def close(self) -> None:
        """End the worker and its whole process tree, and remove its temporary files."""
        if self._backend is not None:
            self._backend.close()

    def _run(self, job: Job, progress=None):
        return wait_for(self.backend, job, progress or self.progressCallback, self.logCallback)

    # --- dependencies -------------------------------------------------------------------------
    @staticmethod
    def unsatisfiedDependencies() -> list:
        """:class:`~.dependencies.DependencyStatus` of the worker's packages that are missing or out of range."""
        return dependencies.unsatisfied()

    # --- models ---------------------------------------------------------------------------------
    def availableModels(self, refresh: bool = False) -> list:
        """``[{name, folder, kind, card}]`` of the bundled models (segmenters and DALS priors); needs no torch."""
        if self._models is None or refresh:
            from imagetomesh.backend import list_models

            self._models = list_models()
        return self._models

    def segmentationMethods(self) -> list:
        return [m["name"] for m in self.availableModels() if m["kind"] not in ("dals", "unknown")]

    def methodMismatches(self, inputVolume, roi=None) -> dict:
        """``{segmentation method: why it cannot segment this volume, or None}`` from each model card's
        ``input`` block (modality, field of view; :mod:`imagetomesh.compatibility`). Light: numpy only."""
        from imagetomesh.compatibility import mismatch

        if inputVolume is None:
            return {}
        volume = volumeFromNode(inputVolume, resampleNonLinear=False)  # on each selection: no resampling
        if roi is not None:
            try:
                volume = crop_volume(volume, roiCornersLPS(roi))
            except InputError:
                pass  # an ROI outside the image is reported when the user applies
        return {
            m["name"]: mismatch(volume, m["card"], m["name"])
            for m in self.availableModels()
            if m["kind"] not in ("dals", "unknown")
        }

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
            lines.append(
                f"Data: {data.get('name', '?')} ({data.get('licence', data.get('license', 'licence unknown'))})"
            )
        metrics = card.get("test_metrics") or card.get("metrics") or {}
        if isinstance(metrics, dict) and metrics:
            shown = ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in list(metrics.items())[:6]
            )
            lines.append(f"Test metrics: {shown}")
        return "<br>".join(lines)

    # --- parameter node -----------------------------------------------------------------------
    def getParameterNode(self) -> ImageToMeshParameterNode:
        return ImageToMeshParameterNode(super().getParameterNode())

    # --- segment ------------------------------------------------------------------------------
    def prepareSegment(self, inputVolume, method, outputModel=None, roi=None, device="auto", allowMismatch=False):
        """Validate the inputs and build ``(job, target)`` (nothing runs, the scene is untouched).

        ``allowMismatch`` segments an image the model's card says it was not made for (refused otherwise)."""
        if inputVolume is None:
            raise InputError("no input volume selected; choose a volume")
        if not method:
            raise InputError("no segmentation method chosen; choose one of the bundled models")
        volume = volumeFromNode(inputVolume)
        check3D(volume, inputVolume.GetName())
        if roi is not None:
            volume = crop_volume(volume, roiCornersLPS(roi))
            check3D(volume, f"{inputVolume.GetName()} inside ROI {roi.GetName()}")
        params = {
            "model": str(method),
            "device": DEVICES.get(device, device) or "auto",
            "allow_mismatch": bool(allowMismatch),
        }
        job = Job("segment", params, volume=volume)
        target = ResultTarget(
            "segment",
            f"{inputVolume.GetName()} {method}",
            inputVolume,
            outputModel,
            {"Method": str(method), "Input": inputVolume.GetID()},
        )
        if underNonLinearTransform(inputVolume):
            target.warnings.append(NON_LINEAR_NOTE.format(name=inputVolume.GetName()))
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
    @staticmethod
    def createAnnotationCurves(referenceNode=None, sliceNames=("Red", "Yellow", "Green")) -> list:
        """Empty closed curves, one per slice view (see :func:`.annotation.createAnnotationCurves`)."""
        return annotation.createAnnotationCurves(referenceNode, sliceNames)

    def prepareFitCurves(
        self, curveNodes, prior, lambdaDir=None, lambdaReg=None, outputModel=None, device="auto", iterations=None
    ):
        """``(job, target)`` of a curve fit; curves off their recorded slice plane are projected (``target.warnings``)."""
        if curveNodes is None:
            curveNodes = []
        elif not isinstance(curveNodes, (list, tuple)):
            curveNodes = [curveNodes]
        if not prior:
            raise InputError("no DALS prior chosen; choose one of the bundled priors")
        curves, used, warnings = [], [], []
        for node in curveNodes:
            if node is None:
                continue
            if not node.IsA("vtkMRMLMarkupsClosedCurveNode"):
                raise InputError(f"'{node.GetName()}' is not a closed curve; draw closed curves (Annotate)")
            points, warning = annotation.curveForFit(node)
            if points is not None:
                curves.append(points)
                used.append(node)
                if warning:
                    warnings.append(warning)
        if not curves:
            raise InputError(
                "no curves drawn: click Annotate and draw a closed curve (3 points or more) on at least one slice"
            )
        reference = None
        referenceId = used[0].GetAttribute(annotation.REFERENCE_ATTRIBUTE)
        if referenceId:
            reference = slicer.mrmlScene.GetNodeByID(referenceId)
        base = reference.GetName() if reference is not None else used[0].GetName()
        job = Job("fit_curves", _fitParams(prior, lambdaDir, lambdaReg, device, iterations), curves=curves)
        target = ResultTarget(
            "fit",
            f"{base} {prior}",
            reference if reference is not None else used[0],
            outputModel,
            {"Method": str(prior), "Curves": " ".join(n.GetID() for n in used)},
            warnings,
        )
        return job, target

    def fitCurves(
        self,
        curveNodes,
        prior,
        lambdaDir=None,
        lambdaReg=None,
        outputModel=None,
        device="auto",
        progress=None,
        iterations=None,
    ):
        """Fit DALS prior ``prior`` to closed-curve nodes (planar curves on slices); returns the model node.

        ``lambdaDir`` / ``lambdaReg`` / ``iterations`` of None mean the paper's defaults. Curves
        with fewer than three points are ignored; none at all is an :class:`InputError`.
        """
        job, target = self.prepareFitCurves(curveNodes, prior, lambdaDir, lambdaReg, outputModel, device, iterations)
        return self.applyResult(self._run(job, progress), target)

    # --- refine ---------------------------------------------------------------------------------
    def prepareRefine(
        self,
        inputNode,
        prior,
        segmentId=None,
        lambdaDir=None,
        lambdaReg=None,
        outputModel=None,
        device="auto",
        iterations=None,
    ):
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
        check3D(mask, base)
        if not mask.array.any():
            raise InputError(f"'{base}' is empty; paint the structure first")
        job = Job("refine", _fitParams(prior, lambdaDir, lambdaReg, device, iterations), volume=mask)
        attributes = {"Method": str(prior), "Input": inputNode.GetID()}
        if segmentId:
            attributes["Segment"] = str(segmentId)
        target = ResultTarget("refine", f"{base} {prior}", inputNode, outputModel, attributes)
        if inputNode.IsA("vtkMRMLScalarVolumeNode") and underNonLinearTransform(inputNode):
            target.warnings.append(NON_LINEAR_NOTE.format(name=inputNode.GetName()))
        return job, target

    def refine(
        self,
        inputNode,
        prior,
        segmentId=None,
        lambdaDir=None,
        lambdaReg=None,
        outputModel=None,
        device="auto",
        progress=None,
        iterations=None,
    ):
        """Refine a labelmap volume node or one segment of a segmentation node with DALS prior ``prior``.

        ``segmentId`` None takes the segmentation's first segment; a labelmap counts every
        nonzero voxel. ``lambdaDir`` / ``lambdaReg`` / ``iterations`` of None mean the paper's
        defaults for this task (one latent shared by all vertices, no regulariser).
        """
        job, target = self.prepareRefine(
            inputNode, prior, segmentId, lambdaDir, lambdaReg, outputModel, device, iterations
        )
        return self.applyResult(self._run(job, progress), target)

    # --- results into the scene ---------------------------------------------------------------
    @staticmethod
    def applyResult(mesh, target: ResultTarget):
        """Put ``mesh`` (LPS) into the scene as ``target`` describes; all or nothing (see
        :func:`.sceneAdapters.addResultModel`). A several-organ model's result (a list of
        :class:`~imagetomesh.organs.OrganMesh`) becomes one model node per organ in a folder, and the
        list of those nodes is returned (:func:`.sceneAdapters.addOrganModels`)."""
        if isinstance(mesh, list):
            return addOrganModels(mesh, target)
        return addResultModel(mesh, target)

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
        if repair and not isClean(report):
            mesh = self._run(Job("repair", mesh=mesh))
            report = self._run(Job("check", mesh=mesh))
            repaired = True
        written = write_mesh(mesh, path, space)
        return dict(report, path=str(written), coordinateSystem=space, repaired=repaired)
