"""Same meshes before and after a change to the graph layers (issue 14, point 5).

Usage (CPU, one thread):
    python tools/compare_graph_meshes.py save    REFERENCE_DIR   # before the change
    python tools/compare_graph_meshes.py compare REFERENCE_DIR   # after it
    python tools/compare_graph_meshes.py time    [--repeats 5] [--model voxel2mesh-hippocampus]  # seconds per case

``save`` runs :class:`imagetomesh.inference.Segmenter` of every graph-based bundled model on the first
three validation cases of ``../shared/data/hippocampus`` (split ``Resources/Splits/hippocampus.json``)
and a DALS fit (``fit_points``, 300 surface-voxel points of label 1 of the first case, fixed 60
iterations), and writes each mesh to ``REFERENCE_DIR/<name>.npz``. ``compare`` recomputes them
and prints, per mesh, whether the faces are identical and the largest vertex distance in mm
against the tolerance (1e-4 mm for the networks, 1e-3 mm for the fit); it exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "hippocampus"
MODELS = ("voxel2mesh-hippocampus", "pixel2mesh3d-hippocampus", "implicitmeshnet-hippocampus")
FIT_PRIOR, FIT_POINTS, FIT_ITERATIONS = "dals-hippocampus", 300, 60
TOLERANCE_MM = {"segment": 1e-4, "fit": 1e-3}


def _cases(n: int = 3) -> list[str]:
    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    return split["val"][:n]


def _fit_points() -> np.ndarray:
    """``(FIT_POINTS, 3)`` LPS mm: centres of label-1 voxels with a background 6-neighbour."""
    from scipy import ndimage

    from imagetomesh.core.volume import transform_points
    from imagetomesh.io.images import read_labelmap

    label = read_labelmap(DATA / "labelsTr" / f"{_cases(1)[0]}.nii.gz")
    mask = np.asarray(label.array) == 1
    surface = np.argwhere(mask & ~ndimage.binary_erosion(mask))[:, ::-1]  # (k, j, i) -> (i, j, k)
    chosen = surface[np.random.default_rng(0).choice(len(surface), FIT_POINTS, replace=False)]
    return transform_points(label.index_to_lps, chosen.astype(np.float64))


def meshes() -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """``{name: (kind, vertices, faces)}`` for every segment case and the DALS fit."""
    from imagetomesh.fitting import fit_points
    from imagetomesh.inference import Segmenter
    from imagetomesh.io.images import read_image

    out = {}
    for model in MODELS:
        segmenter = Segmenter(model, "cpu")
        for case in _cases():
            mesh = segmenter.segment_batch([read_image(DATA / "imagesTr" / f"{case}.nii.gz")])[0]
            out[f"{model}__{case}"] = ("segment", mesh.vertices, mesh.faces)
    mesh = fit_points(_fit_points(), FIT_PRIOR, iterations=FIT_ITERATIONS, device="cpu")
    out[f"{FIT_PRIOR}__fit_points"] = ("fit", mesh.vertices, mesh.faces)
    return out


def save(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (kind, verts, faces) in meshes().items():
        np.savez(folder / f"{name}.npz", kind=kind, vertices=verts, faces=faces)
        print(f"saved {name}: {len(verts)} vertices, {len(faces)} faces")


def compare(folder: Path) -> int:
    failures = 0
    for name, (kind, verts, faces) in meshes().items():
        ref = np.load(folder / f"{name}.npz")
        same_faces = ref["faces"].shape == faces.shape and bool(np.array_equal(ref["faces"], faces))
        dist = float(np.linalg.norm(ref["vertices"] - verts, axis=1).max()) if same_faces else float("nan")
        ok = same_faces and dist <= TOLERANCE_MM[kind]
        failures += not ok
        print(
            f"{'OK  ' if ok else 'FAIL'} {name}: faces identical={same_faces} ({len(faces)}), "
            f"max vertex distance {dist:.3g} mm (tolerance {TOLERANCE_MM[kind]:g} mm)"
        )
    return 1 if failures else 0


def timing(model: str, repeats: int) -> None:
    from imagetomesh.inference import Segmenter
    from imagetomesh.io.images import read_image

    segmenter = Segmenter(model, "cpu")
    volumes = [read_image(DATA / "imagesTr" / f"{c}.nii.gz") for c in _cases()]
    segmenter.segment_batch(volumes[:1])  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for v in volumes:
            segmenter.segment_batch([v])
        walls.append((time.perf_counter() - t) / len(volumes))
        cpus.append((time.process_time() - c) / len(volumes))
    print(
        f"{model} Segmenter, CPU, {torch.get_num_threads()} thread(s), seconds per case over "
        f"{repeats} runs of {len(volumes)} cases: wall best {min(walls):.3f} median {float(np.median(walls)):.3f}; "
        f"CPU time best {min(cpus):.3f} median {float(np.median(cpus)):.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("save", "compare", "time"))
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="voxel2mesh-hippocampus", help="the model that `time` runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.action == "time":
        timing(args.model, args.repeats)
        return 0
    if args.folder is None:
        parser.error("save and compare need REFERENCE_DIR")
    if args.action == "save":
        save(args.folder)
        return 0
    return compare(args.folder)


if __name__ == "__main__":
    sys.exit(main())
