"""CUDA paths that only a GPU exercises, each CUDA kernel against the CPU kernel or the
reference on the same inputs: launch limits (grids past 65535 blocks in y, warps that
loop over rows), 64-bit indexing past 2^31 elements, misaligned packed weights, more
OBC rows than thread blocks, LiRA with more models than threads, the CUDA bindings'
argument checks against the CPU ones (same messages) and mixed-device arguments.

Everything but the build test below needs a CUDA device and is skipped without one;
``benchmarks/gpu_check.sh`` runs this file first. The largest tests allocate up to
~20 GiB and skip on a GPU with less free memory.
"""

from __future__ import annotations

import inspect
import math
import shutil
from pathlib import Path

import pytest
import torch

import ptqx.ops as ops
from ptqx.ops import _sources, reference

from .conftest import native_or_skip

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cuda_native(*op_names: str) -> None:
    for op in op_names:
        native_or_skip(op, "cpu")
        native_or_skip(op, "cuda")


def _need_free_gib(gib: float) -> None:
    free, _ = torch.cuda.mem_get_info()
    if free < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free GPU memory, {free / 2**30:.1f} GiB free")


# ---------------------------------------------------------------------------------------
# The JIT build (runs without a GPU)


def _object_names(sources: list[Path]) -> list[str]:
    # torch.utils.cpp_extension names each object after its source's file name alone:
    # "<stem>.o", or "<stem>.cuda.o" for a .cu file.
    return [p.stem + (".cuda.o" if p.suffix == ".cu" else ".o") for p in sources]


def test_cuda_jit_build_gives_every_source_its_own_object():
    """Two sources with one file name (csrc/cpu/obc.cpp and csrc/cuda/obc.cpp did) make
    ninja refuse the CUDA JIT build ("multiple rules generate obc.o"): on every GPU
    machine, while the CPU-only build, which leaves csrc/cuda out, works."""
    root = _sources.csrc_root()
    names = _object_names(_sources.cpu_sources(root) + _sources.cuda_sources(root))
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_cuda_jit_build_file_has_no_duplicate_outputs(tmp_path):
    """The same through torch's own ninja-file writer, where nvcc is at hand (the file is
    written only: nothing is compiled)."""
    from torch.utils import cpp_extension

    write = getattr(cpp_extension, "_write_ninja_file_to_build_library", None)
    nvcc = shutil.which("nvcc")
    cuda_home = cpp_extension.CUDA_HOME or (str(Path(nvcc).resolve().parents[1]) if nvcc else None)
    if write is None or cuda_home is None or not (Path(cuda_home) / "include").is_dir():
        pytest.skip("no CUDA toolkit (or torch's private ninja writer moved)")
    root = _sources.csrc_root()
    sources = [str(p) for p in _sources.cpu_sources(root) + _sources.cuda_sources(root)]
    args = {
        "path": str(tmp_path / "build.ninja"),
        "name": "ptqx_native",
        "sources": sources,
        "extra_cflags": _sources.cxx_flags(jit=True),
        "extra_cuda_cflags": _sources.nvcc_flags(),
        "extra_sycl_cflags": [],
        "extra_ldflags": ["-fopenmp"],
        "extra_include_paths": [str(p) for p in _sources.include_dirs(root)],
        "with_cuda": True,
        "with_sycl": False,
        "is_standalone": False,
    }
    params = inspect.signature(write).parameters
    old = cpp_extension.CUDA_HOME
    cpp_extension.CUDA_HOME = cuda_home
    try:
        write(**{k: v for k, v in args.items() if k in params})
    except Exception as exc:  # noqa: BLE001 - a private API: skip rather than guess
        pytest.skip(f"torch's ninja writer failed here: {exc}")
    finally:
        cpp_extension.CUDA_HOME = old
    outputs = [
        line.split()[1].rstrip(":")
        for line in (tmp_path / "build.ninja").read_text().splitlines()
        if line.startswith("build ") and line.split()[1].rstrip(":").endswith(".o")
    ]
    assert len(outputs) == len(sources)
    assert sorted({o for o in outputs if outputs.count(o) > 1}) == []


# ---------------------------------------------------------------------------------------
# logit_scores


