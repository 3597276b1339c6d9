"""Print wall time and peak memory of one `segment` call that meshes every organ of a whole head-and-neck CT.

Usage: python Testing/benchmarks/ct_segment_benchmark.py [--model unet-headneck-ct] [--repeats 3] [--case CT] [--isa avx2]
    [--stages]

Inputs: the bundled held-out case as stored (128 x 128 x 128 at 3.9 x 3.9 x 2.5 mm; ``--case`` another CT, e.g.
../shared/data/openkbp-ct/imagesTr/openkbp_116.nii.gz, whose shoulders make the widest scan grid of the dataset,
run in two windows) and the same scan as a clinician's CT would be: resampled to a 512 x 512 grid at 0.98 mm
in-plane (the 500 mm field of view) with 1.25 mm slices (about 33 million voxels, int16). Each is one whole command
in a fresh process (start-up and model loading included), as a user runs it. Target (issue 16): <= 15 s wall and
<= 3 GB peak for all seven organs on the 2-core reference machine.

``--isa avx2`` runs the commands as on a CPU with AVX2 and no AVX-512 (the AMD EPYC machines this target was missed on
in their slow hours): PyTorch's own kernels (``ATEN_CPU_CAPABILITY``) and oneDNN's (``ONEDNN_MAX_CPU_ISA``) are capped
to AVX2, so the U-Nets run in float32 as they do there. The clock and caches stay this machine's: a like-for-like
comparison of two versions of the code on one machine, not those machines' times.

``--stages`` then runs each input once more through ``segment_stages.py`` and prints where that call's wall time
went (start-up, imports, model, reading, the scan grid, the U-Nets, the organs, writing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CASE = REPO / "Resources" / "SampleData" / "headneck-ct" / "openkbp_082.nii.gz"


#: Runs the command given after it and prints its peak resident memory (kB). A small launcher: a child's
#: peak counts the memory of the process it was forked from, so the benchmark's own must not be the parent.
MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def clinical_copy(path: Path, out: Path) -> Path:
    """The scan resampled to 512 x 512 in-plane (same field of view) and half its slice spacing, int16 HU."""
    from imagetomesh.io.images import read_image, write_image
    from imagetomesh.preprocessing import resample_volume

    image = read_image(path)
    extent = image.size_ijk * image.spacing
    size = np.array([512, 512, int(round(extent[2] / (image.spacing[2] / 2)))])
    copy = resample_volume(image, extent / size, size, fill=-1000.0)
    return write_image(copy.with_array(np.round(copy.array).astype(np.int16)), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet-headneck-ct")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", type=Path, default=CASE, help="the CT to segment (default: the bundled case)")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native", help="instruction sets (see above)")
    parser.add_argument("--stages", action="store_true", help="also print each input's stages (see above)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.isa == "avx2":
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    from imagetomesh.io.images import read_image

    stored = " x ".join(str(n) for n in read_image(args.case).size_ijk)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = {
            f"as stored ({stored})": args.case,
            "clinical (512 x 512, 0.98 mm)": clinical_copy(args.case, tmp / "big.nii.gz"),
        }
        print(f"{'input':<34}{'best wall s':>12}{'peak GB':>10}")
        for label, path in inputs.items():
            out = tmp / label.split()[0]
            out.mkdir()
            walls, peak = [], 0.0
            for _ in range(args.repeats):
                command = [
                    sys.executable,
                    "-m",
                    "imagetomesh.cli",
                    "segment",
                    str(path),
                    "--model",
                    args.model,
                    "-o",
                    str(out),
                ]
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True, env=env
                )
                walls.append(time.perf_counter() - start)
                peak = max(peak, int(done.stdout.strip().splitlines()[-1]) / 1024**2)
            print(f"{label:<34}{min(walls):>12.1f}{peak:>10.2f}", flush=True)
        if args.stages:
            print_stages(
                {label: stages(path, args.model, tmp / label.split()[0], env) for label, path in inputs.items()}
            )


def stages(path: Path, model: str, out: Path, env: dict) -> dict[str, float]:
    """``{stage: seconds}`` of one ``segment`` call on ``path`` (``segment_stages.py``), ``python`` the
    interpreter's start: the call's wall time less the stages its script measured."""
    script = Path(__file__).with_name("segment_stages.py")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script), str(path), "--model", model, "-o", str(out)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - start
    measured = dict(
        (name, float(seconds))
        for name, seconds in (line.split("\t") for line in done.stdout.splitlines() if "\t" in line)
    )
    return {"python": wall - sum(measured.values()), **measured, "whole call": wall}


def print_stages(by_input: dict[str, dict[str, float]]) -> None:
    """One row per stage, one column of seconds per input."""
    labels = list(by_input)
    print(f"\n{'stage (s)':<16}" + "".join(f"{label.split()[0]:>12}" for label in labels))
    for stage in by_input[labels[0]]:
        print(f"{stage:<16}" + "".join(f"{by_input[label][stage]:>12.2f}" for label in labels))


if __name__ == "__main__":
    main()
