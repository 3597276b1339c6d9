"""What only the Slicer application provides, as small fakes over the real scene and ``slicer.util``.

- :func:`install`: the ``qt``/``ctk`` modules, the widget stand-ins, ``slicer.app``,
  ``slicer.i18n``, ``slicer.ScriptedLoadableModule`` and Slicer's real ``parameterNodeWrapper``
  (from ``../shared/slicer-python``, never copied into the project).
- :func:`make_scene`: a ``vtkMRMLScene`` set up as the application sets it up (module logics,
  Red/Yellow/Green slice nodes, a 3D view, selection and interaction nodes).
- :class:`FakeApplication`: ``slicer.app``; its message boxes are recorded in ``dialogs`` and
  answered from ``answers`` (``slicer.util.messageBox`` would otherwise wait for a click).
- :func:`open_module_panel`: the module's Widget in a panel, set up and entered as Slicer does.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import types
import unittest
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
#: The module folder under test (a test may point this at a deliberately broken copy).
MODULE_DIR = Path(os.environ.get("IMAGETOMESH_MODULE_DIR") or REPO / "ImageToMesh")
MODULE_FILE = MODULE_DIR / "ImageToMesh.py"
SLICER_PYTHON = REPO.parent / "shared" / "slicer-python"


def _slicer():
    import slicer

    return slicer


def import_slicer():
    """slicer-core's ``slicer`` package (its ``extend_path`` must not see a test folder named ``slicer``)."""
    import slicer

    if not hasattr(slicer, "vtkMRMLScene"):
        raise ImportError("the 'slicer' package here is not slicer-core")
    return slicer


class FakeApplication:
    """``slicer.app``: testing mode, temporary folder, cursors, a main window, recorded message boxes."""

    def __init__(self) -> None:
        import qt

        self.applicationName = "Slicer"
        self.testing = False
        self.temporaryPath = tempfile.mkdtemp(prefix="slicer-temp-")
        atexit.register(shutil.rmtree, self.temporaryPath, ignore_errors=True)  # one per test process
        self.dialogs: list = []  # (text, keyword arguments) of every message box shown
        self.answers: list = []  # what the next message boxes return (qt.QMessageBox.Ok when empty)
        self.connections: list = []  # (signal signature, slot) connected to the application
        self._mainWindow = qt.QMainWindow()
        self._mainWindow.setObjectName("qSlicerMainWindow")
        self._moduleManager = _ModuleManager()

    def testingEnabled(self) -> bool:
        return self.testing

    def topLevelWidgets(self) -> list:
        return [self._mainWindow]

    def processEvents(self) -> None:
        from PySide6 import QtWidgets

        QtWidgets.QApplication.processEvents()

    def setOverrideCursor(self, cursor) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def moduleManager(self):
        return self._moduleManager

    def connect(self, signature, slot):
        """``slicer.app.connect("startupCompleted()", slot)``: recorded; tests call ``emit``."""
        self.connections.append((signature, slot))
        return True

    def emit(self, signature) -> None:
        for connected, slot in list(self.connections):
            if connected == signature:
                slot()

    def messageBox(self, text, parent=None, **kwargs):
        """Stands in for ``slicer.util.messageBox`` (a modal dialog in Slicer)."""
        import qt

        self.dialogs.append((str(text), kwargs))
        return self.answers.pop(0) if self.answers else qt.QMessageBox.Ok


class _ModuleManager:
    def module(self, name):
        return types.SimpleNamespace(path=str(MODULE_DIR / f"{name}.py"))


def _make_i18n() -> types.ModuleType:
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


