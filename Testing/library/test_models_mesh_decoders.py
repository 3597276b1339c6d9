"""Voxel2Mesh and Pixel2Mesh-3D: shapes, template sizes, adaptive unpooling keeps meshes closed and outward; the
template-deforming models' inference-time ``surface_offsets``."""

import pytest
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.quality import check_mesh
from imagetomesh.models.mesh_state import DecoderMesh, sphere_hull_faces
from imagetomesh.models.pixel2mesh3d import Pixel2Mesh3D, Pixel2Mesh3DConfig
from imagetomesh.models.registry import build_model
from imagetomesh.models.voxel2mesh import Voxel2Mesh, Voxel2MeshConfig
from imagetomesh.nn.grid import isotropic_scale, isotropic_voxel_size
from imagetomesh.nn.unet import UNet3D, UNetConfig

SMALL_UNET = UNetConfig(base=4, depth=3)


@pytest.mark.parametrize("depth,shape", [(2, (8, 8, 8)), (3, (16, 8, 12)), (4, (16, 24, 16))])
def test_unet_shapes(depth, shape):
    net = UNet3D(UNetConfig(base=4, depth=depth))
    logits, decoder = net(torch.randn(2, 1, *shape))
    assert logits.shape == (2, 2, *shape)
    assert [f.shape[1] for f in decoder] == net.decoder_channels
    assert decoder[-1].shape[2:] == shape


def test_unet_rejects_bad_sizes_and_configs():
    with pytest.raises(ValueError, match="divisible"):
        UNet3D(UNetConfig(base=4, depth=3))(torch.randn(1, 1, 10, 8, 8))
    with pytest.raises(ValueError):
        UNetConfig(depth=1)
    with pytest.raises(ValueError):
        UNetConfig(norm="layer")


@pytest.mark.parametrize("sampling", ["lns", "hs", "ps"])
@pytest.mark.parametrize("unpooling", ["uniform", "adaptive"])
def test_voxel2mesh_outputs_closed_outward_meshes(sampling, unpooling):
    torch.manual_seed(0)
    model = Voxel2Mesh(Voxel2MeshConfig(unet=SMALL_UNET, sampling=sampling, unpooling=unpooling, hidden=8))
    logits, meshes = model(torch.randn(2, 1, 16, 16, 16))
    assert logits.shape == (2, 2, 16, 16, 16)
    assert len(meshes) == 2 and len(meshes[0]) == 3
    assert [len(m.verts) for m in meshes[0]] == [162, 642, 2562]  # training: every vertex kept
    loss = sum(m.verts.sum() for m in meshes[0])
    loss.backward()
    model.eval()
    with torch.no_grad():
        _, meshes = model(torch.randn(1, 1, 16, 16, 16))
    final = meshes[0][-1]
    check = check_mesh(Mesh(final.verts.numpy(), final.faces.numpy()), self_intersections=False)
    assert check.watertight and check.outward


def test_voxel2mesh_refine_stages_move_the_finest_mesh_again_before_pruning():
    torch.manual_seed(0)
    config = Voxel2MeshConfig(unet=SMALL_UNET, hidden=8, refine_stages=2, amu_threshold=0.05)
    model = Voxel2Mesh(config)
    image = torch.randn(1, 1, 16, 16, 16)
    _, meshes = model(image)
    # training: no unpooling between the last level's stage and the refinements
    assert [len(m.verts) for m in meshes[0]] == [162, 642, 2562, 2562, 2562]
    assert all(torch.equal(m.faces, meshes[0][2].faces) for m in meshes[0][3:])
    model.eval()
    with torch.no_grad():
        _, meshes = model(image)
    last_level, first_refined, refined = meshes[0][2], meshes[0][3], meshes[0][4]
    # the last level is pruned once, after its last refinement
    assert last_level.parent_edges is not None and len(first_refined.verts) == len(last_level.verts)
    assert refined.parent_edges is None and len(refined.verts) < len(last_level.verts)
    # fresh refinement stages start near the identity (last graph layer initialised at 1e-3)
    assert (first_refined.verts - last_level.verts).abs().max() < 0.05
    assert torch.cdist(refined.verts, last_level.verts).min(1).values.max() < 0.05
    check = check_mesh(Mesh(refined.verts.numpy(), refined.faces.numpy()), self_intersections=False)
    assert check.watertight and check.outward


