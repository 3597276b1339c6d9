"""Time and peak memory of ``imagetomesh mesh-from-label`` as the image grows around a small object.

A real hippocampus label (``hippocampus_001``, 35 x 51 x 35 voxels) is padded into the centre of an
``N^3`` volume of zeros (uint8, as labelmaps are usually stored) and written to a temporary
``.nii.gz``; then, for each ``N``, the whole command (``--label 1``; imports, reading, meshing,
checking, writing) runs in a fresh Python process, which reports its wall time and its peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). The issue's goal: 600^3 within
3 GB, and the cost dominated by reading the file rather than by the work around a small object.

    OMP_NUM_THREADS=1 IMAGETOMESH_THREADS=1 .venv/bin/python Testing/benchmarks/mesh_from_label_scaling.py
    .venv/bin/python Testing/benchmarks/mesh_from_label_scaling.py --sizes 128 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

#: Run in the child: the CLI end to end, then one JSON line with the wall time and the peak RSS.
_CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from imagetomesh.cli import main
rc = main(sys.argv[1:])
print(json.dumps(dict(rc=rc, seconds=time.perf_counter() - start,
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      torch="torch" in sys.modules)))
"""


def padded_label(source: Path, size: int, path: Path) -> None:
    """Write ``source``'s label into the centre of a ``size^3`` uint8 volume of zeros at ``path``."""
    image = sitk.ReadImage(str(source))
    small = sitk.GetArrayFromImage(image).astype(np.uint8)
    big = np.zeros((size,) * 3, np.uint8)
    start = [(size - n) // 2 for n in small.shape]
    big[tuple(slice(s, s + n) for s, n in zip(start, small.shape))] = small
    out = sitk.GetImageFromArray(big)
    out.SetSpacing(image.GetSpacing())
    sitk.WriteImage(out, str(path), useCompression=True)


def run_command(args: list[str]) -> dict:
    """The CLI in a fresh process: ``{rc, seconds, peak_mb, torch}`` (stdout's last line)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mesh-from-label failed: {done.stderr.strip()[-500:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    result["report"] = next((line for line in done.stdout.splitlines() if line.startswith("wrote ")), "")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 384, 512, 600])
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the fastest is shown")
    parser.add_argument("--label", type=Path, default=DATA / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    parser.add_argument("--limit-mb", type=float, default=3000.0, help="peak memory allowed at every size")
    args = parser.parse_args(argv)
    if not args.label.exists():
        print(f"missing {args.label}; pass --label", file=sys.stderr)
        return 2

    ok = True
    print(f"{'size':>6} {'voxels':>12} {'file MB':>8} {'time s':>7} {'peak MB':>8} torch  report")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"padded_{size}.nii.gz"
            padded_label(args.label, size, path)
            runs = [
                run_command(["mesh-from-label", str(path), "--label", "1", "-o", str(Path(tmp) / "out.stl")])
                for _ in range(max(1, args.repeats))
            ]
            best = min(runs, key=lambda r: r["seconds"])
            peak = max(r["peak_mb"] for r in runs)
            ok &= peak <= args.limit_mb and not best["torch"]
            print(
                f"{size:>4}^3 {size**3:>12,d} {path.stat().st_size / 1e6:>8.2f} {best['seconds']:>7.2f} "
                f"{peak:>8.0f} {'yes' if best['torch'] else 'no':>5}  {best['report']}",
                flush=True,
            )
            path.unlink()
    print("PASS" if ok else f"FAIL (peak above {args.limit_mb:g} MB or torch imported)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
