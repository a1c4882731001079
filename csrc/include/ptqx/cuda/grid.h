// Host-side launcher of the CUDA grid search (csrc/cuda/grid_kernels.cu); torch-free.
// fake_quant/quantize_codes launchers live in ptqx/cuda/launch.h.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "ptqx/grid_common.h"

namespace ptqx::cuda {

// One block per row; semantics of ptqx/ops/reference.py grid_search (see grid_search.h
// for what is bit-identical). w: [rows, cols] row-major; scale, zero: [rows] float32.
template <typename T>
cudaError_t grid_search_rows(const T* w, int64_t rows, int64_t cols, const GridOptions& o,
                             float* scale, float* zero, cudaStream_t stream);

}  // namespace ptqx::cuda
