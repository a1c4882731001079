// Runs the CUDA uniform-grid kernels (csrc/cuda/grid_kernels.cu) under the CPU emulation of
// tests/cuda_emu and compares them with the CPU kernels (ptqx/grid.h, ptqx/grid_search.h):
// codes and fake-quantized values bit for bit (round half to even, clamping at 0 and
// maxq), and the grid search's (scale, zero) per row, which must be one of the row's
// float32 candidates and may differ from the CPU's choice only where the two candidates'
// errors tie to rounding. float and double weights; one row, one column, primes, columns
// around the 256 threads of a block, all-zero, constant and one-signed rows, no rows.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "emu_test.h"
#include "ptqx/cuda/grid.h"
#include "ptqx/cuda/launch.h"
#include "ptqx/grid.h"
#include "ptqx/grid_search.h"

using emu_test::next;
using emu_test::type_name;
using emu_test::uniform;
using ptqx::GridOptions;

namespace {

// float32 weights lie on a 1/1000 grid; float64 ones get an offset no float32 can hold, so
// the double kernels see values that differ from their float32 rounding.
template <typename T>
T weight(uint64_t& s, float lo, float hi) {
  const T v = static_cast<T>(uniform(s, lo, hi));
  return sizeof(T) == 8 ? v + static_cast<T>(1e-9 * static_cast<double>(next(s) % 1000)) : v;
}

// ---------------------------------------------------------------------------------------
// fake_quant / quantize_codes: the same float32 scale and zero must give the same codes and
// the same dequantized bits (division, nearbyint, clamp, s * (q - z): each rounds once, on
// both sides).

template <typename T>
int check_quant(int64_t rows, int64_t cols, int maxq, uint64_t seed) {
  std::vector<float> scale(rows), zero(rows);
  std::vector<T> w(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    if (r % 2 == 0) {
      // A power-of-two scale and weights on its half-grid: w / s is exact, so every other
      // weight is a tie that nearbyint must round to even; the range reaches past both
      // clamps.
      scale[r] = std::ldexp(1.f, -2 - static_cast<int>(next(seed) % 5));
      zero[r] = static_cast<float>(next(seed) % (maxq + 1));
      for (int64_t c = 0; c < cols; ++c) {
        const int half_steps = static_cast<int>(next(seed) % (4 * maxq + 9)) - (2 * maxq + 4);
        w[r * cols + c] = static_cast<T>(scale[r]) * static_cast<T>(0.5 * half_steps);
      }
    } else {
      scale[r] = uniform(seed, 0.005f, 0.5f);
      zero[r] = static_cast<float>(next(seed) % (maxq + 1)) + (r % 4 == 1 ? 0.f : 0.25f);
      const float span = 1.3f * scale[r] * static_cast<float>(maxq);
      for (int64_t c = 0; c < cols; ++c) w[r * cols + c] = weight<T>(seed, -span, span);
    }
  }
  std::vector<uint8_t> want_codes(rows * cols), codes(rows * cols, 0xAB);
  std::vector<T> want_deq(rows * cols), deq(rows * cols, T(-12345));
  ptqx::quantize_codes_rows<T>(w.data(), scale.data(), zero.data(), rows, cols, maxq, want_codes.data());
  ptqx::fake_quant_rows<T>(w.data(), scale.data(), zero.data(), rows, cols, maxq, want_deq.data());
  CHECK_LAUNCH(ptqx::cuda::quantize_codes_rows<T>(w.data(), scale.data(), zero.data(), rows, cols, maxq,
                                                  codes.data(), nullptr));
  CHECK_LAUNCH(ptqx::cuda::fake_quant_rows<T>(w.data(), scale.data(), zero.data(), rows, cols, maxq,
                                              deq.data(), nullptr));
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (codes[i] != want_codes[i] || std::memcmp(&deq[i], &want_deq[i], sizeof(T)) != 0) {
      std::fprintf(stderr, "quant %s rows=%lld cols=%lld maxq=%d i=%lld w=%.17g s=%.9g z=%.9g: "
                   "code %d vs %d, value %.17g vs %.17g\n", type_name<T>(), (long long)rows,
                   (long long)cols, maxq, (long long)i, (double)w[i], scale[i / cols], zero[i / cols],
                   codes[i], want_codes[i], (double)deq[i], (double)want_deq[i]);
      return 1;
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------
// grid_search

// A row's error for one candidate, in float64 from the exact per-weight errors: the CPU
// kernel's scalar loop, whose only rounding is pow() in float64 and the float64 sum.
template <typename T>
double loss(const T* x, int64_t cols, float s, float z, const GridOptions& o) {
  return ptqx::detail::candidate_error_scalar<T>(x, cols, T(s), T(z), T(o.maxq), o.norm);
}

// How far each kernel's float64 sum of |e|^norm may lie from `loss`, relative (the terms
// are non-negative, so a per-term relative error carries over to the sum). CUDA: for
// norm 2, e*e is exact in float64 and only the summation order differs (< cols * 2^-53);
// otherwise powf rounds each term to float32 (<= 1 ulp = 2^-23 with glibc, which the
// emulation calls). CPU: exact pow in the scalar build; with AVX2, fastmath's float32
// power (< 3e-7, grid_search.h) or the float32 square (2^-24).
double cuda_rel_err(const GridOptions& o) { return (o.norm == 2.f ? 0.0 : 0x1p-23) + 1e-13; }
double cpu_rel_err(const GridOptions& o) {
#if defined(PTQX_HAVE_AVX2)
  return (o.norm == 2.f ? 0x1p-24 : 3e-7) + 1e-13;
#else
  (void)o;
  return 1e-13;
#endif
}

// Compares the CUDA and CPU grid search on rows x cols weights. Each kernel picks the
// first candidate whose (rounded) error is strictly below all earlier ones, so the
// picks can differ only between candidates whose exact errors lie within the two
// kernels' rounding of each other: if CUDA picks g and the CPU c, then
// L(g)(1 - eg) <= L(c)(1 + eg) and L(c)(1 - ec) <= L(g)(1 + ec), so
// |L(g) - L(c)| <= 2 max(eg, ec) max(L(g), L(c)); and L(g) is within 2 eg of the best.
// (A pick outside the candidates, e.g. from a wrong min/max, fails outright.)
template <typename T>
int check_search(const std::vector<T>& w, int64_t rows, int64_t cols, const GridOptions& o,
                 const char* what, int& differing) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> want_s(rows), want_z(rows), got_s(rows, nan), got_z(rows, nan);
  ptqx::grid_search_rows<T>(w.data(), rows, cols, o, want_s.data(), want_z.data());
  CHECK_LAUNCH(
      ptqx::cuda::grid_search_rows<T>(w.data(), rows, cols, o, got_s.data(), got_z.data(), nullptr));
  const int steps = o.steps < 1 ? 1 : o.steps;
  const double eg = cuda_rel_err(o), ec = cpu_rel_err(o);
  for (int64_t r = 0; r < rows; ++r) {
    if (got_s[r] == want_s[r] && got_z[r] == want_z[r]) continue;
    const T* x = w.data() + r * cols;
    // The candidates, as the reference defines them (grid_common.h on the row's min/max).
    T mn = x[0], mx = x[0];
    for (int64_t c = 1; c < cols; ++c) {
      mn = x[c] < mn ? x[c] : mn;
      mx = x[c] > mx ? x[c] : mx;
    }
    float lo, hi;
    ptqx::grid_range(static_cast<float>(mn), static_cast<float>(mx), o.symmetric, o.include_zero, lo, hi);
    int g = -1, c = -1;
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < steps; ++i) {
      float s, z;
      ptqx::grid_candidate(lo, hi, i, o, s, z);
      if (g < 0 && s == got_s[r] && z == got_z[r]) g = i;
      if (c < 0 && s == want_s[r] && z == want_z[r]) c = i;
      const double l = loss(x, cols, s, z, o);
      best = l < best ? l : best;
    }
    bool ok = g >= 0 && c >= 0;
    double lg = std::nan(""), lc = std::nan("");  // printed as nan when not a candidate
    if (ok) {
      lg = loss(x, cols, got_s[r], got_z[r], o);
      lc = loss(x, cols, want_s[r], want_z[r], o);
      const double big = lg > lc ? lg : lc;
      // Errors of exactly 0 carry no rounding: such ties go to the first candidate on both.
      ok = big > 0.0 && std::fabs(lg - lc) <= 2 * (eg > ec ? eg : ec) * big &&
           lg <= best + 2 * eg * big;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "search %s %s rows=%lld cols=%lld maxq=%d sym=%d zero=%d norm=%g steps=%d r=%lld: "
                   "cuda (%.9g, %.9g) = candidate %d, loss %.17g; cpu (%.9g, %.9g) = candidate %d, "
                   "loss %.17g; best %.17g\n",
                   what, type_name<T>(), (long long)rows, (long long)cols, o.maxq, o.symmetric,
                   o.include_zero, o.norm, o.steps, (long long)r, got_s[r], got_z[r], g, lg, want_s[r],
                   want_z[r], c, lc, best);
      return 1;
    }
    ++differing;
  }
  return 0;
}

