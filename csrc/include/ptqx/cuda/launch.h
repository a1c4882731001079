// Host-side launchers of the torch-free CUDA kernels in csrc/cuda/*.cu.
// The .cu files include only this header and the CUDA runtime, so CI (no GPU, no
// torch CUDA build) can compile them with plain `nvcc -c -arch=sm_90`; the ATen
// bindings in csrc/cuda/*.cpp call these with raw pointers and the current stream.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace ptqx::cuda {

// Returns the launch error (cudaSuccess when fine); the binding turns it into TORCH_CHECK.
template <typename T>
cudaError_t fake_quant_rows(const T* w, const float* scale, const float* zero, int64_t rows,
                            int64_t cols, int maxq, T* out, cudaStream_t stream);

template <typename T>
cudaError_t quantize_codes_rows(const T* w, const float* scale, const float* zero, int64_t rows,
                                int64_t cols, int maxq, uint8_t* out, cudaStream_t stream);

}  // namespace ptqx::cuda
