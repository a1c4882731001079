// Device checks for the CUDA bindings: every tensor argument a CUDA tensor on the device
// of the first one. Without it a CPU tensor or one on another GPU reaches the kernel as a
// raw pointer (an illegal-address fault, or silently wrong reads under peer access)
// instead of an error naming the argument. ATen-dependent, CUDA-header-free.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <utility>

namespace ptqx::bindings {

using NamedTensor = std::pair<const char*, const at::Tensor*>;

// E.g. check_cuda_same_device({{"weight", &weight}, {"hinv", &hinv}}): raises
// "hinv: expected a CUDA tensor on cuda:0 (the device of weight), got one on cpu".
inline void check_cuda_same_device(std::initializer_list<NamedTensor> tensors) {
  if (tensors.size() == 0) return;
  const NamedTensor& first = *tensors.begin();
  TORCH_CHECK(first.second->is_cuda(), first.first, ": expected a CUDA tensor, got one on ",
              first.second->device());
  for (const NamedTensor& t : tensors)
    TORCH_CHECK(t.second->device() == first.second->device(), t.first, ": expected a CUDA tensor on ",
                first.second->device(), " (the device of ", first.first, "), got one on ",
                t.second->device());
}

}  // namespace ptqx::bindings
