#!/usr/bin/env bash
# The GPU session of issue 7 in a few device calls: GPU tests, CPU-vs-GPU throughput next to PyTorch CUDA,
# and the 100-epoch CIFAR-10 CNN.  How to run it with the device tool: benchmarks/README-gpu.md.
#
#   bash benchmarks/gpu_session.sh pack-data    # HERE, once: CIFAR-10 as three xz parts in .gpu_data/ (git-excluded)
#   bash benchmarks/gpu_session.sh quick        # device: environment, benchmarks, pytest tests/, profile (about 6-9 min;
#                                               #         'bench' and 'tests' run the halves on their own)
#   bash benchmarks/gpu_session.sh stash        # device: only unpack the carried CIFAR part          (seconds)
#   bash benchmarks/gpu_session.sh experiment   # device: the 100-epoch CIFAR-10 CNN on the GPU       (target <= 10 min)
#
# Every phase first unpacks whatever .gpu_data/part*/ came with the call into $DATA_ROOT (default
# /tmp/minidl_data), which stays on the machine while it is warm.  Results go to $OUT (the device tool's
# folder; ./gpu_out elsewhere), at most 8 files, flat.
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
export PYTHONUNBUFFERED=1
CIFAR_FILES="data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }

pack_data() {  # on the CPU machine: three parts of about 47 MB each (a call carries at most 64 MiB)
    local src=${MINIDL_DATA:-/work/data}/cifar-10-batches-py
    for f in $CIFAR_FILES batches.meta; do
        [ -f "$src/$f" ] || { echo "missing $src/$f: set MINIDL_DATA to the folder holding cifar-10-batches-py"; exit 1; }
    done
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)  # ignored, or the parts would travel with every call
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.gpu_data/' "$exclude" 2>/dev/null || echo '/.gpu_data/' >> "$exclude"
    mkdir -p .gpu_data/part1 .gpu_data/part2 .gpu_data/part3
    set -- "data_batch_1 data_batch_2" "data_batch_3 data_batch_4" "data_batch_5 test_batch"
    local i=1
    for files in "$@"; do
        for f in $files; do
            [ -s ".gpu_data/part$i/$f.xz" ] || xz -6 -T0 -c "$src/$f" > ".gpu_data/part$i/$f.xz"
        done
        i=$((i + 1))
    done
    cp "$src/batches.meta" .gpu_data/part3/
    [ -f "$src/.prepared" ] && cp "$src/.prepared" .gpu_data/part3/prepared
    du -sh .gpu_data/part*
    if [ -n "$(git status --porcelain .gpu_data)" ]; then
        echo "error: .gpu_data is not ignored by git (it would travel with every call)"; exit 1
    fi
}

stash() {  # unpack the carried parts into $CIFAR
    local found=0
    mkdir -p "$CIFAR"
    for part in .gpu_data/part*; do
        [ -d "$part" ] || continue
        found=1
        for f in "$part"/*.xz; do
            [ -f "$f" ] && xz -dc "$f" > "$CIFAR/$(basename "$f" .xz)"
        done
        [ -f "$part/batches.meta" ] && cp "$part/batches.meta" "$CIFAR/"
        [ -f "$part/prepared" ] && cp "$part/prepared" "$CIFAR/.prepared"
        log "unpacked $part into $CIFAR"
    done
    [ $found = 1 ] || log "no .gpu_data/part* carried in this call"
    log "CIFAR-10 files present: $(cd "$CIFAR" && ls $CIFAR_FILES batches.meta 2>/dev/null | tr '\n' ' ')"
}

cifar_complete() {
    for f in $CIFAR_FILES batches.meta; do [ -s "$CIFAR/$f" ] || return 1; done
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
    log "pytest tests/ $par with CuPy (real-data tests skip: no MINIDL_DATA here; limit ${TEST_TIMEOUT:-210} s)"
    local t0=$SECONDS
    env -u MINIDL_DATA timeout "${TEST_TIMEOUT:-210}" $PY -m pytest -q -rfEs -p no:cacheprovider $par tests/ \
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
    if ! cifar_complete; then
        log "CIFAR-10 is incomplete in $CIFAR (the machine was given back between the stash calls?): carry"
        log ".gpu_data/part1, part2, part3 in three calls in a row, the last with the experiment phase"
        return 1
    fi
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

case "$PHASE" in
    pack-data) pack_data ;;
    quick) environment; stash; bench; tests; profile ;;
    bench) environment; stash; bench; profile ;;
    tests) environment; stash; tests ;;
    stash) stash ;;
    experiment) stash; environment; experiment ;;
    all) environment; stash; bench; tests; profile; experiment ;;
    *) echo "usage: $0 pack-data | quick | bench | tests | stash | experiment | all"; exit 2 ;;
esac
