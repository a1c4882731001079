// Torch-free CPU kernels for AdaRound's soft rounding (schemas: ptqx/ops/_library.py,
// semantics: ptqx/ops/reference.py adaround_forward / adaround_backward, which follow
// yhhhli/BRECQ quant/adaptive_rounding.py and quant/layer_recon.py).
//
// Per element, with h(a) = clamp(1.2 * sigmoid(a) - 0.1, 0, 1):
//   forward:  w_soft = s * (clamp(w_floor + h + z, 0, maxq) - z),
//             reg   += 1 - (2|h - 0.5|)^beta                     (beta > 0 only)
//   backward: grad_a = [grad_w * s * 1{0 <= w_floor + h + z <= maxq}
//                       - grad_reg * beta * 2 * (2|h-0.5|)^(beta-1) * sign(h - 0.5)]
//                      * 1{0 <= 1.2 sig - 0.1 <= 1} * 1.2 * sig * (1 - sig)
// One pass over the row instead of the ~15 elementwise torch ops (and their temporaries)
// autograd runs, which made up 20-47% of a reconstruction step on ResNet-18 layers.
//
// float32 rows use AVX2+FMA with a Cephes-style exp/log; the row tail goes through the
// same vector code with masked loads/stores, so an element's result does not depend on
// its position in the row (GCC contracts a*b+c into FMAs even under -std=c++20, so a
// scalar tail could differ from the vector body in the last bit). Without AVX2 the
// scalar path runs the same polynomials; float64 uses libm. h is formed without an FMA,
// like the reference (see stretch_sig), so float64 kinks match autograd.
// Determinism: the regulariser is summed per row in double in a fixed lane order, then
// the row sums are added in row order, so the result is independent of thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ptqx/no_contract.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PTQX_ADAROUND_AVX2 1
#endif

