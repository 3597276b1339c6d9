"""``mesh-from-label`` side by side with the tools users would pick instead, on the same labels.

Contenders, each given the same binary mask (cropped to its bounding box plus 4 voxels, in its
physical geometry) and each returning a surface in LPS mm:

- ``imagetomesh``: :func:`imagetomesh.geometry.isosurface.labelmap_to_mesh` as
  ``imagetomesh mesh-from-label`` calls it (its default smoothing factor 0.18, Slicer's
  windowed-sinc iteration count);
- ``Slicer``: 3D Slicer's own labelmap -> closed-surface conversion (``slicer-core``'s
  ``vtkBinaryLabelmapToClosedSurfaceConversionRule`` through a ``vtkSegmentation``, default
  parameters: discrete flying edges, windowed sinc at smoothing factor 0.5, surface normals);
- ``VTK surface nets``: ``vtkSurfaceNets3D`` with its default (constrained) smoothing, triangles;
- ``skimage MC + Taubin``: ``skimage.measure.marching_cubes`` at 0.5 on the zero-padded mask,
  then Taubin lambda|mu smoothing (lambda 0.5, mu -0.53, 10 pairs, uniform weights).

For every case and contender: meshing time (the call only), Dice of the surface rasterised back
onto the label's grid, watertight (closed, edge- and vertex-manifold), outward (every component
faces out of the solid, cavities into it; :func:`imagetomesh.geometry.quality.check_mesh`), mean triangle
quality (1 equilateral), smoothness (mean angle between the normals of adjacent triangles, in
degrees: lower is smoother; the unsmoothed staircase of a hippocampus has about 15), volume ratio (enclosed volume / labelled voxels' volume) and mean signed
distance of the vertices to the label's boundary (mm, trilinear in the label's signed distance
map whose zero level lies halfway between inside and outside voxel centres; > 0: outside the
label). Each contender runs in its own fresh process (loading the same cases the same way), whose
peak resident memory is reported. The table is printed and written into
``docs/mesh-from-label-comparison.md``.

    OMP_NUM_THREADS=1 IMAGETOMESH_THREADS=1 .venv/bin/python Testing/benchmarks/mesh_from_label_side_by_side.py
    .venv/bin/python Testing/benchmarks/mesh_from_label_side_by_side.py --hippocampus 20 --kits 2 --no-write

scikit-image comes with the ``bench`` extra (``pip install -e "ImageToMeshLib[bench]"``); without it
the skimage row says so and the rest still runs. ``slicer-core`` likewise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mesh_from_label_sweep import DATA, read  # noqa: E402  (the sweep's reader: array + geometry)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "mesh-from-label-comparison.md"
METHODS = ("imagetomesh", "slicer", "surfacenets", "skimage")
NAMES = {
    "imagetomesh": "imagetomesh mesh-from-label",
    "slicer": "3D Slicer conversion (slicer-core)",
    "surfacenets": "VTK surface nets",
    "skimage": "skimage MC + Taubin",
}
CROP_MARGIN = 4  # voxels of background kept around each label


# --- the contenders: (mask Volume) -> Mesh in LPS mm ------------------------------------------
def mesh_imagetomesh(volume):
    from imagetomesh.geometry.isosurface import EXPORT_SMOOTHING, labelmap_to_mesh

    # exactly what cmd_mesh_from_label passes (its default --smoothing, Slicer's iteration count)
    return labelmap_to_mesh(volume, smoothing=EXPORT_SMOOTHING, smoothing_iterations=None)


def _vtk_image(array, spacing, image_class=None):
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData

    image = (image_class or vtkImageData)()
    depth, height, width = array.shape
    image.SetDimensions(width, height, depth)
    image.SetSpacing(*(float(s) for s in spacing))
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).reshape(-1), deep=True))
    return image


def _outward(mesh):
    return mesh.flipped() if mesh.signed_volume() < 0 else mesh


def mesh_slicer(volume):
    from slicer_core import vtkSegmentationCore as sc
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    from imagetomesh.geometry.vtk_convert import polydata_to_mesh

    factory = sc.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():  # Slicer registers its rules at start-up; slicer-core does not
        factory.RegisterConverterRule(sc.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    image = _vtk_image(volume.array, volume.spacing, sc.vtkOrientedImageData)
    image.SetOrigin(*(float(o) for o in volume.origin))
    direction = vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            direction.SetElement(r, c, float(volume.direction[r, c]))
    image.SetDirectionMatrix(direction)
    segmentation = sc.vtkSegmentation()
    segmentation.SetSourceRepresentationName("Binary labelmap")
    segment = sc.vtkSegment()
    segment.AddRepresentation("Binary labelmap", image)
    segmentation.AddSegment(segment, "structure")
    if not segmentation.CreateRepresentation("Closed surface"):
        raise RuntimeError("Slicer's conversion failed")
    return _outward(polydata_to_mesh(segment.GetRepresentation("Closed surface")))


def _index_mesh_to_lps(vertices_mm, faces, volume):
    """Vertices in ``index * spacing`` (x, y, z) order -> the mask's LPS mm."""
    from imagetomesh.core.mesh import Mesh

    ijk = np.asarray(vertices_mm, dtype=np.float64) / np.asarray(volume.spacing)
    return _outward(Mesh(ijk.astype(np.float32), np.asarray(faces, dtype=np.int64)).transformed(volume.index_to_lps))


