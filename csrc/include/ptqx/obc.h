// Torch-free CPU kernel for OBC's row-wise greedy quantization (IST-DASLab/OBC
// trueobs.py, TrueOBS.quantize; semantics: ptqx/ops/reference.py obc_quantize_rows_order).
//
// Why this is fast where the official code is not. Each step of a row picks entry j,
// then downdates Hinv -= u u^T with u = Hinv[:, j] / sqrt(d). The official code applies
// that rank-1 update to the full C x C copy every step: O(C^3) memory-bound work per row.
// After k steps Hinv_k = Hinv_0 - U_k^T U_k (a pivoted Cholesky with OBC's pick rule), so
// a step only needs (a) the diagonal of Hinv_k, kept up to date in O(C) per step, and
// (b) column j of Hinv_k, which is row j of the last folded matrix minus the pending
// pivots' contribution. Every `batch` steps the pending pivots are folded into the
// row's working matrix as one symmetric rank-`batch` update (a SYRK: compute-bound),
// and the matrix is compacted to the entries not yet quantized, so it shrinks as the
// row proceeds: about C^3/6 FMAs per row, done at GEMM speed. Rows are independent and
// run in parallel (OpenMP), each thread with its own working copy.
//
// The working matrix is kept fully symmetric (the fold computes the lower triangle and
// mirrors it) so column j is read as the contiguous row j.
//
// Arithmetic follows the reference step by step (true divisions, nearbyint = round half
// to even, score = err / diag, d = diag[j], u = c / sqrt(d), diag -= u*u); only the
// summation order of the Hinv downdates differs, so float64 results match the reference
// exactly on non-degenerate inputs and float32 ones up to rare near-tie picks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "ptqx/grid.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ptqx {
namespace obc {

// ---------------------------------------------------------------------------------------
// Register tile for the fold: kMR rows x (kNV SIMD vectors) columns.

constexpr int kMR = 4;
constexpr int kNV = 2;

template <typename T>
struct Simd {  // portable fallback: one lane
  static constexpr int L = 1;
};

#if defined(__AVX2__) && defined(__FMA__)
template <>
struct Simd<float> {
  static constexpr int L = 8;
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};
template <>
struct Simd<double> {
  static constexpr int L = 4;
  using V = __m256d;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static V bcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
};
#endif

template <typename T>
constexpr int tile_cols() {
  return kNV * Simd<T>::L;
}

// out[r][c] = sum_p vr[r*K + p] * vp[p*NR + c] for r < kMR, c < NR.
template <typename T>
inline void tile_kernel(const T* vr, const T* vp, int64_t K, T* out) {
  constexpr int NR = tile_cols<T>();
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (Simd<T>::L > 1) {
    using S = Simd<T>;
    typename S::V acc[kMR][kNV];
    for (int r = 0; r < kMR; ++r)
      for (int v = 0; v < kNV; ++v) acc[r][v] = S::zero();
    for (int64_t p = 0; p < K; ++p) {
      typename S::V b[kNV];
      for (int v = 0; v < kNV; ++v) b[v] = S::load(vp + p * NR + v * S::L);
      for (int r = 0; r < kMR; ++r) {
        const typename S::V a = S::bcast(vr + r * K + p);
        for (int v = 0; v < kNV; ++v) acc[r][v] = S::fma(a, b[v], acc[r][v]);
      }
    }
    for (int r = 0; r < kMR; ++r)
      for (int v = 0; v < kNV; ++v) S::store(out + r * NR + v * S::L, acc[r][v]);
    return;
  }
#endif
  for (int i = 0; i < kMR * NR; ++i) out[i] = T(0);
  for (int64_t p = 0; p < K; ++p)
    for (int r = 0; r < kMR; ++r) {
      const T a = vr[r * K + p];
      for (int c = 0; c < NR; ++c) out[r * NR + c] += a * vp[p * NR + c];
    }
}

// ---------------------------------------------------------------------------------------
// Per-thread working state for one row at a time.

template <typename T>
struct RowWorkspace {
  int64_t C = 0, batch = 0;
  std::vector<T> A;      // [C, C], ld C: Hinv at the last fold, compacted, full symmetric
  std::vector<T> U;      // [batch, C]: pending scaled pivot columns (compact coordinates)
  std::vector<T> vrow;   // packed pivots by row: [n rounded up to kMR, K]
  std::vector<T> vpk;    // packed pivots by column panel: [n/NR, K, NR]
  std::vector<T> w, diag, col, score, err, q;
  std::vector<int64_t> idx, keep;
  std::vector<uint8_t> done;

