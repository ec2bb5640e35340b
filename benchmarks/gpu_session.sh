#!/usr/bin/env bash
# Everything that needs a GPU, for the device tool's calls: GPU tests, CPU-vs-GPU throughput next to PyTorch
# CUDA, and experiments on CIFAR-10.  How to run it: benchmarks/README-gpu.md.
#
#   bash benchmarks/gpu_session.sh pack-data    # HERE, once: the JPEG copy of CIFAR-10 into .gpu_data/ (git-excluded)
#   bash benchmarks/gpu_session.sh quick        # device: environment, benchmarks, pytest tests/
#                                               #         ('bench' (+ per-layer profile) and 'tests' run the halves)
#   bash benchmarks/gpu_session.sh experiment   # device: one experiment ($EXPERIMENT) on the GPU
#   bash benchmarks/gpu_session.sh runs         # device: every experiment in $EXPERIMENTS at once, one process
#                                               #         each, stopped after $RUN_SECONDS; run folders come back
#                                               #         as $OUT/runs.tgz.part-*, unfinished ones with last.ckpt
#
# The phases that train decode the carried .gpu_data into $DATA_ROOT (default /tmp/minidl_data).  Results go
# to $OUT (the device tool's folder; ./gpu_out elsewhere), at most 8 files, flat.
set -u
PHASE=${1:-quick}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DATA_ROOT=${DATA_ROOT:-/tmp/minidl_data}
CIFAR=$DATA_ROOT/cifar-10-batches-py
RUNS=${RUNS:-/tmp/minidl_runs}
EXPERIMENT=${EXPERIMENT:-cifar10-cnn-dropout0.5}
EXPERIMENTS=${EXPERIMENTS:-$EXPERIMENT}
export PYTHONUNBUFFERED=1
CIFAR_FILES="data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }

