"""Validation scores shared by the trainers: a mesh's Dice rasterised in a crop, per-organ means."""

import numpy as np
import pytest
import torch
from boxes import box_mesh

from imagetomesh.metrics import dice
from imagetomesh.nn.grid import index_to_grid
from imagetomesh.training.validation import organ_means, rasterised_dice


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
    cases = [PreparedCase(f"c{n}", torch.randn(16, 16, 16), label, transform) for n in range(2)]
    got = segmentation_metrics(model, cases, "cpu")
    assert model.training  # left in training mode
    # slow and obvious: one more forward per case through predict_meshes, rasterised on the grid
    model.eval()
    with torch.no_grad():
        meshes = [model.predict_meshes(c.image[None, None])[0] for c in cases]
    want = np.mean([rasterised_dice(m.vertices, m.faces, label.numpy().astype(bool)) for m in meshes])
    assert 0 < want < 1
    assert got["val_mesh_dice"] == pytest.approx(want, abs=1e-12)