  RowWorkspace(int64_t cols, int64_t b) : C(cols), batch(b) {
    constexpr int NR = tile_cols<T>();
    A.resize(size_t(C) * C);
    U.resize(size_t(batch) * C);
    vrow.resize(size_t(C + kMR) * batch);
    vpk.resize(size_t(C + NR) * batch);
    w.resize(C), diag.resize(C), col.resize(C), score.resize(C), err.resize(C), q.resize(C);
    idx.resize(C), keep.resize(C), done.resize(C);
  }
};

// Fold the K pending pivots into A and compact it to the entries in keep[0..m):
//   A'[a][b] = src[keep[a]][keep[b]] - sum_p U[p][keep[a]] U[p][keep[b]].
// src is either A itself (in place: every write lands at or before, in row-major order,
// every position still to be read) or the shared initial Hinv (ld_src = C).
template <typename T>
void fold(RowWorkspace<T>& ws, const T* src, int64_t m, int64_t K) {
  constexpr int NR = tile_cols<T>();
  const int64_t C = ws.C;
  T* A = ws.A.data();
  const int64_t* keep = ws.keep.data();

  // 1. Compact the lower triangle (the upper one is rewritten by the mirror below).
  for (int64_t a = 0; a < m; ++a) {
    const T* srow = src + keep[a] * C;
    T* drow = A + a * C;
    for (int64_t b = 0; b <= a; ++b) drow[b] = srow[keep[b]];
  }
  if (K == 0) {
    for (int64_t a = 0; a < m; ++a)
      for (int64_t b = 0; b < a; ++b) A[b * C + a] = A[a * C + b];
    return;
  }

  // 2. Pack the pivots (zero padding to whole tiles).
  const int64_t mr_pad = (m + kMR - 1) / kMR * kMR;
  const int64_t nr_pad = (m + NR - 1) / NR * NR;
  T* vrow = ws.vrow.data();
  T* vpk = ws.vpk.data();
  const T* U = ws.U.data();
  for (int64_t a = 0; a < mr_pad; ++a)
    for (int64_t p = 0; p < K; ++p) vrow[a * K + p] = a < m ? U[p * C + keep[a]] : T(0);
  for (int64_t c0 = 0; c0 < nr_pad; c0 += NR) {
    T* panel = vpk + c0 * K;
    for (int64_t p = 0; p < K; ++p)
      for (int c = 0; c < NR; ++c) panel[p * NR + c] = c0 + c < m ? U[p * C + keep[c0 + c]] : T(0);
  }

  // 3. SYRK on the lower triangle, blocked over columns so a block's panels stay in L2;
  //    each finished tile is mirrored to the upper triangle.
  const int64_t KC = std::max<int64_t>(NR, (int64_t(96) * 1024 / int64_t(sizeof(T) * K)) / NR * NR);
  alignas(64) T out[kMR * NR];
  for (int64_t jc = 0; jc < m; jc += KC) {
    const int64_t jend = std::min(m, jc + KC);
    for (int64_t i0 = jc / kMR * kMR; i0 < m; i0 += kMR) {
      const int64_t cend = std::min(jend, i0 + kMR);  // columns <= last row of the group
      for (int64_t c0 = jc; c0 < cend; c0 += NR) {
        tile_kernel<T>(vrow + i0 * K, vpk + c0 * K, K, out);
        const bool interior = c0 + NR <= i0 && i0 + kMR <= m;
        if (interior) {
          for (int r = 0; r < kMR; ++r) {
            T* arow = A + (i0 + r) * C + c0;
            const T* o = out + r * NR;
#pragma omp simd
            for (int c = 0; c < NR; ++c) arow[c] -= o[c];
          }
          for (int c = 0; c < NR; ++c) {
            T* mrow = A + (c0 + c) * C + i0;
            for (int r = 0; r < kMR; ++r) mrow[r] = A[(i0 + r) * C + c0 + c];
          }
        } else {
          for (int r = 0; r < kMR; ++r) {
            const int64_t i = i0 + r;
            if (i >= m) break;
            for (int c = 0; c < NR; ++c) {
              const int64_t j = c0 + c;
              if (j > i || j >= jend) break;
              const T v = A[i * C + j] - out[r * NR + c];
              A[i * C + j] = v;
              A[j * C + i] = v;
            }
          }
        }
      }
    }
  }
}

// torch.argmin semantics: first minimum, a NaN wins (first NaN).
template <typename T>
inline bool better_min(T s, T best) {
  return s < best || (std::isnan(s) && !std::isnan(best));
}
template <typename T>
inline bool better_max(T s, T best) {
  return s > best || (std::isnan(s) && !std::isnan(best));
}

// One row. h0: shared initial Hinv [C, C]; w_in: the row [C]; q_out [C]; order [C] or null.
template <typename T>
void quantize_row(RowWorkspace<T>& ws, const T* h0, const T* w_in, T s, T z, T maxq, T* q_out,
                  int64_t* order) {
  const int64_t C = ws.C;
  T* w = ws.w.data();
  T* diag = ws.diag.data();
  T* col = ws.col.data();
  T* score = ws.score.data();
  T* err = ws.err.data();
  T* qv = ws.q.data();
  T* U = ws.U.data();
  int64_t* idx = ws.idx.data();
  uint8_t* done = ws.done.data();
  const T outlier = T(0.25) * (s * s);

  for (int64_t i = 0; i < C; ++i) {
    w[i] = w_in[i];
    diag[i] = h0[i * C + i];
    idx[i] = i;
    done[i] = 0;
  }
  const T* cur = h0;  // matrix the next column is read from (h0 until the first fold)
  int64_t n = C;      // entries in compact coordinates (includes this batch's picks)
  int64_t K = 0;      // pending pivots

  for (int64_t step = 0; step < C; ++step) {
    // Scores over all compact entries (vectorisable), then the picks (scalar).
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T qq = s * (quantize_code(w[i], s, z, maxq) - z);
      const T e = w[i] - qq;
      qv[i] = qq;
      err[i] = e * e;
      score[i] = err[i] / diag[i];
    }
    int64_t jmin = -1, jmax = -1;
    T best = std::numeric_limits<T>::infinity(), emax = T(0);
    bool any_outlier = false;
    for (int64_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      if (jmin < 0 || better_min(score[i], best)) jmin = i, best = score[i];
      if (jmax < 0 || better_max(err[i], emax)) jmax = i, emax = err[i];
      any_outlier |= err[i] > outlier;
    }
    // torch.argmin over a row whose live scores are all +inf returns the first live one
    // too (masked entries are +inf as well, but come first only if lower-indexed: the
    // reference then picks a masked entry; that needs diag = 0, excluded by the checks).
    int64_t j = jmin;
    if (any_outlier && w[j] != T(0)) j = jmax;

    const T qj = qv[j];
    q_out[idx[j]] = qj;
    if (order) order[step] = idx[j];

    // Column j of the current Hinv: row j of the folded matrix minus the pending pivots.
    // (Before the first fold compact coordinates are the original ones and cur is h0.)
    std::memcpy(col, cur + j * C, sizeof(T) * n);
    for (int64_t p = 0; p < K; ++p) {
      const T f = U[p * C + j];
      const T* up = U + p * C;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) col[i] -= f * up[i];
    }
    const T d = diag[j];
    const T coef = (w[j] - qj) / d;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) w[i] -= col[i] * coef;
    done[j] = 1;
    if (step == C - 1) break;

    const T sd = std::sqrt(d);
    T* up = U + K * C;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T u = col[i] / sd;
      up[i] = u;
      diag[i] -= u * u;
    }
    ++K;

    if (K == ws.batch) {
      int64_t m = 0;
      for (int64_t i = 0; i < n; ++i)
        if (!done[i]) ws.keep[m++] = i;
      fold(ws, cur, m, K);
      for (int64_t a = 0; a < m; ++a) {
        const int64_t i = ws.keep[a];
        w[a] = w[i];
        diag[a] = diag[i];
        idx[a] = idx[i];
        done[a] = 0;
      }
      n = m;
      K = 0;
      cur = ws.A.data();
    }
  }
}

