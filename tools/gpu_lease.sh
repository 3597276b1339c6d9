#!/bin/bash
# A head-and-neck CT U-Net run on a lent GPU machine (PyTorch there, but not SimpleITK or VTK), in these steps:
#
#   bash tools/gpu_lease.sh prepare
#       here, with the package installed: .gpu/openkbp-ct (the training and validation cases of
#       Resources/Splits/openkbp-ct.json as arrays, tools/train_from_arrays.py; the test split never leaves this
#       machine) and .gpu/split-no-test.json (the split with its test list emptied). .gpu/ is git-ignored: carry it.
#
#   bash tools/gpu_lease.sh slim    (here, before the lease's first call)
#   bash tools/gpu_lease.sh back    (here, after its last)
#       A device call takes the checkout's tracked files and the carried paths, 64 MiB in all. main's tracked files
#       (bundled weights, sample data, pictures: 94 MB in session 56) are over that alone, so `slim` checks out a
#       branch `gpu-lease` whose one commit, on top of HEAD, holds LEASE_PATHS alone (what `train` reads), after
#       checking that it and .gpu/ fit; `back` returns to the branch `slim` left. The ignored .venv/, runs/ and .gpu/
#       stay as they are; main is not changed.
#
#   CONFIG=headneck-ct-gpu-wide-regularised SEED=3 LIMIT_MIN=7.5 [INIT=.gpu/init] bash tools/gpu_lease.sh train
#       there (run on gpu-lease, .gpu carried): first Testing/benchmarks/ct_unet_step.py on CONFIG's step, then
#       `imagetomesh train unet --config $CONFIG` with its one-cycle schedule fitted to LIMIT_MIN minutes at its
#       first validation (--fit-steps-to-time), from INIT (a model folder carried in .gpu/) when given. The run
#       folder is $OUT/run, so whatever it wrote comes back even if the call is cut; the resumable checkpoint is
#       removed at the end (the best and final models stay). Log: $OUT/lease.log.
set -euo pipefail
cd "$(dirname "$0")/.."

#: what `train` reads of the repository (tools/train_from_arrays.py, the package it puts on sys.path, the step
#: benchmark, the split files), and .gitignore: without it .venv/, runs/ and every other ignored folder would be
#: untracked files, which a call carries too
LEASE_PATHS=(.gitignore ImageToMeshLib tools Testing/benchmarks Resources/Splits)
#: what one device call may carry: the tracked files and the carried paths together
CALL_LIMIT_BYTES=$((64 * 1024 * 1024))

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
slim)
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        echo "gpu_lease.sh slim: the checkout has uncommitted changes; commit or stash them first" >&2
        exit 2
    fi
    home=$(git symbolic-ref --quiet --short HEAD) || {
        echo "gpu_lease.sh slim: HEAD is detached; check out a branch first" >&2
        exit 2
    }
    if [ "$home" = gpu-lease ]; then
        echo "gpu_lease.sh slim: already on gpu-lease; 'bash tools/gpu_lease.sh back' returns" >&2
        exit 2
    fi
    [ -d .gpu ] || { echo "gpu_lease.sh slim: no .gpu/; run 'bash tools/gpu_lease.sh prepare' first" >&2; exit 2; }
    index=$(mktemp)
    trap 'rm -f "$index"' EXIT
    GIT_INDEX_FILE=$index git read-tree HEAD
    excluded=()
    for path in "${LEASE_PATHS[@]}"; do excluded+=(":(exclude)$path"); done
    GIT_INDEX_FILE=$index git rm -r -q --cached -- . "${excluded[@]}"
    tree=$(GIT_INDEX_FILE=$index git write-tree)
    tracked=$(git ls-tree -r -l "$tree" | awk '{s += $4} END {print s + 0}')
    carried=$(du -sb .gpu | cut -f1)
    echo "a call carries $tracked bytes of tracked files and $carried of .gpu/: $((tracked + carried)) of $CALL_LIMIT_BYTES"
    if [ $((tracked + carried)) -gt "$CALL_LIMIT_BYTES" ]; then
        echo "gpu_lease.sh slim: over a device call's limit; carry less in .gpu/ (an INIT model there?)" >&2
        exit 2
    fi
    commit=$(git commit-tree "$tree" -p HEAD -m "gpu-lease: $home's ${LEASE_PATHS[*]} alone, for a device call")
    git branch -f gpu-lease "$commit"
    echo "$home" >"$(git rev-parse --git-path gpu-lease-home)"
    git checkout -q gpu-lease
    echo "on gpu-lease ($commit); 'bash tools/gpu_lease.sh back' returns to $home"
    ;;
back)
    home_file=$(git rev-parse --git-path gpu-lease-home)
    [ -f "$home_file" ] || { echo "gpu_lease.sh back: no branch recorded; 'slim' was not run here" >&2; exit 2; }
    git checkout -q "$(cat "$home_file")"
    rm -f "$home_file"
    echo "back on $(git symbolic-ref --short HEAD)"
    ;;
train)
    : "${CONFIG:?set CONFIG to a unet config (e.g. headneck-ct-gpu-wide-regularised)}"
    : "${OUT:?run this on the lent machine, where \$OUT is the folder that comes back}"
    export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    device=${DEVICE:-cuda} # DEVICE=cpu: a dry run on a machine without a GPU (nvidia-smi there or a stand-in)
    start=$(date +%s)
    stamp() { while IFS= read -r line; do echo "$(($(date +%s) - start)) $line"; done; }
    # what comes back is at most 8 files: the run folder's best/ and final/ (model and card each), config.json and
    # log.jsonl, and one log of the lease ($OUT/lease.log: the step benchmark, the GPU's use every 20 s, training)
    log=$OUT/lease.log
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$log"
    run=$OUT/run
    mkdir -p "$run" && cp .gpu/split-no-test.json "$run/split.json"
    (while sleep 20; do
        echo "$(($(date +%s) - start)) s gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)" \
            "load $(cut -d' ' -f1 /proc/loadavg)"
    done) >>"$log" 2>&1 &
    monitor=$!
    trap 'kill "$monitor" 2>/dev/null || true' EXIT
    python3 tools/train_from_arrays.py script Testing/benchmarks/ct_unet_step.py -- --config "$CONFIG" --device "$device" 2>&1 | tail -8 >>"$log" || true
    python3 tools/train_from_arrays.py train -- unet --config "$CONFIG" --data .gpu/openkbp-ct --out "$run" \
        --device "$device" --seed "${SEED:-0}" --time-limit "${LIMIT_MIN:-7.5}" --fit-steps-to-time \
        ${INIT:+--init-from "$INIT"} 2>&1 | stamp >>"$log"
    echo "train done at $(($(date +%s) - start)) s"
    grep -v " gpu " "$log" | tail -4 | cut -c1-400
    rm -f "$run/checkpoint.pt" "$run/split.json" # the checkpoint is over a returned file's 16 MiB; the split is .gpu's
    ls -la "$run"
    ;;
*)
    echo "usage: bash tools/gpu_lease.sh prepare | slim | back | CONFIG=... [SEED=...] [LIMIT_MIN=...] [INIT=...] bash tools/gpu_lease.sh train" >&2
    exit 2
    ;;
esac
