// Runs the CUDA kernel of the leave-one-out LiRA statistics (csrc/cuda/lira_kernels.cu)
// under the CPU emulation of tests/cuda_emu and compares it with the CPU kernel
// (ptqx/lira.h), in float and double: the counts and medians exactly, the means and
// stds to a bound on the summation order (see close()). Covers one model (every
// statistic 0), sides of one model (borrowed statistics), examples IN or OUT for every
// model, tied scores, more models than the kernel's 256 threads, and the most models the
// binding allows (kLiraMaxModels), whose dynamic shared memory must fit the 48 KiB a
// launch gets without an opt-in (the emulator refuses a launch that asks for more).
// Scores are finite only: the op requires it (reference.py), and the CPU kernel's sort
// has no defined order for NaN.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <vector>

#include "emu_test.h"
#include "ptqx/cuda/lira.h"
#include "ptqx/lira.h"

using emu_test::next;
using emu_test::uniform;

namespace {

const char* const kStatNames[6] = {"median_in", "median_out", "mean_in", "mean_out", "std_in", "std_out"};

// Means and stds: both kernels sum in double from the same n <= 1024 scores, the CUDA one
// in two passes over the sorted side, the CPU one with Welford prefix/suffix moments
// merged by Chan's formula. Each mean is then within about n * eps * max|x| of the exact
// one; an error d in the mean adds len * d^2 to M2, so a std can be off by sqrt(len) * d
// ~ n^1.5 * eps * max|x| (more than n * eps where the std is ~0, e.g. tied scores). The
// cast to T can then round the two doubles to neighbouring values: one ulp of T. Wrong
// indexing or a missed element errs by about the scores' spread / n, far more.
template <typename T>
bool close(T got, T want, int64_t n, double scale) {
  const double nn = static_cast<double>(n);
  const double ulp = std::fabs(static_cast<double>(std::nextafter(want, std::numeric_limits<T>::infinity())) -
                               static_cast<double>(want));
  const double tol = 4.0 * nn * (std::sqrt(nn) + 1.0) * DBL_EPSILON * scale + ulp;
  return std::fabs(static_cast<double>(got) - static_cast<double>(want)) <= tol;
}

// Membership of example e: patterns in turn (shifted by `shift`), so every case with 5 or
// more examples holds each: random, IN for every model, OUT for every model, IN for
// exactly one model, OUT for exactly one model.
void fill_keep(bool* keep, int64_t n, int64_t m, int64_t shift, uint64_t& seed) {
  for (int64_t e = 0; e < m; ++e) {
    const int64_t pattern = (e + shift) % 5, lone = static_cast<int64_t>(next(seed) % n);
    for (int64_t j = 0; j < n; ++j) {
      bool in = false;
      switch (pattern) {
        case 0: in = next(seed) & 1; break;
        case 1: in = true; break;
        case 2: in = false; break;
        case 3: in = j == lone; break;
        default: in = j != lone; break;
      }
      keep[j * m + e] = in;
    }
  }
}

// Scores of column (e, c) by kind: spread-out logits, four levels (many ties, so each
// side sorts with equal keys), or a large offset with a small spread (a mean that is
// large next to the std).
template <typename T>
void fill_ref(T* ref, int64_t n, int64_t m, int64_t v, uint64_t& seed) {
  for (int64_t e = 0; e < m; ++e)
    for (int64_t c = 0; c < v; ++c) {
      const int64_t kind = (e * v + c) % 3;
      for (int64_t j = 0; j < n; ++j) {
        double x = uniform(seed, -8.f, 8.f);
        if (kind == 1) x = 0.25 * static_cast<double>(next(seed) % 4) - 1.0;
        if (kind == 2) x = 1000.0 + uniform(seed, -0.5f, 0.5f);
        ref[(j * m + e) * v + c] = static_cast<T>(x);
      }
    }
}

template <typename T>
int check_case(int64_t n, int64_t m, int64_t v, int64_t shift, uint64_t seed) {
  std::vector<T> ref(n * m * v);
  std::unique_ptr<bool[]> keep(new bool[n * m]);  // vector<bool> has no data()
  fill_keep(keep.get(), n, m, shift, seed);
  fill_ref(ref.data(), n, m, v, seed);
  // Marker values: an output the kernel leaves unwritten fails the comparison.
  std::vector<T> stats(6 * n * m * v, T(-777)), want(6 * n * m * v, T(-555));
  std::vector<int64_t> counts(2 * n * m, -1), want_counts(2 * n * m, -2);
  CHECK_LAUNCH(ptqx::cuda::lira_loo_stats<T>(ref.data(), keep.get(), n, m, v, stats.data(), counts.data(),
                                             nullptr));
  ptqx::lira_loo_stats_cpu<T>(ref.data(), keep.get(), n, m, v, want.data(), want_counts.data());
  for (int64_t i = 0; i < 2 * n * m; ++i) {
    if (counts[i] != want_counts[i]) {
      std::fprintf(stderr, "n=%lld m=%lld v=%lld: counts[%lld] = %lld, want %lld\n", (long long)n,
                   (long long)m, (long long)v, (long long)i, (long long)counts[i], (long long)want_counts[i]);
      return 1;
    }
  }
  const int64_t plane = n * m * v;
  for (int64_t e = 0; e < m; ++e)
    for (int64_t c = 0; c < v; ++c) {
      double scale = 0;
      for (int64_t j = 0; j < n; ++j) scale = std::fmax(scale, std::fabs(double(ref[(j * m + e) * v + c])));
      for (int s = 0; s < 6; ++s)
        for (int64_t t = 0; t < n; ++t) {
          const int64_t o = s * plane + (t * m + e) * v + c;
          // Medians average the same two sorted scores in both kernels: exact.
          const bool ok = s < 2 ? stats[o] == want[o] : close(stats[o], want[o], n, scale);
          if (!ok) {
            std::fprintf(stderr, "n=%lld m=%lld v=%lld %s: %s[t=%lld, e=%lld, c=%lld] = %.17g, want %.17g\n",
                         (long long)n, (long long)m, (long long)v, sizeof(T) == 4 ? "float" : "double",
                         kStatNames[s], (long long)t, (long long)e, (long long)c, double(stats[o]),
                         double(want[o]));
            return 1;
          }
        }
    }
  return 0;
}

template <typename T>
int check_all() {
  uint64_t seed = sizeof(T) == 4 ? 0x243F6A8885A308D3ull : 0x13198A2E03707344ull;
  // One model: no other model on either side, every statistic 0.
  CHECK(check_case<T>(1, 3, 2, 0, next(seed) | 1) == 0);
  // Two models: a side of one model loses it when it is the target.
  CHECK(check_case<T>(2, 5, 1, 0, next(seed) | 1) == 0);
  // One example (and one view), IN for every model, then OUT for every model.
  CHECK(check_case<T>(7, 1, 1, 1, next(seed) | 1) == 0);
  CHECK(check_case<T>(7, 1, 1, 2, next(seed) | 1) == 0);
  // Model counts below, at and past a warp (the block rounds n up to whole warps); prime
  // counts of examples and views, every membership pattern; many blocks.
  CHECK(check_case<T>(3, 7, 3, 0, next(seed) | 1) == 0);
  CHECK(check_case<T>(31, 5, 2, 1, next(seed) | 1) == 0);
  CHECK(check_case<T>(32, 5, 2, 3, next(seed) | 1) == 0);
  CHECK(check_case<T>(33, 6, 1, 2, next(seed) | 1) == 0);
  CHECK(check_case<T>(97, 11, 1, 4, next(seed) | 1) == 0);
  CHECK(check_case<T>(5, 53, 4, 0, next(seed) | 1) == 0);
  // At and past the block's 256 threads: each thread then ranks and describes several
  // models.
  CHECK(check_case<T>(256, 5, 1, 0, next(seed) | 1) == 0);
  CHECK(check_case<T>(257, 5, 1, 2, next(seed) | 1) == 0);
  CHECK(check_case<T>(613, 5, 2, 4, next(seed) | 1) == 0);
  // The most models the binding passes (its dynamic shared memory: n * 29 bytes).
  CHECK(check_case<T>(ptqx::cuda::kLiraMaxModels, 2, 1, 0, next(seed) | 1) == 0);
  return 0;
}

}  // namespace

