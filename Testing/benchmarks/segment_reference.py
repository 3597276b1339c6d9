"""Save, or compare against, the meshes ``inference.Segmenter`` makes with every bundled segmentation model.

Usage:
    python Testing/benchmarks/segment_reference.py save DIR [--data ../shared/data/hippocampus] [--cases 5]
    python Testing/benchmarks/segment_reference.py compare DIR [--data ...] [--cases 5]

A refactoring guard: run ``save`` before a change and ``compare`` after it. Cases: the first
``--cases`` of the ``val`` split in ``Resources/Splits/hippocampus.json``, segmented together
(one batch) on the CPU with every bundled model whose kind segments images (DALS is a prior, not a
segmenter), NUDF also with ``open_surface``. ``DIR/<model>[@open].npz`` holds each case's LPS
vertices and faces. ``compare`` prints, per model, whether every case's faces are identical and
the largest vertex difference in mm (limit 1e-4 mm); where the faces differ it prints the
symmetric Chamfer distance instead (limit 1e-3 mm). Exit status 1 when a limit is broken.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "hippocampus"
SEGMENTING_KINDS = ("unet", "voxel2mesh", "pixel2mesh3d", "implicitmeshnet", "nudf")
VERTEX_TOL_MM = 1e-4
CHAMFER_TOL_MM = 1e-3


def _runs():
    """``(label, model name, open_surface)`` for every bundled segmentation model."""
    from imagetomesh.weights import read_card
    from imagetomesh.zoo import RESOURCES

    for folder in sorted((RESOURCES / "Models").iterdir()):
        kind = read_card(folder)["kind"]
        if kind in SEGMENTING_KINDS:
            yield folder.name, folder.name, False
            if kind == "nudf":
                yield folder.name + "@open", folder.name, True


def _segment(data: Path, count: int):
    """``{label: [(vertices (N, 3) float32 LPS mm, faces (F, 3) int64) per case]}``."""
    import torch

    from imagetomesh.inference import Segmenter
    from imagetomesh.io.images import read_image
    from imagetomesh.training.msd import read_msd

    torch.set_num_threads(1)
    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    cases = read_msd(data)
    ids = split["val"][:count]
    volumes = [read_image(cases[c].image) for c in ids]
    out = {}
    for label, name, open_surface in _runs():
        meshes = Segmenter(name, "cpu", open_surface=open_surface).segment_batch(volumes)
        out[label] = [(m.vertices, m.faces) for m in meshes]
        print(f"{label}: {len(meshes)} cases, {sum(len(m.vertices) for m in meshes)} vertices", flush=True)
    return ids, out


def _chamfer(va, fa, vb, fb) -> float:
    from imagetomesh.core.mesh import Mesh
    from imagetomesh.metrics import chamfer_mm

    return chamfer_mm(Mesh(va, fa), Mesh(vb, fb))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("save", "compare"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cases", type=int, default=5)
    args = parser.parse_args()
    ids, results = _segment(args.data, args.cases)
    if args.mode == "save":
        args.folder.mkdir(parents=True, exist_ok=True)
        for label, meshes in results.items():
            arrays = {"cases": np.array(ids)}
            for (v, f), case in zip(meshes, ids):
                arrays[f"{case}_vertices"], arrays[f"{case}_faces"] = v, f
            np.savez(args.folder / f"{label}.npz", **arrays)
        print(f"saved {len(results)} runs x {len(ids)} cases to {args.folder}")
        return 0
    ok = True
    for label, meshes in results.items():
        ref = np.load(args.folder / f"{label}.npz")
        if list(ref["cases"]) != list(ids):
            print(f"{label}: reference cases {list(ref['cases'])} differ from {ids}")
            ok = False
            continue
        same_faces, max_dv, chamfers = True, 0.0, []
        for (v, f), case in zip(meshes, ids):
            rv, rf = ref[f"{case}_vertices"], ref[f"{case}_faces"]
            if f.shape == rf.shape and np.array_equal(f, rf) and v.shape == rv.shape:
                max_dv = max(max_dv, float(np.abs(v.astype(np.float64) - rv).max()))
            else:
                same_faces = False
                chamfers.append(_chamfer(v, f, rv, rf))
        if same_faces:
            good = max_dv <= VERTEX_TOL_MM
            print(
                f"{label:34s} faces identical in {len(ids)}/{len(ids)} cases, max |dv| = {max_dv:.3g} mm "
                f"({'OK' if good else 'FAIL'}, limit {VERTEX_TOL_MM:g})"
            )
        else:
            worst = max(chamfers)
            good = worst <= CHAMFER_TOL_MM
            print(
                f"{label:34s} faces differ in {len(chamfers)}/{len(ids)} cases; max Chamfer {worst:.3g} mm, "
                f"max |dv| elsewhere {max_dv:.3g} mm ({'OK' if good else 'FAIL'}, limit {CHAMFER_TOL_MM:g})"
            )
        ok &= good
    print("ALL IDENTICAL WITHIN LIMITS" if ok else "DIFFERENCES BEYOND LIMITS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
