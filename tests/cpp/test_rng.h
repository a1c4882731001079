// Deterministic random numbers for the C++ tests (tests/cpp and tests/cuda_emu): the same
// seed gives the same inputs on every compiler and standard library, unlike <random>'s
// distributions.
#pragma once

#include <cstdint>

namespace ptqx_test {

inline uint32_t next(uint64_t& s) {  // xorshift64*
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return static_cast<uint32_t>((s * 2685821657736338717ull) >> 32);
}

}  // namespace ptqx_test
