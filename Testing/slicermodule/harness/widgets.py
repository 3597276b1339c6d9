"""Small stand-ins for Slicer's own widgets (qMRML*, qSlicer*, ctk*), PythonQt-style.

Each implements the part of the real widget's API that the module and Slicer's
``parameterNodeWrapper`` use, on the real MRML scene: node combo boxes list the scene's nodes
of their ``nodeTypes`` and follow node additions and removals; the markups place widget drives
the scene's real selection and interaction nodes, as the real one does. Anything else is absent,
so a call to an API the real widget lacks fails here too.
"""

from __future__ import annotations

import types

import slicer
import vtk
from PySide6 import QtCore, QtWidgets
from PySide6.QtCore import Property, Signal

from .pythonqt import CUSTOM_WIDGETS, PythonQtObject, wrap_class


def _register(cls):
    CUSTOM_WIDGETS[cls.__name__] = cls
    return cls


def _stored(name, kind, default):
    """A Qt property kept in ``self._values``."""

    def getter(self):
        return self._values.get(name, default)

    def setter(self, value):
        self._values[name] = value

    return Property(kind, getter, setter)


# --- ctk ----------------------------------------------------------------------------------------
@_register
class ctkCollapsibleButton(PythonQtObject, QtWidgets.QWidget):
    def __init__(self, parent=None):
        QtWidgets.QWidget.__init__(self, parent)
        self._values = {}

    text = _stored("text", str, "")
    collapsed = _stored("collapsed", bool, False)


@_register
class ctkSliderWidget(PythonQtObject, QtWidgets.QWidget):
    """A double slider with a spin box: ``value`` clamped to ``[minimum, maximum]``, ``valueChanged(double)``."""

    valueChanged = Signal(float)

    def __init__(self, parent=None):
        QtWidgets.QWidget.__init__(self, parent)
        self._values = {}
        self._value, self._minimum, self._maximum = 0.0, 0.0, 99.0

    def _get_value(self):
        return self._value

    def _set_value(self, value):
        value = min(max(float(value), self._minimum), self._maximum)
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def _get_minimum(self):
        return self._minimum

    def _set_minimum(self, value):
        self._minimum = float(value)
        self._maximum = max(self._maximum, self._minimum)
        self._set_value(self._value)

    def _get_maximum(self):
        return self._maximum

    def _set_maximum(self, value):
        self._maximum = float(value)
        self._minimum = min(self._minimum, self._maximum)
        self._set_value(self._value)

    value = Property(float, _get_value, _set_value, notify=valueChanged)
    minimum = Property(float, _get_minimum, _set_minimum)
    maximum = Property(float, _get_maximum, _set_maximum)
    decimals = _stored("decimals", int, 2)
    singleStep = _stored("singleStep", float, 1.0)
    pageStep = _stored("pageStep", float, 10.0)


@_register
class ctkDirectoryButton(PythonQtObject, QtWidgets.QWidget):
    directoryChanged = Signal(str)

    def __init__(self, parent=None):
        QtWidgets.QWidget.__init__(self, parent)
        self._directory = ""

    def _get(self):
        return self._directory

    def _set(self, value):
        if str(value) != self._directory:
            self._directory = str(value)
            self.directoryChanged.emit(self._directory)

    directory = Property(str, _get, _set, notify=directoryChanged)


def _plain(name, base=QtWidgets.QWidget):
    """A widget class that only needs to exist (named in type checks of the parameterNodeWrapper)."""
    return _register(type(name, (PythonQtObject, base), {"__module__": "ctk"}))


def make_ctk_module() -> types.ModuleType:
    module = types.ModuleType("ctk")
    module.__doc__ = "test stand-in for Slicer's ctk module (see Testing/slicermodule/harness/widgets.py)"
    module.ctkCollapsibleButton = ctkCollapsibleButton
    module.ctkSliderWidget = ctkSliderWidget
    module.ctkDirectoryButton = ctkDirectoryButton
    for name in (
        "ctkCheckBox",
        "ctkCheckablePushButton",
        "ctkComboBox",
        "ctkDoubleSlider",
        "ctkDoubleSpinBox",
        "ctkRangeWidget",
        "ctkDoubleRangeSlider",
        "ctkPathLineEdit",
        "ctkColorPickerButton",
    ):
        setattr(module, name, _plain(name))
    module.ctkMessageBox = wrap_class(QtWidgets.QMessageBox)
    return module


