#!/bin/bash
# A head-and-neck CT U-Net run on a lent GPU machine (PyTorch there, but not SimpleITK or VTK), in two steps:
#
#   bash tools/gpu_lease.sh prepare
#       here, with the package installed: .gpu/openkbp-ct (the training and validation cases of
#       Resources/Splits/openkbp-ct.json as arrays, tools/train_from_arrays.py; the test split never leaves this
#       machine) and .gpu/split-no-test.json (the split with its test list emptied). .gpu/ is git-ignored: carry it.
#
#   CONFIG=headneck-ct-gpu-wide-regularised SEED=3 LIMIT_MIN=7.5 [INIT=.gpu/init] bash tools/gpu_lease.sh train
#       there: first Testing/benchmarks/ct_unet_step.py --device cuda ($OUT/step_bench.log), then
#       `imagetomesh train unet --config $CONFIG` with its one-cycle schedule fitted to LIMIT_MIN minutes at its
#       first validation (--fit-steps-to-time), from INIT (a model folder carried in .gpu/) when given. The run
#       folder is $OUT/run, so whatever it wrote comes back even if the call is cut; the resumable checkpoint is
#       removed at the end (the best and final models stay). Logs: $OUT/train.log, $OUT/gpu_util.log.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    rm -rf .gpu/openkbp-ct
    mkdir -p .gpu
    python tools/train_from_arrays.py convert ../shared/data/openkbp-ct .gpu/openkbp-ct \
        --without-test Resources/Splits/openkbp-ct.json
    python -c 'import json; s = json.load(open("Resources/Splits/openkbp-ct.json")); s["test"] = []
json.dump(s, open(".gpu/split-no-test.json", "w"), indent=1)'
    du -sh .gpu
    ;;
train)
    : "${CONFIG:?set CONFIG to a unet config (e.g. headneck-ct-gpu-wide-regularised)}"
    : "${OUT:?run this on the lent machine, where \$OUT is the folder that comes back}"
    export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    start=$(date +%s)
    stamp() { while IFS= read -r line; do echo "$(($(date +%s) - start)) $line"; done; }
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    run=$OUT/run
    mkdir -p "$run" && cp .gpu/split-no-test.json "$run/split.json"
    (while sleep 20; do
        echo "$(($(date +%s) - start)) s $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)" \
            "load $(cut -d' ' -f1 /proc/loadavg)"
    done) >"$OUT/gpu_util.log" 2>&1 &
    monitor=$!
    python3 tools/train_from_arrays.py script Testing/benchmarks/ct_unet_step.py -- --device cuda 2>&1 | tail -8 >"$OUT/step_bench.log" || true
    python3 tools/train_from_arrays.py train -- unet --config "$CONFIG" --data .gpu/openkbp-ct --out "$run" \
        --device cuda --seed "${SEED:-0}" --time-limit "${LIMIT_MIN:-7.5}" --fit-steps-to-time \
        ${INIT:+--init-from "$INIT"} 2>&1 | stamp >"$OUT/train.log"
    echo "train done at $(($(date +%s) - start)) s"
    tail -4 "$OUT/train.log" | cut -c1-400
    kill "$monitor" 2>/dev/null || true
    rm -f "$run/checkpoint.pt"
    ls -la "$run"
    ;;
*)
    echo "usage: bash tools/gpu_lease.sh prepare | CONFIG=... [SEED=...] [LIMIT_MIN=...] [INIT=...] bash tools/gpu_lease.sh train" >&2
    exit 2
    ;;
esac
