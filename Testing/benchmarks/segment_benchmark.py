"""Print `segment` speed and memory: per case in a batch, one whole CLI call, peak memory.

Usage: python Testing/benchmarks/segment_benchmark.py [--models NAME ...] [--cases 16] [--device cpu|cuda]

Targets (issue 3): batch <= 0.5 s per case on CPU; one whole call (start-up included) <= 4 s
wall; peak memory <= 2 GB. Timings on a shared machine are noisy: the best of 3 repeats is shown.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "hippocampus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=["unet-hippocampus", "voxel2mesh-hippocampus", "pixel2mesh3d-hippocampus"]
    )
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    images = [DATA / "imagesTr" / f"{c}.nii.gz" for c in split["test"][: args.cases]]
    single = REPO / "Resources" / "SampleData" / "hippocampus" / "hippocampus_024.nii.gz"
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            # 1. batch, model loaded once, in this process
            import torch

            from imagetomesh.inference import Segmenter
            from imagetomesh.io.images import read_image

            segmenter = Segmenter(model, args.device)
            volumes = [read_image(p) for p in images]
            segmenter.segment_batch(volumes[:2])
            best = float("inf")
            for _ in range(3):
                if args.device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                for start in range(0, len(volumes), 8):
                    segmenter.segment_batch(volumes[start : start + 8])
                if args.device == "cuda":
                    torch.cuda.synchronize()
                best = min(best, (time.perf_counter() - t) / len(volumes))
            # 2. one whole CLI call on one image, start-up included, and its peak memory
            walls = []
            for _ in range(3):
                t = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "imagetomesh.cli",
                        "segment",
                        str(single),
                        "--model",
                        model,
                        "--device",
                        args.device,
                        "-o",
                        str(Path(tmp) / "out.stl"),
                    ],
                    check=True,
                    capture_output=True,
                )
                walls.append(time.perf_counter() - t)
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(
                f"{model:<28} {args.device}: batch {best:.3f} s/case ({len(volumes)} cases)   "
                f"whole call {min(walls):.2f} s wall   peak memory {peak_mb:.0f} MB"
            )


if __name__ == "__main__":
    main()
