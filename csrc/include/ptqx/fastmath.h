// Vectorised transcendental functions for the grid search (|e|^norm, float32) and the
// LiRA scores (exp, float64). AVX2+FMA only; callers keep a scalar fallback that uses
// <cmath>. Accuracy is what the callers need, stated per function and checked by the
// tests against float64 references.
#pragma once

#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PTQX_HAVE_AVX2 1
#endif

namespace ptqx::fastmath {

// |e|^norm is evaluated as |e|^2 * |e|^frac (norm >= 2, e.g. OBC's 2.4 = 2 + 0.4) or
// |e|^frac (norm < 2): the transcendental part then only carries the small exponent,
// which keeps its rounding error small.
struct PowPlan {
  float frac;    // norm - 2 if square, else norm
  bool square;   // multiply by e*e
  bool exact;    // norm == 2: e*e only, no transcendental
  explicit PowPlan(float norm)
      : frac(norm >= 2.f ? norm - 2.f : norm), square(norm >= 2.f), exact(norm == 2.f) {}
};

#if defined(PTQX_HAVE_AVX2)

// a^plan for 8 non-negative floats. Relative error below ~3e-7 against the exact power
// (tests/test_grid.py checks this through the chosen candidates), comparable to the
// float32 rounding of torch's own pow and sum. a below FLT_MIN (0 or subnormal) gives 0.
//
// a = m * 2^k with m in [sqrt(1/2), sqrt(2)); a^f = 2^(f*k) * 2^(f*log2 m). f*k is split
// exactly (hi + lo via FMA) so the integer part of the exponent never absorbs rounding
// error; log2 m = 2 atanh((m-1)/(m+1)) / ln 2 by its odd series (|t| <= 0.172, 5 terms,
// truncation 7e-10); 2^r for |r| <= 1/2 by its Taylor series to degree 7 (4e-9).
inline __m256 pow_nonneg(__m256 a, const PowPlan& plan) {
  if (plan.exact) return _mm256_mul_ps(a, a);
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256i bits = _mm256_castps_si256(a);
  __m256i k = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                                 _mm256_set1_epi32(0x3f800000)));
  const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
  k = _mm256_sub_epi32(k, _mm256_castps_si256(big));  // mask is -1 where halved
  const __m256 t = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
  const __m256 t2 = _mm256_mul_ps(t, t);
  __m256 s = _mm256_fmadd_ps(t2, _mm256_set1_ps(1.f / 9.f), _mm256_set1_ps(1.f / 7.f));
  s = _mm256_fmadd_ps(s, t2, _mm256_set1_ps(1.f / 5.f));
  s = _mm256_fmadd_ps(s, t2, _mm256_set1_ps(1.f / 3.f));
  s = _mm256_fmadd_ps(s, t2, one);
  // log2(m) = 2 t s / ln 2
  const __m256 log2m = _mm256_mul_ps(_mm256_mul_ps(t, s), _mm256_set1_ps(2.8853900817779268f));
  const __m256 f = _mm256_set1_ps(plan.frac);
  const __m256 kf = _mm256_cvtepi32_ps(k);
  const __m256 hi = _mm256_mul_ps(kf, f);
  const __m256 lo = _mm256_fmsub_ps(kf, f, hi);  // exact: kf*f - hi
  const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m256 k1 = _mm256_round_ps(hi, rnd);
  const __m256 u = _mm256_fmadd_ps(log2m, f, _mm256_add_ps(_mm256_sub_ps(hi, k1), lo));
  const __m256 k2 = _mm256_round_ps(u, rnd);
  const __m256 r = _mm256_mul_ps(_mm256_sub_ps(u, k2), _mm256_set1_ps(0.69314718055994531f));
  __m256 p = _mm256_set1_ps(1.f / 5040.f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, one);
  p = _mm256_fmadd_ps(p, r, one);
  // 2^(k1 + k2) as a float; exponents below the normal range give 0 (terms < 1e-38).
  __m256 kk = _mm256_add_ps(k1, k2);
  const __m256 under = _mm256_cmp_ps(kk, _mm256_set1_ps(-126.f), _CMP_LT_OQ);
  kk = _mm256_min_ps(_mm256_max_ps(kk, _mm256_set1_ps(-126.f)), _mm256_set1_ps(127.f));
  const __m256i e2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(kk), _mm256_set1_epi32(127)), 23);
  __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e2));
  if (plan.square) res = _mm256_mul_ps(res, _mm256_mul_ps(a, a));
  const __m256 tiny = _mm256_cmp_ps(a, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
  return _mm256_andnot_ps(_mm256_or_ps(tiny, under), res);
}

// exp(x) for 4 doubles with x <= 0 (the callers subtract the running maximum). Relative
// error ~2e-16; x < -708 (results below the normal range, < 1e-307) gives 0, -inf gives
// 0, NaN stays NaN.
// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 by a two-part ln 2
// (|r| <= 0.347), exp(r) by its Taylor series to degree 12 (truncation 1.7e-16).
inline __m256d exp_nonpos(__m256d x) {
  const __m256d under = _mm256_cmp_pd(x, _mm256_set1_pd(-708.0), _CMP_LT_OQ);
  const __m256d xc = _mm256_max_pd(x, _mm256_set1_pd(-708.0));  // NaN: max returns the 2nd operand
  const __m256d xs = _mm256_blendv_pd(xc, x, _mm256_cmp_pd(x, x, _CMP_UNORD_Q));
  const __m256d n = _mm256_round_pd(_mm256_mul_pd(xs, _mm256_set1_pd(1.4426950408889634)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93147180369123816490e-01), xs);
  r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.90821492927058770002e-10), r);
  static constexpr double c[13] = {1.0,
                                   1.0,
                                   1.0 / 2,
                                   1.0 / 6,
                                   1.0 / 24,
                                   1.0 / 120,
                                   1.0 / 720,
                                   1.0 / 5040,
                                   1.0 / 40320,
                                   1.0 / 362880,
                                   1.0 / 3628800,
                                   1.0 / 39916800,
                                   1.0 / 479001600};
  __m256d p = _mm256_set1_pd(c[12]);
  for (int j = 11; j >= 0; --j) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c[j]));
  // 2^n: n + 1023 in [1, 1023] sits in the low mantissa bits of n + (2^52 + 2^51 + 1023);
  // shifting left by 52 moves it into the exponent field and drops the rest.
  const __m256d biased = _mm256_add_pd(n, _mm256_set1_pd(6755399441055744.0 + 1023.0));
  const __m256d two_n = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(biased), 52));
  return _mm256_andnot_pd(under, _mm256_mul_pd(p, two_n));
}

#endif  // PTQX_HAVE_AVX2

}  // namespace ptqx::fastmath
