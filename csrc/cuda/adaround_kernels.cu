// Torch-free CUDA kernels for AdaRound's fused soft rounding
// (launchers: csrc/include/ptqx/cuda/adaround.h; semantics: ptqx/ops/reference.py).
#include "ptqx/cuda/adaround.h"

namespace ptqx::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float exp_t(float x) { return expf(x); }
__device__ __forceinline__ double exp_t(double x) { return exp(x); }
__device__ __forceinline__ float pow_t(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double pow_t(double x, double y) { return pow(x, y); }
// Separately rounded multiply and add: nvcc would otherwise contract a * b + c into one
// FMA, whose single rounding moves h's kinks off the CPU kernel's and the reference's.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
// The CPU kernel's std::fma of the regulariser's gradient term, spelled out so that the
// result does not hang on whether the compiler contracts (the emulation does not).
__device__ __forceinline__ float fma_t(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_t(double a, double b, double c) { return fma(a, b, c); }

template <typename T>
__device__ __forceinline__ T sigmoid_t(T a) {
  return T(1) / (T(1) + exp_t(-a));
}

// h(a) = clamp(1.2 * sigmoid(a) - 0.1, 0, 1); also returns the unclamped u.
template <typename T>
__device__ __forceinline__ T soft_h(T sig, T* u_out) {
  const T u = add_rn(mul_rn(T(1.2), sig), T(-0.1));
  *u_out = u;
  return u < T(0) ? T(0) : (u > T(1) ? T(1) : u);
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ w_floor, const T* __restrict__ alpha,
                               const float* __restrict__ scale, const float* __restrict__ zero,
                               int64_t rows, int64_t cols, int maxq, T beta, T* __restrict__ w_soft,
                               double* __restrict__ row_reg) {
  __shared__ double partial[kThreads];
  const T m = T(maxq);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T s = T(scale[r]), z = T(zero[r]);
    const T* wf = w_floor + r * cols;
    const T* a = alpha + r * cols;
    T* out = w_soft + r * cols;
    double acc = 0.0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      T u;
      const T h = soft_h(sigmoid_t(a[c]), &u);
      T q = wf[c] + h + z;
      q = q < T(0) ? T(0) : (q > m ? m : q);
      out[c] = s * (q - z);
      if (beta > T(0)) {
        const T d = fabs(h - T(0.5)) * T(2);
        acc += double(T(1) - (d > T(0) ? pow_t(d, beta) : T(0)));
      }
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) row_reg[r] = partial[0];
    __syncthreads();
  }
}

template <typename T>
__global__ void sum_rows_kernel(const double* __restrict__ row_reg, int64_t rows, T* __restrict__ reg) {
  __shared__ double partial[kThreads];
  double acc = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) acc += row_reg[r];
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) reg[0] = T(partial[0]);
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ grad_w, const T* __restrict__ grad_reg,
                                const T* __restrict__ w_floor, const T* __restrict__ alpha,
                                const float* __restrict__ scale, const float* __restrict__ zero, int64_t n,
                                int64_t cols, int maxq, T beta, T* __restrict__ grad_alpha) {
  const T m = T(maxq);
  const T reg_coef = grad_reg[0] * beta * T(2);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = i / cols;
    const T s = T(scale[r]), z = T(zero[r]);
    const T sig = sigmoid_t(alpha[i]);
    T u;
    const T h = soft_h(sig, &u);
    // (1.2 * sig) * (1 - sig), in the reference's and the CPU kernel's order.
    const T dh = (u >= T(0) && u <= T(1)) ? mul_rn(T(1.2), sig) * (T(1) - sig) : T(0);
    const T v = w_floor[i] + h + z;
    T g = (v >= T(0) && v <= m) ? grad_w[i] * s : T(0);
    if (beta > T(0)) {
      const T c = h - T(0.5);
      const T d = fabs(c) * T(2);
      if (d > T(0)) {
        const T dp = pow_t(d, beta - T(1));
        g = fma_t(-reg_coef, c > T(0) ? dp : -dp, g);
      }
    }
    grad_alpha[i] = g * dh;
  }
}

inline unsigned blocks_for(int64_t n, int64_t per_block) {
  int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 65535 * 8 ? (b < 1 ? 1 : b) : 65535 * 8);
}

}  // namespace

template <typename T>
cudaError_t adaround_forward_rows(const T* w_floor, const T* alpha, const float* scale,
                                  const float* zero, int64_t rows, int64_t cols, int maxq,
                                  T beta, T* w_soft, double* row_reg, T* reg, cudaStream_t stream) {
  if (rows > 0 && cols > 0) {
    forward_kernel<T><<<blocks_for(rows, 1), kThreads, 0, stream>>>(w_floor, alpha, scale, zero, rows, cols,
                                                                     maxq, beta, w_soft, row_reg);
  } else if (rows > 0) {
    cudaError_t e = cudaMemsetAsync(row_reg, 0, sizeof(double) * rows, stream);
    if (e != cudaSuccess) return e;
  }
  sum_rows_kernel<T><<<1, kThreads, 0, stream>>>(row_reg, rows, reg);
  return cudaGetLastError();
}

template <typename T>
cudaError_t adaround_backward_rows(const T* grad_w, const T* grad_reg, const T* w_floor,
                                   const T* alpha, const float* scale, const float* zero,
                                   int64_t rows, int64_t cols, int maxq, T beta, T* grad_alpha,
                                   cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  backward_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(grad_w, grad_reg, w_floor, alpha, scale,
                                                                      zero, n, cols, maxq, beta, grad_alpha);
  return cudaGetLastError();
}

template cudaError_t adaround_forward_rows<float>(const float*, const float*, const float*, const float*, int64_t,
                                                  int64_t, int, float, float*, double*, float*, cudaStream_t);
template cudaError_t adaround_forward_rows<double>(const double*, const double*, const float*, const float*,
                                                   int64_t, int64_t, int, double, double*, double*, double*,
                                                   cudaStream_t);
template cudaError_t adaround_backward_rows<float>(const float*, const float*, const float*, const float*,
                                                   const float*, const float*, int64_t, int64_t, int, float,
                                                   float*, cudaStream_t);
template cudaError_t adaround_backward_rows<double>(const double*, const double*, const double*, const double*,
                                                    const float*, const float*, int64_t, int64_t, int, double,
                                                    double*, cudaStream_t);

}  // namespace ptqx::cuda
