// Argument checks of the packed low-bit ops that do not depend on the device, shared by
// the CPU (csrc/cpu/lowbit.cpp) and CUDA (csrc/cuda/lowbit_cuda.cpp) bindings; the CUDA
// binding checks devices first (CUDA tensors, one device), then calls these, so dtype and
// shape errors read the same on both. Only the CPU binding checks that scale and zero are
// finite (on CUDA that would cost a device sync per call; the Python wrapper checks it).
// ATen-dependent: bindings only.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <optional>

#include "ptqx/lowbit.h"  // the packed layout (lowbit::row_bytes), shared with the CUDA kernels

namespace ptqx::bindings {

inline void check_bits(int64_t bits) {
  TORCH_CHECK(bits == 2 || bits == 4, "bits: expected 2 or 4 (ternary codes use 2), got ", bits);
}

// codes: integer [R, C] (values checked by check_codes_range).
inline void check_codes(const at::Tensor& codes) {
  TORCH_CHECK(codes.dim() == 2, "codes: expected 2 dimensions [R, C], got ", codes.sizes());
  const auto st = codes.scalar_type();
  TORCH_CHECK(st == at::kByte || st == at::kChar || st == at::kShort || st == at::kInt || st == at::kLong,
              "codes: expected an integer dtype, got ", st);
}

// Every code in [0, 2^bits - 1] (one reduction over codes; skipped when empty).
inline void check_codes_range(const at::Tensor& codes, int64_t bits) {
  if (!codes.numel()) return;
  const int64_t maxq = (int64_t{1} << bits) - 1;
  auto [lo, hi] = at::aminmax(codes);
  const int64_t l = lo.item<int64_t>(), h = hi.item<int64_t>();
  TORCH_CHECK(l >= 0 && h <= maxq, "codes: values must lie in [0, ", maxq, "] for bits=", bits,
              ", got range [", l, ", ", h, "]");
}

// packed: uint8 [R, lowbit::row_bytes(cols, bits)].
inline void check_packed(const at::Tensor& packed, int64_t bits, int64_t cols) {
  TORCH_CHECK(packed.scalar_type() == at::kByte, "packed: expected uint8, got ", packed.scalar_type());
  TORCH_CHECK(packed.dim() == 2, "packed: expected 2 dimensions, got ", packed.sizes());
  const int64_t want = lowbit::row_bytes(cols, static_cast<int>(bits));
  TORCH_CHECK(packed.size(1) == want, "packed: expected ", want, " bytes per row for ", cols,
              " columns at ", bits, " bits, got shape ", packed.sizes());
}

// scale/zero/bias of a packed linear: float32 [rows] (bias optional). Returns the
// contiguous bias, undefined when there is none.
inline at::Tensor check_row_params(const at::Tensor& scale, const at::Tensor& zero,
                                   const std::optional<at::Tensor>& bias_, int64_t rows) {
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.dim() == 1 && scale.size(0) == rows,
              "scale: expected float32 [", rows, "], got ", scale.scalar_type(), " ", scale.sizes());
  TORCH_CHECK(zero.scalar_type() == at::kFloat && zero.dim() == 1 && zero.size(0) == rows,
              "zero: expected float32 [", rows, "], got ", zero.scalar_type(), " ", zero.sizes());
  at::Tensor bias;
  if (bias_.has_value()) {
    bias = bias_->contiguous();
    TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.dim() == 1 && bias.size(0) == rows,
                "bias: expected float32 [", rows, "], got ", bias.scalar_type(), " ", bias.sizes());
  }
  return bias;
}

inline void check_linear_input(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "x: expected float32, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1, "x: expected at least 1 dimension");
}

// lowbit_linear_int8act accumulates in int32: the activation count must keep it exact.
inline void check_int8act_cols(int64_t cols, int64_t max_cols) {
  TORCH_CHECK_VALUE(cols <= max_cols, "x: lowbit_linear_int8act accumulates in int32 and supports at most ",
                    max_cols, " input features, got ", cols);
}

// lowbit_linear_int8act subtracts zero[r] * sum(xq) in int32: zero (host float32 [rows])
// must hold integers in [0, 2^bits - 1].
// The CPU bindings' finiteness check of a per-row parameter (scale, zero): one O(R) loop,
// cheaper on a small layer than the tensor ops the Python wrapper would otherwise run.
inline void check_finite_rows(const char* name, const float* v, int64_t rows) {
  int64_t bad = 0;
  for (int64_t r = 0; r < rows; ++r) bad += !std::isfinite(v[r]);
  TORCH_CHECK_VALUE(bad == 0, name, ": contains ", bad, " NaN/Inf value(s)");
}

inline void check_int8act_zero(const float* zero, int64_t rows, int64_t bits) {
  const float maxq = static_cast<float>((int64_t{1} << bits) - 1);
  for (int64_t r = 0; r < rows; ++r) {
    const float z = zero[r];
    TORCH_CHECK_VALUE(std::isfinite(z) && z >= 0.f && z <= maxq && z == std::nearbyint(z),
                      "zero: lowbit_linear_int8act needs integer values in [0, ", maxq, "] for bits=", bits,
                      ", got ", z, " at row ", r);
  }
}

}  // namespace ptqx::bindings
