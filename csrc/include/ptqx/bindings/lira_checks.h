// Argument checks of the leave-one-out LiRA statistics that do not depend on the device,
// shared by the CPU (csrc/cpu/lira.cpp) and CUDA (csrc/cuda/lira_cuda.cpp) bindings; the CUDA
// binding adds its device check and its limit on the number of models. ATen-dependent:
// bindings only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

namespace ptqx::bindings {

// ref_scores: float32/float64 [N, M, V]; keep: bool [N, M].
inline void check_loo_stats(const at::Tensor& ref, const at::Tensor& keep) {
  TORCH_CHECK(ref.scalar_type() == at::kFloat || ref.scalar_type() == at::kDouble,
              "ref_scores: expected float32 or float64, got ", ref.scalar_type());
  TORCH_CHECK(ref.dim() == 3, "ref_scores: expected shape [N, M, V], got ", ref.sizes());
  TORCH_CHECK(keep.scalar_type() == at::kBool, "keep: expected bool, got ", keep.scalar_type());
  TORCH_CHECK(keep.dim() == 2 && keep.size(0) == ref.size(0) && keep.size(1) == ref.size(1),
              "keep: expected shape [", ref.size(0), ", ", ref.size(1), "], got ", keep.sizes());
}

}  // namespace ptqx::bindings
