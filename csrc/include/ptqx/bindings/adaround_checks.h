// Argument checks of AdaRound's soft-rounding ops that do not depend on the device,
// shared by the CPU (csrc/cpu/adaround.cpp) and CUDA (csrc/cuda/adaround_cuda.cpp) bindings.
// The CUDA binding checks devices first, then calls these, so both give the same
// messages. ATen-dependent: bindings only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

namespace ptqx::bindings {

// alpha: float32/float64 [R, ...]; w_floor and grad_w are checked against it.
inline void check_alpha(const at::Tensor& alpha) {
  TORCH_CHECK(alpha.scalar_type() == at::kFloat || alpha.scalar_type() == at::kDouble,
              "alpha: expected float32 or float64, got ", alpha.scalar_type());
  TORCH_CHECK(alpha.dim() >= 1, "alpha: expected at least 1 dimension");
}

// w_floor (forward and backward) and grad_w (backward): alpha's dtype and shape.
inline void check_like_alpha(const char* name, const at::Tensor& t, const at::Tensor& alpha) {
  TORCH_CHECK(t.scalar_type() == alpha.scalar_type() && t.sizes() == alpha.sizes(), name, ": expected dtype ",
              alpha.scalar_type(), " and shape ", alpha.sizes(), " (those of alpha), got ", t.scalar_type(), " ",
              t.sizes());
}

// The grid (float32 scale/zero, one entry per output channel of alpha; maxq) and the
// rounding regulariser's exponent beta (0 switches the regulariser off).
inline void check_grid_and_beta(const at::Tensor& alpha, const at::Tensor& scale, const at::Tensor& zero,
                                int64_t maxq, double beta) {
  TORCH_CHECK(scale.scalar_type() == at::kFloat && zero.scalar_type() == at::kFloat,
              "scale/zero: expected float32");
  TORCH_CHECK(scale.numel() == alpha.size(0) && zero.numel() == alpha.size(0), "scale/zero: expected ",
              alpha.size(0), " entries (one per output channel)");
  TORCH_CHECK(maxq >= 1 && maxq <= 255, "maxq: expected [1, 255], got ", maxq);
  TORCH_CHECK(std::isfinite(beta) && (beta == 0.0 || beta >= 1.0), "beta: expected 0 or a finite value >= 1, got ",
              beta);
}

inline void check_grad_reg(const at::Tensor& grad_reg) {
  TORCH_CHECK(grad_reg.numel() == 1, "grad_reg: expected one element, got ", grad_reg.numel());
}

}  // namespace ptqx::bindings
