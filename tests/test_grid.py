"""Uniform grid ops: native kernels vs the references, OBC semantics, ternary grids, errors."""

from __future__ import annotations

import pytest
import torch

import ptqx.ops as ops
from ptqx.ops import reference

from .conftest import native_or_skip

MAXQS = (255, 15, 7, 3, 2)
# rows x cols: 1 row, 1 column, primes, not multiples of the 8-wide vector, conv-like 4-d.
SHAPES = [(1, 1), (1, 13), (7, 1), (13, 97), (3, 4, 3, 3), (5, 1153)]


def _weights(shape, dtype, gen, device):
    w = torch.randn(*shape, generator=gen, dtype=torch.float64)
    w = w * torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=gen, dtype=torch.float64)
    return w.to(dtype=dtype, device=device)


def _grid_error(w, scale, zero, maxq, norm=2.4):
    """sum |fake_quant(w) - w|^norm per row, evaluated in float64."""
    x = w.double().reshape(w.shape[0], -1)
    return (reference.fake_quant(x, scale.double(), zero.double(), maxq) - x).abs().pow(norm).sum(1)


def assert_same_choice(w, native, ref, maxq, norm=2.4, min_exact=0.99):
    """The kernel "matches" the reference's grid search when

    - at least ``min_exact`` of the rows get bit-identical (scale, zero): everything
      before the error sum is computed exactly as the reference does, and
    - on any other row, the float64 error of the kernel's pick is within 1e-5 relative of
      the reference's pick: the two only disagree where candidates tie to within the
      kernel's |e|^norm approximation (< 3e-7 per term) and the float32 summation order of
      torch (~1e-6 over a few thousand terms).
    """
    (s1, z1), (s0, z0) = native, ref
    assert s1.dtype == z1.dtype == torch.float32
    same = (s1 == s0) & (z1 == z0)
    if same.numel():
        assert same.float().mean() >= min_exact, (
            f"only {int(same.sum())}/{same.numel()} rows identical"
        )
    if (~same).any():
        e1, e0 = _grid_error(w, s1, z1, maxq, norm), _grid_error(w, s0, z0, maxq, norm)
        rel = ((e1 - e0).abs() / e0.clamp_min(1e-300))[~same.to(e1.device)]
        assert float(rel.max()) <= 1e-5, f"differing rows off by {float(rel.max()):.3g} relative"


# ---------------------------------------------------------------------------------------
# quantize_codes / fake_quant: discrete math, exact equality


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("maxq", MAXQS)
def test_codes_and_fake_quant_match_reference(device, gen, dtype, maxq):
    native_or_skip("quantize_codes", device)
    native_or_skip("fake_quant", device)
    for shape in [*SHAPES, (0, 5), (5, 0)]:
        w = _weights(shape, dtype, gen, device)
        rows = shape[0]
        scale = (torch.rand(rows, generator=gen) * 0.5 + 0.01).to(device)
        zero = torch.randint(0, maxq + 1, (rows,), generator=gen).float().to(device)
        # Exact half-way points must round half to even in both.
        if w.numel() > 2:
            w.view(rows, -1)[:, 0] = (scale * 2.5).to(dtype)
            w.view(rows, -1)[:, -1] = (scale * -3.5).to(dtype)
        codes = ops.quantize_codes(w, scale, zero, maxq)
        assert codes.dtype == torch.uint8 and codes.shape == w.shape
        assert torch.equal(
            codes.cpu(), reference.quantize_codes(w.cpu(), scale.cpu(), zero.cpu(), maxq)
        )
        deq = ops.fake_quant(w, scale, zero, maxq)
        assert deq.dtype == dtype and deq.shape == w.shape
        assert torch.equal(deq.cpu(), reference.fake_quant(w.cpu(), scale.cpu(), zero.cpu(), maxq))


def test_round_half_to_even():
    scale, zero = torch.tensor([0.5]), torch.tensor([8.0])
    w = torch.tensor([[-10.0, -0.25, 0.25, 0.75, 1.25, 10.0]])
    assert ops.quantize_codes(w, scale, zero, 15).tolist() == [[0, 8, 8, 10, 10, 15]]