# --- qMRML / qSlicer ------------------------------------------------------------------------------
class _SceneWidget(PythonQtObject, QtWidgets.QWidget):
    """``setMRMLScene(scene)`` / ``mrmlScene()`` and the ``mrmlSceneChanged`` signal."""

    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None):
        QtWidgets.QWidget.__init__(self, parent)
        self._values = {}
        self._scene = None
        self._sceneTags = []

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene):
        for tag in self._sceneTags:
            self._scene.RemoveObserver(tag)
        self._sceneTags = []
        self._scene = scene
        if scene is not None:
            for event in self._sceneEvents():
                self._sceneTags.append(scene.AddObserver(event, self._onSceneEvent))
        self._sceneChanged()
        self.mrmlSceneChanged.emit(scene)

    def _sceneEvents(self):
        return ()

    def _sceneChanged(self):
        pass

    def _onSceneEvent(self, caller, event):
        pass


@_register
class qMRMLWidget(_SceneWidget):
    pass


@_register
class qSlicerWidget(_SceneWidget):
    pass


@_register
class qMRMLNodeComboBox(_SceneWidget):
    """The scene's nodes of ``nodeTypes``; ``currentNodeChanged(vtkMRMLNode*)`` when the selection changes.

    As the real one: with ``noneEnabled`` off it selects the first node it can; a node of another
    class cannot become current (``setCurrentNode`` selects nothing instead); a removed current
    node is unselected.
    """

    currentNodeChanged = Signal(object)
    currentNodeIDChanged = Signal(str)
    nodeAdded = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._current = None

    nodeTypes = _stored("nodeTypes", "QStringList", [])
    hideChildNodeTypes = _stored("hideChildNodeTypes", "QStringList", [])
    showChildNodeTypes = _stored("showChildNodeTypes", bool, True)
    showHidden = _stored("showHidden", bool, False)
    noneEnabled = _stored("noneEnabled", bool, False)
    addEnabled = _stored("addEnabled", bool, True)
    removeEnabled = _stored("removeEnabled", bool, True)
    renameEnabled = _stored("renameEnabled", bool, False)
    editEnabled = _stored("editEnabled", bool, False)
    noneDisplay = _stored("noneDisplay", str, "None")
    baseName = _stored("baseName", str, "")
    selectNodeUponCreation = _stored("selectNodeUponCreation", bool, True)

    def _accepts(self, node) -> bool:
        if node is None or (node.GetHideFromEditors() and not self._values.get("showHidden", False)):
            return False
        types_ = list(self._values.get("nodeTypes", []))
        if self._values.get("showChildNodeTypes", True):
            matched = any(node.IsA(t) for t in types_)
        else:
            matched = node.GetClassName() in types_
        return matched and not any(node.IsA(t) for t in self._values.get("hideChildNodeTypes", []))

    def nodes(self) -> list:
        if self._scene is None:
            return []
        return [
            self._scene.GetNthNode(i)
            for i in range(self._scene.GetNumberOfNodes())
            if self._accepts(self._scene.GetNthNode(i))
        ]

    def nodeCount(self) -> int:
        return len(self.nodes())

    def currentNode(self):
        return self._current

    def currentNodeID(self) -> str:
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node) -> None:
        if node is not None and not (self._accepts(node) and node.GetScene() is self._scene):
            node = None  # not one of the listed nodes: nothing is selected
        self._setCurrent(node)

    def setCurrentNodeID(self, nodeID) -> None:
        self.setCurrentNode(self._scene.GetNodeByID(nodeID) if self._scene is not None and nodeID else None)

    def _setCurrent(self, node) -> None:
        if node is not self._current:
            self._current = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")

    def _sceneEvents(self):
        return (slicer.vtkMRMLScene.NodeAddedEvent, slicer.vtkMRMLScene.NodeRemovedEvent)

    def _sceneChanged(self):
        self._current = None
        if not self._values.get("noneEnabled", False):
            candidates = self.nodes()
            self._setCurrent(candidates[0] if candidates else None)
        else:
            self.currentNodeChanged.emit(None)

    def _onSceneEvent(self, caller, event):
        current = self._current
        if current is not None and self._scene.GetNodeByID(current.GetID()) is not current:
            self._current = None  # the current node was removed
        if self._current is None and not self._values.get("noneEnabled", False):
            candidates = self.nodes()
            self._current = candidates[0] if candidates else None
        if self._current is not current:
            self.currentNodeChanged.emit(self._current)
            self.currentNodeIDChanged.emit(self._current.GetID() if self._current is not None else "")


