// Runs the CUDA AdaRound kernels (csrc/cuda/adaround_kernels.cu) under the CPU emulation of
// tests/cuda_emu and compares them with the CPU kernels (ptqx/adaround.h): the soft-rounded
// weights, the regulariser (per-row tree, then over rows) and the gradient w.r.t. alpha, in
// float32 and float64, for beta = 0 (warm-up) and BRECQ's annealed range, on ragged shapes.
//
// The two sides agree up to rounding, not bit for bit: the CPU float32 path evaluates exp/log with
// Cephes polynomials (the device uses expf/powf), and the regulariser is summed in another order.
// Both form 1.2 sig - 0.1 as a rounded multiply and a rounded add (the device with
// __fmul_rn/__fadd_rn, so nvcc cannot contract them into an FMA, whose single rounding
// moves h at its kinks). The tolerances below are a few ulps of the terms.
// In float64 both sides call the same exp/pow here (the emulation's device math is libm), so
// every element must be bit-identical: that pins the order of each rounded operation, e.g.
// dh = (1.2 sig) (1 - sig) as in the reference, not 1.2 (sig (1 - sig)). On a GPU the
// device's exp/pow may differ from libm's by an ulp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

#include "emu_test.h"
#include "ptqx/adaround.h"
#include "ptqx/cuda/adaround.h"

using emu_test::next;
using emu_test::type_name;
using emu_test::uniform;

