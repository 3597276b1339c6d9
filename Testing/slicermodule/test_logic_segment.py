"""ImageToMeshLogic.segment on a real MRML scene: geometry, result placement, real models."""

from pathlib import Path

import numpy as np
import pytest
import slicer

from ImageToMeshModule import sceneAdapters

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "Resources" / "SampleData"
MODELS = REPO / "Resources" / "Models"
HIPPO_IMAGE = SAMPLES / "hippocampus" / "hippocampus_024.nii.gz"
HIPPO_LABEL = SAMPLES / "hippocampus" / "hippocampus_024_label.nii.gz"

#: Bundled hippocampus segmenters, best first; the real-model test uses the first one installed.
REAL_MODELS = ("unet-hippocampus", "voxel2mesh-hippocampus", "pixel2mesh3d-hippocampus")


@pytest.fixture(scope="module")
def hippo():
    from imagetomesh.io.images import read_image, read_labelmap

    return read_image(HIPPO_IMAGE), read_labelmap(HIPPO_LABEL)


def threshold_segmenter(job):
    """Stand-in for a model: the surface of the voxels above 50 of the image it is given (LPS)."""
    from imagetomesh.geometry.isosurface import labelmap_to_mesh

    volume = job.volume
    return labelmap_to_mesh(volume.with_array((volume.array > 50).astype(np.uint8)))


def label_image_node(h, label, name="hippo"):
    """A scalar volume node whose intensities are the label (x 100), stored with permuted, flipped axes."""
    image = h.permuted_volume(label.with_array(label.array.astype(np.float32) * 100.0))
    return h.volume_to_node(image, name)


def test_volume_node_to_library_volume_keeps_geometry(itm, scene, hippo, h):
    image, _ = hippo
    permuted = h.permuted_volume(image)
    assert not np.allclose(permuted.direction, image.direction)  # a non-trivial IJK->RAS
    node = h.volume_to_node(permuted, "hippo")
    back = sceneAdapters.volumeFromNode(node)
    assert back.same_geometry(permuted)
    np.testing.assert_array_equal(back.array, permuted.array)
    # every voxel keeps its value at its LPS position: map a few voxels back to the original grid
    from imagetomesh.core.volume import transform_points

    rng = np.random.default_rng(0)
    ijk = np.stack([rng.integers(0, n, 20) for n in back.size_ijk], axis=1)
    original = np.rint(transform_points(image.lps_to_index, transform_points(back.index_to_lps, ijk))).astype(int)
    assert np.array_equal(
        back.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]], image.array[original[:, 2], original[:, 1], original[:, 0]]
    )


def test_segment_puts_an_aligned_model_in_the_input_folder(itm, scene, hippo, h):
    from imagetomesh.metrics import mesh_dice_iou

    _, label = hippo
    node = label_image_node(h, label)
    folder = h.put_in_folder(scene, node)
    fake = h.FakeBackend(threshold_segmenter)
    logic = itm.ImageToMeshLogic(backend=fake)
    seen = []
    model = logic.segment(node, "threshold-stand-in", progress=lambda f, m: seen.append(f))

    assert model.IsA("vtkMRMLModelNode") and model.GetName() == "hippo threshold-stand-in"
    assert fake.jobs[0].task == "segment" and fake.jobs[0].params["model"] == "threshold-stand-in"
    assert seen and max(seen) <= 1.0
    display = model.GetDisplayNode()
    assert display is not None and display.GetVisibility() and display.GetVisibility2D()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(model)) == folder
    assert model.GetAttribute("ImageToMesh.Method") == "threshold-stand-in"
    # the model (RAS) rasterised back on the label's own grid overlaps the label
    dice, _ = mesh_dice_iou(sceneAdapters.meshFromModelNode(model), label)
    assert dice >= 0.9


def test_segment_replaces_the_output_model_in_place(itm, scene, hippo, h):
    _, label = hippo
    node = label_image_node(h, label)
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(threshold_segmenter))
    first = logic.segment(node, "m")
    before = scene.GetNumberOfNodes()
    second = logic.segment(node, "m", outputModel=first)
    assert second is first and scene.GetNumberOfNodes() == before
    third = logic.segment(node, "m")
    assert third is not first and third.GetName() != first.GetName()  # a unique new name


def test_segment_roi_crops_the_image_sent_to_the_model(itm, scene, hippo, h):
    _, label = hippo
    node = label_image_node(h, label)
    fake = h.FakeBackend(threshold_segmenter)
    logic = itm.ImageToMeshLogic(backend=fake)
    full = sceneAdapters.volumeFromNode(node)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    lo, hi = full.bounds_lps()
    centre_lps = (lo + hi) / 2.0
    roi.SetCenter(-centre_lps[0], -centre_lps[1], centre_lps[2])  # RAS
    roi.SetSize(20.0, 24.0, 16.0)
    model = logic.segment(node, "m", roi=roi)
    cropped = fake.jobs[0].volume
    assert np.prod(cropped.shape) < np.prod(full.shape)
    assert np.allclose(cropped.direction, full.direction) and np.allclose(cropped.spacing, full.spacing)
    # every cropped voxel keeps its value at the same LPS position
    from imagetomesh.core.volume import transform_points

    ijk_full = np.rint(transform_points(full.lps_to_index, cropped.origin[None]))[0].astype(int)
    i, j, k = ijk_full
    assert cropped.array[0, 0, 0] == full.array[k, j, i]
    assert model.GetPolyData().GetNumberOfPoints() > 0


