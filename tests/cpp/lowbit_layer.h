// A random packed-weight layer for the C++ tests of the low-bit kernels (tests/cpp and
// tests/cuda_emu): codes in [0, 2^bits), per-row scale, zero points that include
// half-integers (so (code - zero) is never trivially an integer) and bias.
#pragma once

#include <cstdint>
#include <vector>

#include "test_rng.h"

namespace ptqx_test {

struct LowbitLayer {
  std::vector<uint8_t> codes;  // [rows, cols]
  std::vector<float> scale, zero, bias;
};

inline LowbitLayer random_lowbit_layer(int bits, int64_t rows, int64_t cols, uint64_t& seed) {
  const uint32_t maxq = (1u << bits) - 1u;
  LowbitLayer l{std::vector<uint8_t>(rows * cols), std::vector<float>(rows), std::vector<float>(rows),
                std::vector<float>(rows)};
  for (auto& c : l.codes) c = static_cast<uint8_t>(next(seed) % (maxq + 1));
  for (int64_t r = 0; r < rows; ++r) {
    l.scale[r] = 0.01f + 0.001f * static_cast<float>(next(seed) % 100);
    l.zero[r] = 0.5f * static_cast<float>(next(seed) % (2 * maxq + 1));
    l.bias[r] = 0.1f * (static_cast<float>(next(seed) % 21) - 10.f);
  }
  return l;
}

}  // namespace ptqx_test
