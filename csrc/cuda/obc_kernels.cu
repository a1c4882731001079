// Torch-free CUDA kernel for OBC's row-wise greedy quantization.
//
// One thread block per row (blocks loop over rows; each owns one workspace slot). The
// algorithm is the CPU kernel's (csrc/include/ptqx/obc.h): a step reads column j of the
// current Hinv as row j of the last folded matrix minus the pending pivots, updates the
// row, the pivot list and the diagonal elementwise; every `batch` steps the pivots are
// folded into the other of two working matrices while it is compacted to the entries
// not yet quantized (a tiled GEMM through shared memory). Picks follow torch.argmin /
// argmax exactly (first index on ties, NaN wins), as the reference.
#include <cfloat>
#include <climits>

#include "ptqx/cuda/obc.h"

namespace ptqx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 32;

__host__ __device__ inline size_t align256(size_t b) { return (b + 255) / 256 * 256; }

// Is (a, ia) ahead of (b, ib) in torch.argmin order? (NaN first, then smaller, then index.)
template <typename T>
__device__ __forceinline__ bool ahead_min(T a, int ia, T b, int ib) {
  const bool na = isnan(a), nb = isnan(b);
  if (na || nb) return na && (!nb || ia < ib);
  return a < b || (a == b && ia < ib);
}
template <typename T>
__device__ __forceinline__ bool ahead_max(T a, int ia, T b, int ib) {
  const bool na = isnan(a), nb = isnan(b);
  if (na || nb) return na && (!nb || ia < ib);
  return a > b || (a == b && ia < ib);
}

template <typename T>
__device__ __forceinline__ T quant(T x, T s, T z, T m) {
  T c = nearbyint(x / s) + z;  // round half to even, like torch.round
  c = c < T(0) ? T(0) : (c > m ? m : c);
  return s * (c - z);
}

template <typename T>
struct Slot {
  T *A[2], *U, *Uc, *w[2], *diag[2], *qv[2], *err[2], *score[2];
  int *idx[2], *keep, *done;
};

template <typename T>
__host__ __device__ size_t slot_bytes(int64_t C, int64_t B) {
  return align256(sizeof(T) * (2 * C * C + 2 * B * C + 10 * C)) + align256(sizeof(int) * 4 * C);
}

