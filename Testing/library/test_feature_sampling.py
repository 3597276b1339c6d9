"""Trilinear sampling of feature maps at points (``nn.feature_sampling.sample_features``): against a slow
voxel-by-voxel interpolation, and its two computations (``grid_sample``; the voxels' feature rows summed) against
each other, samples and gradients."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def _case(seed: int, n: int, batch: int = 1, shape=(3, 5, 6, 7)):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, *shape, generator=generator)
    points = torch.rand(batch, n, 3, generator=generator) * 2.4 - 1.2  # some outside: the border's value
    return features, points


def _grid_sampled(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """PyTorch's ``grid_sample`` as :func:`sample_features` calls it: ``(B, N, C)``."""
    b, n, _ = points.shape
    grid = points.view(b, n, 1, 1, 3).to(features.dtype)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.view(b, features.shape[1], n).transpose(1, 2)


@pytest.mark.parametrize("gathered", [False, True])
def test_samples_are_the_trilinear_interpolation_of_the_voxels_around_each_point(gathered):
    features, points = _case(0, 41)
    with torch.no_grad() if gathered else torch.enable_grad():
        features.requires_grad_(not gathered)
        assert sampling._gathers(features, points) == gathered
        sampled = sample_features(features, points).detach()
    assert sampled.shape == (1, 41, 3)
    for n in range(41):
        expected = slow_sample(features[0].detach().numpy().astype(np.float64), points[0, n].numpy().astype(np.float64))
        assert np.allclose(sampled[0, n].numpy(), expected, atol=1e-5), n


# batches; one-voxel axes; a crop (not contiguous, as the decoders read their crops' levels); channels-last
@pytest.mark.parametrize(
    "batch, shape, layout",
    [(1, (3, 5, 6, 7), "crop"), (2, (4, 1, 6, 7), None), (1, (2, 5, 1, 1), None), (3, (16, 6, 4, 5), "channels_last")],
)
def test_summed_voxel_rows_give_grid_samples_samples_and_gradient_with_respect_to_the_points(batch, shape, layout):
    features, points = _case(len(shape) + batch, 300, batch, shape)
    if layout == "crop":
        features = torch.randn(batch, shape[0], shape[1] + 2, shape[2] + 2, shape[3] + 2)[..., 1:-1, 1:-1, 1:-1]
    elif layout == "channels_last":
        features = features.contiguous(memory_format=torch.channels_last_3d)
    # on the border and outside it: clipped, with no gradient there
    points[0, :4] = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.3], [1.3, 1.0, -3.0]])
    points[0, 4] = torch.tensor([0.0, 0.0, 0.0])  # a voxel centre where the axis is odd: a cell's corner
    if batch > 1:  # the images' points interleaved (a transposed view): elementwise results keep that layout
        points = points.transpose(0, 1).contiguous().transpose(0, 1)
    gathered, reference = points.clone().requires_grad_(True), points.clone().requires_grad_(True)
    assert sampling._gathers(features, gathered)
    out = sample_features(features, gathered)
    expected = _grid_sampled(features, reference)
    assert torch.allclose(out, expected, atol=1e-6)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((out * weights).sum(), gathered)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), reference)
    assert torch.allclose(grad, grad_expected, atol=1e-5)
    assert torch.equal(grad[0, :2], torch.zeros(2, 3))


def test_features_that_need_gradients_and_non_finite_points_go_to_grid_sample():
    features, points = _case(1, 64)
    trained = features.clone().requires_grad_(True)
    assert not sampling._gathers(trained, points)  # training: the features' gradient
    with torch.no_grad():
        assert sampling._gathers(trained, points)
    points[0, 3, 1] = float("nan")
    assert not sampling._gathers(features, points)
    assert torch.equal(sample_features(features, points), _grid_sampled(features, points))


def test_bfloat16_features_are_sampled_in_their_dtype():
    features, points = _case(2, 100, shape=(8, 5, 6, 7))
    sampled = sample_features(features.bfloat16(), points)
    assert sampled.dtype == torch.bfloat16
    assert torch.allclose(sampled.float(), _grid_sampled(features, points), atol=0.05)
