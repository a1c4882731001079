// Torch-free CUDA kernels of lowbit_linear_int8act (semantics: ptqx/ops/reference.py,
// lowbit_linear_int8act; packed layout: csrc/include/ptqx/lowbit.h). Correctness first:
// 1. one block per token quantizes it (block reductions of max|x|, the NaN/Inf flag and
//    sum(xq));
// 2. one warp per (row, token) sums code * xq in int32 (exact, so the order of the sums
//    does not matter) and applies the float epilogue with explicitly rounded
//    operations (no FMA contraction), matching the reference bit for bit.
#include <cstdint>

#include "ptqx/cuda/lowbit.h"

namespace ptqx::cuda {
namespace {

constexpr int kBlockBytes = 32;
constexpr int kQuantThreads = 256;
constexpr int kDotWarps = 4;  // rows per block, one warp each

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

__device__ __forceinline__ int warp_sum(int v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Block of kQuantThreads threads per token t: xq[t, :], qsum[t], sx[t], finite[t].
__global__ void quantize_tokens_kernel(const float* __restrict__ x, int64_t cols, int8_t* __restrict__ xq,
                                       int32_t* __restrict__ qsum, float* __restrict__ sx,
                                       uint8_t* __restrict__ finite) {
  __shared__ float s_max[kQuantThreads / 32];
  __shared__ int s_int[kQuantThreads / 32];
  const int64_t t = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float* xt = x + t * cols;
  float amax = 0.f;
  int bad = 0;
  for (int64_t c = tid; c < cols; c += kQuantThreads) {
    const float a = fabsf(xt[c]);
    bad |= !isfinite(a);
    amax = fmaxf(amax, a);  // fmaxf ignores NaN; bad records it
  }
  amax = warp_max(amax);
  bad = __any_sync(0xffffffffu, bad);
  if (lane == 0) {
    s_max[warp] = amax;
    s_int[warp] = bad;
  }
  __syncthreads();
  amax = 0.f;
  bad = 0;
  for (int w = 0; w < kQuantThreads / 32; ++w) {
    amax = fmaxf(amax, s_max[w]);
    bad |= s_int[w];
  }
  __syncthreads();  // s_int is reused below
  if (bad) {  // uniform across the block
    if (tid == 0) {
      finite[t] = 0;
      sx[t] = 1.f;
      qsum[t] = 0;
    }
    return;
  }
  float s = __fdiv_rn(amax, 127.f);
  if (!(s > 0.f)) s = 1.f;  // all-zero token, or amax / 127 underflowed
  int sum = 0;
  for (int64_t c = tid; c < cols; c += kQuantThreads) {
    // IEEE division and round-half-even, as the reference (torch.round).
    const float v = fminf(fmaxf(rintf(__fdiv_rn(xt[c], s)), -127.f), 127.f);
    const int q = static_cast<int>(v);
    xq[t * cols + c] = static_cast<int8_t>(q);
    sum += q;
  }
  sum = warp_sum(sum);
  if (lane == 0) s_int[warp] = sum;
  __syncthreads();
  if (tid == 0) {
    int total = 0;
    for (int w = 0; w < kQuantThreads / 32; ++w) total += s_int[w];
    qsum[t] = total;
    sx[t] = s;
    finite[t] = 1;
  }
}

// One warp per (row, token). Lane L reads word (L & 7) of block (L >> 3) + 4 * it: 128
// consecutive packed bytes per warp step; word l of block j holds the codes of columns
// j*per + 8k + l at bits [k*bits, (k+1)*bits).
__global__ void dot_kernel(const uint8_t* __restrict__ packed, const int8_t* __restrict__ xq,
                           const int32_t* __restrict__ qsum, const float* __restrict__ sx,
                           const uint8_t* __restrict__ finite, const float* __restrict__ scale,
                           const float* __restrict__ zero, const float* __restrict__ bias, int64_t ntok,
                           int64_t rows, int64_t cols, int bits, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t r = blockIdx.x * int64_t(kDotWarps) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int64_t per = 256 / bits, rb = kBlockBytes * ((cols + per - 1) / per), nblocks = rb / kBlockBytes;
  const int words = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
  const uint8_t* prow = packed + r * rb;
  const int z = __float2int_rn(zero[r]);  // integer-valued (checked by the wrapper)
  for (int64_t t = blockIdx.y; t < ntok; t += gridDim.y) {
    const int8_t* xt = xq + t * cols;
    int acc = 0;
    for (int64_t j = lane >> 3; j < nblocks; j += 4) {
      const uint32_t w = *reinterpret_cast<const uint32_t*>(prow + j * kBlockBytes + 4 * (lane & 7));
      for (int k = 0; k < words; ++k) {
        const int64_t c = j * per + 8 * k + (lane & 7);
        if (c >= cols) break;  // columns grow with k: the rest of this word is padding
        acc += static_cast<int>((w >> (k * bits)) & mask) * static_cast<int>(xt[c]);
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) {
      float out;
      if (finite[t]) {
        const float p = __fmul_rn(sx[t], __fmul_rn(scale[r], __int2float_rn(acc - z * qsum[t])));
        out = bias ? __fadd_rn(p, bias[r]) : p;
      } else {
        out = __int_as_float(0x7fc00000);  // quiet NaN
      }
      y[t * rows + r] = out;
    }
  }
}

}  // namespace

cudaError_t lowbit_linear_int8act(const float* x, const uint8_t* packed, const float* scale, const float* zero,
                                  const float* bias, int64_t ntok, int64_t rows, int64_t cols, int bits,
                                  int8_t* xq, int32_t* qsum, float* sx, uint8_t* finite, float* y,
                                  cudaStream_t stream) {
  if (ntok == 0 || rows == 0) return cudaSuccess;
  if (ntok > 0x7fffffff) return cudaErrorInvalidConfiguration;
  quantize_tokens_kernel<<<static_cast<unsigned>(ntok), kQuantThreads, 0, stream>>>(x, cols, xq, qsum, sx,
                                                                                   finite);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t gx = (rows + kDotWarps - 1) / kDotWarps;
  if (gx > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(ntok < 65535 ? ntok : 65535));
  dot_kernel<<<grid, 32 * kDotWarps, 0, stream>>>(packed, xq, qsum, sx, finite, scale, zero, bias, ntok, rows,
                                                  cols, bits, y);
  return cudaGetLastError();
}

}  // namespace ptqx::cuda