def mesh_surfacenets(volume):
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkFiltersCore import vtkSurfaceNets3D

    nets = vtkSurfaceNets3D()
    nets.SetInputData(_vtk_image(np.pad(volume.array, 1), volume.spacing))
    nets.SetLabel(0, 1)
    nets.SetOutputMeshTypeToTriangles()
    nets.Update()
    polydata = nets.GetOutput()
    points = numpy_support.vtk_to_numpy(polydata.GetPoints().GetData()).astype(np.float64)
    faces = numpy_support.vtk_to_numpy(polydata.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return _index_mesh_to_lps(points - np.asarray(volume.spacing), faces, volume)  # undo the pad


def taubin(vertices, faces, pairs=10, lam=0.5, mu=-0.53):
    """Taubin's lambda|mu smoothing with uniform (umbrella) weights."""
    from scipy import sparse

    n = vertices.shape[0]
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    adjacency = sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0  # each edge once, however many faces share it
    degree = np.asarray(adjacency.sum(1)).ravel()
    average = sparse.diags(1.0 / np.maximum(degree, 1)) @ adjacency
    v = vertices.astype(np.float64)
    for _ in range(pairs):
        v = v + lam * (average @ v - v)
        v = v + mu * (average @ v - v)
    return v


def mesh_skimage(volume):
    from skimage.measure import marching_cubes

    spacing_kji = tuple(float(s) for s in volume.spacing[::-1])
    verts, faces, _, _ = marching_cubes(np.pad(volume.array, 1).astype(np.float32), 0.5, spacing=spacing_kji)
    verts = taubin(verts, faces)
    return _index_mesh_to_lps(verts[:, ::-1] - np.asarray(volume.spacing), faces, volume)  # (k,j,i)->(x,y,z), unpad


MESHERS = {
    "imagetomesh": mesh_imagetomesh,
    "slicer": mesh_slicer,
    "surfacenets": mesh_surfacenets,
    "skimage": mesh_skimage,
}


def available(method: str) -> str | None:
    """None when the contender can run here, else why not."""
    try:
        if method == "slicer":
            import slicer_core.vtkSegmentationCore  # noqa: F401
        elif method == "skimage":
            import skimage.measure  # noqa: F401
        elif method == "surfacenets":
            from vtkmodules.vtkFiltersCore import vtkSurfaceNets3D  # noqa: F401
    except ImportError as err:
        extra = ' (pip install -e "ImageToMeshLib[bench]")' if method == "skimage" else ""
        return f"not installed: {err.name}{extra}"
    return None


# --- the cases ----------------------------------------------------------------------------
def cases(dataset: str, count: int, data: Path):
    """Yield ``(case id, mask Volume)`` cropped to the structure plus :data:`CROP_MARGIN` voxels."""
    from imagetomesh.core import Volume
    from imagetomesh.core.cropping import bounding_box, crop_to_box

    if dataset.startswith("hippocampus"):
        files, select = sorted((data / "hippocampus" / "labelsTr").glob("*.nii.gz")), int(dataset[-1])
    else:
        files, select = sorted((data / "kits19-masks").glob("case_*.nii.gz")), None
    for path in files[: count if count >= 0 else None]:
        array, geometry = read(path)
        mask = (array == select) if select is not None else (array > 0)
        del array
        box = bounding_box(mask)
        if box is None or np.count_nonzero(mask) < 8:
            continue
        yield path.name, crop_to_box(Volume(mask.astype(np.uint8), **geometry), box, CROP_MARGIN)


def signed_distance_mm(volume) -> np.ndarray:
    """``(D, H, W)`` signed distance (mm) to the label's boundary: > 0 outside; 0 halfway between an
    inside and an outside voxel centre."""
    from scipy import ndimage

    inside = volume.array != 0
    sampling = tuple(float(s) for s in volume.spacing[::-1])
    outside_d = ndimage.distance_transform_edt(~inside, sampling=sampling)
    inside_d = ndimage.distance_transform_edt(inside, sampling=sampling)
    return (outside_d - inside_d) / 2.0


def mean_dihedral_degrees(mesh) -> float:
    """Mean angle between the normals of the two triangles of each edge (degrees)."""
    v = mesh.vertices.astype(np.float64)
    f = mesh.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    edges = np.sort(np.stack([f, np.roll(f, -1, axis=1)], axis=-1).reshape(-1, 2), axis=1)
    key = edges[:, 0] * np.int64(len(v)) + edges[:, 1]
    order = np.argsort(key, kind="stable")
    face = np.repeat(np.arange(len(f)), 3)[order]
    pair = np.flatnonzero(key[order][1:] == key[order][:-1])
    cosine = np.clip(np.einsum("ij,ij->i", normals[face[pair]], normals[face[pair + 1]]), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)).mean())