def _first_real_model():
    """The first bundled hippocampus model installed (Resources/Models or $IMAGETOMESH_MODEL_PATH)."""
    from imagetomesh.zoo import available_models

    installed = available_models()
    return next((name for name in REAL_MODELS if name in installed), None)


@pytest.mark.slow
def test_segment_with_the_bundled_model_in_the_worker(itm, scene, hippo, h, worker):
    """The real thing: bundled hippocampus model, worker process, permuted IJK->RAS input."""
    from imagetomesh.metrics import mesh_dice_iou

    name = _first_real_model()
    if name is None:
        pytest.skip(f"no bundled hippocampus model in {MODELS} yet ({', '.join(REAL_MODELS)})")
    image, label = hippo
    node = h.volume_to_node(h.permuted_volume(image), "hippocampus_024")
    folder = h.put_in_folder(scene, node)
    logic = itm.ImageToMeshLogic(backend=worker)
    model = logic.segment(node, name, device="CPU")
    assert model.GetName() == f"hippocampus_024 {name}"
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(model)) == folder
    dice, _ = mesh_dice_iou(sceneAdapters.meshFromModelNode(model), label)
    assert dice >= 0.7, f"{name}: Dice {dice:.3f} against the held-out label"


def _organ_results():
    """Two organs found (cubes), one not: what the worker returns for a several-organ model."""
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.io.images import Volume
    from imagetomesh.organs import Organ, OrganMesh

    def cube(corner):
        array = np.zeros((12, 12, 12), np.uint8)
        array[corner : corner + 4, corner : corner + 4, corner : corner + 4] = 1
        return labelmap_to_mesh(Volume(array, (2.0, 2.0, 2.0)))

    return [
        OrganMesh(Organ("brainstem", 1, 1, (250, 210, 160)), cube(2)),
        OrganMesh(Organ("left_parotid", 2, 4, (240, 120, 200)), None),
        OrganMesh(Organ("mandible", 3, 7, (241, 238, 226)), cube(6)),
    ]


def test_a_several_organ_model_gives_one_named_coloured_model_per_organ_in_one_folder(itm, scene, hippo, h):
    image, _ = hippo
    node = h.volume_to_node(image, "ct")
    parent = h.put_in_folder(scene, node)
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: _organ_results()))
    job, target = logic.prepareSegment(node, "unet-headneck-ct")
    nodes = logic.applyResult(_organ_results(), target)

    assert [n.GetName() for n in nodes] == ["Brainstem", "Mandible"]
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folders = {sh.GetItemParent(sh.GetItemByDataNode(n)) for n in nodes}
    assert len(folders) == 1
    folder = folders.pop()
    assert sh.GetItemName(folder) == "ct unet-headneck-ct" and sh.GetItemParent(folder) == parent
    assert np.allclose(nodes[0].GetDisplayNode().GetColor(), (250 / 255, 210 / 255, 160 / 255))
    assert nodes[1].GetAttribute("ImageToMesh.Organ") == "mandible"
    assert nodes[1].GetAttribute("ImageToMesh.Method") == "unet-headneck-ct"
    assert target.warnings == ["not found in this image: Left parotid"]
    # the mandible cube (voxels 6..9 at 2 mm, LPS) lands at the same place in RAS
    bounds = np.zeros(6)
    nodes[1].GetRASBounds(bounds)
    assert np.allclose(bounds, [-19, -11, -19, -11, 11, 19], atol=1.0)


def test_organ_models_are_all_or_nothing(itm, scene, hippo, h):
    """A failure while adding the second organ removes the first one and the folder again."""
    import vtk

    from imagetomesh.organs import Organ

    image, _ = hippo
    node = h.volume_to_node(image, "ct")
    logic = itm.ImageToMeshLogic(backend=h.FakeBackend(lambda job: None))
    _, target = logic.prepareSegment(node, "unet-headneck-ct")
    results = _organ_results()
    results[2].organ = Organ("mandible", 3, 7, ("not", "a", "colour"))  # fails in the scene stage
    before = h.scene_state(scene)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)

    def items():
        ids = vtk.vtkIdList()
        sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
        return [ids.GetId(i) for i in range(ids.GetNumberOfIds())]

    before_items = items()
    with pytest.raises(TypeError):
        logic.applyResult(results, target)
    assert h.scene_state(scene) == before and items() == before_items
    with pytest.raises(Exception, match="found none of its organs"):
        logic.applyResult([results[1]], target)