@needs_cuda
def test_cuda_logit_scores_rejects_labels_like_the_cpu_kernel():
    """The CUDA binding used to write NaN for a label outside [0, K) where the CPU one
    raises (callers of torch.ops.ptqx that bypass the wrapper)."""
    _cuda_native("logit_scores")
    z = torch.randn(3, 4)
    for y in ([0, 4, 1], [0, -1, 1]):
        for dev in ("cpu", "cuda"):
            with pytest.raises(RuntimeError, match=r"labels: 1 value\(s\) outside \[0, 4\)"):
                torch.ops.ptqx.logit_scores(z.to(dev), torch.tensor(y, device=dev))


@needs_cuda
def test_cuda_logit_scores_more_rows_than_the_grid():
    """8 rows per block and at most 65535 * 16 blocks: past 8,388,480 rows the warps loop."""
    _cuda_native("logit_scores")
    g = torch.Generator().manual_seed(0)
    rows = 65535 * 16 * 8 + 37
    z = torch.randn(rows, 3, generator=g) * 4
    y = torch.randint(0, 3, (rows,), generator=g)
    got = ops.logit_scores(z.cuda(), y.cuda()).cpu()
    torch.testing.assert_close(got, reference.logit_scores(z, y), rtol=1e-9, atol=1e-12)


