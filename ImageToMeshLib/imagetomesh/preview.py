"""Mesh outlines over the axial, coronal and sagittal planes of an image, saved as a PNG.

The planes are anatomical, whatever the image's direction matrix: each is resampled from the
image in LPS millimetres through a chosen point (default: the centre of the first mesh's largest
piece), and shown in radiological convention (patient right on the viewer's left; anterior up in
the axial view; the patient facing left in the sagittal view) with R/L/A/P/S/I markers and axes
in millimetres. CT is shown with a soft-tissue window (W 400, L 40 HU), other images between their
0.5 and 99.5 percentiles, unless a window is given. Meshes are cut by each plane in LPS; a
reference labelmap is outlined (dashed) and closed curves lying in a plane are drawn in it.
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

_COLOURS = ["#ffcc00", "#00e5ff", "#ff4081", "#76ff03", "#ff9100", "#d500f9", "#ffffff", "#ff1744"]
#: CT soft-tissue window (low, high) in HU: W 400, L 40.
CT_WINDOW = (-160.0, 240.0)
#: The three views: name, the LPS axis normal to the plane, the (horizontal, vertical) LPS axes drawn,
#: whether each of those runs against the screen's direction, and the markers at the
#: (left, right, top, bottom) edges. Radiological convention.
VIEWS = (
    ("axial", 2, (0, 1), (False, True), ("R", "L", "A", "P")),
    ("coronal", 1, (0, 2), (False, False), ("R", "L", "S", "I")),
    ("sagittal", 0, (1, 2), (False, False), ("A", "P", "S", "I")),
)
#: Pixels along the longer side of a resampled plane at most.
MAX_PLANE_PIXELS = 512


def default_centre(meshes: list[Mesh], volume: Volume) -> np.ndarray:
    """The centre of the first mesh's largest connected piece (so two kidneys in one file do not put the
    planes between them), or the image centre when there is no mesh."""
    if not meshes or meshes[0].num_faces == 0:
        return transform_points(volume.index_to_lps, [centre_index(volume.size_ijk)])[0]
    from imagetomesh.geometry.quality import face_components

    mesh = meshes[0]
    count, labels = face_components(mesh)
    if count > 1:
        largest = np.argmax(np.bincount(labels))
        used = np.unique(mesh.faces[labels == largest])
        return mesh.vertices[used].mean(0).astype(np.float64)
    return np.asarray(mesh.centroid(), dtype=np.float64)


def plane_image(volume: Volume, axis: int, position: float, axes: tuple[int, int], order: int = 1):
    """The image resampled on the LPS plane ``lps[axis] = position`` over the volume's physical extent.

    Returns ``(values (V, H) float32 with NaN outside the image, (h0, h1, v0, v1) extent in mm)``;
    row ``r`` is at ``lps[axes[1]] = v0 + r step`` and column ``c`` at ``lps[axes[0]] = h0 + c step``."""
    from scipy import ndimage

    lo, hi = volume.bounds_lps()
    step = max(float(np.min(volume.spacing)), float(np.max(hi - lo)) / MAX_PLANE_PIXELS)
    h = np.arange(lo[axes[0]], hi[axes[0]] + 1e-6, step)
    v = np.arange(lo[axes[1]], hi[axes[1]] + 1e-6, step)
    grid = np.zeros((len(v), len(h), 3))
    grid[..., axis] = position
    grid[..., axes[0]] = h[None, :]
    grid[..., axes[1]] = v[:, None]
    ijk = transform_points(volume.lps_to_index, grid.reshape(-1, 3))
    inside = np.all((ijk > -0.5) & (ijk < volume.size_ijk - 0.5), axis=1)
    values = ndimage.map_coordinates(
        np.asarray(volume.array, dtype=np.float32), ijk[:, ::-1].T, order=order, mode="nearest"
    )
    values = np.where(inside, values, np.nan).reshape(len(v), len(h)).astype(np.float32)
    return values, (h[0], h[-1], v[0], v[-1])


def mesh_segments(mesh: Mesh, axis: int, position: float) -> np.ndarray:
    """``(S, 2, 3)`` LPS segments where ``mesh`` crosses the plane ``lps[axis] = position``."""
    normal = np.zeros(3)
    normal[axis] = 1.0
    origin = np.zeros(3)
    origin[axis] = position
    segments, _ = cut_mesh_with_plane(
        torch.from_numpy(mesh.vertices.astype(np.float64)), torch.from_numpy(mesh.faces), origin, normal
    )
    return segments.numpy()


def display_window(volume: Volume, window: tuple[float, float] | None = None) -> tuple[float, float]:
    """``(low, high)`` grey levels: ``window`` if given, the CT soft-tissue window for CT, else percentiles."""
    if window is not None:
        return float(window[0]), float(window[1])
    from imagetomesh.compatibility import looks_like_ct

    if looks_like_ct(volume):
        return CT_WINDOW
    lo, hi = np.percentile(np.asarray(volume.array, dtype=np.float32), [0.5, 99.5])
    return float(lo), float(hi)


def render_preview(
    volume: Volume,
    meshes: list[Mesh],
    path: str | Path,
    centre_lps=None,
    labels: list[str] | None = None,
    title: str | None = None,
    window: tuple[float, float] | None = None,
    reference: Volume | None = None,
    curves: list[np.ndarray] | None = None,
) -> Path:
    """Draw ``meshes`` (LPS mm) over the axial, coronal and sagittal planes of ``volume`` through
    ``centre_lps`` (default :func:`default_centre`); write the PNG ``path`` atomically.

    ``labels`` name the meshes in a legend; ``window`` ``(low, high)`` sets the grey levels
    (:func:`display_window`); ``reference`` (a labelmap) is outlined dashed where nonzero;
    ``curves`` (``(N, 3)`` LPS points, closed) are drawn in the planes they lie in (within a voxel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_output_path(path)
    centre = np.asarray(centre_lps if centre_lps is not None else default_centre(meshes, volume), dtype=np.float64)
    low, high = display_window(volume, window)
    tolerance = float(np.max(volume.spacing))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.8), dpi=110)
    for ax, (name, axis, (h_axis, v_axis), flipped, markers) in zip(axes, VIEWS):
        values, (h0, h1, v0, v1) = plane_image(volume, axis, centre[axis], (h_axis, v_axis))
        ax.set_facecolor("black")
        ax.imshow(
            np.ma.masked_invalid(values),
            cmap="gray",
            vmin=low,
            vmax=high,
            origin="lower",
            extent=(h0, h1, v0, v1),
            interpolation="nearest",
        )
        if reference is not None:
            outline, extent = plane_image(reference, axis, centre[axis], (h_axis, v_axis), order=0)
            if np.nan_to_num(outline).any():
                hh = np.linspace(extent[0], extent[1], outline.shape[1])
                vv = np.linspace(extent[2], extent[3], outline.shape[0])
                ax.contour(
                    hh, vv, np.nan_to_num(outline) > 0.5, levels=[0.5], colors="white", linestyles="--", linewidths=1.0
                )
        for m, mesh in enumerate(meshes):
            colour = _COLOURS[m % len(_COLOURS)]
            for s in mesh_segments(mesh, axis, centre[axis]):
                ax.plot(s[:, h_axis], s[:, v_axis], color=colour, linewidth=1.2)
            if labels and m < len(labels):
                ax.plot([], [], color=colour, label=labels[m])
        for curve in curves or []:
            points = np.asarray(curve, dtype=np.float64)
            if len(points) and np.all(np.abs(points[:, axis] - centre[axis]) <= tolerance):
                closed = np.vstack([points, points[:1]])
                ax.plot(closed[:, h_axis], closed[:, v_axis], color="#ff1744", linewidth=1.0, marker=".", markersize=3)
        ax.set_xlim(h0, h1)
        ax.set_ylim((v1, v0) if flipped[1] else (v0, v1))
        ax.set_aspect("equal")
        ax.set_title(f"{name}, {'LPS'[axis]} = {centre[axis]:.1f} mm", fontsize=9)
        ax.set_xlabel(f"{'LPS'[h_axis]} (mm)", fontsize=8)
        ax.set_ylabel(f"{'LPS'[v_axis]} (mm)", fontsize=8)
        ax.tick_params(labelsize=7)
        style = {"color": "#ffeb3b", "fontsize": 10, "fontweight": "bold", "transform": ax.transAxes}
        left, right, top, bottom = markers
        ax.text(0.02, 0.5, left, ha="left", va="center", **style)
        ax.text(0.98, 0.5, right, ha="right", va="center", **style)
        ax.text(0.5, 0.98, top, ha="center", va="top", **style)
        ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    if labels:
        axes[0].legend(loc="lower right", fontsize=7)
    suffix = f"window {low:g} .. {high:g}"
    fig.suptitle(f"{title}  ({suffix})" if title else suffix, fontsize=10)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