def _make_scripted_loadable_module(slicer) -> types.ModuleType:
    """``slicer.ScriptedLoadableModule`` as Slicer's own file defines the parts modules use."""
    import qt

    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = self.__class__.__name__
            parent.title = ""
            parent.categories = []
            parent.dependencies = []
            parent.contributors = []
            parent.helpText = ""
            parent.acknowledgementText = ""

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Widget"):
                self.moduleName = self.moduleName[:-6]
            if parent is None:
                parent = slicer.qMRMLWidget()
                parent.setLayout(qt.QVBoxLayout())
                parent.setMRMLScene(slicer.mrmlScene)
            self.parent = parent
            self.layout = self.parent.layout()

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

        def setup(self):
            pass

        def cleanup(self):
            pass

        def enter(self):
            pass

        def exit(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Logic"):
                self.moduleName = self.moduleName[:-5]
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                return node
            return slicer.mrmlScene.AddNode(self.createParameterNode())

        def createParameterNode(self):
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetName(slicer.mrmlScene.GetUniqueNameByString(self.moduleName))
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetSingletonTag(self.moduleName)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=1000):
            logging.info(message)

    module.ScriptedLoadableModule = ScriptedLoadableModule
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    module.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    module.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return module


def _import_parameter_node_wrapper(slicer) -> types.ModuleType:
    """Slicer's own ``parameterNodeWrapper`` package from ``../shared/slicer-python``."""
    name = "slicer.parameterNodeWrapper"
    if name in sys.modules:
        return sys.modules[name]
    package = SLICER_PYTHON / "slicer" / "parameterNodeWrapper"
    if not (package / "__init__.py").is_file():
        raise ImportError(f"Slicer's parameterNodeWrapper is not at {package} (../shared/slicer-python)")
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    slicer.parameterNodeWrapper = module
    return module


def _loadWithStorageNode(filename, nodeClass, storageClass, name):
    """A node of ``nodeClass`` read from ``filename`` by a ``storageClass`` storage node (the IO manager's job)."""
    import slicer

    scene = slicer.mrmlScene
    node = scene.AddNewNodeByClass(nodeClass, name)
    storage = scene.AddNewNodeByClass(storageClass)
    storage.SetFileName(str(filename))
    if not storage.ReadData(node):
        scene.RemoveNode(storage)
        scene.RemoveNode(node)
        raise RuntimeError(f"Failed to load {filename}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node


def _loadVolume(filename, properties=None, returnNode=False):
    """``slicer.util.loadVolume``: a scalar volume node read by a volume storage node."""
    name = Path(filename).name.split(".")[0]
    return _loadWithStorageNode(filename, "vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode", name)


def _loadModel(filename, returnNode=False):
    """``slicer.util.loadModel``: a model node read by a model storage node (which honours the STL's SPACE)."""
    return _loadWithStorageNode(filename, "vtkMRMLModelNode", "vtkMRMLModelStorageNode", Path(filename).stem)


def install():
    """Everything the module file imports, once per process; returns the ``slicer`` package."""
    from . import pythonqt, widgets

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    slicer = import_slicer()
    pythonqt.install()
    if "ctk" not in sys.modules:
        sys.modules["ctk"] = widgets.make_ctk_module()
    widgets.install_slicer_widgets()
    if not isinstance(getattr(slicer, "app", None), FakeApplication):
        slicer.app = FakeApplication()
        slicer.util.messageBox = lambda text, parent=None, **kwargs: slicer.app.messageBox(text, parent, **kwargs)
        slicer.util.loadVolume = _loadVolume
        slicer.util.loadModel = _loadModel
    for name, factory in (
        ("slicer.i18n", _make_i18n),
        ("slicer.ScriptedLoadableModule", lambda: _make_scripted_loadable_module(slicer)),
    ):
        if name not in sys.modules:
            sys.modules[name] = factory()
            setattr(slicer, name.split(".", 1)[1], sys.modules[name])
    _import_parameter_node_wrapper(slicer)
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))  # Slicer puts each scripted module's folder on sys.path
    return slicer


