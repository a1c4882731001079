// Torch-free kernels for packed low-bit weights (2-bit / ternary and 4-bit codes).
//
// Packed layout (documented in full in ptqx/ops/reference.py, pack_weights): each row
// is padded to whole 32-byte blocks; a block is 8 little-endian uint32 words; with
// P = 32 / bits codes per word, the code of column j*8P + 8k + l sits in word l at bits
// [k*bits, (k+1)*bits). Padding columns hold code 0. Loading a block as 8 int32 lanes,
// (lanes >> k*bits) & mask are the codes of the 8 consecutive columns j*8P + 8k + 0..7.
//
// lowbit_gemv computes y[t, r] = scale[r] * sum_c (code[r, c] - zero[r]) * x[t, c]
// (+ bias[r]). (code - zero) is formed exactly in float (the zero point is not folded
// into a sum of x, which would cancel badly), so the rounding matches a dense fp32 dot
// product of x with (code - zero), scaled once per row.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PTQX_LOWBIT_AVX2 1
#endif

namespace ptqx::lowbit {

constexpr int64_t kBlockBytes = 32;

inline int64_t codes_per_block(int bits) { return 256 / bits; }

inline int64_t row_bytes(int64_t cols, int bits) {
  const int64_t per = codes_per_block(bits);
  return kBlockBytes * ((cols + per - 1) / per);
}

// codes: uint8 [rows, cols]; out: uint8 [rows, row_bytes(cols, bits)].
// Returns the number of codes above 2^bits - 1 (the caller raises if it is not 0).
inline int64_t pack_rows(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* out) {
  const int64_t rb = row_bytes(cols, bits), per = codes_per_block(bits), nblocks = rb / kBlockBytes;
  const unsigned maxq = (1u << bits) - 1u;
  int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* cr = codes + r * cols;
    uint8_t* orow = out + r * rb;
    for (int64_t j = 0; j < nblocks; ++j) {
      uint32_t w[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      const int64_t c0 = j * per, c1 = std::min(cols, c0 + per);
      for (int64_t c = c0; c < c1; ++c) {
        const unsigned q = cr[c];
        bad += q > maxq;
        const int64_t local = c - c0;
        w[local & 7] |= static_cast<uint32_t>(q & maxq) << ((local >> 3) * bits);
      }
      uint8_t* ob = orow + j * kBlockBytes;
      for (int l = 0; l < 8; ++l)
        for (int b = 0; b < 4; ++b) ob[4 * l + b] = static_cast<uint8_t>(w[l] >> (8 * b));
    }
  }
  return bad;
}

inline uint32_t load_word(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

// packed: uint8 [rows, row_bytes(cols, bits)]; out: uint8 [rows, cols].
inline void unpack_rows(const uint8_t* packed, int64_t rows, int64_t cols, int bits, uint8_t* out) {
  const int64_t rb = row_bytes(cols, bits), per = codes_per_block(bits);
  const uint32_t mask = (1u << bits) - 1u;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* prow = packed + r * rb;
    uint8_t* orow = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t j = c / per, local = c - j * per;
      const uint32_t w = load_word(prow + j * kBlockBytes + 4 * (local & 7));
      orow[c] = static_cast<uint8_t>((w >> ((local >> 3) * bits)) & mask);
    }
  }
}

// Dequantize rows [r0, r1) into out[(r - r0) * ld + c] = scale[r] * (code - zero[r]) for
// every c < ncols_padded = nblocks * codes_per_block (padding columns included: the
// caller reads only the first cols). Same float ops as the reference: (q - z) * s.
inline void dequant_rows(const uint8_t* packed, int64_t rb, int bits, int64_t r0, int64_t r1,
                         const float* scale, const float* zero, float* out, int64_t ld) {
  const int64_t nblocks = rb / kBlockBytes, per = codes_per_block(bits);
  const int words = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
#pragma omp parallel for schedule(static) if ((r1 - r0) * rb > 16384)
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* prow = packed + r * rb;
    float* orow = out + (r - r0) * ld;
    const float s = scale[r], z = zero[r];
#ifdef PTQX_LOWBIT_AVX2
    const __m256 sv = _mm256_set1_ps(s), zv = _mm256_set1_ps(z);
    const __m256i mv = _mm256_set1_epi32(static_cast<int>(mask));
    const __m128i cnt = _mm_cvtsi32_si128(bits);
    for (int64_t j = 0; j < nblocks; ++j) {
      __m256i cur = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(prow + j * kBlockBytes));
      float* ob = orow + j * per;
      for (int k = 0; k < words; ++k) {
        const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(cur, mv));
        _mm256_storeu_ps(ob + 8 * k, _mm256_mul_ps(_mm256_sub_ps(q, zv), sv));
        cur = _mm256_srl_epi32(cur, cnt);
      }
    }
