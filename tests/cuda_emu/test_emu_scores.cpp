// Runs the CUDA LiRA score kernel (csrc/cuda/scores_kernels.cu) under the CPU emulation of
// tests/cuda_emu and compares it with the CPU kernel (ptqx/scores.h) for every logit
// dtype: random rows (f16/bf16 as raw bit patterns, f16 subnormals included), class counts
// around the warp width and across the CPU's 1024-class chunk, row counts around the 8
// rows of a block, labels at the first/last class, +-1e4 and -inf logits, NaN logits,
// labels outside [0, K) and no rows at all.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "emu_test.h"
#include "ptqx/cuda/scores.h"
#include "ptqx/scores.h"

using emu_test::next;
using ptqx::LogitDtype;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

const char* name(LogitDtype dt) {
  switch (dt) {
    case LogitDtype::F32:
      return "f32";
    case LogitDtype::F64:
      return "f64";
    case LogitDtype::F16:
      return "f16";
    case LogitDtype::BF16:
      return "bf16";
  }
  return "?";
}

// [rows, K] logits of one dtype as raw bytes; at() decodes an element with the CPU kernel's
// converters (the CUDA kernel uses the emulation's __half2float/__bfloat162float).
struct Logits {
  LogitDtype dt;
  int64_t rows, K;
  std::vector<unsigned char> bytes;

  Logits(LogitDtype dt_, int64_t rows_, int64_t K_)
      : dt(dt_), rows(rows_), K(K_), bytes(rows_ * K_ * ptqx::detail::logit_size(dt_)) {}

  void put_bits(int64_t i, uint64_t bits) {
    const size_t es = ptqx::detail::logit_size(dt);
    std::memcpy(bytes.data() + i * es, &bits, es);  // little endian: the low bytes
  }
  // v must be +-inf, NaN, or finite within the dtype's range; f16/bf16 keep the bits of v
  // rounded to float32 and truncated (the kernels only have to agree on what is stored).
  void put(int64_t i, double v) {
    if (dt == LogitDtype::F64) {
      uint64_t b;
      std::memcpy(&b, &v, 8);
      return put_bits(i, b);
    }
    const float f = static_cast<float>(v);
    uint32_t b;
    std::memcpy(&b, &f, 4);
    if (dt == LogitDtype::F32) return put_bits(i, b);
    if (dt == LogitDtype::BF16) return put_bits(i, std::isnan(f) ? 0x7fc0u : b >> 16);
    put_bits(i, half_bits(f));
  }
  double at(int64_t i) const {
    double v;
    ptqx::detail::load_f64(bytes.data() + i * ptqx::detail::logit_size(dt), dt, 1, &v);
    return v;
  }
  // Random finite logit: f16/bf16 as random bit patterns (every mantissa bit, f16
  // subnormals, |v| < 64), f32 on a 1/1000 grid in [-20, 20), f64 off that grid.
  void put_random(int64_t i, uint64_t& s) {
    const uint32_t r = next(s);
    if (dt == LogitDtype::F16) return put_bits(i, (r & 0x8000u) | ((r >> 16) % 21u) << 10 | (r & 0x3ffu));
    if (dt == LogitDtype::BF16)
      return put_bits(i, (r & 0x8000u) | (0x60u + (r >> 16) % 0x25u) << 7 | (r & 0x7fu));
    put(i, emu_test::uniform(s, -20.f, 20.f) + (dt == LogitDtype::F64 ? 1e-7 * (r % 997) : 0.0));
  }

  static uint16_t half_bits(float f) {  // truncating float32 -> binary16 for |f| < 65520
    if (std::isnan(f)) return 0x7e00u;
    uint32_t b;
    std::memcpy(&b, &f, 4);
    const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
    if (std::isinf(f)) return sign | 0x7c00u;
    const int e = static_cast<int>((b >> 23) & 0xffu) - 127;
    if (e < -24) return sign;
    const uint32_t mant = (b & 0x7fffffu) | 0x800000u;
    if (e < -14) return sign | static_cast<uint16_t>(mant >> (-e - 14 + 13));  // subnormal half
    return sign | static_cast<uint16_t>((e + 15) << 10) | static_cast<uint16_t>((mant >> 13) & 0x3ffu);
  }
};

