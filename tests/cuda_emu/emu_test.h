// Helpers shared by the emulated-CUDA kernel tests (tests/cuda_emu/test_emu_*.cpp).
#pragma once

#include <cstdint>

#include "../cpp/check.h"
#include "ptqx_cuda_emu.h"

namespace emu_test {

inline uint32_t next(uint64_t& s) {  // xorshift64*: deterministic, no <random> distributions
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return static_cast<uint32_t>((s * 2685821657736338717ull) >> 32);
}

// Uniform float in [lo, hi) on a 1/1000 grid (exact decimal inputs keep failures readable).
inline float uniform(uint64_t& s, float lo, float hi) {
  return lo + (hi - lo) * static_cast<float>(next(s) % 1000) / 1000.f;
}

}  // namespace emu_test

// A launcher returned cudaSuccess and no kernel fault (bad shuffle, ...) was recorded.
#define CHECK_LAUNCH(expr)                     \
  do {                                         \
    CHECK((expr) == cudaSuccess);              \
    CHECK(::ptqx_emu::faults() == 0);          \
  } while (0)
