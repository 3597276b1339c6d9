"""Annotate-and-fit (closed curves on slice planes) and refine (labelmap / segmentation) on a real scene."""

from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

from ImageToMeshModule import parameterNode, sceneAdapters

REPO = Path(__file__).resolve().parents[2]
HIPPO_LABEL = REPO / "Resources" / "SampleData" / "hippocampus" / "hippocampus_024_label.nii.gz"
PRIOR = "dals-hippocampus"


@pytest.fixture(scope="module")
def label():
    from imagetomesh.io.images import read_labelmap

    return read_labelmap(HIPPO_LABEL)


@pytest.fixture(scope="module")
def labels():
    """The sample's two labels (1 anterior, 2 posterior) as integers."""
    from imagetomesh.io.images import read_image

    volume = read_image(HIPPO_LABEL)
    return volume.with_array(volume.array.astype(np.uint8))


def _slice_to_ras(node):
    m = node.GetSliceToRAS()
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def set_slices_through(scene, point_ras, oblique=True):
    """Red/Yellow/Green through ``point_ras``; Green tilted 25 degrees when ``oblique``."""
    for name in ("Red", "Yellow", "Green"):
        scene.GetNodeByID(f"vtkMRMLSliceNode{name}").JumpSliceByOffsetting(*point_ras)
    if oblique:
        green = scene.GetNodeByID("vtkMRMLSliceNodeGreen")
        angle = np.deg2rad(25.0)
        normal = np.array([0.0, np.cos(angle), np.sin(angle)])
        green.SetSliceToRASByNTP(*normal, 1.0, 0.0, 0.0, *point_ras, 0)
        green.UpdateMatrices()


def draw_contour(curve, label, slice_to_ras):
    """Place control points of ``curve`` around ``label`` in the slice plane, about every 4 mm,
    as a user clicking a closed curve would (the library's own outline of a mask in a plane)."""
    from imagetomesh.fitting.curves import mask_outline

    flip = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS
    outline_lps = mask_outline(label, slice_to_ras[:3, 3] * flip, slice_to_ras[:3, 2] * flip)
    assert len(outline_lps) >= 8, "the slice misses the structure"
    for point in outline_lps * flip:
        curve.AddControlPoint(vtk.vtkVector3d(*point))


def annotated_curves(itm, scene, h, label):
    """A permuted labelmap-backed image, three curves from Annotate, each drawn on its plane."""
    image = h.permuted_volume(label.with_array(label.array.astype(np.float32)))
    node = h.volume_to_node(image, "hippo")
    folder = h.put_in_folder(scene, node)
    lo, hi = label.bounds_lps()
    centre_lps = (lo + hi) / 2.0
    set_slices_through(scene, (-centre_lps[0], -centre_lps[1], centre_lps[2]))
    logic = itm.ImageToMeshLogic(backend=None)
    curves = logic.createAnnotationCurves(node)
    for curve in curves:
        values = [float(v) for v in curve.GetAttribute("ImageToMesh.SliceToRAS").split()]
        draw_contour(curve, label, np.array(values).reshape(4, 4))
    return node, folder, curves


def test_annotate_creates_one_closed_curve_per_slice_plane(itm, scene, h, label):
    node = h.volume_to_node(label, "hippo")
    set_slices_through(scene, (0.0, 0.0, 10.0))
    curves = itm.ImageToMeshLogic(backend=None).createAnnotationCurves(node)
    assert [c.GetAttribute("ImageToMesh.SliceNode") for c in curves] == [
        "vtkMRMLSliceNodeRed",
        "vtkMRMLSliceNodeYellow",
        "vtkMRMLSliceNodeGreen",
    ]
    for curve in curves:
        assert curve.IsA("vtkMRMLMarkupsClosedCurveNode") and curve.GetNumberOfControlPoints() == 0
        slice_node = scene.GetNodeByID(curve.GetAttribute("ImageToMesh.SliceNode"))
        stored = np.array([float(v) for v in curve.GetAttribute("ImageToMesh.SliceToRAS").split()]).reshape(4, 4)
        np.testing.assert_allclose(stored, _slice_to_ras(slice_node), atol=1e-4)  # the current plane, oblique included
        view_ids = curve.GetDisplayNode().GetViewNodeIDs()
        assert view_ids == (slice_node.GetID(),)  # shown only in its own slice view, not in 3D
        assert curve.GetAttribute("ImageToMesh.Reference") == node.GetID()
    green = _slice_to_ras(scene.GetNodeByID("vtkMRMLSliceNodeGreen"))
    assert abs(green[2, 2]) > 0.4  # the tilted Green plane was kept as it is


