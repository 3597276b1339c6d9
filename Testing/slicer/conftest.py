"""A 3D Slicer-like environment without the application, for testing the ImageToMesh module.

slicer-core (PyPI) provides the real MRML scene, nodes and module logics; the application
pieces (``slicer.app``, ``slicer.modules``, ``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper``, ``slicer.i18n``) are replaced here by small stand-ins that
implement only what ``ImageToMeshLogic`` uses. See ../shared/SLICER-CORE-NOTES.md.
"""
from __future__ import annotations

import importlib.util
import logging
import pathlib
import sys
import types
import typing
import unittest
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "ImageToMesh" / "ImageToMesh.py"
SAMPLES = REPO / "Resources" / "SampleData"
MODELS = REPO / "Resources" / "Models"


def _import_slicer():
    """Import slicer-core's ``slicer`` package without picking up this test folder.

    ``slicer`` is a namespace-style package (``pkgutil.extend_path``) that imports every module
    found in any ``slicer/`` folder on ``sys.path``: with ``Testing/`` on the path (pytest puts
    it there for ``Testing/conftest.py``) it would import these test files as ``slicer.*``.
    """
    if "slicer" in sys.modules:
        return sys.modules["slicer"]
    here = str(Path(__file__).resolve().parent.parent)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    try:
        return pytest.importorskip("slicer", reason="slicer-core is not installed")
    finally:
        sys.path[:] = saved


slicer = _import_slicer()
import vtk  # noqa: E402

if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package here is not slicer-core", allow_module_level=True)


# --- stand-ins for the application's Python modules ------------------------------------------
def _make_qt_ctk() -> None:
    """Empty ``qt`` and ``ctk`` modules: the Logic must not need them (the Widget does)."""
    for name in ("qt", "ctk"):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__doc__ = f"test stand-in for Slicer's {name} module (no classes: only the Widget uses Qt)"
            sys.modules[name] = module


def _make_i18n() -> types.ModuleType:
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


def _make_scripted_loadable_module() -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent=None):
            self.parent = parent if parent is not None else types.SimpleNamespace()
            self.moduleName = type(self).__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent
            self.moduleName = type(self).__name__[: -len("Widget")]

        def resourcePath(self, filename):
            return str(MODULE_FILE.parent / "Resources" / filename)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__[: -len("Logic")] if type(self).__name__.endswith("Logic") else type(self).__name__

        def getParameterNode(self):
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag(self.moduleName)
                node.SetName(self.moduleName)
                node.SetModuleName(self.moduleName)
                node.SetHideFromEditors(True)
                node = scene.AddNode(node)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            logging.info(message)

    module.ScriptedLoadableModule = ScriptedLoadableModule
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    module.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    module.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    module.__all__ = [
        "ScriptedLoadableModule",
        "ScriptedLoadableModuleWidget",
        "ScriptedLoadableModuleLogic",
        "ScriptedLoadableModuleTest",
    ]
    return module


