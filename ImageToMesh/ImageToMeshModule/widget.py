"""``ImageToMeshWidget``: the panel. The only Qt code of the module.

Jobs run in the Logic's worker process; a timer polls it, so the panel never blocks. Each
running job turns its button into Cancel. Moving a lambda slider, or editing a curve that took
part in the last fit, refits after the input rests (:attr:`ImageToMeshWidget.REFIT_DELAY_MS`).
"""

from __future__ import annotations

import logging
import os

import ctk  # noqa: F401  (the .ui uses ctk widgets)
import numpy as np
import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget

from imagetomesh.backend import BackendError, JobCancelled, WorkerDied  # noqa: E402  (path set by sceneAdapters)
from imagetomesh.errors import InputError  # noqa: E402

from . import annotation, dependencies
from .logic import ImageToMeshLogic, isClean
from .parameterNode import PAPER_CURVE_LAMBDAS
from .sceneAdapters import nodeInScene

#: Slice views that get an annotation curve, in drawing order.
SLICE_VIEWS = ("Red", "Yellow", "Green")
#: What the panel says instead of the library's "pass --allow-mismatch" (the check box of that name)
ALLOW_MISMATCH_IN_PANEL = "tick 'Also offer models not made for this volume'"

#: Markups events that mean a curve's shape changed (VTK names custom events alike in callbacks,
#: so the first point's placement has its own callback).
_CURVE_EDIT_EVENTS = ("PointAddedEvent", "PointRemovedEvent", "PointModifiedEvent", "PointPositionUndefinedEvent")


