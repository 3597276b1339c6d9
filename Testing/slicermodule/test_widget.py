"""The panel itself: the Widget's own code driven as a user drives it.

Everything runs through the harness (real MRML scene, Slicer's real ``parameterNodeWrapper``,
PySide6 as PythonQt, the real ``.ui`` file); only the worker is a scripted fake, so each test
is fast. Buttons are clicked, sliders moved and curves drawn through the widgets, and Qt's event
loop runs the panel's timers.
"""

import time

import numpy as np
import pytest
import qt
import slicer

from harness import application


@pytest.fixture(scope="module")
def label():
    from imagetomesh.io.images import read_labelmap

    return read_labelmap(application.REPO / "Resources" / "SampleData" / "hippocampus" / "hippocampus_024_label.nii.gz")


@pytest.fixture(scope="module")
def mesh(label):
    from imagetomesh.geometry.isosurface import labelmap_to_mesh

    return labelmap_to_mesh(label)


@pytest.fixture
def app():
    """``slicer.app`` with a clean record of message boxes; testing mode off (a user's Slicer)."""
    slicer.app.dialogs.clear()
    slicer.app.answers.clear()
    slicer.app.testing = False
    yield slicer.app
    slicer.app.testing = False


@pytest.fixture
def satisfied(monkeypatch):
    """The worker's packages count as installed (they are, for the fake worker)."""
    from ImageToMeshModule import logic

    monkeypatch.setattr(logic.ImageToMeshLogic, "unsatisfiedDependencies", staticmethod(lambda: []))


@pytest.fixture
def panel(scene, app, satisfied):
    """``open(backend) -> widget``: the module's panel on ``scene``; cleaned up after the test."""
    opened = []

    def open_panel(backend=None):
        widget, _ = application.open_module_panel(backend)
        opened.append(widget)
        return widget

    yield open_panel
    for widget in opened:
        widget.cleanup()


def process_events(seconds=0.0):
    from PySide6 import QtWidgets

    end = time.monotonic() + seconds
    while True:
        QtWidgets.QApplication.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def wait_until(condition, timeout=10.0, what="the condition"):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        process_events(0.02)


def image_node(h, label, name="hippo"):
    return h.volume_to_node(label.with_array(label.array.astype(np.float32)), name)


def models(scene):
    """The scene's model nodes a user sees (slice-view models are hidden from editors)."""
    nodes = [
        scene.GetNthNodeByClass(i, "vtkMRMLModelNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLModelNode"))
    ]
    return [node for node in nodes if not node.GetHideFromEditors()]


def errors(app):
    return [text for text, kwargs in app.dialogs if kwargs.get("icon") == qt.QMessageBox.Critical]


# --- setup, enter, exit ---------------------------------------------------------------------------
def test_setup_creates_the_parameter_node_with_slicers_wrapper_and_shows_its_defaults(itm, scene, panel):
    widget = panel()
    parameters = widget._parameterNode
    assert type(parameters).__name__ == "ImageToMeshParameterNode" and parameters.parameterNode.GetScene() is scene
    for name, info in type(parameters).allParameters.items():
        if name not in ("method", "prior", "refinePrior"):  # the panel fills these from the model lists
            assert getattr(parameters, name) == info.default.value, name
    assert widget.ui.deviceComboBox.currentText == "auto"
    assert widget.ui.exportFormatComboBox.currentText == "STL"
    assert widget.ui.lambdaDirSlider.value == pytest.approx(2.0) and widget.ui.lambdaRegSlider.value == pytest.approx(
        -2.0
    )
    assert widget.ui.refineDefaultLambdasCheckBox.checked
    assert not widget.ui.refineLambdaDirSlider.enabled  # the paper's shared latent: sliders off
    assert widget.ui.methodComboBox.count >= 5 and widget.ui.priorComboBox.count >= 2
    assert parameters.method == widget.ui.methodComboBox.currentText
    assert not widget.ui.applyButton.enabled  # no volume yet


