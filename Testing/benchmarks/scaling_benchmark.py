"""Time and peak memory of `segment`, `refine` and `fit points` as their inputs grow (issue 18).

Usage:
    python Testing/benchmarks/scaling_benchmark.py [--sections volumes points images]
        [--sizes 128,256,400,600] [--points 500,2500,10000,50000,250000] [--images 10,50,200]

Each command is one whole CLI call in a fresh process (start-up and model loading included), as a user
runs it; its peak resident memory is the launcher's ``RUSAGE_CHILDREN`` maximum. Prints one table per
section (not a timed unit test: run it by hand; set OMP_NUM_THREADS / IMAGETOMESH_THREADS to what the
machine can spare).

Sections:
- ``volumes``: N^3 images for N in ``--sizes`` (target: 600^3 within 3 GB).
  ``segment roi``: the bundled hippocampus crop inside an N^3 field of 1 mm noise (a whole head as a
  patch model sees it), ``unet-hippocampus --roi`` around the hippocampus (what a user runs);
  ``segment whole``: the same image with ``--allow-mismatch`` (the whole image through preprocessing);
  ``segment CT``: the bundled head-and-neck CT resampled to N^3 (same field of view), ``unet-headneck-ct``;
  ``refine``: the example CT's three organ masks resampled to N^3, ``--label 2`` (left kidney) with
  ``dals-kidney``.
- ``points``: ``fit points`` with ``dals-kidney`` to K points sampled on the example CT's left kidney
  (area-uniform, seed 1), K in ``--points``, with the default ``--max-points`` and with every point
  (``--max-points 0``); Dice of the fit against the kidney's mask.
- ``images``: ``segment`` of M copies of the bundled hippocampus crop with ``unet-hippocampus``, M in
  ``--images``, with ``--batch-size M`` (everything at once, as asked) and the default batch size.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "Resources" / "SampleData"
HIPPO = SAMPLES / "hippocampus" / "hippocampus_024.nii.gz"
HEADNECK = SAMPLES / "headneck-ct" / "openkbp_082.nii.gz"
ABDOMEN = SAMPLES / "ct-example"
CLI = [sys.executable, "-m", "imagetomesh.cli"]

#: Runs the command given after it and prints its peak resident memory (kB): a child's peak would count
#: the memory of the process it was forked from, so the benchmark's own must not be the parent.
MEASURE = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "sys.stderr.write(r.stderr[-400:] if r.returncode else ''); "
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measure(argv: list) -> tuple[float, float, int]:
    """``(wall s, peak GB, exit code)`` of one CLI call in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *CLI, *[str(a) for a in argv]], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    code, peak_kb = done.stdout.split()
    if int(code):
        print(f"  (exit {code}: {done.stderr.strip()[-300:]})", file=sys.stderr)
    return wall, int(peak_kb) / 1e6, int(code)


