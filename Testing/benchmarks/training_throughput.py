"""Print CPU training throughput (optimiser steps per hour) of the U-Net and Voxel2Mesh: the way they trained
before issue 15 (fp32, nearest neighbours of the Chamfer terms by all pairwise distances) against now
(bf16 autocast, channels-last convolutions, k-d tree nearest neighbours), through the engine's own step;
for the mesh models also "frozen": now, with the bundled model's U-Net frozen (``cpu-v2-frozen``: only
the mesh decoder learns).

Usage: python Testing/benchmarks/training_throughput.py [--kinds unet voxel2mesh] [--steps 12] [--threads 1]

Each setting runs the engine's :func:`~imagetomesh.training.engine.optimiser_step` (augmented batch,
loss, backward, clipping, AdamW) of the named ``cpu`` config (``cpu-v2`` for Voxel2Mesh) on six
hippocampus training cases; the first two steps are warm-up, the rest are timed. Target (issue 15):
now at least 1.8x before on a CPU with native bf16 (avx512_bf16 or AMX); elsewhere autocast falls
back to fp32 and only the k-d tree helps. Shared machines are noisy:
run it on an otherwise idle machine and compare the printed ratio, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "hippocampus"
CONFIGS = {"unet": "cpu", "voxel2mesh": "cpu-v2", "pixel2mesh3d": "cpu-v2"}
KD_TREE_PAIRS = 1_000_000


def small_dataset(folder: Path, count: int = 6) -> Path:
    """An MSD folder (a ``dataset.json`` with absolute paths) of the first ``count`` training cases."""
    split = json.loads((REPO / "Resources" / "Splits" / "hippocampus.json").read_text(encoding="utf-8"))
    ids = split["train"][:count] + split["val"][:2]
    entries = [
        {"image": str(DATA / "imagesTr" / f"{c}.nii.gz"), "label": str(DATA / "labelsTr" / f"{c}.nii.gz")} for c in ids
    ]
    (folder / "dataset.json").write_text(json.dumps({"training": entries}))
    (folder / "run").mkdir()
    (folder / "run" / "split.json").write_text(
        json.dumps({"train": ids[:count], "val": ids[count:], "test": [], "seed": 0})
    )
    return folder


def steps_per_hour(kind: str, fast: bool, data: Path, steps: int, frozen: bool = False) -> float:
    import torch

    import imagetomesh.geometry.distances as distances
    from imagetomesh.training.engine import Run, optimiser_step, setup_phase
    from imagetomesh.training.tasks import get_config, task_class

    config = get_config(kind, "cpu-v2-frozen" if frozen else CONFIGS[kind])
    config.bf16_autocast = fast
    config.channels_last = fast
    distances.KD_TREE_PAIRS = KD_TREE_PAIRS if fast else float("inf")
    run = Run(data / "run", data, torch.device("cpu"), 0, CONFIGS[kind], lambda m: None)
    init_from = REPO / "Resources" / "Models" / f"{kind}-hippocampus" if frozen else None
    task = task_class(kind)(config, run, init_from=init_from)
    settings = task.settings()
    setup_phase(task, settings)
    generator = torch.Generator().manual_seed(0)
    task.model.train()
    for _ in range(2):
        optimiser_step(task, settings, generator, run.device)
    start = time.perf_counter()
    for _ in range(steps):
        optimiser_step(task, settings, generator, run.device)
    return 3600.0 * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["unet", "voxel2mesh"], choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from imagetomesh.nn.precision import cpu_has_bf16

    torch.set_num_threads(args.threads)
    print(f"CPU native bf16: {cpu_has_bf16()}; torch {torch.__version__}; {args.threads} thread(s)")
    print(
        f"{'kind':<14}{'before steps/h':>16}{'now steps/h':>13}{'speed-up':>10}{'frozen steps/h':>16}{'speed-up':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = small_dataset(Path(tmp))
        for kind in args.kinds:
            base = steps_per_hour(kind, False, data, args.steps)
            fast = steps_per_hour(kind, True, data, args.steps)
            row = f"{kind:<14}{base:>16.0f}{fast:>13.0f}{fast / base:>9.2f}x"
            if kind != "unet":
                frozen = steps_per_hour(kind, True, data, args.steps, frozen=True)
                row += f"{frozen:>16.0f}{frozen / base:>9.2f}x"
            print(row, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
