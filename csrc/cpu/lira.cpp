// CPU binding for the leave-one-out LiRA statistics (schema: ptqx/ops/_library.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <tuple>

#include "ptqx/bindings/lira_checks.h"
#include "ptqx/lira.h"

namespace ptqx {
namespace {

std::tuple<at::Tensor, at::Tensor> lira_loo_stats_cpu_op(const at::Tensor& ref_, const at::Tensor& keep_) {
  bindings::check_loo_stats(ref_, keep_);
  auto ref = ref_.contiguous();
  auto keep = keep_.contiguous();
  const int64_t n = ref.size(0), m = ref.size(1), v = ref.size(2);
  auto stats = at::empty({6, n, m, v}, ref.options());
  auto counts = at::empty({2, n, m}, keep.options().dtype(at::kLong));
  if (ref.scalar_type() == at::kFloat) {
    lira_loo_stats_cpu<float>(ref.const_data_ptr<float>(), keep.const_data_ptr<bool>(), n, m, v,
                              stats.mutable_data_ptr<float>(), counts.mutable_data_ptr<int64_t>());
  } else {
    lira_loo_stats_cpu<double>(ref.const_data_ptr<double>(), keep.const_data_ptr<bool>(), n, m, v,
                               stats.mutable_data_ptr<double>(), counts.mutable_data_ptr<int64_t>());
  }
  return {stats, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CPU, m) { m.impl("lira_loo_stats", &lira_loo_stats_cpu_op); }

}  // namespace ptqx
