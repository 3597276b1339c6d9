"""The mesh-decoder loss of Voxel2Mesh / Pixel2Mesh-3D (issue 15): Pixel2Mesh's terms against loops,
version 2's unit invariance, the dense Chamfer target and its augmentation, old configs and runs."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from boxes import box_mesh

from imagetomesh.geometry import edge_index_from_faces, edges_from_faces, icosphere, laplacian_change_loss, subdivide
from imagetomesh.geometry.distances import point_to_triangle_distance
from imagetomesh.models.mesh_state import DecoderMesh
from imagetomesh.nn.grid import index_to_grid, isotropic_scale, isotropic_voxel_size
from imagetomesh.nn.sdf import winding_number
from imagetomesh.preprocessing import GridSpec
from imagetomesh.training.augment import AugmentConfig, augment
from imagetomesh.training.configs import TrainConfig, image_configs
from imagetomesh.training.data import augment_surface, chamfer_target
from imagetomesh.training.engine import train
from imagetomesh.training.losses import MeshLossWeights, mesh_decoder_loss, pixel2mesh_normal_loss, voxel_margin_loss
from imagetomesh.training.udf_points import label_surface, surface_samples

OLD = Path(__file__).parent / "data" / "pre_engine_runs"
sys.path.insert(0, str(OLD))
from make_fixtures import tiny_msd  # noqa: E402


def _neighbours(faces, n):
    nbrs = {i: set() for i in range(n)}
    for i, j in edges_from_faces(faces).tolist():
        nbrs[i].add(j)
        nbrs[j].add(i)
    return nbrs


def _ball(shape=(20, 24, 18), centre=(9.0, 11.0, 8.5), radii=(6.0, 8.0, 5.0)):
    k, j, i = np.indices(shape)
    r = ((i - centre[2]) / radii[2]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((k - centre[0]) / radii[0]) ** 2
    return torch.from_numpy((r <= 1).astype(np.uint8))


def test_laplacian_change_loss_matches_loop():
    verts, faces = icosphere(1, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    start = verts + 0.05 * torch.randn(verts.shape, dtype=torch.float64, generator=g)
    moved = start + 0.1 * torch.randn(verts.shape, dtype=torch.float64, generator=g)
    nbrs = _neighbours(faces, len(verts))

    def delta(v, i):
        return v[i] - v[sorted(nbrs[i])].mean(0)

    ref = np.mean([float(((delta(moved, i) - delta(start, i)) ** 2).sum()) for i in nbrs])
    ei = edge_index_from_faces(faces)
    np.testing.assert_allclose(laplacian_change_loss(moved, start, ei).item(), ref, rtol=1e-12)
    # a translation, rotation-free: no change of the Laplacian coordinates
    assert laplacian_change_loss(start + torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64), start, ei) < 1e-28
    v = moved.clone().requires_grad_()
    torch.autograd.gradcheck(lambda x: laplacian_change_loss(x, start, ei), (v,))


def test_pixel2mesh_normal_loss_matches_loop():
    verts, faces = icosphere(1, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    verts = verts + 0.05 * torch.randn(verts.shape, dtype=torch.float64, generator=g)
    target = torch.randn(50, 3, dtype=torch.float64, generator=g)
    normals = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64, generator=g), dim=1)
    edges = edges_from_faces(faces)
    ref = []
    for p, k in edges.tolist():
        q = int(np.argmin([float(((verts[p] - t) ** 2).sum()) for t in target]))
        e = (verts[p] - verts[k]) / (verts[p] - verts[k]).norm()
        ref.append(float((e * normals[q]).sum()) ** 2)
    np.testing.assert_allclose(pixel2mesh_normal_loss(verts, edges, target, normals).item(), np.mean(ref), rtol=1e-10)


def _stage(scale):
    """A bumpy level-2 sphere in grid coordinates and its pre-deformation positions."""
    sphere, faces = icosphere(2)
    g = torch.Generator().manual_seed(3)
    start = sphere * 0.4 / scale
    verts = start * (1 + 0.1 * torch.randn(len(sphere), 1, generator=g))
    return DecoderMesh(verts, faces, sphere, start=start)


@pytest.mark.parametrize("pixel2mesh", [False, True])
def test_version_2_scales_every_term_by_the_square_of_the_unit(pixel2mesh):
    shape = (40, 56, 48)
    label = _ball(shape, (20.0, 28.0, 24.0), (10.0, 14.0, 9.0))
    points, normals = chamfer_target(label, "faces", None).draw()
    scale, voxel = isotropic_scale(shape), isotropic_voxel_size(shape)
    mesh = _stage(scale)
    weights = MeshLossWeights(version=2, pixel2mesh_normal=pixel2mesh, sample_points=500, raster=1.0)

    def terms(s, w):
        g = torch.Generator().manual_seed(0)
        return mesh_decoder_loss(
            [mesh], points, normals, scale * s, w, generator=g, voxel=voxel * s, label=label.bool()
        )

    base, big = terms(1.0, weights), terms(27.5, weights)  # grid units -> ~voxels
    assert float(base["raster"]) > 0
    for key in ("chamfer", "normal", "laplacian", "edge", "raster", "total"):
        np.testing.assert_allclose(float(big[key]), 27.5**2 * float(base[key]), rtol=1e-4, err_msg=key)
    # version 1 does not: normal consistency keeps its value while the Chamfer grows with s^2
    if not pixel2mesh:
        old = MeshLossWeights(version=1, sample_points=500)
        b1, g1 = terms(1.0, old), terms(27.5, old)
        np.testing.assert_allclose(float(g1["normal"]), float(b1["normal"]), rtol=1e-5)
        np.testing.assert_allclose(float(g1["chamfer"]), 27.5**2 * float(b1["chamfer"]), rtol=1e-4)


def test_version_2_needs_the_voxel_length_and_pixel2mesh_its_start():
    label = _ball()
    points, normals = chamfer_target(label, "faces", None).draw()
    scale = isotropic_scale(label.shape)
    mesh = _stage(scale)
    with pytest.raises(ValueError, match="voxel"):
        mesh_decoder_loss([mesh], points, normals, scale, MeshLossWeights(version=2))
    bare = DecoderMesh(mesh.verts, mesh.faces, mesh.sphere)
    with pytest.raises(ValueError, match="start"):
        mesh_decoder_loss([bare], points, normals, scale, MeshLossWeights(version=2, pixel2mesh_normal=True), voxel=0.1)
    with pytest.raises(ValueError, match="version"):
        MeshLossWeights(version=3)
    with pytest.raises(ValueError, match="target"):
        MeshLossWeights(target="voxels")
    with pytest.raises(ValueError, match="version 2"):
        MeshLossWeights(raster=1.0)
    with pytest.raises(ValueError, match="label"):
        mesh_decoder_loss([mesh], points, normals, scale, MeshLossWeights(version=2, raster=1.0), voxel=0.1)


def _slow_voxel_margin_loss(verts, faces, label, scale, voxel, margin):
    """Every voxel centre, one by one: inside by the exact winding number, the distance to every face,
    the band by looking at the 26 neighbours."""
    lab = label.numpy().astype(bool)
    d, h, w = lab.shape
    total, count = 0.0, 0
    tri_verts = verts * scale
    for k in range(d):
        for j in range(h):
            for i in range(w):
                around = lab[max(k - 1, 0) : k + 2, max(j - 1, 0) : j + 2, max(i - 1, 0) : i + 2]
                p = index_to_grid(torch.tensor([[i, j, k]], dtype=verts.dtype), (w, h, d))
                inside = bool(winding_number(p, verts.detach(), faces)[0] > 0.5)
                if around.all() == around.any() and inside == lab[k, j, i]:
                    continue  # not in the band, and on its right side
                dist = point_to_triangle_distance(p * scale, tri_verts, faces)[0][0]
                signed = dist if inside == lab[k, j, i] else -dist
                total = total + torch.relu(margin * voxel - signed) ** 2
                count += 1
    return total / count


def test_voxel_margin_loss_matches_a_slow_reference_with_its_gradient():
    shape = (14, 16, 12)
    label = _ball(shape, (6.6, 7.4, 5.3), (4.2, 5.1, 3.6))
    scale, voxel = isotropic_scale(shape).double(), isotropic_voxel_size(shape)
    sphere, faces = icosphere(3, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    # an ellipsoid like the label's, two voxels off along i and bumpy: wrong voxels beyond the band, both sides
    centre = index_to_grid(torch.tensor([7.4, 7.2, 6.8], dtype=torch.float64), shape[::-1])
    radii = torch.tensor([3.4, 5.0, 4.6], dtype=torch.float64) * 2 / (torch.tensor(shape[::-1]) - 1)
    verts = centre + sphere * radii * (1 + 0.05 * torch.randn(len(sphere), 1, dtype=torch.float64, generator=g))
    fast_v, slow_v = verts.clone().requires_grad_(), verts.clone().requires_grad_()
    fast = voxel_margin_loss(fast_v, faces, label.bool(), scale, voxel, 0.5)
    slow = _slow_voxel_margin_loss(slow_v, faces, label, scale, voxel, 0.5)
    np.testing.assert_allclose(float(fast.detach()), float(slow.detach()), rtol=1e-9)
    fast.backward()
    slow.backward()
    np.testing.assert_allclose(
        fast_v.grad.numpy(), slow_v.grad.numpy(), rtol=0, atol=1e-9 * float(slow_v.grad.abs().max())
    )


def test_voxel_margin_loss_is_zero_midway_between_the_label_centres_and_grows_a_small_mesh():
    shape = (10, 12, 14)
    label = torch.zeros(shape, dtype=torch.bool)
    label[3:7, 2:9, 4:11] = True  # index boxes k 3..6, j 2..8, i 4..10
    scale, voxel = isotropic_scale(shape).double(), isotropic_voxel_size(shape)
    lo, hi = torch.tensor([3.5, 1.5, 2.5], dtype=torch.float64), torch.tensor([10.5, 8.5, 6.5], dtype=torch.float64)
    box_verts, box_faces = (torch.from_numpy(a) for a in box_mesh(lo.numpy(), hi.numpy()))
    cube_verts, cube_faces = subdivide(box_verts, box_faces)[:2]
    cube_verts, cube_faces = subdivide(cube_verts, cube_faces)[:2]
    assert len(edges_from_faces(cube_faces)) * 2 == 3 * len(cube_faces)  # closed: every edge has two faces
    midway = index_to_grid(cube_verts, shape[::-1])
    assert float(voxel_margin_loss(midway, cube_faces, label, scale, voxel, 0.5)) < 1e-20
    # shrunk by 0.3 voxel on every side: a loss whose gradient moves every vertex outward
    centre = (lo + hi) / 2
    small_ijk = centre + (cube_verts - centre) * (1 - 0.6 / (hi - lo))
    small = index_to_grid(small_ijk, shape[::-1]).requires_grad_()
    loss = voxel_margin_loss(small, cube_faces, label, scale, voxel, 0.5)
    assert float(loss) > 0
    loss.backward()
    outward = small.detach() - index_to_grid(centre, shape[::-1])
    assert ((-small.grad * outward).sum(1) >= 0).all()
    assert ((-small.grad * outward).sum(1) > 0).float().mean() > 0.5


def test_dense_target_lies_on_the_smoothed_label_surface_with_outward_normals():
    from imagetomesh.metrics import point_to_mesh_distance

    label = _ball()
    points, normals = surface_samples(label, 2000, torch.Generator().manual_seed(0))
    assert points.shape == normals.shape == (2000, 3)
    scale = isotropic_scale(label.shape)
    surface = label_surface(label)
    assert point_to_mesh_distance((points * scale).numpy(), surface).max() < 1e-5
    np.testing.assert_allclose(normals.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    centre = (points * scale).mean(0)
    assert ((points * scale - centre) * normals).sum(1).gt(0).float().mean() > 0.99  # outward on a convex ball
    target = chamfer_target(label, "dense", 10, (points, normals))
    assert target.draw()[0] is points  # every dense point, every step
    with pytest.raises(ValueError, match="surface"):
        chamfer_target(label, "dense", 10)


def test_augmented_surface_follows_the_augmented_label():
    label = _ball()
    image = label.float()
    points, normals = surface_samples(label, 3000, torch.Generator().manual_seed(0))
    config = AugmentConfig(flip=0.5, rotate_deg=15.0, scale=0.1, shift=0.05)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        _, moved_label, linear, shift = augment(image, label, config, g, return_transform=True)
        moved, moved_normals = augment_surface(points, normals, linear, shift, label.shape)
        ref_points, ref_normals = surface_samples(moved_label, 3000, torch.Generator().manual_seed(1))
        scale = isotropic_scale(label.shape)
        d = torch.cdist(moved * scale, ref_points * scale)
        nearest = d.min(1)
        assert nearest.values.mean() < isotropic_voxel_size(label.shape)  # nearest-neighbour resampling: < 1 voxel
        agreement = (moved_normals * ref_normals[nearest.indices]).sum(1)
        assert agreement.mean() > 0.9
        np.testing.assert_allclose(moved_normals.norm(dim=1).numpy(), 1.0, rtol=1e-5)


def test_old_loss_configs_load_as_version_1_and_the_named_configs_keep_their_meaning():
    old = json.loads((OLD / "configs.json").read_text(encoding="utf-8"))
    for kind in ("voxel2mesh", "pixel2mesh3d"):
        for name in ("cpu", "gpu"):
            d = dict(old[kind][name])
            d.update({"accumulate_steps": 1, "bf16_autocast": False})
            config = TrainConfig.from_dict(d)
            assert (config.loss.version, config.loss.target) == (1, "faces")
            assert image_configs()[kind][name].loss == config.loss
        v2 = image_configs()[kind]["cpu-v2"]
        assert (v2.loss.version, v2.loss.target) == (2, "dense")
        assert TrainConfig.from_dict(json.loads(json.dumps(v2.to_dict()))) == v2


@pytest.mark.parametrize("kind", ["voxel2mesh", "pixel2mesh3d"])
def test_a_version_2_dense_run_trains_and_resumes(kind, tmp_path):
    msd = tiny_msd(tmp_path / "msd")
    out = tmp_path / "run"
    unet = {"in_channels": 1, "num_classes": 2, "base": 4, "depth": 3, "norm": "batch"}
    model = {"unet": unet, "hidden": 8, "stages": 2} if kind == "voxel2mesh" else {"unet": unet, "hidden": 8}
    base = image_configs()[kind]["cpu-v2"]
    loss = MeshLossWeights(**{**base.loss.__dict__, "sample_points": 200, "target_points": 300})

    def config(steps):
        return TrainConfig(
            kind, model, GridSpec((16, 16, 16), (1.0, 1.0, 1.0)), steps, val_every=1, threads=1, loss=loss
        )

    train(config(1), msd, out, log=lambda m: None)
    messages = []
    train(config(2), msd, out, log=messages.append)
    assert "resumed from step 1" in messages
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in logged)
    assert json.loads((out / "config.json").read_text())["loss"]["version"] == 2


@pytest.mark.parametrize("kind", ["voxel2mesh", "pixel2mesh3d"])
def test_a_frozen_unet_run_changes_only_the_mesh_decoder(kind, tmp_path):
    from safetensors.torch import load_file

    from imagetomesh.errors import InputError

    msd = tiny_msd(tmp_path / "msd")
    unet = {"in_channels": 1, "num_classes": 2, "base": 4, "depth": 3, "norm": "batch"}
    model = {"unet": unet, "hidden": 8, "stages": 2} if kind == "voxel2mesh" else {"unet": unet, "hidden": 8}
    base = image_configs()[kind]["cpu-v2-frozen"]
    assert base.freeze_unet and not image_configs()[kind]["cpu-v2"].freeze_unet
    loss = MeshLossWeights(**{**base.loss.__dict__, "sample_points": 200, "target_points": 300})

    def config(steps, freeze):
        return TrainConfig(
            kind,
            model,
            GridSpec((16, 16, 16), (1.0, 1.0, 1.0)),
            steps,
            val_every=steps,
            threads=1,
            loss=loss,
            freeze_unet=freeze,
        )

    train(config(2, False), msd, tmp_path / "start", log=lambda m: None)
    start, tuned = tmp_path / "start" / "final", tmp_path / "tuned" / "final"
    with pytest.raises(InputError, match="--init-from"):
        train(config(1, True), msd, tmp_path / "no-init", log=lambda m: None)
    train(config(3, True), msd, tmp_path / "tuned", log=lambda m: None, init_from=start)
    before, after = load_file(str(start / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    unet_keys = [k for k in before if k.startswith("unet.")]
    assert any("running_mean" in k for k in unet_keys)  # batch-norm statistics are kept too
    assert all(torch.equal(before[k], after[k]) for k in unet_keys)
    assert any(not torch.equal(before[k], after[k]) for k in before if not k.startswith("unet."))


def test_subdivided_start_is_the_subdivision_of_the_previous_mesh():
    """Pixel2Mesh-3D's blocks record their start: the previous block's mesh, subdivided."""
    from imagetomesh.models.pixel2mesh3d import Pixel2Mesh3D, Pixel2Mesh3DConfig

    unet = {"in_channels": 1, "num_classes": 2, "base": 4, "depth": 3, "norm": "batch"}
    model = Pixel2Mesh3D(Pixel2Mesh3DConfig(unet=unet, hidden=8)).eval()
    with torch.no_grad():
        _, meshes = model(torch.randn(1, 1, 16, 16, 16))
    stages = meshes[0]
    for before, after in zip(stages[:-1], stages[1:]):
        verts, faces, _, _ = subdivide(before.verts, before.faces, before.sphere)
        assert torch.equal(faces, after.faces)
        torch.testing.assert_close(after.start, verts)
