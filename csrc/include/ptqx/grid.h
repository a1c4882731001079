// Torch-free kernels for the per-output-channel uniform grid.
// Semantics (GPTQ/OBC quant.py): q = clamp(nearbyint(w / scale) + zero, 0, maxq),
// dequantized value = scale * (q - zero). nearbyint rounds half to even under the
// default rounding mode, exactly like torch.round, and we divide (not multiply by a
// reciprocal) so codes match the reference bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

namespace ptqx {

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
