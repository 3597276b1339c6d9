"""Bad input, cancel and worker failures: a readable message and the scene exactly as it was."""

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import slicer

from imagetomesh.backend import BackendError, Job, JobCancelled, WorkerBackend, WorkerDied
from imagetomesh.errors import InputError

REPO = Path(__file__).resolve().parents[2]
HIPPO_LABEL = REPO / "Resources" / "SampleData" / "hippocampus" / "hippocampus_024_label.nii.gz"
PRIOR = "dals-hippocampus"


@pytest.fixture(scope="module")
def label():
    from imagetomesh.io.images import read_labelmap

    return read_labelmap(HIPPO_LABEL)


@pytest.fixture(scope="module")
def mesh(label):
    from imagetomesh.geometry.isosurface import labelmap_to_mesh

    return labelmap_to_mesh(label)


def image_node(h, label, name="hippo"):
    return h.volume_to_node(h.permuted_volume(label.with_array(label.array.astype(np.float32) * 100)), name)


def assert_readable(err):
    message = str(err.value)
    assert message and "\n" not in message and "Traceback" not in message and len(message) < 400
    return message


def check_unchanged(scene, h, before):
    assert h.scene_state(scene) == before


# --- bad input -------------------------------------------------------------------------------
def test_2d_volume(itm, scene, h):
    node = slicer.util.addVolumeFromArray(np.zeros((1, 40, 50), np.float32), name="one slice")
    fake = h.FakeBackend(lambda job: pytest.fail("the worker must not be asked"))
    before = h.scene_state(scene)
    with pytest.raises(InputError) as err:
        itm.ImageToMeshLogic(backend=fake).segment(node, "unet-hippocampus")
    assert "2D" in assert_readable(err) and "one slice" in str(err.value)
    assert not fake.jobs
    check_unchanged(scene, h, before)


def test_no_volume_no_method(itm, scene, h, label):
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: pytest.fail("not asked")))
    before = h.scene_state(scene)
    with pytest.raises(InputError) as err:
        logic.segment(None, "unet-hippocampus")
    assert "no input volume" in assert_readable(err)
    with pytest.raises(InputError) as err:
        logic.segment(image_node(h, label), "")
    assert "method" in assert_readable(err)
    before = h.scene_state(scene)
    with pytest.raises(InputError):
        logic.refine(None, PRIOR)
    check_unchanged(scene, h, before)


def test_roi_outside_the_image(itm, scene, h, label):
    node = image_node(h, label)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far away")
    roi.SetCenter(500.0, 500.0, 500.0)
    roi.SetSize(10.0, 10.0, 10.0)
    fake = h.FakeBackend(lambda job: pytest.fail("not asked"))
    before = h.scene_state(scene)
    with pytest.raises(InputError) as err:
        itm.ImageToMeshLogic(backend=fake).segment(node, "unet-hippocampus", roi=roi)
    assert "ROI" in assert_readable(err) and "outside" in str(err.value)
    check_unchanged(scene, h, before)


def test_no_curves_drawn(itm, scene, h, label):
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: pytest.fail("not asked")))
    curves = logic.createAnnotationCurves(image_node(h, label))
    curves[0].AddControlPoint(0.0, 0.0, 0.0)  # one point is not a curve
    before = h.scene_state(scene)
    for given in ([], None, curves):
        with pytest.raises(InputError) as err:
            logic.fitCurves(given, PRIOR)
        assert "no curves drawn" in assert_readable(err)
    check_unchanged(scene, h, before)


def test_empty_labelmap_and_segment(itm, scene, h, label):
    empty = h.volume_to_node(label.with_array(np.zeros_like(label.array)), "empty", "vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "no segments")
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: pytest.fail("not asked")))
    before = h.scene_state(scene)
    with pytest.raises(InputError) as err:
        logic.refine(empty, PRIOR)
    assert "empty" in assert_readable(err)
    with pytest.raises(InputError) as err:
        logic.refine(segmentation, PRIOR)
    assert "no segments" in assert_readable(err)
    check_unchanged(scene, h, before)


