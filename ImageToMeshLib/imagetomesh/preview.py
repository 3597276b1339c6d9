"""Mesh outlines over three orthogonal slices of an image, saved as a PNG.

Slices are taken along the image's own index axes through a given LPS point (default:
the first mesh's centre). Each mesh is cut by the three slice planes in voxel-index space
(where the planes are i, j or k = const), so permuted or flipped image headers draw correctly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imagetomesh.core.mesh import Mesh
from imagetomesh.core.transforms import centre_index
from imagetomesh.core.volume import Volume, transform_points
from imagetomesh.geometry.plane_cut import cut_mesh_with_plane
from imagetomesh.io.atomic import atomic_write, check_output_path

_COLOURS = ["#ffcc00", "#00e5ff", "#ff4081", "#76ff03", "#ff9100", "#d500f9"]
# For each view: the index axis held fixed, and the (horizontal, vertical) index axes drawn.
_VIEWS = (("axial", 2, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 0, (1, 2)))


def slice_segments(mesh: Mesh, volume: Volume, axis: int, position: float) -> np.ndarray:
    """``(S, 2, 3)`` cut segments, in voxel-index coordinates, of ``mesh`` with plane ``ijk[axis] = position``."""
    ijk = transform_points(volume.lps_to_index, mesh.vertices)
    normal = np.zeros(3)
    normal[axis] = 1.0
    origin = np.zeros(3)
    origin[axis] = position
    segments, _ = cut_mesh_with_plane(torch.from_numpy(ijk), torch.from_numpy(mesh.faces), origin, normal)
    return segments.numpy()


def render_preview(
    volume: Volume,
    meshes: list[Mesh],
    path: str | Path,
    centre_lps=None,
    labels: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``meshes`` over the axial, coronal and sagittal index slices of ``volume``; write PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_output_path(path)
    if centre_lps is None:
        centre_lps = (
            meshes[0].centroid()
            if meshes
            else transform_points(volume.index_to_lps, [centre_index(volume.size_ijk)])[0]
        )
    centre = transform_points(volume.lps_to_index, np.asarray(centre_lps)[None])[0]
    centre = np.clip(np.round(centre), 0, volume.size_ijk - 1).astype(int)
    array = np.asarray(volume.array, dtype=np.float32)
    lo, hi = np.percentile(array, [0.5, 99.5])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), dpi=110)
    for ax, (name, axis, (h_axis, v_axis)) in zip(axes, _VIEWS):
        # array is (k, j, i); take the slice where index[axis] = centre[axis]
        image = np.take(array, centre[axis], axis=2 - axis)  # 2D with remaining axes in (k, j, i) order
        remaining = [a for a in (2, 1, 0) if a != axis]  # index axes of image dims, in array order
        image = image if remaining == [v_axis, h_axis] else image.T
        aspect = volume.spacing[v_axis] / volume.spacing[h_axis]
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect, interpolation="nearest")
        for m, mesh in enumerate(meshes):
            segs = slice_segments(mesh, volume, axis, float(centre[axis]))
            colour = _COLOURS[m % len(_COLOURS)]
            for s in segs:
                ax.plot(s[:, h_axis], s[:, v_axis], color=colour, linewidth=1.2)
            if labels and m < len(labels):
                ax.plot([], [], color=colour, label=labels[m])
        ax.set_title(f"{name} (index {'ijk'[axis]}={centre[axis]})", fontsize=9)
        ax.set_xlabel("ijk"[h_axis])
        ax.set_ylabel("ijk"[v_axis])
        ax.set_xlim(-0.5, volume.size_ijk[h_axis] - 0.5)
        ax.set_ylim(-0.5, volume.size_ijk[v_axis] - 0.5)
    if labels:
        axes[0].legend(loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