def test_the_gui_and_the_parameter_node_follow_each_other(itm, scene, h, label, panel):
    widget = panel()
    parameters = widget._parameterNode
    widget.ui.deviceComboBox.currentIndex = widget.ui.deviceComboBox.findText("CPU")
    assert parameters.device == "CPU"
    parameters.logLambdaDir = 3.5
    assert widget.ui.lambdaDirSlider.value == pytest.approx(3.5)
    assert widget.ui.lambdaDirValueLabel.text == "λ = 3.16e+03"
    widget.ui.refineDefaultLambdasCheckBox.checked = False
    assert parameters.refineUseDefaultLambdas is False and widget.ui.refineLambdaDirSlider.enabled


def test_choosing_inputs_enables_the_buttons(itm, scene, h, label, panel):
    widget = panel()
    node = image_node(h, label)
    assert widget.ui.inputVolumeSelector.currentNode() is node  # the selector picks the new volume
    assert widget._parameterNode.inputVolume is node and widget.ui.applyButton.enabled
    labelmap = h.volume_to_node(label, "hippo-label", "vtkMRMLLabelMapVolumeNode")
    widget.ui.refineInputSelector.setCurrentNode(labelmap)
    assert widget._parameterNode.refineInput is labelmap and widget.ui.refineButton.enabled
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "not a labelmap")
    widget.ui.refineInputSelector.setCurrentNode(model)  # not offered: the selection empties
    assert widget._parameterNode.refineInput is None and not widget.ui.refineButton.enabled


def test_only_the_models_made_for_the_volume_are_listed(itm, scene, h, panel):
    from imagetomesh.io.images import read_image

    widget = panel()
    hippocampus = widget.ui.methodComboBox.count
    ct = read_image(application.REPO / "Resources" / "SampleData" / "ct-example" / "example_ct.nii.gz")
    node = h.volume_to_node(ct, "abdomen CT")
    widget._parameterNode.inputVolume = node
    listed = [widget.ui.methodComboBox.itemText(i) for i in range(widget.ui.methodComboBox.count)]
    assert len(listed) < hippocampus and not any(name.endswith("-hippocampus") for name in listed)
    assert all(widget.logic.modelCard(name)["input"]["modality"] == "CT" for name in listed)  # only CT models
    assert "Not listed for this volume" in widget.ui.modelCardLabel.text
    assert "looks like a CT" in widget.ui.modelCardLabel.text
    assert widget.ui.applyButton.enabled == bool(listed)


def test_allowing_mismatches_lists_every_model_and_runs_with_the_override(itm, scene, h, mesh, panel):
    from imagetomesh.io.images import read_image

    fake = h.FakeBackend(lambda job: mesh)
    widget = panel(fake)
    everything = widget.ui.methodComboBox.count
    ct = read_image(application.REPO / "Resources" / "SampleData" / "ct-example" / "example_ct.nii.gz")
    widget._parameterNode.inputVolume = h.volume_to_node(ct, "abdomen CT")
    assert widget.ui.methodComboBox.count < everything and not widget._parameterNode.allowMismatch
    widget.ui.allowMismatchCheckBox.click()
    assert widget._parameterNode.allowMismatch and widget.ui.methodComboBox.count == everything
    assert "Not made for this volume (listed all the same)" in widget.ui.modelCardLabel.text
    widget.ui.methodComboBox.currentIndex = widget.ui.methodComboBox.findText("unet-hippocampus")
    widget.ui.applyButton.click()
    wait_until(lambda: widget._job is None, what="the job to finish")
    assert fake.jobs[0].params["model"] == "unet-hippocampus" and fake.jobs[0].params["allow_mismatch"] is True
    widget.ui.allowMismatchCheckBox.click()  # off again: the CT list again
    assert widget.ui.methodComboBox.count < everything


def test_exit_disconnects_the_panel_and_enter_reconnects_it(itm, scene, panel):
    widget = panel()
    widget.exit()
    parameters = widget.logic.getParameterNode()
    parameters.logLambdaReg = -4.0
    assert widget.ui.lambdaRegSlider.value == pytest.approx(-2.0)  # not bound while the module is not shown
    widget.enter()
    assert widget.ui.lambdaRegSlider.value == pytest.approx(-4.0)


