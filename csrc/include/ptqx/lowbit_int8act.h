// Torch-free CPU kernel of lowbit_linear_int8act: packed 2-bit/ternary/4-bit weights
// times dynamically quantized int8 activations (opt-in: it changes the model).
//
// Semantics (the reference, ptqx/ops/reference.py lowbit_linear_int8act, is the spec;
// this kernel matches it bit for bit): per token t, if any x[t, :] is NaN/Inf the output
// row is NaN; else s_x = max|x[t, :]| / 127 (1 when that is 0), xq = clamp(rne(x / s_x),
// -127, 127), acc[r] = sum_c code[r, c] * xq[c] - zero[r] * sum_c xq[c] exactly in int32,
// y[t, r] = s_x * (scale[r] * float(acc[r])) (+ bias[r]).
//
// Why it is faster than the fp32-activation GEMV (lowbit.h): that one spends three
// vector ops (shift, vpermilps, FMA) per 8 codes. Here the packed bytes are used as they
// lie: with S = 8 / bits codes per byte, (byte >> s*bits) & mask is a u8 code, and
// vpmaddubsw multiplies 32 of them by 32 s8 activations at once (and adds pairs), so a
// block of 32 bytes costs about 3 ops per 32 codes (shift, and, maddubs, add in s16),
// with no VNNI needed. For that, x is quantized once per call and stored permuted to the
// byte order of a packed block (see quantize_token).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "ptqx/lowbit.h"  // packed layout: kBlockBytes, row_bytes, codes_per_block

namespace ptqx::lowbit::int8act {

// |acc| <= C * 15 * 127 for either of its two int32 terms: exact below 2^31 for C < 1.12M;
// the bindings refuse more than this.
constexpr int64_t kMaxCols = int64_t{1} << 20;
constexpr int kTokensPerTile = 4;
// Software prefetch distance along each packed row stream, in 32-byte blocks (2 KiB).
// Cold weights at batch 1 (4096x4096, 2 threads, standalone): 2-bit 0.30 -> 0.17-0.22
// ms, 4-bit 0.51-0.56 -> 0.31-0.35 ms; 64-512 blocks measure alike, 8-32 less. At 8
// tokens the kernel is compute-bound and prefetching measured nothing, so it is only
// issued in a tile's first token group.
constexpr int64_t kPrefetchBlocks = 64;

// Quantize one token and write it permuted into xperm (codes_per_block(bits) bytes per
// packed block, padding columns 0). With S = 8 / bits, byte p = 4l + q of a packed block
// holds bits [8q, 8q + 8) of word l, i.e. the codes of columns j*PER + 8(S*q + s) + l for
// s < S, at bits [s*bits, (s+1)*bits) of the byte. So xperm[j*PER + 32*s + p] holds xq of
// that column: one vpmaddubsw of ((bytes >> s*bits) & mask) with xperm[j][s] pairs every
// code with its activation.
// Returns false (and writes nothing else) when x holds a NaN/Inf; else sets *qsum and *sx.
inline bool quantize_token(const float* x, int64_t cols, int bits, int8_t* xperm, int32_t* qsum,
                           float* sx) {
  float amax = 0.f;
  bool finite = true;
  int64_t c = 0;
#ifdef PTQX_LOWBIT_AVX2
  {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 big = _mm256_set1_ps(std::numeric_limits<float>::max());
    __m256 vmax = _mm256_setzero_ps();
    __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (; c + 8 <= cols; c += 8) {
      const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + c), absmask);
      ok = _mm256_and_ps(ok, _mm256_cmp_ps(a, big, _CMP_LE_OQ));  // false for NaN and Inf
      vmax = _mm256_max_ps(vmax, a);
    }
    finite = _mm256_movemask_ps(ok) == 0xFF;
    alignas(32) float m[8];
    _mm256_store_ps(m, vmax);
    for (float v : m) amax = std::max(amax, v);
  }
#endif
  for (; c < cols; ++c) {
    const float a = std::fabs(x[c]);
    finite = finite && std::isfinite(a);
    amax = std::max(amax, a);
  }
  if (!finite) return false;
  float s = amax / 127.f;
  if (!(s > 0.f)) s = 1.f;  // all-zero token (or amax so small that amax / 127 underflows)
  *sx = s;
  const int64_t per = codes_per_block(bits), nblocks = (cols + per - 1) / per;
  const int S = 8 / bits;
  std::memset(xperm, 0, static_cast<size_t>(nblocks * per));
  int32_t sum = 0;
  // Column c = j*PER + 8k + l (k = S*q + s) goes to xperm[j*PER + 32*s + 4*l + q].
  auto dest = [&](int64_t col) {
    const int64_t j = col / per, local = col - j * per, k = local >> 3, l = local & 7;
    return j * per + 32 * (k % S) + 4 * l + k / S;
  };
  c = 0;
