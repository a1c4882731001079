// Argument checks of the uniform-grid ops that do not depend on the device, shared by
// the CPU (csrc/cpu/grid.cpp) and CUDA (csrc/cuda/grid_cuda.cpp) bindings; the CUDA binding
// checks that the tensors are CUDA tensors first. ATen-dependent: bindings only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

namespace ptqx::bindings {

// fake_quant / quantize_codes: w float32/float64 [R, ...], float32 scale/zero with one
// entry per output channel (row), maxq in [1, 255].
inline void check_wsz(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero, int64_t maxq) {
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble,
              "w: expected float32 or float64, got ", w.scalar_type());
  TORCH_CHECK(w.dim() >= 1, "w: expected at least 1 dimension");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && zero.scalar_type() == at::kFloat,
              "scale/zero: expected float32");
  TORCH_CHECK(scale.numel() == w.size(0) && zero.numel() == w.size(0),
              "scale/zero: expected ", w.size(0), " entries (one per output channel)");
  TORCH_CHECK(maxq >= 1 && maxq <= 255, "maxq: expected [1, 255], got ", maxq);
}

inline void check_grid_search(const at::Tensor& w, int64_t maxq, double norm, int64_t grid, int64_t steps) {
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble,
              "w: expected float32 or float64, got ", w.scalar_type());
  TORCH_CHECK(w.dim() >= 1, "w: expected at least 1 dimension");
  TORCH_CHECK(maxq >= 1 && maxq <= 255, "maxq: expected [1, 255], got ", maxq);
  TORCH_CHECK(grid >= 1, "grid: expected >= 1, got ", grid);
  TORCH_CHECK(steps >= 1 && steps <= grid, "steps: expected [1, grid=", grid, "], got ", steps);
  TORCH_CHECK(norm > 0 && std::isfinite(norm), "norm: expected a finite value > 0, got ", norm);
}

}  // namespace ptqx::bindings