// Rows of several kinds, cycled by row index.
template <typename T>
std::vector<T> search_rows(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<T> w(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    T* x = w.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c) x[c] = weight<T>(seed, -1.f, 1.f);
    switch (r % 6) {
      case 1:  // one outlier: shrinking the range clips it and wins on the rest
        x[next(seed) % cols] = static_cast<T>(8.5);
        break;
      case 2:  // all positive (the symmetric grid keeps lo = 0), extremes in the last columns
        for (int64_t c = 0; c < cols; ++c) x[c] = std::fabs(x[c]) + T(0.25);
        x[cols - 1] = T(3);
        if (cols > 1) x[cols - 2] = T(0.125);
        break;
      case 3:  // all negative, the minimum beyond the first 256 columns where there are any
        for (int64_t c = 0; c < cols; ++c) x[c] = -std::fabs(x[c]) - T(0.5);
        x[cols > 300 ? 299 : cols - 1] = T(-4);
        break;
      case 4:  // constant (0.375: not 0, so include_zero=false spans [0, 0.375])
        for (int64_t c = 0; c < cols; ++c) x[c] = T(0.375);
        break;
      case 5:  // all zero: the range becomes (-1, 1)
        for (int64_t c = 0; c < cols; ++c) x[c] = T(0);
        break;
      default:
        break;
    }
  }
  return w;
}

