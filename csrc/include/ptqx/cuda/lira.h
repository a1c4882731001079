// Host-side launcher of the torch-free CUDA kernel for the leave-one-out LiRA
// statistics (csrc/cuda/lira_kernels.cu); semantics: ptqx/ops/reference.py.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace ptqx::cuda {

// Largest number of models one block handles (scores and sorted sides live in shared
// memory); the ATen binding rejects larger N with a clear message.
constexpr int64_t kLiraMaxModels = 1024;

// ref: [n, m, v]; keep: [n, m]; stats: [6, n, m, v] (median_in, median_out, mean_in,
// mean_out, std_in, std_out); counts: [2, n, m]. Returns the launch error.
template <typename T>
cudaError_t lira_loo_stats(const T* ref, const bool* keep, int64_t n, int64_t m, int64_t v,
                           T* stats, int64_t* counts, cudaStream_t stream);

}  // namespace ptqx::cuda
