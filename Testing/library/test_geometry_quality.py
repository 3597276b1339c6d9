"""check_mesh / repair_mesh / orient_outward on hand-made meshes, edge counts vs a slow reference."""

import warnings
from collections import Counter, defaultdict

import numpy as np
import pytest

from imagetomesh.core import Mesh
from imagetomesh.geometry.quality import (
    MeshCheck,
    check_mesh,
    count_self_intersecting_faces,
    is_closed_manifold,
    is_watertight,
    orient_outward,
    repair_mesh,
    winding_numbers,
)

CUBE_VERTICES = np.array(
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=np.float64
)
CUBE_FACES = np.array(
    [
        [0, 3, 2],
        [0, 2, 1],  # z = 0, normal -z
        [4, 5, 6],
        [4, 6, 7],  # z = 1, normal +z
        [0, 1, 5],
        [0, 5, 4],  # y = 0, normal -y
        [3, 7, 6],
        [3, 6, 2],  # y = 1, normal +y
        [0, 4, 7],
        [0, 7, 3],  # x = 0, normal -x
        [1, 2, 6],
        [1, 6, 5],  # x = 1, normal +x
    ]
)


def cube(offset=(0, 0, 0), scale=1.0) -> Mesh:
    return Mesh(CUBE_VERTICES * scale + np.asarray(offset, dtype=np.float64), CUBE_FACES)


def join(*meshes: Mesh) -> Mesh:
    vertices, faces, n = [], [], 0
    for m in meshes:
        vertices.append(m.vertices)
        faces.append(m.faces + n)
        n += m.num_vertices
    return Mesh(np.concatenate(vertices), np.concatenate(faces))


def slow_edge_counts(mesh: Mesh):
    """Reference: dictionaries of undirected edge use and direction."""
    uses = Counter()
    directed = Counter()
    for f in mesh.faces.tolist():
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            uses[frozenset((a, b))] += 1
            directed[(a, b)] += 1
    boundary = sum(1 for c in uses.values() if c == 1)
    non_manifold = sum(1 for c in uses.values() if c > 2)
    inconsistent = sum(
        1 for e, c in uses.items() if c == 2 and len(e) == 2 and max(directed[tuple(e)], directed[tuple(e)[::-1]]) == 2
    )
    return boundary, non_manifold, inconsistent


def slow_non_manifold_vertices(mesh: Mesh) -> int:
    """Reference: per vertex, flood-fill its faces across shared edges through the vertex."""
    around = defaultdict(list)
    for fi, f in enumerate(mesh.faces.tolist()):
        for v in f:
            around[v].append(fi)
    count = 0
    for v, fans in around.items():
        faces = {fi: set(mesh.faces[fi].tolist()) - {v} for fi in fans}
        seen, stack, groups = set(), [], 0
        for start in faces:
            if start in seen:
                continue
            groups += 1
            stack = [start]
            seen.add(start)
            while stack:
                cur = stack.pop()
                for other in faces:
                    if other not in seen and faces[cur] & faces[other]:
                        seen.add(other)
                        stack.append(other)
        count += groups > 1
    return count


def test_cube_is_perfect():
    check = check_mesh(cube())
    assert isinstance(check, MeshCheck)
    assert check.watertight and check.manifold and check.outward
    assert (check.boundary_edges, check.non_manifold_edges, check.non_manifold_vertices) == (0, 0, 0)
    assert (check.components, check.self_intersecting_faces, check.num_faces) == (1, 0, 12)
    assert check.as_dict()["num_faces"] == 12
    assert check.summary().startswith("watertight, manifold, outward; 1 component, 12 faces")
    assert is_watertight(cube())


def test_flipped_cube_is_not_outward_and_orient_outward_fixes_it():
    inward = cube().flipped()
    check = check_mesh(inward)
    assert check.watertight and not check.outward
    fixed = orient_outward(inward)
    assert check_mesh(fixed).outward and fixed.signed_volume() == pytest.approx(1.0)


def test_hole_and_flipped_face_and_non_manifold_edge():
    holed = Mesh(CUBE_VERTICES, CUBE_FACES[1:])
    check = check_mesh(holed)
    assert not check.watertight and check.boundary_edges == 3

    faces = CUBE_FACES.copy()
    faces[4] = faces[4, ::-1]
    one_flipped = Mesh(CUBE_VERTICES, faces)
    check = check_mesh(one_flipped)
    assert not check.watertight and check.inconsistent_edges == 3 and check.boundary_edges == 0
    fixed = orient_outward(one_flipped)
    assert is_watertight(fixed) and check_mesh(fixed).outward

    fin = Mesh(np.concatenate([CUBE_VERTICES, [[0.5, -1.0, 0.5]]]), np.concatenate([CUBE_FACES, [[0, 1, 8]]]))
    check = check_mesh(fin)
    assert check.non_manifold_edges == 1 and check.boundary_edges == 2 and not check.manifold


