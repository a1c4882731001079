// Torch-free GEMM over packed low-bit weights for many tokens (AVX2 + FMA):
// y[t, r] = sum_c x[t, c] * scale[r] * (code[r, c] - zero[r]) (+ bias[r]).
//
// Why a GEMM of our own: with many tokens the product is compute-bound, so the packed
// weights' smaller size buys nothing unless dequantization costs (almost) nothing. A
// BLIS-style GEMM copies ("packs") every block of B into a panel layout anyway; here that
// packing step *is* the dequantization: each 16-row x 256-column weight panel is unpacked
// from the 2/4-bit codes straight into the [k][16] float layout the micro-kernel reads,
// once per weight, and the micro-kernel is a plain 6x16 FMA outer product. The earlier
// path (dequantize 4 MiB of rows to fp32, then ATen's mm on them) wrote and re-read every
// weight as fp32 and called the GEMM once per block; it was up to 1.3x slower than fp32
// F.linear at 24-256 tokens (benchmarks/RESULTS.md).
//
// Blocking (znver3: 32 KiB L1d, 512 KiB L2 per core, 32 MiB L3):
// - kKC = 256 columns per K block: a weight panel (256 x 16 floats = 16 KiB) stays in
//   L1 while the micro-kernel broadcasts x straight from six token rows (x is not
//   copied into a packed layout: that transposing copy cost 13% of a 256-token call on
//   the small CIFAR layers, more than the strided broadcasts do);
// - up to kMaxMC = 384 tokens per M block: their K block of x (<= 384 x 256 floats)
//   stays in L2 across all of a thread's panels, and each weight is dequantized once per
//   M block (once in all for <= 384 tokens);
// - threads own disjoint 16-row panels (output columns), so they never write the same
//   cache line and need no barrier.
// Rounding: each weight is the float scale * (code - zero), exactly the fake-quant value
// the reference dequantizes, and the K blocks are accumulated in order, so the result is
// a valid fp32 dot product (only the summation order differs from F.linear).
#pragma once

#include "ptqx/lowbit.h"

#ifdef PTQX_LOWBIT_AVX2

#include <cstdint>
#include <memory>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ptqx::lowbit::gemm {

constexpr int kMR = 6;           // tokens per micro-tile
constexpr int kNR = 16;          // weight rows (output columns) per micro-tile
constexpr int64_t kKC = 256;     // columns per K block: a multiple of 128 (2-bit) and 64 (4-bit)
constexpr int64_t kMaxMC = 384;  // tokens per M block (multiple of kMR)

// Padded column count of a packed row (whole 32-byte blocks).
inline int64_t padded_cols(int64_t cols, int bits) {
  return row_bytes(cols, bits) / kBlockBytes * codes_per_block(bits);
}

