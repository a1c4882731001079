// Runs the CUDA kernels of lowbit_linear_int8act (csrc/cuda/lowbit_int8act_kernels.cu) under the
// CPU emulation of tests/cuda_emu and compares them with the CPU kernel
// (ptqx/lowbit_int8act.h). Everything here is exact by design (the op's spec rounds every
// float step explicitly and sums integers), so all comparisons are bit for bit: the
// per-token int8 codes, scales, code sums and NaN/Inf flags of the quantize kernel, the
// integer dot products behind each output, and the outputs themselves.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <utility>
#include <vector>

#include "emu_test.h"
#include "ptqx/cuda/lowbit.h"
#include "ptqx/lowbit.h"
#include "ptqx/lowbit_int8act.h"

namespace lb = ptqx::lowbit;
namespace ia = ptqx::lowbit::int8act;
using emu_test::next;
using emu_test::uniform;

namespace {

// Index of column c in a token quantized by the CPU kernel, which stores it permuted to
// the byte order of a packed block: byte p = 4l + q of block j holds bits [8q, 8q + 8) of
// word l, i.e. the codes of columns j*PER + 8(S*q + s) + l, s < S = 8 / bits, and
// quantize_token puts that column's code at j*PER + 32s + p (ptqx/lowbit_int8act.h).
int64_t perm_index(int64_t c, int bits) {
  const int64_t per = lb::codes_per_block(bits), S = 8 / bits;
  const int64_t j = c / per, local = c - j * per, k = local >> 3, l = local & 7;
  return j * per + 32 * (k % S) + 4 * l + k / S;
}

// Token t of a batch: every kind of row the quantizer treats differently, in turn, so
// that a batch of 11 tokens holds all of them (token 0 is an ordinary one).
void fill_token(float* x, int64_t cols, int64_t t, uint64_t& seed) {
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t at = cols ? static_cast<int64_t>(next(seed) % cols) : 0;
  for (int64_t c = 0; c < cols; ++c) x[c] = uniform(seed, -1.f, 1.f);
  switch (t % 11) {
    case 1:  // magnitudes over 2^-8..2^7: most codes small, a few near +-127
      for (int64_t c = 0; c < cols; ++c) x[c] *= std::ldexp(1.f, static_cast<int>(next(seed) % 16) - 8);
      break;
    case 2:  // all zero: s = 1, every code 0
      for (int64_t c = 0; c < cols; ++c) x[c] = 0.f;
      break;
    case 3:
      if (cols) x[at] = std::numeric_limits<float>::quiet_NaN();
      break;
    case 4:
      if (cols) x[at] = inf;
      break;
    case 5:
      if (cols) x[cols - 1] = -inf;
      break;
    case 6:  // max|x| = 127 makes s = 1 exactly, so half-integers test round-half-to-even
      for (int64_t c = 0; c < cols; ++c) x[c] = 0.5f * (static_cast<float>(next(seed) % 255) - 127.f);
      if (cols) x[at] = (next(seed) & 1) ? 127.f : -127.f;
      break;
    case 7:  // one nonzero (and -0.f elsewhere): it alone maps to -127
      for (int64_t c = 0; c < cols; ++c) x[c] = -0.f;
      if (cols) x[at] = -3.7f;
      break;
    case 8:  // near FLT_MAX: max|x| / 127 must not overflow anything
      for (int64_t c = 0; c < cols; ++c) x[c] *= 3e38f;
      break;
    case 9:  // subnormal: max|x| / 127 is subnormal too
      for (int64_t c = 0; c < cols; ++c) x[c] *= 1e-38f;
      break;
    case 10:  // max|x| / 127 underflows to 0: s = 1, every code 0
      for (int64_t c = 0; c < cols; ++c) x[c] *= 1e-44f;
      break;
    default:
      break;
  }
}

// bits: the layout (2 or 4); maxcode: the largest code drawn (2 for ternary codes).
int check_layer(int bits, uint32_t maxcode, int64_t rows, int64_t cols, bool many, uint64_t seed) {
  const uint32_t maxq = (1u << bits) - 1u;
  std::vector<uint8_t> codes(rows * cols);
  for (auto& c : codes) c = static_cast<uint8_t>(next(seed) % (maxcode + 1));
  std::vector<float> scale(rows), zero(rows), bias(rows);
  for (int64_t r = 0; r < rows; ++r) {
    scale[r] = (next(seed) & 1 ? 1.f : -1.f) * (0.001f + 0.001f * static_cast<float>(next(seed) % 100));
    zero[r] = static_cast<float>(next(seed) % (maxq + 1));  // the binding allows [0, maxq]
    bias[r] = 0.1f * (static_cast<float>(next(seed) % 21) - 10.f);
  }
  const int64_t rb = lb::row_bytes(cols, bits), per = lb::codes_per_block(bits);
  std::vector<uint8_t> packed(rows * rb);
  CHECK(lb::pack_rows(codes.data(), rows, cols, bits, packed.data()) == 0);
  const int64_t ldx = std::max<int64_t>(rb / lb::kBlockBytes * per, 1);  // as ia::linear

  // One token, and a batch holding every kind of token (fill_token); `many` adds a batch
  // of 37 (several rounds of each kind). Few launches: each is slow under the emulator.
  std::vector<std::pair<int64_t, bool>> batches = {{1, false}, {11, true}};
  if (many) batches.emplace_back(37, false);
  for (auto [ntok, with_bias] : batches) {
    const float* bp = with_bias ? bias.data() : nullptr;
    std::vector<float> x(ntok * cols);
    for (int64_t t = 0; t < ntok; ++t) fill_token(x.data() + t * cols, cols, t, seed);
    // Workspaces as the binding allocates them (at::empty: garbage, here a marker).
    std::vector<int8_t> xq(ntok * cols, int8_t{-99});
    std::vector<int32_t> qsum(ntok, -12345);
    std::vector<float> sx(ntok, -1.f), y(ntok * rows, -12345.f), want(ntok * rows, -54321.f);
    std::vector<uint8_t> finite(ntok, 0xAB);
    CHECK_LAUNCH(ptqx::cuda::lowbit_linear_int8act(x.data(), packed.data(), scale.data(), zero.data(), bp,
                                                   ntok, rows, cols, bits, xq.data(), qsum.data(), sx.data(),
                                                   finite.data(), y.data(), nullptr));
    ia::linear(x.data(), ntok, cols, packed.data(), rows, bits, scale.data(), zero.data(), bp, want.data(),
               rows);
    for (int64_t t = 0; t < ntok; ++t) {
      std::vector<int8_t> xp(ldx, int8_t{-99});
      int32_t cq = -1;
      float cs = -1.f;
      const bool ok = ia::quantize_token(x.data() + t * cols, cols, bits, xp.data(), &cq, &cs);
      CHECK(finite[t] == (ok ? 1 : 0));
      if (!ok) {
        // The kernel's convention for a NaN/Inf token (reference.py: s = 1); its codes
        // are never read, as its outputs are NaN.
        CHECK(sx[t] == 1.f && qsum[t] == 0);
        continue;
      }
      CHECK(std::bit_cast<uint32_t>(sx[t]) == std::bit_cast<uint32_t>(cs));
      CHECK(qsum[t] == cq);
      for (int64_t c = 0; c < cols; ++c) {
        if (xq[t * cols + c] != xp[perm_index(c, bits)]) {
          std::fprintf(stderr, "bits=%d cols=%lld ntok=%lld: xq[%lld, %lld] = %d, want %d (x = %.9g)\n", bits,
                       (long long)cols, (long long)ntok, (long long)t, (long long)c, xq[t * cols + c],
                       xp[perm_index(c, bits)], x[t * cols + c]);
          return 1;
        }
      }
      // The integer dot products, exactly (int64, from the unpacked codes), through the
      // op's float epilogue: checks acc itself, which one rounding in float could hide.
      for (int64_t r = 0; r < rows; ++r) {
        int64_t acc = 0;
        for (int64_t c = 0; c < cols; ++c) acc += int64_t{codes[r * cols + c]} * xp[perm_index(c, bits)];
        acc -= static_cast<int64_t>(zero[r]) * cq;
        const float e = ia::finish(static_cast<int32_t>(acc), cs, scale[r], bp, r);
        if (std::bit_cast<uint32_t>(y[t * rows + r]) != std::bit_cast<uint32_t>(e)) {
          std::fprintf(stderr, "bits=%d rows=%lld cols=%lld ntok=%lld: y[%lld, %lld] = %.9g, want %.9g\n",
                       bits, (long long)rows, (long long)cols, (long long)ntok, (long long)t, (long long)r,
                       y[t * rows + r], e);
          return 1;
        }
      }
    }
    // Every output, NaN rows included (both write the quiet NaN 0x7fc00000).
    for (int64_t i = 0; i < ntok * rows; ++i) {
      if (std::bit_cast<uint32_t>(y[i]) != std::bit_cast<uint32_t>(want[i])) {
        std::fprintf(stderr, "bits=%d rows=%lld cols=%lld ntok=%lld: y[%lld] = %.9g, CPU %.9g\n", bits,
                     (long long)rows, (long long)cols, (long long)ntok, (long long)i, y[i], want[i]);
        return 1;
      }
    }
  }
  return 0;
}

}  // namespace

