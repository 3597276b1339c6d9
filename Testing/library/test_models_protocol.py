"""The model protocol: every segmenting kind predicts meshes in grid coordinates, and Segmenter uses only that."""

import numpy as np
import pytest
import torch
from torch import nn

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import GridTransform
from imagetomesh.core.volume import Volume
from imagetomesh.errors import InputError
from imagetomesh.geometry.topology import icosphere
from imagetomesh.inference import Segmenter
from imagetomesh.models.protocol import DeformedTemplateModel, SegmentationModel
from imagetomesh.models.registry import MODEL_KINDS, build_model, model_kind
from imagetomesh.zoo import LoadedModel

UNET = {"base": 4, "depth": 3}
SMALL = {
    "voxel2mesh": {"unet": UNET, "hidden": 8},
    "pixel2mesh3d": {"unet": UNET, "hidden": 8, "residual_blocks": 1},
    "implicitmeshnet": {"unet": UNET, "hidden": 8, "stages": 2, "template_level": 2},
}


def test_every_kind_is_a_segmentation_model():
    for kind in MODEL_KINDS:
        model_cls = model_kind(kind).model
        assert issubclass(model_cls, SegmentationModel), kind
        assert issubclass(model_cls, nn.Module), kind
        assert not getattr(model_cls, "__abstractmethods__", None), kind
    assert [k for k in MODEL_KINDS if model_kind(k).model.supports_open_surface] == ["nudf"]


def test_a_model_without_predict_meshes_cannot_be_built():
    class Incomplete(nn.Module, SegmentationModel):
        pass

    with pytest.raises(TypeError, match="predict_meshes"):
        Incomplete()


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_template_models_predict_their_last_stage(kind):
    torch.manual_seed(0)
    model = build_model(kind, SMALL[kind]).eval()
    assert isinstance(model, DeformedTemplateModel)
    images = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        _, stages = model(images)
        meshes = model.predict_meshes(images)
    assert len(meshes) == 2 and all(isinstance(m, Mesh) for m in meshes)
    for mesh, per_stage in zip(meshes, stages):
        np.testing.assert_array_equal(mesh.vertices, per_stage[-1].verts.numpy())
        np.testing.assert_array_equal(mesh.faces, per_stage[-1].faces.numpy())
    with pytest.raises(ValueError, match="closed surfaces"):
        model.predict_meshes(images, open_surface=True)


class _Sphere(nn.Module, SegmentationModel):
    """A fake model: the same sphere of radius 0.5 in grid coordinates for every image."""

    def predict_meshes(self, images, open_surface=False):
        verts, faces = icosphere(2, 0.5)
        return [Mesh(verts.numpy(), faces.numpy()) for _ in range(images.shape[0])]


def test_segmenter_maps_predicted_grid_meshes_to_lps():
    card = {"kind": "fake", "grid": {"shape": [8, 10, 12], "spacing": [1.0, 1.0, 1.0]}}
    segmenter = Segmenter(LoadedModel("fake", card, _Sphere(), torch.device("cpu")), untangle=False)
    volume = Volume(np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float32), origin=(5.0, -3.0, 7.0))
    meshes = segmenter.segment_batch([volume, volume])
    expected = _Sphere().predict_meshes(torch.zeros(1))[0].transformed(GridTransform.of_volume(volume).grid_to_lps)
    assert len(meshes) == 2
    np.testing.assert_allclose(meshes[0].vertices, expected.vertices, atol=1e-4)
    with pytest.raises(InputError, match="closed surfaces"):
        Segmenter(LoadedModel("fake", card, _Sphere(), torch.device("cpu")), open_surface=True)


class _BallHead(nn.Module):
    """A voxel head whose foreground is a ball of radius ``radius`` voxels about the grid centre, whatever the image."""

    def __init__(self, radius: float) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, images):
        d, h, w = images.shape[2:]
        k, j, i = torch.meshgrid(
            *(torch.arange(n, dtype=torch.float32) - (n - 1) / 2 for n in (d, h, w)), indexing="ij"
        )
        logit = (self.radius - torch.sqrt(i**2 + j**2 + k**2)) / 0.5
        logits = torch.stack([torch.zeros_like(logit), logit])[None].expand(len(images), -1, -1, -1, -1)
        return (logits,)


class _SphereInBall(nn.Module, DeformedTemplateModel):
    """A fake template model: a sphere of radius 7 voxels inside its own voxel head's ball of radius 8."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = _BallHead(8.0)

    def predict_meshes(self, images, open_surface=False):
        size = torch.tensor(images.shape[2:][::-1], dtype=torch.float32)
        verts, faces = icosphere(3, 7.0)
        grid = verts / ((size - 1) / 2)  # about the centre, voxels -> grid units
        return [Mesh(grid.numpy(), faces.numpy()) for _ in range(images.shape[0])]


def test_snap_moves_a_template_mesh_onto_its_own_voxel_head_and_is_refused_for_other_kinds():
    card = {"kind": "voxel2mesh", "grid": {"shape": [24, 26, 28], "spacing": [1.0, 1.0, 1.0]}}
    volume = Volume(np.random.default_rng(0).normal(size=(24, 26, 28)).astype(np.float32), spacing=(1.0, 1.0, 1.0))
    plain = Segmenter(LoadedModel("fake", card, _SphereInBall(), torch.device("cpu")), untangle=False)
    snapped = Segmenter(LoadedModel("fake", card, _SphereInBall(), torch.device("cpu")), untangle=False, snap=True)
    centre = volume.index_to_lps[:3, :3] @ ((np.array(volume.size_ijk) - 1) / 2) + volume.origin
    for segmenter, radius in ((plain, 7.0), (snapped, 8.0)):
        r = np.linalg.norm(segmenter.segment(volume).vertices - centre, axis=1)
        assert abs(r.mean() - radius) < 0.05 and r.std() < 0.05
    with pytest.raises(InputError, match="--snap"):
        Segmenter(LoadedModel("fake", {**card, "kind": "fake"}, _Sphere(), torch.device("cpu")), snap=True)
