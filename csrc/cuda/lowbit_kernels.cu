// Torch-free CUDA kernels for packed low-bit weights (layout: csrc/include/ptqx/lowbit.h).
// Correctness first: a warp-per-row GEMV for few tokens (coalesced 128-byte reads of the
// packed row, unpack in registers, warp-shuffle reduction) and a shared-memory tiled
// kernel for many tokens (dequantize a W tile into shared memory, 4x4 register tiles).
#include "ptqx/cuda/lowbit.h"

namespace ptqx::cuda {
namespace {

constexpr int kBlockBytes = 32;

__host__ __device__ inline int64_t row_bytes(int64_t cols, int bits) {
  const int64_t per = 256 / bits;
  return kBlockBytes * ((cols + per - 1) / per);
}

// Code of column c from a packed row (little-endian words).
__device__ __forceinline__ unsigned code_at(const uint8_t* __restrict__ prow, int64_t c, int bits) {
  const int64_t per = 256 / bits;
  const int64_t j = c / per, local = c - j * per;
  const uint8_t* wp = prow + j * kBlockBytes + 4 * (local & 7);
  const uint32_t w = uint32_t(wp[0]) | (uint32_t(wp[1]) << 8) | (uint32_t(wp[2]) << 16) |
                     (uint32_t(wp[3]) << 24);
  return (w >> ((local >> 3) * bits)) & ((1u << bits) - 1u);
}

// One thread per packed word: word l of block j of row r.
__global__ void pack_kernel(const uint8_t* __restrict__ codes, int64_t rows, int64_t cols, int bits,
                            uint8_t* __restrict__ out) {
  const int64_t rb = row_bytes(cols, bits), words_per_row = rb / 4, per = 256 / bits;
  const int64_t n = rows * words_per_row;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = i / words_per_row, wi = i - r * words_per_row;
    const int64_t j = wi / 8, l = wi - j * 8;
    uint32_t w = 0;
    for (int k = 0; k < 32 / bits; ++k) {
      const int64_t c = j * per + 8 * k + l;
      if (c < cols) w |= uint32_t(codes[r * cols + c]) << (k * bits);
    }
    uint8_t* o = out + r * rb + 4 * wi;
    o[0] = uint8_t(w);
    o[1] = uint8_t(w >> 8);
    o[2] = uint8_t(w >> 16);
    o[3] = uint8_t(w >> 24);
  }
}

__global__ void unpack_kernel(const uint8_t* __restrict__ packed, int64_t rows, int64_t cols, int bits,
                              uint8_t* __restrict__ out) {
  const int64_t rb = row_bytes(cols, bits), n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    out[i] = uint8_t(code_at(packed + r * rb, c, bits));
  }
}

constexpr int kGemvMaxTokens = 8;
constexpr int kGemvWarps = 4;  // rows per block (one warp each)