# --- segment --------------------------------------------------------------------------------------
def test_apply_shows_progress_and_adds_the_result(itm, scene, h, label, mesh, panel):
    fake = h.FakeBackend(lambda job: mesh)
    widget = panel(fake)
    image_node(h, label)
    widget.ui.applyButton.click()
    assert widget.ui.applyButton.text == "Cancel" and widget.ui.progressBar.visible
    assert not widget.ui.fitButton.enabled and not widget.ui.exportButton.enabled
    wait_until(lambda: widget._job is None, what="the job to finish")
    assert [job.task for job in fake.jobs] == ["segment"]
    assert fake.jobs[0].params["model"] == widget.ui.methodComboBox.currentText
    (model,) = models(scene)
    assert model.GetName() == f"hippo {widget.ui.methodComboBox.currentText}"
    assert widget._parameterNode.outputModel is model
    assert widget.ui.applyButton.text == "Apply" and not widget.ui.progressBar.visible
    assert "Created" in widget.ui.statusLabel.text
    assert model in widget.ui.exportModelsSelector.checkedNodes()


def test_apply_with_a_several_organ_model_adds_one_model_per_organ(itm, scene, h, label, mesh, panel):
    from imagetomesh.organs import Organ, OrganMesh

    found = [OrganMesh(Organ("brainstem", 1, 1, (250, 210, 160)), mesh), OrganMesh(Organ("larynx", 2, 6), None)]
    widget = panel(h.FakeBackend(lambda job: found))
    image_node(h, label)
    widget.ui.applyButton.click()
    wait_until(lambda: widget._job is None, what="the job to finish")
    (model,) = models(scene)
    assert model.GetName() == "Brainstem" and model in widget.ui.exportModelsSelector.checkedNodes()
    assert widget._parameterNode.outputModel is None  # a later run makes a new folder, it replaces nothing
    assert (
        widget.ui.statusLabel.text
        == f"Created 1 organ model(s) in folder 'hippo {widget.ui.methodComboBox.currentText}'."
    )
    assert widget.ui.warningLabel.visible and "not found in this image: Larynx" in widget.ui.warningLabel.text


def test_cancel_leaves_the_scene_unchanged(itm, scene, h, label, panel):
    fake = h.FakeBackend(lambda job: "hang")
    widget = panel(fake)
    image_node(h, label)
    before = h.scene_state(scene)
    widget.ui.applyButton.click()
    process_events(0.3)
    assert widget.ui.progressBar.value == 30  # "still running" progress reaches the bar
    widget.ui.applyButton.click()  # now Cancel
    wait_until(lambda: widget._job is None, what="the cancellation")
    assert fake.cancel_calls == 1
    assert h.scene_state(scene) == before
    assert "Cancelled" in widget.ui.statusLabel.text and widget.ui.applyButton.text == "Apply"


def test_closing_the_scene_while_a_job_runs_discards_its_result(itm, scene, h, label, mesh, panel):
    fake = h.FakeBackend(lambda job: "hang")
    widget = panel(fake)
    image_node(h, label)
    widget.ui.applyButton.click()
    process_events(0.2)
    scene.Clear(0)
    assert fake.cancel_calls == 1
    wait_until(lambda: widget._job is None, what="the job to end")
    assert models(scene) == []
    assert widget._parameterNode is not None  # a new parameter node after the close
    assert widget._parameterNode.parameterNode.GetScene() is scene


def test_a_worker_that_dies_is_reported_to_the_user(itm, scene, h, label, app, panel):
    widget = panel(h.FakeBackend(lambda job: "die"))
    image_node(h, label)
    before = h.scene_state(scene)
    widget.ui.applyButton.click()
    wait_until(lambda: widget._job is None, what="the failure")
    assert h.scene_state(scene) == before
    assert "stopped unexpectedly" in widget.ui.statusLabel.text
    assert any("stopped unexpectedly" in text for text in errors(app)), app.dialogs