def test_bowtie_vertex_is_non_manifold_but_edges_are_closed():
    # two cubes touching at one corner, sharing that vertex
    a = cube()
    b = cube(offset=(1, 1, 1))
    joined = join(a, b)
    shared = np.where(np.all(joined.vertices == [1, 1, 1], axis=1))[0]
    faces = joined.faces.copy()
    faces[faces == shared[1]] = shared[0]
    bowtie = Mesh(joined.vertices, faces)
    check = check_mesh(bowtie)
    assert check.watertight and not check.manifold and check.non_manifold_vertices == 1
    assert check.components == 1
    assert slow_non_manifold_vertices(bowtie) == 1


def test_nested_cavity_orientation():
    outer = cube(scale=3.0)
    inner_inward = cube(offset=(1, 1, 1)).flipped()  # cavity wall faces into the cavity
    assert check_mesh(join(outer, inner_inward)).outward
    assert not check_mesh(join(outer, cube(offset=(1, 1, 1)))).outward
    fixed = orient_outward(join(outer.flipped(), cube(offset=(1, 1, 1))))
    assert check_mesh(fixed).outward
    assert fixed.signed_volume() == pytest.approx(27.0 - 1.0)


def test_edge_and_vertex_counts_match_slow_reference():
    rng = np.random.default_rng(0)
    for _ in range(5):
        vertices = rng.normal(size=(30, 3))
        faces = np.array([rng.choice(30, 3, replace=False) for _ in range(60)])
        mesh = Mesh(vertices, faces)
        check = check_mesh(mesh, self_intersections=False)
        assert (check.boundary_edges, check.non_manifold_edges, check.inconsistent_edges) == slow_edge_counts(mesh)
        assert check.non_manifold_vertices == slow_non_manifold_vertices(mesh)
        assert check.self_intersecting_faces == -1


def test_is_closed_manifold_answers_like_check_mesh():
    """The edge/fan-statistics shortcut (no components, no winding numbers) == check_mesh's verdict,
    on closed, holed, flipped-face, bowtie and random meshes."""
    holed = Mesh(CUBE_VERTICES, CUBE_FACES[1:])
    flipped_face = CUBE_FACES.copy()
    flipped_face[3] = flipped_face[3][::-1]
    joined = join(cube(), cube(offset=(1, 1, 1)))
    shared = np.where(np.all(joined.vertices == [1, 1, 1], axis=1))[0]
    bowtie_faces = joined.faces.copy()
    bowtie_faces[bowtie_faces == shared[1]] = shared[0]
    meshes = [cube(), cube().flipped(), holed, Mesh(CUBE_VERTICES, flipped_face), Mesh(joined.vertices, bowtie_faces)]
    rng = np.random.default_rng(1)
    meshes += [Mesh(rng.normal(size=(12, 3)), np.array([rng.choice(12, 3, replace=False) for _ in range(20)]))]
    verdicts = []
    for mesh in meshes:
        check = check_mesh(mesh, self_intersections=False)
        verdicts.append(is_closed_manifold(mesh))
        assert verdicts[-1] == (check.watertight and check.manifold), check.summary()
    assert verdicts[:2] == [True, True] and not any(verdicts[2:])


def test_self_intersections():
    assert count_self_intersecting_faces(join(cube(), cube(offset=(3, 0, 0)))) == 0
    crossing = join(cube(), cube(offset=(0.5, 0.5, 0.5)))
    n = count_self_intersecting_faces(crossing)
    # each cube has 3 faces (6 triangles) cut by the other cube's 3 faces: 12 triangles at most
    assert 6 <= n <= 12
    assert check_mesh(crossing).self_intersecting_faces == n


def test_winding_numbers_inside_outside():
    points = np.array([[0.5, 0.5, 0.5], [2.0, 0.5, 0.5], [0.1, 0.9, 0.2]])
    np.testing.assert_allclose(winding_numbers(cube(), points), [1.0, 0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(winding_numbers(cube().flipped(), points), [-1.0, 0.0, -1.0], atol=1e-9)


def test_repair_mesh_closes_holes_merges_duplicates_and_orients():
    # a cube soup: every face with its own vertices (as read from STL), one face missing, one flipped
    faces = CUBE_FACES[1:].copy()
    faces[3] = faces[3, ::-1]
    soup = Mesh(CUBE_VERTICES[faces.reshape(-1)], np.arange(faces.size).reshape(-1, 3))
    assert not is_watertight(soup)
    repaired = repair_mesh(soup)
    check = check_mesh(repaired)
    assert check.watertight and check.manifold and check.outward and check.self_intersecting_faces == 0
    assert repaired.num_vertices == 8
    assert repaired.signed_volume() == pytest.approx(1.0)


def test_repair_mesh_removes_self_intersections():
    crossing = join(cube(), cube(offset=(0.5, 0.5, 0.5)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it may warn that the holes left behind stay open
        repaired = repair_mesh(crossing)
    assert count_self_intersecting_faces(repaired) == 0
    assert repaired.num_faces > 0
