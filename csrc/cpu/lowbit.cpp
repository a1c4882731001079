// CPU bindings for packed low-bit weights (schemas: ptqx/ops/_library.py; kernels:
// csrc/include/ptqx/lowbit.h).
//
// lowbit_linear picks one of two paths by batch size (tokens = x.numel() / C):
// - few tokens: a GEMV that streams the packed bytes once per group of up to 4 tokens
//   and unpacks in registers (memory-bound regime: 8-16x fewer weight bytes than fp32);
// - many tokens: a GEMM whose weight-panel packing step is the dequantization
//   (csrc/include/ptqx/lowbit_gemm.h; compute-bound regime: same FLOPs as fp32, each
//   weight unpacked once). Without AVX2 it falls back to dequantizing a block of rows
//   into a small fp32 buffer that stays in cache and handing it to ATen's GEMM.
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "ptqx/bindings/lowbit_checks.h"
#include "ptqx/lowbit.h"
#include "ptqx/lowbit_gemm.h"

namespace ptqx {
namespace {

// Tokens from which the packed GEMM (lowbit_gemm.h) beats the register GEMV. The GEMV
// unpacks the weights once per pass of up to 4 tokens, the GEMM once in all; 2-bit codes
// unpack in two vector ops per 8 weights, 4-bit in four, so 2-bit passes stay cheaper for
// longer (znver3, 2 threads, cached weights, GEMV vs GEMM ms: 2-bit 4096x4096 12 tokens
// 3.7 vs 4.1, 24 tokens 6.3 vs 6.7, 512x4608 12 tokens 0.58 vs 0.56; 4-bit 512x4608
// 8 tokens 0.46 vs 0.51, 9 tokens 0.55 vs 0.51). PTQX_LOWBIT_GEMM_MIN_TOKENS overrides
// both (read once), for re-tuning on another CPU.
int64_t gemm_min_tokens(int bits) {
  static const int64_t over = [] {
    const char* e = std::getenv("PTQX_LOWBIT_GEMM_MIN_TOKENS");
    return e ? std::max<int64_t>(1, std::atoll(e)) : int64_t{0};
  }();
  if (over > 0) return over;
  return bits == 2 ? 13 : 9;
}
// fp32 bytes of one dequantized row block: it must stay in cache (L2 + the 32 MB L3)
// until the GEMM reads it, yet be large enough that the GEMM runs at full speed and
// the two parallel regions per block (dequantize, GEMM) are few.
constexpr int64_t kTileBytes = 4 << 20;

at::Tensor pack_weights_cpu(const at::Tensor& codes_, int64_t bits) {
  bindings::check_bits(bits);
  bindings::check_codes(codes_);
  const int64_t maxq = (int64_t{1} << bits) - 1;
  at::Tensor codes = codes_;
  // uint8 codes skip the reduction: the packer counts the ones above maxq as it goes.
  if (codes.scalar_type() != at::kByte) {
    bindings::check_codes_range(codes, bits);
    codes = codes.to(at::kByte);
  }
  codes = codes.contiguous();
  const int64_t rows = codes.size(0), cols = codes.size(1);
  auto out = at::empty({rows, lowbit::row_bytes(cols, static_cast<int>(bits))}, codes.options());
  const int64_t bad = lowbit::pack_rows(codes.const_data_ptr<uint8_t>(), rows, cols,
                                        static_cast<int>(bits), out.mutable_data_ptr<uint8_t>());
  TORCH_CHECK(bad == 0, "codes: values must lie in [0, ", maxq, "] for bits=", bits, ", found ", bad,
              " larger code(s)");
  return out;
}

at::Tensor unpack_weights_cpu(const at::Tensor& packed_, int64_t bits, int64_t cols) {
  bindings::check_bits(bits);
  TORCH_CHECK(cols >= 0, "cols: expected >= 0, got ", cols);
  bindings::check_packed(packed_, bits, cols);
  auto packed = packed_.contiguous();
  const int64_t rows = packed.size(0);
  auto out = at::empty({rows, cols}, packed.options());
  lowbit::unpack_rows(packed.const_data_ptr<uint8_t>(), rows, cols, static_cast<int>(bits),
                      out.mutable_data_ptr<uint8_t>());
  return out;
}

at::Tensor lowbit_linear_cpu(const at::Tensor& x_, const at::Tensor& packed_, const at::Tensor& scale_,
                             const at::Tensor& zero_, int64_t bits, const std::optional<at::Tensor>& bias_) {
  bindings::check_bits(bits);
  bindings::check_linear_input(x_);
  const int64_t cols = x_.size(-1);
  bindings::check_packed(packed_, bits, cols);
  const int64_t rows = packed_.size(0);
  const at::Tensor bias = bindings::check_row_params(scale_, zero_, bias_, rows);
  auto packed = packed_.contiguous(), scale = scale_.contiguous(), zero = zero_.contiguous();
  bindings::check_finite_rows("scale", scale.const_data_ptr<float>(), rows);
  bindings::check_finite_rows("zero", zero.const_data_ptr<float>(), rows);
  // Product of the leading dims (reshape({-1, 0}) is ambiguous when C == 0).
  const int64_t ntok = c10::multiply_integers(x_.sizes().begin(), x_.sizes().end() - 1);
  auto x = x_.reshape({ntok, cols}).contiguous();
  std::vector<int64_t> out_shape(x_.sizes().begin(), x_.sizes().end());
  out_shape.back() = rows;
  auto out = at::empty({ntok, rows}, x.options());
  if (ntok == 0 || rows == 0) return out.reshape(out_shape);

  const int ibits = static_cast<int>(bits);
  const int64_t rb = lowbit::row_bytes(cols, ibits);
  const int64_t cpad = rb / lowbit::kBlockBytes * lowbit::codes_per_block(ibits);
  const uint8_t* pp = packed.const_data_ptr<uint8_t>();
  const float* sp = scale.const_data_ptr<float>();
  const float* zp = zero.const_data_ptr<float>();
  const float* bp = bias.defined() ? bias.const_data_ptr<float>() : nullptr;

  if (ntok < gemm_min_tokens(ibits) || cols == 0) {
    // Pad x with zeros to whole blocks so the kernel never reads past a row.
    at::Tensor xp = x;
    if (cpad != cols) {
      xp = at::zeros({ntok, cpad}, x.options());
      xp.narrow(1, 0, cols).copy_(x);
    }
    const float* xptr = xp.const_data_ptr<float>();
    float* yp = out.mutable_data_ptr<float>();
    for (int64_t t0 = 0; t0 < ntok; t0 += lowbit::kGemvMaxTokens) {
      const int nt = static_cast<int>(std::min<int64_t>(lowbit::kGemvMaxTokens, ntok - t0));
      lowbit::gemv(pp, rows, cols, ibits, sp, zp, bp, xptr + t0 * cpad, cpad, nt, yp + t0 * rows, rows);
    }
    return out.reshape(out_shape);
  }

#ifdef PTQX_LOWBIT_AVX2
  {
    float* yp = out.mutable_data_ptr<float>();
    const float* xptr = x.const_data_ptr<float>();
    if (ibits == 2)
      lowbit::gemm::gemm<2>(pp, rows, cols, sp, zp, bp, xptr, cols, ntok, yp, rows);
    else
      lowbit::gemm::gemm<4>(pp, rows, cols, sp, zp, bp, xptr, cols, ntok, yp, rows);
    return out.reshape(out_shape);
  }
#endif
  const int64_t tile_rows =
      std::min<int64_t>(rows, std::max<int64_t>(16, kTileBytes / (4 * cpad) / 16 * 16));
  auto wt = at::empty({tile_rows, cpad}, x.options());
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int64_t n = std::min(tile_rows, rows - r0);
    lowbit::dequant_rows(pp, rb, ibits, r0, r0 + n, sp, zp, wt.mutable_data_ptr<float>(), cpad);
    auto w = wt.narrow(0, 0, n).narrow(1, 0, cols);
    auto o = out.narrow(1, r0, n);
    if (bp) {
      at::addmm_out(o, bias.narrow(0, r0, n), x, w.t());
    } else {
      at::mm_out(o, x, w.t());
    }
  }
  return out.reshape(out_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(ptqx, CPU, m) {
  m.impl("pack_weights", &pack_weights_cpu);
  m.impl("unpack_weights", &unpack_weights_cpu);
  m.impl("lowbit_linear", &lowbit_linear_cpu);
}

}  // namespace ptqx