// In-register transpose of an 8x8 block of 32-bit words: t[r] lane l -> t[l] lane r.
inline void transpose8(__m256i t[8]) {
  __m256i a[8], b[8];
  for (int i = 0; i < 8; i += 2) {
    a[i] = _mm256_unpacklo_epi32(t[i], t[i + 1]);
    a[i + 1] = _mm256_unpackhi_epi32(t[i], t[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    b[i] = _mm256_unpacklo_epi64(a[i], a[i + 2]);
    b[i + 1] = _mm256_unpackhi_epi64(a[i], a[i + 2]);
    b[i + 2] = _mm256_unpacklo_epi64(a[i + 1], a[i + 3]);
    b[i + 3] = _mm256_unpackhi_epi64(a[i + 1], a[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2x128_si256(b[i], b[i + 4], 0x20);
    t[i + 4] = _mm256_permute2x128_si256(b[i], b[i + 4], 0x31);
  }
}

// Dequantize rows [n0, n0 + nv) (nv <= 16) x padded columns [k0, k0 + kc) into the
// micro-kernel's panel bp[k][16] = scale[r] * (code[r, k0 + k] - zero[r]); lanes past nv
// are 0. Eight rows at a time: load the same 32-byte block of 8 rows, transpose so that
// register l holds word l of all 8 rows, then shift/mask/convert gives 8 rows' codes of
// one column per instruction, stored as one 8-float half of a panel row.
template <int BITS>
inline void pack_weight_panel(const uint8_t* packed, int64_t rb, int64_t n0, int nv, int64_t k0,
                              int64_t kc, const float* scale, const float* zero, float* bp) {
  constexpr int WORDS = 32 / BITS;
  constexpr int PER = 8 * WORDS;
  const __m256i mask = _mm256_set1_epi32((1 << BITS) - 1);
  for (int h = 0; h < kNR / 8; ++h) {
    if (h * 8 >= nv) {
      for (int64_t k = 0; k < kc; ++k) _mm256_storeu_ps(bp + k * kNR + h * 8, _mm256_setzero_ps());
      continue;
    }
    const uint8_t* rowp[8];
    alignas(32) float s[8], z[8];
    for (int i = 0; i < 8; ++i) {
      const int r = h * 8 + i;
      const bool valid = r < nv;
      rowp[i] = packed + (n0 + (valid ? r : 0)) * rb;  // a real row; its values are zeroed below
      s[i] = valid ? scale[n0 + r] : 0.f;
      z[i] = valid ? zero[n0 + r] : 0.f;
    }
    const __m256 sv = _mm256_load_ps(s), zv = _mm256_load_ps(z);
    for (int64_t j = k0 / PER; j < (k0 + kc) / PER; ++j) {
      __m256i t[8];
      for (int i = 0; i < 8; ++i)
        t[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rowp[i] + j * kBlockBytes));
      transpose8(t);
      float* dst = bp + (j * PER - k0) * kNR + h * 8;
#pragma GCC unroll 16
      for (int k = 0; k < WORDS; ++k)
        for (int l = 0; l < 8; ++l) {
          const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(t[l], mask));
          _mm256_storeu_ps(dst + (8 * k + l) * kNR, _mm256_mul_ps(_mm256_sub_ps(q, zv), sv));
          t[l] = _mm256_srli_epi32(t[l], BITS);
        }
    }
  }
}

// c[i*ldc + j] (i < mv tokens, j < nv rows) = (first ? bias[j] (or 0) : c[i*ldc + j])
//                                            + sum_k a[k*6 + i] * b[k*16 + j].
inline void micro_6x16(int64_t kc, const float* const* a, const float* b, float* c, int64_t ldc,
                       int mv, int nv, bool first, const float* bias) {
  const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
  __m256 acc[kMR][2];
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kNR), b1 = _mm256_loadu_ps(b + k * kNR + 8);
    const float* ak[kMR] = {a0 + k, a1 + k, a2 + k, a3 + k, a4 + k, a5 + k};
    for (int i = 0; i < kMR; ++i) {
      const __m256 av = _mm256_broadcast_ss(ak[i]);
      acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
    }
  }
  if (mv == kMR && nv == kNR) {
    __m256 base0 = _mm256_setzero_ps(), base1 = _mm256_setzero_ps();
    if (first && bias) base0 = _mm256_loadu_ps(bias), base1 = _mm256_loadu_ps(bias + 8);
    for (int i = 0; i < kMR; ++i) {
      float* ci = c + i * ldc;
      if (!first) base0 = _mm256_loadu_ps(ci), base1 = _mm256_loadu_ps(ci + 8);
      _mm256_storeu_ps(ci, _mm256_add_ps(base0, acc[i][0]));
      _mm256_storeu_ps(ci + 8, _mm256_add_ps(base1, acc[i][1]));
    }
    return;
  }
  alignas(32) float tile[kMR][kNR];
  for (int i = 0; i < kMR; ++i) {
    _mm256_store_ps(tile[i], acc[i][0]);
    _mm256_store_ps(tile[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < mv; ++i)
    for (int j = 0; j < nv; ++j) {
      float* cij = c + i * ldc + j;
      *cij = (first ? (bias ? bias[j] : 0.f) : *cij) + tile[i][j];
    }
}

// y[t*ldy + r] for t < m tokens, r < rows. x: m rows of ldx floats (real columns `cols`).
template <int BITS>
inline void gemm(const uint8_t* packed, int64_t rows, int64_t cols, const float* scale,
                 const float* zero, const float* bias, const float* x, int64_t ldx, int64_t m,
                 float* y, int64_t ldy) {
  const int64_t rb = row_bytes(cols, BITS), kpad = padded_cols(cols, BITS);
  const int64_t npanels = (rows + kNR - 1) / kNR;
  // M blocks of equal size (a multiple of 6) so that no block is a sliver that would pay
  // a whole pass of weight dequantization for a few tokens.
  const int64_t nmc = (m + kMaxMC - 1) / kMaxMC;
  const int64_t mc_step = ((m + nmc - 1) / nmc + kMR - 1) / kMR * kMR;
  for (int64_t m0 = 0; m0 < m; m0 += mc_step) {
    const int64_t mc = std::min(mc_step, m - m0), mpanels = (mc + kMR - 1) / kMR;
    float* yblock = y + m0 * ldy;
#pragma omp parallel if (npanels > 1 && mc * rows * kpad > (int64_t{1} << 18))
    {
      int64_t p0 = 0, p1 = npanels;
#ifdef _OPENMP
      const int64_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
      p0 = npanels * tid / nth;
      p1 = npanels * (tid + 1) / nth;
#endif
      alignas(64) float bp[kKC * kNR];
      for (int64_t k0 = 0; k0 < kpad; k0 += kKC) {
        // Only real columns are summed: the panel's padding columns are never read.
        const int64_t kc = std::min(kKC, kpad - k0), kreal = std::min(kc, cols - k0);
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t n0 = p * kNR;
          const int nv = static_cast<int>(std::min<int64_t>(kNR, rows - n0));
          pack_weight_panel<BITS>(packed, rb, n0, nv, k0, kc, scale, zero, bp);
          for (int64_t i = 0; i < mpanels; ++i) {
            const int mv = static_cast<int>(std::min<int64_t>(kMR, mc - i * kMR));
            const float* a[kMR];
            for (int t = 0; t < kMR; ++t) a[t] = x + (m0 + i * kMR + std::min(t, mv - 1)) * ldx + k0;
            micro_6x16(kreal, a, bp, yblock + i * kMR * ldy + n0, ldy, mv, nv, k0 == 0,
                       bias ? bias + n0 : nullptr);
          }
        }
      }
    }
  }
}

}  // namespace ptqx::lowbit::gemm

#endif  // PTQX_LOWBIT_AVX2