namespace ptqx {
namespace adaround_detail {

// Double so the float64 path gets 1.2 and -0.1 to double precision; cast per type.
// Below this many elements one thread does the whole op: a parallel region's fork/join
// (and, on a loaded machine, spin-waiting threads) cost more than the work saved. torch's
// own elementwise ops use a 32768 grain; each element here does ~3 transcendentals.
constexpr int64_t kParallelMin = 65536;
// zeta - gamma and gamma (reference.ADAROUND_STRETCH, ADAROUND_GAMMA): 1.2, not the
// 1.2000000000000002 of 1.1 - (-0.1) in double, so that h(0) is exactly 0.5 in float64.
constexpr double kStretch = 1.2;
constexpr double kGamma = -0.1;

// ---- float32 transcendental functions (Cephes expf/logf polynomials, FMA form) -------
constexpr float kExpHi = 88.3762626647949f;
constexpr float kExpLo = -88.3762626647949f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500E-4f, kExpP1 = 1.3981999507E-3f, kExpP2 = 8.3334519073E-3f,
                kExpP3 = 4.1665795894E-2f, kExpP4 = 1.6666665459E-1f, kExpP5 = 5.0000001201E-1f;
constexpr float kSqrtHalf = 0.707106781186547524f;
constexpr float kLogP0 = 7.0376836292E-2f, kLogP1 = -1.1514610310E-1f, kLogP2 = 1.1676998740E-1f,
                kLogP3 = -1.2420140846E-1f, kLogP4 = 1.4249322787E-1f, kLogP5 = -1.6668057665E-1f,
                kLogP6 = 2.0000714765E-1f, kLogP7 = -2.4999993993E-1f, kLogP8 = 3.3333331174E-1f;

inline float exp_f(float x) {
  x = std::min(std::max(x, kExpLo), kExpHi);
  const float n = std::floor(std::fma(x, kLog2e, 0.5f));
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float y = kExpP0;
  y = std::fma(y, r, kExpP1);
  y = std::fma(y, r, kExpP2);
  y = std::fma(y, r, kExpP3);
  y = std::fma(y, r, kExpP4);
  y = std::fma(y, r, kExpP5);
  y = std::fma(y, r * r, r);
  y = y + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float p;
  std::memcpy(&p, &e, sizeof(p));
  return y * p;
}

// Natural log for x > 0 (normal numbers); callers handle x == 0.
inline float log_f(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  float e = static_cast<float>((bits >> 23) - 126);
  bits = (bits & 0x807fffff) | 0x3f000000;  // mantissa in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  if (m < kSqrtHalf) {
    e -= 1.0f;
    m = m + m - 1.0f;
  } else {
    m = m - 1.0f;
  }
  const float z = m * m;
  float y = kLogP0;
  y = std::fma(y, m, kLogP1);
  y = std::fma(y, m, kLogP2);
  y = std::fma(y, m, kLogP3);
  y = std::fma(y, m, kLogP4);
  y = std::fma(y, m, kLogP5);
  y = std::fma(y, m, kLogP6);
  y = std::fma(y, m, kLogP7);
  y = std::fma(y, m, kLogP8);
  y = y * m * z;
  y = std::fma(e, kLn2Lo, y);
  y = std::fma(z, -0.5f, y);
  return std::fma(e, kLn2Hi, m + y);
}

inline float sigmoid_f(float a) { return 1.0f / (1.0f + exp_f(-a)); }
inline double sigmoid_f(double a) { return 1.0 / (1.0 + std::exp(-a)); }
inline float pow_f(float d, float b) { return exp_f(b * log_f(d)); }
inline double pow_f(double d, double b) { return std::pow(d, b); }

// ---- one element, generic T (the scalar path; float32 mirrors the AVX2 path) ---------
// t = stretch * sig and u = t + gamma are rounded separately, as torch evaluates the
// reference's `sigmoid(a) * 1.2 + gamma`: a fused t + gamma rounds once and can put u on
// the other side of a clamp's kink (u = 0 or 1, where autograd's closed-interval
// convention decides whether the gradient passes) for some alpha. In float64 the kinks
// then agree with autograd (tests/test_adaround.py); in float32 the Cephes exp can
// differ from torch's sigmoid by an ulp, so an alpha within an ulp of a kink may still
// land on the other side.
template <typename T>
inline T stretch_sig(T sig) {
  return no_contract(static_cast<T>(kStretch) * sig);
}

template <typename T>
inline T soft_h(T sig) {
  const T u = stretch_sig(sig) + static_cast<T>(kGamma);
  return std::min(std::max(u, T(0)), T(1));
}

template <typename T>
inline T forward_elem(T wf, T a, T s, T z, T maxq, T beta, double& reg) {
  const T h = soft_h(sigmoid_f(a));
  const T q = std::min(std::max(wf + h + z, T(0)), maxq);
  if (beta > T(0)) {
    const T d = std::fabs(h - T(0.5)) * T(2);
    const T p = d > T(0) ? pow_f(d, beta) : T(0);
    reg += static_cast<double>(T(1) - p);
  }
  return s * (q - z);
}

template <typename T>
inline T backward_elem(T gw, T wf, T a, T s, T z, T maxq, T beta, T reg_coef) {
  const T sig = sigmoid_f(a);
  const T t = stretch_sig(sig);
  const T u = t + static_cast<T>(kGamma);
  const T h = std::min(std::max(u, T(0)), T(1));
  const T dh = (u >= T(0) && u <= T(1)) ? t * (T(1) - sig) : T(0);  // (stretch * sig) * (1 - sig)
  const T v = wf + h + z;
  T g = (v >= T(0) && v <= maxq) ? gw * s : T(0);
  if (beta > T(0)) {
    const T c = h - T(0.5);
    const T d = std::fabs(c) * T(2);
    // Zero at h == 0.5 (abs'(0) = 0 in autograd); beta >= 1 keeps d^(beta-1) finite.
    if (d > T(0)) {
      const T dp = pow_f(d, beta - T(1));
      g = std::fma(-reg_coef, c > T(0) ? dp : -dp, g);
    }
  }
  return g * dh;
}

#ifdef PTQX_ADAROUND_AVX2
// ---- AVX2 mirrors of the float32 functions above ---------------------------------------
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpLo)), _mm256_set1_ps(kExpHi));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
  __m256 y = _mm256_set1_ps(kExpP0);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP1));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP2));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP3));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP4));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP5));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline __m256 log8(__m256 x) {
  __m256i bits = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  bits = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(static_cast<int32_t>(0x807fffff))),
                         _mm256_set1_epi32(0x3f000000));
  __m256 m = _mm256_castsi256_ps(bits);
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(kSqrtHalf), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(small, _mm256_set1_ps(1.0f)));
  const __m256 m_small = _mm256_sub_ps(_mm256_add_ps(m, m), _mm256_set1_ps(1.0f));
  const __m256 m_big = _mm256_sub_ps(m, _mm256_set1_ps(1.0f));
  m = _mm256_blendv_ps(m_big, m_small, small);
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(kLogP0);
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP1));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP2));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP3));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP4));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP5));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP6));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP7));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP8));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(kLn2Lo), y);
  y = _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5f), y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(kLn2Hi), _mm256_add_ps(m, y));
}

