"""NUDF meshing cost and quality per case: seconds, peak memory, Chamfer / HD95 / accuracy / completion.

Usage:
    python Testing/benchmarks/nudf_meshing_benchmark.py [--model nudf-hippocampus] [--split val|test]
        [--limit N] [--open] [--meshing '{"poisson_depth": 7}'] [--threads 1]

Per case: wall and CPU seconds of ``Segmenter.segment`` (encoder, projection, Poisson, trimming,
repair; the model already loaded), the process's peak resident memory during that case (Linux:
the peak is reset through ``/proc/self/clear_refs`` before each case), and the metrics of
:func:`imagetomesh.metrics.evaluate_mesh` against the label. Tune meshing on ``val`` only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from imagetomesh.inference import Segmenter
from imagetomesh.io.images import read_image, read_labelmap
from imagetomesh.metrics import evaluate_mesh
from imagetomesh.training.msd import read_msd
from imagetomesh.zoo import load_model

REPO = Path(__file__).resolve().parents[2]


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="nudf-hippocampus", help="bundled name or model folder")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hippocampus")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--open", action="store_true")
    parser.add_argument("--meshing", default="{}", help="JSON overrides of the model's meshing config")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, "cpu")
    model.module.config.meshing = {**model.module.config.meshing, **json.loads(args.meshing)}
    segmenter = Segmenter(model, open_surface=args.open)
    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    cases = read_msd(args.data)
    rows = []
    for case_id in split[args.split][: args.limit]:
        image, label = read_image(cases[case_id].image), read_labelmap(cases[case_id].label)
        resettable = _reset_peak()
        started = time.perf_counter(), time.process_time()
        mesh = segmenter.segment(image)
        wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
        row = {"case": case_id, "wall_s": wall, "cpu_s": cpu, "peak_mb": _peak_mb(), "peak_is_per_case": resettable}
        scores = evaluate_mesh(mesh, label)
        row.update(
            {
                k: scores[k]
                for k in (
                    "chamfer_mm",
                    "hd95_mm",
                    "accuracy_p90_mm",
                    "completion@2mm",
                    "dice",
                    "watertight",
                    "vertices",
                )
            }
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = ("wall_s", "cpu_s", "peak_mb", "chamfer_mm", "hd95_mm", "accuracy_p90_mm", "completion@2mm", "dice")
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    summary["max_wall_s"] = float(max(r["wall_s"] for r in rows))
    summary["max_peak_mb"] = float(max(r["peak_mb"] for r in rows))
    summary["watertight_pct"] = 100.0 * float(np.mean([bool(r["watertight"]) for r in rows]))
    summary["cases"] = len(rows)
    print("summary " + json.dumps(summary))


if __name__ == "__main__":
    main()