# --- failures in the worker ---------------------------------------------------------------------
def test_model_that_fails_to_load(itm, scene, h, label):
    """The library's message for a damaged model reaches the caller; nothing is added."""

    def broken(job):
        raise InputError(
            "model weights /x/model.safetensors fail their checksum; the file is damaged or not the one the card describes"
        )

    node = image_node(h, label)
    before = h.scene_state(scene)
    with pytest.raises(InputError) as err:
        itm.ImageToMeshLogic(backend=h.FakeBackend(broken)).segment(node, "unet-hippocampus")
    assert "checksum" in assert_readable(err)
    check_unchanged(scene, h, before)


def test_damaged_model_folder_through_the_real_library(itm, scene, h, label, tmp_path, monkeypatch):
    """A model folder whose weights do not match its card: the zoo refuses it with a clear message."""
    from imagetomesh.backend import InProcessBackend

    folder = tmp_path / "models" / "broken-hippocampus"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"not really safetensors")
    (folder / "card.json").write_text(
        json.dumps({"kind": "unet", "config": {}, "weights": "model.safetensors", "sha256": "0" * 64})
    )
    monkeypatch.setenv("IMAGETOMESH_MODEL_PATH", str(tmp_path / "models"))
    node = image_node(h, label)
    logic = itm.ImageToMeshLogic(backend=InProcessBackend())
    before = h.scene_state(scene)
    try:
        with pytest.raises(InputError) as err:
            logic.segment(node, "broken-hippocampus", device="CPU")
    finally:
        logic.close()
    assert "broken-hippocampus" in assert_readable(err)
    check_unchanged(scene, h, before)


def test_worker_dies_mid_run(itm, scene, h, label, mesh):
    node = image_node(h, label)
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: mesh))
    existing = logic.segment(node, "m")  # a previous result that a failed re-run must keep
    points = existing.GetPolyData().GetNumberOfPoints()
    logic.backend = h.FakeBackend(lambda job: "die")
    before = h.scene_state(scene)
    progress = []
    with pytest.raises(WorkerDied) as err:
        logic.segment(node, "m", outputModel=existing, progress=lambda f, m: progress.append(f))
    assert "stopped unexpectedly" in assert_readable(err)
    assert progress  # it had started
    check_unchanged(scene, h, before)
    assert existing.GetPolyData().GetNumberOfPoints() == points


def test_cancel_leaves_the_scene_unchanged(itm, scene, h, label):
    node = image_node(h, label)
    fake = h.FakeBackend(lambda job: "hang")
    logic = itm.ImageToMeshLogic(backend=fake)
    before = h.scene_state(scene)

    def press_cancel(fraction, message):
        logic.backend.cancel()  # what the panel's Cancel button does

    with pytest.raises(JobCancelled):
        logic.segment(node, "m", progress=press_cancel)
    assert fake.cancel_calls >= 1 and not fake.busy
    check_unchanged(scene, h, before)


def test_failure_while_adding_the_result_removes_what_was_added(itm, scene, h, label, mesh, monkeypatch):
    node = image_node(h, label)
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: mesh))
    before = h.scene_state(scene)

    def fail(*args, **kwargs):
        raise RuntimeError("subject hierarchy unavailable")

    from ImageToMeshModule import sceneAdapters

    monkeypatch.setattr(sceneAdapters, "placeInFolder", fail)
    with pytest.raises(RuntimeError):
        logic.segment(node, "m")
    check_unchanged(scene, h, before)


def test_empty_result_is_an_error(itm, scene, h, label):
    from imagetomesh.core.mesh import Mesh

    node = image_node(h, label)
    empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    before = h.scene_state(scene)
    with pytest.raises(BackendError):
        itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: empty)).segment(node, "m")
    check_unchanged(scene, h, before)


