// CPU binding of lowbit_linear_int8act (schema: ptqx/ops/_library.py; kernel:
// csrc/include/ptqx/lowbit_int8act.h): packed weights times per-token int8 activations.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <vector>

#include "ptqx/bindings/lowbit_checks.h"
#include "ptqx/lowbit_int8act.h"

namespace ptqx {
namespace {

at::Tensor lowbit_linear_int8act_cpu(const at::Tensor& x_, const at::Tensor& packed_, const at::Tensor& scale_,
                                     const at::Tensor& zero_, int64_t bits,
                                     const std::optional<at::Tensor>& bias_) {
  bindings::check_bits(bits);
  bindings::check_linear_input(x_);
  const int64_t cols = x_.size(-1);
  bindings::check_int8act_cols(cols, lowbit::int8act::kMaxCols);
  bindings::check_packed(packed_, bits, cols);
  const int64_t rows = packed_.size(0);
  const at::Tensor bias = bindings::check_row_params(scale_, zero_, bias_, rows);
  auto packed = packed_.contiguous(), scale = scale_.contiguous(), zero = zero_.contiguous();
  const float* sp = scale.const_data_ptr<float>();
  const float* zp = zero.const_data_ptr<float>();
  bindings::check_finite_rows("scale", sp, rows);
  bindings::check_int8act_zero(zp, rows, bits);
  const int64_t ntok = c10::multiply_integers(x_.sizes().begin(), x_.sizes().end() - 1);
  auto x = x_.reshape({ntok, cols}).contiguous();
  std::vector<int64_t> out_shape(x_.sizes().begin(), x_.sizes().end());
  out_shape.back() = rows;
  auto out = at::empty({ntok, rows}, x.options());
  if (ntok == 0 || rows == 0) return out.reshape(out_shape);
  lowbit::int8act::linear(x.const_data_ptr<float>(), ntok, cols, packed.const_data_ptr<uint8_t>(), rows,
                          static_cast<int>(bits), sp, zp, bias.defined() ? bias.const_data_ptr<float>() : nullptr,
                          out.mutable_data_ptr<float>(), rows);
  return out.reshape(out_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CPU, m) { m.impl("lowbit_linear_int8act", &lowbit_linear_int8act_cpu); }

}  // namespace ptqx
