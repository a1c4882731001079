"""Which native sources make up the ptqx extension, and the flags they build with.

Torch-free on purpose: ``setup.py`` loads this file by path (before torch or ptqx can
be imported) so the ahead-of-time build and the JIT build compile exactly the same
sources with the same flags.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def csrc_root() -> Path:
    """The folder holding the C++/CUDA sources.

    In a source checkout or an editable install that is ``<repo>/csrc``; in a regular
    install setup.py ships the same tree as ``ptqx/_csrc``.
    """
    for candidate in (_PACKAGE_DIR.parent / "csrc", _PACKAGE_DIR / "_csrc"):
        if (candidate / "cpu").is_dir():
            return candidate
    raise FileNotFoundError(
        "ptqx: native sources not found (looked for csrc/ next to the package and "
        f"ptqx/_csrc inside it, under {_PACKAGE_DIR}); reinstall ptqx"
    )


def cpu_sources(root: Path) -> list[Path]:
    """Every C++ translation unit of the CPU build (kernels + op registration)."""
    return sorted(root.glob("*.cpp")) + sorted((root / "cpu").glob("*.cpp"))


def cuda_sources(root: Path) -> list[Path]:
    """CUDA translation units: torch-free kernel bodies (.cu) and ATen bindings (.cpp)."""
    return sorted((root / "cuda").glob("*.cu")) + sorted((root / "cuda").glob("*.cpp"))


def cpu_arch_flags(jit: bool) -> list[str]:
    """Target-CPU flags.

    A JIT build runs on the machine that compiles it, so ``-march=native`` is safe and
    lets the compiler use AVX2/AVX-512/VNNI where present. An ahead-of-time build may be
    copied elsewhere, so it targets a portable x86-64-v3 (AVX2+FMA) baseline unless
    ``PTQX_CPU_ARCH`` says otherwise (e.g. ``native`` or ``x86-64-v4``).
    """
    arch = os.environ.get("PTQX_CPU_ARCH", "native" if jit else "x86-64-v3")
    if arch in ("", "none"):
        return []
    return [f"-march={arch}"]


def cxx_flags(jit: bool) -> list[str]:
    # -fopenmp: kernels parallelise over rows with OpenMP, the same runtime torch's CPU
    # build uses, so thread counts follow torch.set_num_threads.
    return ["-O3", "-fopenmp", "-DPTQX_NATIVE=1", *cpu_arch_flags(jit)]


def nvcc_flags() -> list[str]:
    archs = os.environ.get("PTQX_CUDA_ARCHS", "80;90").split(";")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a]
    # No --use_fast_math: approximate division would change which code a weight rounds to.
    return ["-O3", "-lineinfo", "-DPTQX_NATIVE=1", *gencode]


def include_dirs(root: Path) -> list[Path]:
    return [root / "include"]