@needs_cuda
def test_cuda_logit_scores_past_2_31_elements():
    """float16 logits [2^24 + 3, 128]: 2^31 + 384 elements, the last rows' offsets pass int32."""
    _cuda_native("logit_scores")
    _need_free_gib(6)
    rows, k = 2**24 + 3, 128
    gen = torch.Generator(device="cuda").manual_seed(1)
    z = torch.randn(rows, k, device="cuda", generator=gen, dtype=torch.float16)
    y = torch.randint(0, k, (rows,), device="cuda", generator=gen)
    got = ops.logit_scores(z, y)
    for sl in (slice(0, 1000), slice(rows - 1000, rows)):
        want = reference.logit_scores(z[sl].cpu(), y[sl].cpu())
        torch.testing.assert_close(got[sl].cpu(), want, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Uniform grid


@needs_cuda
def test_cuda_grid_ops_past_2_31_elements():
    """fake_quant / quantize_codes on [2^15 + 1, 2^16] float32: 2^31 + 2^16 elements."""
    _cuda_native("fake_quant", "quantize_codes")
    _need_free_gib(22)
    rows, cols = 2**15 + 1, 2**16
    gen = torch.Generator(device="cuda").manual_seed(2)
    w = torch.randn(rows, cols, device="cuda", generator=gen)
    scale = torch.rand(rows, device="cuda", generator=gen) * 0.5 + 0.01
    zero = torch.randint(0, 16, (rows,), device="cuda", generator=gen).float()
    codes = ops.quantize_codes(w, scale, zero, 15)
    for sl in (slice(0, 2), slice(rows - 2, rows)):
        want = reference.quantize_codes(w[sl].cpu(), scale[sl].cpu(), zero[sl].cpu(), 15)
        assert torch.equal(codes[sl].cpu(), want)
    del codes
    deq = ops.fake_quant(w, scale, zero, 15)
    for sl in (slice(0, 2), slice(rows - 2, rows)):
        want = reference.fake_quant(w[sl].cpu(), scale[sl].cpu(), zero[sl].cpu(), 15)
        assert torch.equal(deq[sl].cpu(), want)


@needs_cuda
@pytest.mark.parametrize("norm", [1.0, 3.5])
def test_cuda_grid_search_other_norms(norm):
    """The CUDA kernel's powf path (norm != 2), which the device-parametrised tests skip."""
    from .test_grid import assert_same_choice

    _cuda_native("grid_search")
    w = torch.randn(17, 203, generator=torch.Generator().manual_seed(3))
    got = ops.grid_search(w.cuda(), 7, norm=norm, steps=50)
    want = reference.grid_search(w, 7, False, True, norm, 100, 50)
    assert_same_choice(w, tuple(t.cpu() for t in got), want, 7, norm=norm)


@needs_cuda
def test_cuda_grid_search_resnet_layer():
    from .test_grid import assert_same_choice

    _cuda_native("grid_search")
    w = torch.randn(512, 4608, generator=torch.Generator().manual_seed(4))
    got = ops.grid_search(w.cuda(), 3)
    assert_same_choice(w, tuple(t.cpu() for t in got), ops.grid_search(w, 3), 3)


# ---------------------------------------------------------------------------------------
# Packed low-bit weights


def _layer(rows, cols, bits, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    maxq = (1 << bits) - 1
    codes = torch.randint(0, maxq + 1, (rows, cols), generator=g, dtype=torch.uint8)
    scale = torch.rand(rows, generator=g) * 0.1 + 1e-3
    zero = torch.randint(0, maxq + 1, (rows,), generator=g).float()
    bias = torch.randn(rows, generator=g)
    packed = ops.pack_weights(codes, bits)
    return tuple(t.to(device) for t in (codes, packed, scale, zero, bias))


def _misaligned(packed: torch.Tensor) -> torch.Tensor:
    """The same bytes at an odd address (the kernels read 32-bit words)."""
    buf = torch.empty(packed.numel() + 1, dtype=torch.uint8, device=packed.device)
    out = buf[1:].view(packed.shape)
    out.copy_(packed)
    assert out.data_ptr() % 4 != 0 and out.is_contiguous()
    return out


@needs_cuda
@pytest.mark.parametrize("bits", [2, 4])
def test_cuda_lowbit_token_paths_and_misaligned_packed(bits):
    """The GEMV (1 token, 8-token passes up to 16) and the tiled kernel (17+, several
    64-token tiles), against the CPU kernel; a packed tensor at an odd address gives the
    same bytes and outputs (it is copied to an aligned one, not read misaligned)."""
    _cuda_native("lowbit_linear", "lowbit_linear_int8act", "unpack_weights")
    rows, cols = 67, 301
    codes, packed, scale, zero, bias = _layer(rows, cols, bits, 5)
    pc, sc, zc, bc = packed.cuda(), scale.cuda(), zero.cuda(), bias.cuda()
    odd = _misaligned(pc)
    assert torch.equal(ops.unpack_weights(odd, bits, cols).cpu(), codes)
    g = torch.Generator().manual_seed(6)
    for ntok in (1, 2, 8, 9, 16, 17, 64, 65, 130):
        x = torch.randn(ntok, cols, generator=g)
        want = ops.lowbit_linear(x, packed, scale, zero, bits, bias)
        got = ops.lowbit_linear(x.cuda(), pc, sc, zc, bits, bc)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
        assert torch.equal(ops.lowbit_linear(x.cuda(), odd, sc, zc, bits, bc), got)
        want8 = ops.lowbit_linear_int8act(x, packed, scale, zero, bits, bias)
        got8 = ops.lowbit_linear_int8act(x.cuda(), pc, sc, zc, bits, bc)
        assert torch.equal(got8.cpu(), want8), ntok
        assert torch.equal(ops.lowbit_linear_int8act(x.cuda(), odd, sc, zc, bits, bc), got8)


@needs_cuda
def test_cuda_lowbit_linear_batch_past_grid_y():
    """More than 65535 tiles of 64 tokens: the tiled kernel's gridDim.y limit. It used to
    fail with "invalid configuration argument" where the CPU kernel takes any batch; now
    the batch goes in several launches (checked around each launch boundary)."""
    _cuda_native("lowbit_linear")
    _need_free_gib(4)
    rows, cols, bits = 70, 5, 2
    codes, packed, scale, zero, bias = _layer(rows, cols, bits, 7)
    per_launch = 65535 * 64
    ntok = 2 * per_launch + 5
    gen = torch.Generator(device="cuda").manual_seed(8)
    x = torch.randn(ntok, cols, device="cuda", generator=gen)
    y = ops.lowbit_linear(x, packed.cuda(), scale.cuda(), zero.cuda(), bits, bias.cuda())
    assert y.shape == (ntok, rows)
    for t in (0, per_launch, 2 * per_launch):
        sl = slice(max(t - 300, 0), t + 300)
        want = ops.lowbit_linear(x[sl].cpu(), packed, scale, zero, bits, bias)
        torch.testing.assert_close(y[sl].cpu(), want, rtol=1e-5, atol=1e-5)


@needs_cuda
def test_cuda_int8act_more_tokens_than_grid_y():
    """The dot kernel runs tokens along gridDim.y (at most 65535) and loops past it."""
    _cuda_native("lowbit_linear_int8act")
    rows, cols, bits = 9, 300, 4
    codes, packed, scale, zero, bias = _layer(rows, cols, bits, 9)
    x = torch.randn(65535 + 77, cols, generator=torch.Generator().manual_seed(10))
    want = ops.lowbit_linear_int8act(x, packed, scale, zero, bits, bias)
    got = ops.lowbit_linear_int8act(
        x.cuda(), packed.cuda(), scale.cuda(), zero.cuda(), bits, bias.cuda()
    )
    assert torch.equal(got.cpu(), want)


# ---------------------------------------------------------------------------------------
# OBC, LiRA, AdaRound


@needs_cuda
def test_cuda_obc_more_rows_than_blocks():
    """Rows beyond the kernel's 2 blocks per SM: blocks loop and reuse their workspace.
    (The device-parametrised tests of test_obc.py run the op with the order only.)"""
    from .test_obc import make_problem

    _cuda_native("obc_quantize_rows_order")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = 2 * sms + 5
    w, hinv, scale, zero, maxq = make_problem(rows, 40, bits=2, seed=11)
    q_c, o_c = ops.obc_quantize_rows(w, hinv, scale, zero, maxq, return_order=True)
    q_g, o_g = ops.obc_quantize_rows(
        w.cuda(), hinv.cuda(), scale.cuda(), zero.cuda(), maxq, return_order=True
    )
    # float64: both kernels equal the reference on non-degenerate inputs (test_obc.py).
    assert torch.equal(o_g.cpu(), o_c)
    assert torch.equal(q_g.cpu(), q_c)
    # The op without the order (no order pointer in the kernel) gives the same weights.
    assert torch.equal(
        ops.obc_quantize_rows(w.cuda(), hinv.cuda(), scale.cuda(), zero.cuda(), maxq), q_g
    )


@needs_cuda
@pytest.mark.parametrize("n", [257, 1024])
def test_cuda_lira_more_models_than_threads(n):
    """256 threads per block: 257 models make threads stride; 1024 is the CUDA limit."""
    _cuda_native("lira_loo_stats")
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 5, 2, generator=g, dtype=torch.float64) * 3 + 1
    keep = torch.rand(n, 5, generator=g) < 0.5
    keep[:, 4] = False  # an empty IN side
    want = ops.lira_loo_stats(x, keep)
    got = ops.lira_loo_stats(x.cuda(), keep.cuda())
    for name, a, b in zip(want._fields, want, got, strict=True):
        if name.startswith(("median", "count")):
            assert torch.equal(b.cpu(), a), name
        else:
            torch.testing.assert_close(b.cpu(), a, rtol=1e-12, atol=1e-12, msg=name)


@needs_cuda
def test_cuda_lira_too_many_models_is_an_error():
    _cuda_native("lira_loo_stats")
    x = torch.zeros(1025, 2, 1, dtype=torch.float64, device="cuda")
    keep = torch.zeros(1025, 2, dtype=torch.bool, device="cuda")
    with pytest.raises(RuntimeError, match="at most 1024 models"):
        torch.ops.ptqx.lira_loo_stats(x, keep)


@needs_cuda
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 20.0])
def test_cuda_adaround_at_kinks_float64(beta):
    """float64 at the clamp kinks of h and at h = 0.5, against autograd through the
    reference on the same GPU (test_adaround.py has the CPU version)."""
    from .test_adaround import _autograd_grad, _kink_alphas

    _cuda_native("adaround_forward", "adaround_backward")
    a = _kink_alphas(torch.float64)[None, :].repeat(2, 1).cuda()
    wf = torch.zeros_like(a)
    wf[1] = 1.0
    scale, zero = torch.tensor([0.3, 0.07], device="cuda"), torch.tensor([2.0, 0.0], device="cuda")
    gw = torch.ones_like(a)
    greg = torch.tensor(0.5, dtype=torch.float64, device="cuda")
    want = _autograd_grad(wf, a, scale, zero, 15, beta, gw, greg)
    got = torch.ops.ptqx.adaround_backward(gw, greg, wf, a, scale, zero, 15, beta)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    w_soft, reg = torch.ops.ptqx.adaround_forward(wf, a, scale, zero, 15, beta)
    w_ref, reg_ref = reference.adaround_forward(wf, a, scale, zero, 15, beta)
    torch.testing.assert_close(w_soft, w_ref, rtol=1e-15, atol=1e-16)
    torch.testing.assert_close(reg, reg_ref, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------
# The bindings' argument checks: CUDA raises what the CPU raises; mixed devices are an
# error naming the argument, never a crash.


def _message(fn, *args) -> tuple[type, str]:
    with pytest.raises((RuntimeError, ValueError)) as info:
        fn(*args)
    return info.type, str(info.value).splitlines()[0]


def _bad_calls(dev: str):
    """(what, op, args) on ``dev``, each with one argument the bindings refuse."""
    t = dict(device=dev)
    f32 = dict(device=dev, dtype=torch.float32)
    f64 = dict(device=dev, dtype=torch.float64)
    w = torch.ones(4, 6, **f32)
    s, z = torch.ones(4, **f32), torch.zeros(4, **f32)
    packed = torch.zeros(6, 32, dtype=torch.uint8, **t)
    x = torch.ones(2, 100, **f32)
    s6, z6 = torch.ones(6, **f32), torch.zeros(6, **f32)
    p = torch.ops.ptqx
    return [
        ("fake_quant scale count", p.fake_quant, (w, s[:3], z, 15)),
        ("fake_quant maxq", p.fake_quant, (w, s, z, 256)),
        ("quantize_codes dtype", p.quantize_codes, (w.half(), s, z, 15)),
        ("grid_search steps", p.grid_search, (w, 15, False, True, 2.4, 10, 80)),
        ("grid_search grid", p.grid_search, (w, 15, False, True, 2.4, 2**31, 1)),
        ("obc hinv shape", p.obc_quantize_rows, (w, torch.eye(5, **f32), s, z, 3)),
        ("obc zero shape", p.obc_quantize_rows, (w, torch.eye(6, **f32), s, z[:2], 3)),
        ("pack bits", p.pack_weights, (torch.zeros(2, 3, dtype=torch.uint8, **t), 3)),
        ("pack range", p.pack_weights, (torch.full((2, 3), 9, dtype=torch.int32, **t), 2)),
        ("unpack bytes", p.unpack_weights, (packed, 2, 200)),
        ("linear scale shape", p.lowbit_linear, (x, packed, s6[:5], z6, 2, None)),
        ("linear zero dtype", p.lowbit_linear, (x, packed, s6, z6.double(), 2, None)),
        ("linear bias shape", p.lowbit_linear, (x, packed, s6, z6, 2, torch.zeros(7, **f32))),
        ("linear x dtype", p.lowbit_linear, (x.double(), packed, s6, z6, 2, None)),
        (
            "linear packed bytes",
            p.lowbit_linear,
            (torch.ones(2, 200, **f32), packed, s6, z6, 2, None),
        ),
        (
            "int8act cols",
            p.lowbit_linear_int8act,
            (
                torch.zeros(1, 2**20 + 1, **f32),
                torch.zeros(1, 2**20 // 4 + 32, dtype=torch.uint8, **t),
                s6[:1],
                z6[:1],
                2,
                None,
            ),
        ),
        (
            "scores labels dtype",
            p.logit_scores,
            (torch.ones(3, 4, **f32), torch.zeros(3, dtype=torch.int32, **t)),
        ),
        (
            "scores K",
            p.logit_scores,
            (torch.ones(3, 1, **f32), torch.zeros(3, dtype=torch.int64, **t)),
        ),
        (
            "lira keep shape",
            p.lira_loo_stats,
            (torch.ones(3, 4, 2, **f64), torch.zeros(3, 5, dtype=torch.bool, **t)),
        ),
        ("adaround w_floor dtype", p.adaround_forward, (w.double(), w, s, z, 3, 2.0)),
        ("adaround w_floor shape", p.adaround_forward, (w[:, :5], w, s, z, 3, 2.0)),
        ("adaround beta", p.adaround_forward, (w, w, s, z, 3, 0.5)),
        (
            "adaround grad_w",
            p.adaround_backward,
            (w[:, :5], torch.tensor(1.0, **f32), w, w, s, z, 3, 2.0),
        ),
        ("adaround grad_reg", p.adaround_backward, (w, torch.ones(2, **f32), w, w, s, z, 3, 2.0)),
    ]


@needs_cuda
def test_cuda_bindings_raise_what_the_cpu_bindings_raise():
    for op in ops.OP_NAMES:
        _cuda_native(op)
    for (what, op, cpu_args), (_, _, cuda_args) in zip(
        _bad_calls("cpu"), _bad_calls("cuda"), strict=True
    ):
        assert _message(op, *cuda_args) == _message(op, *cpu_args), what


@needs_cuda
def test_cuda_mixed_devices_name_the_argument():
    """One argument on the CPU, the others on the GPU: the CUDA kernel serves the call
    (the dispatcher picks CUDA) and must refuse the CPU pointer, not read it."""
    for op in ops.OP_NAMES:
        _cuda_native(op)
    c = "cuda"
    w = torch.randn(4, 6, device=c)
    s, z = torch.ones(4, device=c), torch.zeros(4, device=c)
    hinv = torch.eye(6, device=c)
    x = torch.randn(2, 100, device=c)
    packed = torch.zeros(6, 32, dtype=torch.uint8, device=c)
    s6, z6 = torch.ones(6, device=c), torch.zeros(6, device=c)
    p = torch.ops.ptqx
    cases = [
        ("scale", p.fake_quant, (w, s.cpu(), z, 15)),
        ("w", p.quantize_codes, (w.cpu(), s, z, 15)),
        ("hinv", p.obc_quantize_rows, (w, hinv.cpu(), s, z, 3)),
        ("zero", p.obc_quantize_rows_order, (w, hinv, s, z.cpu(), 3)),
        ("packed", p.lowbit_linear, (x, packed.cpu(), s6, z6, 2, None)),
        ("scale", p.lowbit_linear, (x, packed, s6.cpu(), z6, 2, None)),
        ("bias", p.lowbit_linear, (x, packed, s6, z6, 2, torch.zeros(6))),
        ("x", p.lowbit_linear_int8act, (x.cpu(), packed, s6, z6, 2, None)),
        (
            "labels",
            p.logit_scores,
            (torch.randn(3, 4, device=c), torch.zeros(3, dtype=torch.int64)),
        ),
        (
            "keep",
            p.lira_loo_stats,
            (torch.randn(3, 4, 2, device=c), torch.zeros(3, 4, dtype=torch.bool)),
        ),
        ("w_floor", p.adaround_forward, (w.cpu(), w, s, z, 3, 2.0)),
        ("grad_w", p.adaround_backward, (w.cpu(), torch.tensor(1.0, device=c), w, w, s, z, 3, 2.0)),
    ]
    for name, op, args in cases:
        with pytest.raises(RuntimeError, match=f"{name}: expected a CUDA tensor"):
            op(*args)
    torch.cuda.synchronize()  # and nothing faulted


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_ops_on_a_gpu_other_than_the_current_one():
    """Inputs on cuda:1 while cuda:0 is current: the bindings' device guards put the
    outputs, the workspace and the launches on cuda:1."""
    d = torch.device("cuda:1")
    assert torch.cuda.current_device() == 0
    g = torch.Generator().manual_seed(12)
    w = torch.randn(5, 40, generator=g, dtype=torch.float64)
    scale, zero = ops.grid_search(w.float(), 3)
    from .test_obc import correlated_hinv

    hinv = correlated_hinv(40, seed=1)
    q = ops.obc_quantize_rows(w.to(d), hinv.to(d), scale.to(d), zero.to(d), 3)
    assert q.device == d and torch.equal(q.cpu(), ops.obc_quantize_rows(w, hinv, scale, zero, 3))
    assert torch.equal(
        ops.fake_quant(w.to(d), scale.to(d), zero.to(d), 3).cpu(), ops.fake_quant(w, scale, zero, 3)
    )
    codes, packed, s, z, b = _layer(9, 70, 4, 13)
    x = torch.randn(3, 70, generator=g)
    y = ops.lowbit_linear(x.to(d), packed.to(d), s.to(d), z.to(d), 4, b.to(d))
    torch.testing.assert_close(
        y.cpu(), ops.lowbit_linear(x, packed, s, z, 4, b), rtol=1e-5, atol=1e-5
    )
    logits, labels = torch.randn(7, 10, generator=g), torch.randint(0, 10, (7,), generator=g)
    torch.testing.assert_close(
        ops.logit_scores(logits.to(d), labels.to(d)).cpu(),
        ops.logit_scores(logits, labels),
        rtol=1e-9,
        atol=1e-12,
    )
    ref, keep = (
        torch.randn(6, 4, 2, generator=g, dtype=torch.float64),
        torch.rand(6, 4, generator=g) < 0.5,
    )
    for a, b_ in zip(
        ops.lira_loo_stats(ref.to(d), keep.to(d)), ops.lira_loo_stats(ref, keep), strict=True
    ):
        torch.testing.assert_close(a.cpu(), b_, rtol=1e-12, atol=1e-12)
    torch.cuda.synchronize(d)
    assert math.isfinite(float(y.abs().max()))


@needs_cuda
def test_cuda_launches_go_to_the_current_stream():
    """Captured into a CUDA graph (the capture stream is then the current stream, not the
    default one) and replayed, each op gives what it gives eagerly: a launch on another
    stream would fail the capture or be missing from the replay. (Last in this file: a
    failed capture can leave the process's CUDA state unusable.) OBC and pack_weights are
    left out: their bindings query free memory / sync on a range check."""
    g = torch.Generator().manual_seed(14)
    w = torch.randn(37, 301, generator=g).cuda()
    scale = (torch.rand(37, generator=g) * 0.1 + 0.01).cuda()
    zero = torch.full((37,), 7.0, device="cuda")
    _, packed, s, z, b = _layer(67, 301, 4, 15, "cuda")
    x = torch.randn(20, 301, generator=g).cuda()
    logits = torch.randn(50, 10, generator=g).cuda()
    labels = torch.randint(0, 10, (50,), generator=g).cuda()
    ref = torch.randn(9, 11, 2, generator=g, dtype=torch.float64).cuda()
    keep = (torch.rand(9, 11, generator=g) < 0.5).cuda()
    wf = torch.floor(w / scale[:, None])
    alpha = torch.randn(37, 301, generator=g).cuda()
    greg = torch.tensor(0.5, device="cuda")
    p = torch.ops.ptqx
    calls = [
        ("fake_quant", lambda: p.fake_quant(w, scale, zero, 15)),
        ("quantize_codes", lambda: p.quantize_codes(w, scale, zero, 15)),
        ("grid_search", lambda: p.grid_search(w, 15, False, True, 2.4, 100, 80)),
        ("unpack_weights", lambda: p.unpack_weights(packed, 4, 301)),
        ("lowbit_linear", lambda: p.lowbit_linear(x, packed, s, z, 4, b)),  # tiled kernel
        ("lowbit_linear", lambda: p.lowbit_linear(x[:3], packed, s, z, 4, None)),  # GEMV
        ("lowbit_linear_int8act", lambda: p.lowbit_linear_int8act(x, packed, s, z, 4, b)),
        ("logit_scores", lambda: p.logit_scores(logits, labels)),
        ("lira_loo_stats", lambda: p.lira_loo_stats(ref, keep)),
        ("adaround_forward", lambda: p.adaround_forward(wf, alpha, scale, zero, 15, 4.0)),
        (
            "adaround_backward",
            lambda: p.adaround_backward(w, greg, wf, alpha, scale, zero, 15, 4.0),
        ),
    ]
    for name, _ in calls:
        _cuda_native(name)
    eager = [fn() for _, fn in calls]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture wants
        for _, fn in calls:
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = [fn() for _, fn in calls]
    graph.replay()
    torch.cuda.synchronize()
    for (name, _), want, got in zip(calls, eager, captured, strict=True):
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        for a, c in zip(want, got, strict=True):
            assert torch.equal(a, c), name
