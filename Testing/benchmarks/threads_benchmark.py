"""Print wall seconds of a DALS fit and of `segment` calls at 1 and 2 threads and at the default
(:mod:`imagetomesh.threads`), on an idle machine and on one loaded by a busy process per core.

Usage: python Testing/benchmarks/threads_benchmark.py [--repeats 3] [--models unet-hippocampus voxel2mesh-hippocampus]

Target (issue 18): the default within 1.1x of the best setting idle and 1.3x loaded. Each setting runs
in a fresh process (threads are fixed at start-up), the settings interleaved round by round; the best of
``--repeats`` rounds is shown.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "Resources" / "SampleData"


def _busy(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def timed(command: list[str], threads: int | None, repeats: int) -> float:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "IMAGETOMESH_THREADS")
    }
    if threads is not None:
        env["IMAGETOMESH_THREADS"] = str(threads)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def interleaved(command: list[str], repeats: int) -> tuple[float, float, float]:
    """Best wall seconds at 1 thread, 2 threads and the default, run round by round (1, 2, default, 1, ...)
    so that a drift of the machine's load between runs affects every setting alike."""
    best = {1: float("inf"), 2: float("inf"), None: float("inf")}
    for _ in range(repeats):
        for threads in best:
            best[threads] = min(best[threads], timed(command, threads, 1))
    return best[1], best[2], best[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["unet-hippocampus", "voxel2mesh-hippocampus"])
    args = parser.parse_args()
    exe = [sys.executable, "-m", "imagetomesh.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        subprocess.run(
            [*exe, "demo", "-o", str(out / "demo")], check=True, capture_output=True
        )  # writes the kidney curves the fit uses
        curves = out / "demo" / "kidney_left_curves.mrk.json"
        jobs = {
            "fit curves (dals-kidney)": [
                *exe,
                "fit",
                "curves",
                str(curves),
                "--prior",
                "dals-kidney",
                "-o",
                str(out / "f.stl"),
            ]
        }
        for model in args.models:
            jobs[f"segment {model}"] = [
                *exe,
                "segment",
                str(SAMPLES / "hippocampus" / "hippocampus_024.nii.gz"),
                "--model",
                model,
                "-o",
                str(out / f"{model}.stl"),
            ]
        print(f"{'job':<40}{'load':>8}{'1 thread':>10}{'2 threads':>11}{'default':>9}{'default/best':>14}")
        for load in ("idle", "loaded"):
            stop = multiprocessing.Event()
            workers = []
            if load == "loaded":
                workers = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(os.cpu_count() or 2)]
                for w in workers:
                    w.start()
            try:
                for name, command in jobs.items():
                    one, two, default = interleaved(command, args.repeats)
                    print(
                        f"{name:<40}{load:>8}{one:>10.1f}{two:>11.1f}{default:>9.1f}{default / min(one, two):>13.2f}x",
                        flush=True,
                    )
            finally:
                stop.set()
                for w in workers:
                    w.join()


if __name__ == "__main__":
    main()
