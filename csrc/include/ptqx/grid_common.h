// Grid-search candidate arithmetic shared by the CPU kernel (grid_search.h) and the
// CUDA kernel (csrc/cuda/grid_kernels.cu), so both rank exactly the float32
// (scale, zero) pairs of the reference (ptqx/ops/reference.py: grid_range, grid_search,
// after IST-DASLab/OBC quant.py Quantizer.find_params).
#pragma once

#include <cmath>

#include "ptqx/no_contract.h"

#if defined(__CUDACC__)
#define PTQX_HD __host__ __device__ __forceinline__
#else
#define PTQX_HD inline
#endif

namespace ptqx {

// Rounded product that the compiler may not fuse into a following add/sub. GCC contracts
// `a*b - c` into an FMA even in ISO C++ mode, and nvcc does by default; either would make
// a candidate's scale differ by an ulp from the reference, which evaluates every torch op
// separately.
PTQX_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return no_contract(a * b);
#endif
}

struct GridOptions {
  int maxq;
  bool symmetric;
  bool include_zero;
  float norm;
  int grid;
  int steps;
};

// Middle code of the symmetric grid (reference.symmetric_zero).
PTQX_HD float symmetric_zero(int maxq) { return static_cast<float>((maxq + 1) / 2); }

// Range before shrinking, from the row's min/max rounded to float32 (reference.grid_range).
PTQX_HD void grid_range(float xmin, float xmax, bool symmetric, bool include_zero, float& lo,
                        float& hi) {
  if (include_zero) {
    xmin = xmin < 0.f ? xmin : 0.f;
    xmax = xmax > 0.f ? xmax : 0.f;
  }
  if (symmetric) {
    const float a = fabsf(xmin);
    xmax = a > xmax ? a : xmax;
    if (xmin < 0.f) xmin = -xmax;
  }
  if (xmin == 0.f && xmax == 0.f) {
    lo = -1.f;
    hi = 1.f;
  } else if (xmin == xmax) {  // constant row c != 0: span c and 0 so c is on the grid
    lo = xmin < 0.f ? xmin : 0.f;
    hi = xmax > 0.f ? xmax : 0.f;
  } else {
    lo = xmin;
    hi = xmax;
  }
}

// Candidate i: p = float32(1 - i / grid) (Python computes 1 - i/grid in double, torch
// rounds the scalar to float32), then scale = (p*hi - p*lo) / maxq and
// zero = round_half_even(-p*lo / scale), all in float32.
PTQX_HD void grid_candidate(float lo, float hi, int i, const GridOptions& o, float& scale,
                            float& zero) {
  const float p = static_cast<float>(1.0 - static_cast<double>(i) / static_cast<double>(o.grid));
  const float lo1 = mul_rn(p, lo), hi1 = mul_rn(p, hi);
  scale = (hi1 - lo1) / static_cast<float>(o.maxq);
  zero = o.symmetric ? symmetric_zero(o.maxq) : nearbyintf(-lo1 / scale);
}

}  // namespace ptqx
