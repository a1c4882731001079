// Argument checks of OBC's row-wise quantization that do not depend on the device,
// shared by the CPU (csrc/cpu/obc.cpp) and CUDA (csrc/cuda/obc_cuda.cpp) bindings; the CUDA
// binding checks that the tensors are CUDA tensors first. ATen-dependent: bindings only.
//
// They repeat the Python wrapper's checks (which also check values: finiteness, the
// diagonal of hinv, symmetry) so that direct torch.ops calls fail clearly too.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace ptqx::bindings {

// weight float [R, C], hinv float [C, C], float32 scale/zero [R], maxq in [1, 255].
inline void check_obc(const at::Tensor& weight, const at::Tensor& hinv, const at::Tensor& scale,
                      const at::Tensor& zero, int64_t maxq) {
  TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble,
              "weight: expected float32 or float64, got ", weight.scalar_type());
  TORCH_CHECK(hinv.scalar_type() == at::kFloat || hinv.scalar_type() == at::kDouble,
              "hinv: expected float32 or float64, got ", hinv.scalar_type());
  TORCH_CHECK(weight.dim() == 2, "weight: expected shape [R, C], got ", weight.sizes());
  const int64_t rows = weight.size(0), cols = weight.size(1);
  TORCH_CHECK(hinv.dim() == 2 && hinv.size(0) == cols && hinv.size(1) == cols,
              "hinv: expected shape [", cols, ", ", cols, "], got ", hinv.sizes());
  TORCH_CHECK(scale.scalar_type() == at::kFloat && zero.scalar_type() == at::kFloat,
              "scale/zero: expected float32");
  TORCH_CHECK(scale.dim() == 1 && scale.numel() == rows, "scale: expected shape [", rows,
              "], got ", scale.sizes());
  TORCH_CHECK(zero.dim() == 1 && zero.numel() == rows, "zero: expected shape [", rows,
              "], got ", zero.sizes());
  TORCH_CHECK(maxq >= 1 && maxq <= 255, "maxq: expected [1, 255], got ", maxq);
}

}  // namespace ptqx::bindings