namespace {

template <typename T>
int check_adaround(int64_t rows, int64_t cols, int maxq, double beta, double grad_reg, uint64_t seed) {
  const int64_t n = rows * cols;
  const double eps = std::numeric_limits<T>::epsilon();
  std::vector<float> scale(rows), zero(rows);
  for (int64_t r = 0; r < rows; ++r) {
    scale[r] = 0.01f + 0.001f * static_cast<float>(next(seed) % 100);
    zero[r] = static_cast<float>(next(seed) % (maxq + 1));
  }
  // w_floor reaches 2 codes past both ends of the grid (the clamp and its gradient mask); alpha in
  // [-6, 6) puts h in both flat parts of the rectified sigmoid and, at alpha = 0, exactly at 0.5
  // (where the regulariser's gradient is 0).
  std::vector<T> w_floor(n), alpha(n), grad_w(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t z = static_cast<int64_t>(zero[i / cols]);
    w_floor[i] = T(-z - 2 + int64_t(next(seed) % (maxq + 5)));
    alpha[i] = T(uniform(seed, -6.f, 6.f));
    grad_w[i] = T(uniform(seed, -1.f, 1.f));
  }

  // ---- forward
  std::vector<T> want(n), got(n, T(-12345));
  std::vector<double> row_reg(rows, -12345.0);
  T reg = T(-12345);
  const T reg_want = T(ptqx::adaround_forward_rows<T>(w_floor.data(), alpha.data(), scale.data(),
                                                       zero.data(), rows, cols, maxq, T(beta), want.data()));
  CHECK_LAUNCH(ptqx::cuda::adaround_forward_rows<T>(w_floor.data(), alpha.data(), scale.data(), zero.data(),
                                                    rows, cols, maxq, T(beta), got.data(), row_reg.data(),
                                                    &reg, nullptr));
  for (int64_t i = 0; i < n; ++i) {
    const double s = scale[i / cols], z = zero[i / cols];
    // h is off by a few ulps of 1, w_floor + h + z rounds at the magnitude of its terms.
    const double tol = 8 * eps * s * (std::fabs(double(w_floor[i])) + z + 2);
    if (!(std::fabs(double(got[i]) - double(want[i])) <= tol)) {
      std::fprintf(stderr, "%s forward rows=%lld cols=%lld [%lld]: %.17g vs %.17g\n", type_name<T>(),
                   (long long)rows, (long long)cols, (long long)i, double(got[i]), double(want[i]));
      return 1;
    }
  }
  // Each term 1 - d^beta moves by about beta ulps of d when h does; beta == 0 gives exactly 0.
  const double reg_tol = n * (4 * beta + 4) * eps;
  if (!(std::fabs(double(reg) - double(reg_want)) <= reg_tol)) {
    std::fprintf(stderr, "%s reg rows=%lld cols=%lld beta=%g: %.17g vs %.17g\n", type_name<T>(),
                 (long long)rows, (long long)cols, beta, double(reg), double(reg_want));
    return 1;
  }
  if (beta == 0) CHECK(reg == T(0));
  if constexpr (sizeof(T) == 8) {
    for (int64_t i = 0; i < n; ++i) {
      if (got[i] != want[i]) {
        std::fprintf(stderr, "double forward rows=%lld cols=%lld beta=%g [%lld]: %.17g vs %.17g (bitwise)\n",
                     (long long)rows, (long long)cols, beta, (long long)i, double(got[i]), double(want[i]));
        return 1;
      }
    }
  }

  // ---- backward
  std::vector<T> gwant(n), ggot(n, T(-12345));
  const T g_reg = T(grad_reg);
  ptqx::adaround_backward_rows<T>(grad_w.data(), g_reg, w_floor.data(), alpha.data(), scale.data(),
                                  zero.data(), rows, cols, maxq, T(beta), gwant.data());
  CHECK_LAUNCH(ptqx::cuda::adaround_backward_rows<T>(grad_w.data(), &g_reg, w_floor.data(), alpha.data(),
                                                     scale.data(), zero.data(), rows, cols, maxq, T(beta),
                                                     ggot.data(), nullptr));
  const double reg_coef = std::fabs(grad_reg) * beta * 2;
  for (int64_t i = 0; i < n; ++i) {
    // dh/da <= 0.3; (2|h - 0.5|)^(beta - 1) moves by about beta ulps when h does.
    const double mag = std::fabs(double(grad_w[i])) * scale[i / cols] + reg_coef;
    const double tol = (16 * beta + 16) * eps * mag * 0.3;
    if (!(std::fabs(double(ggot[i]) - double(gwant[i])) <= tol)) {
      std::fprintf(stderr, "%s backward rows=%lld cols=%lld beta=%g [%lld]: %.17g vs %.17g\n",
                   type_name<T>(), (long long)rows, (long long)cols, beta, (long long)i, double(ggot[i]),
                   double(gwant[i]));
      return 1;
    }
    if (sizeof(T) == 8 && ggot[i] != gwant[i]) {
      std::fprintf(stderr, "double backward rows=%lld cols=%lld beta=%g [%lld]: %.17g vs %.17g (bitwise)\n",
                   (long long)rows, (long long)cols, beta, (long long)i, double(ggot[i]), double(gwant[i]));
      return 1;
    }
  }
  return 0;
}

template <typename T>
int check_all() {
  uint64_t seed = 1;
  // One element; rows of fewer and of more than the forward block's 256 threads (a thread with
  // no element, one with two), row-major indices of the backward's grid-stride loop spanning
  // rows and blocks (n not a multiple of 256), and more rows than the row-sum block's threads.
  const int64_t shapes[][2] = {{1, 1}, {3, 7}, {2, 256}, {5, 300}, {300, 3}, {17, 61}};
  // 0: warm-up (no regulariser); 1: d^0 in the gradient; BRECQ anneals beta from 20 to 2.
  for (double beta : {0.0, 1.0, 2.0, 7.5, 20.0})
    for (const auto& sh : shapes) {
      const int maxq = (next(seed) % 2) ? 3 : 15;
      const double grad_reg = (next(seed) % 2 ? -1 : 1) * 0.01 * (1 + next(seed) % 100);
      CHECK(check_adaround<T>(sh[0], sh[1], maxq, beta, grad_reg, seed++) == 0);
    }
  // A 1-bit grid and an 8-bit one: the clamp at maxq.
  CHECK(check_adaround<T>(4, 33, 1, 2.0, 0.5, seed++) == 0);
  CHECK(check_adaround<T>(4, 33, 255, 2.0, 0.5, seed++) == 0);
  // Empty: the regulariser is 0 without a row, and with rows of no column (row_reg is cleared).
  CHECK(check_adaround<T>(0, 5, 3, 2.0, 1.0, seed++) == 0);
  CHECK(check_adaround<T>(4, 0, 3, 2.0, 1.0, seed++) == 0);
  return 0;
}

}  // namespace

int main() {
  CHECK(check_all<float>() == 0);
  CHECK(check_all<double>() == 0);
  std::puts("test_emu_adaround: ok");
  return 0;
}
