// Torch-free CUDA kernel of LiRA's logit-scaled confidence (semantics:
// ptqx/ops/reference.py logit_scores; CPU twin: csrc/include/ptqx/scores.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math_constants.h>

#include "ptqx/cuda/scores.h"

namespace ptqx::cuda {
namespace {

__device__ __forceinline__ double to_f64(float v) { return static_cast<double>(v); }
__device__ __forceinline__ double to_f64(double v) { return v; }
__device__ __forceinline__ double to_f64(__half v) { return static_cast<double>(__half2float(v)); }
__device__ __forceinline__ double to_f64(__nv_bfloat16 v) {
  return static_cast<double>(__bfloat162float(v));
}

// Merge two online-softmax states (max, sum of exp(z - max)); an empty state is
// (-inf, 0) and must not produce exp(-inf - -inf) = NaN. A state with max -inf is scaled
// by exp(-inf) = 0, not dropped: its sum is NaN when its lane saw only NaN logits.
__device__ __forceinline__ void merge(double& m, double& s, double m2, double s2) {
  const double mm = m > m2 ? m : m2;
  if (mm == -CUDART_INF) return;  // both empty
  s = s * exp(m - mm) + s2 * exp(m2 - mm);
  m = mm;
}

// One warp per row, lanes striding over the classes (coalesced reads); float64 online
// logsumexp over k != y, merged across lanes with shuffles.
template <typename T>
__global__ void logit_scores_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                    int64_t rows, int64_t K, double* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; r < rows;
       r += nwarps) {
    const int64_t y = labels[r];
    if (y < 0 || y >= K) {
      if (lane == 0) out[r] = CUDART_NAN;
      continue;
    }
    const T* z = logits + r * K;
    double m = -CUDART_INF, s = 0.0;
    for (int64_t k = lane; k < K; k += 32) {
      if (k == y) continue;
      const double v = to_f64(z[k]);
      if (v == -CUDART_INF) continue;  // contributes exp(-inf) = 0
      if (v > m) {
        s = s * exp(m - v) + 1.0;  // m = -inf: s * 0 keeps a NaN from an earlier NaN logit
        m = v;
      } else {
        s += exp(v - m);  // NaN logits make s NaN, which reaches the score
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      const double m2 = __shfl_down_sync(0xffffffffu, m, off);
      const double s2 = __shfl_down_sync(0xffffffffu, s, off);
      merge(m, s, m2, s2);
    }
    if (lane == 0) {
      const double lse = (m == -CUDART_INF) ? -CUDART_INF : m + log(s);
      out[r] = to_f64(z[y]) - lse;
    }
  }
}

template <typename T>
cudaError_t launch(const void* logits, const int64_t* labels, int64_t rows, int64_t K, double* out,
                   cudaStream_t stream) {
  constexpr int threads = 256;  // 8 rows per block
  int64_t blocks = (rows + 7) / 8;
  if (blocks > 65535LL * 16) blocks = 65535LL * 16;  // grid-stride beyond this
  logit_scores_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      static_cast<const T*>(logits), labels, rows, K, out);
  return cudaGetLastError();
}

}  // namespace

cudaError_t logit_scores_rows(const void* logits, LogitDtype dt, const int64_t* labels,
                              int64_t rows, int64_t K, double* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  switch (dt) {
    case LogitDtype::F32:
      return launch<float>(logits, labels, rows, K, out, stream);
    case LogitDtype::F64:
      return launch<double>(logits, labels, rows, K, out, stream);
    case LogitDtype::F16:
      return launch<__half>(logits, labels, rows, K, out, stream);
    case LogitDtype::BF16:
      return launch<__nv_bfloat16>(logits, labels, rows, K, out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace ptqx::cuda
