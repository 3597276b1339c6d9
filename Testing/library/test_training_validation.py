"""Validation scores shared by the trainers: a mesh's Dice rasterised in a crop, per-organ means."""

import numpy as np
import pytest
import torch
from boxes import box_mesh

from imagetomesh.metrics import dice
from imagetomesh.nn.grid import index_to_grid
from imagetomesh.training.validation import organ_means, rasterised_dice
from imagetomesh.voxel_meshing import finish_mesh


def test_rasterised_dice_is_the_dice_of_the_voxel_centres_inside_the_mesh():
    shape = (10, 12, 14)  # (D, H, W)
    lo, hi = np.array([-0.55, -0.3, -0.62]), np.array([0.41, 0.52, 0.2])
    verts, faces = box_mesh(lo, hi)
    # slow and obvious: every voxel centre in grid coordinates, tested against the box
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ijk = torch.tensor(np.stack([i, j, k], -1), dtype=torch.float64)
    centres = index_to_grid(ijk, shape[::-1]).numpy()
    inside = np.all((centres > lo) & (centres < hi), axis=-1)
    truth = np.zeros(shape, bool)
    truth[2:8, 3:10, 1:9] = True
    expected = dice(inside, truth)
    assert 0.2 < expected < 0.9
    assert rasterised_dice(verts, faces, truth) == pytest.approx(expected)
    assert rasterised_dice(torch.tensor(verts, dtype=torch.float32), torch.tensor(faces), truth) == pytest.approx(
        expected
    )


def test_organ_means_leave_out_organs_without_scores():
    out = organ_means({"brainstem": [0.8, 0.6], "larynx": [], "mandible": [0.9]}, "val_dice")
    assert out == pytest.approx({"val_dice_brainstem": 0.7, "val_dice_mandible": 0.9, "val_dice": 0.8})


def test_segment_dice_scores_the_untangled_mesh_segment_returns_not_the_folds():
    from imagetomesh.core.mesh import Mesh
    from imagetomesh.geometry.quality import self_intersecting_faces
    from imagetomesh.geometry.topology import icosphere
    from imagetomesh.training.validation import segment_dice

    verts, faces = icosphere(3)
    ball = Mesh(0.6 * np.asarray(verts, dtype=np.float64), np.asarray(faces))
    shape = (24, 24, 24)
    k, j, i = np.indices(shape)
    centres = (np.stack([i, j, k], -1) + 0.5) / 12.0 - 1.0  # grid coordinates of the voxel centres
    truth = np.linalg.norm(centres, axis=-1) < 0.6
    folded = ball.vertices.copy()
    folded[int(np.argmax(folded[:, 2]))] *= -1.5  # one vertex pushed through the ball and out of its far side
    fold = Mesh(folded, ball.faces)
    finished = finish_mesh(fold)
    assert np.any(self_intersecting_faces(fold)) and not np.any(self_intersecting_faces(finished))
    got = segment_dice(fold, truth)
    assert got == pytest.approx(rasterised_dice(finished.vertices, finished.faces, truth), abs=1e-12)
    assert abs(got - rasterised_dice(fold.vertices, fold.faces, truth)) > 1e-4  # not the folded mesh's score


def test_segmentation_metrics_scores_the_mesh_predict_meshes_returns():
    from imagetomesh.core.transforms import GridTransform
    from imagetomesh.models.voxel2mesh import Voxel2Mesh, Voxel2MeshConfig
    from imagetomesh.nn.unet import UNetConfig
    from imagetomesh.training.data import PreparedCase
    from imagetomesh.training.validation import segmentation_metrics

    torch.manual_seed(0)
    model = Voxel2Mesh(Voxel2MeshConfig(unet=UNetConfig(base=4, depth=3), unpooling="adaptive", hidden=8))
    k, j, i = np.indices((16, 16, 16))
    label = torch.from_numpy((((i - 7.5) ** 2 + (j - 8) ** 2 + (k - 7) ** 2) < 20).astype(np.uint8))
    transform = GridTransform(np.diag([7.5, 7.5, 7.5, 1.0]), (16, 16, 16))  # 1 mm voxels
    angle = 0.4
    turn = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    rotated = GridTransform(
        np.block([[turn @ np.diag([7.5, 6.0, 4.5]), np.ones((3, 1))], [np.zeros((1, 3)), 1.0]]), (16, 16, 16)
    )
    cases = [PreparedCase(f"c{n}", torch.randn(16, 16, 16), label, transform) for n in range(2)]
    got = segmentation_metrics(model, cases, "cpu")
    assert model.training  # left in training mode
    # slow and obvious: one more forward per case through predict_meshes, finished in LPS mm as segment does (a
    # rotated, anisotropic grid), back on the grid, rasterised
    model.eval()
    with torch.no_grad():
        meshes = [model.predict_meshes(c.image[None, None])[0] for c in cases]
    finished = [finish_mesh(m.transformed(rotated.grid_to_lps)).transformed(rotated.lps_to_grid) for m in meshes]
    want = np.mean([rasterised_dice(m.vertices, m.faces, label.numpy().astype(bool)) for m in finished])
    assert 0 < want < 1
    assert got["val_mesh_dice"] == pytest.approx(want, abs=1e-12)