def measure(mesh, volume) -> dict:
    from scipy import ndimage

    from imagetomesh.core.volume import transform_points
    from imagetomesh.geometry.quality import check_mesh
    from imagetomesh.geometry.raster import rasterize_mesh
    from imagetomesh.metrics import dice, mean_triangle_quality

    check = check_mesh(mesh, self_intersections=False)
    voxels = float(np.count_nonzero(volume.array)) * float(np.prod(volume.spacing))
    ijk = transform_points(volume.lps_to_index, mesh.vertices.astype(np.float64))
    sdf = ndimage.map_coordinates(signed_distance_mm(volume), ijk[:, ::-1].T, order=1, mode="nearest")
    return dict(
        dice=dice(rasterize_mesh(mesh, volume), volume.array),
        watertight=bool(check.watertight and check.manifold),
        outward=bool(check.outward),
        quality=mean_triangle_quality(mesh),
        dihedral=mean_dihedral_degrees(mesh),
        volume_ratio=abs(mesh.signed_volume()) / voxels,
        signed_mm=float(sdf.mean()),
        faces=mesh.num_faces,
    )


def worker(method: str, dataset: str, count: int, data: Path) -> dict:
    """Mesh every case with ``method`` (timed), note the peak memory, then measure."""
    import resource

    from imagetomesh.geometry.quality import check_mesh  # noqa: F401  (the same imports in every worker,
    from imagetomesh.geometry.raster import rasterize_mesh  # noqa: F401  so the peaks compare meshing)
    from imagetomesh.metrics import dice  # noqa: F401

    mesher = MESHERS[method]
    volumes, meshes, seconds = [], [], []
    for _, volume in cases(dataset, count, data):
        start = time.perf_counter()
        meshes.append(mesher(volume))
        seconds.append(time.perf_counter() - start)
        volumes.append(volume)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [measure(mesh, volume) for mesh, volume in zip(meshes, volumes)]
    return dict(
        n=len(rows),
        seconds=float(np.mean(seconds)),
        peak_mb=peak_mb,
        **{key: [row[key] for row in rows] for key in rows[0]},
    )


# --- the table ----------------------------------------------------------------------------
DATASETS = {
    "hippocampus1": "hippocampus label 1",
    "hippocampus2": "hippocampus label 2",
    "kits": "KiTS19 kidney+tumour",
}


