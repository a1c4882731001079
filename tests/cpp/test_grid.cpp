// C++ unit test of the torch-free grid kernels (built by CMakeLists.txt, run by ctest).
#include <cstdio>
#include <vector>

#include "ptqx/grid.h"

// Not CHECK(): Release builds define NDEBUG and would compile the checks away.
#define CHECK(cond)                                                    \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      return 1;                                                        \
    }                                                                  \
  } while (0)

int main() {
  // Round half to even, clamping at both ends: 4-bit grid, scale 0.5, zero 8.
  const std::vector<float> w = {-10.f, -0.25f, 0.25f, 0.75f, 1.25f, 10.f};
  const float scale = 0.5f, zero = 8.f;
  std::vector<uint8_t> codes(w.size());
  ptqx::quantize_codes_rows<float>(w.data(), &scale, &zero, 1, w.size(), 15, codes.data());
  const uint8_t expect[] = {0, 8, 8, 10, 10, 15};
  for (size_t i = 0; i < w.size(); ++i) CHECK(codes[i] == expect[i]);
  std::vector<float> deq(w.size());
  ptqx::fake_quant_rows<float>(w.data(), &scale, &zero, 1, w.size(), 15, deq.data());
  CHECK(deq[0] == -4.f && deq[1] == 0.f && deq[3] == 1.f && deq[5] == 3.5f);
  std::puts("test_grid: ok");
  return 0;
}