def _make_parameter_node_wrapper() -> types.ModuleType:
    """The parts of ``slicer.parameterNodeWrapper`` ImageToMesh uses: typed properties over a
    ``vtkMRMLScriptedModuleNode`` (nodes as references, scalars as string parameters)."""
    module = types.ModuleType("slicer.parameterNodeWrapper")

    class WithinRange:
        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

    class Choice:
        def __init__(self, choices):
            self.choices = list(choices)

    class Default:
        def __init__(self, value):
            self.value = value

    def _split(hint):
        if typing.get_origin(hint) is typing.Annotated:
            return typing.get_args(hint)[0], list(hint.__metadata__)
        return hint, []

    def _node_types(base):
        if typing.get_origin(base) is typing.Union:
            members = [a for a in typing.get_args(base) if a is not type(None)]
        else:
            members = [base]
        if members and all(isinstance(m, type) and issubclass(m, slicer.vtkMRMLNode) for m in members):
            return tuple(members)
        return None

    def _parse(base, text):
        if base is bool:
            return text == "True"
        if base in (int, float, str):
            return base(text)
        if base in (pathlib.Path, Path):
            return Path(text) if text else Path()
        raise TypeError(f"stand-in parameterNodeWrapper cannot store {base}")

    def parameterNodeWrapper(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        params = {}
        for name, hint in hints.items():
            base, annotations = _split(hint)
            nodes = _node_types(base)
            if hasattr(cls, name):
                default = getattr(cls, name)
            elif any(isinstance(a, Default) for a in annotations):
                default = next(a for a in annotations if isinstance(a, Default)).value
            elif nodes:
                default = None
            else:
                default = {bool: False, int: 0, float: 0.0, str: ""}.get(base, None)
            params[name] = (base, nodes, default, hint)

        def make_property(name):
            base, nodes, default, _ = params[name]

            def getter(self):
                node = self.parameterNode
                if nodes:
                    return node.GetNodeReference(name)
                if not node.GetParameter(name) and default is not None and base is not str:
                    return default
                return _parse(base, node.GetParameter(name))

            def setter(self, value):
                node = self.parameterNode
                if nodes:
                    if value is not None and not isinstance(value, nodes):
                        raise TypeError(f"{name} takes {nodes}, not {type(value).__name__}")
                    node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                else:
                    node.SetParameter(name, str(value))

            return property(getter, setter)

        def __init__(self, parameterNode):
            self.parameterNode = parameterNode
            for name, (base, nodes, default, _) in params.items():
                if not nodes and not parameterNode.GetParameter(name) and default is not None:
                    parameterNode.SetParameter(name, str(default))

        for name in params:
            setattr(cls, name, make_property(name))
        cls.__init__ = __init__
        cls.allParameters = params
        cls.getValue = lambda self, name: getattr(self, name)
        cls.setValue = lambda self, name, value: setattr(self, name, value)
        cls.default = lambda self, name: Default(params[name][2])
        cls.dataType = staticmethod(lambda name: params[name][3])
        cls.connectGui = lambda self, gui: 0
        cls.disconnectGui = lambda self, tag: None
        cls.StartModify = lambda self: self.parameterNode.StartModify()
        cls.EndModify = lambda self, was: self.parameterNode.EndModify(was)
        cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
        cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
        cls.Modified = lambda self: self.parameterNode.Modified()
        return cls

    module.parameterNodeWrapper = parameterNodeWrapper
    module.WithinRange = WithinRange
    module.Choice = Choice
    module.Default = Default
    return module


def install_stand_ins() -> None:
    _make_qt_ctk()
    for name, factory in (
        ("slicer.i18n", _make_i18n),
        ("slicer.ScriptedLoadableModule", _make_scripted_loadable_module),
        ("slicer.parameterNodeWrapper", _make_parameter_node_wrapper),
    ):
        if name not in sys.modules:
            sys.modules[name] = factory()
            setattr(slicer, name.split(".", 1)[1], sys.modules[name])


# --- an app-like scene --------------------------------------------------------------------
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
    """A ``vtkMRMLScene`` set up as the application sets it up (module logics, slice views)."""
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
    install_stand_ins()
    if "ImageToMesh" in sys.modules:
        return sys.modules["ImageToMesh"]
    spec = importlib.util.spec_from_file_location("ImageToMesh", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ImageToMesh"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def itm():
    """The ImageToMesh module file, imported with the stand-ins in place."""
    return load_module()


@pytest.fixture(scope="session")
def h():
    """Test helpers (a fixture, so test files need not import this conftest by name)."""
    return types.SimpleNamespace(
        REPO=REPO,
        SAMPLES=SAMPLES,
        MODELS=MODELS,
        FakeBackend=FakeBackend,
        scene_state=scene_state,
        permuted_volume=permuted_volume,
        volume_to_node=volume_to_node,
        put_in_folder=put_in_folder,
    )


@pytest.fixture(scope="session")
def worker():
    """One real worker process for the session (it keeps models loaded between tests)."""
    from imagetomesh.backend import WorkerBackend

    backend = WorkerBackend(cancel_grace=5.0)
    yield backend
    backend.close()


@pytest.fixture
def scene():
    scene = make_scene()
    yield scene
    scene.Clear(1)


# --- scene snapshots: "nothing half-added" ---------------------------------------------------
def scene_state(scene) -> dict:
    """IDs and modification-relevant content of every node but the module's parameter node."""
    state = {}
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.IsA("vtkMRMLScriptedModuleNode"):
            continue
        entry = [node.GetName()]
        if node.IsA("vtkMRMLModelNode"):
            polydata = node.GetPolyData()
            entry.append(polydata.GetNumberOfPoints() if polydata is not None else -1)
        state[node.GetID()] = tuple(entry)
    return state


# --- a fake worker ----------------------------------------------------------------------------
class FakeBackend:
    """The backend interface with scripted behaviour, recording the jobs it receives.

    ``behaviour(job)`` returns a result, raises (``InputError`` -> an error event), or
    returns one of the strings ``"die"`` (worker death after some progress) or ``"hang"``
    (runs until cancelled).
    """

    def __init__(self, behaviour):
        from imagetomesh.backend import Event

        self._Event = Event
        self.behaviour = behaviour
        self.jobs = []
        self._pending = []
        self._busy = False
        self._hanging = False
        self.cancel_calls = 0
        self.closed = False

    @property
    def busy(self):
        return self._busy

    def start(self, job):
        from imagetomesh.backend import BackendError, _error_event

        if self._busy:
            raise BackendError("busy")
        self.jobs.append(job)
        self._busy = True
        self._pending = [self._Event("progress", fraction=0.1, message="fake start")]
        try:
            result = self.behaviour(job)
        except Exception as err:
            self._pending.append(_error_event(err))
            return
        if isinstance(result, str) and result == "die":
            self._pending.append(self._Event("progress", fraction=0.5, message="half way"))
            self._pending.append(self._Event(
                "error", error_type="WorkerDied",
                message="the ImageToMesh worker process stopped unexpectedly (exit code -9) while running " + job.task))
        elif isinstance(result, str) and result == "hang":
            self._hanging = True
        else:
            self._pending.append(self._Event("done", fraction=1.0, result=result))

    def poll(self, timeout=0.0):
        events, self._pending = self._pending, []
        if any(e.kind in ("done", "error", "cancelled") for e in events):
            self._busy = False
        if not events and self._hanging:
            events = [self._Event("progress", fraction=0.3, message="still running")]
        return events

    def cancel(self):
        self.cancel_calls += 1
        if self._hanging:
            self._hanging = False
            self._pending.append(self._Event("cancelled", message="cancelled"))

    def close(self):
        self.closed = True

    def run(self, job, progress=None, log=None, timeout=None):
        from imagetomesh.backend import wait_for

        return wait_for(self, job, progress, log, timeout)


# --- data helpers -------------------------------------------------------------------------
def permuted_volume(volume):
    """The same image and physical geometry stored with permuted, flipped index axes."""
    from imagetomesh.core.volume import Volume

    # new[k', j', i'] = old[k = i', j = k', i = W - 1 - j']
    array = np.transpose(volume.array, (1, 2, 0))[:, ::-1, :]
    width = volume.shape[2]
    new_to_old = np.zeros((4, 4))  # (i', j', k', 1) -> (i, j, k, 1)
    new_to_old[0, 1], new_to_old[0, 3] = -1.0, width - 1
    new_to_old[1, 2] = 1.0
    new_to_old[2, 0] = 1.0
    new_to_old[3, 3] = 1.0
    old = volume.index_to_lps
    affine = old @ new_to_old
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return Volume(np.ascontiguousarray(array), spacing, affine[:3, 3], affine[:3, :3] / spacing)


def volume_to_node(volume, name, node_class="vtkMRMLScalarVolumeNode"):
    """A volume node holding ``volume`` (its LPS geometry turned into IJK->RAS)."""
    ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.index_to_lps
    return slicer.util.addVolumeFromArray(np.asarray(volume.array), ijkToRAS=ijk_to_ras, name=name, nodeClassName=node_class)


def put_in_folder(scene, node, folder_name="Patient 1"):
    """Give ``node`` a subject-hierarchy item inside a folder (the app does this on load)."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), folder_name)
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(folder, node)
    else:
        sh.SetItemParent(item, folder)
    return folder