@_register
class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    """A node combo box whose nodes carry check boxes: ``checkedNodes()``, ``checkedNodesChanged()``."""

    checkedNodesChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._checked = []

    def setCheckState(self, node, state) -> None:
        checked = state == QtCore.Qt.CheckState.Checked or state == 2
        ids = [n.GetID() for n in self._checked]
        if checked and node.GetID() not in ids and self._accepts(node):
            self._checked.append(node)
        elif not checked and node.GetID() in ids:
            self._checked = [n for n in self._checked if n.GetID() != node.GetID()]
        else:
            return
        self.checkedNodesChanged.emit()

    def checkState(self, node):
        return QtCore.Qt.CheckState.Checked if any(n is node for n in self._checked) else QtCore.Qt.CheckState.Unchecked

    def checkedNodes(self) -> list:
        return [n for n in self._checked if self._scene is not None and self._scene.GetNodeByID(n.GetID()) is n]

    def _onSceneEvent(self, caller, event):
        before = len(self._checked)
        self._checked = self.checkedNodes()
        super()._onSceneEvent(caller, event)
        if len(self._checked) != before:
            self.checkedNodesChanged.emit()


@_register
class qSlicerMarkupsPlaceWidget(_SceneWidget):
    """Place-mode toggle for one markups node, driving the scene's selection and interaction nodes.

    ``placeModeEnabled`` is read back from the interaction node (Place mode and this widget's
    node active), so it turns off when anything else ends place mode, as in Slicer.
    """

    activeMarkupsPlaceModeChanged = Signal(bool)

    ShowPlaceMultipleMarkupsOption, ForcePlaceSingleMarkup, ForcePlaceMultipleMarkups = 0, 1, 2

    def __init__(self, parent=None):
        super().__init__(parent)
        self._node = None
        self._interactionTag = None
        self._lastState = False

    buttonsVisible = _stored("buttonsVisible", bool, True)
    deleteAllControlPointsOptionVisible = _stored("deleteAllControlPointsOptionVisible", bool, True)
    unsetLastControlPointOptionVisible = _stored("unsetLastControlPointOptionVisible", bool, True)
    placeMultipleMarkups = _stored(
        "placeMultipleMarkups", int, 0
    )  # ForcePlaceSingleMarkup=1, ForcePlaceMultipleMarkups=2

    def _interactionNode(self):
        return slicer.modules.markups.logic().GetMRMLApplicationLogic().GetInteractionNode() if self._scene else None

    def _selectionNode(self):
        return slicer.modules.markups.logic().GetMRMLApplicationLogic().GetSelectionNode() if self._scene else None

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        self._node = node

    def _isPlacing(self) -> bool:
        interaction, selection = self._interactionNode(), self._selectionNode()
        return bool(
            self._node is not None
            and interaction is not None
            and selection is not None
            and interaction.GetCurrentInteractionMode() == interaction.Place
            and selection.GetActivePlaceNodeID() == self._node.GetID()
        )

    def _getPlaceModeEnabled(self) -> bool:
        return self._isPlacing()

    def setPlaceModeEnabled(self, enable) -> None:
        interaction = self._interactionNode()
        if interaction is None or self._node is None:
            return
        if enable:
            logic = slicer.modules.markups.logic()
            logic.SetActiveList(self._node)
            persistent = self._values.get("placeMultipleMarkups", 0) == 2
            logic.StartPlaceMode(persistent)
        elif self._isPlacing():
            interaction.SwitchToViewTransformMode()
        self._emitIfChanged()

    placeModeEnabled = Property(bool, _getPlaceModeEnabled, setPlaceModeEnabled)

    def _sceneChanged(self):
        interaction = self._interactionNode()
        if interaction is not None:
            self._interactionTag = interaction.AddObserver(
                vtk.vtkCommand.ModifiedEvent, lambda *a: self._emitIfChanged()
            )

    def _emitIfChanged(self):
        state = self._isPlacing()
        if state != self._lastState:
            self._lastState = state
            self.activeMarkupsPlaceModeChanged.emit(state)


def _plain_slicer(name):
    return _register(type(name, (_SceneWidget,), {"__module__": "slicer"}))


def install_slicer_widgets() -> None:
    """Put the qMRML/qSlicer stand-ins into the ``slicer`` namespace."""
    for cls in (qMRMLWidget, qSlicerWidget, qMRMLNodeComboBox, qMRMLCheckableNodeComboBox, qSlicerMarkupsPlaceWidget):
        setattr(slicer, cls.__name__, cls)
    for name in ("qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget"):
        if not hasattr(slicer, name):
            setattr(slicer, name, _plain_slicer(name))
