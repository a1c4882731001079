// Torch-free CUDA kernel: leave-one-out LiRA statistics (semantics and fallbacks:
// ptqx/ops/reference.py::lira_loo_stats; LiRA: Carlini et al. 2022, Sec. IV).
//
// One block per (example, view) column, one thread per model (strided when N exceeds
// the block). The column's N scores are loaded into shared memory; each thread finds
// its model's rank within its side (IN or OUT) by counting, which sorts both sides
// with no data-dependent control flow (O(N^2) per column, O(N) per thread). Then each
// thread, as target n, removes itself from its own sorted side and the other side's
// highest-indexed model from that side (so both sides' sizes do not depend on n's
// membership: see the reference), reads the medians at shifted indices and computes
// the means and population stds by two passes over shared memory (exact two-pass
// accuracy; O(N) per target is cheap next to the global traffic for the N of a
// shadow-model audit).
#include "ptqx/cuda/lira.h"

namespace ptqx::cuda {
namespace {

struct Moments {
  double median, mean, std;
};

// Statistics of sorted side s[0, k) with element r removed; needs k >= 2.
__device__ Moments side_moments(const double* s, int k, int r) {
  const int len = k - 1;
  const int lo = (len - 1) / 2, hi = len / 2;
  Moments out;
  const double a = s[lo + (lo >= r ? 1 : 0)];
  const double b = s[hi + (hi >= r ? 1 : 0)];
  out.median = (a + b) / 2;  // np.median
  double sum = 0;
  for (int i = 0; i < k; ++i) sum += (i == r) ? 0.0 : s[i];
  const double mean = sum / len;
  double m2 = 0;
  for (int i = 0; i < k; ++i) {
    const double d = s[i] - mean;
    m2 += (i == r) ? 0.0 : d * d;
  }
  out.mean = mean;
  out.std = sqrt(m2 / len);
  return out;
}

template <typename T>
__global__ void lira_loo_stats_kernel(const T* __restrict__ ref, const bool* __restrict__ keep,
                                      int n, int64_t m, int64_t v, T* __restrict__ stats,
                                      int64_t* __restrict__ counts) {
  extern __shared__ double smem[];
  double* x = smem;              // [n] scores of this column
  double* sorted_in = x + n;     // [n] (first k_in used)
  double* sorted_out = sorted_in + n;
  int* pos = reinterpret_cast<int*>(sorted_out + n);  // [n] rank within own side
  bool* member = reinterpret_cast<bool*>(pos + n);    // [n]
  __shared__ int k_in_shared, last_in_shared, last_out_shared;

  const int64_t plane = int64_t(n) * m * v;
  for (int64_t col = blockIdx.x; col < m * v; col += gridDim.x) {
    const int64_t e = col / v;
    if (threadIdx.x == 0) k_in_shared = 0, last_in_shared = -1, last_out_shared = -1;
    __syncthreads();
    int local_in = 0, local_last_in = -1, local_last_out = -1;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      x[j] = static_cast<double>(ref[int64_t(j) * m * v + col]);
      member[j] = keep[int64_t(j) * m + e];
      local_in += member[j] ? 1 : 0;
      (member[j] ? local_last_in : local_last_out) = j;  // j only grows per thread
    }
    atomicAdd(&k_in_shared, local_in);
    atomicMax(&last_in_shared, local_last_in);
    atomicMax(&last_out_shared, local_last_out);
    __syncthreads();
    const int k_in = k_in_shared, k_out = n - k_in;
    const int last_in = last_in_shared, last_out = last_out_shared;
    // Rank within the own side; ties broken by model index, as the CPU kernel sorts.
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      const bool mj = member[j];
      const double xj = x[j];
      int r = 0;
      for (int i = 0; i < n; ++i) {
        r += (member[i] == mj && (x[i] < xj || (x[i] == xj && i < j))) ? 1 : 0;
      }
      pos[j] = r;
      (mj ? sorted_in : sorted_out)[r] = xj;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
      const bool mt = member[t];
      const double* own = mt ? sorted_in : sorted_out;
      const double* oth = mt ? sorted_out : sorted_in;
      const int k_own = mt ? k_in : k_out, k_oth = mt ? k_out : k_in;
      Moments loo{0, 0, 0}, other{0, 0, 0};
      if (k_own > 1) loo = side_moments(own, k_own, pos[t]);
      if (k_oth > 1) other = side_moments(oth, k_oth, pos[mt ? last_out : last_in]);
      // An empty side borrows the other side's statistics; both empty leaves zeros.
      if (k_own <= 1) loo = other;
      if (k_oth <= 1) other = loo;
      const Moments& si = mt ? loo : other;
      const Moments& so = mt ? other : loo;
      const int64_t o = int64_t(t) * m * v + col;
      stats[0 * plane + o] = static_cast<T>(si.median);
      stats[1 * plane + o] = static_cast<T>(so.median);
      stats[2 * plane + o] = static_cast<T>(si.mean);
      stats[3 * plane + o] = static_cast<T>(so.mean);
      stats[4 * plane + o] = static_cast<T>(si.std);
      stats[5 * plane + o] = static_cast<T>(so.std);
      if (col % v == 0) {  // each side lost one model, unless it was empty
        counts[int64_t(t) * m + e] = k_in > 0 ? k_in - 1 : 0;
        counts[int64_t(n) * m + int64_t(t) * m + e] = k_out > 0 ? k_out - 1 : 0;
      }
    }
    __syncthreads();  // shared memory is reused by the next column
  }
}

}  // namespace

template <typename T>
cudaError_t lira_loo_stats(const T* ref, const bool* keep, int64_t n, int64_t m, int64_t v,
                           T* stats, int64_t* counts, cudaStream_t stream) {
  if (n > kLiraMaxModels) return cudaErrorInvalidValue;
  // No column to describe (the binding fills the counts itself when v == 0).
  if (n == 0 || m == 0 || v == 0) return cudaSuccess;
  int threads = static_cast<int>(((n + 31) / 32) * 32);
  if (threads > 256) threads = 256;
  const size_t shared = size_t(n) * (3 * sizeof(double) + sizeof(int) + sizeof(bool));
  const int64_t cols = m * v;
  const unsigned blocks = static_cast<unsigned>(cols < 65535 * 16 ? cols : 65535 * 16);
  lira_loo_stats_kernel<T><<<blocks, threads, shared, stream>>>(ref, keep, static_cast<int>(n), m,
                                                                 v, stats, counts);
  return cudaGetLastError();
}

template cudaError_t lira_loo_stats<float>(const float*, const bool*, int64_t, int64_t, int64_t,
                                           float*, int64_t*, cudaStream_t);
template cudaError_t lira_loo_stats<double>(const double*, const bool*, int64_t, int64_t, int64_t,
                                            double*, int64_t*, cudaStream_t);

}  // namespace ptqx::cuda