def run_worker(method, dataset, count, data) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import mesh_from_label_side_by_side as b; "
        "print('RESULT ' + json.dumps(b.worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), b.Path(sys.argv[5]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent), method, dataset, str(count), str(data)],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")),
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{method} on {dataset} failed: {done.stderr.strip()[-800:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def format_row(method: str, r: dict) -> str:
    d = np.array(r["dice"])
    tight, out = int(np.sum(r["watertight"])), int(np.sum(r["outward"]))
    return (
        f"| {NAMES[method]} | {d.mean():.4f} | {d.min():.4f} | {tight}/{r['n']} ({100 * tight / r['n']:.0f} %) | "
        f"{out}/{r['n']} | "
        f"{1000 * r['seconds']:.1f} | {r['peak_mb']:.0f} | {np.mean(r['quality']):.3f} | {np.mean(r['dihedral']):.2f} | "
        f"{np.mean(r['volume_ratio']):.4f} | {np.mean(r['signed_mm']):+.3f} | {np.mean(r['faces']):.0f} |"
    )


HEADER = (
    "| method | Dice mean | Dice min | watertight | outward | time/case ms | peak RSS MB | triangle quality | "
    "smoothness (dihedral deg) | volume ratio | mean signed dist mm | triangles |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hippocampus", type=int, default=-1, help="hippocampus cases (-1: all 260 files)")
    parser.add_argument("--kits", type=int, default=10, help="KiTS19 cases (-1: all)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-write", action="store_true", help="print only; leave the docs page alone")
    args = parser.parse_args(argv)

    sections, verdicts = [], []
    for dataset, title in DATASETS.items():
        count = args.kits if dataset == "kits" else args.hippocampus
        if count == 0:
            continue
        results, lines = {}, [f"### {title}", "", HEADER]
        for method in args.methods:
            why = available(method)
            if why:
                print(f"{title}: {NAMES[method]} skipped: {why}", file=sys.stderr)
                lines.append(f"| {NAMES[method]} | {why} |||||||||||")
                continue
            results[method] = run_worker(method, dataset, count, args.data)
            lines.append(format_row(method, results[method]))
            print(f"{title}: {lines[-1]}", flush=True)
        if "imagetomesh" in results:
            ours = results["imagetomesh"]
            others = {m: r for m, r in results.items() if m != "imagetomesh"}
            best = max(others, key=lambda m: np.mean(others[m]["dice"]), default=None)
            tight = all(ours["watertight"]) and all(ours["outward"])
            checks = [f"100 % watertight and outward: {'yes' if tight else 'NO'}"]
            if best:
                ok = np.mean(ours["dice"]) >= np.mean(others[best]["dice"])
                checks.append(f"Dice >= best contender ({NAMES[best]}): {'yes' if ok else 'NO'}")
            if "slicer" in results:
                ok = ours["seconds"] <= results["slicer"]["seconds"]
                checks.append(f"time <= Slicer's conversion: {'yes' if ok else 'NO'}")
            verdicts.append(f"{title}: " + "; ".join(checks))
            lines += ["", f"n = {ours['n']} labels. " + "; ".join(checks) + "."]
        sections.append("\n".join(lines))
    print("\n".join(verdicts))
    if not args.no_write:
        write_doc(sections, args)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if verdicts and all("NO" not in v for v in verdicts) else 1


READING = """How to read it. Dice against the label and smoothness pull against each other: the staircase
of the voxels is what the label says, so any smoothing that removes it moves the surface off some
voxel centres, most on structures a few voxels thick (the hippocampus). `mesh-from-label` runs the
same filter as Slicer (`--smoothing F` is Slicer's smoothing factor: same pass band, same
`20 + 40 F` iterations, the same vertices) but defaults to F = 0.18 instead of Slicer's 0.5. Against
marching cubes + Taubin that gives a marginally higher Dice, a marginally rougher surface (about half
a degree more mean dihedral angle) and similar or slightly longer times; Slicer's default is much
smoother and loses several points of Dice, and takes two to three times as long. Surface nets' constrained smoothing shrinks the surface (volume
ratio below 1) and its output has non-manifold edges and vertices where voxels touch along an edge
or a corner. Slicer's surfaces are closed manifolds but fail the orientation check on some labels
(the "outward" column: some components, cavities or small pieces, face the wrong way; not
investigated further). Times are single-threaded on a shared machine: compare within a table.
Peak RSS is the whole worker process (libraries, the cases read, the meshes), so it mostly shows
what each tool imports; the scaling benchmark below measures memory where it matters.
For images much bigger than the structure, see `Testing/benchmarks/mesh_from_label_scaling.py`
(time and peak memory of the whole command from 128^3 to 600^3)."""


def write_doc(sections: list[str], args) -> None:
    import platform
    import re

    intro = (__doc__ or "").split("\n\n    OMP_NUM_THREADS")[0].split("\n", 1)[1].strip()
    intro = re.sub(r":func:`([^`]+)`", r"`\1`", intro).replace("``", "`")  # reST -> Markdown
    command = (
        "OMP_NUM_THREADS=1 IMAGETOMESH_THREADS=1 .venv/bin/python Testing/benchmarks/mesh_from_label_side_by_side.py"
    )
    flags = f" --hippocampus {args.hippocampus} --kits {args.kits}"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(
        "# `mesh-from-label` against the tools users would pick instead\n\n"
        f"Generated by `{command}{flags}` (one thread, {platform.machine()}, {time.strftime('%Y-%m-%d')}); "
        "do not edit by hand.\n\n" + intro + "\n\n" + READING + "\n\n" + "\n\n".join(sections) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
