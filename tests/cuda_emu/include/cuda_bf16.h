// Stand-in for cuda_bf16.h in the CPU emulation build: storage type and conversion only.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;  // bf16 is the top half of a float
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