def test_fit_curves_sends_planar_lps_curves_and_adds_the_model(itm, scene, h, label):
    from imagetomesh.geometry.isosurface import labelmap_to_mesh

    node, folder, curves = annotated_curves(itm, scene, h, label)
    fake = h.FakeBackend(lambda job: labelmap_to_mesh(label))
    logic = itm.ImageToMeshLogic(backend=fake)
    model = logic.fitCurves(curves, PRIOR, lambdaDir=0.5)

    job = fake.jobs[0]
    assert job.task == "fit_curves" and job.params["prior"] == PRIOR
    assert job.params["lambda_dir"] == 0.5 and job.params["lambda_reg"] is None  # None: the paper's default
    assert len(job.curves) == 3
    lo, hi = label.bounds_lps()
    for curve_lps, curve_node in zip(job.curves, curves):
        plane = np.array([float(v) for v in curve_node.GetAttribute("ImageToMesh.SliceToRAS").split()]).reshape(4, 4)
        normal_lps = plane[:3, 2] * [-1, -1, 1]
        origin_lps = plane[:3, 3] * [-1, -1, 1]
        assert np.abs((curve_lps - origin_lps) @ normal_lps).max() < 1e-3  # on the slice plane, in LPS
        assert np.all(curve_lps.min(0) >= lo - 2) and np.all(curve_lps.max(0) <= hi + 2)  # on the structure
    assert model.GetName() == f"hippo {PRIOR}"
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(model)) == folder
    # refit into the same model (what a slider move does)
    again = logic.fitCurves(curves, PRIOR, lambdaDir=2.0, outputModel=model)
    assert again is model and fake.jobs[1].params["lambda_dir"] == 2.0


def test_fit_curves_ignores_undrawn_curves(itm, scene, h, label):
    from imagetomesh.geometry.isosurface import labelmap_to_mesh

    node, _, curves = annotated_curves(itm, scene, h, label)
    curves[1].RemoveAllControlPoints()  # the user drew on two views only
    fake = h.FakeBackend(lambda job: labelmap_to_mesh(label))
    itm.ImageToMeshLogic(backend=fake).fitCurves(curves, PRIOR)
    assert len(fake.jobs[0].curves) == 2


def _voxel_centres_lps(volume):
    from imagetomesh.core.volume import transform_points

    k, j, i = np.nonzero(volume.array)
    return np.round(transform_points(volume.index_to_lps, np.stack([i, j, k], 1)), 3)


def _same_voxels(a, b):
    return {tuple(p) for p in _voxel_centres_lps(a)} == {tuple(p) for p in _voxel_centres_lps(b)}


def test_refine_labelmap_node_sends_its_mask(itm, scene, h, label):
    from imagetomesh.geometry.isosurface import labelmap_to_mesh

    labelmap = h.volume_to_node(h.permuted_volume(label), "hippo-label", "vtkMRMLLabelMapVolumeNode")
    folder = h.put_in_folder(scene, labelmap)
    fake = h.FakeBackend(lambda job: labelmap_to_mesh(job.volume))
    model = itm.ImageToMeshLogic(backend=fake).refine(labelmap, PRIOR, lambdaReg=0.01)
    job = fake.jobs[0]
    assert job.task == "refine" and job.params["lambda_reg"] == 0.01
    assert set(np.unique(job.volume.array)) == {0, 1}
    assert _same_voxels(job.volume, label)
    assert model.GetName() == f"hippo-label {PRIOR}"
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(model)) == folder