def test_bad_input_is_shown_in_a_message_box(itm, scene, h, label, app, panel):
    from imagetomesh.errors import InputError

    def refuse(job):
        raise InputError("the image is not a hippocampus MRI; choose another model")

    widget = panel(h.FakeBackend(refuse))
    image_node(h, label)
    widget.ui.applyButton.click()
    wait_until(lambda: widget._job is None, what="the error")
    assert errors(app) == ["the image is not a hippocampus MRI; choose another model"]


def test_a_refusal_names_the_panels_check_box_not_the_command_line_flag(itm, scene, h, label, app, panel):
    from imagetomesh.errors import InputError

    def refuse(job):
        raise InputError(
            "the organs found do not lie as in its training CTs; or pass --allow-mismatch to segment it anyway"
        )

    widget = panel(h.FakeBackend(refuse))
    image_node(h, label)
    widget.ui.applyButton.click()
    wait_until(lambda: widget._job is None, what="the error")
    (shown,) = errors(app)
    assert "--allow-mismatch" not in shown
    assert shown.endswith("or tick 'Also offer models not made for this volume' to segment it anyway")


# --- annotate and fit -----------------------------------------------------------------------------
def draw_circle(curve, centre_ras, radius=6.0, count=12, off_plane=0.0):
    """Control points on a circle in the curve's recorded slice plane (``off_plane`` mm along its normal)."""
    values = np.array([float(v) for v in curve.GetAttribute("ImageToMesh.SliceToRAS").split()]).reshape(4, 4)
    u, v, normal = values[:3, 0], values[:3, 1], values[:3, 2]
    origin = (
        values[:3, 3]
        + np.dot(np.asarray(centre_ras) - values[:3, 3], u) * u
        + np.dot(np.asarray(centre_ras) - values[:3, 3], v) * v
    )
    for angle in np.linspace(0, 2 * np.pi, count, endpoint=False):
        point = origin + radius * (np.cos(angle) * u + np.sin(angle) * v) + off_plane * normal
        curve.AddControlPoint(*point.tolist())


def annotate(widget, scene, label, h):
    node = image_node(h, label)
    centre = np.array(node.GetImageData().GetCenter())
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(node))
    centre_ras = (ijk_to_ras @ np.append(centre, 1.0))[:3]
    for name in ("Red", "Yellow", "Green"):
        slice_node = scene.GetNodeByID(f"vtkMRMLSliceNode{name}")
        slice_node.JumpSliceByCentering(*centre_ras)
    widget.ui.annotateButton.click()
    return centre_ras


def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_annotate_binds_one_place_widget_per_view_and_starts_placing_on_red(itm, scene, h, label, panel):
    widget = panel(h.FakeBackend(lambda job: None))
    annotate(widget, scene, label, h)
    curves = {
        name: getattr(widget.ui, f"{name.lower()}PlaceWidget").currentNode() for name in ("Red", "Yellow", "Green")
    }
    for name, curve in curves.items():
        assert curve is not None and curve.GetAttribute("ImageToMesh.SliceNode") == f"vtkMRMLSliceNode{name}"
        assert curve.GetDisplayNode().GetViewNodeIDs() == (f"vtkMRMLSliceNode{name}",)  # its own view only
        assert curve in widget.ui.curvesSelector.checkedNodes()
    assert widget.ui.redPlaceWidget.placeModeEnabled and not widget.ui.yellowPlaceWidget.placeModeEnabled
    assert "placing" in widget.ui.redPlaceLabel.text
    widget.ui.yellowPlaceWidget.setPlaceModeEnabled(True)  # the user switches views
    assert widget.ui.yellowPlaceWidget.placeModeEnabled and not widget.ui.redPlaceWidget.placeModeEnabled


