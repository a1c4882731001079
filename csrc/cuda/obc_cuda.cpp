// CUDA binding for OBC's row-wise greedy quantization: check, allocate the per-block
// workspace, call the torch-free launcher (csrc/cuda/obc_kernels.cu).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "ptqx/bindings/device_checks.h"
#include "ptqx/bindings/obc_checks.h"
#include "ptqx/cuda/obc.h"

namespace ptqx {
namespace {

std::tuple<at::Tensor, at::Tensor> run_cuda(const at::Tensor& weight_, const at::Tensor& hinv_,
                                            const at::Tensor& scale_, const at::Tensor& zero_,
                                            int64_t maxq, bool with_order) {
  bindings::check_cuda_same_device(
      {{"weight", &weight_}, {"hinv", &hinv_}, {"scale", &scale_}, {"zero", &zero_}});
  bindings::check_obc(weight_, hinv_, scale_, zero_, maxq);
  const int64_t rows = weight_.size(0), cols = weight_.size(1);
  c10::cuda::CUDAGuard guard(weight_.device());

  const auto dtype = c10::promoteTypes(weight_.scalar_type(), hinv_.scalar_type());
  auto weight = weight_.to(dtype).contiguous();
  auto hinv = hinv_.to(dtype).contiguous();
  auto scale = scale_.contiguous(), zero = zero_.contiguous();
  auto q = at::zeros({rows, cols}, weight.options());
  auto order = at::zeros({with_order ? rows : 0, with_order ? cols : 0},
                         weight.options().dtype(at::kLong));
  if (rows == 0 || cols == 0) return {q.to(weight_.scalar_type()), order};

  // Same pivot batch rule as the CPU kernel; one block (and one workspace slot holding
  // two [C, C] matrices) per row in flight, within a quarter of the free memory.
  const int64_t batch = std::min<int64_t>(
      std::clamp<int64_t>(cols / 8, 8, cuda::kObcMaxBatch), cols);
  size_t free_b = 0, total_b = 0;
  TORCH_CHECK(cudaMemGetInfo(&free_b, &total_b) == cudaSuccess, "obc: cudaMemGetInfo failed");
  // cudaMemGetInfo does not count what torch's caching allocator holds but has not handed
  // out (after a calibration pass that can be most of the GPU): counted as free, or the
  // rows would run a few blocks at a time. Stat index 0 is the aggregate in every torch.
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(weight.get_device());
    const int64_t cached = stats.reserved_bytes[0].current - stats.allocated_bytes[0].current;
    if (cached > 0) free_b += size_t(cached);
  } catch (const c10::Error&) {  // another allocator backend: cudaMemGetInfo alone
  }
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, weight.get_device());
  const size_t per_slot = dtype == at::kFloat ? cuda::obc_workspace_bytes<float>(cols, batch, 1)
                                              : cuda::obc_workspace_bytes<double>(cols, batch, 1);
  int64_t slots = std::min<int64_t>(rows, 2 * std::max(sms, 1));
  slots = std::min<int64_t>(slots, std::max<int64_t>(1, int64_t(free_b / 4 / per_slot)));
  auto workspace = at::empty({int64_t(per_slot * slots)}, weight.options().dtype(at::kByte));

  int64_t* order_ptr = with_order ? order.mutable_data_ptr<int64_t>() : nullptr;
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (dtype == at::kFloat) {
    err = cuda::obc_quantize_rows<float>(
        weight.const_data_ptr<float>(), hinv.const_data_ptr<float>(), scale.const_data_ptr<float>(),
        zero.const_data_ptr<float>(), rows, cols, int(maxq), q.mutable_data_ptr<float>(), order_ptr,
        batch, slots, workspace.mutable_data_ptr(), stream);
  } else {
    err = cuda::obc_quantize_rows<double>(
        weight.const_data_ptr<double>(), hinv.const_data_ptr<double>(),
        scale.const_data_ptr<float>(), zero.const_data_ptr<float>(), rows, cols, int(maxq),
        q.mutable_data_ptr<double>(), order_ptr, batch, slots, workspace.mutable_data_ptr(),
        stream);
  }
  TORCH_CHECK(err == cudaSuccess, "obc_quantize_rows: CUDA launch failed: ", cudaGetErrorString(err));
  return {q.to(weight_.scalar_type()), order};
}

at::Tensor obc_quantize_rows_cuda(const at::Tensor& weight, const at::Tensor& hinv,
                                  const at::Tensor& scale, const at::Tensor& zero, int64_t maxq) {
  return std::get<0>(run_cuda(weight, hinv, scale, zero, maxq, false));
}

std::tuple<at::Tensor, at::Tensor> obc_quantize_rows_order_cuda(const at::Tensor& weight,
                                                                const at::Tensor& hinv,
                                                                const at::Tensor& scale,
                                                                const at::Tensor& zero,
                                                                int64_t maxq) {
  return run_cuda(weight, hinv, scale, zero, maxq, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CUDA, m) {
  m.impl("obc_quantize_rows", &obc_quantize_rows_cuda);
  m.impl("obc_quantize_rows_order", &obc_quantize_rows_order_cuda);
}

}  // namespace ptqx
