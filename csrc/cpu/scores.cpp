// CPU binding of the LiRA score op (schema: ptqx/ops/_library.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include "ptqx/scores.h"

namespace ptqx {
namespace {

LogitDtype logit_dtype(const at::Tensor& logits) {
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

at::Tensor logit_scores_cpu(const at::Tensor& logits_, const at::Tensor& labels_) {
  const LogitDtype dt = logit_dtype(logits_);
  TORCH_CHECK(logits_.dim() >= 1, "logits: expected at least 1 dimension (classes last)");
  const int64_t K = logits_.size(-1);
  TORCH_CHECK(K >= 2, "logits: need at least 2 classes in the last dimension, got ", K);
  TORCH_CHECK(labels_.scalar_type() == at::kLong, "labels: expected int64, got ",
              labels_.scalar_type());
  TORCH_CHECK(labels_.sizes() == logits_.sizes().slice(0, logits_.dim() - 1), "labels: expected shape ",
              logits_.sizes().slice(0, logits_.dim() - 1), " (logits without its class dim), got ",
              labels_.sizes());
  auto logits = logits_.contiguous();
  auto labels = labels_.contiguous();
  auto out = at::empty(labels.sizes(), logits.options().dtype(at::kDouble));
  const int64_t rows = labels.numel();
  const int64_t bad = logit_scores_rows(logits.const_data_ptr(), dt, labels.const_data_ptr<int64_t>(),
                                        rows, K, out.mutable_data_ptr<double>());
  TORCH_CHECK(bad == 0, "labels: ", bad, " value(s) outside [0, ", K, ")");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CPU, m) { m.impl("logit_scores", &logit_scores_cpu); }

}  // namespace ptqx
