// Torch-free kernels for the per-output-channel uniform grid.
// Semantics (GPTQ/OBC quant.py): q = clamp(nearbyint(w / scale) + zero, 0, maxq),
// dequantized value = scale * (q - zero). nearbyint rounds half to even under the
// default rounding mode, exactly like torch.round, and we divide (not multiply by a
// reciprocal) so codes match the reference bit for bit.
//
// Also the two row-level rules of the grid search that the CPU (grid_search.h) and CUDA
// (csrc/cuda/grid_kernels.cu) kernels share with the reference (reference.grid_search).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "ptqx/grid_common.h"

namespace ptqx {

// grid_range, then: a row whose full-range scale (hi - lo) / maxq underflows to 0 in
// float32 (only subnormal weights do that) has no usable grid; it gets the all-zero row's
// (-1, +1), whose codes all dequantize to 0, within ~1e-44 of every weight. A range that
// overflows stays: its shrunk candidates may be finite, and the wrapper rejects a row
// where none is (ptqx/ops/grid.py).
PTQX_HD void grid_search_range(float xmin, float xmax, const GridOptions& o, float& lo, float& hi) {
  grid_range(xmin, xmax, o.symmetric, o.include_zero, lo, hi);
  if (!((hi - lo) / static_cast<float>(o.maxq) > 0.f)) {
    lo = -1.f;
    hi = 1.f;
  }
}

// Exponent k of the power of two 2^-k that scales every |error| of a row before
// |e|^norm: with max(|lo|, |hi|) = f * 2^k (f in [0.5, 1)), the scaled errors are O(1),
// so the power neither underflows nor overflows for weights of any magnitude (float64
// rows at 1e-20 or 1e30, float32 sums at 1e15). The same factor for every candidate of a
// row leaves their ranking unchanged, and multiplying by a power of two is exact (but
// for subnormal products, which round as the reference's do). k is at least -126 so
// that 2^-k is a float32; 0 (no scaling) for an infinite range.
PTQX_HD int grid_error_exponent(float lo, float hi) {
  const float a = fabsf(lo), b = fabsf(hi);
  const float m = a > b ? a : b;
  if (!(m <= FLT_MAX)) return 0;
  int k = 0;
  frexpf(m, &k);
  return k < -126 ? -126 : k;
}

// A candidate scale the search may pick: finite and > 0 (a shrunk range can underflow
// to 0 or, for huge rows, overflow; the reference's error is then NaN, never the best).
PTQX_HD bool usable_scale(float s) { return s > 0.f && s <= FLT_MAX; }

template <typename T>
inline T quantize_code(T w, T scale, T zero, T maxq) {
  T q = std::nearbyint(w / scale) + zero;
  return q < T(0) ? T(0) : (q > maxq ? maxq : q);
}

// w, out: [rows, cols] row-major; scale, zero: [rows] (float32, promoted to T).
template <typename T>
void fake_quant_rows(const T* w, const float* scale, const float* zero, int64_t rows, int64_t cols,
                     int maxq, T* out) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const T s = static_cast<T>(scale[r]), z = static_cast<T>(zero[r]), m = static_cast<T>(maxq);
    const T* wr = w + r * cols;
    T* outr = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) outr[c] = s * (quantize_code(wr[c], s, z, m) - z);
  }
}

template <typename T>
void quantize_codes_rows(const T* w, const float* scale, const float* zero, int64_t rows,
                         int64_t cols, int maxq, uint8_t* out) {
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const T s = static_cast<T>(scale[r]), z = static_cast<T>(zero[r]), m = static_cast<T>(maxq);
    const T* wr = w + r * cols;
    uint8_t* outr = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) outr[c] = static_cast<uint8_t>(quantize_code(wr[c], s, z, m));
  }
}

}  // namespace ptqx