// Runs both kernels on (z, labels) and compares row by row. Both take the label's logit
// minus m + log(s), s = sum over k != y of exp(z_k - m), in float64; they differ only in
// the order of the sum (the CUDA kernel sums 32 lane-strided partials, each rescaled
// whenever its max grows, and merges them in a tree; the CPU kernel goes through the row
// in order). Every exp, add and rescale rounds by <= ~1 ulp relative to s >= 1, so each
// kernel's log(s) is within ~3K eps of the exact one and the two within ~6K eps (16K eps
// allowed); m + log(s) and z_y - lse then round relative to magnitudes below
// 2 max|z| + log K and |score| (12 max|z| eps and 4 |score| eps allowed).
int check(const Logits& z, const std::vector<int64_t>& labels, const char* what) {
  const int64_t rows = z.rows, K = z.K;
  std::vector<double> want(rows), got(rows, -12345.0);
  int64_t bad = 0;
  for (int64_t y : labels) bad += (y < 0 || y >= K);
  CHECK(ptqx::logit_scores_rows(z.bytes.data(), z.dt, labels.data(), rows, K, want.data()) == bad);
  CHECK_LAUNCH(
      ptqx::cuda::logit_scores_rows(z.bytes.data(), z.dt, labels.data(), rows, K, got.data(), nullptr));
  for (int64_t r = 0; r < rows; ++r) {
    double amax = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const double v = std::fabs(z.at(r * K + k));
      if (std::isfinite(v)) amax = v > amax ? v : amax;
    }
    const double tol = 4 * DBL_EPSILON * (4.0 * static_cast<double>(K) + 3 * amax + std::fabs(want[r]) + 1.0);
    const bool same = std::isnan(want[r]) ? std::isnan(got[r])
                      : std::isinf(want[r]) ? got[r] == want[r]
                                             : std::fabs(got[r] - want[r]) <= tol;
    if (!same) {
      std::fprintf(stderr, "%s %s rows=%lld K=%lld r=%lld label=%lld: cuda %.17g, cpu %.17g\n", what,
                   name(z.dt), (long long)rows, (long long)K, (long long)r, (long long)labels[r], got[r],
                   want[r]);
      return 1;
    }
  }
  return 0;
}

int check_random(LogitDtype dt, int64_t rows, int64_t K, uint64_t seed) {
  Logits z(dt, rows, K);
  std::vector<int64_t> y(rows);
  for (int64_t i = 0; i < rows * K; ++i) z.put_random(i, seed);
  for (int64_t r = 0; r < rows; ++r) y[r] = r == 0 ? 0 : (r == rows - 1 ? K - 1 : next(seed) % K);
  return check(z, y, "random");
}

// Rows with extreme and non-finite logits, each row paired with its label.
int check_special(LogitDtype dt, uint64_t seed) {
  constexpr int64_t K = 37;  // lanes 0..4 see two classes, the others one
  std::vector<std::vector<std::pair<int64_t, double>>> rows;  // (class, value) overrides
  std::vector<int64_t> y;
  auto row = [&](int64_t label, std::vector<std::pair<int64_t, double>> set) {
    y.push_back(label);
    rows.push_back(std::move(set));
  };
  row(0, {{0, 1e4}});                        // dominant label: score ~ 1e4 - max
  row(K - 1, {{K - 1, -1e4}});               // hopeless label
  row(3, {{5, 1e4}, {36, -1e4}});            // another class dominates
  row(4, {{4, -kInf}});                      // label logit -inf: score -inf
  row(1, {{2, -kInf}, {33, -kInf}, {0, -kInf}});  // some other classes -inf
  row(7, {});                                // (filled below: every other class -inf)
  row(0, {{0, kNaN}});                       // NaN label logit
  row(0, {{1, kNaN}});                       // NaN before any finite value of lane 1
  row(0, {{33, kNaN}});                      // NaN after lane 1's finite value
  row(10, {{10, kNaN}, {11, -kInf}});
  row(0, {{20, kNaN}});                      // lane 20's only class NaN
  row(36, {{0, 1e4}, {1, 1e4}, {2, -1e4}});  // two equal maxima
  // +inf in another class: both kernels give NaN (inf - inf in the exp-sum), although
  // the reference's logsumexp gives +inf and so a score of -inf; the op's wrapper rejects
  // non-finite logits, so only the agreement of the two kernels is checked.
  row(2, {{30, kInf}});
  row(2, {{1, kInf}, {34, 5.0}});
  const int64_t n = static_cast<int64_t>(rows.size());
  Logits z(dt, n, K);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t k = 0; k < K; ++k) z.put_random(r * K + k, seed);
    for (auto [k, v] : rows[r]) z.put(r * K + k, v);
  }
  for (int64_t k = 0; k < K; ++k)
    if (k != 7) z.put(5 * K + k, -kInf);
  if (int rc = check(z, y, "special")) return rc;
  // Both kernels agree above; these pin the reference's values (logit_scores in
  // ptqx/ops/reference.py), which no summation order may change.
  std::vector<double> out(n);
  CHECK_LAUNCH(ptqx::cuda::logit_scores_rows(z.bytes.data(), dt, y.data(), n, K, out.data(), nullptr));
  CHECK(out[3] == -kInf);
  CHECK(out[5] == kInf);  // logsumexp over nothing but -inf is -inf
  for (int r : {6, 7, 8, 9, 10}) CHECK(std::isnan(out[r]));
  CHECK(out[0] > 9000.0 && out[1] < -9000.0 && out[2] < -9000.0);
  return 0;
}

}  // namespace

