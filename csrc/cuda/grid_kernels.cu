// Torch-free CUDA kernels for the uniform grid (semantics: csrc/include/ptqx/grid.h).
#include <math_constants.h>

#include "ptqx/cuda/grid.h"
#include "ptqx/cuda/launch.h"
#include "ptqx/grid.h"

namespace ptqx::cuda {
namespace {

template <typename T>
__device__ __forceinline__ T code_of(T w, T s, T z, T m) {
  T q = nearbyint(w / s) + z;  // round half to even, like torch.round
  return q < T(0) ? T(0) : (q > m ? m : q);
}

template <typename T>
__global__ void fake_quant_kernel(const T* __restrict__ w, const float* __restrict__ scale,
                                  const float* __restrict__ zero, int64_t n, int64_t cols, int maxq,
                                  T* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = i / cols;
    const T s = scale[r], z = zero[r];
    out[i] = s * (code_of(w[i], s, z, T(maxq)) - z);
  }
}

template <typename T>
__global__ void quantize_codes_kernel(const T* __restrict__ w, const float* __restrict__ scale,
                                      const float* __restrict__ zero, int64_t n, int64_t cols,
                                      int maxq, uint8_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = i / cols;
    out[i] = static_cast<uint8_t>(code_of(w[i], T(scale[r]), T(zero[r]), T(maxq)));
  }
}

// ---------------------------------------------------------------------------------------
// Grid search: one block per row. Every thread derives the same float32 candidate
// (grid_common.h, with __fmul_rn so nvcc cannot contract it), sums (k |e|)^norm over its
// strided columns in float64 (k: the row's power of two, grid.h), and the block reduces;
// thread 0 keeps the first strictly better candidate, as the reference does. Candidates
// whose scale is 0 or inf are skipped (the reference's error is NaN there); the skip is
// uniform over the block, so every thread still meets the reductions' barriers.

constexpr int kGridThreads = 256;

__device__ __forceinline__ float rint_rn(float v) { return rintf(v); }
__device__ __forceinline__ double rint_rn(double v) { return rint(v); }
__device__ __forceinline__ float abs_t(float v) { return fabsf(v); }
__device__ __forceinline__ double abs_t(double v) { return fabs(v); }
__device__ __forceinline__ float mul_nocontract(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_nocontract(double a, double b) { return __dmul_rn(a, b); }

// Reduces v over the block (blockDim.x a multiple of 32); `identity` fills the lanes of
// warp 0 that have no partial. The result is valid in thread 0.
template <typename V, typename Op>
__device__ V block_reduce(V v, Op op, V identity, V* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? shared[lane] : identity;
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  }
  __syncthreads();  // shared[] is reused by the next call
  return v;
}

struct MinOp {
  template <typename V>
  __device__ V operator()(V a, V b) const { return b < a ? b : a; }
};
struct MaxOp {
  template <typename V>
  __device__ V operator()(V a, V b) const { return b > a ? b : a; }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};

template <typename T>
__global__ void __launch_bounds__(kGridThreads)
    grid_search_kernel(const T* __restrict__ w, int64_t cols, GridOptions o, float* __restrict__ scale,
                       float* __restrict__ zero) {
  __shared__ T sh_t[32];
  __shared__ double sh_d[32];
  __shared__ float sh_range[2];
  __shared__ int sh_exp;
  const int64_t r = blockIdx.x;
  const T* x = w + r * cols;
  if (cols == 0) {
    if (threadIdx.x == 0) {
      scale[r] = 1.f;
      zero[r] = 0.f;
    }
    return;
  }
  T mn = x[0], mx = x[0];
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const T v = x[c];
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  mn = block_reduce(mn, MinOp{}, x[0], sh_t);
  mx = block_reduce(mx, MaxOp{}, x[0], sh_t);
  if (threadIdx.x == 0) {
    float lo, hi;
    grid_search_range(static_cast<float>(mn), static_cast<float>(mx), o, lo, hi);
    sh_range[0] = lo;
    sh_range[1] = hi;
    sh_exp = grid_error_exponent(lo, hi);
  }
  __syncthreads();
  const float lo = sh_range[0], hi = sh_range[1];
  const T k = static_cast<T>(ldexp(1.0, -sh_exp));
  const bool square = o.norm == 2.f;
  const T m = static_cast<T>(o.maxq);
  double best = CUDART_INF;
  float best_s = 0.f, best_z = 0.f;
  const int steps = o.steps < 1 ? 1 : o.steps;
  for (int i = 0; i < steps; ++i) {
    float sf, zf;
    grid_candidate(lo, hi, i, o, sf, zf);
    if (threadIdx.x == 0 && i == 0) {  // OBC starts from the full range
      best_s = sf;
      best_z = zf;
    }
    if (!usable_scale(sf)) continue;
    const T s = static_cast<T>(sf), z = static_cast<T>(zf);
    double acc = 0.0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const T v = x[c];
      T q = rint_rn(v / s) + z;
      q = q < T(0) ? T(0) : (q > m ? m : q);
      // |d| * k has no add for nvcc to fuse the product into.
      const float e = static_cast<float>(abs_t(mul_nocontract(s, q - z) - v) * k);
      acc += square ? static_cast<double>(e) * e : static_cast<double>(powf(e, o.norm));
    }
    acc = block_reduce(acc, SumOp{}, 0.0, sh_d);
    if (threadIdx.x == 0) {
      if (acc < best) {
        best = acc;
        best_s = sf;
        best_z = zf;
      }
    }
  }
  if (threadIdx.x == 0) {
    scale[r] = best_s;
    zero[r] = best_z;
  }
}

inline unsigned blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 8 ? (b < 1 ? 1 : b) : 65535 * 8);
}

}  // namespace

template <typename T>
cudaError_t fake_quant_rows(const T* w, const float* scale, const float* zero, int64_t rows,
                            int64_t cols, int maxq, T* out, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  fake_quant_kernel<T><<<blocks_for(n, 256), 256, 0, stream>>>(w, scale, zero, n, cols, maxq, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t quantize_codes_rows(const T* w, const float* scale, const float* zero, int64_t rows,
                                int64_t cols, int maxq, uint8_t* out, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  quantize_codes_kernel<T><<<blocks_for(n, 256), 256, 0, stream>>>(w, scale, zero, n, cols, maxq, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t grid_search_rows(const T* w, int64_t rows, int64_t cols, const GridOptions& o,
                             float* scale, float* zero, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > 0x7fffffffLL) return cudaErrorInvalidValue;
  grid_search_kernel<T><<<static_cast<unsigned>(rows), kGridThreads, 0, stream>>>(w, cols, o, scale, zero);
  return cudaGetLastError();
}

template cudaError_t grid_search_rows<float>(const float*, int64_t, int64_t, const GridOptions&,
                                             float*, float*, cudaStream_t);
template cudaError_t grid_search_rows<double>(const double*, int64_t, int64_t, const GridOptions&,
                                              float*, float*, cudaStream_t);
template cudaError_t fake_quant_rows<float>(const float*, const float*, const float*, int64_t,
                                            int64_t, int, float*, cudaStream_t);
template cudaError_t fake_quant_rows<double>(const double*, const float*, const float*, int64_t,
                                             int64_t, int, double*, cudaStream_t);
template cudaError_t quantize_codes_rows<float>(const float*, const float*, const float*, int64_t,
                                                int64_t, int, uint8_t*, cudaStream_t);
template cudaError_t quantize_codes_rows<double>(const double*, const float*, const float*,
                                                 int64_t, int64_t, int, uint8_t*, cudaStream_t);

}  // namespace ptqx::cuda
