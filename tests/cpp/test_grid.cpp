// C++ unit test of the torch-free grid kernels (built by CMakeLists.txt, run by ctest).
#include <cstdio>
#include <vector>

#include "ptqx/grid.h"
#include "ptqx/grid_search.h"

#include "check.h"

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
  // grid_search, min/max only (steps = 1): OBC's range contains 0, so a row in [0.5, 2]
  // gets (0, 2): scale 2/15, zero 0; the all-zero row gets (-1, 1).
  {
    const std::vector<float> rows = {0.5f, 1.f, 2.f, 0.f, 0.f, 0.f};
    float s[2], z[2];
    const ptqx::GridOptions mm{15, false, true, 2.4f, 100, 1};
    ptqx::grid_search_rows<float>(rows.data(), 2, 3, mm, s, z);
    CHECK(s[0] == 2.f / 15.f && z[0] == 0.f);
    CHECK(s[1] == 2.f / 15.f && z[1] == 7.f);  // round(7.4999996f) in float32
    // The MSE search never does worse than the full range, and a row lying exactly on a
    // 4-bit grid keeps it (error 0).
    std::vector<float> on_grid(16);
    for (int i = 0; i < 16; ++i) on_grid[i] = 0.25f * static_cast<float>(i - 8);
    const ptqx::GridOptions mse{15, false, true, 2.4f, 100, 80};
    ptqx::grid_search_rows<float>(on_grid.data(), 1, 16, mse, s, z);
    CHECK(s[0] == 0.25f && z[0] == 8.f);
  }
  std::puts("test_grid: ok");
  return 0;
}
