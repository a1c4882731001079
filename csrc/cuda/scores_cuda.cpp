// CUDA binding of the LiRA score op: check, pick the stream, call the launcher.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ptqx/bindings/device_checks.h"
#include "ptqx/bindings/scores_checks.h"
#include "ptqx/cuda/scores.h"

namespace ptqx {
namespace {

at::Tensor logit_scores_cuda(const at::Tensor& logits_, const at::Tensor& labels_) {
  bindings::check_cuda_same_device({{"logits", &logits_}, {"labels", &labels_}});
  const LogitDtype dt = bindings::check_logit_scores(logits_, labels_);
  const int64_t K = logits_.size(-1);
  c10::cuda::CUDAGuard guard(logits_.device());
  auto logits = logits_.contiguous();
  auto labels = labels_.contiguous();
  // Out-of-range labels are an error, as on the CPU (whose kernel counts them as it goes).
  // The kernel itself only writes NaN for them (no out-of-bounds read); counting here costs
  // one reduction and a device sync per call, which a CUDA graph capture cannot have: there
  // the NaN is all (ptqx.ops.logit_scores checks labels before the call anyway).
  if (labels.numel() &&
      c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None) {
    const int64_t bad = labels.lt(0).logical_or_(labels.ge(K)).sum().item<int64_t>();
    TORCH_CHECK(bad == 0, "labels: ", bad, " value(s) outside [0, ", K, ")");
  }
  auto out = at::empty(labels.sizes(), logits.options().dtype(at::kDouble));
  const cudaError_t err =
      cuda::logit_scores_rows(logits.const_data_ptr(), dt, labels.const_data_ptr<int64_t>(),
                              labels.numel(), K, out.mutable_data_ptr<double>(),
                              c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "logit_scores: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CUDA, m) { m.impl("logit_scores", &logit_scores_cuda); }

}  // namespace ptqx