# ---------------------------------------------------------------------------------------
# grid_search


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("maxq", MAXQS)
@pytest.mark.parametrize("mode", ["asym", "sym", "asym-nozero"])
def test_grid_search_matches_reference(device, gen, dtype, maxq, mode):
    native_or_skip("grid_search", device)
    symmetric, include_zero = mode == "sym", mode != "asym-nozero"
    for shape in SHAPES:
        w = _weights(shape, dtype, gen, device)
        if mode == "asym-nozero" and shape[0] > 1:
            w[0] += 3.0  # a row that does not contain 0
        got = ops.grid_search(w, maxq, symmetric=symmetric, include_zero=include_zero)
        want = reference.grid_search(w.cpu(), maxq, symmetric, include_zero, 2.4, 100, 80)
        assert_same_choice(w.cpu(), tuple(t.cpu() for t in got), want, maxq)


@pytest.mark.parametrize("maxq", [15, pytest.param(3, marks=pytest.mark.slow)])
def test_grid_search_large_layer_matches_reference(gen, maxq):
    """A ResNet-18 layer shape (64 x 576): nearly every row identical."""
    native_or_skip("grid_search")
    w = torch.randn(64, 576, generator=gen)
    got = ops.grid_search(w, maxq)
    assert_same_choice(w, got, reference.grid_search(w, maxq, False, True, 2.4, 100, 80), maxq)


@pytest.mark.parametrize("norm", [1.0, 2.0, 3.5])
def test_grid_search_other_norms(gen, norm):
    native_or_skip("grid_search")
    w = torch.randn(17, 203, generator=gen)
    got = ops.grid_search(w, 7, norm=norm, steps=50)
    want = reference.grid_search(w, 7, False, True, norm, 100, 50)
    assert_same_choice(w, got, want, 7, norm=norm)


@pytest.mark.parametrize("maxq", [15, 2])
def test_grid_search_minmax_is_obc_find_params_without_mse(gen, maxq):
    """steps=1 is OBC's find_params with mse=False: range clamped to contain 0."""
    w = torch.randn(9, 31, generator=gen)
    w[3] = w[3].abs() + 0.5  # all positive: the range still starts at 0
    scale, zero = ops.grid_search(w, maxq, steps=1)
    lo, hi = w.min(1).values.clamp(max=0), w.max(1).values.clamp(min=0)
    want = (hi - lo) / maxq
    assert torch.equal(scale, want)
    assert torch.equal(zero, torch.round(-lo / want))
    assert zero[3] == 0