@pytest.mark.parametrize("how", ["exit", "scene close", "cleanup"])
def test_place_mode_ends_when_the_module_is_left(itm, scene, h, label, panel, how):
    widget = panel(h.FakeBackend(lambda job: None))
    annotate(widget, scene, label, h)
    interaction = slicer.modules.markups.logic().GetMRMLApplicationLogic().GetInteractionNode()
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    if how == "exit":
        widget.exit()
    elif how == "scene close":
        scene.Clear(0)
    else:
        widget.cleanup()
    assert interaction.GetCurrentInteractionMode() != interaction.Place


def test_fit_uses_the_drawn_curves_and_a_moved_slider_refits_once(itm, scene, h, label, mesh, panel):
    fake = h.FakeBackend(lambda job: mesh)
    widget = panel(fake)
    centre = annotate(widget, scene, label, h)
    for curve in widget.ui.curvesSelector.checkedNodes():
        draw_circle(curve, centre)
    widget.ui.fitButton.click()
    wait_until(lambda: widget._job is None, what="the fit")
    assert [job.task for job in fake.jobs] == ["fit_curves"] and len(fake.jobs[0].curves) == 3
    assert fake.jobs[0].params["lambda_dir"] == pytest.approx(100.0)
    (model,) = models(scene)
    for value in (2.5, 3.0, 3.5):  # a drag: three values in quick succession
        widget.ui.lambdaDirSlider.value = value
        process_events(0.05)
    assert len(fake.jobs) == 1  # debounced: nothing yet
    wait_until(lambda: len(fake.jobs) == 2 and widget._job is None, what="the refit")
    process_events(0.6)
    assert len(fake.jobs) == 2
    assert fake.jobs[1].params["lambda_dir"] == pytest.approx(10**3.5)
    assert models(scene) == [model]  # the refit replaces the same model


def test_editing_a_fitted_curve_refits_with_the_same_debounce(itm, scene, h, label, mesh, panel):
    fake = h.FakeBackend(lambda job: mesh)
    widget = panel(fake)
    centre = annotate(widget, scene, label, h)
    curves = widget.ui.curvesSelector.checkedNodes()
    for curve in curves:
        draw_circle(curve, centre)
    widget.ui.fitButton.click()
    wait_until(lambda: widget._job is None, what="the fit")
    red = widget.ui.redPlaceWidget.currentNode()
    position = np.array(red.GetNthControlPointPosition(0))
    red.SetNthControlPointPosition(0, *(position + [1.0, 0.0, 0.0]).tolist())  # dragged within the axial plane
    red.SetNthControlPointPosition(0, *(position + [2.0, 0.0, 0.0]).tolist())
    assert len(fake.jobs) == 1
    wait_until(lambda: len(fake.jobs) == 2 and widget._job is None, what="the refit after a drag")
    assert not np.allclose(fake.jobs[1].curves[0], fake.jobs[0].curves[0])  # the dragged point moved the red curve
    red.RemoveNthControlPoint(3)
    wait_until(lambda: len(fake.jobs) == 3 and widget._job is None, what="the refit after a removal")
    assert (
        red.GetNumberOfControlPoints() == 11
        and fake.jobs[2].curves[0].shape != fake.jobs[1].curves[0].shape
        or not np.allclose(fake.jobs[2].curves[0], fake.jobs[1].curves[0])
    )


def test_a_curve_off_its_slice_plane_is_projected_with_a_warning_in_the_panel(itm, scene, h, label, mesh, panel):
    fake = h.FakeBackend(lambda job: mesh)
    widget = panel(fake)
    centre = annotate(widget, scene, label, h)
    red, yellow, green = (getattr(widget.ui, f"{n}PlaceWidget").currentNode() for n in ("red", "yellow", "green"))
    draw_circle(red, centre)
    draw_circle(yellow, centre)
    draw_circle(green, centre, off_plane=1.5)  # drawn after scrolling 1.5 mm away
    values = np.array([float(v) for v in green.GetAttribute("ImageToMesh.SliceToRAS").split()]).reshape(4, 4)
    widget.ui.fitButton.click()
    wait_until(lambda: widget._job is None, what="the fit")
    assert widget.ui.warningLabel.visible and "projected onto that plane" in widget.ui.warningLabel.text
    assert green.GetName() in widget.ui.warningLabel.text
    normal_lps = values[:3, 2] * [-1, -1, 1]
    origin_lps = values[:3, 3] * [-1, -1, 1]
    sent = fake.jobs[0].curves[2]
    assert np.abs((sent - origin_lps) @ normal_lps).max() < 1e-6  # on the recorded plane
    assert "warning:" in widget.ui.logTextEdit.toPlainText()


