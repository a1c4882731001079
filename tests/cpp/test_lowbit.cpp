// C++ unit test of the torch-free packed low-bit kernels (built by CMakeLists.txt, run by
// ctest). The test executables are built without -march flags, so on x86-64 this runs the
// portable fallback of lowbit.h (no AVX2): the path a CPU without AVX2/FMA takes and the
// Python tests, built with -march=native on AVX2 machines, never reach.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "ptqx/lowbit.h"

#include "check.h"
#include "lowbit_layer.h"

namespace lb = ptqx::lowbit;

namespace {

using ptqx_test::next;

int check_layer(int bits, int64_t rows, int64_t cols, uint64_t seed) {
  const auto [codes, scale, zero, bias] = ptqx_test::random_lowbit_layer(bits, rows, cols, seed);
  // Pack, then unpack: the exact inverse.
  const int64_t rb = lb::row_bytes(cols, bits);
  std::vector<uint8_t> packed(rows * rb), back(rows * cols);
  CHECK(lb::pack_rows(codes.data(), rows, cols, bits, packed.data()) == 0);
  lb::unpack_rows(packed.data(), rows, cols, bits, back.data());
  CHECK(back == codes);

  // Dequantize: (q - z) * s in float, exactly as the reference.
  const int64_t cpad = rb / lb::kBlockBytes * lb::codes_per_block(bits);
  std::vector<float> deq(rows * cpad);
  lb::dequant_rows(packed.data(), rb, bits, 0, rows, scale.data(), zero.data(), deq.data(), cpad);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      CHECK(deq[r * cpad + c] == (static_cast<float>(codes[r * cols + c]) - zero[r]) * scale[r]);

  // GEMV for every token count a pass takes, against a float64 sum; x zero-padded to cpad.
  for (int ntok = 1; ntok <= lb::kGemvMaxTokens; ++ntok) {
    std::vector<float> x(ntok * cpad, 0.f), y(ntok * rows);
    for (int t = 0; t < ntok; ++t)
      for (int64_t c = 0; c < cols; ++c)
        x[t * cpad + c] = static_cast<float>(next(seed) % 2001) / 1000.f - 1.f;
    lb::gemv(packed.data(), rows, cols, bits, scale.data(), zero.data(), bias.data(), x.data(), cpad,
             ntok, y.data(), rows);
    for (int t = 0; t < ntok; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0.0, mag = 0.0;
        for (int64_t c = 0; c < cols; ++c) {
          const double w = (static_cast<double>(codes[r * cols + c]) - zero[r]) * scale[r];
          want += w * x[t * cpad + c];
          mag += std::fabs(w * x[t * cpad + c]);
        }
        want += bias[r];
        // fp32 accumulation over `cols` terms: a few ulps of the summed magnitude.
        CHECK(std::fabs(y[t * rows + r] - want) <= 1e-6 * (mag + 1.0) * std::sqrt(double(cols)));
      }
  }
  return 0;
}

}  // namespace

int main() {
#ifdef PTQX_LOWBIT_AVX2
  std::puts("test_lowbit: built with AVX2/FMA, testing the vector path");
#else
  std::puts("test_lowbit: testing the portable (non-AVX2) path");
#endif
  // Ragged shapes: one row, an odd row count (the GEMV's 2-row tiles leave one), columns
  // not a multiple of the 128 (2-bit) / 64 (4-bit) codes of a packed block.
  for (int bits : {2, 4}) {
    CHECK(check_layer(bits, 1, 1, 1) == 0);
    CHECK(check_layer(bits, 7, 130, 2) == 0);
    CHECK(check_layer(bits, 33, 300, 3) == 0);
    CHECK(check_layer(bits, 64, 1000, 4) == 0);
  }
  std::puts("test_lowbit: ok");
  return 0;
}
