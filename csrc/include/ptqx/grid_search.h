// Torch-free CPU kernel of the per-row MSE range search (OBC Quantizer.find_params;
// semantics: ptqx/ops/reference.py grid_search). Rows run in parallel (OpenMP); each
// row scores its `steps` candidates with AVX2 (8 columns at a time).
//
// What is bit-identical to the reference: the row min/max, the range and every
// candidate's float32 (scale, zero) (grid_common.h, grid.h), the quantization of each
// weight (division, round half to even, clamp, scale * (q - zero), all in the weight's
// dtype, with no FMA contraction) and the scaling of each |error| by the row's power of
// two (grid_error_exponent, grid.h: exact, so float64 rows of any magnitude go through
// the float32 power without under- or overflow). What is not: |e|^norm (fastmath.h,
// relative error < 3e-7) and the summation (float64 here, float32/float64 pairwise in
// torch). A row can therefore pick a different candidate only when two candidates'
// errors tie to ~1e-6 relative; tests/test_grid.py bounds it.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "ptqx/fastmath.h"
#include "ptqx/grid.h"
#include "ptqx/grid_common.h"

namespace ptqx {

namespace detail {

// Keeps the compiler from fusing the rounded dequantized value into the subtraction that
// follows (see mul_rn in grid_common.h).
template <typename V>
inline void opaque(V& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  asm("" : "+w"(v));
#endif
}

// sum_c (k * |s*(clamp(round(x/s)+z, 0, m) - z) - x|)^norm over one row; k is the row's
// power of two (grid_error_exponent), 1 gives the unscaled error.
template <typename T>
double candidate_error_scalar(const T* x, int64_t cols, T s, T z, T m, double norm, T k = T(1)) {
  double acc = 0.0;
  for (int64_t c = 0; c < cols; ++c) {
    T q = std::nearbyint(x[c] / s) + z;
    q = q < T(0) ? T(0) : (q > m ? m : q);
    T deq = s * (q - z);
    opaque(deq);
    const float e = static_cast<float>(std::fabs(deq - x[c]) * k);
    acc += std::pow(static_cast<double>(e), norm);
  }
  return acc;
}

#if defined(PTQX_HAVE_AVX2)

inline __m256i tail_mask_epi32(int64_t rem) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rem < 8 ? rem : 8)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline void accumulate(__m256 p, __m256d& acc0, __m256d& acc1) {
  acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
  acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
}

inline double hsum(__m256d a, __m256d b) {
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(a, b));
  return (t[0] + t[1]) + (t[2] + t[3]);
}

constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

inline __m256 abs_err8(__m256 x, __m256 s, __m256 z, __m256 m) {
  __m256 q = _mm256_add_ps(_mm256_round_ps(_mm256_div_ps(x, s), kRound), z);
  q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), m);
  __m256 deq = _mm256_mul_ps(s, _mm256_sub_ps(q, z));
  opaque(deq);
  return _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_sub_ps(deq, x));
}

inline __m256d abs_err4(__m256d x, __m256d s, __m256d z, __m256d m) {
  __m256d q = _mm256_add_pd(_mm256_round_pd(_mm256_div_pd(x, s), kRound), z);
  q = _mm256_min_pd(_mm256_max_pd(q, _mm256_setzero_pd()), m);
  __m256d deq = _mm256_mul_pd(s, _mm256_sub_pd(q, z));
  opaque(deq);
  return _mm256_andnot_pd(_mm256_set1_pd(-0.0), _mm256_sub_pd(deq, x));
}

