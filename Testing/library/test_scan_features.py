"""An organ crop's decoder features read from the U-Net's pass over the whole scan (imagetomesh.scan_features), and
that pass's features stitched over windows (imagetomesh.scan.windowed_logits)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from imagetomesh.scan import window_plan, windowed_logits
from imagetomesh.scan_features import ScanFeatures, constant_image_features, level_on_crop


def slow_level_on_crop(level, start, crop, factor, outside):
    """Each crop cell on its own: the outside features where its centre lies beyond the scan, else the trilinear
    mean of the eight scan cells around its centre (indices clamped to the scan)."""
    channels, sizes = level.shape[0], level.shape[1:]
    cells = [n // factor for n in crop]
    out = torch.empty(channels, *cells, dtype=level.dtype)
    for index in itertools.product(*map(range, cells)):
        at = [start[a] / factor + index[a] for a in range(3)]
        if any(x < -0.5 or x > sizes[a] - 0.5 for a, x in enumerate(at)):
            out[(slice(None), *index)] = outside
            continue
        value = torch.zeros(channels, dtype=torch.float64)
        for corner in itertools.product((0, 1), repeat=3):
            weight, cell = 1.0, []
            for a in range(3):
                low = math.floor(at[a])
                weight *= (at[a] - low) if corner[a] else (1 - (at[a] - low))
                cell.append(min(max(low + corner[a], 0), sizes[a] - 1))
            value += weight * level[(slice(None), *cell)].double()
        out[(slice(None), *index)] = value.to(level.dtype)
    return out


@pytest.mark.parametrize(
    "start,factor",
    [
        ((0, 0, 0), 1),
        ((3, -2, 5), 1),
        ((8, 4, 0), 4),  # on the level's cells
        ((5, 2, 7), 2),
        ((-6, 3, 9), 4),  # partly before the scan
        ((13, 1, -3), 8),
        ((22, 10, 30), 2),  # partly beyond the scan's end
        ((60, 0, 0), 4),  # wholly beyond
    ],
)
def test_a_crops_level_cells_are_the_scan_levels_read_at_their_centres(start, factor):
    generator = torch.Generator().manual_seed(sum(start) + factor)
    scan = (32, 16, 40)
    level = torch.randn(3, *(n // factor for n in scan), generator=generator)
    outside = torch.randn(3, generator=generator)
    crop = (16, 8, 16)
    got = level_on_crop(level, start, crop, factor, outside)
    assert got.shape == (3, *(n // factor for n in crop))
    assert torch.allclose(got, slow_level_on_crop(level, start, crop, factor, outside), atol=1e-6)


def test_a_crop_on_the_levels_cells_inside_the_scan_is_their_slice():
    level = torch.randn(4, 8, 6, 10)  # a scan of 32 x 24 x 40 voxels at factor 4
    got = level_on_crop(level, (8, 4, 12), (16, 8, 20), 4, torch.zeros(4))
    assert torch.equal(got, level[:, 2:6, 1:3, 3:8])


def test_a_crops_cells_keep_the_channels_innermost_for_the_decoders_sampling():
    """The decoders' feature sampling reads a map whose channels are innermost without copying it (a copy per sample
    call made the decoders slower than the U-Net pass over the crop that the scan features replace)."""
    level = torch.randn(1, 6, 8, 6, 10).contiguous(memory_format=torch.channels_last_3d)[0]  # the fast U-Net's
    for start in [(8, 4, 12), (5, -3, 30)]:
        got = level_on_crop(level, start, (16, 8, 20), 4, torch.zeros(6))[None]
        assert got.is_contiguous(memory_format=torch.channels_last_3d), start


def test_scan_features_crop_every_level_by_its_own_factor():
    levels = [torch.randn(5, 4, 3, 5), torch.randn(3, 8, 6, 10), torch.randn(2, 16, 12, 20)]  # factors 4, 2, 1
    outside = [torch.randn(5), torch.randn(3), torch.randn(2)]
    start, crop = (-3, 2, 7), (8, 8, 12)
    got = ScanFeatures(levels, outside).crop(start, crop)
    for level, air, factor, part in zip(levels, outside, (4, 2, 1), got):
        assert torch.allclose(part[0], slow_level_on_crop(level, start, crop, factor, air), atol=1e-6)


class PoolingNet(torch.nn.Module):
    """A stand-in U-Net whose decoder levels depend on each voxel's own cell alone (mean pooling by 4 and 2, and the
    image doubled), so that windows on the coarsest cells give the whole image's levels exactly."""

    def forward(self, x):
        return x.repeat(1, 2, 1, 1, 1), [F.avg_pool3d(x, 4), F.avg_pool3d(x, 2), 2 * x]


def test_the_windows_features_are_stitched_into_the_whole_images():
    image = torch.randn(1, 1, 32, 16, 16)
    block = (16, 16, 16)
    assert len(window_plan(tuple(image.shape[2:]), block)[1][0]) > 1  # several windows along the first axis
    features = []
    logits = windowed_logits(PoolingNet(), image, block, features=features)
    assert torch.allclose(logits, image[0].repeat(2, 1, 1, 1))
    expected = PoolingNet()(image)[1]
    assert len(features) == 3
    for got, level in zip(features, expected):
        assert got.dtype == torch.float32 and torch.allclose(got, level[0], atol=1e-6)
        assert got.permute(1, 2, 3, 0).is_contiguous()  # channels innermost, as the fast U-Net's own levels
    one_pass = []
    windowed_logits(PoolingNet(), image, (32, 16, 16), features=one_pass)
    assert all(torch.equal(got, level[0]) for got, level in zip(one_pass, expected))


def test_windows_that_do_not_start_on_the_coarsest_cells_leave_no_features():
    class Coarse(torch.nn.Module):
        def forward(self, x):
            return x, [F.avg_pool3d(x, 16), x]

    image = torch.randn(1, 1, 32, 16, 16)
    block = (16, 16, 16)
    assert any(start % 16 for start in window_plan(tuple(image.shape[2:]), block)[1][0])
    features = []
    windowed_logits(Coarse(), image, block, features=features)
    assert features == []


def test_the_padding_features_are_the_unets_over_a_constant_image():
    from imagetomesh.nn.unet import UNet3D, UNetConfig

    torch.manual_seed(0)
    unet = UNet3D(UNetConfig(in_channels=1, num_classes=3, base=4, depth=3)).eval()
    got = constant_image_features(unet, -1.5, size=16)
    with torch.no_grad():
        levels = unet(torch.full((1, 1, 16, 16, 16), -1.5))[1]
    assert [g.shape for g in got] == [(level.shape[1],) for level in levels]
    for g, level in zip(got, levels):
        centre = tuple(n // 2 for n in level.shape[2:])
        assert torch.equal(g, level[(0, slice(None), *centre)])