template <typename T>
__device__ Slot<T> slot_at(void* base, int64_t C, int64_t B) {
  Slot<T> s;
  T* t = static_cast<T*>(base);
  s.A[0] = t, t += C * C;
  s.A[1] = t, t += C * C;
  s.U = t, t += B * C;
  s.Uc = t, t += B * C;
  for (int k = 0; k < 2; ++k) {
    s.w[k] = t, t += C;
    s.diag[k] = t, t += C;
    s.qv[k] = t, t += C;
    s.err[k] = t, t += C;
    s.score[k] = t, t += C;
  }
  int* n = reinterpret_cast<int*>(static_cast<char*>(base) +
                                  align256(sizeof(T) * (2 * C * C + 2 * B * C + 10 * C)));
  s.idx[0] = n, n += C;
  s.idx[1] = n, n += C;
  s.keep = n, n += C;
  s.done = n;
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    obc_rows_kernel(const T* __restrict__ weight, const T* __restrict__ h0,
                    const float* __restrict__ scale, const float* __restrict__ zero, int64_t rows,
                    int64_t C, int maxq, T* __restrict__ q, int64_t* __restrict__ order, int B,
                    char* workspace) {
  __shared__ T s_f[kObcMaxBatch];                      // U[p][j] of the pending pivots
  __shared__ int s_pick[kObcMaxBatch];                 // compact indices picked this batch
  __shared__ T s_ua[kObcMaxBatch][kTile];              // fold tiles
  __shared__ T s_ub[kObcMaxBatch][kTile];
  __shared__ T s_rv[kThreads / 32][2];                 // reduction scratch
  __shared__ int s_ri[kThreads / 32][2];
  __shared__ int s_any[kThreads / 32];
  __shared__ int s_j;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  Slot<T> sl = slot_at<T>(workspace + size_t(blockIdx.x) * slot_bytes<T>(C, B), C, B);
  const T mq = T(maxq);

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T s = T(scale[row]), z = T(zero[row]);
    const T outlier = T(0.25) * (s * s);
    int cb = 0;  // which vector/matrix buffer set is current
    T *w = sl.w[0], *diag = sl.diag[0], *qv = sl.qv[0], *err = sl.err[0], *score = sl.score[0];
    int* idx = sl.idx[0];
    const T* cur = h0;
    int n = int(C), K = 0;

    for (int i = tid; i < n; i += kThreads) {
      const T wi = weight[row * C + i];
      const T qq = quant(wi, s, z, mq);
      const T e = wi - qq;
      w[i] = wi;
      diag[i] = h0[int64_t(i) * C + i];
      idx[i] = i;
      sl.done[i] = 0;
      qv[i] = qq;
      err[i] = e * e;
      score[i] = (e * e) / diag[i];
    }
    __syncthreads();

    for (int64_t step = 0; step < C; ++step) {
      // ---- pick: argmin score, argmax err, any err > outlier (masked entries hold
      // score = +inf and err = 0, as in the reference)
      T bmin = T(INFINITY), bmax = T(-1);
      int imin = INT_MAX, imax = INT_MAX, any = 0;
      for (int i = tid; i < n; i += kThreads) {
        const T sc = score[i], e = err[i];
        if (ahead_min(sc, i, bmin, imin)) bmin = sc, imin = i;
        if (ahead_max(e, i, bmax, imax)) bmax = e, imax = i;
        any |= e > outlier;
      }
      for (int off = 16; off > 0; off >>= 1) {
        const T v1 = __shfl_down_sync(0xffffffffu, bmin, off);
        const int i1 = __shfl_down_sync(0xffffffffu, imin, off);
        const T v2 = __shfl_down_sync(0xffffffffu, bmax, off);
        const int i2 = __shfl_down_sync(0xffffffffu, imax, off);
        if (ahead_min(v1, i1, bmin, imin)) bmin = v1, imin = i1;
        if (ahead_max(v2, i2, bmax, imax)) bmax = v2, imax = i2;
      }
      any = __any_sync(0xffffffffu, any);
      if (lane == 0) {
        s_rv[warp][0] = bmin, s_ri[warp][0] = imin;
        s_rv[warp][1] = bmax, s_ri[warp][1] = imax;
        s_any[warp] = any;
      }
      __syncthreads();
      if (tid == 0) {
        for (int k = 1; k < kThreads / 32; ++k) {
          if (ahead_min(s_rv[k][0], s_ri[k][0], bmin, imin)) bmin = s_rv[k][0], imin = s_ri[k][0];
          if (ahead_max(s_rv[k][1], s_ri[k][1], bmax, imax)) bmax = s_rv[k][1], imax = s_ri[k][1];
          any |= s_any[k];
        }
        const int j = (any && w[imin] != T(0)) ? imax : imin;
        s_j = j;
        q[row * C + idx[j]] = qv[j];
        if (order) order[row * C + step] = idx[j];
        sl.done[j] = 1;
        s_pick[K] = j;
      }
      __syncthreads();
      if (step == C - 1) break;
      const int j = s_j;
      const T d = diag[j];
      const T coef = (w[j] - qv[j]) / d;
      const T sd = sqrt(d);
      for (int p = tid; p < K; p += kThreads) s_f[p] = sl.U[int64_t(p) * C + j];
      __syncthreads();  // everyone has read w[j], diag[j], qv[j] before they change

      // ---- column j, row update, new pivot, diagonal, next scores
      const T* crow = cur + int64_t(j) * C;
      T* up = sl.U + int64_t(K) * C;
      for (int i = tid; i < n; i += kThreads) {
        T c = crow[i];
        for (int p = 0; p < K; ++p) c -= s_f[p] * sl.U[int64_t(p) * C + i];
        const T wi = w[i] - c * coef;
        const T u = c / sd;
        const T di = diag[i] - u * u;
        w[i] = wi;
        up[i] = u;
        diag[i] = di;
        const T qq = quant(wi, s, z, mq);
        const T e = wi - qq;
        const bool dn = sl.done[i] != 0;
        qv[i] = qq;
        err[i] = dn ? T(0) : e * e;
        score[i] = dn ? T(INFINITY) : (e * e) / di;
      }
      ++K;
      __syncthreads();
      if (K < B) continue;

      // ---- fold: compact to the live entries and apply the K pivots (other buffer)
      const int m = n - K;
      const int nb = cb ^ 1;
      T *w2 = sl.w[nb], *diag2 = sl.diag[nb], *qv2 = sl.qv[nb], *err2 = sl.err[nb],
        *score2 = sl.score[nb];
      int* idx2 = sl.idx[nb];
      for (int i = tid; i < n; i += kThreads) {
        if (sl.done[i]) continue;
        int a = i;
        for (int p = 0; p < K; ++p) a -= s_pick[p] < i;
        sl.keep[a] = i;
        w2[a] = w[i], diag2[a] = diag[i], qv2[a] = qv[i], err2[a] = err[i], score2[a] = score[i];
        idx2[a] = idx[i];
      }
      __syncthreads();
      for (int i = tid; i < m; i += kThreads) sl.done[i] = 0;
      for (int64_t t = tid; t < int64_t(K) * m; t += kThreads) {
        const int p = int(t / m), a = int(t % m);
        sl.Uc[int64_t(p) * C + a] = sl.U[int64_t(p) * C + sl.keep[a]];
      }
      __syncthreads();
      T* Anew = sl.A[nb];
      const int tiles = (m + kTile - 1) / kTile;
      const int tx = tid % kTile, ty = tid / kTile;  // 32 x 8 threads, 4 rows each
      for (int tile = 0; tile < tiles * tiles; ++tile) {
        const int a0 = (tile / tiles) * kTile, b0 = (tile % tiles) * kTile;
        for (int t = tid; t < K * kTile; t += kThreads) {
          const int p = t / kTile, x = t % kTile;
          s_ua[p][x] = a0 + x < m ? sl.Uc[int64_t(p) * C + a0 + x] : T(0);
          s_ub[p][x] = b0 + x < m ? sl.Uc[int64_t(p) * C + b0 + x] : T(0);
        }
        __syncthreads();
        const int b = b0 + tx;
        for (int k = 0; k < kTile / 8; ++k) {
          const int a = a0 + ty + 8 * k;
          if (a < m && b < m) {
            T acc = T(0);
            for (int p = 0; p < K; ++p) acc += s_ua[p][ty + 8 * k] * s_ub[p][tx];
            Anew[int64_t(a) * C + b] = cur[int64_t(sl.keep[a]) * C + sl.keep[b]] - acc;
          }
        }
        __syncthreads();
      }
      cur = Anew;
      cb = nb;
      w = w2, diag = diag2, qv = qv2, err = err2, score = score2, idx = idx2;
      n = m;
      K = 0;
      __syncthreads();
    }
    __syncthreads();
  }
}

}  // namespace

