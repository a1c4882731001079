// Stand-in for cuda_fp16.h in the CPU emulation build: storage type and conversion only.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

struct __half {
  uint16_t bits;
};

// IEEE binary16 -> float, written from the format's definition (not from the CPU
// kernel's bit manipulation, which the emulated kernels are compared against).
inline float __half2float(__half h) {
  const int sign = h.bits >> 15, e = (h.bits >> 10) & 0x1f, m = h.bits & 0x3ff;
  float v;
  if (e == 0x1f) {
    v = m ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else if (e == 0) {
    v = std::ldexp(static_cast<float>(m), -24);  // subnormal: m * 2^-14 / 1024
  } else {
    v = std::ldexp(1.0f + static_cast<float>(m) / 1024.0f, e - 15);
  }
  return sign ? -v : v;
}
