// CPU bindings for AdaRound's fused soft rounding (schemas: ptqx/ops/_library.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include "ptqx/adaround.h"
#include "ptqx/bindings/adaround_checks.h"

namespace ptqx {
namespace {

void check_args(const at::Tensor& w_floor, const at::Tensor& alpha, const at::Tensor& scale,
                const at::Tensor& zero, int64_t maxq, double beta) {
  bindings::check_alpha(alpha);
  bindings::check_like_alpha("w_floor", w_floor, alpha);
  bindings::check_grid_and_beta(alpha, scale, zero, maxq, beta);
}

std::tuple<at::Tensor, at::Tensor> adaround_forward_cpu(const at::Tensor& w_floor_, const at::Tensor& alpha_,
                                                        const at::Tensor& scale_, const at::Tensor& zero_,
                                                        int64_t maxq, double beta) {
  check_args(w_floor_, alpha_, scale_, zero_, maxq, beta);
  auto w_floor = w_floor_.contiguous();
  auto alpha = alpha_.contiguous();
  auto scale = scale_.contiguous();
  auto zero = zero_.contiguous();
  auto w_soft = at::empty_like(alpha);
  const int64_t rows = alpha.size(0);
  const int64_t cols = rows ? alpha.numel() / rows : 0;
  double reg;
  if (alpha.scalar_type() == at::kFloat) {
    reg = adaround_forward_rows<float>(w_floor.const_data_ptr<float>(), alpha.const_data_ptr<float>(),
                                       scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows, cols,
                                       static_cast<int>(maxq), static_cast<float>(beta),
                                       w_soft.mutable_data_ptr<float>());
  } else {
    reg = adaround_forward_rows<double>(w_floor.const_data_ptr<double>(), alpha.const_data_ptr<double>(),
                                        scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows, cols,
                                        static_cast<int>(maxq), beta, w_soft.mutable_data_ptr<double>());
  }
  return {w_soft, at::scalar_tensor(reg, alpha.options())};
}

at::Tensor adaround_backward_cpu(const at::Tensor& grad_w_, const at::Tensor& grad_reg,
                                 const at::Tensor& w_floor_, const at::Tensor& alpha_, const at::Tensor& scale_,
                                 const at::Tensor& zero_, int64_t maxq, double beta) {
  check_args(w_floor_, alpha_, scale_, zero_, maxq, beta);
  bindings::check_like_alpha("grad_w", grad_w_, alpha_);
  bindings::check_grad_reg(grad_reg);
  auto grad_w = grad_w_.contiguous();
  auto w_floor = w_floor_.contiguous();
  auto alpha = alpha_.contiguous();
  auto scale = scale_.contiguous();
  auto zero = zero_.contiguous();
  auto grad_alpha = at::empty_like(alpha);
  const int64_t rows = alpha.size(0);
  const int64_t cols = rows ? alpha.numel() / rows : 0;
  const double g_reg = grad_reg.item<double>();
  if (alpha.scalar_type() == at::kFloat) {
    adaround_backward_rows<float>(grad_w.const_data_ptr<float>(), static_cast<float>(g_reg),
                                  w_floor.const_data_ptr<float>(), alpha.const_data_ptr<float>(),
                                  scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows, cols,
                                  static_cast<int>(maxq), static_cast<float>(beta),
                                  grad_alpha.mutable_data_ptr<float>());
  } else {
    adaround_backward_rows<double>(grad_w.const_data_ptr<double>(), g_reg, w_floor.const_data_ptr<double>(),
                                   alpha.const_data_ptr<double>(), scale.const_data_ptr<float>(),
                                   zero.const_data_ptr<float>(), rows, cols, static_cast<int>(maxq), beta,
                                   grad_alpha.mutable_data_ptr<double>());
  }
  return grad_alpha;
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CPU, m) {
  m.impl("adaround_forward", &adaround_forward_cpu);
  m.impl("adaround_backward", &adaround_backward_cpu);
}

}  // namespace ptqx
