// Storage dtype of the logits handed to the torch-free score kernels (CPU and CUDA),
// which take raw `const void*` so they need no torch or CUDA half types in their headers.
#pragma once

namespace ptqx {

enum class LogitDtype : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

}  // namespace ptqx
