// Host-side launcher of the CUDA LiRA score kernel (csrc/cuda/scores_kernels.cu); torch-free.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "ptqx/logit_dtype.h"

namespace ptqx::cuda {

// One warp per row, float64 online logsumexp over k != labels[r]; semantics of
// ptqx/ops/reference.py logit_scores. logits: [rows, K] of dtype dt; labels: [rows]
// int64; out: [rows] float64. A label outside [0, K) gives NaN (never an out-of-bounds
// read); the public wrapper checks labels before the call.
cudaError_t logit_scores_rows(const void* logits, LogitDtype dt, const int64_t* labels,
                              int64_t rows, int64_t K, double* out, cudaStream_t stream);

}  // namespace ptqx::cuda
