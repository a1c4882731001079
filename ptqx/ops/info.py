"""Which kernel serves each op: native CPU, native CUDA, or the reference."""

from __future__ import annotations

import platform
import sys

import torch

from . import OP_NAMES, STATUS


def kernel_table() -> dict[str, dict[str, str]]:
    table = {}
    for name in OP_NAMES:
        qual = f"ptqx::{name}"
        row = {}
        for key in ("CPU", "CUDA"):
            native = torch._C._dispatch_has_kernel_for_dispatch_key(qual, key)
            row[key] = f"native {key}" if native else "reference"
        table[name] = row
    return table


def native_ops_missing(device: str = "CPU") -> list[str]:
    return [n for n, row in kernel_table().items() if row[device] == "reference"]


def describe() -> str:
    from torch.utils.cpp_extension import CUDA_HOME

    table = kernel_table()
    width = max(len("op"), *(len(name) for name in table))  # long names stay aligned
    lines = [
        f"ptqx native kernels: {STATUS.how}"
        + (f" ({STATUS.error.splitlines()[0][:200]})" if STATUS.error else ""),
        f"  build dir: {STATUS.build_dir or '-'}",
        f"python {sys.version.split()[0]} on {platform.machine()}, torch {torch.__version__}, "
        f"CUDA runtime {torch.version.cuda or 'none'}, GPU available: {torch.cuda.is_available()}",
        f"  CPU capability (torch): {torch.backends.cpu.get_cpu_capability()}, threads: {torch.get_num_threads()}",
        f"  CUDA_HOME: {CUDA_HOME or 'not found'}",
        "",
        f"{'op':<{width}} {'CPU':<12} {'CUDA':<12}",
    ]
    for name, row in table.items():
        lines.append(f"{name:<{width}} {row['CPU']:<12} {row['CUDA']:<12}")
    return "\n".join(lines)
