"""untangle: folds pulled out locally, connectivity and the rest of the surface kept."""

import numpy as np

from imagetomesh.core.mesh import Mesh
from imagetomesh.geometry.quality import count_self_intersecting_faces, is_watertight, self_intersecting_faces
from imagetomesh.geometry.topology import icosphere
from imagetomesh.geometry.untangle import untangle


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
    verts, faces = icosphere(3)
    verts = verts.numpy().astype(np.float64) * 10.0
    folded = verts.copy()
    cap = verts[:, 2] > 6.5
    folded[cap, 2] -= 25.0
    mesh = Mesh(folded, faces.numpy())
    assert count_self_intersecting_faces(mesh) > 100
    assert count_self_intersecting_faces(untangle(mesh, rounds=30, smoothing_steps=3, grow_every=5)) > 0
    fixed = untangle(mesh)
    assert count_self_intersecting_faces(fixed) == 0 and is_watertight(fixed)


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
