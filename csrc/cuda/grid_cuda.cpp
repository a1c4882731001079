// CUDA bindings for the uniform-grid ops: check, pick the stream, call the launcher.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "ptqx/bindings/device_checks.h"
#include "ptqx/bindings/grid_checks.h"
#include "ptqx/cuda/grid.h"
#include "ptqx/cuda/launch.h"

namespace ptqx {
namespace {

void check_cuda_wsz(const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero, int64_t maxq) {
  bindings::check_cuda_same_device({{"w", &w}, {"scale", &scale}, {"zero", &zero}});
  bindings::check_wsz(w, scale, zero, maxq);
}

at::Tensor fake_quant_cuda(const at::Tensor& w_, const at::Tensor& scale_, const at::Tensor& zero_,
                           int64_t maxq) {
  check_cuda_wsz(w_, scale_, zero_, maxq);
  c10::cuda::CUDAGuard guard(w_.device());
  auto w = w_.contiguous(), scale = scale_.contiguous(), zero = zero_.contiguous();
  auto out = at::empty_like(w);
  const int64_t rows = w.size(0), cols = rows ? w.numel() / rows : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (w.scalar_type() == at::kFloat) {
    err = cuda::fake_quant_rows<float>(w.const_data_ptr<float>(), scale.const_data_ptr<float>(),
                                       zero.const_data_ptr<float>(), rows, cols, int(maxq),
                                       out.mutable_data_ptr<float>(), stream);
  } else {
    err = cuda::fake_quant_rows<double>(w.const_data_ptr<double>(), scale.const_data_ptr<float>(),
                                        zero.const_data_ptr<float>(), rows, cols, int(maxq),
                                        out.mutable_data_ptr<double>(), stream);
  }
  TORCH_CHECK(err == cudaSuccess, "fake_quant: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor quantize_codes_cuda(const at::Tensor& w_, const at::Tensor& scale_,
                               const at::Tensor& zero_, int64_t maxq) {
  check_cuda_wsz(w_, scale_, zero_, maxq);
  c10::cuda::CUDAGuard guard(w_.device());
  auto w = w_.contiguous(), scale = scale_.contiguous(), zero = zero_.contiguous();
  auto out = at::empty(w.sizes(), w.options().dtype(at::kByte));
  const int64_t rows = w.size(0), cols = rows ? w.numel() / rows : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (w.scalar_type() == at::kFloat) {
    err = cuda::quantize_codes_rows<float>(w.const_data_ptr<float>(), scale.const_data_ptr<float>(),
                                           zero.const_data_ptr<float>(), rows, cols, int(maxq),
                                           out.mutable_data_ptr<uint8_t>(), stream);
  } else {
    err = cuda::quantize_codes_rows<double>(w.const_data_ptr<double>(), scale.const_data_ptr<float>(),
                                            zero.const_data_ptr<float>(), rows, cols, int(maxq),
                                            out.mutable_data_ptr<uint8_t>(), stream);
  }
  TORCH_CHECK(err == cudaSuccess, "quantize_codes: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

std::tuple<at::Tensor, at::Tensor> grid_search_cuda(const at::Tensor& w_, int64_t maxq, bool symmetric,
                                                    bool include_zero, double norm, int64_t grid,
                                                    int64_t steps) {
  bindings::check_cuda_same_device({{"w", &w_}});
  bindings::check_grid_search(w_, maxq, norm, grid, steps);
  // GridOptions holds grid and steps as int: a larger value would wrap and give NaN scales.
  TORCH_CHECK(grid <= std::numeric_limits<int32_t>::max(), "grid: expected <= ",
              std::numeric_limits<int32_t>::max(), ", got ", grid);
  c10::cuda::CUDAGuard guard(w_.device());
  auto w = w_.contiguous();
  const int64_t rows = w.size(0), cols = rows ? w.numel() / rows : 0;
  auto scale = at::empty({rows}, w.options().dtype(at::kFloat));
  auto zero = at::empty({rows}, w.options().dtype(at::kFloat));
  const GridOptions o{static_cast<int>(maxq), symmetric, include_zero, static_cast<float>(norm),
                      static_cast<int>(grid), static_cast<int>(steps)};
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (w.scalar_type() == at::kFloat) {
    err = cuda::grid_search_rows<float>(w.const_data_ptr<float>(), rows, cols, o,
                                        scale.mutable_data_ptr<float>(), zero.mutable_data_ptr<float>(), stream);
  } else {
    err = cuda::grid_search_rows<double>(w.const_data_ptr<double>(), rows, cols, o,
                                         scale.mutable_data_ptr<float>(), zero.mutable_data_ptr<float>(), stream);
  }
  TORCH_CHECK(err == cudaSuccess, "grid_search: CUDA launch failed: ", cudaGetErrorString(err));
  return {scale, zero};
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CUDA, m) {
  m.impl("grid_search", &grid_search_cuda);
  m.impl("fake_quant", &fake_quant_cuda);
  m.impl("quantize_codes", &quantize_codes_cuda);
}

}  // namespace ptqx