# --- the worker process itself, with a stand-in worker program -----------------------------------
STAND_IN_WORKER = textwrap.dedent("""
    import json, os, sys, time
    out = sys.stdout
    def send(**message):
        out.write(json.dumps(message) + "\\n"); out.flush()
    cancelled = False
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("cmd") == "quit":
            break
        if message.get("cmd") != "run":
            continue
        job, what = message["id"], message["params"].get("behaviour")
        send(event="progress", id=job, fraction=0.25, message="working")
        if what == "die":
            sys.stderr.write("Segmentation fault in a CUDA kernel\\n"); sys.stderr.flush()
            os._exit(3)
        if what == "ignore-cancel":
            while True:
                time.sleep(0.05)
        if what == "cooperative":
            sys.stdin.readline()  # waits for the cancel command
            send(event="cancelled", id=job)
            continue
        send(event="done", id=job, result={"type": "json", "value": {"pid": os.getpid()}})
""")


def stand_in_backend(grace=0.5):
    return WorkerBackend(command=[sys.executable, "-u", "-c", STAND_IN_WORKER], cancel_grace=grace)


def test_worker_process_death_is_reported_and_the_worker_restarts():
    backend = stand_in_backend()
    try:
        with pytest.raises(WorkerDied) as err:
            backend.run(Job("ping", {"behaviour": "die"}), timeout=20)
        message = str(err.value)
        assert "exit code 3" in message and "Segmentation fault" in message and "ping" in message
        assert not backend.busy
        first = backend.run(Job("ping", {"behaviour": "ok"}), timeout=20)["pid"]  # a fresh worker
        second = backend.run(Job("ping", {"behaviour": "ok"}), timeout=20)["pid"]
        assert first == second  # and it stays up between jobs
    finally:
        backend.close()


def test_worker_cancel_cooperative_and_forced():
    backend = stand_in_backend(grace=0.5)
    try:
        backend.start(Job("ping", {"behaviour": "cooperative"}))
        backend.cancel()
        with pytest.raises(JobCancelled):
            _wait(backend)
        pid = backend.pid
        assert pid is not None  # the cooperative worker lives on
        backend.start(Job("ping", {"behaviour": "ignore-cancel"}))
        backend.cancel()
        with pytest.raises(JobCancelled):
            _wait(backend)
        assert backend.pid is None  # stopped after the grace period
        assert backend.run(Job("ping", {"behaviour": "ok"}), timeout=20)["pid"] != pid
    finally:
        backend.close()


def _wait(backend, limit=20.0):
    import time

    end = time.monotonic() + limit
    while time.monotonic() < end:
        for event in backend.poll(0.05):
            if event.kind in ("done", "error", "cancelled"):
                raise event.exception() if event.kind != "done" else AssertionError("finished instead of cancelling")
    raise AssertionError("no end event")


def test_logic_through_a_dying_worker_process(itm, scene, h, label):
    """The Logic with a real (stand-in) worker process that dies: WorkerDied, scene unchanged."""
    node = image_node(h, label)
    logic = itm.ImageToMeshLogic(backend=stand_in_backend())
    before = h.scene_state(scene)
    original_prepare = logic.prepareSegment

    def prepare(*args, **kwargs):
        job, target = original_prepare(*args, **kwargs)
        job.params["behaviour"] = "die"
        return job, target

    logic.prepareSegment = prepare
    try:
        with pytest.raises(WorkerDied) as err:
            logic.segment(node, "unet-hippocampus")
    finally:
        logic.close()
    assert "stopped unexpectedly" in assert_readable(err)
    check_unchanged(scene, h, before)


def test_busy_backend_refuses_a_second_job():
    backend = stand_in_backend()
    try:
        backend.start(Job("ping", {"behaviour": "cooperative"}))
        with pytest.raises(BackendError):
            backend.start(Job("ping", {"behaviour": "ok"}))
        backend.cancel()
        with pytest.raises(JobCancelled):
            _wait(backend)
    finally:
        backend.close()


def test_the_worker_keeps_its_files_in_slicers_temporary_folder(itm, scene):
    logic = itm.ImageToMeshLogic()
    backend = logic.backend  # made on first use; the process starts with the first job
    folder = Path(backend._folder)
    try:
        assert folder.parent == Path(slicer.app.temporaryPath) and folder.is_dir()
    finally:
        logic.close()
    assert not folder.exists()