int main() {
  // Rows: 1, not a multiple of the dot kernel's 4 warps per block. Columns: 0 (the
  // binding allows it: every output is the bias), 1, not a multiple of a warp's 32 lanes,
  // one whole 4-bit block (64 codes), primes across one 2-bit block (128 codes) and
  // beyond the quantizer's 256 threads, with over 4 blocks so that each lane of the dot
  // kernel reads several words.
  uint64_t seed = 0x9E3779B97F4A7C15ull;
  for (int bits : {2, 4}) {
    const uint32_t maxq = (1u << bits) - 1u;
    CHECK(check_layer(bits, maxq, 1, 1, true, next(seed) | 1) == 0);
    CHECK(check_layer(bits, maxq, 1, 0, false, next(seed) | 1) == 0);
    CHECK(check_layer(bits, maxq, 5, 33, false, next(seed) | 1) == 0);
    CHECK(check_layer(bits, maxq, 4, 64, false, next(seed) | 1) == 0);
    CHECK(check_layer(bits, maxq, 7, 131, false, next(seed) | 1) == 0);
    CHECK(check_layer(bits, maxq, 9, 613, false, next(seed) | 1) == 0);
  }
  // Ternary codes (0..2) in the 2-bit layout.
  CHECK(check_layer(2, 2, 3, 7, false, next(seed) | 1) == 0);
  CHECK(check_layer(2, 2, 6, 300, false, next(seed) | 1) == 0);
  // Empty batches and layers launch nothing and write nothing.
  float y = 7.f;
  CHECK_LAUNCH(ptqx::cuda::lowbit_linear_int8act(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 8, 2,
                                                 nullptr, nullptr, nullptr, nullptr, &y, nullptr));
  CHECK_LAUNCH(ptqx::cuda::lowbit_linear_int8act(nullptr, nullptr, nullptr, nullptr, nullptr, 3, 0, 8, 4,
                                                 nullptr, nullptr, nullptr, nullptr, &y, nullptr));
  CHECK(y == 7.f);
  std::puts("test_emu_int8act: ok");
  return 0;
}
