// Torch-free CPU kernel of LiRA's logit-scaled confidence (Carlini et al. 2022):
//   score = log p_y - log(sum_{k != y} p_k) = z_y - logsumexp_{k != y} z_k,
// semantics: ptqx/ops/reference.py logit_scores. Float64 throughout: logits are
// converted exactly (f16/bf16/f32 -> f64), the max and the exp-sum run in float64.
//
// Memory traffic is one pass over the logits: a row is converted in chunks of up to
// kChunk classes into a small float64 buffer (L1-resident) with the label's slot and the
// padding set to -inf, then the chunk's max and sum of exp(z - max) are taken from the
// buffer and merged into the row's running (max, sum) like an online softmax. Rows run
// in parallel (OpenMP).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "ptqx/fastmath.h"
#include "ptqx/logit_dtype.h"

namespace ptqx {

namespace detail {

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | ((112u - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Convert n logits (any supported dtype) to float64 into dst.
inline void load_f64(const void* src, LogitDtype dt, int64_t n, double* dst) {
  int64_t i = 0;
  switch (dt) {
    case LogitDtype::F64:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(double));
      return;
    case LogitDtype::F32: {
      const float* s = static_cast<const float*>(src);
#if defined(PTQX_HAVE_AVX2)
      for (; i + 4 <= n; i += 4) _mm256_storeu_pd(dst + i, _mm256_cvtps_pd(_mm_loadu_ps(s + i)));
#endif
      for (; i < n; ++i) dst[i] = s[i];
      return;
    }
    case LogitDtype::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
#if defined(PTQX_HAVE_AVX2) && defined(__F16C__)
      for (; i + 4 <= n; i += 4) {
        const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i));
        _mm256_storeu_pd(dst + i, _mm256_cvtps_pd(_mm_cvtph_ps(h)));
      }
#endif
      for (; i < n; ++i) dst[i] = half_bits_to_float(s[i]);
      return;
    }
    case LogitDtype::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
#if defined(PTQX_HAVE_AVX2)
      for (; i + 4 <= n; i += 4) {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i));
        const __m128 f = _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(b), 16));
        _mm256_storeu_pd(dst + i, _mm256_cvtps_pd(f));
      }
#endif
      for (; i < n; ++i) dst[i] = bf16_bits_to_float(s[i]);
      return;
    }
  }
}

inline size_t logit_size(LogitDtype dt) {
  return dt == LogitDtype::F64 ? 8 : (dt == LogitDtype::F32 ? 4 : 2);
}

// max and sum of exp(v - max) over buf[0, n4) (n4 a multiple of 4, padding = -inf).
inline double chunk_max(const double* buf, int64_t n4) {
#if defined(PTQX_HAVE_AVX2)
  __m256d m0 = _mm256_set1_pd(-std::numeric_limits<double>::infinity()), m1 = m0;
  int64_t i = 0;
  for (; i + 8 <= n4; i += 8) {
    m0 = _mm256_max_pd(m0, _mm256_load_pd(buf + i));
    m1 = _mm256_max_pd(m1, _mm256_load_pd(buf + i + 4));
  }
  if (i < n4) m0 = _mm256_max_pd(m0, _mm256_load_pd(buf + i));
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_max_pd(m0, m1));
  const double a = t[0] > t[1] ? t[0] : t[1], b = t[2] > t[3] ? t[2] : t[3];
  return a > b ? a : b;
#else
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n4; ++i) m = buf[i] > m ? buf[i] : m;
  return m;
#endif
}

inline double chunk_sumexp(const double* buf, int64_t n4, double m) {
#if defined(PTQX_HAVE_AVX2)
  const __m256d vm = _mm256_set1_pd(m);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n4; i += 8) {
    s0 = _mm256_add_pd(s0, fastmath::exp_nonpos(_mm256_sub_pd(_mm256_load_pd(buf + i), vm)));
    s1 = _mm256_add_pd(s1, fastmath::exp_nonpos(_mm256_sub_pd(_mm256_load_pd(buf + i + 4), vm)));
  }
  if (i < n4) s0 = _mm256_add_pd(s0, fastmath::exp_nonpos(_mm256_sub_pd(_mm256_load_pd(buf + i), vm)));
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(s0, s1));
  return (t[0] + t[1]) + (t[2] + t[3]);
#else
  double s = 0.0;
  for (int64_t i = 0; i < n4; ++i) s += std::exp(buf[i] - m);
  return s;
#endif
}

}  // namespace detail

// logits: [rows, K] row-major of dtype dt; labels: [rows] int64; out: [rows] float64.
// Returns how many labels lay outside [0, K) (their scores are NaN); the binding turns a
// non-zero count into an error, so bad labels never read out of bounds.
inline int64_t logit_scores_rows(const void* logits, LogitDtype dt, const int64_t* labels,
                                 int64_t rows, int64_t K, double* out) {
  constexpr int64_t kChunk = 1024;
  const double ninf = -std::numeric_limits<double>::infinity();
  const size_t esize = detail::logit_size(dt);
  const char* base = static_cast<const char*>(logits);
  int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (rows * K > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t y = labels[r];
    if (y < 0 || y >= K) {
      out[r] = std::numeric_limits<double>::quiet_NaN();
      ++bad;
      continue;
    }
    alignas(32) double buf[kChunk + 4];
    const char* row = base + static_cast<size_t>(r) * static_cast<size_t>(K) * esize;
    double m = ninf, s = 0.0, zy = 0.0;
    for (int64_t c0 = 0; c0 < K; c0 += kChunk) {
      const int64_t n = K - c0 < kChunk ? K - c0 : kChunk;
      detail::load_f64(row + static_cast<size_t>(c0) * esize, dt, n, buf);
      const int64_t n4 = (n + 3) & ~int64_t(3);
      for (int64_t i = n; i < n4; ++i) buf[i] = ninf;
      if (y >= c0 && y < c0 + n) {
        zy = buf[y - c0];
        buf[y - c0] = ninf;
      }
      const double mc = detail::chunk_max(buf, n4);
      if (mc == ninf) continue;  // only the label (and padding) in this chunk
      if (mc > m) {
        s = (m == ninf) ? 0.0 : s * std::exp(m - mc);
        m = mc;
      }
      s += detail::chunk_sumexp(buf, n4, m);
    }
    // K >= 2 and finite logits give m finite and s >= 1; a row whose other classes are
    // all -inf gives lse = -inf and score +inf, like the reference.
    const double lse = (m == ninf) ? ninf : m + std::log(s);
    out[r] = zy - lse;
  }
  return bad;
}

}  // namespace ptqx
