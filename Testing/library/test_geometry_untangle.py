"""untangle: folds pulled out locally, connectivity and the rest of the surface kept."""

import numpy as np

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.quality import count_self_intersecting_faces, is_watertight, self_intersecting_faces
from imagetomesh.geometry.topology import icosphere
from imagetomesh.geometry.untangle import crossing_after_move, untangle


def _spiked_sphere():
    """A radius-10 sphere whose top vertex is pushed through the far side (to z = -12)."""
    verts, faces = icosphere(3)
    verts = verts.numpy().astype(np.float64) * 10.0
    folded = verts.copy()
    top = int(np.argmax(verts[:, 2]))
    folded[top] = [0.0, 0.0, -12.0]
    return verts, Mesh(folded, faces.numpy()), top


def test_self_intersecting_faces_mask_and_count_agree():
    _, mesh, _ = _spiked_sphere()
    mask = self_intersecting_faces(mesh)
    assert mask.shape == (mesh.num_faces,) and mask.dtype == bool
    assert mask.sum() == count_self_intersecting_faces(mesh) > 0
    verts, faces = icosphere(2)
    assert count_self_intersecting_faces(Mesh(verts.numpy(), faces.numpy())) == 0


def test_untangle_pulls_out_a_fold_and_keeps_the_rest():
    verts, mesh, top = _spiked_sphere()
    before = mesh.vertices.copy()
    fixed = untangle(mesh)
    assert not self_intersecting_faces(fixed).any()
    assert (fixed.faces == mesh.faces).all() and is_watertight(fixed)
    assert np.array_equal(mesh.vertices, before)  # the input is not modified
    pierced = np.array([0.0, 0.0, -10.0])
    far = (np.linalg.norm(verts - verts[top], axis=1) > 8.0) & (np.linalg.norm(verts - pierced, axis=1) > 8.0)
    assert far.sum() > 200
    assert np.allclose(fixed.vertices[far], mesh.vertices[far])


def test_untangle_pulls_a_deep_cap_back_through_the_surface():
    """A 7-ring cap pushed 25 units through the far side: the former 30 rounds left 96 faces crossing."""
    mesh = _deep_cap_sphere()
    assert count_self_intersecting_faces(mesh) > 100
    assert count_self_intersecting_faces(untangle(mesh, rounds=30, smoothing_steps=3, grow_every=5)) > 0
    fixed = untangle(mesh)
    assert count_self_intersecting_faces(fixed) == 0 and is_watertight(fixed)


def _deep_cap_sphere():
    verts, faces = icosphere(3)
    verts = verts.numpy().astype(np.float64) * 10.0
    verts[verts[:, 2] > 6.5, 2] -= 25.0
    return Mesh(verts, faces.numpy())


def test_crossing_after_move_is_the_whole_mesh_test_after_a_local_move():
    """Moves that pull folds out, push them deeper and make new ones against faces that did not move."""
    mesh = _deep_cap_sphere()
    faces, rng = mesh.faces, np.random.default_rng(3)
    for scale in (0.0, 0.5, 3.0, 8.0):
        verts = mesh.vertices.copy()
        before = self_intersecting_faces(Mesh(verts, faces))
        moved = np.zeros(mesh.num_vertices, dtype=bool)
        moved[faces[before].ravel()] = True
        moved[rng.choice(mesh.num_vertices, 40, replace=False)] = True  # and a few elsewhere
        verts[moved] += rng.normal(scale=scale, size=(int(moved.sum()), 3))
        after = crossing_after_move(verts, faces, moved)
        assert np.array_equal(after, self_intersecting_faces(Mesh(verts, faces)))
        assert after.any() or scale == 0.0
    assert not crossing_after_move(mesh.vertices, faces, np.zeros(mesh.num_vertices, dtype=bool)).any()


def _untangle_testing_the_whole_mesh_every_round(mesh, rounds=100, smoothing_steps=6, grow_every=10):
    """The obviously correct slow form of untangle(): the whole mesh tested at the start of every round."""
    faces, verts = mesh.faces, mesh.vertices.astype(np.float64)
    neighbours = [set() for _ in range(mesh.num_vertices)]
    for a, b, c in faces:
        neighbours[a] |= {b, c}
        neighbours[b] |= {a, c}
        neighbours[c] |= {a, b}
    for number in range(rounds):
        crossing = self_intersecting_faces(Mesh(verts, faces))
        if not crossing.any():
            break
        region = set(faces[crossing].ravel().tolist())
        for _ in range(1 + number // grow_every):
            region |= {n for v in region for n in neighbours[v]}
        region = np.array(sorted(region))
        for _ in range(smoothing_steps):
            means = np.array([verts[sorted(neighbours[v])].mean(axis=0) for v in region])
            verts[region] += 0.5 * (means - verts[region])
    return verts


def test_untangle_moves_every_vertex_as_testing_the_whole_mesh_every_round_does():
    mesh = _deep_cap_sphere()
    expected = _untangle_testing_the_whole_mesh_every_round(mesh)
    assert np.allclose(untangle(mesh).vertices, expected, rtol=0, atol=1e-5)  # float32 vertices
    _, spiked, _ = _spiked_sphere()
    assert np.allclose(untangle(spiked).vertices, _untangle_testing_the_whole_mesh_every_round(spiked), atol=1e-5)


def test_predicted_meshes_are_untangled_by_segment_post_processing():
    from imagetomesh.voxel_meshing import finish_mesh

    _, mesh, _ = _spiked_sphere()
    finished = finish_mesh(mesh)
    assert is_watertight(finished) and count_self_intersecting_faces(finished) == 0
    assert finished.signed_volume() > 0


def test_untangling_can_be_left_out_to_measure_the_network():
    from imagetomesh.voxel_meshing import finish_mesh

    _, mesh, _ = _spiked_sphere()
    kept = finish_mesh(mesh, untangle_folds=False)
    assert count_self_intersecting_faces(kept) == count_self_intersecting_faces(mesh) > 0
