"""Fixtures for the ImageToMesh Slicer module's tests (see ``harness/`` for the Slicer-like environment).

The module runs on slicer-core's real MRML scene, Slicer's real ``parameterNodeWrapper`` (from
``../shared/slicer-python``) and PySide6 dressed as PythonQt; see ../shared/SLICER-CORE-NOTES.md.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SAMPLES = REPO / "Resources" / "SampleData"
MODELS = REPO / "Resources" / "Models"

pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("PySide6.QtUiTools", reason="PySide6 is not installed")
if not (REPO.parent / "shared" / "slicer-python" / "slicer" / "parameterNodeWrapper").is_dir():
    pytest.skip(
        "Slicer's parameterNodeWrapper (../shared/slicer-python) is not beside this checkout", allow_module_level=True
    )

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from harness import application  # noqa: E402

slicer = application.install()

make_scene = application.make_scene
load_module = application.load_module


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
            self._pending.append(
                self._Event(
                    "error",
                    error_type="WorkerDied",
                    message="the ImageToMesh worker process stopped unexpectedly (exit code -9) while running "
                    + job.task,
                )
            )
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


volume_to_node = application.volume_to_node
put_in_folder = application.put_in_folder
