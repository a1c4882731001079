// Torch-free GEMM over packed low-bit weights for many tokens (AVX2 + FMA):
// y[t, r] = sum_c x[t, c] * scale[r] * (code[r, c] - zero[r]) (+ bias[r]).
//
// Why a GEMM of our own: with many tokens the product is compute-bound, so the packed
// weights' smaller size buys nothing unless dequantization costs (almost) nothing. A
// BLIS-style GEMM copies ("packs") every block of B into a panel layout anyway; here that
// packing step *is* the dequantization: each 16-row x 256-column weight panel is unpacked
// from the 2/4-bit codes straight into the [k][16] float layout the micro-kernel reads,
// once per weight, and the micro-kernel is a plain 6x16 FMA outer product. The earlier
// path (dequantize 4 MiB of rows to fp32, then ATen's mm on them) wrote and re-read every
// weight as fp32 and called the GEMM once per block; it was up to 1.3x slower than fp32
// F.linear at 24-256 tokens (benchmarks/RESULTS.md).
//
// Blocking (znver3: 32 KiB L1d, 512 KiB L2 per core, 32 MiB L3):
// - kKC = 256 columns per K block: a weight panel (256 x 16 floats = 16 KiB) stays in
//   L1 while the micro-kernel broadcasts x;
// - up to kMaxMC = 384 tokens per M block: their K block of x (<= 384 x 256 floats)
//   stays in L2 across a group of panels, and each weight is dequantized once per M
//   block (once in all for <= 384 tokens);
// - kGroupPanels = 4 panels per group, all K blocks of a group before the next group
//   (unless a thread's outputs fit in kOutputL2Bytes: then its panels form one group):
//   the group's outputs (tokens x 64 floats, 64 KiB at 256 tokens) stay in L2 between K
//   blocks. Sweeping every panel per K block instead re-read and re-wrote all of a
//   thread's outputs from L3 once per K block (4 MiB per thread at 4096 rows and 256
//   tokens), and those misses stalled the micro-kernel's final read-modify-write;
//   the micro-kernel also prefetches its output tile when it starts;
// - x is copied once per M block into micro-tile order ([K block][6-token tile][k][6])
//   when the layer has >= kPackXMinRows rows, so that the micro-kernel reads A as one
//   contiguous stream; smaller layers broadcast x straight from the six token rows,
//   because there the copy (paid once per x element, amortised over `rows` FMAs) costs
//   more than it saves. Measured (znver3, 2 threads, 256 tokens, A/B against the
//   previous version of this header, identical outputs): 4096x4096 2-bit 144-161 ->
//   176-185 GFLOP/s, 11008x4096 4-bit 130-140 -> 176-183 (the two cores' FMA peak is
//   about 195; MKL's fp32 sgemm reaches 140-160 on these shapes);
// - threads own disjoint 16-row panels (output columns), so they never write the same
//   cache line; the only barrier is after the shared copy of x.
// Rounding: each weight is the float scale * (code - zero), exactly the fake-quant value
// the reference dequantizes, and the K blocks are accumulated in order, so the result is
// a valid fp32 dot product (only the summation order differs from F.linear).
#pragma once

#include "ptqx/lowbit.h"

