"""Snapping a template model's mesh onto its own voxel head (issue 15, item 5: ``segment --snap``)."""

import numpy as np
import torch

from imagetomesh.geometry.topology import icosphere
from imagetomesh.models.snapping import (
    SNAP_RANGE_VOXELS,
    crossing_offsets,
    flip_averaged_probability,
    snap_vertices,
)
from imagetomesh.nn.grid import grid_to_index, index_to_grid


def slow_crossing(profile, offsets):
    """The falling 0.5 crossing nearest to offset 0, one interval at a time (None when there is none)."""
    best = None
    for k in range(len(offsets) - 1):
        a, b = profile[k] - 0.5, profile[k + 1] - 0.5
        if a >= 0 and b < 0:
            t = offsets[k] + a / (a - b) * (offsets[k + 1] - offsets[k])
            if best is None or abs(t) < abs(best):
                best = t
    return best


def test_crossing_offsets_match_the_interval_by_interval_search():
    g = torch.Generator().manual_seed(0)
    offsets = torch.arange(-2.0, 2.01, 0.25, dtype=torch.float64)
    # smooth-ish random profiles with 0, 1 or several crossings, both directions
    profiles = torch.rand(300, 1, generator=g, dtype=torch.float64) + torch.cumsum(
        torch.randn(300, len(offsets), generator=g, dtype=torch.float64) * 0.3, dim=1
    )
    profiles = profiles.clamp(0, 1)
    got, found = crossing_offsets(profiles, offsets)
    for n in range(len(profiles)):
        want = slow_crossing(profiles[n].tolist(), offsets.tolist())
        assert bool(found[n]) == (want is not None)
        assert abs(float(got[n]) - (want if want is not None else 0.0)) < 1e-12
    assert found.any() and not found.all()


def _ball_probability(shape, centre_ijk, radius, width=0.7):
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    r = np.sqrt((i - centre_ijk[0]) ** 2 + (j - centre_ijk[1]) ** 2 + (k - centre_ijk[2]) ** 2)
    return torch.tensor(1.0 / (1.0 + np.exp((r - radius) / width)), dtype=torch.float32)


def test_a_sphere_snaps_onto_the_probability_surface_within_range_only():
    shape = (30, 34, 38)  # (D, H, W): an anisotropic grid in grid units, voxels are what count
    size = torch.tensor(shape[::-1], dtype=torch.float32)
    centre = torch.tensor([18.3, 16.6, 14.2])  # (i, j, k)
    probability = _ball_probability(shape, centre.tolist(), 9.0)
    unit, faces = icosphere(3)
    for start, expected in ((7.6, 9.0), (10.3, 9.0), (9.0 - SNAP_RANGE_VOXELS - 1.5, None)):
        verts = index_to_grid(centre + start * unit, size)
        snapped = snap_vertices(verts, faces, probability)
        radii = torch.linalg.vector_norm(grid_to_index(snapped, size) - centre, dim=1)
        if expected is None:  # too far from the surface: nothing found, the mesh stays
            assert torch.allclose(radii, torch.full_like(radii, start), atol=1e-4)
        else:
            assert abs(float(radii.mean()) - expected) < 0.05 and float(radii.std()) < 0.05
    # faces wound inward: the normals are turned, the result is the same
    verts = index_to_grid(centre + 7.6 * unit, size)
    inward = snap_vertices(verts, faces.flip(1), probability)
    assert torch.allclose(inward, snap_vertices(verts, faces, probability), atol=1e-6)


class _Asymmetric(torch.nn.Module):
    """A voxel head that is not flip-equivariant: a fixed random convolution with an odd kernel."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x):
        return (self.conv(x),)


def test_flip_averaged_probability_is_the_mean_over_the_eight_flips_and_flip_equivariant():
    net = _Asymmetric()
    images = torch.randn(2, 1, 6, 7, 5, generator=torch.Generator().manual_seed(1))
    got = flip_averaged_probability(net, images)
    want = torch.zeros(2, 6, 7, 5)
    for fz in (False, True):
        for fy in (False, True):
            for fx in (False, True):
                axes = [a for a, f in ((2, fz), (3, fy), (4, fx)) if f]
                x = images.flip(axes) if axes else images
                p = net(x)[0].softmax(1)[:, 1]
                want += (p.flip([a - 1 for a in axes]) if axes else p) / 8
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(net(images)[0].softmax(1)[:, 1], got, atol=1e-3)  # the average does differ
    for axis in (2, 3, 4):
        assert torch.allclose(flip_averaged_probability(net, images.flip(axis)), got.flip(axis - 1), atol=1e-6)