def test_the_first_point_records_the_plane_the_user_really_draws_on(itm, scene, h, label, panel):
    widget = panel(h.FakeBackend(lambda job: None))
    centre = annotate(widget, scene, label, h)
    red = widget.ui.redPlaceWidget.currentNode()
    slice_node = scene.GetNodeByID("vtkMRMLSliceNodeRed")
    slice_node.JumpSliceByOffsetting(*(np.array(centre) + [0, 0, 4.0]).tolist())  # the user scrolls 4 mm first
    red.AddControlPoint(*(np.array(centre) + [0, 0, 4.0]).tolist())
    values = np.array([float(v) for v in red.GetAttribute("ImageToMesh.SliceToRAS").split()]).reshape(4, 4)
    assert values[2, 3] == pytest.approx(centre[2] + 4.0, abs=1e-3)


# --- refine ---------------------------------------------------------------------------------------
def test_refine_a_segmentation_segment(itm, scene, h, label, mesh, panel):
    fake = h.FakeBackend(lambda job: mesh)
    widget = panel(fake)
    labelmap = h.volume_to_node(label, "hippo-label", "vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
    widget.ui.refineInputSelector.setCurrentNode(segmentation)
    assert widget.ui.segmentComboBox.count == 1 and widget.ui.segmentComboBox.enabled
    widget.ui.refineButton.click()
    wait_until(lambda: widget._job is None, what="the refinement")
    assert [job.task for job in fake.jobs] == ["refine"]
    assert fake.jobs[0].params["lambda_dir"] is None  # the paper's shared latent by default
    assert widget._parameterNode.refineOutputModel is not None


# --- export ---------------------------------------------------------------------------------------
def test_export_asks_before_repairing_and_writes_the_file(itm, scene, h, mesh, app, panel, tmp_path):
    reports = iter(
        [
            {"watertight": False, "manifold": True, "self_intersecting_faces": 0, "summary": "2 holes"},
            {"watertight": False, "manifold": True, "self_intersecting_faces": 0, "summary": "2 holes"},
            {"watertight": True, "manifold": True, "self_intersecting_faces": 0, "summary": "clean"},
        ]
    )

    def behaviour(job):
        return next(reports) if job.task == "check" else job.mesh

    fake = h.FakeBackend(behaviour)
    widget = panel(fake)
    from ImageToMeshModule import sceneAdapters

    model = sceneAdapters.addResultModel(mesh, sceneAdapters.ResultTarget("segment", "hippo mesh"))
    widget.ui.exportModelsSelector.setCheckState(model, 2)
    widget._parameterNode.exportDirectory = tmp_path
    app.answers.append(qt.QMessageBox.Yes)
    widget.ui.exportButton.click()
    assert [job.task for job in fake.jobs] == ["check", "check", "repair", "check"]
    assert (tmp_path / "hippo mesh.stl").is_file()
    assert any("Repair it before exporting?" in text for text, _ in app.dialogs)
    assert "Exported" in widget.ui.statusLabel.text


def test_export_cancelled_in_the_dialog_writes_nothing(itm, scene, h, mesh, app, panel, tmp_path):
    fake = h.FakeBackend(
        lambda job: {"watertight": False, "manifold": False, "self_intersecting_faces": 3, "summary": "bad"}
    )
    widget = panel(fake)
    from ImageToMeshModule import sceneAdapters

    model = sceneAdapters.addResultModel(mesh, sceneAdapters.ResultTarget("segment", "hippo mesh"))
    widget.ui.exportModelsSelector.setCheckState(model, 2)
    widget._parameterNode.exportDirectory = tmp_path
    app.answers.append(qt.QMessageBox.Cancel)
    widget.ui.exportButton.click()
    assert list(tmp_path.iterdir()) == []


# --- dependencies ---------------------------------------------------------------------------------
@pytest.fixture
def missing(monkeypatch):
    from ImageToMeshModule import dependencies, logic

    state = {
        "missing": [
            dependencies.DependencyStatus("torch>=2.1,<3", "torch", "1.13.1"),
            dependencies.DependencyStatus("pymeshlab>=2022.2", "pymeshlab", None),
        ]
    }
    monkeypatch.setattr(logic.ImageToMeshLogic, "unsatisfiedDependencies", staticmethod(lambda: state["missing"]))
    return state


def test_missing_dependencies_are_named_before_anything_runs(itm, scene, h, label, app, missing):
    widget, _ = application.open_module_panel(h.FakeBackend(lambda job: None))
    try:
        assert widget.ui.dependenciesLabel.visible and widget.ui.installDependenciesButton.visible
        assert "torch 1.13.1 (needs <3,>=2.1)" in widget.ui.dependenciesLabel.text
        assert "pymeshlab (not installed" in widget.ui.dependenciesLabel.text
        assert widget.ui.methodComboBox.count >= 5  # the models are listed all the same (cards need no torch)
    finally:
        widget.cleanup()


def test_testing_mode_never_installs(itm, scene, h, label, app, missing, monkeypatch):
    calls = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: calls.append(a))
    app.testing = True
    fake = h.FakeBackend(lambda job: None)
    widget, _ = application.open_module_panel(fake)
    try:
        image_node(h, label)
        widget.ui.applyButton.click()
        assert calls == [] and fake.jobs == [] and "Testing mode" in widget.ui.statusLabel.text
    finally:
        widget.cleanup()


