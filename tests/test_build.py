"""The op boundary itself: every op defined, native kernels loaded where required, and the
fallback to the references when they are disabled or fail to build."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ptqx.ops
from ptqx.ops import info

from .conftest import require_native


def test_every_schema_is_defined():
    for name in ptqx.ops.OP_NAMES:
        assert hasattr(torch.ops.ptqx, name), name


def test_native_loaded_when_required():
    if require_native():
        assert ptqx.ops.STATUS.loaded, ptqx.ops.STATUS.error
        missing = info.native_ops_missing("CPU")
        assert not missing, f"ops without a native CPU kernel: {missing}"


def test_info_lists_every_op():
    text = info.describe()
    for name in ptqx.ops.OP_NAMES:
        assert name in text


# What a fresh process reports when it imports ptqx.ops under a given environment: how the
# native kernels loaded, the fallback warnings it saw, and whether lowbit_linear (called
# twice) and unpack_weights still give the dense product and the codes.
_PROBE = """
import json, warnings
import torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import ptqx.ops as ops
    from ptqx.ops import info
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 4, (5, 37), generator=g, dtype=torch.uint8)
    packed = ops.pack_weights(codes, 2)
    x = torch.randn(3, 37, generator=g)
    scale, zero = torch.rand(5, generator=g) + 0.1, torch.full((5,), 1.5)
    ys = [ops.lowbit_linear(x, packed, scale, zero, 2) for _ in range(2)]
    dense = scale[:, None] * (codes.float() - zero[:, None])
