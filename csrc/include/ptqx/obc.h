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
// Only the lower triangle of the working matrix is kept. Column j of Hinv is row j's
// lower part followed by column j below the diagonal: a strided read of n - j entries
// per step, where keeping the matrix symmetric costs n^2 / 2 scattered writes per fold
// (mirroring every tile). Whole rows ran about 10% faster without the mirror (C = 2304
// and 4608, float32, two threads, alternating standalone runs), bit-identical.
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

constexpr int kMR = 6;
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
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
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
  static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
};
#endif

template <typename T>
constexpr int tile_cols() {
  return kNV * Simd<T>::L;
}

#if defined(__AVX2__) && defined(__FMA__)
// acc[r][v] = sum_p vr[r*K + p] * vp[p*NR + v*L ...], the 6 x 2-vector register tile
// written out with named registers (arrays made GCC spill or re-load the panel). Twelve
// accumulators, two panel vectors and one broadcast fill the 16 ymm registers; eight
// chains (a 4 x 2 tile) only just cover two FMA pipes of latency 4. Whole rows ran
// about 8% faster than with the 4 x 2 tile (C = 2304 and 4608, float32, two threads,
// alternating standalone runs), with bit-identical results: each entry still sums its
// K products in order.
template <typename T>
inline void accumulate(const T* vr, const T* vp, int64_t K,
                       typename Simd<T>::V (&acc)[kMR][kNV]) {
  static_assert(kMR == 6 && kNV == 2, "register tile is written out for 6 x 2 vectors");
  using S = Simd<T>;
  constexpr int NR = tile_cols<T>();
  typename S::V c00 = S::zero(), c01 = S::zero(), c10 = S::zero(), c11 = S::zero();
  typename S::V c20 = S::zero(), c21 = S::zero(), c30 = S::zero(), c31 = S::zero();
  typename S::V c40 = S::zero(), c41 = S::zero(), c50 = S::zero(), c51 = S::zero();
  const T* r0 = vr;
  const T* r1 = vr + K;
  const T* r2 = vr + 2 * K;
  const T* r3 = vr + 3 * K;
  const T* r4 = vr + 4 * K;
  const T* r5 = vr + 5 * K;
  for (int64_t p = 0; p < K; ++p, vp += NR) {
    typename S::V b0 = S::load(vp), b1 = S::load(vp + S::L);
    asm("" : "+x"(b0), "+x"(b1));  // one load each, not a memory operand in every FMA
    typename S::V a = S::bcast(r0 + p);
    c00 = S::fma(a, b0, c00), c01 = S::fma(a, b1, c01);
    a = S::bcast(r1 + p);
    c10 = S::fma(a, b0, c10), c11 = S::fma(a, b1, c11);
    a = S::bcast(r2 + p);
    c20 = S::fma(a, b0, c20), c21 = S::fma(a, b1, c21);
    a = S::bcast(r3 + p);
    c30 = S::fma(a, b0, c30), c31 = S::fma(a, b1, c31);
    a = S::bcast(r4 + p);
    c40 = S::fma(a, b0, c40), c41 = S::fma(a, b1, c41);
    a = S::bcast(r5 + p);
    c50 = S::fma(a, b0, c50), c51 = S::fma(a, b1, c51);
  }
  acc[0][0] = c00, acc[0][1] = c01, acc[1][0] = c10, acc[1][1] = c11;
  acc[2][0] = c20, acc[2][1] = c21, acc[3][0] = c30, acc[3][1] = c31;
  acc[4][0] = c40, acc[4][1] = c41, acc[5][0] = c50, acc[5][1] = c51;
}
#endif

