"""Loading the native kernels: an ahead-of-time ``ptqx._C`` if present, else a JIT build.

The JIT build compiles ``csrc/`` with ninja through ``torch.utils.cpp_extension.load``
into a cache folder that outlives the process (``PTQX_BUILD_DIR`` or
``~/.cache/ptqx/<python>-<torch>-<cpu|cuXY>-<source-path hash>[-<host CPU hash>]``).
torch hashes the sources and flags, so a changed source is rebuilt and an unchanged one is
reused. The flags say ``-march=native`` whatever the CPU, so a JIT build's folder also
names the host CPU: a home directory shared by machines of different CPU generations
(a cluster) must not hand an AVX-512 build to an AVX2-only node, where it would die of
SIGILL on the first op.

Switches (environment):
- ``PTQX_DISABLE_NATIVE=1``: do not load native kernels; every op runs its reference.
- ``PTQX_REQUIRE_NATIVE=1``: a failed native build raises instead of falling back (CI).
- ``PTQX_VERBOSE_BUILD=1``: show compiler output.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import _sources


@dataclass
class NativeStatus:
    loaded: bool = False
    how: str = "not attempted"  # "aot", "jit", "disabled", "failed"
    cuda: bool = False
    error: str | None = None
    build_dir: str | None = None
    sources: list[str] = field(default_factory=list)


STATUS = NativeStatus()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _cuda_wanted() -> bool:
    if _env_flag("PTQX_NO_CUDA") or not torch.cuda.is_available():
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME is not None


def host_cpu_id(cpuinfo: str | None = None) -> str:
    """What ``-march=native`` resolves from: the CPU's vendor, family, model and features.

    Read from ``/proc/cpuinfo`` (``cpuinfo`` lets tests pass its text); where there is
    none, the platform's machine and processor names stand in.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    keys = ("vendor_id", "cpu family", "model", "flags", "CPU implementer", "CPU part", "Features")
    first_cpu = cpuinfo.split("\n\n", 1)[0]
    fields = []
    for line in first_cpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            # Feature lists are sets: the kernel may print them in another order.
            words = value.split()
            fields.append(
                f"{key.strip()}={' '.join(sorted(words)) if len(words) > 1 else value.strip()}"
            )
    if not fields:
        import platform

        fields = [platform.machine(), platform.processor()]
    return hashlib.sha1("\n".join(sorted(fields)).encode()).hexdigest()[:8]


def default_build_dir(root: Path, with_cuda: bool) -> Path:
    override = os.environ.get("PTQX_BUILD_DIR")
    if override:
        return Path(override)
    flavour = f"cu{torch.version.cuda.replace('.', '')}" if with_cuda else "cpu"
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:10]
    if "-march=native" in _sources.cpu_arch_flags(jit=True):
        tag += f"-{host_cpu_id()}"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "ptqx" / f"{py}-torch{torch.__version__.split('+')[0]}-{flavour}-{tag}"


def _jit_build() -> None:
    from torch.utils import cpp_extension

    root = _sources.csrc_root()
    with_cuda = _cuda_wanted()
    sources = _sources.cpu_sources(root)
    if with_cuda:
        sources += _sources.cuda_sources(root)
    build_dir = default_build_dir(root, with_cuda)
    build_dir.mkdir(parents=True, exist_ok=True)
    STATUS.build_dir = str(build_dir)
    STATUS.sources = [str(p.relative_to(root)) for p in sources]
    verbose = _env_flag("PTQX_VERBOSE_BUILD")
    if not (build_dir / "ptqx_native.so").exists() and not verbose:
        print("ptqx: compiling native kernels (first use; about a minute)...", file=sys.stderr)
    cpp_extension.load(
        name="ptqx_native",
        sources=[str(p) for p in sources],
        extra_cflags=_sources.cxx_flags(jit=True) + (["-DPTQX_WITH_CUDA=1"] if with_cuda else []),
        extra_cuda_cflags=_sources.nvcc_flags() if with_cuda else None,
        extra_ldflags=["-fopenmp"],
        extra_include_paths=[str(p) for p in _sources.include_dirs(root)],
        build_directory=str(build_dir),
        with_cuda=with_cuda,
        is_python_module=False,
        verbose=verbose,
    )
    STATUS.cuda = with_cuda


def _has_cuda_kernels() -> bool:
    """Whether the loaded library registered CUDA kernels (an AOT build has them when it
    was built with a CUDA torch and nvcc); asked of one op, since all are built together."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("ptqx::logit_scores", "CUDA")
    except RuntimeError:  # schema not defined yet: the library registered nothing for it
        return False


def load_native() -> NativeStatus:
    """Load the native kernels once per process; safe to call repeatedly."""
    if STATUS.how != "not attempted":
        return STATUS
    if _env_flag("PTQX_DISABLE_NATIVE"):
        STATUS.how = "disabled"
        return STATUS
    try:
        importlib.import_module("ptqx._C")
        STATUS.loaded, STATUS.how = True, "aot"
        STATUS.cuda = _has_cuda_kernels()
        return STATUS
    except ImportError:
        pass
    try:
        _jit_build()
        STATUS.loaded, STATUS.how = True, "jit"
    except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
        STATUS.how, STATUS.error = "failed", f"{type(exc).__name__}: {exc}"
        if _env_flag("PTQX_REQUIRE_NATIVE"):
            raise RuntimeError(
                "ptqx: PTQX_REQUIRE_NATIVE=1 but the native kernels failed to build: "
                f"{STATUS.error}"
            ) from exc
        warnings.warn(
            "ptqx: native kernels unavailable, every op runs its pure-PyTorch reference "
            f"(slow). Reason: {STATUS.error.splitlines()[0][:300]} "
            "(set PTQX_VERBOSE_BUILD=1 for the compiler output)",
            RuntimeWarning,
            stacklevel=2,
        )
    return STATUS
