// Torch-free CPU kernel: leave-one-out LiRA statistics (semantics and fallbacks:
// ptqx/ops/reference.py::lira_loo_stats; LiRA: Carlini et al. 2022, Sec. IV).
//
// For target n and example m the statistics leave out model n and one model of the
// side n is not on (that side's highest-indexed model), so both sides' sizes are the
// same whatever n's membership (see the reference for why that matters).
// For each (example m, view v) the N reference scores are split into IN and OUT by
// keep[:, m] and each side is sorted once. Every target then removes exactly one
// element from each side: itself from its own side (at its sorted position), the
// designated model from the other. So each side needs only its leave-one-out
// statistics, one per element:
// - the median is read at shifted indices of the sorted side: O(1);
// - mean and M2 come from prefix moments of s[0, r) and suffix moments of s(r, k),
//   each accumulated with Welford's update and merged with Chan et al.'s formula
//   M2 = M2_P + M2_Q + d^2 n_P n_Q / (n_P + n_Q). Every term is nonnegative, so unlike
//   "sum of squares minus the removed square" nothing cancels: O(1) per target and as
//   accurate as a two-pass variance.
// Accumulation is in double whatever the input type.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace ptqx {

namespace lira_detail {

// One side (IN or OUT) of one (example, view) column: its scores sorted, and the
// median/mean/std of the side with each element removed in turn.
struct Side {
  std::vector<std::pair<double, int64_t>> items;  // (score, model), sorted
  std::vector<double> s;                          // sorted scores
  std::vector<double> pre_mean, pre_m2;           // moments of s[0, i), i = 0..k
  std::vector<double> suf_mean, suf_m2;           // moments of s[i, k), i = 0..k
  std::vector<double> loo_median, loo_mean, loo_std;  // without s[r], r = 0..k-1

  void reserve(int64_t n) {
    items.reserve(n);
    for (auto* a : {&s, &loo_median, &loo_mean, &loo_std}) a->resize(n);
    for (auto* a : {&pre_mean, &pre_m2, &suf_mean, &suf_m2}) a->resize(n + 1);
  }

  int64_t size() const { return static_cast<int64_t>(items.size()); }

  // Sorts the side, records each model's sorted position in pos[model], and fills the
  // leave-one-out statistics. inv[i] = 1 / i.
  void prepare(int64_t* pos, const double* inv) {
    std::sort(items.begin(), items.end());  // ties broken by model index: deterministic
    const int64_t k = size();
    if (k == 0) return;
    for (int64_t i = 0; i < k; ++i) {
      s[i] = items[i].first;
      pos[items[i].second] = i;
    }
    // Welford in both directions: each prefix/suffix as accurate as a two-pass pass.
    double mu = 0, m2 = 0;
    pre_mean[0] = pre_m2[0] = 0;
    for (int64_t i = 0; i < k; ++i) {
      const double d = s[i] - mu;
      mu += d * inv[i + 1];
      m2 += d * (s[i] - mu);
      pre_mean[i + 1] = mu;
      pre_m2[i + 1] = m2;
    }
    mu = m2 = 0;
    suf_mean[k] = suf_m2[k] = 0;
    for (int64_t i = k - 1; i >= 0; --i) {
      const double d = s[i] - mu;
      mu += d * inv[k - i];
      m2 += d * (s[i] - mu);
      suf_mean[i] = mu;
      suf_m2[i] = m2;
    }
    if (k == 1) return;  // removing the only element leaves nothing to describe
    // Without s[r] the sorted list is y[i] = s[i + (i >= r)]; its median reads the two
    // middle entries of y. Moments: prefix [0, r) merged with suffix (r, k) (Chan).
    const int64_t len = k - 1, lo = (len - 1) / 2, hi = len / 2;
    const double inv_len = inv[len];
    const double* pm = pre_mean.data();
    const double* pv = pre_m2.data();
    const double* sm = suf_mean.data() + 1;
    const double* sv = suf_m2.data() + 1;
    for (int64_t r = 0; r < k; ++r) {
      const double a = s[lo + (r <= lo ? 1 : 0)], b = s[hi + (r <= hi ? 1 : 0)];
      loo_median[r] = (a + b) / 2;
      const double np_ = double(r), nq = double(len - r);
      const double d = sm[r] - pm[r];
      loo_mean[r] = pm[r] + d * (nq * inv_len);
      const double m2r = pv[r] + sv[r] + d * d * (np_ * nq * inv_len);
      loo_std[r] = std::sqrt(m2r * inv_len);
    }
  }
};

struct Stat {
  double median = 0, mean = 0, std = 0;
};

}  // namespace lira_detail

