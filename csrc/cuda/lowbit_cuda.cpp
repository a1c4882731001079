// CUDA bindings for packed low-bit weights: check, pick the stream, call the launcher.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "ptqx/bindings/device_checks.h"
#include "ptqx/bindings/lowbit_checks.h"
#include "ptqx/cuda/lowbit.h"
#include "ptqx/lowbit.h"  // lowbit::row_bytes: the packed layout the CUDA kernels share
#include "ptqx/lowbit_int8act.h"  // lowbit::int8act::kMaxCols

namespace ptqx {
namespace {

// The kernels read whole 32-bit words: make sure the base is 4-byte aligned.
at::Tensor aligned_contiguous(const at::Tensor& t) {
  auto c = t.contiguous();
  if (reinterpret_cast<uintptr_t>(c.const_data_ptr()) % 4 != 0) c = c.clone();
  return c;
}

at::Tensor pack_weights_cuda(const at::Tensor& codes_, int64_t bits) {
  bindings::check_bits(bits);
  bindings::check_cuda_same_device({{"codes", &codes_}});
  bindings::check_codes(codes_);
  c10::cuda::CUDAGuard guard(codes_.device());
  bindings::check_codes_range(codes_, bits);
  auto codes = codes_.to(at::kByte).contiguous();
  const int64_t rows = codes.size(0), cols = codes.size(1);
  auto out = at::empty({rows, lowbit::row_bytes(cols, int(bits))}, codes.options());
  auto err = cuda::lowbit_pack(codes.const_data_ptr<uint8_t>(), rows, cols, int(bits),
                               out.mutable_data_ptr<uint8_t>(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "pack_weights: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor unpack_weights_cuda(const at::Tensor& packed_, int64_t bits, int64_t cols) {
  bindings::check_bits(bits);
  TORCH_CHECK(cols >= 0, "cols: expected >= 0, got ", cols);
  bindings::check_cuda_same_device({{"packed", &packed_}});
  bindings::check_packed(packed_, bits, cols);
  c10::cuda::CUDAGuard guard(packed_.device());
  auto packed = aligned_contiguous(packed_);
  const int64_t rows = packed.size(0);
  auto out = at::empty({rows, cols}, packed.options());
  auto err = cuda::lowbit_unpack(packed.const_data_ptr<uint8_t>(), rows, cols, int(bits),
                                 out.mutable_data_ptr<uint8_t>(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "unpack_weights: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

// Checks shared by both packed linears on CUDA: every tensor on x's GPU, then the CPU
// binding's checks with its messages (the finiteness of scale and zero is left to the
// Python wrapper: here it would cost a device sync per call). Returns the contiguous bias,
// undefined when there is none. max_cols: the int8 variant's exact-int32 column limit, or 0.
at::Tensor check_cuda_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                             const at::Tensor& zero, int64_t bits, const std::optional<at::Tensor>& bias,
                             int64_t max_cols) {
  bindings::check_bits(bits);
  if (bias.has_value()) {
    bindings::check_cuda_same_device(
        {{"x", &x}, {"packed", &packed}, {"scale", &scale}, {"zero", &zero}, {"bias", &*bias}});
  } else {
    bindings::check_cuda_same_device({{"x", &x}, {"packed", &packed}, {"scale", &scale}, {"zero", &zero}});
  }
  bindings::check_linear_input(x);
  const int64_t cols = x.size(-1);
  if (max_cols) bindings::check_int8act_cols(cols, max_cols);
  bindings::check_packed(packed, bits, cols);
  return bindings::check_row_params(scale, zero, bias, packed.size(0));
}

// x as [tokens, C], the other inputs contiguous, and the [tokens, R] output; call under
// the device guard.
struct CudaLinearCall {
  at::Tensor x, packed, scale, zero, out;
  int64_t ntok, rows, cols;
  std::vector<int64_t> out_shape;
};

CudaLinearCall prepare_cuda_linear(const at::Tensor& x_, const at::Tensor& packed_, const at::Tensor& scale_,
                                   const at::Tensor& zero_) {
  CudaLinearCall c;
  c.cols = x_.size(-1);
  c.rows = packed_.size(0);
  c.ntok = c10::multiply_integers(x_.sizes().begin(), x_.sizes().end() - 1);
  c.x = x_.reshape({c.ntok, c.cols}).contiguous();
  c.packed = aligned_contiguous(packed_);
  c.scale = scale_.contiguous();
  c.zero = zero_.contiguous();
  c.out_shape.assign(x_.sizes().begin(), x_.sizes().end());
  c.out_shape.back() = c.rows;
  c.out = at::empty({c.ntok, c.rows}, c.x.options());
  return c;
}

at::Tensor lowbit_linear_cuda(const at::Tensor& x_, const at::Tensor& packed_, const at::Tensor& scale_,
                              const at::Tensor& zero_, int64_t bits, const std::optional<at::Tensor>& bias_) {
  const at::Tensor bias = check_cuda_linear(x_, packed_, scale_, zero_, bits, bias_, 0);
  c10::cuda::CUDAGuard guard(x_.device());
  auto c = prepare_cuda_linear(x_, packed_, scale_, zero_);
  auto err = cuda::lowbit_linear(c.x.const_data_ptr<float>(), c.packed.const_data_ptr<uint8_t>(),
                                 c.scale.const_data_ptr<float>(), c.zero.const_data_ptr<float>(),
                                 bias.defined() ? bias.const_data_ptr<float>() : nullptr, c.ntok, c.rows, c.cols,
                                 int(bits), c.out.mutable_data_ptr<float>(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "lowbit_linear: CUDA launch failed: ", cudaGetErrorString(err));
  return c.out.reshape(c.out_shape);
}

// The zero-point check (integers in [0, 2^bits - 1]) is the Python wrapper's
// (ptqx.ops.lowbit_linear_int8act): here it would cost a device sync per call.
at::Tensor lowbit_linear_int8act_cuda(const at::Tensor& x_, const at::Tensor& packed_, const at::Tensor& scale_,
                                      const at::Tensor& zero_, int64_t bits,
                                      const std::optional<at::Tensor>& bias_) {
  const at::Tensor bias =
      check_cuda_linear(x_, packed_, scale_, zero_, bits, bias_, lowbit::int8act::kMaxCols);
  c10::cuda::CUDAGuard guard(x_.device());
  auto c = prepare_cuda_linear(x_, packed_, scale_, zero_);
  const auto opts = c.x.options();
  auto xq = at::empty({c.ntok, c.cols}, opts.dtype(at::kChar));
  auto qsum = at::empty({c.ntok}, opts.dtype(at::kInt));
  auto sx = at::empty({c.ntok}, opts);
  auto finite = at::empty({c.ntok}, opts.dtype(at::kByte));
  auto err = cuda::lowbit_linear_int8act(
      c.x.const_data_ptr<float>(), c.packed.const_data_ptr<uint8_t>(), c.scale.const_data_ptr<float>(),
      c.zero.const_data_ptr<float>(), bias.defined() ? bias.const_data_ptr<float>() : nullptr, c.ntok, c.rows,
      c.cols, int(bits), xq.mutable_data_ptr<int8_t>(), qsum.mutable_data_ptr<int32_t>(),
      sx.mutable_data_ptr<float>(), finite.mutable_data_ptr<uint8_t>(), c.out.mutable_data_ptr<float>(),
      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "lowbit_linear_int8act: CUDA launch failed: ", cudaGetErrorString(err));
  return c.out.reshape(c.out_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CUDA, m) {
  m.impl("pack_weights", &pack_weights_cuda);
  m.impl("unpack_weights", &unpack_weights_cuda);
  m.impl("lowbit_linear", &lowbit_linear_cuda);
  m.impl("lowbit_linear_int8act", &lowbit_linear_int8act_cuda);
}

}  // namespace ptqx