template <typename T>
int check_search_random(const GridOptions& o, int64_t rows, int64_t cols, uint64_t seed, int& differing) {
  return check_search<T>(search_rows<T>(rows, cols, seed), rows, cols, o, "random", differing);
}

}  // namespace

int main() {
  // Codes and fake-quant values: one element, one row and one column; n a prime below one
  // block of 256 threads and above several; maxq 1 (1 bit), 2 (ternary), 15 and 255.
  for (int maxq : {1, 2, 15, 255}) {
    CHECK(check_quant<float>(1, 1, maxq, 1) == 0);
    CHECK(check_quant<double>(1, 1, maxq, 2) == 0);
    CHECK(check_quant<float>(1, 257, maxq, 3) == 0);
    CHECK(check_quant<double>(13, 1, maxq, 4) == 0);
    CHECK(check_quant<float>(7, 37, maxq, 5) == 0);
    CHECK(check_quant<double>(6, 131, maxq, 6) == 0);
    CHECK(check_quant<float>(4, 256, maxq, 7) == 0);
  }
  // Hand-worked: 4-bit grid, scale 0.5, zero 8; ties round to even, both clamps.
  {
    const std::vector<float> w = {-10.f, -0.25f, 0.25f, 0.75f, 1.25f, 10.f};
    const float scale = 0.5f, zero = 8.f;
    std::vector<uint8_t> codes(w.size());
    std::vector<float> deq(w.size());
    CHECK_LAUNCH(
        ptqx::cuda::quantize_codes_rows<float>(w.data(), &scale, &zero, 1, 6, 15, codes.data(), nullptr));
    CHECK_LAUNCH(ptqx::cuda::fake_quant_rows<float>(w.data(), &scale, &zero, 1, 6, 15, deq.data(), nullptr));
    CHECK((codes == std::vector<uint8_t>{0, 8, 8, 10, 10, 15}));
    CHECK((deq == std::vector<float>{-4.f, 0.f, 0.f, 1.f, 1.f, 3.5f}));
  }
  // Empty inputs launch nothing.
  CHECK_LAUNCH(ptqx::cuda::fake_quant_rows<float>(nullptr, nullptr, nullptr, 0, 5, 15, nullptr, nullptr));
  CHECK_LAUNCH(
      ptqx::cuda::quantize_codes_rows<double>(nullptr, nullptr, nullptr, 4, 0, 15, nullptr, nullptr));

  // Grid search. Every emulated step costs ~10 ms under AddressSanitizer (three dozen
  // barrier rounds of 256 fibers), so the shapes are few and most searches short.
  // steps = 1 (min/max only) has a single candidate, so the pick must be equal: this
  // pins the block's min/max reductions on every shape.
  int differing = 0;
  const GridOptions minmax{255, false, true, 2.4f, 100, 1}, minmax_sym{15, true, false, 2.f, 100, 1};
  for (int64_t cols : {1, 33, 256, 257, 611})
    CHECK(check_search_random<float>(minmax, 6, cols, 100 + cols, differing) == 0);
  for (int64_t cols : {2, 31, 255, 300})
    CHECK(check_search_random<double>(minmax_sym, 6, cols, 200 + cols, differing) == 0);
  // The MSE search: OBC's (4 bits, asymmetric, norm 2.4, 80 of 100 steps) on a wide row,
  // then shorter searches: symmetric with norm 2 (exact squares), 2 bits without forcing
  // 0 into the range, ternary, 1 bit with a norm below 1.
  const GridOptions obc{15, false, true, 2.4f, 100, 80};
  CHECK(check_search_random<float>(obc, 3, 257, 300, differing) == 0);
  const GridOptions obc16{15, false, true, 2.4f, 20, 16}, sym2{15, true, true, 2.f, 40, 16},
      two_bit{3, false, false, 3.f, 20, 10}, ternary{2, true, true, 2.4f, 10, 10},
      one_bit{1, false, true, 0.5f, 7, 7};
  CHECK(check_search_random<double>(obc16, 6, 37, 301, differing) == 0);
  CHECK(check_search_random<float>(sym2, 6, 33, 302, differing) == 0);
  CHECK(check_search_random<double>(sym2, 6, 2, 303, differing) == 0);
  CHECK(check_search_random<float>(two_bit, 6, 1, 304, differing) == 0);
  CHECK(check_search_random<double>(two_bit, 6, 257, 305, differing) == 0);
  CHECK(check_search_random<float>(ternary, 6, 37, 306, differing) == 0);
  CHECK(check_search_random<double>(one_bit, 6, 31, 307, differing) == 0);
  // A row lying on a 4-bit grid keeps the full range (error 0, later candidates only tie
  // or lose), as in tests/cpp/test_grid.cpp.
  {
    std::vector<float> on_grid(16);
    for (int i = 0; i < 16; ++i) on_grid[i] = 0.25f * static_cast<float>(i - 8);
    float s = 0.f, z = 0.f;
    CHECK_LAUNCH(ptqx::cuda::grid_search_rows<float>(on_grid.data(), 1, 16, obc, &s, &z, nullptr));
    CHECK(s == 0.25f && z == 8.f);
  }
  // Rows without columns get (1, 0) and read nothing; no rows launch nothing.
  {
    std::vector<float> s(3, 0.f), z(3, 5.f);
    CHECK_LAUNCH(ptqx::cuda::grid_search_rows<double>(nullptr, 3, 0, obc, s.data(), z.data(), nullptr));
    CHECK((s == std::vector<float>{1.f, 1.f, 1.f} && z == std::vector<float>{0.f, 0.f, 0.f}));
    CHECK_LAUNCH(ptqx::cuda::grid_search_rows<float>(nullptr, 0, 8, obc, nullptr, nullptr, nullptr));
  }
  std::printf("test_emu_grid: ok (%d rows picked a different candidate of tied error)\n", differing);
  return 0;
}