// ref: [n, m, v] row-major; keep: [n, m] (bool); stats: [6, n, m, v] in the order
// median_in, median_out, mean_in, mean_out, std_in, std_out; counts: [2, n, m]
// (IN count, OUT count of the models the statistics use).
template <typename T>
void lira_loo_stats_cpu(const T* ref, const bool* keep, int64_t n, int64_t m, int64_t v, T* stats,
                        int64_t* counts) {
  using lira_detail::Side;
  using lira_detail::Stat;
  const int64_t plane = n * m * v;  // one statistic for all targets
  std::vector<double> inv(n + 2);
  inv[0] = 0;
  for (int64_t i = 1; i < n + 2; ++i) inv[i] = 1.0 / double(i);
#pragma omp parallel if (m * n * v > 4096)
  {
    Side in, out;
    in.reserve(n);
    out.reserve(n);
    std::vector<int64_t> pos(n);
#pragma omp for schedule(static)
    for (int64_t e = 0; e < m; ++e) {
      int64_t k_in = 0, last_in = -1, last_out = -1;
      for (int64_t j = 0; j < n; ++j) {
        const bool kj = keep[j * m + e];
        k_in += kj ? 1 : 0;
        (kj ? last_in : last_out) = j;
      }
      const int64_t k_out = n - k_in;
      // Each side loses one model for every target (itself, or the designated one);
      // a side that is already empty stays empty.
      const int64_t c_in = std::max<int64_t>(k_in - 1, 0), c_out = std::max<int64_t>(k_out - 1, 0);
      for (int64_t j = 0; j < n; ++j) {
        counts[j * m + e] = c_in;
        counts[n * m + j * m + e] = c_out;
      }
      for (int64_t c = 0; c < v; ++c) {
        in.items.clear();
        out.items.clear();
        for (int64_t j = 0; j < n; ++j) {
          const double x = static_cast<double>(ref[(j * m + e) * v + c]);
          (keep[j * m + e] ? in : out).items.emplace_back(x, j);
        }
        in.prepare(pos.data(), inv.data());
        out.prepare(pos.data(), inv.data());
        // Without its designated model the other side's statistics are the same for
        // every target on the opposite side: read them once.
        auto without = [&](const Side& side, int64_t model) {
          const int64_t r = pos[model];
          return Stat{side.loo_median[r], side.loo_mean[r], side.loo_std[r]};
        };
        const Stat in_less = in.size() > 1 ? without(in, last_in) : Stat{};
        const Stat out_less = out.size() > 1 ? without(out, last_out) : Stat{};
        for (int64_t t = 0; t < n; ++t) {
          const bool member = keep[t * m + e];
          const Side& own = member ? in : out;
          const Side& oth = member ? out : in;
          Stat loo, other = member ? out_less : in_less;
          const bool own_empty = own.size() <= 1, other_empty = oth.size() <= 1;
          if (!own_empty) loo = without(own, t);
          // An empty side borrows the other side's statistics (reference.py); both
          // empty leaves zeros.
          if (own_empty) loo = other;
          if (other_empty) other = loo;
          const Stat& si = member ? loo : other;
          const Stat& so = member ? other : loo;
          const int64_t o = (t * m + e) * v + c;
          stats[0 * plane + o] = static_cast<T>(si.median);
          stats[1 * plane + o] = static_cast<T>(so.median);
          stats[2 * plane + o] = static_cast<T>(si.mean);
          stats[3 * plane + o] = static_cast<T>(so.mean);
          stats[4 * plane + o] = static_cast<T>(si.std);
          stats[5 * plane + o] = static_cast<T>(so.std);
        }
      }
    }
  }
}

}  // namespace ptqx