#else
    for (int64_t j = 0; j < nblocks; ++j)
      for (int l = 0; l < 8; ++l) {
        const uint32_t w = load_word(prow + j * kBlockBytes + 4 * l);
        for (int k = 0; k < words; ++k)
          orow[j * per + 8 * k + l] = (static_cast<float>((w >> (k * bits)) & mask) - z) * s;
      }
#endif
  }
}

#ifdef PTQX_LOWBIT_AVX2
namespace detail {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// NR rows x NT tokens, all column blocks. xp: [NT tokens] rows of ldx floats, zero-padded
// past cols to the whole blocks, so padding codes (0 - zero) multiply 0.
// 2-bit: vpermilps reads only the low 2 bits of each 32-bit lane, so with the in-lane
// table {0 - z, 1 - z, 2 - z, 3 - z} it turns the lowest code of every lane straight into
// the float (code - zero): no mask, no int->float convert, one cheap in-lane shuffle
// (vpermps, the cross-lane form, is 2x slower on znver3: measured).
// 4-bit: mask, convert, subtract the zero point.
// The packed rows are prefetched kPrefetchBytes ahead of the tile being read: without it
// a GEMV over cold weights runs about 25% slower than over cached ones, because each tile
// touches only 2 KiB and the hardware prefetcher does not run far enough ahead. With it,
// cold runs about as fast as cached (4096x4096, one token, two threads, standalone A/B
// together with the accumulator change below: 2-bit 0.51-0.54 -> 0.41-0.43 ms, 4-bit
// 0.81-0.82 -> 0.57-0.60 ms).
constexpr int64_t kPrefetchBytes = 4096;

template <int BITS, int NR, int NT>
inline void gemv_tile(const uint8_t* packed, int64_t rb, int64_t r0, const float* scale,
                      const float* zero, const float* bias, const float* xp, int64_t ldx,
                      float* y, int64_t ldy) {
  constexpr int WORDS = 32 / BITS;
  constexpr int PER = 8 * WORDS;
  // Two accumulator sets (even/odd k) when there are few chains, to hide FMA latency.
  constexpr int SETS = NR * NT <= 4 ? 2 : 1;
  const int64_t nblocks = rb / kBlockBytes;
  __m256 tab[NR];
  for (int r = 0; r < NR; ++r) {
    const float z = zero[r0 + r];
    if constexpr (BITS == 2) {
      tab[r] = _mm256_setr_ps(-z, 1.f - z, 2.f - z, 3.f - z, -z, 1.f - z, 2.f - z, 3.f - z);
    } else {
      tab[r] = _mm256_set1_ps(z);
    }
  }
  const __m256i mask4 = _mm256_set1_epi32(0xF);
  // Two named accumulator arrays rather than acc[SETS][NR][NT] indexed by k % SETS: with
  // the 3-D array GCC kept the accumulators on the stack across blocks (a store and a
  // reload per block, 15% slower at one token: measured).
  __m256 acc0[NR][NT], acc1[NR][NT];
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) acc0[r][t] = acc1[r][t] = _mm256_setzero_ps();
  const uint8_t* prow = packed + r0 * rb;
  for (int64_t j = 0; j < nblocks; ++j) {
    __m256i block[NR];
    for (int r = 0; r < NR; ++r) {
      const uint8_t* src = prow + r * rb + j * kBlockBytes;
      // Prefetch never faults. Every block asks, although two blocks share a 64-byte line:
      // skipping odd blocks needs a branch that measured slower than the spare load slot.
      _mm_prefetch(reinterpret_cast<const char*>(src + kPrefetchBytes), _MM_HINT_T0);
      block[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    }
    const float* xb = xp + j * PER;
    // Word k shifts the loaded block by k * BITS directly (independent shifts, no chain).
    auto step = [&](int k, __m256 (&acc)[NR][NT]) {
      __m256 w[NR];
      for (int r = 0; r < NR; ++r) {
        const __m256i cur = k == 0 ? block[r] : _mm256_srli_epi32(block[r], BITS * k);
        if constexpr (BITS == 2) {
          w[r] = _mm256_permutevar_ps(tab[r], cur);
        } else {
          w[r] = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(cur, mask4)), tab[r]);
        }
      }
      for (int t = 0; t < NT; ++t) {
        const __m256 xv = _mm256_loadu_ps(xb + t * ldx + 8 * k);
        for (int r = 0; r < NR; ++r) acc[r][t] = _mm256_fmadd_ps(w[r], xv, acc[r][t]);
      }
    };
#pragma GCC unroll 16
    for (int k = 0; k < WORDS; k += 2) {
      step(k, acc0);
      step(k + 1, SETS == 2 ? acc1 : acc0);
    }
  }
  for (int r = 0; r < NR; ++r) {
    const float s = scale[r0 + r], b = bias ? bias[r0 + r] : 0.f;
    for (int t = 0; t < NT; ++t) {
      __m256 a = acc0[r][t];
      if constexpr (SETS == 2) a = _mm256_add_ps(a, acc1[r][t]);
      y[t * ldy + r0 + r] = s * hsum(a) + b;
    }
  }
}