# --- inputs ----------------------------------------------------------------------------------------
def hippocampus_in_field(n: int, out: Path) -> tuple[Path, str]:
    """The bundled hippocampus crop at the centre of an ``n^3`` field of uniform noise (0..50) at its 1 mm
    spacing, written uncompressed; and the ``--roi`` box around the crop (8 mm margin)."""
    from imagetomesh.core import Volume
    from imagetomesh.io.images import read_image, write_image

    crop = read_image(HIPPO)
    field = np.random.default_rng(0).random((n, n, n), dtype=np.float32) * 50.0
    start = [(n - s) // 2 for s in crop.shape]
    field[tuple(slice(a, a + s) for a, s in zip(start, crop.shape))] = crop.array
    origin = crop.origin - crop.direction @ (np.array(start[::-1], float) * crop.spacing)
    write_image(Volume(field, crop.spacing, origin, crop.direction), out)
    lo = crop.index_to_lps[:3, :3] @ np.full(3, -8.0) + crop.origin
    hi = crop.index_to_lps[:3, :3] @ (crop.size_ijk + 8.0) + crop.origin
    return out, ",".join(f"{x:.1f}" for x in np.r_[lo, hi])


def resampled(volume, n: int, mode: str, fill: float, dtype, out: Path) -> Path:
    """``volume`` on an ``n^3`` lattice over the same field of view, written uncompressed."""
    from imagetomesh.io.images import write_image
    from imagetomesh.preprocessing import resample_volume

    extent = volume.size_ijk * volume.spacing
    size = np.array([n, n, n])
    copy = resample_volume(volume, extent / size, size, mode=mode, fill=fill)
    return write_image(copy.with_array(np.round(copy.array).astype(dtype)), out)


def abdominal_labels():
    """The example CT's masks as one labelmap: 1 liver, 2 left kidney, 3 right kidney."""
    from imagetomesh.io.images import read_image

    first = read_image(ABDOMEN / "liver.nii.gz")
    labels = np.zeros(first.shape, np.uint8)
    for value, name in enumerate(("liver", "kidney_left", "kidney_right"), start=1):
        labels[read_image(ABDOMEN / f"{name}.nii.gz").array != 0] = value
    return first.with_array(labels)


# --- sections --------------------------------------------------------------------------------------
def volumes(sizes: list[int], tmp: Path) -> None:
    from imagetomesh.io.images import read_image

    print(f"\n{'N^3':>6}  {'command':<16}{'wall s':>9}{'peak GB':>9}")
    labels = abdominal_labels()
    ct = read_image(HEADNECK)
    for n in sizes:
        image, roi = hippocampus_in_field(n, tmp / f"mri{n}.nii")
        runs = {
            "segment roi": ["segment", image, "--model", "unet-hippocampus", "-o", tmp / "roi.stl", f"--roi={roi}"],
            "segment whole": ["segment", image, "--model", "unet-hippocampus", "-o", tmp / "w.stl", "--allow-mismatch"],
        }
        for name, argv in runs.items():
            wall, peak, _ = measure(argv)
            print(f"{n:>6}  {name:<16}{wall:>9.1f}{peak:>9.2f}", flush=True)
        image.unlink()
        scan = resampled(ct, n, "bilinear", -1000.0, np.int16, tmp / f"ct{n}.nii")
        organs = tmp / "organs"
        organs.mkdir(exist_ok=True)
        wall, peak, _ = measure(["segment", scan, "--model", "unet-headneck-ct", "-o", organs])
        print(f"{n:>6}  {'segment CT':<16}{wall:>9.1f}{peak:>9.2f}", flush=True)
        scan.unlink()
        label = resampled(labels, n, "nearest", 0.0, np.uint8, tmp / f"labels{n}.nii")
        wall, peak, _ = measure(["refine", label, "--label", "2", "--prior", "dals-kidney", "-o", tmp / "r.stl"])
        print(f"{n:>6}  {'refine kidney':<16}{wall:>9.1f}{peak:>9.2f}", flush=True)
        label.unlink()


def points(counts: list[int], tmp: Path) -> None:
    from imagetomesh.geometry.isosurface import labelmap_to_mesh
    from imagetomesh.io.images import read_labelmap
    from imagetomesh.io.meshes import read_mesh
    from imagetomesh.metrics import mesh_dice_iou, sample_surface

    mask = read_labelmap(ABDOMEN / "kidney_left.nii.gz")
    surface = labelmap_to_mesh(mask, smoothing=0.0)
    print(f"\n{'points':>8}  {'--max-points':<13}{'wall s':>9}{'peak GB':>9}{'Dice':>8}")
    for count in counts:
        csv = tmp / f"points{count}.csv"
        np.savetxt(csv, sample_surface(surface, count, seed=1), delimiter=",", header="x,y,z", comments="")
        for cap in ("default", "0"):
            if cap == "0" and count <= 10_000:
                continue  # the same fit as the default
            out = tmp / "fit.stl"
            extra = [] if cap == "default" else ["--max-points", cap]
            wall, peak, code = measure(["fit", "points", csv, "--prior", "dals-kidney", "-o", out, *extra])
            dice = mesh_dice_iou(read_mesh(out), mask)[0] if code == 0 else float("nan")
            print(f"{count:>8}  {cap:<13}{wall:>9.1f}{peak:>9.2f}{dice:>8.4f}", flush=True)
        csv.unlink()


def images(counts: list[int], tmp: Path) -> None:
    print(f"\n{'images':>7}  {'--batch-size':<13}{'wall s':>9}{'peak GB':>9}")
    folder = tmp / "images"
    folder.mkdir(exist_ok=True)
    out = tmp / "meshes"
    for count in counts:
        paths = []
        for k in range(count):
            paths.append(folder / f"h{k:04d}.nii.gz")
            if not paths[-1].exists():
                shutil.copy(HIPPO, paths[-1])
        for batch in (str(count), "default"):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            extra = [] if batch == "default" else ["--batch-size", batch]
            wall, peak, _ = measure(["segment", *paths, "--model", "unet-hippocampus", "-o", out, *extra])
            print(f"{count:>7}  {batch:<13}{wall:>9.1f}{peak:>9.2f}", flush=True)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["volumes", "points", "images"])
    parser.add_argument("--sizes", type=_ints, default=[128, 256, 400, 600])
    parser.add_argument("--points", type=_ints, default=[500, 2500, 10000, 50000, 250000])
    parser.add_argument("--images", type=_ints, default=[10, 50, 200])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "volumes" in args.sections:
            volumes(args.sizes, tmp)
        if "points" in args.sections:
            points(args.points, tmp)
        if "images" in args.sections:
            images(args.images, tmp)


if __name__ == "__main__":
    main()
