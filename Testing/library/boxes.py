"""An axis-aligned box mesh for the tests."""

import itertools

import numpy as np


def box_mesh(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Closed, outward axis-aligned box ``lo..hi`` (x, y, z): 8 vertices, 12 triangles."""
    verts = np.array([[(lo, hi)[b][a] for a, b in enumerate(bits)] for bits in itertools.product((0, 1), repeat=3)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))]
    return verts.astype(np.float64), np.array(faces)