template <typename T>
size_t obc_workspace_bytes(int64_t cols, int64_t batch, int64_t slots) {
  return slot_bytes<T>(cols, batch) * size_t(slots);
}

template <typename T>
cudaError_t obc_quantize_rows(const T* weight, const T* hinv, const float* scale,
                              const float* zero, int64_t rows, int64_t cols, int maxq, T* q,
                              int64_t* order, int64_t batch, int64_t slots, void* workspace,
                              cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (batch < 1 || batch > kObcMaxBatch || slots < 1 || cols > INT_MAX / 2)
    return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(slots < rows ? slots : rows);
  obc_rows_kernel<T><<<grid, kThreads, 0, stream>>>(weight, hinv, scale, zero, rows, cols, maxq,
                                                     q, order, int(batch),
                                                     static_cast<char*>(workspace));
  return cudaGetLastError();
}

template size_t obc_workspace_bytes<float>(int64_t, int64_t, int64_t);
template size_t obc_workspace_bytes<double>(int64_t, int64_t, int64_t);
template cudaError_t obc_quantize_rows<float>(const float*, const float*, const float*,
                                              const float*, int64_t, int64_t, int, float*,
                                              int64_t*, int64_t, int64_t, void*, cudaStream_t);
template cudaError_t obc_quantize_rows<double>(const double*, const double*, const float*,
                                               const float*, int64_t, int64_t, int, double*,
                                               int64_t*, int64_t, int64_t, void*, cudaStream_t);

}  // namespace ptqx::cuda
