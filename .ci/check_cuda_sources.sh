#!/usr/bin/env bash
# Compile-check the CUDA sources on a machine without a GPU:
# - torch-free kernel bodies (csrc/cuda/*.cu) are compiled for real with plain nvcc
#   for sm_80 and sm_90;
# - the ATen bindings (csrc/cuda/*.cpp) are syntax-checked with the host compiler
#   against torch's headers (a CPU torch build ships c10/cuda headers but not the one
#   generated file they include, which we stub).
# Skips with a message when nvcc or the CUDA headers are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || true)}
if [ -z "$NVCC" ]; then echo "check_cuda_sources: nvcc not found, skipped"; exit 0; fi
CUDA_INC=${CUDA_INC:-$(dirname "$(readlink -f "$(ls -d /usr/local/cuda*/include 2>/dev/null | head -1)/cuda_runtime.h" 2>/dev/null)" 2>/dev/null || true)}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The flags torch's JIT and ahead-of-time builds give nvcc (ptqx's own plus torch's
# common ones and its C++ standard), so what compiles here compiles there.
NVCC_FLAGS=$(python - <<'PY' 2>/dev/null || echo "-std=c++17 -O3 -DPTQX_NATIVE=1"
import importlib.util
spec = importlib.util.spec_from_file_location("s", "ptqx/ops/_sources.py")
s = importlib.util.module_from_spec(spec)
spec.loader.exec_module(s)
from torch.utils.cpp_extension import COMMON_NVCC_FLAGS
flags = [f for f in s.nvcc_flags() if not f.startswith("-gencode")]
print(" ".join(["-std=c++20", *COMMON_NVCC_FLAGS, *flags]))
PY
)
echo "check_cuda_sources: nvcc flags: $NVCC_FLAGS"
# One nvcc call per file builds both architectures (the host pass runs once), two files
# at a time: the CI machine has two cores and nvcc uses one.
cus=(csrc/cuda/*.cu)
[ -e "${cus[0]}" ] || cus=()
if [ ${#cus[@]} -gt 0 ]; then
  printf '%s\0' "${cus[@]}" | NVCC=$NVCC TMPD=$tmp FLAGS=$NVCC_FLAGS xargs -0 -P 2 -I{} sh -c \
    '"$NVCC" -c $FLAGS -gencode=arch=compute_80,code=sm_80 \
       -gencode=arch=compute_90,code=sm_90 -Icsrc/include "$1" -o "$TMPD/$(basename "$1").o"' _ {}
fi
n=${#cus[@]}
echo "check_cuda_sources: $n torch-free .cu file(s) compiled for sm_80 and sm_90"
if [ -n "$CUDA_INC" ] && [ -f "$CUDA_INC/cuda_runtime.h" ]; then
  TORCH_DIR=$(python -c "import os, torch; print(os.path.dirname(torch.__file__))")
  mkdir -p "$tmp/stub/c10/cuda/impl" && : >"$tmp/stub/c10/cuda/impl/cuda_cmake_macros.h"
  m=0
  for f in csrc/cuda/*.cpp; do
    [ -e "$f" ] || continue
    g++ -std=c++20 -fsyntax-only -DPTQX_WITH_CUDA=1 -I"$tmp/stub" -I"$TORCH_DIR/include" \
      -I"$TORCH_DIR/include/torch/csrc/api/include" -I"$CUDA_INC" -Icsrc/include "$f"
    m=$((m + 1))
  done
  echo "check_cuda_sources: $m ATen CUDA binding(s) syntax-checked"
else
  echo "check_cuda_sources: CUDA headers not found, ATen bindings not checked"
fi