@pytest.mark.parametrize("maxq", MAXQS)
def test_grid_search_symmetric_zero_is_middle_code(gen, maxq):
    w = torch.randn(5, 40, generator=gen)
    scale, zero = ops.grid_search(w, maxq, symmetric=True)
    assert torch.all(zero == (maxq + 1) // 2)
    assert torch.all(scale > 0)


@pytest.mark.parametrize("include_zero", [True, False])
@pytest.mark.parametrize("maxq", [15, 2])
def test_grid_search_degenerate_rows(device, include_zero, maxq):
    native_or_skip("grid_search", device)
    w = torch.zeros(5, 16, device=device)
    w[1] = 0.75  # constant positive
    w[2] = -2.5  # constant negative
    w[3, 5] = 1.0  # a single non-zero
    w[4] = 1e-30  # tiny constant
    scale, zero = ops.grid_search(w, maxq, include_zero=include_zero)
    want = reference.grid_search(w.cpu(), maxq, False, include_zero, 2.4, 100, 80)
    assert torch.equal(scale.cpu(), want[0]) and torch.equal(zero.cpu(), want[1])
    assert torch.all(scale > 0) and torch.isfinite(zero).all()
    # All-zero row: OBC's (-1, +1) range; zero = round(1 / scale) in float32 (7.4999996
    # rounds to 7 for maxq = 15), every candidate has error 0, so the first one stays.
    assert scale[0] == torch.tensor(2.0) / maxq and zero[0] == torch.round(1 / scale[0])
    # A constant row lies on its own grid, so it is reproduced (to float32 rounding).
    deq = ops.fake_quant(w, scale, zero, maxq)
    torch.testing.assert_close(deq[:3], w[:3], rtol=1e-6, atol=0)
    torch.testing.assert_close(deq[4], w[4], rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "dtype,mag",
    [
        (torch.float64, 1e-20),
        (torch.float64, 1e30),
        (torch.float64, 1e-100),
        (torch.float32, 1e-12),
        (torch.float32, 1e12),
        (torch.float32, 1e16),
    ],
)
def test_grid_search_extreme_magnitudes_match_reference(device, gen, dtype, mag):
    """Rows of any magnitude rank their candidates as at magnitude 1: |e|^2.4 of float64
    errors of 1e-21 underflowed (and of 1e29 overflowed) the kernel's float32 power, and
    float32 sums of |e|^2.4 at 1e16 overflow; both scale every error of a row by the
    same power of two first."""
    native_or_skip("grid_search", device)
    w = torch.randn(6, 97, generator=gen, dtype=torch.float64)
    w = (w * torch.rand(6, 1, generator=gen, dtype=torch.float64) * mag).to(dtype)
    for maxq in (15, 3):
        got = tuple(t.cpu() for t in ops.grid_search(w.to(device), maxq))
        want = reference.grid_search(w, maxq, False, True, 2.4, 100, 80)
        assert torch.all(got[0] > 0) and torch.isfinite(got[0]).all()
        assert_same_choice(w, got, want, maxq, min_exact=0.8)
        # The same choice as the unscaled problem: the scaling changes no ranking.
        # (Exact power of two: the scaled weights and their grids are the same numbers.)
        if dtype == torch.float64 and mag >= 1e-20:
            k = 2.0 ** round(-torch.log2(torch.tensor(mag)).item())
            unit = reference.grid_search(w * k, maxq, False, True, 2.4, 100, 80)
            assert torch.equal(unit[1], want[1])


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("maxq", [15, 255])
def test_grid_search_rows_without_a_float32_scale(device, symmetric, maxq):
    """Subnormal rows, whose (max - min) / maxq rounds to 0 in float32, get the all-zero
    row's grid (scale 0 and zero NaN/-inf before); a range overflowing float32 is
    searched over its finite candidates, and raises when it has none."""
    native_or_skip("grid_search", device)
    # Ranges of a few subnormal ulps: (hi - lo) / maxq < 0.7e-45 rounds to 0.
    sub = torch.tensor([[1.4e-45, 2.8e-45, 4.2e-45], [0.0, 0.0, 0.0], [-4.2e-45, 0.0, 1.4e-45]])
    for include_zero in [True] if symmetric else [True, False]:
        scale, zero = ops.grid_search(
            sub.to(device), maxq, symmetric=symmetric, include_zero=include_zero
        )
        want = reference.grid_search(sub, maxq, symmetric, include_zero, 2.4, 100, 80)
        assert torch.equal(scale.cpu(), want[0]) and torch.equal(zero.cpu(), want[1])
        assert torch.equal(scale.cpu(), torch.full((3,), 2.0 / maxq))  # the zero row's grid
        assert torch.equal(zero.cpu(), zero[1].cpu().expand(3)) and torch.isfinite(zero).all()
        assert ops.fake_quant(sub.to(device), scale, zero, maxq).eq(0).all()

    huge = torch.tensor([[-3e38, 3e38, 0.0], [1.0, -2.0, 0.5]])
    scale, zero = ops.grid_search(huge.to(device), 15, symmetric=symmetric)
    want = reference.grid_search(huge, 15, symmetric, True, 2.4, 100, 80)
    assert torch.equal(scale.cpu(), want[0]) and torch.equal(zero.cpu(), want[1])
    assert torch.isfinite(scale).all() and torch.all(scale > 0) and torch.isfinite(zero).all()
    # With the full range only (steps=1), (hi - lo) / maxq = inf is the only candidate.
    with pytest.raises(ValueError, match=r"w: rows \[0\] have a range"):
        ops.grid_search(huge.to(device), 15, symmetric=symmetric, steps=1)
    # float64 weights beyond float32's range: every candidate overflows.
    with pytest.raises(ValueError, match=r"w: rows \[1\] have a range"):
        ops.grid_search(torch.tensor([[1.0, 2.0], [-1e39, 1e39]], dtype=torch.float64), 15)
    # The op itself (native and reference alike) returns the non-finite scale.
    s_op, _ = torch.ops.ptqx.grid_search(huge.to(device), 15, symmetric, True, 2.4, 100, 1)
    s_ref, _ = reference.grid_search(huge, 15, symmetric, True, 2.4, 100, 1)
    assert torch.equal(s_op.cpu(), s_ref) and s_ref[0] == float("inf")


@pytest.mark.parametrize("shape", [(0, 5), (0, 3, 3), (0, 0)])
def test_grid_search_no_rows(device, shape):
    """The reference used reshape(0, -1), which torch refuses on 0 elements."""
    w = torch.empty(shape, device=device)
    for dtype in (torch.float32, torch.float64):
        s, z = ops.grid_search(w.to(dtype), 15)
        assert s.shape == z.shape == (0,) and s.dtype == z.dtype == torch.float32
        sr, zr = reference.grid_search(w.cpu().to(dtype), 15, False, True, 2.4, 100, 80)
        assert sr.shape == zr.shape == (0,) and sr.dtype == zr.dtype == torch.float32


def test_grid_search_one_column_and_empty(device):
    w = torch.tensor([[0.3], [-2.0], [0.0]], device=device)
    scale, zero = ops.grid_search(w, 15)
    torch.testing.assert_close(ops.fake_quant(w, scale, zero, 15), w, rtol=1e-6, atol=0)
    s, z = ops.grid_search(torch.empty(0, 7, device=device), 15)
    assert s.shape == z.shape == (0,)
    s, z = ops.grid_search(torch.empty(3, 0, device=device), 15)
    assert torch.equal(s.cpu(), torch.ones(3)) and torch.equal(z.cpu(), torch.zeros(3))


def test_grid_search_mse_not_worse_than_minmax(gen):
    w = torch.randn(32, 300, generator=gen)
    for maxq in (15, 3, 2):
        e_mse = _grid_error(w, *ops.grid_search(w, maxq), maxq)
        e_mm = _grid_error(w, *ops.grid_search(w, maxq, steps=1), maxq)
        assert torch.all(e_mse <= e_mm * (1 + 1e-6))
        assert float(e_mse.sum()) < float(e_mm.sum())


# ---------------------------------------------------------------------------------------
# 1.58-bit ternary grids


@pytest.mark.parametrize("method", ["mse", "absmean"])
def test_ternary_codes_have_three_values_per_row(device, gen, method):
    w = _weights((64, 576), torch.float32, gen, device)
    scale, zero = ops.ternary_grid(w, method=method)
    assert torch.all(zero == 1)
    codes = ops.quantize_codes(w, scale, zero, 2).cpu()
    for row in codes:
        assert sorted(torch.unique(row).tolist()) == [0, 1, 2]
    deq = ops.fake_quant(w, scale, zero, 2)
    for r in range(w.shape[0]):
        vals = torch.unique(deq[r]).cpu()
        assert len(vals) == 3 and vals[1] == 0 and vals[0] == -vals[2]


def test_ternary_absmean_is_bitnet_roundclip(gen):
    w = torch.randn(10, 77, generator=gen, dtype=torch.float64)
    w[2] = 0.0
    a, zero = ops.ternary_absmean(w)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a[[0, 1, 3]], w.abs().mean(1)[[0, 1, 3]].float())
    assert a[2] == 1.0
    a64 = a.double()[:, None]
    bitnet = a64 * torch.clamp(torch.round(w / a64), -1, 1)
    assert torch.equal(ops.fake_quant(w, a, zero, 2), bitnet)


