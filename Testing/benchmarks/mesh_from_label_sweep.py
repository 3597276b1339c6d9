"""Acceptance sweep: labelmap_to_mesh on real labels must be watertight with Dice >= 0.95.

For every hippocampus label (1, 2 and their union, 208 cases) and the first ``--kits`` KiTS19
kidney masks (label 1 + 2), the labelmap is meshed with ``labelmap_to_mesh`` and rasterised back
onto its own grid; prints min / mean Dice, the watertight count and the time per case, for each
smoothing factor given.

    .venv/bin/python Testing/benchmarks/mesh_from_label_sweep.py                 # default smoothing
    .venv/bin/python Testing/benchmarks/mesh_from_label_sweep.py --smoothing 0.3 0.5 --kits 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from imagetomesh.core import Volume
from imagetomesh.geometry.isosurface import DEFAULT_SMOOTHING, labelmap_to_mesh
from imagetomesh.geometry.quality import check_mesh
from imagetomesh.geometry.raster import rasterize_mesh
from imagetomesh.metrics import dice

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def read(path: Path) -> tuple[np.ndarray, dict]:
    image = sitk.ReadImage(str(path))
    geometry = dict(
        spacing=image.GetSpacing(), origin=image.GetOrigin(), direction=np.array(image.GetDirection()).reshape(3, 3)
    )
    return sitk.GetArrayFromImage(image), geometry


def run(name: str, cases, smoothing: float, decimation: float) -> bool:
    """cases: iterable of (case id, mask thunk). Prints one summary line; True when all pass."""
    dices, watertight, times, worst = [], 0, [], ("", 1.0)
    for case_id, load in cases:
        mask, geometry = load()
        volume = Volume(mask.astype(np.uint8), **geometry)
        start = time.perf_counter()
        mesh = labelmap_to_mesh(volume, smoothing=smoothing, decimation=decimation)
        times.append(time.perf_counter() - start)
        check = check_mesh(mesh, self_intersections=False)
        watertight += bool(check.watertight and check.manifold and check.outward)
        d = dice(rasterize_mesh(mesh, volume), mask)
        dices.append(d)
        if d < worst[1]:
            worst = (case_id, d)
    dices = np.array(dices)
    ok = bool(dices.min() >= 0.95 and watertight == len(dices))
    print(
        f"{name:<22} smoothing={smoothing:<4g} n={len(dices):<4d} Dice min={dices.min():.4f} "
        f"mean={dices.mean():.4f} (worst {worst[0]}) watertight={watertight}/{len(dices)} "
        f"({100 * watertight / len(dices):.0f}%) mesh time/case={np.mean(times) * 1000:.1f} ms "
        f"(max {np.max(times) * 1000:.0f} ms) {'PASS' if ok else 'FAIL'}",
        flush=True,
    )
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoothing", type=float, nargs="+", default=[DEFAULT_SMOOTHING])
    parser.add_argument("--decimation", type=float, default=0.0)
    parser.add_argument("--kits", type=int, default=10, help="number of KiTS19 cases (0: none, -1: all)")
    parser.add_argument("--hippocampus", type=int, default=-1, help="number of hippocampus cases (-1: all)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)

    hippo_files = sorted((args.data / "hippocampus" / "labelsTr").glob("*.nii.gz"))
    if args.hippocampus >= 0:
        hippo_files = hippo_files[: args.hippocampus]
    kits_files = sorted((args.data / "kits19-masks").glob("case_*.nii.gz"))
    if args.kits >= 0:
        kits_files = kits_files[: args.kits]
    hippo = [(p.name, read(p)) for p in hippo_files]

    all_ok = True
    for smoothing in args.smoothing:
        for label, select in (("1", lambda a: a == 1), ("2", lambda a: a == 2), ("1+2", lambda a: a > 0)):
            if not hippo:
                break
            cases = [(n, (lambda a=a, g=g, s=select: (s(a), g))) for n, (a, g) in hippo]
            all_ok &= run(f"hippocampus label {label}", cases, smoothing, args.decimation)
        if kits_files:
            cases = []
            for path in kits_files:

                def load(path=path):
                    array, geometry = read(path)
                    return array > 0, geometry

                cases.append((path.name, load))
            all_ok &= run("kits19 kidneys 1+2", cases, smoothing, args.decimation)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
