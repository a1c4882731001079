// CPU binding for OBC's row-wise greedy quantization (schemas: ptqx/ops/_library.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <ATen/core/TensorBody.h>
#include <torch/library.h>

#include <tuple>

#include "ptqx/bindings/obc_checks.h"
#include "ptqx/obc.h"

namespace ptqx {
namespace {

std::tuple<at::Tensor, at::Tensor> run(const at::Tensor& weight_, const at::Tensor& hinv_,
                                       const at::Tensor& scale_, const at::Tensor& zero_,
                                       int64_t maxq, bool with_order) {
  bindings::check_obc(weight_, hinv_, scale_, zero_, maxq);
  // Compute in the wider dtype (reference.obc_compute_dtype), return in weight's.
  const auto dtype = c10::promoteTypes(weight_.scalar_type(), hinv_.scalar_type());
  auto weight = weight_.to(dtype).contiguous();
  auto hinv = hinv_.to(dtype).contiguous();
  auto scale = scale_.contiguous(), zero = zero_.contiguous();
  const int64_t rows = weight.size(0), cols = weight.size(1);
  auto q = at::zeros({rows, cols}, weight.options());
  auto order = at::zeros({with_order ? rows : 0, with_order ? cols : 0},
                         weight.options().dtype(at::kLong));
  int64_t* order_ptr = with_order ? order.mutable_data_ptr<int64_t>() : nullptr;
  if (dtype == at::kFloat) {
    obc_quantize_rows<float>(weight.const_data_ptr<float>(), hinv.const_data_ptr<float>(),
                             scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows,
                             cols, int(maxq), q.mutable_data_ptr<float>(), order_ptr);
  } else {
    obc_quantize_rows<double>(weight.const_data_ptr<double>(), hinv.const_data_ptr<double>(),
                              scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows,
                              cols, int(maxq), q.mutable_data_ptr<double>(), order_ptr);
  }
  return {q.to(weight_.scalar_type()), order};
}

at::Tensor obc_quantize_rows_cpu(const at::Tensor& weight, const at::Tensor& hinv,
                                 const at::Tensor& scale, const at::Tensor& zero, int64_t maxq) {
  return std::get<0>(run(weight, hinv, scale, zero, maxq, false));
}

std::tuple<at::Tensor, at::Tensor> obc_quantize_rows_order_cpu(const at::Tensor& weight,
                                                               const at::Tensor& hinv,
                                                               const at::Tensor& scale,
                                                               const at::Tensor& zero,
                                                               int64_t maxq) {
  return run(weight, hinv, scale, zero, maxq, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CPU, m) {
  m.impl("obc_quantize_rows", &obc_quantize_rows_cpu);
  m.impl("obc_quantize_rows_order", &obc_quantize_rows_order_cpu);
}

}  // namespace ptqx