pack_data() {  # on the CPU machine: the JPEG copy (56 MB) and its prepare script travel in one call's carry
    local src=${SHARED_DATASETS:-../shared/datasets}
    [ -f "$src/cifar10-jpeg/cifar10-jpeg.npz" ] || { echo "missing $src/cifar10-jpeg: set SHARED_DATASETS"; exit 1; }
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)  # ignored, or it would travel with every call
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.gpu_data/' "$exclude" 2>/dev/null || echo '/.gpu_data/' >> "$exclude"
    mkdir -p .gpu_data/cifar10-jpeg
    cp "$src/prepare.py" .gpu_data/ && cp "$src"/cifar10-jpeg/* .gpu_data/cifar10-jpeg/ && chmod -R u+w .gpu_data
    du -sh .gpu_data
    if [ -n "$(git status --porcelain .gpu_data)" ]; then
        echo "error: .gpu_data is not ignored by git (it would travel with every call)"; exit 1
    fi
}

cifar_complete() {
    for f in $CIFAR_FILES batches.meta; do [ -s "$CIFAR/$f" ] || return 1; done
}

prepare() {  # on the device: decode the carried copy into $CIFAR; carried run folders (.gpu_data/runs) resume
    [ -f .gpu_data/prepare.py ] && $PY .gpu_data/prepare.py "$DATA_ROOT" 2>&1 | tail -1 | tee -a "$OUT/session.log"
    cifar_complete || { log "CIFAR-10 missing in $CIFAR: carry .gpu_data (made by pack-data)"; return 1; }
    if [ -d .gpu_data/runs ]; then
        mkdir -p "$RUNS" && cp -r .gpu_data/runs/. "$RUNS/" && log "carried runs: $(ls .gpu_data/runs | tr '\n' ' ')"
    fi
    return 0
}

environment() {
    log "phase $PHASE on $(hostname)"
    { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
      $PY -c "import sys, numpy, cupy; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, 'cuda runtime', cupy.cuda.runtime.runtimeGetVersion())" 2>&1
      $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1
      $PY -c "import minidl.backend as b; print('minidl cupy status:', b.cupy_status() or 'usable')" 2>&1
      git log --oneline -1 2>/dev/null || true
    } | tee -a "$OUT/session.log"
}

tests() {
    local par=""
    $PY -c "import xdist" 2>/dev/null && par="-n ${TEST_WORKERS:-8}"
    log "pytest tests/ $par with CuPy (real-data tests skip: no MINIDL_DATA here; limit ${TEST_TIMEOUT:-270} s)"
    local t0=$SECONDS
    env -u MINIDL_DATA timeout "${TEST_TIMEOUT:-270}" $PY -m pytest -q -rfEs -p no:cacheprovider $par tests/ \
        > "$OUT/pytest.txt" 2>&1
    log "pytest exit $? in $((SECONDS - t0)) s: $(tail -1 "$OUT/pytest.txt")"
}

bench() {
    local t0=$SECONDS
    log "throughput on cuda, batch 128 and 1024, minidl next to PyTorch CUDA"
    timeout 240 $PY -m benchmarks.throughput --device cuda --batch 128 1024 --runs 5 \
        --json "$OUT/throughput-cuda.json" 2>&1 | tee -a "$OUT/session.log"
    log "throughput of minidl on this machine's CPU (net A, batch 128), for the GPU/CPU ratio"
    timeout 90 $PY -m benchmarks.throughput --device cpu --nets A --batch 128 --runs 3 --no-torch --no-memory \
        --json "$OUT/throughput-cpu-A.json" 2>&1 | tee -a "$OUT/session.log"
    log "the same for A and D at batch 1024 with CUPY_TF32=1 (cuBLAS on tensor cores in TF32, as PyTorch's cuDNN"
    log "convolutions by default; minidl's default stays full float32)"
    CUPY_TF32=1 timeout 90 $PY -m benchmarks.throughput --device cuda --nets A D --batch 1024 --runs 3 --no-memory \
        --json "$OUT/throughput-cuda-tf32.json" 2>&1 | tee -a "$OUT/session.log"
    $PY benchmarks/gpu_summary.py "$OUT/throughput-cuda.json" "$OUT/throughput-cpu-A.json" > "$OUT/summary.md" 2>&1
    cat "$OUT/summary.md" | tee -a "$OUT/session.log"
    log "benchmarks done in $((SECONDS - t0)) s"
}

profile() {
    log "per-layer profile on cuda (nets A and D, batch 128)"
    timeout 60 $PY -m benchmarks.throughput --device cuda --nets A D --batch 128 --runs 1 --profile --no-memory \
        --json /tmp/minidl_profile.json > "$OUT/profile.txt" 2>&1
    log "profile exit $?"
}

experiment() {
    if ! $PY -m experiments list 2>/dev/null | grep -q "^$EXPERIMENT "; then
        log "python -m experiments list has no $EXPERIMENT: the experiments CLI is not on this branch yet"
        return 1
    fi
    local resume=""
    [ -f "$RUNS/$EXPERIMENT/last.ckpt" ] && resume="--resume"
    log "python -m experiments run $EXPERIMENT --device cuda $resume (limit ${EXP_TIMEOUT:-560} s)"
    local t0=$SECONDS
    MINIDL_DATA=$DATA_ROOT timeout "${EXP_TIMEOUT:-560}" $PY -m experiments run "$EXPERIMENT" --device cuda \
        --data-dir "$DATA_ROOT" --out "$RUNS" --quiet --workers "${WORKERS:-2}" $resume > "$OUT/experiment.log" 2>&1
    local rc=$?
    log "experiment exit $rc after $((SECONDS - t0)) s wall (124: stopped by the time limit; rerun the phase to --resume)"
    tail -5 "$OUT/experiment.log" | tee -a "$OUT/session.log"
    for f in metrics.json history.json report.md curves.png; do
        [ -f "$RUNS/$EXPERIMENT/$f" ] && cp "$RUNS/$EXPERIMENT/$f" "$OUT/experiment-$f"
    done
    return $rc
}

runs() {  # every experiment in $EXPERIMENTS at once, one process each, stopped after $RUN_SECONDS
    prepare || return 1
    local limit=${RUN_SECONDS:-480} name resume pids=""
    mkdir -p "$RUNS"
    log "runs: $EXPERIMENTS (each stopped after $limit s; an unfinished one keeps last.ckpt for --resume)"
    for name in $EXPERIMENTS; do
        resume=""
        [ -n "$(find "$RUNS/$name" -name last.ckpt 2>/dev/null | head -1)" ] && resume="--resume"
        ( MINIDL_DATA=$DATA_ROOT timeout -s INT "$limit" $PY -m experiments run "$name" --device cuda \
              --data-dir "$DATA_ROOT" --out "$RUNS" --quiet --no-download $resume > "$RUNS/$name.log" 2>&1
          log "$name exit $? $resume: $(tail -1 "$RUNS/$name.log")" ) &
        pids="$pids $!"
    done
    wait $pids
    # everything but checkpoints, and last.ckpt of each (sweep variant's) folder that has no metrics.json yet, in
    # parts of 15 MB (a file back from the device holds 16 MB)
    (cd "$RUNS" && { find $EXPERIMENTS -type f ! -name '*.ckpt'; ls *.log
                     for c in $(find $EXPERIMENTS -name last.ckpt); do
                         [ -f "$(dirname "$c")/metrics.json" ] || echo "$c"; done; } > /tmp/minidl_pack.txt
     tar czf - -T /tmp/minidl_pack.txt) | split -b 15m - "$OUT/runs.tgz.part-"
    log "packed: $(cd "$OUT" && ls -l runs.tgz.part-* | awk '{print $NF, $5}' | tr '\n' ' ')"
}

case "$PHASE" in
    pack-data) pack_data ;;
    quick) environment; bench; tests ;;
    bench) environment; bench; profile ;;
    tests) environment; tests ;;
    experiment) environment; prepare && experiment ;;
    runs) environment; runs ;;
    *) echo "usage: $0 pack-data | quick | bench | tests | experiment | runs"; exit 2 ;;
esac