def test_ternary_mse_is_symmetric_grid_search(gen):
    w = torch.randn(8, 50, generator=gen)
    s, z = ops.ternary_grid(w, method="mse")
    s2, z2 = ops.grid_search(w, 2, symmetric=True)
    assert torch.equal(s, s2) and torch.equal(z, z2)
    with pytest.raises(ValueError, match="method"):
        ops.ternary_grid(w, method="bitnet")


# ---------------------------------------------------------------------------------------
# opcheck and bad input


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_opcheck(device, gen, layout):
    w = _weights((6, 19), torch.float32, gen, device)
    if layout == "transposed":
        # Same [6, 19] values with strides (1, 6): the kernels return contiguous outputs,
        # and the fake kernels must say so (empty_like copied these strides).
        w = w.t().contiguous().t()
        assert not w.is_contiguous()
    scale = (torch.rand(6, generator=gen) + 0.1).to(device)
    zero = torch.randint(0, 16, (6,), generator=gen).float().to(device)
    torch.library.opcheck(torch.ops.ptqx.quantize_codes.default, (w, scale, zero, 15))
    torch.library.opcheck(torch.ops.ptqx.fake_quant.default, (w, scale, zero, 15))
    torch.library.opcheck(torch.ops.ptqx.grid_search.default, (w, 15, False, True, 2.4, 100, 80))
    torch.library.opcheck(
        torch.ops.ptqx.grid_search.default, (w.double(), 2, True, True, 2.0, 10, 5)
    )


