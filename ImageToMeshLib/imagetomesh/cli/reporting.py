"""What commands show while they work and when they are done: progress bars and the line
that reports a written mesh."""

from __future__ import annotations

import sys
from pathlib import Path

from imagetomesh.core.mesh import Mesh
from imagetomesh.errors import InputError

__all__ = ["PROG", "progress_bar", "FractionBar", "check_mesh_output", "write_checked_mesh"]

#: The command's name, as every message starts.
PROG = "imagetomesh"


def progress_bar(iterable, desc: str, total: int | None = None):
    """A tqdm bar on stderr around ``iterable`` (off when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, disable=None)


class FractionBar:
    """A tqdm bar driven by a ``progress(fraction)`` callback (the fits')."""

    def __init__(self, desc: str) -> None:
        self.bar = progress_bar(range(1000), desc, total=1000)
        self.done = 0

    def __call__(self, fraction: float) -> None:
        target = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        if target > self.done:
            self.bar.update(target - self.done)
            self.done = target

    def close(self) -> None:
        self.bar.close()


def check_mesh_output(path: Path) -> None:
    """Refuse, before any work, an output that cannot be written or is not a mesh file name."""
    from imagetomesh.io.atomic import check_output_path, format_suffix
    from imagetomesh.io.meshes import MESH_SUFFIXES

    check_output_path(path)
    if format_suffix(path) not in MESH_SUFFIXES:
        raise InputError(f"output {path} needs a mesh extension: one of {', '.join(MESH_SUFFIXES)}")


def write_checked_mesh(
    mesh: Mesh, output: Path, coordinate_system: str, what: str = "", self_intersections: bool = False
) -> None:
    """Write ``mesh`` and print ``wrote OUTPUT ([what: ]N vertices, F triangles, watertight|NOT watertight
    [, K self-intersecting faces], SPACE)`` (the count when ``self_intersections``: "watertight" says the
    surface is closed, not that no face crosses another).

    Watertightness comes from edge statistics alone (:func:`~imagetomesh.geometry.quality.is_watertight`,
    one sort of the edges): the line does not report orientation, so the whole-mesh winding-number test of
    :func:`~imagetomesh.geometry.quality.check_mesh` is not run (it took half of ``mesh-from-label`` on big
    meshes)."""
    from imagetomesh.geometry.quality import count_self_intersecting_faces, is_watertight
    from imagetomesh.io.meshes import write_mesh

    watertight = is_watertight(mesh)
    crossing = f", {count_self_intersecting_faces(mesh)} self-intersecting faces" if self_intersections else ""
    write_mesh(mesh, output, coordinate_system)
    print(
        f"wrote {output} ({what + ': ' if what else ''}{mesh.num_vertices} vertices, {mesh.num_faces} triangles, "
        f"{'watertight' if watertight else 'NOT watertight'}{crossing}, {coordinate_system})"
    )
