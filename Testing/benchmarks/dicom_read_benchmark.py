"""Print the wall time and peak memory of reading a clinical-size DICOM CT series, even and gantry-tilted.

Usage: python Testing/benchmarks/dicom_read_benchmark.py [--slices 200] [--tilt 20] [--repeats 2]

Writes two series of 512 x 512 slices (0.7 mm pixels, the table stepping 1.25 mm) into a temporary folder: one
acquired straight, one with the gantry tilted ``--tilt`` degrees (the slice planes turned about the left-right
axis, which ITK alone stacks in the wrong place and :mod:`imagetomesh.io.dicom_geometry` resamples onto a
regular grid). Each is read by ``read_image`` in a fresh process; the peak resident memory of that process
includes Python's and the library's imports (about 0.4 GB), the same for both.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Testing" / "library"))

from dicom_files import write_series  # noqa: E402

READ = (
    "import resource, sys, time, warnings; warnings.simplefilter('ignore'); "
    "from imagetomesh.io.images import read_image; t = time.perf_counter(); v = read_image(sys.argv[1]); "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, *v.array.shape)"
)


def ct_like(points: np.ndarray) -> np.ndarray:
    """HU of a water cylinder (radius 150 mm along S) in air, with some texture: ``points (..., 3)`` LPS mm."""
    radius = np.hypot(points[..., 0], points[..., 1])
    return np.where(radius < 150.0, 40.0 * np.sin(points[..., 0] / 7.0) * np.cos(points[..., 2] / 5.0), -1000.0)


def write(folder: Path, slices: int, tilt_deg: float) -> None:
    angle = np.radians(tilt_deg)
    positions = np.stack([np.full(slices, -179.0), np.full(slices, -179.0), np.arange(slices) * 1.25], axis=1)
    orientation = ((1.0, 0.0, 0.0), (0.0, np.cos(angle), -np.sin(angle)))
    write_series(folder, positions, orientation, ct_like, shape=(512, 512), spacing=(0.7, 0.7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--tilt", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'series':28s} {'best read s':>12s} {'peak GB':>8s}  voxels (D, H, W)")
        for name, tilt in (("even", 0.0), (f"gantry tilted {args.tilt:g} degrees", args.tilt)):
            folder = Path(tmp) / name.replace(" ", "_")
            write(folder, args.slices, tilt)
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run(
                    [sys.executable, "-c", READ, str(folder)], check=True, capture_output=True, text=True
                ).stdout.split()
                runs.append((float(out[0]), int(out[1]) / 1024**2, out[2:]))
            best = min(runs)
            print(f"{name:28s} {best[0]:12.2f} {max(r[1] for r in runs):8.2f}  {' x '.join(best[2])}", flush=True)


if __name__ == "__main__":
    main()