def test_install_asks_first_then_installs_with_progress(itm, scene, h, label, app, missing, monkeypatch):
    from ImageToMeshModule import dependencies

    installed = []

    def install(statuses, progress, **kwargs):
        for done, status in enumerate(statuses):
            progress(done, len(statuses), f"Installing {status.requirement} ({done + 1} of {len(statuses)})...")
        installed.extend(status.name for status in statuses)
        missing["missing"] = []  # what the panel finds when it checks again

    monkeypatch.setattr(dependencies, "installDependencies", install)
    widget, _ = application.open_module_panel(h.FakeBackend(lambda job: None))
    try:
        app.answers.append(qt.QMessageBox.Cancel)
        widget.ui.installDependenciesButton.click()
        assert installed == [] and "nothing was run" in widget.ui.statusLabel.text
        question = app.dialogs[-1][0]
        assert "torch 1.13.1" in question and "numpy, VTK and SimpleITK are left as they are" in question
        app.answers.append(qt.QMessageBox.Ok)
        widget.ui.installDependenciesButton.click()
        assert installed == ["torch", "pymeshlab"]
        assert "Installing pymeshlab>=2022.2 (2 of 2)..." in widget.ui.logTextEdit.toPlainText()
        assert not widget.ui.dependenciesLabel.visible and not widget.ui.installDependenciesButton.visible
    finally:
        widget.cleanup()


def test_a_failed_install_is_shown_to_the_user(itm, scene, h, label, app, missing, monkeypatch):
    from ImageToMeshModule import dependencies

    def install(statuses, progress, **kwargs):
        raise dependencies.InstallError("torch is installed through the PyTorch extension: install 'PyTorch' ...")

    monkeypatch.setattr(dependencies, "installDependencies", install)
    fake = h.FakeBackend(lambda job: None)
    widget, _ = application.open_module_panel(fake)
    try:
        image_node(h, label)
        app.answers.append(qt.QMessageBox.Ok)
        widget.ui.applyButton.click()
        assert fake.jobs == []
        assert any("Installing the dependencies failed" in text for text in errors(app))
    finally:
        widget.cleanup()