#ifdef PTQX_LOWBIT_AVX2
  {
    const __m256 sv = _mm256_set1_ps(s), lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
    __m256i vsum = _mm256_setzero_si256();
    alignas(32) int32_t q[8];
    // Columns c..c+7 (c a multiple of 8) are the 8 lanes l of one (j, k): their bytes lie
    // at stride 4 from dest(c).
    for (; c + 8 <= cols; c += 8) {
      __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + c), sv);  // IEEE division, as the reference
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m256i qi = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
      vsum = _mm256_add_epi32(vsum, qi);
      _mm256_store_si256(reinterpret_cast<__m256i*>(q), qi);
      int8_t* d = xperm + dest(c);
      for (int l = 0; l < 8; ++l) d[4 * l] = static_cast<int8_t>(q[l]);
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(q), vsum);
    for (int l = 0; l < 8; ++l) sum += q[l];
  }
#endif
  for (; c < cols; ++c) {
    const float v = std::nearbyint(x[c] / s);  // round half to even (default rounding mode)
    const int32_t qi = static_cast<int32_t>(std::min(127.f, std::max(-127.f, v)));
    sum += qi;
    xperm[dest(c)] = static_cast<int8_t>(qi);
  }
  *qsum = sum;
  return true;
}

// out = s_x * (scale * float(acc)) + bias, without letting the compiler fuse the last
// multiply and add into an FMA (GCC contracts across statements by default): the
// reference rounds the product before adding the bias.
inline float finish(int32_t acc, float sx, float scale, const float* bias, int64_t r) {
  float p = sx * (scale * static_cast<float>(acc));
#if defined(__GNUC__)
  __asm__("" : "+x"(p));
#endif
  return bias ? p + bias[r] : p;
}

#ifdef PTQX_LOWBIT_AVX2
namespace detail {

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// acc[r * NT + t] = sum_c code[r0 + r, c] * xq[t, c] for NR rows and NT tokens.
// xp: NT permuted tokens (quantize_token), ldx bytes apart.
template <int BITS, int NR, int NT>
inline void tile(const uint8_t* packed, int64_t rb, int64_t r0, const int8_t* xp, int64_t ldx,
                 int32_t* acc, bool prefetch) {
  constexpr int S = 8 / BITS;
  constexpr int PER = 256 / BITS;
  constexpr int MAXQ = (1 << BITS) - 1;
  // Blocks per s16 run: each vpmaddubsw lane is at most 2 * MAXQ * 127 in magnitude
  // (762 at 2 bits, 3810 at 4 bits) and a block adds S of them per lane.
  constexpr int KB = BITS == 2 ? 10 : 4;
  static_assert(KB * S * 2 * MAXQ * 127 <= 32767, "s16 accumulator could overflow");
  const int64_t nblocks = rb / kBlockBytes;
  const __m256i mask = _mm256_set1_epi8(static_cast<char>(MAXQ));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i a32[NR][NT];
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) a32[r][t] = _mm256_setzero_si256();
  const uint8_t* prow = packed + r0 * rb;
  for (int64_t j0 = 0; j0 < nblocks; j0 += KB) {
    const int64_t j1 = std::min<int64_t>(nblocks, j0 + KB);
    __m256i a16[NR][NT];
    for (int r = 0; r < NR; ++r)
      for (int t = 0; t < NT; ++t) a16[r][t] = _mm256_setzero_si256();
    for (int64_t j = j0; j < j1; ++j) {
      __m256i cur[NR];
      for (int r = 0; r < NR; ++r)
        cur[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(prow + r * rb + j * kBlockBytes));
      if (prefetch)  // prefetch never faults, so running past the buffer's end is harmless
        for (int r = 0; r < NR; ++r)
          _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(prow) + r * rb +
                                                     (j + kPrefetchBlocks) * kBlockBytes),
                       _MM_HINT_T0);
      const int8_t* xb = xp + j * PER;
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) {
        __m256i code[NR];
        for (int r = 0; r < NR; ++r)
          code[r] = _mm256_and_si256(s ? _mm256_srli_epi16(cur[r], s * BITS) : cur[r], mask);
        for (int t = 0; t < NT; ++t) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + t * ldx + 32 * s));
          for (int r = 0; r < NR; ++r)
            a16[r][t] = _mm256_add_epi16(a16[r][t], _mm256_maddubs_epi16(code[r], xv));
        }
      }
    }
    for (int r = 0; r < NR; ++r)
      for (int t = 0; t < NT; ++t) a32[r][t] = _mm256_add_epi32(a32[r][t], _mm256_madd_epi16(a16[r][t], ones));
  }
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) acc[r * NT + t] = hsum_epi32(a32[r][t]);
}