// One warp per output row. Lane L reads word (L & 7) of block (L >> 3) + 4 * it, so a
// warp reads 128 consecutive bytes per step; each word holds the codes of columns
// j*per + 8k + (L & 7), k < 32 / bits.
template <int NT>
__global__ void gemv_kernel(const float* __restrict__ x, const uint8_t* __restrict__ packed,
                            const float* __restrict__ scale, const float* __restrict__ zero,
                            const float* __restrict__ bias, int ntok, int64_t rows, int64_t cols,
                            int bits, float* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t r = blockIdx.x * int64_t(kGemvWarps) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int64_t rb = row_bytes(cols, bits), nblocks = rb / kBlockBytes, per = 256 / bits;
  const int words = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
  const float z = zero[r];
  const uint8_t* prow = packed + r * rb;
  float acc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.f;
  for (int64_t j = lane >> 3; j < nblocks; j += 4) {
    const uint32_t w = *reinterpret_cast<const uint32_t*>(prow + j * kBlockBytes + 4 * (lane & 7));
    for (int k = 0; k < words; ++k) {
      const int64_t c = j * per + 8 * k + (lane & 7);
      if (c >= cols) break;  // columns grow with k: the rest of this word is padding
      const float q = float((w >> (k * bits)) & mask) - z;
#pragma unroll
      for (int t = 0; t < NT; ++t)
        if (t < ntok) acc[t] = fmaf(q, x[t * cols + c], acc[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    float v = acc[t];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0 && t < ntok) y[t * rows + r] = scale[r] * v + (bias ? bias[r] : 0.f);
  }
}

// Tiled kernel: block computes y[t0:t0+64, r0:r0+64]; 256 threads, 4x4 outputs each.
constexpr int kTile = 64, kTileK = 16;

__global__ void tiled_kernel(const float* __restrict__ x, const uint8_t* __restrict__ packed,
                             const float* __restrict__ scale, const float* __restrict__ zero,
                             const float* __restrict__ bias, int64_t ntok, int64_t rows, int64_t cols,
                             int bits, float* __restrict__ y) {
  __shared__ float xs[kTileK][kTile + 1];  // [k][token]
  __shared__ float ws[kTileK][kTile + 1];  // [k][row], holds code - zero
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;  // tx: rows, ty: tokens
  const int64_t t0 = blockIdx.y * int64_t(kTile), r0 = blockIdx.x * int64_t(kTile);
  const int64_t rb = row_bytes(cols, bits);
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < cols; k0 += kTileK) {
    for (int i = tid; i < kTile * kTileK; i += blockDim.x) {
      const int rr = i / kTileK, kk = i % kTileK;  // consecutive threads: consecutive k
      const int64_t c = k0 + kk;
      const int64_t t = t0 + rr, r = r0 + rr;
      xs[kk][rr] = (t < ntok && c < cols) ? x[t * cols + c] : 0.f;
      ws[kk][rr] = (r < rows && c < cols) ? float(code_at(packed + r * rb, c, bits)) - zero[r] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty * 4 + i];
#pragma unroll
      for (int i = 0; i < 4; ++i) b[i] = ws[kk][tx * 4 + i];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) acc[i][jj] = fmaf(a[i], b[jj], acc[i][jj]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t t = t0 + ty * 4 + i;
    if (t >= ntok) continue;
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const int64_t r = r0 + tx * 4 + jj;
      if (r < rows) y[t * rows + r] = scale[r] * acc[i][jj] + (bias ? bias[r] : 0.f);
    }
  }
}

inline unsigned blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 8 ? (b < 1 ? 1 : b) : 65535 * 8);
}

}  // namespace

cudaError_t lowbit_pack(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* out,
                        cudaStream_t stream) {
  const int64_t n = rows * (row_bytes(cols, bits) / 4);
  if (n == 0) return cudaSuccess;
  pack_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(codes, rows, cols, bits, out);
  return cudaGetLastError();
}

cudaError_t lowbit_unpack(const uint8_t* packed, int64_t rows, int64_t cols, int bits, uint8_t* out,
                          cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  unpack_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(packed, rows, cols, bits, out);
  return cudaGetLastError();
}

cudaError_t lowbit_linear(const float* x, const uint8_t* packed, const float* scale, const float* zero,
                          const float* bias, int64_t ntok, int64_t rows, int64_t cols, int bits,
                          float* y, cudaStream_t stream) {
  if (ntok == 0 || rows == 0) return cudaSuccess;
  if (ntok <= 2 * kGemvMaxTokens) {
    const unsigned grid = static_cast<unsigned>((rows + kGemvWarps - 1) / kGemvWarps);
    for (int64_t t0 = 0; t0 < ntok; t0 += kGemvMaxTokens) {
      const int nt = static_cast<int>(ntok - t0 < kGemvMaxTokens ? ntok - t0 : kGemvMaxTokens);
      if (nt <= 1) {
        gemv_kernel<1><<<grid, 32 * kGemvWarps, 0, stream>>>(x + t0 * cols, packed, scale, zero, bias,
                                                              nt, rows, cols, bits, y + t0 * rows);
      } else {
        gemv_kernel<kGemvMaxTokens><<<grid, 32 * kGemvWarps, 0, stream>>>(
            x + t0 * cols, packed, scale, zero, bias, nt, rows, cols, bits, y + t0 * rows);
      }
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
  }
  // Token tiles run along gridDim.y, which stops at 65535: larger batches (more than
  // 65535 * 64 = 4,194,240 tokens) go in several launches.
  constexpr int64_t kMaxTokensPerLaunch = int64_t{65535} * kTile;
  const unsigned gx = static_cast<unsigned>((rows + kTile - 1) / kTile);
  for (int64_t t0 = 0; t0 < ntok; t0 += kMaxTokensPerLaunch) {
    const int64_t nt = ntok - t0 < kMaxTokensPerLaunch ? ntok - t0 : kMaxTokensPerLaunch;
    const dim3 grid(gx, static_cast<unsigned>((nt + kTile - 1) / kTile));
    tiled_kernel<<<grid, 256, 0, stream>>>(x + t0 * cols, packed, scale, zero, bias, nt, rows, cols, bits,
                                           y + t0 * rows);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace ptqx::cuda