// One register tile of the fold's SYRK: with P[r][c] = sum_p vr[r*K + p] * vp[p*NR + c],
// A[i][j] -= P[i - i0][j - c0] for the tile's entries in the lower triangle of the block
// (j <= i < m, j < jend). Interior tiles (all entries there) take the vector path and
// subtract in registers.
template <typename T>
inline void fold_tile(const T* vr, const T* vp, int64_t K, T* A, int64_t ld, int64_t i0, int64_t c0,
                      int64_t m, int64_t jend) {
  constexpr int NR = tile_cols<T>();
  alignas(64) T out[kMR * NR];
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (Simd<T>::L > 1) {
    using S = Simd<T>;
    typename S::V acc[kMR][kNV];
    accumulate<T>(vr, vp, K, acc);
    if (c0 + NR <= i0 && i0 + kMR <= m) {
      for (int r = 0; r < kMR; ++r)
        for (int v = 0; v < kNV; ++v) {
          T* a = A + (i0 + r) * ld + c0 + v * S::L;
          acc[r][v] = S::sub(S::load(a), acc[r][v]);
          S::store(a, acc[r][v]);
        }
      return;
    }
    for (int r = 0; r < kMR; ++r)
      for (int v = 0; v < kNV; ++v) S::store(out + r * NR + v * S::L, acc[r][v]);
  } else
#endif
  {
    for (int i = 0; i < kMR * NR; ++i) out[i] = T(0);
    for (int64_t p = 0; p < K; ++p)
      for (int r = 0; r < kMR; ++r) {
        const T a = vr[r * K + p];
        for (int c = 0; c < NR; ++c) out[r * NR + c] += a * vp[p * NR + c];
      }
  }
  for (int r = 0; r < kMR; ++r) {
    const int64_t i = i0 + r;
    if (i >= m) break;
    for (int c = 0; c < NR; ++c) {
      const int64_t j = c0 + c;
      if (j > i || j >= jend) break;
      const T v = A[i * ld + j] - out[r * NR + c];
      A[i * ld + j] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Per-thread working state for one row at a time.

template <typename T>
struct RowWorkspace {
  int64_t C = 0, batch = 0;
  std::vector<T> A;      // [C, C], ld C: Hinv at the last fold, compacted, lower triangle only
  std::vector<T> U;      // [batch, C]: pending scaled pivot columns (compact coordinates)
  std::vector<T> vrow;   // packed pivots by row: [n rounded up to kMR, K]
  std::vector<T> vpk;    // packed pivots by column panel: [n/NR, K, NR]
  std::vector<T> w, diag, col, score, err, q;
  std::vector<int64_t> idx, keep, runs;
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

  // 1. Compact the lower triangle (the upper one is never read). The
  //    kept entries form at most batch + 1 runs of consecutive indices: move runs.
  std::vector<int64_t>& runs = ws.runs;  // (new start, old start) pairs, then m
  runs.clear();
  for (int64_t a = 0; a < m; ++a)
    if (a == 0 || keep[a] != keep[a - 1] + 1) runs.push_back(a), runs.push_back(keep[a]);
  const int64_t nruns = int64_t(runs.size()) / 2;
  runs.push_back(m);
  for (int64_t a = 0; a < m; ++a) {
    const T* srow = src + keep[a] * C;
    T* drow = A + a * C;
    for (int64_t r = 0; r < nruns; ++r) {
      const int64_t b0 = runs[2 * r];
      if (b0 > a) break;
      const int64_t b1 = std::min(r + 1 < nruns ? runs[2 * r + 2] : m, a + 1);
      std::memmove(drow + b0, srow + runs[2 * r + 1], sizeof(T) * (b1 - b0));
    }
  }
  if (K == 0) return;

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

  // 3. SYRK on the lower triangle, blocked over columns so a block's panels stay in L2.
  const int64_t KC = std::max<int64_t>(NR, (int64_t(96) * 1024 / int64_t(sizeof(T) * K)) / NR * NR);
  for (int64_t jc = 0; jc < m; jc += KC) {
    const int64_t jend = std::min(m, jc + KC);
    for (int64_t i0 = jc / kMR * kMR; i0 < m; i0 += kMR) {
      const int64_t cend = std::min(jend, i0 + kMR);  // columns <= last row of the group
      for (int64_t c0 = jc; c0 < cend; c0 += NR)
        fold_tile<T>(vrow + i0 * K, vpk + c0 * K, K, A, C, i0, c0, m, jend);
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

// Grid value, squared error and score of entries [i0, n), with the reference's masking:
// quantized entries get err = 0 and score = +inf.
template <typename T>
inline void score_range(const T* w, const T* diag, const uint8_t* done, int64_t i0, int64_t n,
                        T s, T z, T maxq, T* qv, T* err, T* score) {
  const T inf = std::numeric_limits<T>::infinity();
#pragma omp simd
  for (int64_t i = i0; i < n; ++i) {
    const T qq = s * (quantize_code(w[i], s, z, maxq) - z);
    const T e = w[i] - qq;
    const T e2 = done[i] ? T(0) : e * e;
    qv[i] = qq;
    err[i] = e2;
    score[i] = done[i] ? inf : e2 / diag[i];
  }
}

// The entry OBC fixes next: argmin score, or argmax err under the outlier rule; exactly
// torch.argmin/argmax over the masked arrays as the reference computes them.
template <typename T>
inline int64_t pick(const T* w, const T* err, const T* score, int64_t n, T outlier) {
  T mn = std::numeric_limits<T>::infinity(), mx = T(0);
  int nans = 0;
#pragma omp simd reduction(min : mn) reduction(max : mx) reduction(+ : nans)
  for (int64_t i = 0; i < n; ++i) {
    mn = score[i] < mn ? score[i] : mn;
    mx = err[i] > mx ? err[i] : mx;
    nans += (score[i] != score[i]) | (err[i] != err[i]);
  }
  int64_t j = 0, jmax = 0;
  bool any_outlier;
  if (nans == 0) {
    while (j < n - 1 && score[j] != mn) ++j;
    any_outlier = mx > outlier;
    if (any_outlier && w[j] != T(0))
      while (jmax < n - 1 && err[jmax] != mx) ++jmax;
  } else {  // rare (degenerate Hinv): the plain scalar scans with NaN-wins ordering
    T best = score[0], emax = err[0];
    any_outlier = err[0] > outlier;
    for (int64_t i = 1; i < n; ++i) {
      if (better_min(score[i], best)) j = i, best = score[i];
      if (better_max(err[i], emax)) jmax = i, emax = err[i];
      any_outlier |= err[i] > outlier;
    }
  }
  return any_outlier && w[j] != T(0) ? jmax : j;
}

// col[i] = Hinv[i][j] - sum_{p<K} U[p][j] U[p][i] for i < n, where Hinv is the lower
// triangle of a (ld = C) matrix: row j up to the diagonal, then column j below it. The
// pending pivots are subtracted in chunks held in registers across the K pivots (one
// load per FMA instead of a load and a store).
template <typename T>
inline void column(const T* hinv, int64_t ld, const T* U, int64_t j, int64_t K, int64_t n, T* col) {
  const T* rj = hinv + j * ld;
  for (int64_t i = 0; i <= j; ++i) col[i] = rj[i];
  for (int64_t i = j + 1; i < n; ++i) col[i] = hinv[i * ld + j];
  constexpr int CH = 64 / sizeof(T) * 2;  // two cache lines per chunk
  int64_t i0 = 0;
  for (; i0 + CH <= n; i0 += CH) {
    T acc[CH];
    for (int c = 0; c < CH; ++c) acc[c] = col[i0 + c];
    for (int64_t p = 0; p < K; ++p) {
      const T f = U[p * ld + j];
      const T* up = U + p * ld + i0;
#pragma omp simd
      for (int c = 0; c < CH; ++c) acc[c] -= f * up[c];
    }
    for (int c = 0; c < CH; ++c) col[i0 + c] = acc[c];
  }
  for (int64_t i = i0; i < n; ++i) {
    T a = col[i];
    for (int64_t p = 0; p < K; ++p) a -= U[p * ld + j] * U[p * ld + i];
    col[i] = a;
  }
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
  score_range(w, diag, done, 0, n, s, z, maxq, qv, err, score);

  for (int64_t step = 0; step < C; ++step) {
    const int64_t j = pick(w, err, score, n, outlier);
    const T qj = qv[j];
    q_out[idx[j]] = qj;
    if (order) order[step] = idx[j];
    if (step == C - 1) break;

    // Column j of the current Hinv: that of the folded matrix minus the pending pivots.
    // (Before the first fold compact coordinates are the original ones and cur is h0.)
    column(cur, C, U, j, K, n, col);
    const T d = diag[j];
    const T coef = (w[j] - qj) / d;
    const T sd = std::sqrt(d);
    done[j] = 1;
    // w -= Hinv[:, j] * coef; u = Hinv[:, j] / sqrt(d); diag -= u^2; then next scores.
    T* up = U + K * C;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T c = col[i];
      const T u = c / sd;
      w[i] -= c * coef;
      up[i] = u;
      diag[i] -= u * u;
    }
    score_range(w, diag, done, 0, n, s, z, maxq, qv, err, score);
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
        qv[a] = qv[i];
        err[a] = err[i];
        score[a] = score[i];
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

// weight [rows, cols], hinv [cols, cols] symmetric (only its lower triangle is read), both
// in T; scale, zero [rows] float32; q [rows, cols] out; order [rows, cols] out or null.
// batch <= 0 picks the default.
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