template <int BITS, int NR>
inline void tile_tokens(int nt, const uint8_t* packed, int64_t rb, int64_t r0, const int8_t* xp,
                        int64_t ldx, int32_t* acc, bool prefetch) {
  switch (nt) {
    case 1: tile<BITS, NR, 1>(packed, rb, r0, xp, ldx, acc, prefetch); break;
    case 2: tile<BITS, NR, 2>(packed, rb, r0, xp, ldx, acc, prefetch); break;
    case 3: tile<BITS, NR, 3>(packed, rb, r0, xp, ldx, acc, prefetch); break;
    default: tile<BITS, NR, 4>(packed, rb, r0, xp, ldx, acc, prefetch); break;
  }
}

}  // namespace detail
#endif

// Scalar dot products, same layout (the fallback without AVX2).
inline void dot_scalar(const uint8_t* packed, int64_t rb, int bits, int64_t r, const int8_t* xp,
                       int64_t ldx, int nt, int32_t* acc) {
  const int64_t per = codes_per_block(bits), nblocks = rb / kBlockBytes;
  const int S = 8 / bits;
  const unsigned mask = (1u << bits) - 1u;
  const uint8_t* prow = packed + r * rb;
  for (int t = 0; t < nt; ++t) {
    int32_t a = 0;
    for (int64_t j = 0; j < nblocks; ++j)
      for (int s = 0; s < S; ++s)
        for (int p = 0; p < 32; ++p)
          a += static_cast<int32_t>((prow[j * kBlockBytes + p] >> (s * bits)) & mask) *
               xp[t * ldx + j * per + 32 * s + p];
    acc[t] = a;
  }
}

// y [ntok, rows] (row stride ldy) = lowbit_linear_int8act(x [ntok, cols]). zero must hold
// integers in [0, 2^bits - 1] and cols <= kMaxCols (checked by the binding).
inline void linear(const float* x, int64_t ntok, int64_t cols, const uint8_t* packed, int64_t rows,
                   int bits, const float* scale, const float* zero, const float* bias, float* y,
                   int64_t ldy) {
  const int64_t rb = row_bytes(cols, bits);
  const int64_t ldx = std::max<int64_t>(rb / kBlockBytes * codes_per_block(bits), 1);
  std::vector<int8_t> xperm(static_cast<size_t>(ntok * ldx));
  std::vector<int32_t> qsum(static_cast<size_t>(ntok), 0);
  std::vector<float> sx(static_cast<size_t>(ntok), 1.f);
  std::vector<uint8_t> finite(static_cast<size_t>(ntok), 1);
#pragma omp parallel for schedule(static) if (ntok * cols > 65536)
  for (int64_t t = 0; t < ntok; ++t)
    finite[t] = quantize_token(x + t * cols, cols, bits, xperm.data() + t * ldx, &qsum[t], &sx[t]);

  constexpr int NR = 2;
  const int64_t groups = (rows + NR - 1) / NR;
  const float nan = std::numeric_limits<float>::quiet_NaN();
#pragma omp parallel for schedule(static) if (rows * rb * ntok > 32768)
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t r0 = g * NR;
    const int nr = static_cast<int>(std::min<int64_t>(NR, rows - r0));
    // The token groups re-read this tile's packed rows from L1, not from memory.
    for (int64_t t0 = 0; t0 < ntok; t0 += kTokensPerTile) {
      const int nt = static_cast<int>(std::min<int64_t>(kTokensPerTile, ntok - t0));
      const int8_t* xp = xperm.data() + t0 * ldx;
      int32_t acc[NR * kTokensPerTile];  // [r][t], nt tokens per row
#ifdef PTQX_LOWBIT_AVX2
      // Two rows share each activation load while the accumulators fit the 16 ymm
      // registers (two s16 and two s32 per row and token); with 3-4 tokens, one row.
      const bool pf = t0 == 0;
      if (nr == 2 && nt <= 2) {
        if (bits == 2)
          detail::tile_tokens<2, 2>(nt, packed, rb, r0, xp, ldx, acc, pf);
        else
          detail::tile_tokens<4, 2>(nt, packed, rb, r0, xp, ldx, acc, pf);
      } else {
        for (int r = 0; r < nr; ++r) {
          if (bits == 2)
            detail::tile_tokens<2, 1>(nt, packed, rb, r0 + r, xp, ldx, acc + r * nt, pf);
          else
            detail::tile_tokens<4, 1>(nt, packed, rb, r0 + r, xp, ldx, acc + r * nt, pf);
        }
      }
#else
      for (int r = 0; r < nr; ++r) dot_scalar(packed, rb, bits, r0 + r, xp, ldx, nt, acc + r * nt);
#endif
      for (int r = 0; r < nr; ++r) {
        const int64_t row = r0 + r;
        const int32_t z = static_cast<int32_t>(zero[row]);
        for (int t = 0; t < nt; ++t) {
          const int64_t tok = t0 + t;
          y[tok * ldy + row] =
              finite[tok] ? finish(acc[r * nt + t] - z * qsum[tok], sx[tok], scale[row], bias, row) : nan;
        }
      }
    }
  }
}

}  // namespace ptqx::lowbit::int8act
