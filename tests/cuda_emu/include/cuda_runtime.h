// Stand-in for the CUDA runtime header in the CPU emulation build (see ptqx_cuda_emu.h).
#pragma once
#include "ptqx_cuda_emu.h"
