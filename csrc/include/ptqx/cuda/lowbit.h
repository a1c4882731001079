// Host-side launchers of the torch-free packed low-bit kernels (csrc/cuda/lowbit_kernels.cu).
// Packed layout: see csrc/include/ptqx/lowbit.h and ptqx/ops/reference.py (pack_weights).
// Each returns the launch error (cudaSuccess when fine); the binding raises on error.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace ptqx::cuda {

// codes: uint8 [rows, cols], every value already checked to be <= 2^bits - 1;
// out: uint8 [rows, row_bytes].
cudaError_t lowbit_pack(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* out,
                        cudaStream_t stream);

// packed: uint8 [rows, row_bytes]; out: uint8 [rows, cols].
cudaError_t lowbit_unpack(const uint8_t* packed, int64_t rows, int64_t cols, int bits, uint8_t* out,
                          cudaStream_t stream);

// y[t, r] = scale[r] * sum_c (code[r, c] - zero[r]) * x[t, c] + bias[r] (bias may be null).
// x: float32 [ntok, cols] row-major; y: float32 [ntok, rows].
cudaError_t lowbit_linear(const float* x, const uint8_t* packed, const float* scale, const float* zero,
                          const float* bias, int64_t ntok, int64_t rows, int64_t cols, int bits,
                          float* y, cudaStream_t stream);

// lowbit_linear_int8act (csrc/cuda/lowbit_int8act_kernels.cu; semantics:
// ptqx/ops/reference.py). x: float32 [ntok, cols]; zero must hold integers in
// [0, 2^bits - 1] and cols <= 2^20 (checked by the caller). Workspaces: xq int8
// [ntok, cols], qsum int32 [ntok], sx float32 [ntok], finite uint8 [ntok].
// y: float32 [ntok, rows].
cudaError_t lowbit_linear_int8act(const float* x, const uint8_t* packed, const float* scale, const float* zero,
                                  const float* bias, int64_t ntok, int64_t rows, int64_t cols, int bits,
                                  int8_t* xq, int32_t* qsum, float* sx, uint8_t* finite, float* y,
                                  cudaStream_t stream);

}  // namespace ptqx::cuda