int main() {
  for (LogitDtype dt : {LogitDtype::F32, LogitDtype::F64, LogitDtype::F16, LogitDtype::BF16}) {
    // One class (nothing but the label: +inf on both), two classes; K below, at and just
    // above the warp width and prime; rows not a multiple of the 8 rows of a block, one
    // row, several blocks.
    CHECK(check_random(dt, 1, 1, 11) == 0);
    CHECK(check_random(dt, 3, 2, 12) == 0);
    CHECK(check_random(dt, 9, 31, 13) == 0);
    CHECK(check_random(dt, 8, 32, 14) == 0);
    CHECK(check_random(dt, 17, 33, 15) == 0);
    CHECK(check_random(dt, 1, 97, 16) == 0);
    CHECK(check_random(dt, 23, 10, 17) == 0);
    CHECK(check_random(dt, 2, 1031, 18) == 0);  // crosses the CPU kernel's 1024-class chunk
    CHECK(check_special(dt, 19) == 0);
  }
  // Hand-worked rows in float64: three equal classes -> -log 2; extreme gaps stay exact.
  {
    const std::vector<double> z = {0, 0, 0, 1e4, -1e4, 0, -1e4, 1e4, 0};
    const std::vector<int64_t> y = {1, 0, 0};
    std::vector<double> out(3);
    CHECK_LAUNCH(
        ptqx::cuda::logit_scores_rows(z.data(), LogitDtype::F64, y.data(), 3, 3, out.data(), nullptr));
    CHECK(std::fabs(out[0] + std::log(2.0)) < 1e-15);
    CHECK(out[1] == 1e4);
    CHECK(out[2] == -2e4);
  }
  // Labels outside [0, K) give NaN and are never used as an index (AddressSanitizer
  // would report the read); the rows between them are unaffected.
  {
    constexpr int64_t rows = 6, K = 5;
    uint64_t seed = 21;
    Logits z(LogitDtype::F32, rows, K);
    for (int64_t i = 0; i < rows * K; ++i) z.put_random(i, seed);
    const std::vector<int64_t> y = {-1, 2, K, std::numeric_limits<int64_t>::min(), K - 1,
                                    std::numeric_limits<int64_t>::max()};
    CHECK(check(z, y, "bad labels") == 0);
    std::vector<double> out(rows);
    CHECK_LAUNCH(
        ptqx::cuda::logit_scores_rows(z.bytes.data(), z.dt, y.data(), rows, K, out.data(), nullptr));
    for (int64_t r : {0, 2, 3, 5}) CHECK(std::isnan(out[r]));
    CHECK(std::isfinite(out[1]) && std::isfinite(out[4]));
  }
  // No rows: nothing is launched or read.
  for (LogitDtype dt : {LogitDtype::F32, LogitDtype::F64, LogitDtype::F16, LogitDtype::BF16})
    CHECK_LAUNCH(ptqx::cuda::logit_scores_rows(nullptr, dt, nullptr, 0, 10, nullptr, nullptr));
  std::puts("test_emu_scores: ok");
  return 0;
}