inline __m256 sigmoid8(__m256 a) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), a))));
}

inline __m256 abs8(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

// Lanes [0, n) set, for the masked row tail (1 <= n < 8).
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// d^b for d in [0, 1]; exactly 0 where d == 0.
inline __m256 pow8(__m256 d, __m256 b) {
  const __m256 pos = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_GT_OQ);
  return _mm256_and_ps(pos, exp8(_mm256_mul_ps(b, log8(d))));
}
#endif

}  // namespace adaround_detail

// w_floor, alpha, w_soft: [rows, cols] row-major; scale, zero: [rows] float32.
// Returns the regulariser sum(1 - (2|h - 0.5|)^beta) (0 when beta == 0).
template <typename T>
double adaround_forward_rows(const T* w_floor, const T* alpha, const float* scale, const float* zero,
                             int64_t rows, int64_t cols, int maxq, T beta, T* w_soft) {
  using namespace adaround_detail;
  std::vector<double> row_reg(static_cast<size_t>(rows), 0.0);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T s = static_cast<T>(scale[r]), z = static_cast<T>(zero[r]), m = static_cast<T>(maxq);
    const T* wf = w_floor + r * cols;
    const T* a = alpha + r * cols;
    T* out = w_soft + r * cols;
    double reg = 0.0;
    int64_t c = 0;
#ifdef PTQX_ADAROUND_AVX2
    if constexpr (std::is_same_v<T, float>) {
      const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z), vm = _mm256_set1_ps(m);
      const __m256 vb = _mm256_set1_ps(beta), zero8 = _mm256_setzero_ps(), one8 = _mm256_set1_ps(1.0f);
      __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
      auto step = [&](__m256 wfv, __m256 av, __m256 lane_mask) -> __m256 {
        const __m256 sig = sigmoid8(av);
        const __m256 t = no_contract(_mm256_mul_ps(_mm256_set1_ps(static_cast<float>(kStretch)), sig));
        const __m256 u = _mm256_add_ps(t, _mm256_set1_ps(static_cast<float>(kGamma)));
        const __m256 h = _mm256_min_ps(_mm256_max_ps(u, zero8), one8);
        const __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_add_ps(wfv, h), vz), zero8), vm);
        if (beta > 0.0f) {
          const __m256 d = _mm256_mul_ps(abs8(_mm256_sub_ps(h, _mm256_set1_ps(0.5f))), _mm256_set1_ps(2.0f));
          const __m256 t = _mm256_and_ps(lane_mask, _mm256_sub_ps(one8, pow8(d, vb)));
          acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
          acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)));
        }
        return _mm256_mul_ps(vs, _mm256_sub_ps(q, vz));
      };
      const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
      for (; c + 8 <= cols; c += 8) {
        _mm256_storeu_ps(out + c, step(_mm256_loadu_ps(wf + c), _mm256_loadu_ps(a + c), all));
      }
      if (c < cols) {
        const __m256i mi = tail_mask(cols - c);
        const __m256 res = step(_mm256_maskload_ps(wf + c, mi), _mm256_maskload_ps(a + c, mi), _mm256_castsi256_ps(mi));
        _mm256_maskstore_ps(out + c, mi, res);
        c = cols;
      }
      alignas(32) double lanes[8];
      _mm256_store_pd(lanes, acc_lo);
      _mm256_store_pd(lanes + 4, acc_hi);
      for (double l : lanes) reg += l;
    }
#endif
    for (; c < cols; ++c) out[c] = forward_elem<T>(wf[c], a[c], s, z, m, beta, reg);
    row_reg[static_cast<size_t>(r)] = reg;
  }
  double total = 0.0;
  for (double v : row_reg) total += v;
  return total;
}