# --- an app-like scene --------------------------------------------------------------------------
_LOGICS = (
    ("Colors", "colors", "vtkSlicerColorLogic"),
    ("Volumes", "volumes", "vtkSlicerVolumesLogic"),
    ("Terminologies", "terminologies", "vtkSlicerTerminologiesModuleLogic"),
    ("Segmentations", "segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("SubjectHierarchy", "subjecthierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("Markups", "markups", "vtkSlicerMarkupsLogic"),
    ("Models", "models", "vtkSlicerModelsLogic"),
)


class _Module:
    def __init__(self, logic):
        self._logic = logic

    def logic(self):
        return self._logic


def make_scene():
    """A ``vtkMRMLScene`` set up as the application sets it up, made ``slicer.mrmlScene``."""
    import vtk

    slicer = install()
    vtk.vtkObject.GlobalWarningDisplayOff()  # missing terminology files etc. are expected here
    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetName("default")
    crosshair.SetSingletonTag("default")
    scene.AddNode(crosshair)
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    modules = types.SimpleNamespace()
    for name, attr, class_name in _LOGICS:
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        setattr(modules, attr, _Module(logic))
    modules.imagetomesh = types.SimpleNamespace(path=str(MODULE_FILE))  # the scripted module itself
    modules.colors.logic().AddDefaultColorNodes()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    slice_logics = []
    for color, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLApplicationLogic(app_logic)
        slice_logic.SetMRMLScene(scene)
        slice_node = slice_logic.AddSliceNode(color)
        slice_node.SetOrientation(orientation)
        app_logic.GetSliceLogics().AddItem(slice_logic)
        slice_logics.append(slice_logic)
    view = scene.AddNewNodeByClass("vtkMRMLViewNode")
    view.SetLayoutName("1")
    slicer.mrmlScene = scene
    slicer.modules = modules
    scene._keep = (app_logic, modules, slice_logics)  # keep the Python wrappers alive
    return scene


def load_module():
    """The module file ``ImageToMesh/ImageToMesh.py``, imported as Slicer imports it."""
    install()
    if "ImageToMesh" in sys.modules:
        return sys.modules["ImageToMesh"]
    spec = importlib.util.spec_from_file_location("ImageToMesh", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ImageToMesh"] = module
    spec.loader.exec_module(module)
    return module


def open_module_panel(backend=None):
    """``(widget, panel)``: the module's Widget set up in a panel on ``slicer.mrmlScene`` and entered.

    As Slicer does: the panel is a ``qMRMLWidget`` with a vertical layout and the scene, the Widget
    is constructed with it, ``setup()`` runs, and the panel is entered. ``backend`` replaces the
    Logic's worker (before any job).
    """
    import qt

    slicer = install()
    module = load_module()
    panel = module_panel_class()()
    panel.setLayout(qt.QVBoxLayout())
    panel.setMRMLScene(slicer.mrmlScene)
    widget = module.ImageToMeshWidget(panel)
    widget.setup()
    if backend is not None:
        widget.logic.backend = backend
    panel.show()
    panel.isEntered = True
    widget.enter()
    return widget, panel


_MODULE_PANEL = []


def module_panel_class():
    """The panel class (made on first use: it needs the Qt stand-ins installed)."""
    if _MODULE_PANEL:
        return _MODULE_PANEL[0]
    from PySide6.QtCore import Property

    from . import widgets

    class ModulePanel(widgets.qMRMLWidget):
        """``qSlicerScriptedLoadableModuleWidget``: a scene widget that knows whether it is entered."""

        def _get(self):
            return self._values.get("isEntered", False)

        def _set(self, value):
            self._values["isEntered"] = bool(value)

        isEntered = Property(bool, _get, _set)

    _MODULE_PANEL.append(ModulePanel)
    return ModulePanel


# --- data into the scene ------------------------------------------------------------------------
def volume_to_node(volume, name, node_class="vtkMRMLScalarVolumeNode"):
    """A volume node holding ``volume`` (its LPS geometry turned into IJK->RAS)."""
    ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.index_to_lps
    return _slicer().util.addVolumeFromArray(
        np.asarray(volume.array), ijkToRAS=ijk_to_ras, name=name, nodeClassName=node_class
    )


def put_in_folder(scene, node, folder_name="Patient 1"):
    """Give ``node`` a subject-hierarchy item inside a folder (the app does this on load)."""
    sh = _slicer().vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), folder_name)
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(folder, node)
    else:
        sh.SetItemParent(item, folder)
    return folder
