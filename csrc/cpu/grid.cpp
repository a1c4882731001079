// CPU bindings for the uniform-grid ops (schemas: ptqx/ops/_library.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "ptqx/grid.h"
#include "ptqx/grid_search.h"

namespace ptqx {
namespace {

void check_wsz(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero, int64_t maxq) {
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble,
              "w: expected float32 or float64, got ", w.scalar_type());
  TORCH_CHECK(w.dim() >= 1, "w: expected at least 1 dimension");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && zero.scalar_type() == at::kFloat,
              "scale/zero: expected float32");
  TORCH_CHECK(scale.numel() == w.size(0) && zero.numel() == w.size(0),
              "scale/zero: expected ", w.size(0), " entries (one per output channel)");
  TORCH_CHECK(maxq >= 1 && maxq <= 255, "maxq: expected [1, 255], got ", maxq);
}

at::Tensor fake_quant_cpu(const at::Tensor& w_, const at::Tensor& scale_, const at::Tensor& zero_,
                          int64_t maxq) {
  check_wsz(w_, scale_, zero_, maxq);
  auto w = w_.contiguous();
  auto scale = scale_.contiguous();
  auto zero = zero_.contiguous();
  auto out = at::empty_like(w);
  const int64_t rows = w.size(0);
  const int64_t cols = rows ? w.numel() / rows : 0;
  if (w.scalar_type() == at::kFloat) {
    fake_quant_rows<float>(w.const_data_ptr<float>(), scale.const_data_ptr<float>(),
                           zero.const_data_ptr<float>(), rows, cols, static_cast<int>(maxq),
                           out.mutable_data_ptr<float>());
  } else {
    fake_quant_rows<double>(w.const_data_ptr<double>(), scale.const_data_ptr<float>(),
                            zero.const_data_ptr<float>(), rows, cols, static_cast<int>(maxq),
                            out.mutable_data_ptr<double>());
  }
  return out;
}

at::Tensor quantize_codes_cpu(const at::Tensor& w_, const at::Tensor& scale_,
                              const at::Tensor& zero_, int64_t maxq) {
  check_wsz(w_, scale_, zero_, maxq);
  auto w = w_.contiguous();
  auto scale = scale_.contiguous();
  auto zero = zero_.contiguous();
  auto out = at::empty(w.sizes(), w.options().dtype(at::kByte));
  const int64_t rows = w.size(0);
  const int64_t cols = rows ? w.numel() / rows : 0;
  if (w.scalar_type() == at::kFloat) {
    quantize_codes_rows<float>(w.const_data_ptr<float>(), scale.const_data_ptr<float>(),
                               zero.const_data_ptr<float>(), rows, cols, static_cast<int>(maxq),
                               out.mutable_data_ptr<uint8_t>());
  } else {
    quantize_codes_rows<double>(w.const_data_ptr<double>(), scale.const_data_ptr<float>(),
                                zero.const_data_ptr<float>(), rows, cols, static_cast<int>(maxq),
                                out.mutable_data_ptr<uint8_t>());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> grid_search_cpu(const at::Tensor& w_, int64_t maxq, bool symmetric,
                                                   bool include_zero, double norm, int64_t grid,
                                                   int64_t steps) {
  TORCH_CHECK(w_.scalar_type() == at::kFloat || w_.scalar_type() == at::kDouble,
              "w: expected float32 or float64, got ", w_.scalar_type());
  TORCH_CHECK(w_.dim() >= 1, "w: expected at least 1 dimension");
  TORCH_CHECK(maxq >= 1 && maxq <= 255, "maxq: expected [1, 255], got ", maxq);
  TORCH_CHECK(grid >= 1, "grid: expected >= 1, got ", grid);
  TORCH_CHECK(steps >= 1 && steps <= grid, "steps: expected [1, grid=", grid, "], got ", steps);
  TORCH_CHECK(norm > 0 && std::isfinite(norm), "norm: expected a finite value > 0, got ", norm);
  auto w = w_.contiguous();
  const int64_t rows = w.size(0);
  const int64_t cols = rows ? w.numel() / rows : 0;
  auto scale = at::empty({rows}, w.options().dtype(at::kFloat));
  auto zero = at::empty({rows}, w.options().dtype(at::kFloat));
  const GridOptions o{static_cast<int>(maxq), symmetric, include_zero, static_cast<float>(norm),
                      static_cast<int>(grid), static_cast<int>(steps)};
  if (w.scalar_type() == at::kFloat) {
    grid_search_rows<float>(w.const_data_ptr<float>(), rows, cols, o, scale.mutable_data_ptr<float>(),
                            zero.mutable_data_ptr<float>());
  } else {
    grid_search_rows<double>(w.const_data_ptr<double>(), rows, cols, o,
                             scale.mutable_data_ptr<float>(), zero.mutable_data_ptr<float>());
  }
  return {scale, zero};
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CPU, m) {
  m.impl("grid_search", &grid_search_cpu);
  m.impl("fake_quant", &fake_quant_cpu);
  m.impl("quantize_codes", &quantize_codes_cpu);
}

}  // namespace ptqx
