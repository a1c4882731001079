// Argument checks of the LiRA score op that do not depend on the device, shared by the
// CPU (csrc/cpu/scores.cpp) and CUDA (csrc/cuda/scores_cuda.cpp) bindings; the CUDA binding
// checks that both tensors are CUDA tensors on one device first. ATen-dependent:
// bindings only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "ptqx/logit_dtype.h"

namespace ptqx::bindings {

inline LogitDtype logit_dtype(const at::Tensor& logits) {
  switch (logits.scalar_type()) {
    case at::kFloat:
      return LogitDtype::F32;
    case at::kDouble:
      return LogitDtype::F64;
    case at::kHalf:
      return LogitDtype::F16;
    case at::kBFloat16:
      return LogitDtype::BF16;
    default:
      TORCH_CHECK(false, "logits: expected float16, bfloat16, float32 or float64, got ",
                  logits.scalar_type());
  }
}

// logits: float [..., K] with K >= 2; labels: int64 [...] (the values are checked by the
// kernels, which count those outside [0, K)). Returns logits' storage dtype.
inline LogitDtype check_logit_scores(const at::Tensor& logits, const at::Tensor& labels) {
  const LogitDtype dt = logit_dtype(logits);
  TORCH_CHECK(logits.dim() >= 1, "logits: expected at least 1 dimension (classes last)");
  const int64_t K = logits.size(-1);
  TORCH_CHECK(K >= 2, "logits: need at least 2 classes in the last dimension, got ", K);
  TORCH_CHECK(labels.scalar_type() == at::kLong, "labels: expected int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.sizes() == logits.sizes().slice(0, logits.dim() - 1), "labels: expected shape ",
              logits.sizes().slice(0, logits.dim() - 1), " (logits without its class dim), got ",
              labels.sizes());
  return dt;
}

}  // namespace ptqx::bindings
