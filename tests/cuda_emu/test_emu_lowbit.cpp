// Runs the CUDA packed low-bit kernels (csrc/cuda/lowbit_kernels.cu) under the CPU
// emulation of tests/cuda_emu and compares them with the CPU kernels (ptqx/lowbit.h):
// pack/unpack bit for bit, lowbit_linear on every path the launcher picks (one-token
// GEMV, 8-token GEMV passes up to 16 tokens, the shared-memory tiled kernel beyond)
// against a float64 sum of the dequantized weights; and, from their launch configurations
// alone, that batches beyond gridDim.y's 65535 token tiles are split into several launches.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "../cpp/lowbit_layer.h"
#include "emu_test.h"
#include "ptqx/cuda/lowbit.h"
#include "ptqx/lowbit.h"

namespace lb = ptqx::lowbit;

namespace {

int check_layer(int bits, int64_t rows, int64_t cols, uint64_t seed) {
  const auto [codes, scale, zero, bias] = ptqx_test::random_lowbit_layer(bits, rows, cols, seed);
  const int64_t rb = lb::row_bytes(cols, bits);
  std::vector<uint8_t> want_packed(rows * rb), packed(rows * rb, 0xAB), back(rows * cols, 0xAB);
  CHECK(lb::pack_rows(codes.data(), rows, cols, bits, want_packed.data()) == 0);
  CHECK_LAUNCH(ptqx::cuda::lowbit_pack(codes.data(), rows, cols, bits, packed.data(), nullptr));
  CHECK(packed == want_packed);  // padding bytes too
  CHECK_LAUNCH(ptqx::cuda::lowbit_unpack(packed.data(), rows, cols, bits, back.data(), nullptr));
  CHECK(back == codes);

  for (int64_t ntok : {1, 2, 8, 9, 16, 17, 70}) {
    for (bool with_bias : {false, true}) {
      std::vector<float> x(ntok * cols), y(ntok * rows, -12345.f);
      for (auto& v : x) v = emu_test::uniform(seed, -1.f, 1.f);
      CHECK_LAUNCH(ptqx::cuda::lowbit_linear(x.data(), packed.data(), scale.data(), zero.data(),
                                             with_bias ? bias.data() : nullptr, ntok, rows, cols, bits,
                                             y.data(), nullptr));
      for (int64_t t = 0; t < ntok; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          double want = with_bias ? bias[r] : 0.0, mag = 0.0;
          for (int64_t c = 0; c < cols; ++c) {
            const double w = (static_cast<double>(codes[r * cols + c]) - zero[r]) * scale[r];
            want += w * x[t * cols + c];
            mag += std::fabs(w * x[t * cols + c]);
          }
          const double got = y[t * rows + r];
          if (!(std::fabs(got - want) <= 1e-6 * (mag + 1.0) * std::sqrt(double(cols)))) {
            std::fprintf(stderr, "bits=%d rows=%lld cols=%lld ntok=%lld t=%lld r=%lld: %.9g vs %.9g\n", bits,
                         (long long)rows, (long long)cols, (long long)ntok, (long long)t, (long long)r, got,
                         want);
            return 1;
          }
        }
    }
  }
  return 0;
}

}  // namespace

int main() {
  // One row and one column; rows not a multiple of the GEMV's 4 warps or the 64-row
  // tile; columns not a multiple of a packed block (128 / 64 codes) or the 16-column
  // K tile; more than one 64-token tile.
  for (int bits : {2, 4}) {
    CHECK(check_layer(bits, 1, 1, 1) == 0);
    CHECK(check_layer(bits, 5, 131, 2) == 0);
    CHECK(check_layer(bits, 70, 300, 3) == 0);
  }
  // Empty inputs launch nothing.
  CHECK_LAUNCH(ptqx::cuda::lowbit_linear(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 8, 2, nullptr,
                                         nullptr));
  // More than 65535 * 64 tokens: the tiled kernel's token tiles (gridDim.y) would pass the
  // device's 65535 (a launch error, where the CPU kernel takes any batch). Checked on the
  // launch configurations only: running 130k blocks would take the emulation hours.
  {
    const int64_t ntok = int64_t{65535} * 64 * 2 + 5, rows = 3, cols = 1;
    std::vector<float> x(ntok * cols), y(ntok * rows), scale(rows, 1.f), zero(rows, 0.f);
    std::vector<uint8_t> packed(rows * lb::row_bytes(cols, 2), 0);
    ptqx_emu::ConfigOnly only;
    CHECK_LAUNCH(ptqx::cuda::lowbit_linear(x.data(), packed.data(), scale.data(), zero.data(), nullptr, ntok,
                                           rows, cols, 2, y.data(), nullptr));
    int64_t tiles = 0;
    for (const auto& l : ptqx_emu::g_launches) {
      CHECK(l.grid.x == 1 && l.grid.y <= 65535 && l.block.x == 256);
      tiles += l.grid.y;
    }
    CHECK(ptqx_emu::g_launches.size() == 3 && tiles == (ntok + 63) / 64);
  }
  std::puts("test_emu_lowbit: ok");
  return 0;
}