template <int BITS, int NT>
inline void gemv_rows(const uint8_t* packed, int64_t rows, int64_t rb, const float* scale,
                      const float* zero, const float* bias, const float* xp, int64_t ldx,
                      float* y, int64_t ldy) {
  // Two rows per tile reuse each x load twice; the accumulators (NR * NT, times 2 sets
  // when few), NR tables, NR packed blocks and a weight still fit the 16 ymm registers
  // up to 4 tokens (NR = 4 at one token spills and is no faster: measured).
  constexpr int NR = 2;
  const int64_t groups = rows / NR;
#pragma omp parallel for schedule(static) if (rows * rb * NT > 32768)
  for (int64_t g = 0; g < groups; ++g)
    gemv_tile<BITS, NR, NT>(packed, rb, g * NR, scale, zero, bias, xp, ldx, y, ldy);
  for (int64_t r = groups * NR; r < rows; ++r)
    gemv_tile<BITS, 1, NT>(packed, rb, r, scale, zero, bias, xp, ldx, y, ldy);
}

template <int BITS>
inline void gemv_dispatch(int nt, const uint8_t* packed, int64_t rows, int64_t rb,
                          const float* scale, const float* zero, const float* bias,
                          const float* xp, int64_t ldx, float* y, int64_t ldy) {
  switch (nt) {
    case 1: gemv_rows<BITS, 1>(packed, rows, rb, scale, zero, bias, xp, ldx, y, ldy); break;
    case 2: gemv_rows<BITS, 2>(packed, rows, rb, scale, zero, bias, xp, ldx, y, ldy); break;
    case 3: gemv_rows<BITS, 3>(packed, rows, rb, scale, zero, bias, xp, ldx, y, ldy); break;
    default: gemv_rows<BITS, 4>(packed, rows, rb, scale, zero, bias, xp, ldx, y, ldy); break;
  }
}

}  // namespace detail
#endif

// Tokens per GEMV pass. Wider passes (one row per tile, 5-8 tokens) read every x row
// from L2 once per weight row and ran at half the speed of two 4-token passes (2-bit,
// 4096x4096, 8 tokens: 4.9 ms vs 2.4 ms, measured), so longer batches take several passes.
constexpr int kGemvMaxTokens = 4;

// y[t, r] (row stride ldy) for tokens t < ntok <= kGemvMaxTokens. xp: ntok rows of ldx
// floats (ldx >= padded columns), zero past the real columns.
inline void gemv(const uint8_t* packed, int64_t rows, int64_t cols, int bits, const float* scale,
                 const float* zero, const float* bias, const float* xp, int64_t ldx, int ntok,
                 float* y, int64_t ldy) {
  const int64_t rb = row_bytes(cols, bits);
#ifdef PTQX_LOWBIT_AVX2
  if (bits == 2)
    detail::gemv_dispatch<2>(ntok, packed, rows, rb, scale, zero, bias, xp, ldx, y, ldy);
  else
    detail::gemv_dispatch<4>(ntok, packed, rows, rb, scale, zero, bias, xp, ldx, y, ldy);
#else
  const int64_t per = codes_per_block(bits), nblocks = rb / kBlockBytes;
  const int words = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
#pragma omp parallel for schedule(static) if (rows * rb * ntok > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* prow = packed + r * rb;
    const float z = zero[r];
    float acc[kGemvMaxTokens] = {};
    for (int64_t j = 0; j < nblocks; ++j)
      for (int l = 0; l < 8; ++l) {
        const uint32_t w = load_word(prow + j * kBlockBytes + 4 * l);
        for (int k = 0; k < words; ++k) {
          const float q = static_cast<float>((w >> (k * bits)) & mask) - z;
          const int64_t c = j * per + 8 * k + l;
          for (int t = 0; t < ntok; ++t) acc[t] += q * xp[t * ldx + c];
        }
      }
    for (int t = 0; t < ntok; ++t) y[t * ldy + r] = scale[r] * acc[t] + (bias ? bias[r] : 0.f);
  }
#endif
}

}  // namespace ptqx::lowbit