int main() {
  CHECK(check_all<float>() == 0);
  CHECK(check_all<double>() == 0);
  // Beyond the limit the launcher refuses (the binding raises first) and writes nothing.
  {
    const int64_t n = ptqx::cuda::kLiraMaxModels + 1;
    std::vector<double> ref(n, 0.5), stats(6 * n, -1.0);
    std::unique_ptr<bool[]> keep(new bool[n]());
    std::vector<int64_t> counts(2 * n, -1);
    CHECK(ptqx::cuda::lira_loo_stats<double>(ref.data(), keep.get(), n, 1, 1, stats.data(), counts.data(),
                                             nullptr) == cudaErrorInvalidValue);
    CHECK(stats == std::vector<double>(6 * n, -1.0) && counts == std::vector<int64_t>(2 * n, -1));
  }
  // No column to describe: nothing launched (with v == 0 the binding fills the counts).
  CHECK_LAUNCH(ptqx::cuda::lira_loo_stats<float>(nullptr, nullptr, 0, 4, 2, nullptr, nullptr, nullptr));
  CHECK_LAUNCH(ptqx::cuda::lira_loo_stats<float>(nullptr, nullptr, 4, 0, 2, nullptr, nullptr, nullptr));
  CHECK_LAUNCH(ptqx::cuda::lira_loo_stats<double>(nullptr, nullptr, 4, 3, 0, nullptr, nullptr, nullptr));
  std::puts("test_emu_lira: ok");
  return 0;
}