// Pivot batch: large enough that the fold is compute-bound, small enough that the
// per-step column reconstruction (n * batch) stays minor next to the fold (n^2 / 2).
inline int64_t default_batch(int64_t cols) {
  return std::clamp<int64_t>(cols / 8, 8, 64);
}

}  // namespace obc

// weight [rows, cols], hinv [cols, cols] symmetric, both in T; scale, zero [rows] float32;
// q [rows, cols] out; order [rows, cols] out or null. batch <= 0 picks the default.
template <typename T>
void obc_quantize_rows(const T* weight, const T* hinv, const float* scale, const float* zero,
                       int64_t rows, int64_t cols, int maxq, T* q, int64_t* order,
                       int64_t batch = 0) {
  if (rows == 0 || cols == 0) return;
  const int64_t b = batch > 0 ? std::min(batch, cols) : obc::default_batch(cols);
  int threads = 1;
#ifdef _OPENMP
  // Each thread holds a [cols, cols] working matrix: never start more than there are rows.
  threads = int(std::min<int64_t>(rows, omp_get_max_threads()));
#endif
#pragma omp parallel num_threads(threads)
  {
    obc::RowWorkspace<T> ws(cols, b);
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < rows; ++r) {
      obc::quantize_row<T>(ws, hinv, weight + r * cols, T(scale[r]), T(zero[r]), T(maxq),
                           q + r * cols, order ? order + r * cols : nullptr);
    }
  }
}

}  // namespace ptqx