class ImageToMeshWidget(ScriptedLoadableModuleWidget, slicer.util.VTKObservationMixin):
    """The panel."""

    POLL_MS = 100
    REFIT_DELAY_MS = 400

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        slicer.util.VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # the running job: dict(kind, target, button, label[, discard])
        self._lastFit = None  # what the last fit used, for refits: dict(curves, output)
        self._refitPending = False
        self._updatingGui = False
        self._annotationCurves = {}  # slice name -> curve node

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
        for name in SLICE_VIEWS:
            placeWidget = self._placeWidget(name)
            placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
            placeWidget.enabled = False
            placeWidget.connect("activeMarkupsPlaceModeChanged(bool)", self._updatePlaceLabels)
        self.ui.fitButton.connect("clicked(bool)", self.onFitButton)
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda: self._fillModelLists(refresh=True))
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self._onMethodChanged)
        self.ui.priorComboBox.connect(
            "currentIndexChanged(int)", lambda i: self._storeText("prior", self.ui.priorComboBox)
        )
        self.ui.refinePriorComboBox.connect(
            "currentIndexChanged(int)", lambda i: self._storeText("refinePrior", self.ui.refinePriorComboBox)
        )
        self.ui.segmentComboBox.connect("currentIndexChanged(int)", self._onSegmentChanged)
        self.ui.curvesSelector.connect("checkedNodesChanged()", self._updateButtons)
        self.ui.exportModelsSelector.connect("checkedNodesChanged()", self._updateButtons)
        for slider in (self.ui.lambdaDirSlider, self.ui.lambdaRegSlider):
            slider.connect("valueChanged(double)", self._onFitLambdaChanged)
        for slider in (self.ui.refineLambdaDirSlider, self.ui.refineLambdaRegSlider):
            slider.connect("valueChanged(double)", lambda value: self._updateLambdaLabels())
        self.ui.resetLambdasButton.connect("clicked(bool)", self.onResetLambdas)
        self.ui.refineDefaultLambdasCheckBox.connect("toggled(bool)", lambda checked: self._updateLambdaLabels())

        self.ui.progressBar.setVisible(False)
        self.ui.warningLabel.setVisible(False)
        self._fillModelLists()
        self._showDependencyState()
        self.initializeParameterNode()
        self._updateButtons()

    def cleanup(self) -> None:
        """Module unloaded or Slicer closing: stop placing, stop timers, end the worker's whole process tree."""
        self._stopPlacing()
        self.removeObservers()
        self._pollTimer.stop()
        self._refitTimer.stop()
        if self.logic is not None:
            self.logic.close()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._showDependencyState()

    def exit(self) -> None:
        self._stopPlacing()
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self._stopPlacing()
        if self._job is not None:
            self._job["discard"] = True
            self._refitPending = False
            self.logic.backend.cancel()
        self._refitTimer.stop()
        self._lastFit = None
        self._setAnnotationCurves({})
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
        self._storeModelChoices()

    def setParameterNode(self, inputParameterNode) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified):
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is None or self._updatingGui:
            return
        self._updatingGui = True
        try:
            for name, combo in (
                ("method", self.ui.methodComboBox),
                ("prior", self.ui.priorComboBox),
                ("refinePrior", self.ui.refinePriorComboBox),
            ):
                value = getattr(self._parameterNode, name)
                index = combo.findText(value) if value else -1
                if index >= 0 and combo.currentIndex != index:
                    combo.currentIndex = index
            self._showModelCard()
        finally:
            self._updatingGui = False
        self._listMethodsForVolume()
        if self._parameterNode.refineInput is not getattr(self, "_observedRefineInput", None):
            # after the wrapper has stored the choice: reacting to the selector's own signal would
            # write the segment ID first, and the wrapper would then restore the previous input
            self._onRefineInputChanged(self._parameterNode.refineInput)
        self._updateLambdaLabels()
        self._updateButtons()

    def _storeText(self, name, combo) -> None:
        if self._parameterNode is not None and not self._updatingGui and combo.currentText:
            setattr(self._parameterNode, name, combo.currentText)

    # --- dependencies -------------------------------------------------------------------------
    def _showDependencyState(self) -> list:
        """Name what the worker lacks in the panel (before anything can be run); returns the unsatisfied ones."""
        missing = self.logic.unsatisfiedDependencies()
        self.ui.installDependenciesButton.setVisible(bool(missing))
        self.ui.dependenciesLabel.setVisible(bool(missing))
        if missing:
            self.ui.dependenciesLabel.text = _(
                "Before the first run, ImageToMesh needs these Python packages in Slicer: {names}. "
                "Click 'Install dependencies...' (or Apply) to install them; you are asked first."
            ).format(names=dependencies.describeUnsatisfied(missing))
        else:
            self.ui.dependenciesLabel.text = ""
        return missing

    def onInstallDependencies(self) -> None:
        self._ensureDependencies()

    def _ensureDependencies(self) -> bool:
        """True when the worker's packages are usable; otherwise asks, installs with progress, and reports."""
        missing = self._showDependencyState()
        if not missing:
            return True
        names = dependencies.describeUnsatisfied(missing)
        if slicer.app.testingEnabled():
            self._setStatus(
                _("Testing mode: the missing packages are not installed ({names}).").format(names=names), error=True
            )
            return False
        if not slicer.util.confirmOkCancelDisplay(
            _(
                "ImageToMesh needs these Python packages: {names}.\n\nDownload and install them now? PyTorch comes "
                "through the PyTorch extension (a CUDA or CPU build for this computer); the others with pip. "
                "Slicer's own numpy, VTK and SimpleITK are left as they are. This can take several minutes."
            ).format(names=names),
            windowTitle=_("Image To Mesh: dependencies"),
        ):
            self._setStatus(_("Dependencies are missing; nothing was run."))
            return False
        dialog = slicer.util.createProgressDialog(
            labelText=_("Installing dependencies..."), maximum=len(missing), windowTitle=_("Image To Mesh")
        )

        def progress(done, total, message):
            dialog.maximum = total
            dialog.value = done
            dialog.labelText = message
            self._log(message)
            slicer.app.processEvents()

        try:
            dependencies.installDependencies(
                missing,
                progress,
                installTorch=dependencies.pyTorchInstaller(),
                temporaryFolder=self.logic.temporaryFolder(),
            )
        except Exception as err:
            self._showError(err)
            return False
        finally:
            dialog.close()
        self._fillModelLists(refresh=True)
        return not self._showDependencyState()

    # --- lists --------------------------------------------------------------------------------
    def _fillModelLists(self, refresh=False) -> None:
        try:
            self.logic.availableModels(refresh=refresh)  # cards only: needs neither torch nor the worker
            methods, priors = self.logic.segmentationMethods(), self.logic.priors()
        except Exception as err:  # a broken model folder must not break the panel
            methods, priors = [], []
            self._log(f"could not list the bundled models: {err}")
        if not methods and not priors:
            self._setStatus(_("No bundled models were found; reinstall the extension."), error=True)
        for combo, names in (
            (self.ui.methodComboBox, methods),
            (self.ui.priorComboBox, priors),
            (self.ui.refinePriorComboBox, priors),
        ):
            _setItems(combo, names, combo.currentText)
        self._storeModelChoices()
        self._methodsListedFor = None  # the full list again: filter it for the volume anew
        if self._parameterNode is not None:
            self._listMethodsForVolume()
        self._showModelCard()

    def _storeModelChoices(self) -> None:
        """Parameters without a method or prior take the combo boxes' current choice."""
        if self._parameterNode is None:
            return
        for name, combo in (
            ("method", self.ui.methodComboBox),
            ("prior", self.ui.priorComboBox),
            ("refinePrior", self.ui.refinePriorComboBox),
        ):
            if not getattr(self._parameterNode, name) and combo.count:
                setattr(self._parameterNode, name, combo.currentText)

    def _listMethodsForVolume(self) -> None:
        """List only the segmentation methods whose card fits the input volume (and ROI); say why the others are not."""
        p = self._parameterNode
        volume, roi = p.inputVolume, p.roi
        key = (*((n.GetID(), n.GetMTime()) if n is not None else None for n in (volume, roi)), p.allowMismatch)
        if key == getattr(self, "_methodsListedFor", None):
            return
        self._methodsListedFor = key
        try:
            mismatches = self.logic.methodMismatches(volume, roi)
        except Exception as err:  # an unreadable volume is reported when the user applies
            self._log(f"could not check which models fit the volume: {err}")
            mismatches = {}
        allowed = [name for name in self.logic.segmentationMethods() if p.allowMismatch or not mismatches.get(name)]
        combo = self.ui.methodComboBox
        _setItems(combo, allowed, p.method or combo.currentText)
        self._mismatches = {name: reason for name, reason in mismatches.items() if reason}
        if combo.currentText and combo.currentText != p.method:
            p.method = combo.currentText
        self._showModelCard()

    def _onMethodChanged(self, index) -> None:
        self._storeText("method", self.ui.methodComboBox)
        self._showModelCard()

    def _showModelCard(self) -> None:
        name = self.ui.methodComboBox.currentText
        try:
            text = self.logic.describeCard(name, self.logic.modelCard(name)) if name else ""
        except Exception:
            text = ""
        mismatches = getattr(self, "_mismatches", {})
        if mismatches:
            others = "<br>".join(f"{other}: {reason}" for other, reason in sorted(mismatches.items()))
            heading = (
                _("Not made for this volume (listed all the same):")
                if self._parameterNode is not None and self._parameterNode.allowMismatch
                else _("Not listed for this volume:")
            )
            text += ("<br>" if text else "") + f"<i>{heading}</i><br>{others}"
        self.ui.modelCardLabel.text = text

    def _onRefineInputChanged(self, node) -> None:
        """Follow the segments of the chosen segmentation (added, removed or renamed later too)."""
        events = (
            slicer.vtkSegmentation.SegmentAdded,
            slicer.vtkSegmentation.SegmentRemoved,
            slicer.vtkSegmentation.SegmentModified,
        )
        previous = getattr(self, "_observedRefineInput", None)
        if previous is not None and previous.IsA("vtkMRMLSegmentationNode"):
            for event in events:
                self.removeObserver(previous, event, self._onSegmentsChanged)
        self._observedRefineInput = node
        if node is not None and node.IsA("vtkMRMLSegmentationNode"):
            for event in events:
                self.addObserver(node, event, self._onSegmentsChanged)
        self._fillSegments()

    def _onSegmentsChanged(self, caller, event) -> None:
        self._fillSegments()

    def _fillSegments(self) -> None:
        node = self._parameterNode.refineInput if self._parameterNode is not None else None
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
            self._parameterNode.refineSegmentId = (
                self.ui.segmentComboBox.itemData(self.ui.segmentComboBox.currentIndex) or ""
            )
        self._updateButtons()

    # --- lambdas --------------------------------------------------------------------------------
    def _lambdas(self, refine=False):
        p = self._parameterNode
        if refine:
            if p.refineUseDefaultLambdas:
                return None, None
            return 10.0**p.refineLogLambdaDir, 10.0**p.refineLogLambdaReg
        return 10.0**p.logLambdaDir, 10.0**p.logLambdaReg

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
        self._scheduleRefit()

    def _scheduleRefit(self) -> None:
        """Refit once the input rests (restarts the debounce timer); nothing before a first fit."""
        if self._lastFit is not None:
            self._refitTimer.start()

    def _onRefitTimer(self) -> None:
        if self._lastFit is None:
            return
        if self._job is not None:
            if self._job["kind"] == "fit":
                self._refitPending = True
                self.logic.backend.cancel()
            return
        self._startFit(refit=True)

    # --- annotation curves --------------------------------------------------------------------
    def _placeWidget(self, sliceName):
        return getattr(self.ui, f"{sliceName.lower()}PlaceWidget")

    def _placeLabel(self, sliceName):
        return getattr(self.ui, f"{sliceName.lower()}PlaceLabel")

    def onAnnotateButton(self) -> None:
        try:
            curves = self.logic.createAnnotationCurves(self._parameterNode.inputVolume, SLICE_VIEWS)
        except Exception as err:
            self._showError(err)
            return
        for curve in curves:
            self.ui.curvesSelector.setCheckState(curve, qt.Qt.Checked)
        self._setAnnotationCurves({annotation.sliceNodeOf(c).GetLayoutName(): c for c in curves})
        self._log(
            _(
                "Draw a closed curve on each slice view; the Red view is placing now. "
                "Use the place buttons to switch views."
            )
        )
        first = next(name for name in SLICE_VIEWS if name in self._annotationCurves)
        self._placeWidget(first).setPlaceModeEnabled(True)

    def _setAnnotationCurves(self, curves: dict) -> None:
        """Bind each view's place widget to its curve and watch the curves for edits."""
        for curve in self._annotationCurves.values():
            for event, callback in self._curveObservations():
                if self.hasObserver(curve, event, callback):
                    self.removeObserver(curve, event, callback)
        self._annotationCurves = dict(curves)
        for name in SLICE_VIEWS:
            curve = self._annotationCurves.get(name)
            placeWidget = self._placeWidget(name)
            placeWidget.setCurrentNode(curve)
            placeWidget.enabled = curve is not None
            if curve is not None:
                for event, callback in self._curveObservations():
                    self.addObserver(curve, event, callback)
        self._updatePlaceLabels()

    def _curveObservations(self) -> list:
        observations = [(getattr(slicer.vtkMRMLMarkupsNode, name), self._onCurveEdited) for name in _CURVE_EDIT_EVENTS]
        return observations + [(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self._onCurvePointDefined)]

    def _stopPlacing(self) -> None:
        """End place mode for this module's curves (exit, scene close, cleanup)."""
        for name in SLICE_VIEWS:
            placeWidget = self._placeWidget(name) if hasattr(self, "ui") else None
            if placeWidget is not None and placeWidget.currentNode() is not None and placeWidget.placeModeEnabled:
                placeWidget.setPlaceModeEnabled(False)
        self._updatePlaceLabels()

    def _updatePlaceLabels(self, *args) -> None:
        if not hasattr(self, "ui"):
            return
        for name in SLICE_VIEWS:
            curve = self._annotationCurves.get(name)
            label = self._placeLabel(name)
            if curve is None:
                label.text = name
            else:
                placing = self._placeWidget(name).placeModeEnabled
                points = curve.GetNumberOfDefinedControlPoints()
                label.text = (
                    _("{view}: placing ({count} points)").format(view=name, count=points)
                    if placing
                    else _("{view}: {count} points").format(view=name, count=points)
                )

    def _onCurvePointDefined(self, curve, event) -> None:
        if curve.GetNumberOfDefinedControlPoints() == 1:
            sliceNode = annotation.sliceNodeOf(curve)
            if sliceNode is not None:  # the plane the user really draws on (they may have scrolled)
                annotation.recordSlicePlane(curve, sliceNode)
        self._onCurveEdited(curve, event)

    def _onCurveEdited(self, curve, event) -> None:
        self._updatePlaceLabels()
        if self._lastFit is not None and any(c is curve for c in self._fitCurves(refit=True)):
            self._scheduleRefit()

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
        self._start(
            "segment",
            self.ui.applyButton,
            lambda: self.logic.prepareSegment(
                p.inputVolume, self.ui.methodComboBox.currentText, p.outputModel, p.roi, p.device, p.allowMismatch
            ),
        )

    def onFitButton(self) -> None:
        if self._cancelIfRunning("fit"):
            return
        if not self._ensureDependencies():
            return
        self._startFit(refit=False)

    def _fitCurves(self, refit: bool) -> list:
        """The curves a fit uses: the checked ones (for a refit, the last fit's when none is checked)."""
        checked = [c for c in self.ui.curvesSelector.checkedNodes() if nodeInScene(c)]
        if refit and not checked and self._lastFit is not None:
            return [c for c in self._lastFit["curves"] if nodeInScene(c)]
        return checked

    def _startFit(self, refit: bool) -> None:
        p = self._parameterNode
        lambdaDir, lambdaReg = self._lambdas()
        curves = self._fitCurves(refit)
        output = p.fitOutputModel
        if refit and self._lastFit is not None and nodeInScene(self._lastFit["output"]):
            output = self._lastFit["output"]

        def prepare():
            job, target = self.logic.prepareFitCurves(
                curves, self.ui.priorComboBox.currentText, lambdaDir, lambdaReg, output, p.device
            )
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
        segmentId = (
            p.refineSegmentId if p.refineInput is not None and p.refineInput.IsA("vtkMRMLSegmentationNode") else None
        )
        self._start(
            "refine",
            self.ui.refineButton,
            lambda: self.logic.prepareRefine(
                p.refineInput,
                self.ui.refinePriorComboBox.currentText,
                segmentId,
                lambdaDir,
                lambdaReg,
                p.refineOutputModel,
                p.device,
            ),
        )

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
            try:
                report = self.logic.checkModel(node)
                self._log(f"{node.GetName()}: {report['summary']}")
                repair = False
                if not isClean(report):
                    answer = slicer.util.messageBox(
                        _("'{name}' is not clean: {summary}.\n\nRepair it before exporting?").format(
                            name=node.GetName(), summary=report["summary"]
                        ),
                        windowTitle=_("Image To Mesh: export"),
                        icon=qt.QMessageBox.Question,
                        standardButtons=qt.QMessageBox.Yes | qt.QMessageBox.No | qt.QMessageBox.Cancel,
                    )
                    if answer == qt.QMessageBox.Cancel:
                        self._log(f"{node.GetName()}: export cancelled")
                        continue
                    repair = answer == qt.QMessageBox.Yes
                path = os.path.join(folder, _safeFileName(node.GetName()) + suffix)
                result = self.logic.exportModel(node, path, p.exportCoordinateSystem, repair=repair)
            except Exception as err:
                self._showError(err, _("Export of '{name}' failed").format(name=node.GetName()))
                continue
            note = " (repaired)" if result["repaired"] else ""
            self._log(f"wrote {result['path']} in {result['coordinateSystem']}{note}: {result['summary']}")
            self._setStatus(_("Exported to {folder}").format(folder=folder))

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
        self._showWarnings(target.warnings)
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
        if isinstance(node, list):  # one model per organ, in a new folder
            self._setStatus(
                _("Created {count} organ model(s) in folder '{folder}'.").format(
                    count=len(node), folder=job["target"].name
                )
            )
            self._log("result: " + ", ".join(n.GetName() for n in node))
            self._showWarnings(job["target"].warnings)
            for organNode in node:
                self.ui.exportModelsSelector.setCheckState(organNode, qt.Qt.Checked)
        elif node is not None:
            self._setStatus(_("Created '{name}'.").format(name=node.GetName()))
            self._log(f"result: {node.GetName()}")
            self._selectOutput(job["kind"], node)
        elif isinstance(error, JobCancelled):
            self._setStatus(_("Cancelled; the scene is unchanged."))
            self._log("cancelled")
        elif error is not None:
            self._showError(error)
        self._updateButtons()
        if self._refitPending and self._parameterNode is not None:
            self._refitPending = False
            self._startFit(refit=True)

    def _selectOutput(self, kind, node) -> None:
        name = {"segment": "outputModel", "fit": "fitOutputModel", "refine": "refineOutputModel"}[kind]
        if getattr(self._parameterNode, name) is None:
            setattr(self._parameterNode, name, node)
        self.ui.exportModelsSelector.setCheckState(node, qt.Qt.Checked)

    # --- messages -----------------------------------------------------------------------------
    def _showError(self, err, what=None) -> None:
        """An error in the status line, the log and a message box (Slicer's ``errorDisplay``)."""
        if isinstance(err, InputError):  # the library names its CLI's override; the panel has a check box for it
            message = str(err).replace("pass --allow-mismatch", ALLOW_MISMATCH_IN_PANEL)
        elif isinstance(err, WorkerDied):
            message = f"{err}. Nothing was added to the scene; the worker restarts on the next run."
        elif isinstance(err, BackendError):
            message = f"{err}. Nothing was added to the scene."
        elif isinstance(err, dependencies.InstallError):
            message = f"Installing the dependencies failed: {err}"
        else:
            message = f"{type(err).__name__}: {err}"
            logging.error("ImageToMesh error", exc_info=err)
        if what:
            message = f"{what}: {message}"
        self._setStatus(message, error=True)
        self._log("error: " + message)
        slicer.util.errorDisplay(message, windowTitle=_("Image To Mesh"))

    def _showWarnings(self, warnings) -> None:
        self.ui.warningLabel.text = "\n".join(warnings)
        self.ui.warningLabel.setVisible(bool(warnings))
        for warning in warnings:
            self._log("warning: " + warning)

    def _setStatus(self, text, error=False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    def _log(self, message) -> None:
        if hasattr(self, "ui"):
            self.ui.logTextEdit.appendPlainText(str(message))
        logging.info("ImageToMesh: %s", message)


def _setItems(combo, names, keep: str) -> None:
    """Fill ``combo`` with ``names`` without emitting signals, keeping ``keep`` selected if it is still there."""
    wasBlocked = combo.blockSignals(True)
    combo.clear()
    for name in names:
        combo.addItem(name)
    if keep and combo.findText(keep) >= 0:
        combo.currentIndex = combo.findText(keep)
    combo.blockSignals(wasBlocked)


def _safeFileName(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_. " else "_" for c in name).strip() or "model"