def test_fake_quant_output_layout_under_compile(gen):
    """A layout-dependent use of the result traces: ``.view(-1)`` needs the contiguous
    output the kernel returns, which the fake kernel used to describe with the
    transposed input's strides (a tracing error under fullgraph)."""

    def f(w, s, z):
        return torch.ops.ptqx.fake_quant(w, s, z, 15).view(-1)[:7]

    w = torch.randn(6, 4, generator=gen).t()
    s, z = torch.rand(4, generator=gen) + 0.1, torch.full((4,), 3.0)
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(w, s, z)
    assert torch.equal(got, f(w, s, z))


def test_bad_inputs():
    w = torch.randn(4, 8)
    s, z = torch.ones(4), torch.zeros(4)
    with pytest.raises(TypeError, match="w: expected dtype"):
        ops.grid_search(w.half(), 15)
    with pytest.raises(TypeError, match="w: expected dtype"):
        ops.fake_quant(w.int(), s, z, 15)
    with pytest.raises(TypeError, match="w: expected a torch.Tensor"):
        ops.grid_search(w.numpy(), 15)
    for bad in (float("nan"), float("inf"), -float("inf")):
        wb = w.clone()
        wb[1, 2] = bad
        with pytest.raises(ValueError, match="w: contains 1 NaN/Inf"):
            ops.grid_search(wb, 15)
        with pytest.raises(ValueError, match="w: contains 1 NaN/Inf"):
            ops.quantize_codes(wb, s, z, 15)
        with pytest.raises(ValueError, match="w: contains 1 NaN/Inf"):
            ops.ternary_absmean(wb)
    for bad_scale in (torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([1.0, -1.0, 1.0, 1.0])):
        with pytest.raises(ValueError, match="scale: every per-channel scale must be > 0"):
            ops.fake_quant(w, bad_scale, z, 15)
    with pytest.raises(ValueError, match="scale: expected shape"):
        ops.fake_quant(w, torch.ones(3), z, 15)
    with pytest.raises(TypeError, match="zero: expected dtype"):
        ops.quantize_codes(w, s, z.double(), 15)
    for maxq in (0, 256, -1, True, 2.0):
        with pytest.raises(ValueError, match="maxq"):
            ops.grid_search(w, maxq)
        with pytest.raises(ValueError, match="maxq"):
            ops.fake_quant(w, s, z, maxq)
    with pytest.raises(ValueError, match="steps"):
        ops.grid_search(w, 15, steps=101)
    with pytest.raises(ValueError, match="steps"):
        ops.grid_search(w, 15, steps=0)
    with pytest.raises(ValueError, match="grid"):
        ops.grid_search(w, 15, grid=0)
    # bool is an int subclass, and the kernels hold grid in an int32.
    for grid in (True, 2**31, 2**32, 2.0):
        with pytest.raises(ValueError, match="grid: expected an int in"):
            ops.grid_search(w, 15, grid=grid, steps=1)
    with pytest.raises(ValueError, match="steps"):
        ops.grid_search(w, 15, grid=10, steps=True)
    ops.grid_search(w, 15, grid=2**31 - 1, steps=2)  # the largest grid is accepted
    for norm in (0.0, -2.4, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="norm"):
            ops.grid_search(w, 15, norm=norm)
    with pytest.raises(ValueError, match="include_zero"):
        ops.grid_search(w, 15, symmetric=True, include_zero=False)
    with pytest.raises(ValueError, match="w: expected at least 1 dimensions"):
        ops.grid_search(torch.tensor(1.0), 15)


def test_native_kernel_checks_its_arguments():
    """The CPU kernel itself rejects bad arguments (callers that bypass the wrapper)."""
    native_or_skip("grid_search")
    w = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="maxq"):
        torch.ops.ptqx.grid_search(w, 0, False, True, 2.4, 100, 80)
    with pytest.raises(RuntimeError, match="steps"):
        torch.ops.ptqx.grid_search(w, 15, False, True, 2.4, 10, 80)
    with pytest.raises(RuntimeError, match="norm"):
        torch.ops.ptqx.grid_search(w, 15, False, True, -1.0, 100, 80)
    with pytest.raises(RuntimeError, match="w: expected float32 or float64"):
        torch.ops.ptqx.grid_search(w.half(), 15, False, True, 2.4, 100, 80)
    # grid is an int32 in the kernel: 2^32 used to wrap to 0 and give NaN scales.
    for grid in (2**31, 2**32):
        with pytest.raises(RuntimeError, match="grid: expected <= 2147483647"):
            torch.ops.ptqx.grid_search(w, 15, False, True, 2.4, grid, 1)
