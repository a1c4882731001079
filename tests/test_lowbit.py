"""Packed low-bit weights: exact pack/unpack, packed linear vs reference and F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptqx.ops import lowbit_linear, lowbit_linear_int8act, pack_weights, reference, unpack_weights
from ptqx.ops.lowbit import packed_row_bytes

from .conftest import native_or_skip

# (rows, cols): 1 row, 1 col, primes, non-multiples of the 64/128-code blocks, exact
# multiples, empty rows/cols, and one CIFAR ResNet-18-like shape.
PACK_SHAPES = [
    (1, 1),
    (1, 127),
    (7, 1),
    (3, 64),
    (5, 128),
    (13, 129),
    (31, 257),
    (2, 1000),
    (0, 5),
    (4, 0),
    (0, 0),
    (64, 576),
]
# bits, largest code used: ternary is 2-bit storage with codes 0..2.
LEVELS = [(2, 3), (2, 2), (4, 15)]


def _codes(rows, cols, maxq, gen, device):
    return torch.randint(0, maxq + 1, (rows, cols), generator=gen, dtype=torch.int64).to(
        device, torch.uint8
    )


@pytest.mark.parametrize("bits,maxq", LEVELS, ids=["2bit", "ternary", "4bit"])
@pytest.mark.parametrize("shape", PACK_SHAPES, ids=str)
def test_pack_round_trip_exact(shape, bits, maxq, gen, device):
    native_or_skip("pack_weights", device)
    native_or_skip("unpack_weights", device)
    codes = _codes(*shape, maxq, gen, device)
    packed = pack_weights(codes, bits)
    assert packed.dtype == torch.uint8 and packed.device == codes.device
    assert tuple(packed.shape) == (shape[0], packed_row_bytes(shape[1], bits))
    # The kernel's bytes are the documented layout (the reference), bit for bit.
    assert torch.equal(packed.cpu(), reference.pack_weights(codes.cpu(), bits))
    out = unpack_weights(packed, bits, shape[1])
    assert out.dtype == torch.uint8
    assert torch.equal(out, codes)
    assert torch.equal(reference.unpack_weights(packed.cpu(), bits, shape[1]), codes.cpu())


def test_layout_is_interleaved_words():
    # Column 8k + l of block 0 sits in word l at bits [k*bits, (k+1)*bits): with code
    # (c // 8) at column c, word l of a 4-bit block is 0x76543210 for every l.
    codes = (torch.arange(64) // 8).reshape(1, 64).to(torch.uint8)
    words = pack_weights(codes, 4).reshape(8, 4).to(torch.int64)
    assert torch.equal(words, torch.tensor([[0x10, 0x32, 0x54, 0x76]] * 8))
    # 2-bit: code (c // 8) % 4 at column c gives crumbs 0,1,2,3,0,1,... -> 0xE4E4E4E4.
    codes2 = ((torch.arange(128) // 8) % 4).reshape(1, 128).to(torch.uint8)
    assert torch.equal(pack_weights(codes2, 2), torch.full((1, 32), 0xE4, dtype=torch.uint8))
    # Padding columns are zero bits.
    assert pack_weights(torch.full((1, 1), 3, dtype=torch.uint8), 2)[0, 1:].eq(0).all()


def test_pack_accepts_integer_dtypes(gen):
    codes = _codes(5, 70, 15, gen, "cpu")
    want = pack_weights(codes, 4)
    for dt in (torch.int8, torch.int16, torch.int32, torch.int64):
        assert torch.equal(pack_weights(codes.to(dt), 4), want)


def _quantized_layer(rows, cols, bits, maxq, gen, device):
    codes = _codes(rows, cols, maxq, gen, "cpu")
    scale = (torch.rand(rows, generator=gen) * 0.1 + 1e-3).to(device)
    zero = torch.randint(0, maxq + 1, (rows,), generator=gen).to(torch.float32).to(device)
    return codes.to(device), pack_weights(codes.to(device), bits), scale, zero


def _dequant64(codes, scale, zero):
    return scale.double()[:, None] * (codes.double() - zero.double()[:, None])


# (leading dims of x, rows, cols): batch 1, odd batches, extra leading dims, shapes around
# the kernels' row/column tiles, and batches that take the large-batch (GEMM) path.
LINEAR_CASES = [
    ((1,), 1, 1),
    ((1,), 17, 131),
    ((3,), 64, 576),
    ((5,), 33, 64),
    ((2, 3), 10, 129),
    ((1, 1, 7), 9, 300),
    ((8,), 130, 1000),
    ((13,), 127, 255),
    ((64,), 70, 190),
    ((257,), 65, 130),
    # GEMM path: several 256-column K blocks with a ragged last one, rows not a multiple
    # of the 16-row panel, tokens not a multiple of the 6-token micro-tile, and more
    # tokens than one 384-token M block.
    ((3, 11), 33, 513),
    ((40,), 37, 700),
    ((400,), 20, 300),
    # Layers with >= 512 rows copy x into micro-tile order first: a few tokens with a
    # short last tile; and two M blocks whose outputs per thread overflow L2, so panels
    # run in groups of 4 with a ragged last group, a 2-row last panel and a K block of
    # 9 columns (8 transposed in registers + 1 copied singly).
    ((20,), 512, 300),
    ((700,), 530, 777),
    ((0,), 5, 20),
    ((4,), 0, 20),
    ((3,), 6, 0),
]


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("bits,maxq", LEVELS, ids=["2bit", "ternary", "4bit"])
@pytest.mark.parametrize("case", LINEAR_CASES, ids=str)
def test_lowbit_linear_matches_reference(case, bits, maxq, with_bias, gen, device):
    native_or_skip("lowbit_linear", device)
    lead, rows, cols = case
    codes, packed, scale, zero = _quantized_layer(rows, cols, bits, maxq, gen, device)
    x = torch.randn(*lead, cols, generator=gen).to(device)
    bias = torch.randn(rows, generator=gen).to(device) if with_bias else None

    y = lowbit_linear(x, packed, scale, zero, bits, bias)
    assert y.shape == (*lead, rows) and y.dtype == torch.float32

    w32 = scale[:, None] * (codes.float() - zero[:, None])  # the fake-quant weight, fp32
    y_fl = F.linear(x, w32, bias)  # what the fake-quant model computes
    # The reference is, by construction, F.linear on the dequantized weights.
    cpu_bias = None if bias is None else bias.cpu()
    y_ref = reference.lowbit_linear(x.cpu(), packed.cpu(), scale.cpu(), zero.cpu(), bits, cpu_bias)
    assert torch.equal(y_ref, F.linear(x.cpu(), w32.cpu(), cpu_bias))
    y64 = F.linear(
        x.double(), _dequant64(codes, scale, zero), None if bias is None else bias.double()
    )
    # flash-attention's rule: the kernel's error against the float64 result is at most
    # twice that of the fp32 F.linear on the dequantized weights (itself a valid fp32
    # answer), plus a tiny absolute slack for entries where the fp32 error is ~0; the
    # slack scales with the size of the terms summed (|x| |w| summed over C).
    mag = (
        F.linear(x.double().abs(), _dequant64(codes, scale, zero).abs()).max().item()
        if y.numel()
        else 0.0
    )
    err_k = (y.double() - y64).abs().max().item() if y.numel() else 0.0
    err_f = (y_fl.double() - y64).abs().max().item() if y.numel() else 0.0
    assert err_k <= 2 * err_f + 1e-6 * mag + 1e-7, (err_k, err_f, mag)


def test_lowbit_linear_very_wide_layer(gen):
    # 384 tokens x 21824 columns: the GEMM's copy of x (> 32 MiB) is allocated for the call
    # instead of in the buffer each thread keeps (csrc/include/ptqx/lowbit_gemm.h).
    native_or_skip("lowbit_linear")
    rows, cols = 512, 21824
    codes, packed, scale, zero = _quantized_layer(rows, cols, 2, 3, gen, "cpu")
    x = torch.randn(384, cols, generator=gen)
    y = lowbit_linear(x, packed, scale, zero, 2)
    w = scale[:, None] * (codes.float() - zero[:, None])
    want = F.linear(x.double(), w.double())
    err_k = (y.double() - want).abs().max().item()
    err_f = (F.linear(x, w).double() - want).abs().max().item()
    assert err_k <= 2 * err_f + 1e-6, (err_k, err_f)


def test_lowbit_linear_nan_propagates(gen):
    codes, packed, scale, zero = _quantized_layer(6, 100, 2, 3, gen, "cpu")
    x = torch.randn(3, 100, generator=gen)
    x[1, 17] = float("nan")
    y = lowbit_linear(x, packed, scale, zero, 2)
    want = F.linear(x, scale[:, None] * (codes.float() - zero[:, None]))
    assert torch.equal(y.isnan(), want.isnan())
    assert y[1].isnan().all() and not y[0].isnan().any()


def test_lowbit_linear_non_contiguous_x(gen):
    native_or_skip("lowbit_linear")
    codes, packed, scale, zero = _quantized_layer(20, 70, 4, 15, gen, "cpu")
    x = torch.randn(70, 9, generator=gen).t()
    y = lowbit_linear(x, packed, scale, zero, 4)
    torch.testing.assert_close(y, reference.lowbit_linear(x.contiguous(), packed, scale, zero, 4))


# ---------------------------------------------------------------------------------------
# opcheck: schema, fake kernel, and dispatch consistency of every op.


@pytest.mark.parametrize("bits", [2, 4])
def test_opcheck(bits, gen, device):
    codes, packed, scale, zero = _quantized_layer(11, 133, bits, (1 << bits) - 1, gen, device)
    x = torch.randn(3, 133, generator=gen).to(device)
    bias = torch.randn(11, generator=gen).to(device)
    torch.library.opcheck(torch.ops.ptqx.pack_weights.default, (codes, bits))
    torch.library.opcheck(torch.ops.ptqx.unpack_weights.default, (packed, bits, 133))
    torch.library.opcheck(
        torch.ops.ptqx.lowbit_linear.default, (x, packed, scale, zero, bits, bias)
    )
    torch.library.opcheck(
        torch.ops.ptqx.lowbit_linear.default, (x, packed, scale, zero, bits, None)
    )
    # Non-contiguous inputs: the outputs are contiguous whichever kernel serves the op.
    x_t = x.t().contiguous().t()
    codes_t = codes.t().contiguous().t()
    assert not x_t.is_contiguous() and not codes_t.is_contiguous()
    torch.library.opcheck(torch.ops.ptqx.pack_weights.default, (codes_t, bits))
    torch.library.opcheck(
        torch.ops.ptqx.lowbit_linear.default, (x_t, packed, scale, zero, bits, bias)
    )


# ---------------------------------------------------------------------------------------
# Bad inputs: a clear error naming the argument.


def test_bad_pack_inputs():
    ok = torch.zeros(3, 10, dtype=torch.uint8)
    with pytest.raises(ValueError, match="bits"):
        pack_weights(ok, 3)
    with pytest.raises(ValueError, match="bits"):
        pack_weights(ok, 8)
    with pytest.raises(TypeError, match="codes.*dtype"):
        pack_weights(ok.float(), 2)
    with pytest.raises(ValueError, match="codes.*dimensions"):
        pack_weights(ok[0], 2)
    with pytest.raises(ValueError, match=r"codes: values must lie in \[0, 3\]"):
        pack_weights(torch.full((2, 2), 4, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match=r"codes: values must lie in \[0, 15\]"):
        pack_weights(torch.full((2, 2), -1, dtype=torch.int32), 4)


def test_bad_unpack_inputs():
    packed = pack_weights(torch.zeros(3, 10, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="packed.*bytes per row"):
        unpack_weights(packed, 2, 200)
    with pytest.raises(ValueError, match="cols"):
        unpack_weights(packed, 2, -1)
    with pytest.raises(TypeError, match="packed.*dtype"):
        unpack_weights(packed.to(torch.int32), 2, 10)
    with pytest.raises(ValueError, match="bits"):
        unpack_weights(packed, 3, 10)


def test_bad_linear_inputs(gen):
    codes, packed, scale, zero = _quantized_layer(6, 100, 2, 3, gen, "cpu")
    x = torch.randn(2, 100, generator=gen)
    with pytest.raises(TypeError, match="x.*dtype"):
        lowbit_linear(x.double(), packed, scale, zero, 2)
    with pytest.raises(ValueError, match="packed.*input features"):
        lowbit_linear(torch.randn(2, 200), packed, scale, zero, 2)
    with pytest.raises(ValueError, match="packed.*input features"):
        lowbit_linear(x, packed, scale, zero, 4)  # 100 cols at 4 bits need 64 bytes, not 32
    with pytest.raises(ValueError, match="scale.*shape"):
        lowbit_linear(x, packed, scale[:5], zero, 2)
    with pytest.raises(ValueError, match="zero.*shape"):
        lowbit_linear(x, packed, scale, zero[:1], 2)
    with pytest.raises(ValueError, match="scale.*NaN"):
        lowbit_linear(x, packed, torch.full_like(scale, float("nan")), zero, 2)
    with pytest.raises(ValueError, match="zero.*NaN"):
        lowbit_linear(x, packed, scale, torch.full_like(zero, float("inf")), 2)
    with pytest.raises(ValueError, match="bias.*shape"):
        lowbit_linear(x, packed, scale, zero, 2, torch.zeros(7))
    with pytest.raises(TypeError, match="packed.*dtype"):
        lowbit_linear(x, packed.to(torch.int16), scale, zero, 2)
    with pytest.raises(ValueError, match="bits"):
        lowbit_linear(x, packed, scale, zero, 3)
    with pytest.raises(TypeError, match="scale.*dtype"):
        lowbit_linear(x, packed, scale.double(), zero, 2)


# ---------------------------------------------------------------------------------------
# lowbit_linear_int8act: packed weights x dynamically int8-quantized activations (opt-in).
# The math is integer up to three float32 roundings that the kernel and the reference do
# in the same order, so kernel == reference exactly.

INT8ACT_CASES = [
    ((1,), 1, 1),
    ((1,), 17, 131),
    ((2,), 2, 127),
    ((3,), 64, 576),
    ((4,), 5, 128),
    ((5,), 33, 64),
    ((2, 3), 10, 129),
    ((1, 1, 7), 9, 300),
    ((8,), 130, 1000),
    ((13,), 127, 255),
    ((20,), 31, 1281),  # > 10 2-bit blocks: several s16 runs per row
    ((9,), 3, 4097),
    ((0,), 5, 20),
    ((4,), 0, 20),
    ((3,), 6, 0),
]


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("bits,maxq", LEVELS, ids=["2bit", "ternary", "4bit"])
@pytest.mark.parametrize("case", INT8ACT_CASES, ids=str)
def test_int8act_matches_reference_exactly(case, bits, maxq, with_bias, gen, device):
    native_or_skip("lowbit_linear_int8act", device)
    lead, rows, cols = case
    codes, packed, scale, zero = _quantized_layer(rows, cols, bits, maxq, gen, device)
    x = (torch.randn(*lead, cols, generator=gen) * 3).to(device)
    bias = torch.randn(rows, generator=gen).to(device) if with_bias else None
    y = lowbit_linear_int8act(x, packed, scale, zero, bits, bias)
    assert y.shape == (*lead, rows) and y.dtype == torch.float32 and y.device == x.device
    cpu_bias = None if bias is None else bias.cpu()
    want = reference.lowbit_linear_int8act(
        x.cpu(), packed.cpu(), scale.cpu(), zero.cpu(), bits, cpu_bias
    )
    assert torch.equal(y.cpu(), want)


def test_int8act_reference_is_the_integer_formula(gen):
    # The reference against the spec written out with int64 tensors and explicit loops.
    codes, packed, scale, zero = _quantized_layer(7, 150, 4, 15, gen, "cpu")
    x = torch.randn(3, 150, generator=gen)
    x[1] = 0.0
    bias = torch.randn(7, generator=gen)
    y = reference.lowbit_linear_int8act(x, packed, scale, zero, 4, bias)
    for t in range(3):
        amax = x[t].abs().max()
        s = amax / 127 if amax > 0 else torch.tensor(1.0)
        xq = torch.clamp(torch.round(x[t] / s), -127, 127).to(torch.int64)
        for r in range(7):
            acc = int((codes[r].to(torch.int64) * xq).sum()) - int(zero[r]) * int(xq.sum())
            want = s * (scale[r] * torch.tensor(float(acc), dtype=torch.float32)) + bias[r]
            assert torch.equal(y[t, r], want)
    assert torch.equal(y[1], bias)  # all-zero token: bias only


def test_int8act_extreme_activations_match_reference(gen, device):
    # Ties at .5 (round half to even), the clamp at +-127, huge and tiny magnitudes.
    native_or_skip("lowbit_linear_int8act", device)
    codes, packed, scale, zero = _quantized_layer(9, 200, 2, 3, gen, device)
    x = torch.randn(6, 200, generator=gen)
    x[0, :3] = torch.tensor([127.0, 0.5, -1.5])  # amax 127: s_x = 1 -> exact .5 ties
    x[0, 3:] = torch.arange(197) % 5 - 2.5
    x[1] *= 1e30
    x[2] *= 1e-30
    x[3] = 0.0
    x[3, 5] = 1e-44  # subnormal amax: amax / 127 underflows to 0, s_x = 1 -> xq = 0
    x[4, ::2] = -3.0
    x[5] = torch.finfo(torch.float32).max * torch.sign(x[5])
    x = x.to(device)
    y = lowbit_linear_int8act(x, packed, scale, zero, 2)
    want = reference.lowbit_linear_int8act(x.cpu(), packed.cpu(), scale.cpu(), zero.cpu(), 2)
    assert torch.equal(y.cpu(), want)
    assert y[:5].isfinite().all()  # row 5 (|x| = FLT_MAX) may overflow, as F.linear does
    assert y[3].eq(0).all()


@pytest.mark.parametrize("bits,maxq", LEVELS, ids=["2bit", "ternary", "4bit"])
def test_int8act_close_to_fp32_lowbit_linear(bits, maxq, gen, device):
    # Only the activations are rounded: |xq * s_x - x| <= s_x / 2 = amax / 254 per entry,
    # independent and roughly uniform, so the output error is about
    # (amax / 254) * sqrt(sum_c w_rc^2 / 3) per entry (w = scale * (code - zero)). Bound:
    # 5x that (a 5-sigma event is far beyond these few thousand outputs).
    rows, cols = 96, 1024
    codes, packed, scale, zero = _quantized_layer(rows, cols, bits, maxq, gen, device)
    x = torch.randn(8, cols, generator=gen).to(device)
    y8 = lowbit_linear_int8act(x, packed, scale, zero, bits)
    y32 = lowbit_linear(x, packed, scale, zero, bits)
    w = scale[:, None] * (codes.float() - zero[:, None])
    amax = x.abs().amax(dim=1, keepdim=True)
    sigma = amax / 254 * (w.square().sum(dim=1)[None, :] / 3).sqrt()
    err = (y8 - y32).abs()
    assert (err <= 5 * sigma + 1e-6).all(), (err / sigma).max()
    # And it is a good approximation overall (relative Frobenius error ~1%).
    assert (y8 - y32).norm() <= 0.02 * y32.norm()


def test_int8act_non_finite_token_gives_nan_row_only(gen, device):
    codes, packed, scale, zero = _quantized_layer(6, 100, 2, 3, gen, device)
    bias = torch.randn(6, generator=gen).to(device)
    x = torch.randn(4, 100, generator=gen)
    x[1, 17] = float("nan")
    x[2, 99] = float("inf")
    x = x.to(device)
    y = lowbit_linear_int8act(x, packed, scale, zero, 2, bias)
    assert y[1].isnan().all() and y[2].isnan().all()
    assert y[0].isfinite().all() and y[3].isfinite().all()
    # The other tokens are what they are on their own.
    ok = lowbit_linear_int8act(x[[0, 3]], packed, scale, zero, 2, bias)
    assert torch.equal(y[[0, 3]], ok)


def test_int8act_zero_token_gives_bias(gen, device):
    codes, packed, scale, zero = _quantized_layer(11, 77, 4, 15, gen, device)
    bias = torch.randn(11, generator=gen).to(device)
    y = lowbit_linear_int8act(torch.zeros(2, 77, device=device), packed, scale, zero, 4, bias)
    assert torch.equal(y, bias.expand(2, 11))
    y0 = lowbit_linear_int8act(torch.zeros(1, 77, device=device), packed, scale, zero, 4)
    assert y0.eq(0).all()


def test_int8act_non_contiguous_x(gen):
    native_or_skip("lowbit_linear_int8act")
    codes, packed, scale, zero = _quantized_layer(20, 70, 4, 15, gen, "cpu")
    x = torch.randn(70, 9, generator=gen).t()
    y = lowbit_linear_int8act(x, packed, scale, zero, 4)
    want = reference.lowbit_linear_int8act(x.contiguous(), packed, scale, zero, 4)
    assert torch.equal(y, want)


@pytest.mark.parametrize("bits", [2, 4])
def test_int8act_opcheck(bits, gen, device):
    codes, packed, scale, zero = _quantized_layer(11, 133, bits, (1 << bits) - 1, gen, device)
    x = torch.randn(3, 133, generator=gen).to(device)
    bias = torch.randn(11, generator=gen).to(device)
    op = torch.ops.ptqx.lowbit_linear_int8act.default
    torch.library.opcheck(op, (x, packed, scale, zero, bits, bias))
    torch.library.opcheck(op, (x, packed, scale, zero, bits, None))
    x_t = x.t().contiguous().t()  # same values, strides (1, 3)
    assert not x_t.is_contiguous()
    torch.library.opcheck(op, (x_t, packed, scale, zero, bits, bias))


def test_int8act_bad_inputs(gen, device):
    codes, packed, scale, zero = _quantized_layer(6, 100, 2, 3, gen, device)
    x = torch.randn(2, 100, generator=gen).to(device)
    for bad_zero, val in ((1.5, "1.5"), (-1.0, "-1"), (4.0, "4"), (float("nan"), "")):
        z = zero.clone()
        z[3] = bad_zero
        with pytest.raises(ValueError, match=f"zero.*integer values in \\[0, 3\\].*{val}"):
            lowbit_linear_int8act(x, packed, scale, z, 2)
    z15 = torch.full_like(zero, 15.0)  # fine at 4 bits, out of range at 2
    with pytest.raises(ValueError, match="zero"):
        lowbit_linear_int8act(x, packed, scale, z15, 2)
    with pytest.raises(ValueError, match="scale.*NaN"):
        lowbit_linear_int8act(x, packed, torch.full_like(scale, float("nan")), zero, 2)
    with pytest.raises(TypeError, match="x.*dtype"):
        lowbit_linear_int8act(x.double(), packed, scale, zero, 2)
    with pytest.raises(ValueError, match="packed.*input features"):
        lowbit_linear_int8act(x, packed, scale, zero, 4)
    with pytest.raises(ValueError, match="bias.*shape"):
        lowbit_linear_int8act(x, packed, scale, zero, 2, torch.zeros(7, device=device))
    with pytest.raises(ValueError, match="bits"):
        lowbit_linear_int8act(x, packed, scale, zero, 3)
    with pytest.raises(ValueError, match="scale.*shape"):
        lowbit_linear_int8act(x, packed, scale[:5], zero, 2)


def test_int8act_too_many_columns_raises():
    cols = (1 << 20) + 1
    packed = torch.zeros(1, packed_row_bytes(cols, 2), dtype=torch.uint8)
    one = torch.ones(1)
    with pytest.raises(ValueError, match="x.*at most 1048576 input features"):
        lowbit_linear_int8act(torch.zeros(1, cols), packed, one, one, 2)
    with pytest.raises(ValueError, match="x.*at most 1048576 input features"):
        torch.ops.ptqx.lowbit_linear_int8act(torch.zeros(1, cols), packed, one, one, 2, None)


def test_int8act_native_binding_checks_zero(gen):
    # The op itself (not only the wrapper) refuses a non-integer zero.
    native_or_skip("lowbit_linear_int8act")
    codes, packed, scale, zero = _quantized_layer(6, 100, 2, 3, gen, "cpu")
    z = zero.clone()
    z[2] = 0.25
    with pytest.raises(ValueError, match="zero"):
        torch.ops.ptqx.lowbit_linear_int8act(torch.randn(2, 100), packed, scale, z, 2, None)


def test_int8act_reference_checks_zero_and_cols(gen):
    # The reference is the default kernel on devices without a native one: it refuses
    # what the native kernels refuse.
    codes, packed, scale, zero = _quantized_layer(4, 30, 2, 3, gen, "cpu")
    z = zero.clone()
    z[0] = 2.5
    with pytest.raises(ValueError, match="zero"):
        reference.lowbit_linear_int8act(torch.randn(1, 30), packed, scale, z, 2)
