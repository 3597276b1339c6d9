"""NUDF training: point sampler (exact distances, thin-part density), augmentation moves points with the image, a tiny run."""

import json

import numpy as np
import pytest
import torch

from imagetomesh.geometry.distances import point_to_triangle_distance
from imagetomesh.nn.grid import isotropic_scale
from imagetomesh.training.augment import AugmentConfig, augment
from imagetomesh.training.udf_points import UDFPointConfig, label_surface, sample_udf_points, shape_diameter


def ball(shape, centre, radius):
    k, j, i = np.indices(shape)
    return ((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= radius**2).astype(np.uint8)


def test_sampled_distances_are_exact_and_points_are_where_asked():
    label = torch.from_numpy(ball((16, 20, 18), (9, 10, 8), 5))
    config = UDFPointConfig(count=1200, near=0.5, mid=0.25, near_sigma=0.01, mid_sigma=0.05, thin_power=0.0)
    points, dist = sample_udf_points(label, config, torch.Generator().manual_seed(0))
    assert points.shape == (1200, 3) and dist.shape == (1200,)
    assert float(points[900:].abs().max()) <= 1.0  # the uniform part fills the grid box
    surface = label_surface(label)
    scale = isotropic_scale(label.shape)
    slow, _ = point_to_triangle_distance(
        (points * scale).double(), torch.from_numpy(surface.vertices).double(), torch.from_numpy(surface.faces)
    )
    assert torch.allclose(dist.double(), slow, atol=1e-5)
    assert float(dist[:600].median()) < 0.01 < float(dist[600:900].median()) < 0.05
    # the surface (label_surface) sits on the label boundary: a voxel centre inside is inside it
    voxel = 2.0 / (max(label.shape) - 1)
    assert abs(np.linalg.norm(surface.vertices - surface.vertices.mean(0), axis=1).mean() - 5.0 * voxel) < 0.7 * voxel


def test_thin_parts_get_more_points():
    shape = (24, 24, 24)  # (k, j, i)
    label = np.zeros(shape, np.uint8)
    label[4:20, 4:20, 2:10] = 1  # a block 8 voxels thick along i
    label[10:13, 4:20, 15:22] = 1  # a plate 3 voxels thick along k, 5 voxels away along i
    label = torch.from_numpy(label)
    scale = isotropic_scale(label.shape)
    x_gap = (12 - 11.5) / 11.5 * float(scale[0])  # i = 12, between the two

    def plate_share(power):
        config = UDFPointConfig(count=3000, near=1.0, mid=0.0, near_sigma=1e-4, thin_power=power, smoothing=0.0)
        pts, _ = sample_udf_points(label, config, torch.Generator().manual_seed(0))
        return float(((pts * scale)[:, 0] > x_gap).float().mean())

    assert plate_share(2.0) > 1.3 * plate_share(0.0)  # corners of the block are thin too
    voxel = 2.0 / 23
    top = torch.tensor([[(18 - 11.5) * voxel, 0.0, (12.5 - 11.5) * voxel]])  # on the plate's upper face
    d = shape_diameter(label, top, torch.tensor([[0.0, 0.0, 1.0]]))
    assert 2.5 * voxel < float(d) < 4 * voxel  # the plate is 3 voxels thick


def test_augmentation_moves_points_with_the_image():
    label = torch.from_numpy(ball((20, 24, 22), (11, 12, 9), 5))
    image = label.float()
    config = AugmentConfig(flip=0.5, rotate_deg=20, scale=0.1, noise=0.0, shift=0.1)
    k, j, i = torch.nonzero(label, as_tuple=True)
    size = torch.tensor([22.0, 24.0, 20.0])
    inside = torch.stack([i, j, k], 1).float() * 2 / (size - 1) - 1
    for seed in range(4):
        _, lab, linear, shift = augment(
            image, label, config, torch.Generator().manual_seed(seed), return_transform=True
        )
        moved = (inside - shift) @ torch.linalg.inv(linear).T
        index = ((moved + 1) * (size - 1) / 2).round().long()
        ok = ((index >= 0) & (index < size.long())).all(1)
        hits = lab[index[ok, 2], index[ok, 1], index[ok, 0]].float().mean()
        assert ok.float().mean() > 0.99 and hits > 0.9
    # with shift = 0 the draws (and so other models' augmentations) are unchanged
    a = augment(image, label, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment(image, label, AugmentConfig(), torch.Generator().manual_seed(3), return_transform=True)
    assert torch.equal(a[0], b[0]) and torch.equal(b[3], torch.zeros(3))


@pytest.fixture()
def fake_msd(tmp_path, write_msd):
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(8):
        label = ball((16, 16, 16), rng.uniform(6, 9, 3), rng.uniform(3, 5))
        cases.append((label.astype(np.float32) + rng.normal(0, 0.1, label.shape).astype(np.float32), label))
    return write_msd(tmp_path / "msd", cases)


def test_tiny_training_run_resumes_and_saves_a_loadable_model(fake_msd, tmp_path):
    from imagetomesh.preprocessing import GridSpec
    from imagetomesh.training.engine import train
    from imagetomesh.training.tasks.nudf import NUDFTrainConfig
    from imagetomesh.zoo import load_model

    config = NUDFTrainConfig(
        dict(channels=[2, 4], hidden=8),
        grid=GridSpec((16, 16, 16), (1.0, 1.0, 1.0)),
        steps=3,
        batch_size=2,
        points_per_case=200,
        val_every=2,
        val_points=100,
        points=UDFPointConfig(count=400),
    )
    out = tmp_path / "run"
    best = train(config, fake_msd, out)
    config.steps = 4
    messages = []
    train(config, fake_msd, out, log=messages.append)
    assert any("resumed from step 3" in m for m in messages)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert steps == [2, 3, 4]
    card = json.loads((best / "card.json").read_text(encoding="utf-8"))
    assert card["kind"] == "nudf" and card["config"]["channels"] == [2, 4]
    model = load_model(str(best), "cpu")
    assert model.module.config.hidden == 8


def test_the_live_clamped_l1_is_the_clamped_l1_with_a_gradient_beyond_the_clamp():
    from imagetomesh.training.tasks.nudf import clamped_l1

    target = torch.tensor([0.0, 0.05, 0.05, 0.2, 0.2, 0.3])
    pred = torch.tensor([0.02, 0.04, 0.5, 0.05, 0.4, 0.1], requires_grad=True)
    # element by element: |min(p, c) - min(d, c)|, or |p - d| where d < c (live)
    plain = sum(abs(min(p, 0.1) - min(d, 0.1)) for p, d in zip(pred.tolist(), target.tolist())) / 6
    live = sum(abs(p - d) if d < 0.1 else abs(min(p, 0.1) - 0.1) for p, d in zip(pred.tolist(), target.tolist())) / 6
    assert float(clamped_l1(pred, target, 0.1)) == pytest.approx(plain)
    assert float(clamped_l1(pred, target, 0.1, live=True)) == pytest.approx(live)
    clamped_l1(pred, target, 0.1).backward()
    assert pred.grad[2] == 0  # above the clamp where the surface is near: no way back under the plain loss
    pred.grad = None
    clamped_l1(pred, target, 0.1, live=True).backward()
    assert pred.grad[2] > 0 and pred.grad[4] == 0  # live pulls it down; a far point above the clamp is right


def test_validation_errors_use_points_from_the_whole_pool():
    from types import SimpleNamespace

    from imagetomesh.models.nudf import NUDF, NUDFConfig
    from imagetomesh.training.tasks.nudf import _pool_errors

    torch.manual_seed(0)
    model = NUDF(NUDFConfig(channels=(2, 4), hidden=8)).eval()
    image = torch.rand(8, 8, 8)
    points = torch.rand(101, 3) * 2 - 1
    distances = torch.cat([torch.rand(60) * 0.02, 0.05 + torch.rand(41) * 0.2])  # near first, far last
    pool = SimpleNamespace(points=points, distances=distances)
    with torch.no_grad():
        l1, near, spurious = _pool_errors(model, image, pool, 11, "cpu")
        pred_all = model(image[None, None], points[None])[0]
    picked = [round(i * 100 / 10) for i in range(11)]  # 0, 10, ..., 100: both ends of the pool
    c = model.config.clamp
    pred, dist = pred_all[picked].tolist(), distances[picked].tolist()
    assert l1 == pytest.approx(np.mean([abs(min(p, c) - min(d, c)) for p, d in zip(pred, dist)]), rel=1e-5)
    assert near == pytest.approx(np.mean([abs(p - d) for p, d in zip(pred, dist) if d < 0.02]), rel=1e-5)
    far = [p for p, d in zip(pred, dist) if d >= c / 2]
    assert len(far) > 0
    assert spurious == pytest.approx(np.mean([p < c / 10 for p in far]))
