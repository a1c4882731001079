#!/usr/bin/env bash
# The one prepared GPU check: build the CUDA kernels, run every CUDA test, run the GPU
# benchmarks, keep the logs. Meant for the device machine (torch with CUDA, nvcc,
# pytest-benchmark already installed there; nothing is installed by this script):
#   bash benchmarks/gpu_check.sh            # writes logs under $OUT (or /tmp/ptqx-gpu)
# Budget: about 8 minutes on an H200 (build ~2-3, tests ~2, benchmarks ~2); every step
# has a timeout, so a hung kernel costs that step, not the whole run.
# Logs in $OUT: steps.txt (what ran, when, exit codes), gpu.txt (versions), build.txt
# (compiler output), info.txt (which op has which kernel), tests_<file>.txt and
# junit_<file>.xml per test file, summary.txt, bench_gpu.{txt,json}.
# Exit status: non-zero if the build or any CUDA test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ptqx-gpu}
mkdir -p "$OUT"
PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PTQX_REQUIRE_NATIVE=1
export PTQX_BUILD_DIR=${PTQX_BUILD_DIR:-$PWD/build/jit-gpu}
SECONDS=0
step() { echo "== [${SECONDS}s] $*" | tee -a "$OUT/steps.txt"; }

step "versions"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  command -v nvcc && nvcc --version | tail -2
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
    torch.cuda.get_device_name(), torch.cuda.get_device_capability(), "count", torch.cuda.device_count())'
} 2>&1 | tee "$OUT/gpu.txt"
# Build for this GPU's architecture only (the default, 80;90, compiles every .cu twice).
if [ -z "${PTQX_CUDA_ARCHS:-}" ]; then
  PTQX_CUDA_ARCHS=$("$PY" -c 'import torch; print("%d%d" % torch.cuda.get_device_capability())' 2>/dev/null || true)
  [ -n "$PTQX_CUDA_ARCHS" ] && export PTQX_CUDA_ARCHS
fi
echo "PTQX_CUDA_ARCHS=${PTQX_CUDA_ARCHS:-default}" | tee -a "$OUT/gpu.txt"

step "build (JIT, CPU + CUDA sources)"
# Verbose: the compiler's warnings and errors land in build.txt.
PTQX_VERBOSE_BUILD=1 timeout 480 "$PY" -m ptqx info >"$OUT/build.txt" 2>&1
rc=$?
echo "build exit $rc" | tee -a "$OUT/steps.txt"
if [ $rc -ne 0 ]; then
  echo "build failed; the end of $OUT/build.txt:"
  tail -n 60 "$OUT/build.txt"
  exit 1
fi
"$PY" -m ptqx info >"$OUT/info.txt" 2>&1  # the build is cached now: only the table
cat "$OUT/info.txt"
grep -q "native CUDA" "$OUT/info.txt" || { echo "no op has a native CUDA kernel (see $OUT/info.txt)"; exit 1; }

step "CUDA tests"
# One pytest process per file: a kernel fault leaves the CUDA context unusable for the
# rest of its process, and would fail every later test of the run with it. Not under
# CUDA_LAUNCH_BLOCKING=1 (synchronous launches, which a CUDA graph capture, used by
# test_cuda_paths.py to check the launch stream, may refuse): every test reads its results
# back right after its launches, so a fault surfaces in its own test; rerun a failing file
# with CUDA_LAUNCH_BLOCKING=1 to pin the fault to its launch.
all=$("$PY" -m pytest -q -p no:cacheprovider --collect-only -k cuda tests/ 2>/dev/null \
  | grep -o '^tests/[^:]*\.py' | sort -u)
files=$(grep test_cuda_paths <<<"$all"; grep -v test_cuda_paths <<<"$all")  # targeted checks first
echo "$files" | tee -a "$OUT/steps.txt"
tests_rc=0
for f in $files; do
  name=$(basename "$f" .py)
  step "pytest -k cuda $f"
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider -k cuda "$f" \
    -o faulthandler_timeout=120 --durations=10 --junitxml="$OUT/junit_$name.xml" \
    >"$OUT/tests_$name.txt" 2>&1
  frc=$?
  tail -n 1 "$OUT/tests_$name.txt" | sed "s|^|$name: |" | tee -a "$OUT/summary.txt"
  echo "exit $frc" >>"$OUT/steps.txt"
  [ $frc -ne 0 ] && [ $frc -ne 5 ] && tests_rc=1  # 5: nothing selected
done
[ -n "$files" ] || { echo "no CUDA test collected"; tests_rc=1; }

step "GPU benchmarks"
timeout 300 "$PY" -m pytest -q -p no:cacheprovider benchmarks/bench_gpu.py --benchmark-only \
  --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds \
  --benchmark-json="$OUT/bench_gpu.json" >"$OUT/bench_gpu.txt" 2>&1
echo "bench exit $?" | tee -a "$OUT/steps.txt"
tail -n 5 "$OUT/bench_gpu.txt"

step "done (tests exit $tests_rc)"
cat "$OUT/summary.txt"
exit "$tests_rc"
