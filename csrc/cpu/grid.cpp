// CPU bindings for the uniform-grid ops (schemas: ptqx/ops/_library.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "ptqx/bindings/grid_checks.h"
#include "ptqx/grid.h"
#include "ptqx/grid_search.h"

namespace ptqx {
namespace {

at::Tensor fake_quant_cpu(const at::Tensor& w_, const at::Tensor& scale_, const at::Tensor& zero_,
                          int64_t maxq) {
  bindings::check_wsz(w_, scale_, zero_, maxq);
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
  bindings::check_wsz(w_, scale_, zero_, maxq);
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
  bindings::check_grid_search(w_, maxq, norm, grid, steps);
  // GridOptions holds grid and steps as int: a larger value would wrap and give NaN scales.
  TORCH_CHECK(grid <= std::numeric_limits<int32_t>::max(), "grid: expected <= ",
              std::numeric_limits<int32_t>::max(), ", got ", grid);
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
