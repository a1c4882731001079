// Host-side launcher of the torch-free CUDA OBC kernel (csrc/cuda/obc_kernels.cu).
// Semantics: ptqx/ops/reference.py obc_quantize_rows_order; algorithm as the CPU kernel
// (csrc/include/ptqx/obc.h): lazy pivot batches folded into a shrinking working matrix.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace ptqx::cuda {

// Largest pivot batch the kernel supports (its shared-memory tiles are sized for it).
constexpr int kObcMaxBatch = 64;

// Bytes of scratch for `slots` rows processed at once (one thread block each).
template <typename T>
size_t obc_workspace_bytes(int64_t cols, int64_t batch, int64_t slots);

// weight [rows, cols], hinv [cols, cols] symmetric, both T, device memory; scale, zero
// [rows] float32; q [rows, cols] out; order [rows, cols] out or null; workspace of
// obc_workspace_bytes(cols, batch, slots) bytes, 256-byte aligned. batch in [1, 64].
template <typename T>
cudaError_t obc_quantize_rows(const T* weight, const T* hinv, const float* scale,
                              const float* zero, int64_t rows, int64_t cols, int maxq, T* q,
                              int64_t* order, int64_t batch, int64_t slots, void* workspace,
                              cudaStream_t stream);

}  // namespace ptqx::cuda
