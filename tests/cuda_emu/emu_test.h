// Helpers shared by the emulated-CUDA kernel tests (tests/cuda_emu/test_emu_*.cpp).
#pragma once

#include <cstdint>

#include "../cpp/check.h"
#include "../cpp/test_rng.h"
#include "ptqx_cuda_emu.h"

namespace emu_test {

using ptqx_test::next;

// Uniform float in [lo, hi) on a 1/1000 grid (exact decimal inputs keep failures readable).
inline float uniform(uint64_t& s, float lo, float hi) {
  return lo + (hi - lo) * static_cast<float>(next(s) % 1000) / 1000.f;
}

// Name of a kernel's floating type in failure messages.
template <typename T>
const char* type_name() {
  return sizeof(T) == 8 ? "double" : "float";
}

}  // namespace emu_test

// A launcher returned cudaSuccess and no kernel fault (bad shuffle, ...) was recorded.
#define CHECK_LAUNCH(expr)                     \
  do {                                         \
    CHECK((expr) == cudaSuccess);              \
    CHECK(::ptqx_emu::faults() == 0);          \
  } while (0)