def test_refine_segmentation_node_sends_the_chosen_segment(itm, scene, h, labels):
    from imagetomesh.geometry.isosurface import labelmap_to_mesh

    label = labels
    labelmap = h.volume_to_node(h.permuted_volume(labels), "hippo-labels", "vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2  # anterior (1), posterior (2)
    posterior = segmentation.GetSegmentation().GetNthSegmentID(1)
    fake = h.FakeBackend(lambda job: labelmap_to_mesh(job.volume))
    logic = itm.ImageToMeshLogic(backend=fake)
    model = logic.refine(segmentation, PRIOR, segmentId=posterior)
    assert _same_voxels(fake.jobs[0].volume, label.with_array((label.array == 2).astype(np.uint8)))
    segment_name = segmentation.GetSegmentation().GetSegment(posterior).GetName()
    assert model.GetName() == f"{segment_name} {PRIOR}"
    logic.refine(segmentation, PRIOR)  # no segment given: the first one
    assert _same_voxels(fake.jobs[1].volume, label.with_array((label.array == 1).astype(np.uint8)))


@pytest.fixture
def tiny_prior(tmp_path, monkeypatch):
    """An untrained, tiny DALS prior installed on the model path (the real fitting code, fast)."""
    pytest.importorskip("torch")
    fitting = pytest.importorskip("imagetomesh.fitting")
    if not hasattr(fitting, "fit_curves"):
        pytest.skip("imagetomesh.fitting has no fit_curves yet")
    import torch

    from imagetomesh.models.dals import DALSConfig, DALSDecoder
    from imagetomesh.weights import save_weights

    torch.manual_seed(0)  # the untrained decoder's shape is fixed, so the test is deterministic
    config = DALSConfig(latent_dim=8, hidden=(32, 32), fit_template_level=2)
    card = {"kind": "dals", "config": config.to_dict(), "mean_latent": [0.0] * 8, "paired": False}
    save_weights(DALSDecoder(config), tmp_path / "models" / "tiny-prior", card)
    monkeypatch.setenv("IMAGETOMESH_MODEL_PATH", str(tmp_path / "models"))
    return "tiny-prior"


def test_fit_and_refine_run_the_library_fits(itm, scene, h, label, tiny_prior):
    """The Logic's jobs reach imagetomesh.fitting with arguments it accepts (an untrained prior,
    a few iterations: this checks the wiring and the scene side, not the fit quality)."""
    from imagetomesh.backend import InProcessBackend

    node, folder, curves = annotated_curves(itm, scene, h, label)
    logic = itm.ImageToMeshLogic(backend=InProcessBackend())
    progress = []
    try:
        assert tiny_prior in logic.priors() and tiny_prior not in logic.segmentationMethods()
        fitted = logic.fitCurves(
            curves,
            tiny_prior,
            lambdaDir=10.0,
            lambdaReg=0.01,
            device="CPU",
            iterations=3,
            progress=lambda fraction, message: progress.append(fraction),
        )
        labelmap = h.volume_to_node(label, "hippo-label", "vtkMRMLLabelMapVolumeNode")
        refined = logic.refine(labelmap, tiny_prior, device="CPU", iterations=3)
        again = logic.refine(
            labelmap, tiny_prior, lambdaDir=100.0, lambdaReg=1e-3, device="CPU", iterations=3, outputModel=refined
        )
    finally:
        logic.close()
    assert progress and progress[-1] == pytest.approx(1.0)
    for model in (fitted, refined):
        mesh = sceneAdapters.meshFromModelNode(model)
        assert mesh.num_faces > 100 and mesh.signed_volume() > 0
    assert again is refined
    # the fitted surface sits where the curves are (the fit is normalised to the curves' frame)
    lo, hi = label.bounds_lps()
    assert np.all(np.abs(sceneAdapters.meshFromModelNode(fitted).centroid() - (lo + hi) / 2) < 15.0)


def _dals_available():
    try:
        import imagetomesh.fitting as fitting
        from imagetomesh.zoo import available_models
    except ImportError:
        return False
    return hasattr(fitting, "fit_curves") and PRIOR in available_models()


@pytest.mark.slow
def test_fit_curves_and_refine_with_the_bundled_prior(itm, scene, h, label):
    """The real DALS fits (in-process): curves on three planes, then the labelmap."""
    from imagetomesh.backend import InProcessBackend
    from imagetomesh.metrics import mesh_dice_iou

    if not _dals_available():
        pytest.skip(f"imagetomesh.fitting.fit_curves or the {PRIOR} prior is not available yet")
    node, _, curves = annotated_curves(itm, scene, h, label)
    logic = itm.ImageToMeshLogic(backend=InProcessBackend())
    try:
        # a short fit keeps the suite fast on a CPU (the mean shape alone does not reach the threshold)
        fitted = logic.fitCurves(curves, PRIOR, device="CPU", iterations=60)
        dice_fit, _ = mesh_dice_iou(sceneAdapters.meshFromModelNode(fitted), label)
        labelmap = h.volume_to_node(h.permuted_volume(label), "hippo-label", "vtkMRMLLabelMapVolumeNode")
        refined = logic.refine(labelmap, PRIOR, device="CPU", iterations=3)
        dice_refine, _ = mesh_dice_iou(sceneAdapters.meshFromModelNode(refined), label)
    finally:
        logic.close()
    assert dice_fit >= 0.7, f"fit to three curves: Dice {dice_fit:.3f}"
    assert dice_refine >= 0.8, f"refined labelmap: Dice {dice_refine:.3f}"


def test_fit_sliders_start_at_the_libraries_paper_defaults(itm, scene):
    import math

    from imagetomesh.fitting import TASK_DEFAULTS

    curves = TASK_DEFAULTS["curves"]
    assert parameterNode.PAPER_CURVE_LAMBDAS == (curves.lambda_dir, curves.lambda_reg)
    parameters = itm.ImageToMeshLogic(backend=None).getParameterNode()
    assert math.isclose(10**parameters.logLambdaDir, curves.lambda_dir)
    assert math.isclose(10**parameters.logLambdaReg, curves.lambda_reg)
    labelmap = TASK_DEFAULTS["labelmap"]
    assert parameters.refineUseDefaultLambdas  # refine's default: the labelmap task's weights ...
    assert math.isinf(labelmap.lambda_dir) and labelmap.lambda_reg == 0  # ... which the logic sends as None
