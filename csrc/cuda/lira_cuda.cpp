// CUDA binding for the leave-one-out LiRA statistics: check, pick the stream, launch.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/stack.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "ptqx/bindings/device_checks.h"
#include "ptqx/bindings/lira_checks.h"
#include "ptqx/cuda/lira.h"

namespace ptqx {
namespace {

std::tuple<at::Tensor, at::Tensor> lira_loo_stats_cuda_op(const at::Tensor& ref_, const at::Tensor& keep_) {
  bindings::check_cuda_same_device({{"ref_scores", &ref_}, {"keep", &keep_}});
  bindings::check_loo_stats(ref_, keep_);
  TORCH_CHECK(ref_.size(0) <= cuda::kLiraMaxModels, "ref_scores: the CUDA kernel handles at most ",
              cuda::kLiraMaxModels, " models (dim 0), got ", ref_.size(0));
  c10::cuda::CUDAGuard guard(ref_.device());
  auto ref = ref_.contiguous();
  auto keep = keep_.contiguous();
  const int64_t n = ref.size(0), m = ref.size(1), v = ref.size(2);
  auto stats = at::empty({6, n, m, v}, ref.options());
  at::Tensor counts;
  if (v == 0) {
    // No column for the kernel to visit; the counts are still defined: each side loses
    // one model for every target, unless it is empty (see the kernel).
    auto k_in = keep.sum(0, /*keepdim=*/true, at::kLong);
    auto k_out = k_in.neg().add(n);
    counts = at::stack({k_in.sub(1).clamp_min(0), k_out.sub(1).clamp_min(0)}, 0).expand({2, n, m});
    return {stats, counts.contiguous()};
  }
  counts = at::empty({2, n, m}, keep.options().dtype(at::kLong));
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (ref.scalar_type() == at::kFloat) {
    err = cuda::lira_loo_stats<float>(ref.const_data_ptr<float>(), keep.const_data_ptr<bool>(), n, m, v,
                                      stats.mutable_data_ptr<float>(), counts.mutable_data_ptr<int64_t>(),
                                      stream);
  } else {
    err = cuda::lira_loo_stats<double>(ref.const_data_ptr<double>(), keep.const_data_ptr<bool>(), n, m,
                                       v, stats.mutable_data_ptr<double>(),
                                       counts.mutable_data_ptr<int64_t>(), stream);
  }
  TORCH_CHECK(err == cudaSuccess, "lira_loo_stats: CUDA launch failed: ", cudaGetErrorString(err));
  return {stats, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CUDA, m) { m.impl("lira_loo_stats", &lira_loo_stats_cuda_op); }

}  // namespace ptqx
