"""Trilinear sampling of feature maps at points (``nn.feature_sampling.sample_features``): against a slow
voxel-by-voxel interpolation, and one image's points split across threads against one call."""

import itertools

import numpy as np
import pytest
import torch

import imagetomesh.nn.feature_sampling as sampling
from imagetomesh.nn.feature_sampling import sample_features


def slow_sample(features: np.ndarray, point: np.ndarray) -> np.ndarray:
    """``features (C, D, H, W)`` at one grid point ``(x, y, z)`` in [-1, 1] (outside: the border's value), from
    the eight voxels around it, each weighted by the product of its nearness along the three axes."""
    sizes = features.shape[1:][::-1]  # (W, H, D)
    index = [min(max((p + 1) / 2 * (n - 1), 0.0), n - 1) for p, n in zip(point, sizes)]
    value = np.zeros(features.shape[0])
    for corner in itertools.product(*[(int(np.floor(i)), int(np.floor(i)) + 1) for i in index]):
        weight = np.prod([max(0.0, 1 - abs(i - c)) for i, c in zip(index, corner)])
        if weight > 0:
            x, y, z = (min(c, n - 1) for c, n in zip(corner, sizes))
            value += weight * features[:, z, y, x]
    return value


@pytest.fixture
def split_small(monkeypatch):
    """Split one image's points across 2 threads from 8 points per thread."""
    monkeypatch.setattr(sampling, "MIN_POINTS_PER_THREAD", 8)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _case(seed: int, n: int, batch: int = 1):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, 3, 5, 6, 7, generator=generator)
    points = torch.rand(batch, n, 3, generator=generator) * 2.4 - 1.2  # some outside: the border's value
    return features, points


@pytest.mark.parametrize("split", [False, True])
def test_samples_are_the_trilinear_interpolation_of_the_voxels_around_each_point(split, monkeypatch):
    if split:
        monkeypatch.setattr(sampling, "MIN_POINTS_PER_THREAD", 8)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    features, points = _case(0, 41)
    assert sampling._thread_pieces(features, 41) == (3 if split else 1)
    sampled = sample_features(features, points)
    assert sampled.shape == (1, 41, 3)
    for n in range(41):
        expected = slow_sample(features[0].numpy().astype(np.float64), points[0, n].numpy().astype(np.float64))
        assert np.allclose(sampled[0, n].numpy(), expected, atol=1e-5), n


@pytest.mark.parametrize("n", [16, 17, 37, 64])
def test_points_split_across_threads_give_the_same_samples_and_gradients(n, split_small):
    features, points = _case(n, n)
    features = features[..., 1:, :, 1:]  # a crop: not contiguous, as the decoders read their crops' levels
    split = points.clone().requires_grad_(True)
    one = points.clone().requires_grad_(True)
    assert sampling._thread_pieces(features, n) == 2
    out_split = sample_features(features, split)
    (grad_split,) = torch.autograd.grad((out_split**2).sum(), split)
    sampling.MIN_POINTS_PER_THREAD = 10**9
    assert sampling._thread_pieces(features, n) == 1
    out_one = sample_features(features, one)
    (grad_one,) = torch.autograd.grad((out_one**2).sum(), one)
    assert torch.equal(out_split, out_one)
    assert torch.allclose(grad_split, grad_one, atol=1e-6)


def test_batches_and_features_that_need_gradients_are_not_split(split_small):
    features, points = _case(1, 64, batch=2)
    assert sampling._thread_pieces(features, 64) == 1  # a batch: grid_sample runs its images in parallel
    one = features[:1].clone().requires_grad_(True)
    assert sampling._thread_pieces(one, 64) == 1  # training: the features' gradient is not summed over pieces
    with torch.no_grad():
        assert sampling._thread_pieces(one, 64) == 2
    assert sampling._thread_pieces(features[:1], 7) == 1  # too few points to share
    assert sample_features(features, points).shape == (2, 64, 3)