#ifdef PTQX_LOWBIT_AVX2

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ptqx::lowbit::gemm {

constexpr int kMR = 6;           // tokens per micro-tile
constexpr int kNR = 16;          // weight rows (output columns) per micro-tile
constexpr int64_t kKC = 256;     // columns per K block: a multiple of 128 (2-bit) and 64 (4-bit)
constexpr int64_t kMaxMC = 384;  // tokens per M block (multiple of kMR)
constexpr int64_t kGroupPanels = 4;
constexpr int64_t kOutputL2Bytes = 256 << 10;  // half of a znver3 core's L2
constexpr int64_t kPackXMinRows = 512;
// Floats per packed 6-token tile of one K block; the 8 spare floats absorb the
// overlapping 8-lane stores of pack_x_tile, so tiles packed by different threads never
// touch each other's floats.
constexpr int64_t kXTileFloats = kKC * kMR + 8;

// Padded column count of a packed row (whole 32-byte blocks).
inline int64_t padded_cols(int64_t cols, int bits) {
  return row_bytes(cols, bits) / kBlockBytes * codes_per_block(bits);
}

// In-register transpose of an 8x8 block of 32-bit words: t[r] lane l -> t[l] lane r.
inline void transpose8(__m256i t[8]) {
  __m256i a[8], b[8];
  for (int i = 0; i < 8; i += 2) {
    a[i] = _mm256_unpacklo_epi32(t[i], t[i + 1]);
    a[i + 1] = _mm256_unpackhi_epi32(t[i], t[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    b[i] = _mm256_unpacklo_epi64(a[i], a[i + 2]);
    b[i + 1] = _mm256_unpackhi_epi64(a[i], a[i + 2]);
    b[i + 2] = _mm256_unpacklo_epi64(a[i + 1], a[i + 3]);
    b[i + 3] = _mm256_unpackhi_epi64(a[i + 1], a[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2x128_si256(b[i], b[i + 4], 0x20);
    t[i + 4] = _mm256_permute2x128_si256(b[i], b[i + 4], 0x31);
  }
}

// Dequantize rows [n0, n0 + nv) (nv <= 16) x padded columns [k0, k0 + kc) into the
// micro-kernel's panel bp[k][16] = scale[r] * (code[r, k0 + k] - zero[r]); lanes past nv
// are 0. Eight rows at a time: load the same 32-byte block of 8 rows, transpose so that
// register l holds word l of all 8 rows, then shift/mask/convert gives 8 rows' codes of
// one column per instruction, stored as one 8-float half of a panel row.
template <int BITS>
inline void pack_weight_panel(const uint8_t* packed, int64_t rb, int64_t n0, int nv, int64_t k0,
                              int64_t kc, const float* scale, const float* zero, float* bp) {
  constexpr int WORDS = 32 / BITS;
  constexpr int PER = 8 * WORDS;
  const __m256i mask = _mm256_set1_epi32((1 << BITS) - 1);
  for (int h = 0; h < kNR / 8; ++h) {
    if (h * 8 >= nv) {
      for (int64_t k = 0; k < kc; ++k) _mm256_storeu_ps(bp + k * kNR + h * 8, _mm256_setzero_ps());
      continue;
    }
    const uint8_t* rowp[8];
    alignas(32) float s[8], z[8];
    for (int i = 0; i < 8; ++i) {
      const int r = h * 8 + i;
      const bool valid = r < nv;
      rowp[i] = packed + (n0 + (valid ? r : 0)) * rb;  // a real row; its values are zeroed below
      s[i] = valid ? scale[n0 + r] : 0.f;
      z[i] = valid ? zero[n0 + r] : 0.f;
    }
    const __m256 sv = _mm256_load_ps(s), zv = _mm256_load_ps(z);
    for (int64_t j = k0 / PER; j < (k0 + kc) / PER; ++j) {
      __m256i t[8];
      for (int i = 0; i < 8; ++i)
        t[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rowp[i] + j * kBlockBytes));
      transpose8(t);
      float* dst = bp + (j * PER - k0) * kNR + h * 8;
#pragma GCC unroll 16
      for (int k = 0; k < WORDS; ++k)
        for (int l = 0; l < 8; ++l) {
          const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(t[l], mask));
          _mm256_storeu_ps(dst + (8 * k + l) * kNR, _mm256_mul_ps(_mm256_sub_ps(q, zv), sv));
          t[l] = _mm256_srli_epi32(t[l], BITS);
        }
    }
  }
}

// dst[k * 6 + t] = src[t][k] for k < kc, t < 6: one K block of a 6-token tile in the
// order the micro-kernel reads it. Eight columns at a time: load 8 floats of each token
// row (rows 6 and 7 are zero), transpose 8x8 in registers, and store the 6 useful lanes
// of each column with an 8-lane store that the next column's store partly overwrites
// (the last store of a tile spills 2 floats into its kXTileFloats slack).
inline void pack_x_tile(const float* const* src, int64_t kc, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256i t[8];
    for (int i = 0; i < kMR; ++i) t[i] = _mm256_castps_si256(_mm256_loadu_ps(src[i] + k));
    t[6] = t[7] = _mm256_setzero_si256();
    transpose8(t);
    for (int l = 0; l < 8; ++l) _mm256_storeu_ps(dst + (k + l) * kMR, _mm256_castsi256_ps(t[l]));
  }
  for (; k < kc; ++k)
    for (int i = 0; i < kMR; ++i) dst[k * kMR + i] = src[i][k];
}

// c[i*ldc + j] (i < mv tokens, j < nv rows) = (first ? bias[j] (or 0) : c[i*ldc + j])
//                                            + sum_k A(i, k) * b[k*16 + j],
// A(i, k) = a[0][k*6 + i] when PackedX (a pack_x_tile tile; only a[0] is read), else
// a[i][k] (six token rows).
template <bool PackedX>
inline void micro_6x16(int64_t kc, const float* const* a, const float* b, float* c, int64_t ldc,
                       int mv, int nv, bool first, const float* bias) {
  // The tile was last written one K block ago and may have left L1: start its fetch now,
  // ~1500 cycles before the read-modify-write below needs it.
  if (!first)
    for (int i = 0; i < mv; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + kNR - 1), _MM_HINT_T0);
    }
  const float* rows[kMR] = {a[0]};
  if constexpr (!PackedX)
    for (int i = 1; i < kMR; ++i) rows[i] = a[i];
  __m256 acc[kMR][2];
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * kNR), b1 = _mm256_loadu_ps(b + k * kNR + 8);
    for (int i = 0; i < kMR; ++i) {
      const __m256 av = _mm256_broadcast_ss(PackedX ? rows[0] + k * kMR + i : rows[i] + k);
      acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
    }
  }
  if (mv == kMR && nv == kNR) {
    __m256 base0 = _mm256_setzero_ps(), base1 = _mm256_setzero_ps();
    if (first && bias) base0 = _mm256_loadu_ps(bias), base1 = _mm256_loadu_ps(bias + 8);
    for (int i = 0; i < kMR; ++i) {
      float* ci = c + i * ldc;
      if (!first) base0 = _mm256_loadu_ps(ci), base1 = _mm256_loadu_ps(ci + 8);
      _mm256_storeu_ps(ci, _mm256_add_ps(base0, acc[i][0]));
      _mm256_storeu_ps(ci + 8, _mm256_add_ps(base1, acc[i][1]));
    }
    return;
  }
  alignas(32) float tile[kMR][kNR];
  for (int i = 0; i < kMR; ++i) {
    _mm256_store_ps(tile[i], acc[i][0]);
    _mm256_store_ps(tile[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < mv; ++i)
    for (int j = 0; j < nv; ++j) {
      float* cij = c + i * ldc + j;
      *cij = (first ? (bias ? bias[j] : 0.f) : *cij) + tile[i][j];
    }
}

// Memory for the copy of x (at most kMaxMC x padded columns floats, ~6 MiB at 4096
// columns). Up to kRetainedXBytes it is kept per calling thread and grown on demand: a
// fresh allocation per call page-faulted again in every call (80 minor faults per call
// at 512x4608 and 256 tokens, mean 9.2 ms per call against 8.3 ms with the kept buffer,
// same session). Larger copies (very wide layers) are allocated per call, where the
// faults are small next to the GEMM, so no thread keeps more than that for good.
constexpr size_t kRetainedXBytes = size_t{32} << 20;

class XScratch {
 public:
  explicit XScratch(size_t n) {
    if (n * sizeof(float) > kRetainedXBytes) {
      owned_.reset(new float[n]);
      data_ = owned_.get();
      return;
    }
    static thread_local std::vector<float> kept;
    if (kept.size() < n) kept.resize(n);
    data_ = kept.data();
  }
  float* data() const { return data_; }

 private:
  std::unique_ptr<float[]> owned_;
  float* data_ = nullptr;
};

// y[t*ldy + r] for t < m tokens, r < rows. x: m rows of ldx floats (real columns `cols`).
template <int BITS>
inline void gemm(const uint8_t* packed, int64_t rows, int64_t cols, const float* scale,
                 const float* zero, const float* bias, const float* x, int64_t ldx, int64_t m,
                 float* y, int64_t ldy) {
  const int64_t rb = row_bytes(cols, BITS), kpad = padded_cols(cols, BITS);
  const int64_t npanels = (rows + kNR - 1) / kNR, nkb = (kpad + kKC - 1) / kKC;
  // M blocks of equal size (a multiple of 6) so that no block is a sliver that would pay
  // a whole pass of weight dequantization for a few tokens.
  const int64_t nmc = (m + kMaxMC - 1) / kMaxMC;
  const int64_t mc_step = ((m + nmc - 1) / nmc + kMR - 1) / kMR * kMR;
  const bool pack_x = rows >= kPackXMinRows;
  const XScratch xscratch(pack_x ? static_cast<size_t>(nkb * (mc_step / kMR) * kXTileFloats) : 0);
  float* const xbuf = xscratch.data();
  for (int64_t m0 = 0; m0 < m; m0 += mc_step) {
    const int64_t mc = std::min(mc_step, m - m0), mpanels = (mc + kMR - 1) / kMR;
    float* yblock = y + m0 * ldy;
    // Token row t of micro-tile i; a short last tile repeats its last token (its extra
    // results are discarded by the micro-kernel's partial store).
    auto token_row = [&](int64_t i, int t) {
      const int mv = static_cast<int>(std::min<int64_t>(kMR, mc - i * kMR));
      return x + (m0 + i * kMR + std::min(t, mv - 1)) * ldx;
    };
#pragma omp parallel if (npanels > 1 && mc * rows * kpad > (int64_t{1} << 18))
    {
      int64_t p0 = 0, p1 = npanels, tid = 0, nth = 1;
#ifdef _OPENMP
      nth = omp_get_num_threads();
      tid = omp_get_thread_num();
      p0 = npanels * tid / nth;
      p1 = npanels * (tid + 1) / nth;
#endif
      if (pack_x) {
        for (int64_t job = tid; job < nkb * mpanels; job += nth) {
          const int64_t kb = job / mpanels, i = job % mpanels, k0 = kb * kKC;
          const float* src[kMR];
          for (int t = 0; t < kMR; ++t) src[t] = token_row(i, t) + k0;
          pack_x_tile(src, std::min(kKC, cols - k0), xbuf + job * kXTileFloats);
        }
#ifdef _OPENMP
#pragma omp barrier
#endif
      }
      alignas(64) float bp[kKC * kNR];
      // A thread whose outputs fit in L2 anyway sweeps all its panels per K block, so
      // x's K block is read once instead of once per group.
      const int64_t group = mc * (p1 - p0) * kNR * 4 <= kOutputL2Bytes ? p1 - p0 : kGroupPanels;
      for (int64_t g0 = p0; g0 < p1; g0 += group) {
        const int64_t g1 = std::min(g0 + group, p1);
        for (int64_t k0 = 0; k0 < kpad; k0 += kKC) {
          // Only real columns are summed: the panel's padding columns are never read.
          const int64_t kc = std::min(kKC, kpad - k0), kreal = std::min(kc, cols - k0);
          for (int64_t p = g0; p < g1; ++p) {
            const int64_t n0 = p * kNR;
            const int nv = static_cast<int>(std::min<int64_t>(kNR, rows - n0));
            pack_weight_panel<BITS>(packed, rb, n0, nv, k0, kc, scale, zero, bp);
            for (int64_t i = 0; i < mpanels; ++i) {
              const int mv = static_cast<int>(std::min<int64_t>(kMR, mc - i * kMR));
              float* c = yblock + i * kMR * ldy + n0;
              const float* b = bias ? bias + n0 : nullptr;
              if (pack_x) {
                const float* tile = xbuf + ((k0 / kKC) * mpanels + i) * kXTileFloats;
                micro_6x16<true>(kreal, &tile, bp, c, ldy, mv, nv, k0 == 0, b);
              } else {
                const float* a[kMR];
                for (int t = 0; t < kMR; ++t) a[t] = token_row(i, t) + k0;
                micro_6x16<false>(kreal, a, bp, c, ldy, mv, nv, k0 == 0, b);
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace ptqx::lowbit::gemm

#endif  // PTQX_LOWBIT_AVX2
