#!/usr/bin/env bash
# The GPU checks, as one short run on a lent GPU machine (docs/B-speed.md): the CuPy tests, `npse
# bench` against PyTorch (cuDNN) in the same process, and the wall time of real training epochs.
#
# Needs CuPy, and for the comparison PyTorch, on the machine; no install (npse runs from PYTHONPATH).
# Real data: carry a git-ignored .gpu/ holding CIFAR-10 in the official binary layout
# (.gpu/cifar-10-batches-bin/), or a JPEG archive of it (cifar10-jpeg.npz) with the script that
# unpacks it (cifar10_unpack.py); without either the training epochs are skipped.
# Logs go to $OUT (the device tool fetches them) or /tmp/npse-gpu.
set -u
OUT=${OUT:-/tmp/npse-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=4
PY=${PY:-python3}
T_TESTS=${T_TESTS:-120}     # seconds allowed for each part
T_BENCH=${T_BENCH:-150}
T_EPOCH=${T_EPOCH:-80}
step() { echo; echo "=== $(date +%T) $*"; }

step environment
$PY -c "import sys, numpy, cupy; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__)"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm --format=csv

if [ -d .gpu/cifar-10-batches-bin ]; then
    mkdir -p /tmp/npse_data && cp -r .gpu/cifar-10-batches-bin /tmp/npse_data/
elif [ -f .gpu/cifar10-jpeg.npz ]; then
    (cd .gpu && $PY cifar10_unpack.py /tmp/npse_data >"$OUT/unpack.log" 2>&1 &)
fi

step "tests on CuPy (hypothesis profile gpu-small)"
HYPOTHESIS_PROFILE=gpu-small timeout "$T_TESTS" $PY -m pytest -q -p no:cacheprovider \
    -o addopts="" -m "not slow" -k "cupy or test_gpu" -rfE --tb=short tests >"$OUT/tests.log" 2>&1
echo "pytest exit $?"
grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -30

step "npse bench on CuPy (all defaults: SE-ResNet-20 and -56 at batch 32, 128, 512), fused kernels on"
timeout "$T_BENCH" $PY -m npse bench --backend cupy --repeats 10 >"$OUT/bench.log" 2>&1
echo "bench exit $?"
cat "$OUT/bench.log"

for format in channels_last contiguous channels_last contiguous; do
    step "npse bench on CuPy, --memory-format $format (SE-ResNet-20, batch 128 and 512)"
    timeout 60 $PY -m npse bench --backend cupy --models se_resnet20 --batch-sizes 128,512 \
        --repeats 20 --memory-format "$format" --no-torch --no-layers --no-profile --no-memory 2>&1 | tail -4
done

if [ "${FUSED_AB:-0}" = 1 ]; then
    for fused in --no-fused ""; do
        step "npse bench on CuPy ${fused:-with the fused kernels}"
        timeout 60 $PY -m npse bench --backend cupy --models se_resnet20 $fused \
            --batch-sizes 128,512 --repeats 20 --no-torch --no-layers --no-profile --no-memory 2>&1 | tail -4
    done
fi

for batch in 512 128; do
    step "two epochs of se_resnet20 on all 50000 images, batch $batch"
    if [ ! -f /tmp/npse_data/cifar-10-batches-bin/test_batch.bin ]; then
        sleep 5
    fi
    timeout "$T_EPOCH" $PY -m npse train --backend cupy --data-dir /tmp/npse_data --no-download \
        --epochs 2 --batch-size "$batch" --eval-batch-size 1000 --quiet --overwrite \
        --out "/tmp/npse-run-$batch" 2>&1 | tail -3
done
step done
