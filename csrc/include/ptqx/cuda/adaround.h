// Host-side launchers of AdaRound's fused soft-rounding CUDA kernels
// (csrc/cuda/adaround_kernels.cu; semantics: csrc/include/ptqx/adaround.h and
// ptqx/ops/reference.py adaround_forward / adaround_backward). Torch-free so CI can
// compile the kernels with plain nvcc.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace ptqx::cuda {

// w_floor, alpha, w_soft: [rows, cols] row-major on the device; scale, zero: [rows]
// float32. row_reg: device scratch of `rows` doubles; reg: one T on the device receiving
// sum(1 - (2|h - 0.5|)^beta) (0 when beta == 0). The sum is a fixed-order tree per row
// and then over rows, so it is deterministic.
template <typename T>
cudaError_t adaround_forward_rows(const T* w_floor, const T* alpha, const float* scale,
                                  const float* zero, int64_t rows, int64_t cols, int maxq,
                                  T beta, T* w_soft, double* row_reg, T* reg, cudaStream_t stream);

// grad_reg: one T on the device (the upstream gradient of reg), read by the kernel so no
// host synchronisation is needed.
template <typename T>
cudaError_t adaround_backward_rows(const T* grad_w, const T* grad_reg, const T* w_floor,
                                   const T* alpha, const float* scale, const float* zero,
                                   int64_t rows, int64_t cols, int maxq, T beta, T* grad_alpha,
                                   cudaStream_t stream);

}  // namespace ptqx::cuda
