// CPU binding of the LiRA score op (schema: ptqx/ops/_library.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include "ptqx/bindings/scores_checks.h"
#include "ptqx/scores.h"

namespace ptqx {
namespace {

at::Tensor logit_scores_cpu(const at::Tensor& logits_, const at::Tensor& labels_) {
  const LogitDtype dt = bindings::check_logit_scores(logits_, labels_);
  const int64_t K = logits_.size(-1);
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