def test_voxel2mesh_head_probabilities_start_as_the_model_without_them_and_read_the_object_class():
    torch.manual_seed(0)
    plain = Voxel2Mesh(Voxel2MeshConfig(unet=SMALL_UNET, hidden=8, unpooling="uniform"))
    grown = Voxel2Mesh(Voxel2MeshConfig(unet=SMALL_UNET, hidden=8, unpooling="uniform", head_probabilities=True))
    missing = grown.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".head_gather." in k for k in missing)
    image = torch.randn(2, 1, 16, 16, 16)
    plain.eval(), grown.eval()
    with torch.no_grad():
        _, before = plain(image)
        logits, after = grown(image)
    # the head-probability features start at zero: the grown model computes what the saved one did
    assert all(torch.equal(a[-1].verts, b[-1].verts) for a, b in zip(after, before))

    # trained (here: its output layer set), the decoder reads the head's probability of class 1, detached
    for stage in grown.stages:
        torch.nn.init.normal_(stage.head_gather.net[2].weight, std=0.1)
    head = grown.head_probability(logits, None)
    assert head.shape == (2, 1, 16, 16, 16) and not head.requires_grad
    assert torch.allclose(head[:, 0], logits.softmax(1)[:, 1])
    features = [f[:1] for f in grown.unet(image)[1]]
    with torch.no_grad():
        inside = grown.decode_mesh(features, (16, 16, 16), head=torch.ones(1, 1, 16, 16, 16))[-1].verts
        outside = grown.decode_mesh(features, (16, 16, 16), head=torch.zeros(1, 1, 16, 16, 16))[-1].verts
    assert not torch.allclose(inside, outside)
    with pytest.raises(ValueError, match="head_probabilities"):
        grown.decode_mesh(features, (16, 16, 16))


def test_head_gather_samples_the_probability_around_each_vertex():
    from imagetomesh.models.voxel2mesh import HeadGather
    from imagetomesh.nn.grid import grid_voxel_size

    torch.manual_seed(0)
    gather = HeadGather(4)
    gather.net = torch.nn.Identity()  # the sampled 2 p - 1 themselves
    probability = torch.rand(1, 1, 6, 7, 8)
    verts = torch.rand(5, 3) * 1.2 - 0.6
    sampled = gather(probability, verts)
    assert sampled.shape == (5, 27 * len(HeadGather.RADII))

    def trilinear(x, y, z):  # grid coordinates in [-1, 1] (align_corners) -> the volume's value, by hand
        p = probability[0, 0]
        pos = [(c + 1) / 2 * (n - 1) for c, n in zip((z, y, x), p.shape)]
        lo = [min(int(q), n - 2) for q, n in zip(pos, p.shape)]
        t = [q - i for q, i in zip(pos, lo)]
        total = 0.0
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    w = (t[0] if dz else 1 - t[0]) * (t[1] if dy else 1 - t[1]) * (t[2] if dx else 1 - t[2])
                    total += w * float(p[lo[0] + dz, lo[1] + dy, lo[2] + dx])
        return total

    voxel = grid_voxel_size(torch.tensor([8, 7, 6]))
    steps = (-1.0, 0.0, 1.0)
    for n, v in enumerate(verts):
        expected = [
            2 * trilinear(*(v + torch.tensor([a, b, c]) * voxel * r).tolist()) - 1
            for r in HeadGather.RADII
            for a in steps
            for b in steps
            for c in steps
        ]
        assert torch.allclose(sampled[n], torch.tensor(expected), atol=1e-5)


def test_adaptive_pruning_drops_flat_midpoints_and_keeps_bent_ones():
    mesh = DecoderMesh.template(1, torch.ones(3)).subdivided()
    n_old = 42
    verts = mesh.verts.clone()
    verts[n_old : n_old + 10] *= 1.3  # push 10 new vertices well off their parent edges
    mesh = DecoderMesh(verts, mesh.faces, mesh.sphere, None, mesh.parent_edges)
    pruned = mesh.adaptively_pruned(threshold=0.05, scale=torch.ones(3))
    # flat midpoints (on their parent edge) go; the pushed ones stay
    assert len(pruned.verts) == n_old + 10
    check = check_mesh(Mesh(pruned.verts.numpy(), pruned.faces.numpy()), self_intersections=False)
    assert check.watertight and check.outward


def test_sphere_hull_faces_are_outward():
    points = torch.nn.functional.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(3)), dim=1)
    faces = sphere_hull_faces(points)
    a, b, c = (points[faces[:, i]] for i in range(3))
    assert (torch.cross(b - a, c - a, dim=1) * (a + b + c)).sum(1).gt(0).all()


def test_pixel2mesh3d_vertex_counts():
    torch.manual_seed(0)
    model = Pixel2Mesh3D(Pixel2Mesh3DConfig(unet=SMALL_UNET, hidden=16, residual_blocks=1))
    _, meshes = model(torch.randn(1, 1, 16, 16, 16))
    assert [len(m.verts) for m in meshes[0]] == [162, 642, 2562]


def test_voxel2mesh_config_validation():
    with pytest.raises(ValueError, match="sampling"):
        Voxel2MeshConfig(sampling="xyz")
    with pytest.raises(ValueError, match="stages"):
        Voxel2MeshConfig(unet=UNetConfig(depth=2), stages=3)
    with pytest.raises(ValueError, match="refine_stages"):
        Voxel2MeshConfig(refine_stages=-1)


