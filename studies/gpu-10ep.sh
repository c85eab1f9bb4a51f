#!/usr/bin/env bash
# The GPU part of the studies (docs/12-studies.md), as one command for a briefly lent GPU machine:
# a probe of how many runs the GPU holds side by side, then as many 10-epoch study runs as fit in
# the time left, the study folder brought back as one tar file. Run from the repository root:
#
#     bash studies/gpu-10ep.sh            # about 8.5 minutes in all (LIMIT_MIN)
#
# Needs CuPy and Pillow on the machine; no install (npse runs from PYTHONPATH). Data: a
# git-ignored .gpu/ holding the JPEG archive of CIFAR-10 (cifar10-jpeg.npz) and the script that
# unpacks it (cifar10_unpack.py), as for tests/gpu_check.sh; or .gpu/cifar-10-batches-bin/.
# The runs go to studies/gpu-10ep/ (the same protocol every time, so a later GPU session continues
# where this one stopped once the tar file is unpacked into the repository; runs stopped at the
# time limit restart, since their checkpoints are not brought back). The tar file and the logs go
# to $OUT (the device tool fetches them) or /tmp/npse-gpu-study.
#
# A dry run on the CPU shows the logic in a minute:
#     BACKEND=numpy EXTRA=--quick STUDY_OUT=/tmp/gpu-dry LIMIT_MIN=1 PROBE_KS=1,2 bash studies/gpu-10ep.sh
set -u
START=$(date +%s)
OUT=${OUT:-/tmp/npse-gpu-study}
LIMIT_MIN=${LIMIT_MIN:-8.5}             # the whole command, probe and tar included
BACKEND=${BACKEND:-cupy}
EPOCHS=${EPOCHS:-10}
SEEDS=${SEEDS:-2}
PROBE_KS=${PROBE_KS:-1,2,4,8,12}
STUDIES=${STUDIES:-squeeze,excitation,stages,integration,nosqueeze,se3x3}
STUDY_OUT=${STUDY_OUT:-studies/gpu-10ep}
EXTRA=${EXTRA:-}
PY=${PY:-python3}
DATA=${DATA:-/tmp/npse_data}
mkdir -p "$OUT"
# Every run is its own process; on the GPU the host only issues kernels, so a BLAS thread or two
# each is plenty and K processes do not fight over the host's cores.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2
step() { echo; echo "=== $(date +%T) $*"; }
minutes_left() { $PY -c "import time; print(round($LIMIT_MIN - (time.time() - $START) / 60, 2))"; }

step environment
$PY -c "import sys, numpy; print(sys.version.split()[0], 'numpy', numpy.__version__)"
if [ "$BACKEND" = cupy ]; then
    $PY -c "import cupy; print('cupy', cupy.__version__)"
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
fi

step data
if [ -d .gpu/cifar-10-batches-bin ]; then
    mkdir -p "$DATA" && cp -r .gpu/cifar-10-batches-bin "$DATA/"
elif [ -f .gpu/cifar10-jpeg.npz ]; then
    (cd .gpu && $PY cifar10_unpack.py "$DATA") >"$OUT/unpack.log" 2>&1 || cat "$OUT/unpack.log"
fi
if [ -z "$EXTRA" ] && [ ! -f "$DATA/cifar-10-batches-bin/test_batch.bin" ]; then
    echo "no CIFAR-10 in $DATA: see this script's header"; exit 1
fi

# The probe takes about 20 s per K (start-up, warm-up, 6 s timed); the runs get what is left.
N_KS=$(echo "$PROBE_KS" | tr ',' '\n' | wc -l)
FOR_RUNS=$($PY -c "print(round(max(0.5, $(minutes_left) - 0.5 - $N_KS * 20 / 60), 2))")
step "probe: how many runs side by side ($PROBE_KS), for runs that end within $FOR_RUNS min"
timeout $((N_KS * 60)) $PY -m npse study "$STUDIES" --backend "$BACKEND" --epochs "$EPOCHS" --probe "$PROBE_KS" \
    --probe-seconds 6 --time-limit "$FOR_RUNS" $EXTRA 2>&1 | tee "$OUT/probe.txt"
JOBS=$(sed -n 's/.*most images per second in all.*--jobs \([0-9]*\).*/\1/p' "$OUT/probe.txt")
JOBS=${JOBS:-1}

LEFT=$($PY -c "print(max(0.5, $(minutes_left) - 0.5))")      # half a minute for the tar file
step "the study: $EPOCHS epochs, --seeds $SEEDS, --jobs $JOBS, --time-limit $LEFT min"
$PY -m npse study "$STUDIES" --out "$STUDY_OUT" --backend "$BACKEND" --epochs "$EPOCHS" \
    --seeds "$SEEDS" --jobs "$JOBS" --time-limit "$LEFT" --data-dir "$DATA" $EXTRA \
    2>&1 | tee "$OUT/study.txt"

step "tar file"
tar czf "$OUT/gpu-10ep.tar.gz" --exclude='checkpoint*.npz' --exclude='_data' "$STUDY_OUT"
ls -la "$OUT"
step "done ($(minutes_left) min of $LIMIT_MIN left)"
