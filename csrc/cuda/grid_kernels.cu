// Torch-free CUDA kernels for the uniform grid (semantics: csrc/include/ptqx/grid.h).
#include "ptqx/cuda/launch.h"

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

template cudaError_t fake_quant_rows<float>(const float*, const float*, const float*, int64_t,
                                            int64_t, int, float*, cudaStream_t);
template cudaError_t fake_quant_rows<double>(const double*, const float*, const float*, int64_t,
                                             int64_t, int, double*, cudaStream_t);
template cudaError_t quantize_codes_rows<float>(const float*, const float*, const float*, int64_t,
                                                int64_t, int, uint8_t*, cudaStream_t);
template cudaError_t quantize_codes_rows<double>(const double*, const float*, const float*,
                                                 int64_t, int64_t, int, uint8_t*, cudaStream_t);

}  // namespace ptqx::cuda
