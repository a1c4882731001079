// CUDA binding of the LiRA score op: check, pick the stream, call the launcher.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ptqx/bindings/scores_checks.h"
#include "ptqx/cuda/scores.h"

namespace ptqx {
namespace {

at::Tensor logit_scores_cuda(const at::Tensor& logits_, const at::Tensor& labels_) {
  TORCH_CHECK(logits_.is_cuda() && labels_.is_cuda(), "logits/labels: expected CUDA tensors");
  TORCH_CHECK(logits_.device() == labels_.device(), "labels: expected a tensor on ",
              logits_.device(), ", got one on ", labels_.device());
  const LogitDtype dt = bindings::check_logit_scores(logits_, labels_);
  const int64_t K = logits_.size(-1);
  c10::cuda::CUDAGuard guard(logits_.device());
  auto logits = logits_.contiguous();
  auto labels = labels_.contiguous();
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
