"""Metrics against slow references and closed-form answers (concentric spheres, shifted copies)."""

import numpy as np
import pytest
from vtkmodules.vtkFiltersSources import vtkSphereSource

from imagetomesh import metrics
from imagetomesh.core import Mesh, Volume
from imagetomesh.errors import InputError
from imagetomesh.geometry.isosurface import labelmap_to_mesh
from imagetomesh.geometry.vtk_convert import polydata_to_mesh


def sphere(radius, centre=(0.0, 0.0, 0.0), resolution=120) -> Mesh:
    source = vtkSphereSource()
    source.SetRadius(radius)
    source.SetCenter(*centre)
    source.SetThetaResolution(resolution)
    source.SetPhiResolution(resolution)
    source.Update()
    return polydata_to_mesh(source.GetOutput())


def slow_point_mesh_distance(points, mesh) -> np.ndarray:
    """Reference, one point at a time against every triangle: the plane distance where the
    projection falls inside the triangle, else the nearest of the three edge segments."""
    v = mesh.vertices.astype(np.float64)
    a, b, c = v[mesh.faces[:, 0]], v[mesh.faces[:, 1]], v[mesh.faces[:, 2]]
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    out = []
    for p in np.asarray(points, dtype=np.float64):
        height = np.einsum("fi,fi->f", p - a, n)
        q = p - height[:, None] * n
        inside = np.ones(len(a), dtype=bool)
        best = np.full(len(a), np.inf)
        for x, y in ((a, b), (b, c), (c, a)):
            inside &= np.einsum("fi,fi->f", np.cross(y - x, q - x), n) >= 0
            t = np.clip(np.einsum("fi,fi->f", p - x, y - x) / np.einsum("fi,fi->f", y - x, y - x), 0, 1)
            best = np.minimum(best, np.linalg.norm(p - (x + t[:, None] * (y - x)), axis=1))
        best = np.where(inside, np.abs(height), best)
        out.append(best.min())
    return np.array(out)


def test_dice_iou():
    a = np.zeros((4, 5, 6), np.uint8)
    b = np.zeros_like(a)
    a[:2] = 1  # 60 voxels
    b[1:3] = 1  # 60 voxels, 30 shared
    assert metrics.dice(a, a) == 1.0 and metrics.iou(a, a) == 1.0
    assert metrics.dice(a, b) == pytest.approx(0.5)
    assert metrics.iou(a, b) == pytest.approx(30 / 90)
    assert metrics.dice(a, 1 - a) == 0.0
    assert metrics.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert metrics.dice(Volume(a), b * 7) == pytest.approx(0.5)  # Volumes and any nonzero label
    with pytest.raises(InputError, match="different shapes"):
        metrics.dice(a, a[:3])


def test_point_to_mesh_distance_matches_brute_force():
    mesh = sphere(3.0, (1.0, -2.0, 0.5), resolution=10)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(150, 3)) * 3 + [1.0, -2.0, 0.5]
    fast = metrics.point_to_mesh_distance(points, mesh)
    np.testing.assert_allclose(fast, slow_point_mesh_distance(points, mesh), atol=1e-6)


def test_sample_surface_is_area_weighted_and_on_surface():
    # two triangles, areas 1/2 and 3/2
    mesh = Mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 0, 0], [8, 0, 0], [5, 1, 0]], [[0, 1, 2], [3, 4, 5]])
    points = metrics.sample_surface(mesh, 20000, seed=1)
    assert np.mean(points[:, 0] >= 5) == pytest.approx(0.75, abs=0.015)
    assert np.allclose(points[:, 2], 0.0)
    first = points[points[:, 0] < 5]
    assert np.all(first[:, 0] + first[:, 1] <= 1 + 1e-9) and np.all(first >= -1e-12)
    np.testing.assert_array_equal(points, metrics.sample_surface(mesh, 20000, seed=1))  # reproducible


def test_concentric_spheres_give_the_radius_difference():
    inner, outer = sphere(10.0), sphere(11.0)
    d_pr, d_rp = metrics.surface_distances(inner, outer, n_points=4000)
    # polygonal spheres: distances are 1 mm up to the faceting error (~0.02 mm here)
    assert np.all(np.abs(d_pr - 1.0) < 0.05) and np.all(np.abs(d_rp - 1.0) < 0.05)
    assert metrics.chamfer_mm(inner, outer, n_points=4000) == pytest.approx(1.0, abs=0.02)
    assert metrics.hd95(inner, outer, n_points=4000) == pytest.approx(1.0, abs=0.03)
    assert metrics.fscore(inner, outer, threshold_mm=0.9, n_points=4000) == 0.0
    assert metrics.fscore(inner, outer, threshold_mm=1.1, n_points=4000) == 1.0
    assert metrics.mesh_accuracy(inner, outer, n_points=4000) == pytest.approx(1.0, abs=0.03)
    assert metrics.mesh_completion(inner, outer, threshold_mm=2.0, n_points=4000) == 1.0
    assert metrics.mesh_completion(inner, outer, threshold_mm=0.9, n_points=4000) == 0.0


