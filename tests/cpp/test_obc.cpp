// C++ unit test of the torch-free OBC kernel (built by CMakeLists.txt, run by ctest):
// the pivot batch is an implementation detail, so every batch size (1 = no lazy folding,
// primes, larger than C) must give the same picks and values in float64, and the picks
// must form a permutation of the columns.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "ptqx/obc.h"

#include "check.h"

int main() {
  const int R = 3, C = 53;
  std::mt19937 g(0);
  std::normal_distribution<double> nd;
  // hinv = inverse of a well-conditioned SPD matrix is awkward without LAPACK; any SPD
  // matrix serves as hinv: M M^T / C + I.
  std::vector<double> M(C * C), H(C * C, 0.0), W(R * C);
  for (auto& x : M) x = nd(g);
  for (int i = 0; i < C; ++i)
    for (int j = 0; j < C; ++j) {
      double acc = i == j ? 1.0 : 0.0;
      for (int k = 0; k < C; ++k) acc += M[i * C + k] * M[j * C + k] / C;
      H[i * C + j] = acc;
    }
  for (auto& x : W) x = 0.1 * nd(g);
  std::vector<float> scale(R, 0.05f), zero(R, 2.f);
  std::vector<double> q0(R * C), q1(R * C);
  std::vector<int64_t> o0(R * C), o1(R * C);
  ptqx::obc_quantize_rows<double>(W.data(), H.data(), scale.data(), zero.data(), R, C, 3,
                                  q0.data(), o0.data(), 1);
  for (int64_t batch : {2, 7, 16, 53, 64}) {
    ptqx::obc_quantize_rows<double>(W.data(), H.data(), scale.data(), zero.data(), R, C, 3,
                                    q1.data(), o1.data(), batch);
    for (int i = 0; i < R * C; ++i) CHECK(q0[i] == q1[i] && o0[i] == o1[i]);
  }
  for (int r = 0; r < R; ++r) {
    std::vector<int> seen(C, 0);
    for (int k = 0; k < C; ++k) seen[o0[r * C + k]]++;
    for (int c = 0; c < C; ++c) CHECK(seen[c] == 1);
    for (int c = 0; c < C; ++c) {  // every value on the row's grid
      const double code = q0[r * C + c] / scale[r] + zero[r];
      CHECK(std::fabs(code - std::nearbyint(code)) < 1e-9 && code >= 0 && code <= 3);
    }
  }
  std::puts("test_obc: ok");
  return 0;
}