inline double candidate_error(const float* x, int64_t cols, float s, float z, float m, float k,
                              const fastmath::PowPlan& plan) {
  const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z), vm = _mm256_set1_ps(m);
  const __m256 vk = _mm256_set1_ps(k);
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    const __m256 a = _mm256_mul_ps(abs_err8(_mm256_loadu_ps(x + c), vs, vz, vm), vk);
    accumulate(fastmath::pow_nonneg(a, plan), acc0, acc1);
  }
  if (c < cols) {
    const __m256i mask = tail_mask_epi32(cols - c);
    const __m256 a = _mm256_mul_ps(abs_err8(_mm256_maskload_ps(x + c, mask), vs, vz, vm), vk);
    accumulate(_mm256_and_ps(fastmath::pow_nonneg(a, plan), _mm256_castsi256_ps(mask)), acc0, acc1);
  }
  return hsum(acc0, acc1);
}

inline double candidate_error(const double* x, int64_t cols, float s, float z, float m, double k,
                              const fastmath::PowPlan& plan) {
  const __m256d vs = _mm256_set1_pd(s), vz = _mm256_set1_pd(z), vm = _mm256_set1_pd(m);
  const __m256d vk = _mm256_set1_pd(k);
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  int64_t c = 0;
  for (; c < cols; c += 8) {
    __m256d x0, x1;
    __m256i mask32 = _mm256_set1_epi32(-1);
    if (c + 8 <= cols) {
      x0 = _mm256_loadu_pd(x + c);
      x1 = _mm256_loadu_pd(x + c + 4);
    } else {
      mask32 = tail_mask_epi32(cols - c);
      const __m256i m0 = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(mask32));
      const __m256i m1 = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(mask32, 1));
      x0 = _mm256_maskload_pd(x + c, m0);
      x1 = _mm256_maskload_pd(x + c + 4, m1);
    }
    const __m256d a0 = _mm256_mul_pd(abs_err4(x0, vs, vz, vm), vk);
    const __m256d a1 = _mm256_mul_pd(abs_err4(x1, vs, vz, vm), vk);
    const __m256 a = _mm256_set_m128(_mm256_cvtpd_ps(a1), _mm256_cvtpd_ps(a0));
    accumulate(_mm256_and_ps(fastmath::pow_nonneg(a, plan), _mm256_castsi256_ps(mask32)), acc0, acc1);
  }
  return hsum(acc0, acc1);
}

#endif  // PTQX_HAVE_AVX2

}  // namespace detail

// w: [rows, cols] row-major; scale, zero: [rows] float32 outputs.
template <typename T>
void grid_search_rows(const T* w, int64_t rows, int64_t cols, const GridOptions& o, float* scale,
                      float* zero) {
  const int steps = o.steps < 1 ? 1 : o.steps;
  const fastmath::PowPlan plan(o.norm);
#pragma omp parallel for schedule(dynamic, 1) if (rows * cols * steps > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = w + r * cols;
    if (cols == 0) {
      scale[r] = 1.f;
      zero[r] = 0.f;
      continue;
    }
    T mn = x[0], mx = x[0];
    for (int64_t c = 1; c < cols; ++c) {
      mn = x[c] < mn ? x[c] : mn;
      mx = x[c] > mx ? x[c] : mx;
    }
    float lo, hi;
    grid_search_range(static_cast<float>(mn), static_cast<float>(mx), o, lo, hi);
    const T k = static_cast<T>(std::ldexp(1.0, -grid_error_exponent(lo, hi)));
    double best = std::numeric_limits<double>::infinity();
    float best_s = 0.f, best_z = 0.f;
    for (int i = 0; i < steps; ++i) {
      float s, z;
      grid_candidate(lo, hi, i, o, s, z);
      if (i == 0) {  // OBC starts from the full range
        best_s = s;
        best_z = z;
      }
      if (!usable_scale(s)) continue;
#if defined(PTQX_HAVE_AVX2)
      const double err = detail::candidate_error(x, cols, s, z, static_cast<float>(o.maxq), k, plan);
#else
      const double err = detail::candidate_error_scalar<T>(x, cols, T(s), T(z), T(o.maxq), o.norm, k);
#endif
      if (err < best) {
        best = err;
        best_s = s;
        best_z = z;
      }
    }
    scale[r] = best_s;
    zero[r] = best_z;
  }
}

}  // namespace ptqx