def test_shifted_copy_matches_slow_reference():
    ref = sphere(4.0, resolution=12)
    pred = ref.transformed(np.array([[1, 0, 0, 0.7], [0, 1, 0, 0.0], [0, 0, 1, 0.2], [0, 0, 0, 1.0]]))
    n = 300
    d_pr, d_rp = metrics.surface_distances(pred, ref, n_points=n, seed=5)
    slow_pr = slow_point_mesh_distance(metrics.sample_surface(pred, n, 5), ref)
    slow_rp = slow_point_mesh_distance(metrics.sample_surface(ref, n, 6), pred)
    np.testing.assert_allclose(d_pr, slow_pr, atol=1e-6)
    np.testing.assert_allclose(d_rp, slow_rp, atol=1e-6)
    expected = (slow_pr.mean() + slow_rp.mean()) / 2
    assert metrics.chamfer_mm(pred, ref, n_points=n, seed=5) == pytest.approx(expected)
    expected_hd = max(np.percentile(slow_pr, 95), np.percentile(slow_rp, 95))
    assert metrics.hd95(pred, ref, n_points=n, seed=5) == pytest.approx(expected_hd)
    t = 0.5
    precision, recall = np.mean(slow_pr <= t), np.mean(slow_rp <= t)
    expected_f = 2 * precision * recall / (precision + recall)
    assert metrics.fscore(pred, ref, threshold_mm=t, n_points=n, seed=5) == pytest.approx(expected_f)
    assert metrics.mesh_accuracy(pred, ref, n_points=n, seed=5) == pytest.approx(np.percentile(slow_pr, 90))
    assert metrics.mesh_completion(pred, ref, n_points=n, seed=5) == pytest.approx(np.mean(slow_rp <= 2.0))
    # identical meshes are at distance zero
    assert metrics.chamfer_mm(ref, ref, n_points=500) == pytest.approx(0.0, abs=1e-6)


def test_triangle_quality_and_self_intersections():
    equilateral = Mesh([[0, 0, 0], [1, 0, 0], [0.5, np.sqrt(3) / 2, 0]], [[0, 1, 2]])
    right = Mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])
    assert metrics.mean_triangle_quality(equilateral) == pytest.approx(1.0)
    assert metrics.mean_triangle_quality(right) == pytest.approx(np.sqrt(3) / 2)
    assert 0.7 < metrics.mean_triangle_quality(sphere(5.0, resolution=30)) < 1.0
    assert metrics.self_intersection_percent(sphere(5.0, resolution=30)) == 0.0
    a, b = sphere(5.0, resolution=16), sphere(5.0, (4.0, 0.0, 0.0), resolution=16)
    both = Mesh(np.concatenate([a.vertices, b.vertices]), np.concatenate([a.faces, b.faces + a.num_vertices]))
    pct = metrics.self_intersection_percent(both)
    assert 0.0 < pct < 50.0


def test_mesh_dice_and_evaluate_mesh():
    k, j, i = np.mgrid[:24, :26, :28]
    label = (((i - 13.5) / 9) ** 2 + ((j - 12.5) / 8) ** 2 + ((k - 11.8) / 7) ** 2 < 1).astype(np.uint8)
    direction = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
    volume = Volume(label, spacing=(0.8, 1.1, 1.3), origin=(5.0, 6.0, -7.0), direction=direction)
    exact = labelmap_to_mesh(volume, smoothing=0.0)
    assert metrics.mesh_dice_iou(exact, volume) == (1.0, 1.0)
    result = metrics.evaluate_mesh(labelmap_to_mesh(volume), volume, threshold_mm=1.0, n_points=3000)
    expected_keys = {
        "dice",
        "iou",
        "chamfer_mm",
        "hd95_mm",
        "fscore@1mm",
        "accuracy_p90_mm",
        "completion@2mm",
        "triangle_quality",
        "self_intersection_pct",
        "watertight",
        "vertices",
        "faces",
    }
    assert set(result) == expected_keys
    assert result["dice"] >= 0.95 and result["iou"] >= 0.9
    assert result["chamfer_mm"] < 0.5 and result["hd95_mm"] < 1.0
    assert result["fscore@1mm"] > 0.95 and result["completion@2mm"] == 1.0
    assert result["watertight"] is True and result["self_intersection_pct"] == 0.0
    shift = np.eye(4)
    shift[0, 3] = 3.0
    shifted = labelmap_to_mesh(volume).transformed(shift)
    worse = metrics.evaluate_mesh(shifted, volume, threshold_mm=0.5, n_points=3000)
    assert "fscore@0.5mm" in worse
    assert worse["dice"] < result["dice"] and worse["chamfer_mm"] > result["chamfer_mm"]
