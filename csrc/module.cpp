// Python module entry point for the ahead-of-time build (`import ptqx._C`).
// The ops themselves are registered through TORCH_LIBRARY_IMPL in csrc/cpu and
// csrc/cuda (schemas are defined in ptqx/ops/_library.py); importing this module only
// loads the shared library so those static registrations run. The JIT build loads the
// same library with is_python_module=False and never calls this function.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "ptqx native kernels (ops live in torch.ops.ptqx)", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}
