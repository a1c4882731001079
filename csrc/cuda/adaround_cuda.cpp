// CUDA bindings for AdaRound's fused soft rounding: check, pick the stream, launch.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ptqx/bindings/adaround_checks.h"
#include "ptqx/bindings/device_checks.h"
#include "ptqx/cuda/adaround.h"

namespace ptqx {
namespace {

void check_cuda_args(const at::Tensor& w_floor, const at::Tensor& alpha, const at::Tensor& scale,
                     const at::Tensor& zero, int64_t maxq, double beta) {
  bindings::check_cuda_same_device(
      {{"alpha", &alpha}, {"w_floor", &w_floor}, {"scale", &scale}, {"zero", &zero}});
  bindings::check_alpha(alpha);
  bindings::check_like_alpha("w_floor", w_floor, alpha);
  bindings::check_grid_and_beta(alpha, scale, zero, maxq, beta);
}

std::tuple<at::Tensor, at::Tensor> adaround_forward_cuda(const at::Tensor& w_floor_, const at::Tensor& alpha_,
                                                         const at::Tensor& scale_, const at::Tensor& zero_,
                                                         int64_t maxq, double beta) {
  check_cuda_args(w_floor_, alpha_, scale_, zero_, maxq, beta);
  c10::cuda::CUDAGuard guard(alpha_.device());
  auto w_floor = w_floor_.contiguous(), alpha = alpha_.contiguous();
  auto scale = scale_.contiguous(), zero = zero_.contiguous();
  auto w_soft = at::empty_like(alpha);
  auto reg = at::empty({}, alpha.options());
  const int64_t rows = alpha.size(0), cols = rows ? alpha.numel() / rows : 0;
  auto row_reg = at::empty({rows}, alpha.options().dtype(at::kDouble));
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (alpha.scalar_type() == at::kFloat) {
    err = cuda::adaround_forward_rows<float>(w_floor.const_data_ptr<float>(), alpha.const_data_ptr<float>(),
                                             scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows,
                                             cols, int(maxq), float(beta), w_soft.mutable_data_ptr<float>(),
                                             row_reg.mutable_data_ptr<double>(), reg.mutable_data_ptr<float>(),
                                             stream);
  } else {
    err = cuda::adaround_forward_rows<double>(w_floor.const_data_ptr<double>(), alpha.const_data_ptr<double>(),
                                              scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows,
                                              cols, int(maxq), beta, w_soft.mutable_data_ptr<double>(),
                                              row_reg.mutable_data_ptr<double>(), reg.mutable_data_ptr<double>(),
                                              stream);
  }
  TORCH_CHECK(err == cudaSuccess, "adaround_forward: CUDA launch failed: ", cudaGetErrorString(err));
  return {w_soft, reg};
}

at::Tensor adaround_backward_cuda(const at::Tensor& grad_w_, const at::Tensor& grad_reg_, const at::Tensor& w_floor_,
                                  const at::Tensor& alpha_, const at::Tensor& scale_, const at::Tensor& zero_,
                                  int64_t maxq, double beta) {
  check_cuda_args(w_floor_, alpha_, scale_, zero_, maxq, beta);
  bindings::check_cuda_same_device({{"alpha", &alpha_}, {"grad_w", &grad_w_}});
  bindings::check_like_alpha("grad_w", grad_w_, alpha_);
  bindings::check_grad_reg(grad_reg_);
  c10::cuda::CUDAGuard guard(alpha_.device());
  auto grad_w = grad_w_.contiguous(), w_floor = w_floor_.contiguous(), alpha = alpha_.contiguous();
  auto scale = scale_.contiguous(), zero = zero_.contiguous();
  auto grad_reg = grad_reg_.to(alpha.device(), alpha.scalar_type()).contiguous();
  auto grad_alpha = at::empty_like(alpha);
  const int64_t rows = alpha.size(0), cols = rows ? alpha.numel() / rows : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (alpha.scalar_type() == at::kFloat) {
    err = cuda::adaround_backward_rows<float>(
        grad_w.const_data_ptr<float>(), grad_reg.const_data_ptr<float>(), w_floor.const_data_ptr<float>(),
        alpha.const_data_ptr<float>(), scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows, cols,
        int(maxq), float(beta), grad_alpha.mutable_data_ptr<float>(), stream);
  } else {
    err = cuda::adaround_backward_rows<double>(
        grad_w.const_data_ptr<double>(), grad_reg.const_data_ptr<double>(), w_floor.const_data_ptr<double>(),
        alpha.const_data_ptr<double>(), scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows, cols,
        int(maxq), beta, grad_alpha.mutable_data_ptr<double>(), stream);
  }
  TORCH_CHECK(err == cudaSuccess, "adaround_backward: CUDA launch failed: ", cudaGetErrorString(err));
  return grad_alpha;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CUDA, m) {
  m.impl("adaround_forward", &adaround_forward_cuda);
  m.impl("adaround_backward", &adaround_backward_cuda);
}

}  // namespace ptqx
