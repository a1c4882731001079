"""ptqx build script.

Default (``pip install .`` / ``pip install -e .``): pure-Python install, fast, no torch at
build time. The C++/CUDA sources ship inside the package (``ptqx/_csrc``) and are
JIT-compiled with ninja on first import into a per-user cache (see ptqx/ops/_build.py).

Ahead of time (``pip install wheel && PTQX_BUILD_EXT=1 pip install --no-build-isolation .``):
builds the same sources into ``ptqx._C`` with torch's BuildExtension; CUDA sources are
added when torch has CUDA and nvcc is found. ``--no-build-isolation`` is required so the
build uses the torch already installed instead of downloading one; it also means the
environment's own setuptools builds the wheel, hence ``wheel`` (see _require_bdist_wheel).
"""

import importlib.util
import os
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def _load_sources_module():
    spec = importlib.util.spec_from_file_location("_ptqx_sources", HERE / "ptqx/ops/_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_bdist_wheel():
    """--no-build-isolation builds with this environment's setuptools, not pyproject's
    build requirements: a fresh Python 3.11 venv has setuptools 65.5 and no `wheel`, and
    pip then fails with "invalid command 'bdist_wheel'" after compiling nothing."""
    import setuptools

    version = re.match(r"(\d+)\.(\d+)", setuptools.__version__)
    major, minor = (int(v) for v in version.groups()) if version else (0, 0)
    has_wheel = importlib.util.find_spec("wheel") is not None
    if (major, minor) < (70, 1) and not has_wheel:
        raise SystemExit(
            f"PTQX_BUILD_EXT=1 with --no-build-isolation needs bdist_wheel, which setuptools "
            f"{setuptools.__version__} only has with the `wheel` package: run "
            "`pip install wheel` (or `pip install 'setuptools>=70.1'`) first"
        )


def _extensions():
    if os.environ.get("PTQX_BUILD_EXT", "0") != "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as exc:  # pragma: no cover - build-time message
        raise SystemExit(
            "PTQX_BUILD_EXT=1 needs torch installed first and --no-build-isolation "
            f"(import failed: {exc})"
        ) from exc
    _require_bdist_wheel()
    src = _load_sources_module()
    root = HERE / "csrc"
    sources = [str(p.relative_to(HERE)) for p in src.cpu_sources(root)]
    use_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    use_cuda = use_cuda and os.environ.get("PTQX_BUILD_CUDA", "1") != "0"
    extra = {"cxx": src.cxx_flags(jit=False)}
    if use_cuda:
        sources += [str(p.relative_to(HERE)) for p in src.cuda_sources(root)]
        extra["nvcc"] = src.nvcc_flags()
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension
    ext = ext_cls(
        name="ptqx._C",
        sources=sources,
        include_dirs=[str(p) for p in src.include_dirs(root)],
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        define_macros=[("PTQX_WITH_CUDA", "1")] if use_cuda else [],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="ptqx",
    version="0.1.0",
    description=(
        "Fast post-training quantization (RTN, GPTQ, OBC, AdaRound, BRECQ; 8 to 1.58 bits) "
        "and membership-inference audits of quantized models"
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["ptqx", "ptqx.*"]) + ["ptqx._csrc"],
    # The native sources travel inside the package so a regular install can JIT them.
    package_dir={"ptqx._csrc": "csrc"},
    package_data={"ptqx._csrc": ["*.cpp", "**/*.cpp", "**/*.h", "**/*.cuh", "**/*.cu"]},
    # Install torch first (CPU machines: pip install torch==2.13.0); a bare requirement
    # here would let pip pull a multi-GB CUDA build on a machine without torch.
    install_requires=["torch>=2.4", "numpy>=1.24", "scikit-learn>=1.3", "ninja", "tqdm"],
    extras_require={
        # pillow: Tiny ImageNet JPEG decoding (ptqx.data); the tests write JPEGs with it
        "test": ["pytest", "pytest-benchmark", "pillow"],
        "plot": ["matplotlib"],
        "images": ["pillow"],
        # Plain `ray` (core tasks only), not `ray[default]` (dashboard, metrics agents):
        # `ptqx run --backend ray` needs nothing more. 2.49+ for `ray symmetric-run`; a driver
        # must match its cluster's Ray version, so this is a range (CI tests 2.60).
        "ray": ["ray>=2.49,<3"],
    },
    entry_points={"console_scripts": ["ptqx=ptqx.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