// grad_w, w_floor, alpha, grad_alpha: [rows, cols]; grad_reg: the scalar upstream
// gradient of the regulariser.
template <typename T>
void adaround_backward_rows(const T* grad_w, T grad_reg, const T* w_floor, const T* alpha,
                            const float* scale, const float* zero, int64_t rows, int64_t cols, int maxq,
                            T beta, T* grad_alpha) {
  using namespace adaround_detail;
  // d/dh of -(2|h-0.5|)^beta is -beta * 2 * (2|h-0.5|)^(beta-1) * sign(h-0.5).
  const T reg_coef = grad_reg * beta * T(2);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T s = static_cast<T>(scale[r]), z = static_cast<T>(zero[r]), m = static_cast<T>(maxq);
    const T* gw = grad_w + r * cols;
    const T* wf = w_floor + r * cols;
    const T* a = alpha + r * cols;
    T* out = grad_alpha + r * cols;
    int64_t c = 0;
#ifdef PTQX_ADAROUND_AVX2
    if constexpr (std::is_same_v<T, float>) {
      const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z), vm = _mm256_set1_ps(m);
      const __m256 zero8 = _mm256_setzero_ps(), one8 = _mm256_set1_ps(1.0f);
      const __m256 vbm1 = _mm256_set1_ps(beta - 1.0f), vneg_coef = _mm256_set1_ps(-reg_coef);
      const __m256 sign_mask = _mm256_set1_ps(-0.0f);
      auto step = [&](__m256 gwv, __m256 wfv, __m256 av) -> __m256 {
        const __m256 sig = sigmoid8(av);
        const __m256 t = no_contract(_mm256_mul_ps(_mm256_set1_ps(static_cast<float>(kStretch)), sig));
        const __m256 u = _mm256_add_ps(t, _mm256_set1_ps(static_cast<float>(kGamma)));
        const __m256 h = _mm256_min_ps(_mm256_max_ps(u, zero8), one8);
        const __m256 in_h = _mm256_and_ps(_mm256_cmp_ps(u, zero8, _CMP_GE_OQ), _mm256_cmp_ps(u, one8, _CMP_LE_OQ));
        const __m256 dh = _mm256_and_ps(in_h, _mm256_mul_ps(t, _mm256_sub_ps(one8, sig)));
        const __m256 v = _mm256_add_ps(_mm256_add_ps(wfv, h), vz);
        const __m256 in_q = _mm256_and_ps(_mm256_cmp_ps(v, zero8, _CMP_GE_OQ), _mm256_cmp_ps(v, vm, _CMP_LE_OQ));
        __m256 g = _mm256_and_ps(in_q, _mm256_mul_ps(gwv, vs));
        if (beta > 0.0f) {
          const __m256 cc = _mm256_sub_ps(h, _mm256_set1_ps(0.5f));
          const __m256 d = _mm256_mul_ps(abs8(cc), _mm256_set1_ps(2.0f));
          const __m256 pos = _mm256_cmp_ps(d, zero8, _CMP_GT_OQ);
          const __m256 dp = exp8(_mm256_mul_ps(vbm1, log8(d)));
          // sign(h - 0.5) * dp: copy the sign bit of cc onto dp (dp >= 0).
          const __m256 sdp = _mm256_or_ps(dp, _mm256_and_ps(cc, sign_mask));
          g = _mm256_blendv_ps(g, _mm256_fmadd_ps(vneg_coef, sdp, g), pos);
        }
        return _mm256_mul_ps(g, dh);
      };
      for (; c + 8 <= cols; c += 8) {
        _mm256_storeu_ps(out + c, step(_mm256_loadu_ps(gw + c), _mm256_loadu_ps(wf + c), _mm256_loadu_ps(a + c)));
      }
      if (c < cols) {
        const __m256i mi = tail_mask(cols - c);
        _mm256_maskstore_ps(out + c, mi,
                            step(_mm256_maskload_ps(gw + c, mi), _mm256_maskload_ps(wf + c, mi),
                                 _mm256_maskload_ps(a + c, mi)));
        c = cols;
      }
    }
#endif
    for (; c < cols; ++c) out[c] = backward_elem<T>(gw[c], wf[c], a[c], s, z, m, beta, reg_coef);
  }
}

}  // namespace ptqx
