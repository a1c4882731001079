#!/usr/bin/env bash
# The one prepared GPU check: build the CUDA kernels, run every CUDA test, run the GPU
# benchmarks, keep the logs. Meant for the device machine (torch with CUDA, nvcc,
# pytest-benchmark already installed there; nothing is installed by this script):
#   bash benchmarks/gpu_check.sh            # writes logs under $OUT (or /tmp/ptqx-gpu)
# Exit status: non-zero if the build or any CUDA test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ptqx-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PTQX_REQUIRE_NATIVE=1
export PTQX_BUILD_DIR=${PTQX_BUILD_DIR:-$PWD/build/jit-gpu}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

echo "== build (JIT, CPU + CUDA sources)"
start=$(date +%s)
python3 -m ptqx info 2>&1 | tee "$OUT/info.txt" || { echo "build failed"; exit 1; }
echo "build took $(( $(date +%s) - start )) s" | tee -a "$OUT/info.txt"
grep -q "native CUDA" "$OUT/info.txt" || { echo "no op has a native CUDA kernel"; exit 1; }

echo "== CUDA tests"
python3 -m pytest -q -p no:cacheprovider -k "cuda" tests/ 2>&1 | tee "$OUT/tests_cuda.txt"
tests_rc=${PIPESTATUS[0]}

echo "== GPU benchmarks"
python3 -m pytest -q -p no:cacheprovider benchmarks/bench_gpu.py --benchmark-only \
  --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds \
  --benchmark-json="$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.txt"

exit "$tests_rc"
