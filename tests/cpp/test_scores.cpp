// C++ unit test of the torch-free LiRA score kernel (built by CMakeLists.txt, run by ctest).
#include <cmath>
#include <cstdio>
#include <vector>

#include "ptqx/scores.h"

#include "check.h"

int main() {
  // Hand-worked rows: three equal classes -> -log 2; extreme gaps stay finite.
  const std::vector<float> z = {0.f, 0.f, 0.f, 1e4f, -1e4f, 0.f, -1e4f, 1e4f, 0.f};
  const std::vector<int64_t> y = {1, 0, 0};
  std::vector<double> out(3);
  CHECK(ptqx::logit_scores_rows(z.data(), ptqx::LogitDtype::F32, y.data(), 3, 3, out.data()) == 0);
  CHECK(std::fabs(out[0] + std::log(2.0)) < 1e-15);
  CHECK(out[1] == 1e4);
  CHECK(out[2] == -2e4);
  // A long row crossing the 1024-class chunk: compare with a direct float64 sum.
  const int64_t K = 3001;
  std::vector<double> row(K);
  for (int64_t k = 0; k < K; ++k) row[k] = std::sin(0.37 * static_cast<double>(k)) * 20.0;
  const int64_t lab = 2500;
  double m = -INFINITY, s = 0.0;
  for (int64_t k = 0; k < K; ++k) m = (k != lab && row[k] > m) ? row[k] : m;
  for (int64_t k = 0; k < K; ++k) s += k != lab ? std::exp(row[k] - m) : 0.0;
  double got = 0.0;
  CHECK(ptqx::logit_scores_rows(row.data(), ptqx::LogitDtype::F64, &lab, 1, K, &got) == 0);
  const double want = row[lab] - (m + std::log(s));
  CHECK(std::fabs(got - want) <= 1e-12 * std::fabs(want));
  // Out-of-range labels are counted, never read.
  const int64_t bad[2] = {-1, 3};
  CHECK(ptqx::logit_scores_rows(z.data(), ptqx::LogitDtype::F32, bad, 2, 3, out.data()) == 2);
  CHECK(std::isnan(out[0]) && std::isnan(out[1]));
  std::puts("test_scores: ok");
  return 0;
}