class _FixedLogits(torch.nn.Module):
    """A U-Net whose class logits are given (its decoder features are ``unet``'s): an object the test places."""

    def __init__(self, unet: UNet3D, logits: torch.Tensor) -> None:
        super().__init__()
        self.unet, self.logits = unet, logits

    def forward(self, image):
        return self.logits, self.unet(image)[1]


def test_a_one_object_surface_start_voxel2mesh_begins_as_unet_mc_and_learns_moves_from_it():
    from imagetomesh.models.unet_mc import UNetMC, UNetMCConfig

    torch.manual_seed(0)
    shape = (16, 16, 16)
    k, j, i = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    ellipsoid = ((k - 7.6) / 5.2) ** 2 + ((j - 8.3) / 4.1) ** 2 + ((i - 7.2) / 3.3) ** 2 - 1.0
    logits = torch.stack([ellipsoid, -ellipsoid])[None]  # class 1 inside the ellipsoid
    model = Voxel2Mesh(Voxel2MeshConfig(unet=SMALL_UNET, hidden=8, start="unet_surface", unpooling="none")).eval()
    baseline = UNetMC(UNetMCConfig(unet=SMALL_UNET)).eval()
    model.unet = _FixedLogits(model.unet, logits)
    baseline.unet = _FixedLogits(baseline.unet, logits)
    image = torch.randn(1, 1, *shape)
    with torch.no_grad():
        (expected,) = baseline.predict_meshes(image)
        (moved,) = model.predict_meshes(image)
        for stage in model.stages:  # vertices that never move: the prediction is the start
            last = stage.delta.layers[-1]
            for p in (last.lin_root.weight, last.lin_rel.weight, last.lin_rel.bias):
                torch.nn.init.zeros_(p)
        (start,) = model.predict_meshes(image)
    assert len(expected.vertices) > 200
    assert torch.allclose(torch.as_tensor(start.vertices), torch.as_tensor(expected.vertices))
    assert {tuple(sorted(f)) for f in start.faces.tolist()} == {tuple(sorted(f)) for f in expected.faces.tolist()}
    assert check_mesh(start, self_intersections=False).watertight
    # the decoder's (small, untrained) moves start from that surface, vertex for vertex
    offsets = torch.as_tensor(moved.vertices) - torch.as_tensor(start.vertices)
    assert 0 < offsets.abs().max() < 0.5


ONE_OBJECT_TEMPLATE_MODELS = {
    "implicitmeshnet": {"unet": {"base": 4, "depth": 3}, "stages": 2, "hidden": 8, "template_level": 2},
    "pixel2mesh3d": {"unet": {"base": 4, "depth": 3}, "hidden": 8, "residual_blocks": 1},
    "voxel2mesh": {"unet": {"base": 4, "depth": 3}, "hidden": 8, "unpooling": "uniform"},
}


@pytest.mark.parametrize("kind", sorted(ONE_OBJECT_TEMPLATE_MODELS))
def test_surface_offsets_grow_the_inferred_mesh_only(kind):
    """``surface_offsets`` ``[d]`` moves the final mesh at inference by ``d`` grid voxels along its outward normals,
    in the isotropic frame (each vertex's move, taken there, is that long); earlier stages and training forward
    passes are untouched; a list of another length is refused."""
    torch.manual_seed(5)
    shape = (16, 16, 8)
    model = build_model(kind, dict(ONE_OBJECT_TEMPLATE_MODELS[kind], surface_offsets=[0.5]))
    plain = build_model(kind, ONE_OBJECT_TEMPLATE_MODELS[kind])
    plain.load_state_dict(model.state_dict())
    image = torch.randn(1, 1, *shape)
    with torch.no_grad():
        torch.testing.assert_close(model(image)[1][0][-1].verts, plain(image)[1][0][-1].verts)  # training mode
        model.eval()
        plain.eval()
        grown, start = model(image)[1][0], plain(image)[1][0]
    torch.testing.assert_close(grown[0].verts, start[0].verts)
    scale = isotropic_scale(shape)
    moves = (grown[-1].verts - start[-1].verts) * scale
    torch.testing.assert_close(moves.norm(dim=1), torch.full((len(moves),), 0.5 * isotropic_voxel_size(shape)))
    volumes = [abs(Mesh((m.verts * scale).numpy(), m.faces.numpy()).signed_volume()) for m in (start[-1], grown[-1])]
    assert volumes[1] > volumes[0]  # outward, whichever way the faces are wound
    with pytest.raises(ValueError, match="surface_offsets"):
        build_model(kind, dict(ONE_OBJECT_TEMPLATE_MODELS[kind], surface_offsets=[0.1, 0.2]))