warned = [str(w.message) for w in caught if "native kernels unavailable" in str(w.message)]
print(json.dumps({
    "how": ops.STATUS.how,
    "error": ops.STATUS.error,
    "warnings": warned,
    "close": all(torch.allclose(y, x @ dense.T, atol=1e-5) for y in ys),
    "unpacked": torch.equal(ops.unpack_weights(packed, 2, 37), codes),
    "reference_ops": [n for n, row in info.kernel_table().items() if row["CPU"] == "reference"],
}))
"""


def _run_python(code: str, *args: str, **ptqx_env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose PTQX_* switches are exactly ``ptqx_env``
    (the test session's own, e.g. CI's PTQX_REQUIRE_NATIVE, are dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTQX_")}
    env.update(ptqx_env)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )


def _probe(tmp_path, **ptqx_env):
    # A build dir of its own: never touch the shared JIT cache.
    proc = _run_python(_PROBE, PTQX_BUILD_DIR=str(tmp_path / "build"), **ptqx_env)
    return proc, (json.loads(proc.stdout.splitlines()[-1]) if proc.returncode == 0 else None)


def test_disabled_native_runs_every_op_on_its_reference(tmp_path):
    proc, out = _probe(tmp_path, PTQX_DISABLE_NATIVE="1")
    assert proc.returncode == 0, proc.stderr
    assert out["how"] == "disabled" and out["warnings"] == []
    assert out["close"] and out["unpacked"]
    assert sorted(out["reference_ops"]) == sorted(ptqx.ops.OP_NAMES)


# With an ahead-of-time ptqx._C installed, no JIT build is attempted, so there is no
# build to fail (test_disabled_native_... still applies).
_AOT_INSTALLED = importlib.util.find_spec("ptqx._C") is not None
needs_jit = pytest.mark.skipif(
    _AOT_INSTALLED, reason="ahead-of-time ptqx._C installed: the JIT build is never tried"
)


@needs_jit
def test_failed_build_warns_once_and_falls_back_to_references(tmp_path):
    # A machine without a working C++ compiler: the JIT build fails at once.
    proc, out = _probe(tmp_path, CXX="/bin/false")
    assert proc.returncode == 0, proc.stderr
    assert out["how"] == "failed" and out["error"]
    assert len(out["warnings"]) == 1, out["warnings"]  # once per process, not per call
    assert "pure-PyTorch reference" in out["warnings"][0]
    assert "PTQX_VERBOSE_BUILD" in out["warnings"][0]
    assert out["close"] and out["unpacked"]
    assert sorted(out["reference_ops"]) == sorted(ptqx.ops.OP_NAMES)


@needs_jit
def test_failed_build_is_an_error_when_native_is_required(tmp_path):
    proc, out = _probe(tmp_path, CXX="/bin/false", PTQX_REQUIRE_NATIVE="1")
    assert proc.returncode != 0 and out is None
    assert "PTQX_REQUIRE_NATIVE=1 but the native kernels failed to build" in proc.stderr


@needs_jit
def test_jit_build_is_reused_by_a_new_process():
    if ptqx.ops.STATUS.how != "jit":
        pytest.skip(f"native kernels not JIT-built here ({ptqx.ops.STATUS.how})")
    build_dir = ptqx.ops.STATUS.build_dir
    libraries = sorted(Path(build_dir).glob("ptqx_native*.so"))
    assert libraries, f"no ptqx_native*.so in {build_dir}"
    before = {p: p.stat().st_mtime_ns for p in libraries}
    code = "import ptqx.ops as o; print(o.STATUS.how, o.STATUS.build_dir)"
    proc = _run_python(code, PTQX_BUILD_DIR=build_dir, PTQX_REQUIRE_NATIVE="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["jit", build_dir]
    assert "compiling native kernels" not in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in libraries} == before  # loaded, not rebuilt


def test_installed_package_ships_every_native_source():
    # In a checkout or an editable install the JIT build compiles <repo>/csrc itself; in a
    # regular install (CI's ahead-of-time venv runs this file against one) it compiles the
    # copy setup.py's package_data put in ptqx/_csrc, which must miss nothing.
    from ptqx.ops import _sources

    repo_csrc = Path(__file__).resolve().parents[1] / "csrc"
    if not repo_csrc.is_dir():
        pytest.skip("tests run outside a source checkout")

    def tree(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}

    missing = tree(repo_csrc) - tree(_sources.csrc_root())
    assert not missing, f"not shipped with the package: {sorted(map(str, missing))}"


# The CMake library (CMakeLists.txt: "loads libptqx_ops after importing ptqx") in a fresh
# process whose own native kernels are disabled, so every native kernel comes from it.
_CMAKE_PROBE = """
import sys
import torch
import ptqx.ops as ops
from ptqx.ops import info, reference
assert len(info.native_ops_missing("CPU")) == len(ops.OP_NAMES)
torch.ops.load_library(sys.argv[1])
missing = info.native_ops_missing("CPU")
assert not missing, f"no CPU kernel in the CMake library for {missing}"
g = torch.Generator().manual_seed(0)
codes = torch.randint(0, 4, (33, 300), generator=g, dtype=torch.uint8)
packed = ops.pack_weights(codes, 2)
x = torch.randn(5, 300, generator=g)
scale, zero = torch.rand(33, generator=g) + 0.1, torch.full((33,), 1.0)
y = ops.lowbit_linear(x, packed, scale, zero, 2)
assert torch.allclose(y, reference.lowbit_linear(x, packed, scale, zero, 2), atol=1e-5)
w = torch.randn(33, 300, generator=g)
assert torch.equal(ops.fake_quant(w, scale, zero, 3), reference.fake_quant(w, scale, zero, 3))
a = torch.randn(16, 24, dtype=torch.float64, generator=g)
hinv = torch.linalg.inv(a.T @ a / 16 + 0.1 * torch.eye(24, dtype=torch.float64))
w_obc, s_obc, z_obc = torch.randn(4, 24, generator=g), torch.full((4,), 0.5), torch.full((4,), 2.0)
q = ops.obc_quantize_rows(w_obc, hinv, s_obc, z_obc, 3)
assert torch.equal(q, reference.obc_quantize_rows(w_obc, hinv, s_obc, z_obc, 3))
print("ok")
"""


def test_cmake_library_serves_every_op():
    lib = os.environ.get("PTQX_CMAKE_LIB")
    if not lib:
        pytest.skip("PTQX_CMAKE_LIB names no CMake-built libptqx_ops.so (.ci/run sets it)")
    proc = _run_python(_CMAKE_PROBE, lib, PTQX_DISABLE_NATIVE="1")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


_CPUINFO_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_jit_build_folder_names_the_host_cpu(monkeypatch):
    # -march=native is the same string on every CPU, so torch's flag hash cannot tell an
    # AVX-512 build from an AVX2 one: the folder must, or a home directory shared across
    # CPU generations hands one node another's binary (SIGILL on the first op).
    from ptqx.ops import _build, _sources

    avx2 = _build.host_cpu_id(_CPUINFO_AVX2)
    avx512 = _build.host_cpu_id(_CPUINFO_AVX2.replace("avx2 fma", "avx2 fma avx512f"))
    other_model = _build.host_cpu_id(_CPUINFO_AVX2.replace("model\t\t: 1", "model\t\t: 17"))
    reordered = _build.host_cpu_id(_CPUINFO_AVX2.replace("avx avx2 fma", "fma avx2 avx"))
    renamed = _build.host_cpu_id(_CPUINFO_AVX2.replace("AMD EPYC", "AMD EPYC 7B13"))
    assert len({avx2, avx512, other_model}) == 3
    assert reordered == avx2 and renamed == avx2  # feature sets, not their print order

    monkeypatch.delenv("PTQX_BUILD_DIR", raising=False)
    monkeypatch.delenv("PTQX_CPU_ARCH", raising=False)
    root = _sources.csrc_root()
    assert _build.default_build_dir(root, False).name.endswith(f"-{_build.host_cpu_id()}")
    # An explicit -march is in the flags torch hashes: no CPU part in the folder then.
    monkeypatch.setenv("PTQX_CPU_ARCH", "x86-64-v3")
    assert not _build.default_build_dir(root, False).name.endswith(f"-{_build.host_cpu_id()}")
