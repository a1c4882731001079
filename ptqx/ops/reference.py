"""Pure-PyTorch references for every ``torch.ops.ptqx`` op.

Each function follows the published algorithm it cites, line by line where possible,
and is the semantics the native kernels are tested against. They are also registered as
the default (CompositeExplicitAutograd) kernels, so ptqx still works where nothing was
compiled. Inputs are assumed validated by the public wrappers in ``ptqx.ops``.
"""

from __future__ import annotations

import math

import torch


def _per_row(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-output-channel vector [R] to broadcast against ``like`` [R, ...]."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------------------------
# Uniform grid (GPTQ/OBC ``quant.py``: quantize / Quantizer.find_params)


def quantize_codes(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int
) -> torch.Tensor:
    """Integer codes ``clamp(round(w / scale) + zero, 0, maxq)`` as uint8, shape of ``w``.

    ``torch.round`` rounds half to even, as does the native kernels' ``nearbyint``.
    """
    s, z = _per_row(scale, w), _per_row(zero, w)
    return torch.clamp(torch.round(w / s) + z, 0, maxq).to(torch.uint8)


def fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Quantize-dequantize: ``scale * (clamp(round(w / scale) + zero, 0, maxq) - zero)``."""
    s, z = _per_row(scale, w), _per_row(zero, w)
    q = torch.clamp(torch.round(w / s) + z, 0, maxq)
    return s * (q - z)


def symmetric_zero(maxq: int) -> float:
    """Zero point of the symmetric grid: the middle code (8 of 0..15, 1 of {0,1,2}).

    OBC writes ``(maxq + 1) / 2``, which equals this for its odd ``maxq = 2^b - 1``;
    for the ternary ``maxq = 2`` it would give 1.5, a zero that is not a code, so the
    middle code 1 is used and the grid is {-s, 0, +s}.
    """
    return float((maxq + 1) // 2)


def grid_range(
    xmin: torch.Tensor, xmax: torch.Tensor, symmetric: bool, include_zero: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (lo, hi) before shrinking, from the row min/max (float32 [R] each).

    OBC ``Quantizer.find_params``: clamp the range to contain 0, then for the symmetric
    grid use ``max(|lo|, hi)`` on both sides (only when ``lo < 0``: OBC's all-non-negative
    row keeps ``lo = 0``, a quirk reproduced here), then an all-zero row becomes (-1, +1).
    Extension for ``include_zero=False`` (OBC always includes 0): a constant row ``c != 0``
    gets the range spanning ``c`` and 0, so ``c`` lies on the grid.
    """
    if include_zero:
        xmin = torch.clamp(xmin, max=0)
        xmax = torch.clamp(xmax, min=0)
    if symmetric:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    zero_row = (xmin == 0) & (xmax == 0)
    constant = (xmin == xmax) & ~zero_row
    lo = torch.where(zero_row, -1.0, torch.where(constant, torch.clamp(xmin, max=0), xmin))
    hi = torch.where(zero_row, 1.0, torch.where(constant, torch.clamp(xmax, min=0), xmax))
    return lo, hi


def _grid_error_factor(lo: torch.Tensor, hi: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-row ``2^-k`` [R, 1] in ``dtype`` with ``max(|lo|, |hi|) = f * 2^k``, f in [0.5, 1).

    ``k`` is clamped to >= -126 so the factor is a float32; 1 for an infinite range. Built
    from the float64 bit pattern, so the factor is an exact power of two (as the kernels'
    ``ldexp``); ``grid_error_exponent`` in csrc/include/ptqx/grid.h.
    """
    m = torch.maximum(lo.abs(), hi.abs())
    k = torch.frexp(m).exponent.to(torch.int64).clamp(min=-126)
    k = torch.where(torch.isfinite(m), k, 0)
    factor = ((1023 - k) << 52).view(torch.float64)
    return factor.to(dtype).unsqueeze(1)


def grid_search(
    w: torch.Tensor,
    maxq: int,
    symmetric: bool,
    include_zero: bool,
    norm: float,
    grid: int,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale/zero by shrinking the range, as OBC's ``Quantizer.find_params``.

    Follows IST-DASLab/OBC ``quant.py`` (``Quantizer.find_params`` with ``perchannel``,
    ``weight=True``, ``mse=True``; GPTQ's ``quant.py`` is the same code):
    the range (lo, hi) is :func:`grid_range`; candidate ``i`` in ``range(steps)`` shrinks
    it by ``p = 1 - i / grid``, takes ``scale = (p*hi - p*lo) / maxq`` and
    ``zero = round(-p*lo / scale)`` (or the middle code when symmetric) and scores
    ``sum |fake_quant(w) - w|^norm`` over the row; the first strictly better candidate
    wins (``err < best``), and candidate 0 (the full range) is OBC's starting point.
    ``steps=1`` is plain min/max; OBC's MSE search is ``grid=100, steps=80``
    (``maxshrink=0.8``: p = 1, 0.99, ..., 0.21) with ``norm=2.4``.

    Precision: the range and candidates are computed in float32 (``p`` rounded to float32
    first, as torch does with a Python scalar times a float32 tensor), so the search
    ranks exactly the float32 (scale, zero) that are returned and later used; the error
    is evaluated in the dtype of ``w`` (float32 for OBC's float32 weights).

    Two departures from OBC, both only at the edges of the float range:

    - each row's errors are multiplied by a power of two ``2^-k`` with
      ``max(|lo|, |hi|) = f * 2^k`` (``f`` in [0.5, 1), ``k >= -126``) before the power:
      the same factor for every candidate leaves the ranking as it is and is exact, but
      ``|e|^norm`` no longer underflows or overflows (float64 rows at 1e-20 or 1e30,
      float32 rows whose sum of powers passes 3.4e38);
    - a row whose full-range scale ``(hi - lo) / maxq`` rounds to 0 in float32 (subnormal
      weights; OBC returns scale 0 and zero NaN) gets the all-zero row's range (-1, +1),
      and a candidate whose scale is 0 or inf (a range overflowing float32) is never
      picked, except candidate 0 as the starting point (OBC's error is NaN there).
      ``ptqx.ops.grid_search`` rejects a row left with an infinite scale.

    Args:
        w: float32/float64 [R, ...]; each row is one output channel.
    Returns:
        (scale, zero): float32 [R] each.
    """
    rows = w.shape[0]
    x = w.reshape(rows, math.prod(w.shape[1:]))  # -1 is ambiguous when rows == 0
    f32 = torch.float32
    if x.shape[1] == 0:
        return torch.ones(rows, device=w.device), torch.zeros(rows, device=w.device)
    lo, hi = grid_range(
        x.min(dim=1).values.to(f32), x.max(dim=1).values.to(f32), symmetric, include_zero
    )
    # (hi - lo) / maxq is candidate 0's scale (p = 1 is exact): 0 only for subnormal rows.
    no_grid = ~((hi - lo) / maxq > 0)
    lo = torch.where(no_grid, -1.0, lo)
    hi = torch.where(no_grid, 1.0, hi)
    norm_k = _grid_error_factor(lo, hi, x.dtype)
    sym_zero = torch.full((rows,), symmetric_zero(maxq), device=w.device)
    best = torch.full((rows,), float("inf"), dtype=x.dtype, device=w.device)
    best_scale = best_zero = None
    for i in range(max(steps, 1)):
        p = torch.tensor(1 - i / grid, dtype=f32, device=w.device)
        lo1, hi1 = p * lo, p * hi
        scale1 = (hi1 - lo1) / maxq
        zero1 = sym_zero if symmetric else torch.round(-lo1 / scale1)
        err = (
            ((fake_quant(x, scale1.to(x.dtype), zero1.to(x.dtype), maxq) - x).abs() * norm_k)
            .pow(norm)
            .sum(dim=1)
        )
        if best_scale is None:  # OBC starts from the full range before the MSE loop
            best_scale, best_zero = scale1.clone(), zero1.clone()
        better = (err < best) & (scale1 > 0) & torch.isfinite(scale1)
        best = torch.where(better, err, best)
        best_scale = torch.where(better, scale1, best_scale)
        best_zero = torch.where(better, zero1, best_zero)
    return best_scale, best_zero


# ---------------------------------------------------------------------------------------
# OBC row-wise greedy quantization (Frantar & Alistarh 2022, IST-DASLab/OBC trueobs.py)


def obc_compute_dtype(weight: torch.Tensor, hinv: torch.Tensor) -> torch.dtype:
    """OBC runs in the wider of the two input dtypes (f32 weights + f64 hinv -> float64).

    The official code runs everything in float32 (it casts H to float before inverting);
    pass float32 ``hinv`` for that. Q is returned in ``weight``'s dtype, which is exact:
    ``scale * (code - zero)`` with a float32 scale and a small integer is the same number
    whether it is formed in float32 or formed in float64 and rounded to float32.
    """
    return torch.promote_types(weight.dtype, hinv.dtype)


def obc_quantize_rows_order(
    weight: torch.Tensor, hinv: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """OBC greedy quantization of each row; also returns the order the entries were picked.

    Follows ``TrueOBS.quantize`` of IST-DASLab/OBC (``trueobs.py``; Frantar & Alistarh,
    "Optimal Brain Compression", NeurIPS 2022) one row at a time, with every row starting
    from the same ``hinv``. For each of the C steps of a row:

    1. ``q = fake_quant(w)`` and ``err = (w - q)^2``; ``scores = err / diag(Hinv)``, with
       entries already quantized set to +inf in ``scores`` and 0 in ``err``;
    2. ``j = argmin(scores)`` (ties: lowest index; a NaN score wins, as torch.argmin);
    3. outlier rule: if some ``err > 0.25 * scale^2`` and ``w[j] != 0``, then
       ``j = argmax(err)`` instead;
    4. ``Q[j] = q[j]``; ``w -= Hinv[j, :] * (w[j] - q[j]) / d`` with ``d = Hinv[j, j]``;
    5. ``u = Hinv[j, :] / sqrt(d)``; ``Hinv -= u u^T`` (entry j's row and column become 0).

    Not reproduced: the official ``prepare_sparse`` step, which re-inverts H per row with
    the rows/columns of exactly-zero weights removed and pre-masks some of them, with a
    count that depends on how rows are batched in groups of 32. For dead inputs (H_ii = 0,
    W[:, i] = 0, as OBC prepares them) it changes nothing; callers who want it for other
    exact zeros can pass per-row calls. The per-step losses are not returned.

    Args:
        weight: float32/float64 [R, C].
        hinv: float32/float64 [C, C], symmetric positive definite (inverse Hessian).
        scale, zero: float32 [R]: the per-row grid, fixed before the updates.
        maxq: largest code.
    Returns:
        (Q, order): Q [R, C] in ``weight``'s dtype holds the dequantized values
        ``scale * (code - zero)``; order int64 [R, C], ``order[r, k]`` the column picked
        at step k of row r.
    """
    dtype = obc_compute_dtype(weight, hinv)
    W = weight.to(dtype)
    H0 = hinv.to(dtype)
    rows, cols = W.shape
    Q = torch.zeros_like(W)
    order = torch.zeros((rows, cols), dtype=torch.int64, device=W.device)
    for r in range(rows):
        w = W[r].clone()
        h = H0.clone()
        mask = torch.zeros(cols, dtype=torch.bool, device=W.device)
        s = scale[r].to(dtype)
        z = zero[r].to(dtype)
        outlier = 0.25 * s**2
        for step in range(cols):
            q = s * (torch.clamp(torch.round(w / s) + z, 0, maxq) - z)
            err = (w - q) ** 2
            diag = torch.diagonal(h)
            scores = err / diag
            scores[mask] = float("inf")
            err[mask] = 0
            j = int(torch.argmin(scores))
            if bool((err > outlier).any()) and bool(w[j] != 0):
                j = int(torch.argmax(err))
            Q[r, j] = q[j]
            order[r, step] = j
            row = h[j].clone()
            d = h[j, j].clone()
            w -= row * ((w[j] - q[j]) / d)
            mask[j] = True
            row /= torch.sqrt(d)
            h -= torch.outer(row, row)
    return Q.to(weight.dtype), order


def obc_quantize_rows(
    weight: torch.Tensor, hinv: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int
) -> torch.Tensor:
    """OBC greedy quantization of every row; see :func:`obc_quantize_rows_order`."""
    return obc_quantize_rows_order(weight, hinv, scale, zero, maxq)[0]


# ---------------------------------------------------------------------------------------
# Packed low-bit weights


PACK_BITS = (2, 4)
PACK_BLOCK_BYTES = 32  # one 256-bit vector: 8 little-endian uint32 words


def _codes_per_word(bits: int) -> int:
    if bits not in PACK_BITS:
        raise ValueError(f"bits: expected one of {PACK_BITS} (ternary codes use 2), got {bits!r}")
    return 32 // bits


def packed_row_bytes(cols: int, bits: int) -> int:
    """Bytes one packed row of ``cols`` codes takes at ``bits`` bits.

    Rows are padded to whole 32-byte blocks (128 codes at 2 bits, 64 at 4 bits), so
    ``packed_row_bytes(cols, bits) = 32 * ceil(cols / (256 // bits))``; 0 for ``cols == 0``.
    """
    per_block = 8 * _codes_per_word(bits)
    return PACK_BLOCK_BYTES * (-(-int(cols) // per_block))


# The packed layout ("interleaved words"), chosen so an AVX2 kernel unpacks 8
# consecutive columns with one vector shift and one mask:
#
#   * Each row is packed on its own into ``packed_row_bytes(C, bits)`` bytes: a sequence
#     of 32-byte blocks. With P = 32 // bits codes per 32-bit word (16 at 2 bits, 8 at
#     4 bits), block j covers columns [j * 8P, (j + 1) * 8P).
#   * A block is 8 little-endian uint32 words w_0..w_7 (bytes 4l..4l+3 of the block).
#   * The code of column  c = j * 8P + 8k + l  (k in [0, P), l in [0, 8)) sits in word
#     w_l at bits [k * bits, (k + 1) * bits).
#   * Columns past C (the tail of the last block) hold code 0.
#
# So loading a block as 8 int32 lanes and computing (lanes >> (k * bits)) & (2^bits - 1)
# gives the codes of the 8 consecutive columns j * 8P + 8k + 0..7, in lane order.
# Ternary (1.58-bit, codes 0..2) uses the 2-bit layout.


def pack_weights(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes into the interleaved-word layout described above.

    Args:
        codes: integer [R, C], values in [0, 2^bits - 1].
        bits: 2 or 4.
    Returns:
        uint8 [R, packed_row_bytes(C, bits)].
    """
    per_word = _codes_per_word(bits)
    rows, cols = codes.shape
    nbytes = packed_row_bytes(cols, bits)
    nblocks = nbytes // PACK_BLOCK_BYTES
    padded = torch.zeros((rows, nblocks * 8 * per_word), dtype=torch.int64, device=codes.device)
    padded[:, :cols] = codes.to(torch.int64)
    # [R, block, k, l] -> word l collects the codes of every k, shifted to bits k*bits.
    parts = padded.reshape(rows, nblocks, per_word, 8)
    shifts = torch.arange(per_word, device=codes.device, dtype=torch.int64) * bits
    words = (parts << shifts.reshape(1, 1, per_word, 1)).sum(dim=2)  # [R, block, 8]
    byte_shifts = torch.arange(4, device=codes.device, dtype=torch.int64) * 8
    out = (words.unsqueeze(-1) >> byte_shifts) & 0xFF  # little-endian bytes of each word
    return out.to(torch.uint8).reshape(rows, nbytes)


def unpack_weights(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_weights`: uint8 codes [R, cols] from packed [R, bytes]."""
    per_word = _codes_per_word(bits)
    rows = packed.shape[0]
    nblocks = packed.shape[1] // PACK_BLOCK_BYTES
    b = packed.to(torch.int64).reshape(rows, nblocks, 8, 4)
    byte_shifts = torch.arange(4, device=packed.device, dtype=torch.int64) * 8
    words = (b << byte_shifts).sum(dim=-1)  # [R, block, 8]
    shifts = torch.arange(per_word, device=packed.device, dtype=torch.int64) * bits
    codes = (words.unsqueeze(2) >> shifts.reshape(1, 1, per_word, 1)) & ((1 << bits) - 1)
    return codes.reshape(rows, nblocks * 8 * per_word)[:, :cols].to(torch.uint8)


def dequantize_packed(
    packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, cols: int
) -> torch.Tensor:
    """float32 [R, cols] weights ``scale[:, None] * (codes - zero[:, None])``."""
    codes = unpack_weights(packed, bits, cols).to(torch.float32)
    return scale.to(torch.float32)[:, None] * (codes - zero.to(torch.float32)[:, None])


def lowbit_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear(x, scale[:, None] * (codes - zero[:, None]), bias)`` on packed codes.

    Weight-only quantization with float32 activations: the fake-quant semantics of
    GPTQ/OBC's ``quant.py`` (dequantized weight ``scale * (q - zero)``), computed by
    unpacking and dequantizing in full, then one dense linear.

    Args:
        x: float32 [..., C].
        packed: uint8 [R, packed_row_bytes(C, bits)] from :func:`pack_weights`.
        scale, zero: float32 [R].
        bits: 2 or 4.
        bias: float32 [R] or None.
    Returns:
        float32 [..., R].
    """
    w = dequantize_packed(packed, scale, zero, bits, x.shape[-1])
    return torch.nn.functional.linear(x, w, bias)


INT8ACT_QMAX = 127
INT8ACT_MAX_COLS = 1 << 20  # int32 accumulation stays exact: C * 15 * 127 < 2^31


def quantize_activations_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic per-token symmetric int8 quantization of float32 ``x [T, C]``.

    ``s = max|x[t, :]| / 127`` in float32 (1 when that is 0), ``xq = clamp(rne(x / s),
    -127, 127)`` (a division, not a multiplication by 1 / s, so every kernel rounds alike).

    Returns:
        (xq int64 [T, C], s float32 [T], finite bool [T]); rows with a NaN/Inf hold
        xq = 0 and s = 1 (their outputs are NaN).
    """
    finite = torch.isfinite(x).all(dim=1)
    x = torch.where(finite[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    if x.shape[1]:
        amax = x.abs().amax(dim=1)
    else:
        amax = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    s = amax / INT8ACT_QMAX
    s = torch.where(s > 0, s, torch.ones((), dtype=s.dtype, device=s.device))
    xq = torch.clamp(torch.round(x / s[:, None]), -INT8ACT_QMAX, INT8ACT_QMAX)
    return xq.to(torch.int64), s, finite


def lowbit_linear_int8act(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Packed low-bit weights times dynamically int8-quantized activations (W2A8 / W4A8).

    Opt-in: unlike :func:`lowbit_linear` this changes the model, since the activations
    are quantized too. The activation scheme is the dynamic per-token symmetric int8
    quantization of LLM.int8() (Dettmers et al. 2022, "vector-wise" absmax scaling of
    the activation rows) and of SmoothQuant's W8A8 per-token setting (Xiao et al. 2023),
    without their outlier handling:

    per token t: NaN/Inf anywhere in x[t] -> y[t, :] = NaN; else
    ``s_x = max|x[t]| / 127`` (1 if that is 0), ``xq = clamp(rne(x[t] / s_x), -127, 127)``,
    ``acc[r] = sum_c code[r, c] * xq[c] - zero[r] * sum_c xq[c]`` (exact integers),
    ``y[t, r] = s_x * (scale[r] * float32(acc[r])) + bias[r]``, in that order in float32.

    Args:
        x: float32 [..., C], C <= 2^20.
        packed: uint8 [R, packed_row_bytes(C, bits)] from :func:`pack_weights`.
        scale: float32 [R]. zero: float32 [R], integers in [0, 2^bits - 1].
        bits: 2 or 4.
        bias: float32 [R] or None.
    Returns:
        float32 [..., R].
    """
    cols = x.shape[-1]
    maxq = (1 << bits) - 1
    if cols > INT8ACT_MAX_COLS:
        raise ValueError(
            f"x: lowbit_linear_int8act accumulates in int32 and supports at most "
            f"{INT8ACT_MAX_COLS} input features, got {cols}"
        )
    if zero.numel() and not bool(((zero == zero.round()) & (zero >= 0) & (zero <= maxq)).all()):
        raise ValueError(
            f"zero: lowbit_linear_int8act needs integer values in [0, {maxq}] for bits={bits}"
        )
    ntok = math.prod(x.shape[:-1])  # reshape(-1, 0) is ambiguous when C == 0
    xq, s, finite = quantize_activations_int8(x.reshape(ntok, cols))
    codes = unpack_weights(packed, bits, cols)
    # float64 products and sums of integers below 2^53 are exact (|acc| < 2^31), and a
    # float64 GEMM runs on every device (integer matmul does not on CUDA).
    acc = (
        xq.double() @ codes.double().t() - zero.double()[None, :] * xq.sum(dim=1).double()[:, None]
    )
    y = s[:, None] * (scale[None, :] * acc.to(torch.float32))
    if bias is not None:
        y = y + bias
    y = torch.where(finite[:, None], y, torch.full((), float("nan"), device=y.device))
    return y.reshape(*x.shape[:-1], packed.shape[0])


# ---------------------------------------------------------------------------------------
# AdaRound soft rounding (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
# Post-Training Quantization"; code: yhhhli/BRECQ quant/adaptive_rounding.py
# AdaRoundQuantizer.forward / get_soft_targets, quant/layer_recon.py LossFunction)

# Rectified-sigmoid stretch: h = clamp(sigmoid(a) * (ZETA - GAMMA) + GAMMA, 0, 1).
ADAROUND_GAMMA, ADAROUND_ZETA = -0.1, 1.1
# zeta - gamma, written as the literal 1.2: Python's 1.1 - (-0.1) is 1.2000000000000002,
# which in float64 puts h(0) one ulp above 0.5, where the regulariser's gradient is no
# longer 0 (abs'(0) = 0). float32 rounds both to the same 1.2f (BRECQ trains in float32).
# The kernels use the same constant and, like torch, round 1.2 * sig before adding gamma.
ADAROUND_STRETCH = 1.2


def adaround_h(alpha: torch.Tensor) -> torch.Tensor:
    """Soft rounding variable ``h(a) = clamp(1.2 * sigmoid(a) - 0.1, 0, 1)``."""
    return torch.clamp(torch.sigmoid(alpha) * ADAROUND_STRETCH + ADAROUND_GAMMA, 0, 1)


def adaround_init_alpha(w_over_scale: torch.Tensor) -> torch.Tensor:
    """``a`` with ``sigmoid(a) * 1.2 - 0.1`` equal to the fractional part of ``w / scale``.

    BRECQ's ``init_alpha``: ``a = -log((zeta - gamma) / (rest - gamma) - 1)``; rest is in
    [0, 1), so the log argument is in (0.2, 11] and ``a`` is finite.
    """
    rest = w_over_scale - torch.floor(w_over_scale)
    return -torch.log((ADAROUND_ZETA - ADAROUND_GAMMA) / (rest - ADAROUND_GAMMA) - 1)


def adaround_forward(
    w_floor: torch.Tensor,
    alpha: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    maxq: int,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-rounded weight and rounding regulariser, in one pass.

    Follows BRECQ's ``AdaRoundQuantizer.forward`` with ``soft_targets=True``: the clamp
    to the grid is applied after adding the zero point to ``floor(w / s) + h``, so a
    soft code can only move inside [0, maxq]::

        w_soft = scale * (clamp(w_floor + h(alpha) + zero, 0, maxq) - zero)
        reg    = sum(1 - (2 * |h(alpha) - 0.5|) ** beta)     (0 when beta == 0)

    ``beta == 0`` is the warm-up (the code sets the rounding loss to 0 there, which is
    also what the formula gives). The regulariser's weight lambda is applied by the
    caller.

    Args:
        w_floor: float [R, ...], ``floor(w / scale)`` per output channel (dim 0).
        alpha: float, same shape and dtype as ``w_floor``: the rounding variables.
        scale, zero: float32 [R].
        maxq: largest code.
        beta: annealed exponent (>= 0).
    Returns:
        (w_soft, reg): w_soft like ``alpha``; reg a 0-dim tensor of ``alpha``'s dtype.
    """
    s, z = _per_row(scale, alpha).to(alpha.dtype), _per_row(zero, alpha).to(alpha.dtype)
    h = adaround_h(alpha)
    w_soft = s * (torch.clamp(w_floor + h + z, 0, maxq) - z)
    if beta == 0:
        reg = alpha.new_zeros(())
    else:
        reg = (1 - ((h - 0.5).abs() * 2).pow(beta)).sum(dtype=torch.float64).to(alpha.dtype)
    return w_soft, reg


def adaround_backward(
    grad_w: torch.Tensor,
    grad_reg: torch.Tensor,
    w_floor: torch.Tensor,
    alpha: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    maxq: int,
    beta: float,
) -> torch.Tensor:
    """Gradient of ``<grad_w, w_soft> + grad_reg * reg`` w.r.t. ``alpha`` (see adaround_forward).

    Written out as autograd would take it through the forward's torch ops, including
    its subgradient conventions: ``clamp`` passes the gradient where the input lies in
    the closed interval, ``abs`` has derivative 0 at 0 (so the regulariser's gradient
    vanishes at h = 0.5).

    Args:
        grad_w: float, shape of ``alpha``.
        grad_reg: 0-dim float.
    Returns:
        grad_alpha: shape and dtype of ``alpha``.
    """
    s, z = _per_row(scale, alpha).to(alpha.dtype), _per_row(zero, alpha).to(alpha.dtype)
    sig = torch.sigmoid(alpha)
    u = sig * ADAROUND_STRETCH + ADAROUND_GAMMA
    h = torch.clamp(u, 0, 1)
    dh_da = torch.where((u >= 0) & (u <= 1), ADAROUND_STRETCH * sig * (1 - sig), 0)
    v = w_floor + h + z
    g_h = torch.where((v >= 0) & (v <= maxq), grad_w * s, 0)
    if beta != 0:
        d = (h - 0.5).abs() * 2
        # d/dh (1 - d^beta) = -beta * d^(beta-1) * 2 * sign(h - 0.5)
        g_h = g_h - grad_reg.to(alpha.dtype) * beta * d.pow(beta - 1) * 2 * torch.sign(h - 0.5)
    return g_h * dh_da


# ---------------------------------------------------------------------------------------
# LiRA score (Carlini et al. 2022, "Membership Inference Attacks From First Principles")


def logit_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logit-scaled confidence ``log p_y - log(sum_{k != y} p_k)`` in float64.

    With softmax p the two normalisers cancel, so the score is
    ``z_y - logsumexp_{k != y} z_k``: no probability is ever formed, nothing underflows,
    and the result is finite for any finite logits (K >= 2).

    Args:
        logits: float [..., K].
        labels: int64 [...] in [0, K).
    Returns:
        float64 [...].
    """
    z = logits.to(torch.float64)
    idx = labels.to(torch.int64).unsqueeze(-1)
    z_y = torch.gather(z, -1, idx).squeeze(-1)
    others = z.scatter(-1, idx, float("-inf"))
    return z_y - torch.logsumexp(others, dim=-1)


# ---------------------------------------------------------------------------------------
# Leave-one-out LiRA statistics (Carlini et al. 2022, "Membership Inference Attacks From
# First Principles", Sec. IV: per-example Gaussians fit to the reference models' scores;
# protocol.md: mu = np.median, sigma = population std, ddof 0)

LOO_STAT_NAMES = ("median_in", "median_out", "mean_in", "mean_out", "std_in", "std_out")


def _side_stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """np.median, mean and population std over dim 0 of ``x`` restricted to ``mask``.

    Args:
        x: float64 [J, M, V]; mask: bool [J, M, V].
    Returns:
        (median, mean, std, count): float64 [M, V] x3 (0 where count is 0), int64 [M, V].
    """
    count = mask.sum(dim=0)
    k = count.clamp(min=1)
    # Masked-out entries sort to the end, so the first ``count`` entries are the side.
    srt = torch.where(mask, x, torch.inf).sort(dim=0).values
    lo = torch.gather(srt, 0, ((k - 1) // 2).unsqueeze(0)).squeeze(0)
    hi = torch.gather(srt, 0, (k // 2).unsqueeze(0)).squeeze(0)
    median = (lo + hi) / 2  # np.median: mean of the two middle values for an even count
    mean = torch.where(mask, x, 0).sum(dim=0) / k
    var = torch.where(mask, (x - mean) ** 2, 0).sum(dim=0) / k  # two-pass, ddof 0
    empty = count == 0
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return (
        torch.where(empty, zero, median),
        torch.where(empty, zero, mean),
        torch.where(empty, zero, var.sqrt()),
        count,
    )


def lira_loo_partner(keep: torch.Tensor) -> torch.Tensor:
    """The model left out together with each target by :func:`lira_loo_stats`.

    For target n and example m: the highest-indexed model on the side (IN/OUT) that n is
    not on, or -1 when that side is empty.

    Args:
        keep: bool [N, M].
    Returns:
        int64 [N, M].
    """
    models = torch.arange(keep.shape[0], device=keep.device).unsqueeze(1)  # [N, 1]
    if keep.shape[0] == 0:
        return torch.empty(keep.shape, dtype=torch.int64, device=keep.device)
    last_in = torch.where(keep, models, -1).amax(0)
    last_out = torch.where(~keep, models, -1).amax(0)
    return torch.where(keep, last_out, last_in)


def lira_loo_stats(
    ref_scores: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example IN/OUT statistics of the reference scores, leaving out each target.

    The direct definition: for every target model ``n`` and example ``m``, drop model
    ``n`` and one model of the side ``n`` is not on (the highest-indexed model that
    trained on ``m`` if ``n`` did not, else the highest-indexed one that did not); for
    every view ``v`` take the scores of the remaining models that trained on ``m`` (IN)
    and those that did not (OUT); report each side's np.median (mean of the two middle
    values for an even count), mean and population std (ddof 0), as LiRA fits its
    per-example Gaussians (Carlini et al. 2022; Quant-MIA ``plot.py``).

    Why two models leave: dropping the target alone takes one model from the target's
    own side, so with balanced membership (each example IN for N/2 models) the side the
    target is on would always hold one model fewer than the other, and the side sizes
    would tell an attack whether the target trained on ``m`` (a null target scores AUC
    0.56 with online RMIA at N = 16, and 0 or 1 with N = 4). Dropping one model of the
    other side makes the counts ``k_in - 1`` and ``k_out - 1`` (``k`` = the models on that
    side among all N) whatever the target's membership. The highest-indexed model is the
    one Quant-MIA's truncation of every side to the smallest count drops.

    A side with no model left takes the other side's statistics, so a likelihood ratio
    built from them is 0 (no evidence) rather than NaN; ``counts`` tells such entries
    apart. With nothing left on either side every statistic is 0.

    Args:
        ref_scores: float32/float64 [N, M, V], finite.
        keep: bool [N, M]; ``keep[j, m]`` iff model j trained on example m.
    Returns:
        stats: [6, N, M, V] in the dtype of ``ref_scores``, rows in the order of
            ``LOO_STAT_NAMES`` (median_in, median_out, mean_in, mean_out, std_in, std_out);
        counts: int64 [2, N, M], the number of IN and OUT models the statistics use.
    """
    n_models, m, v = ref_scores.shape
    x = ref_scores.to(torch.float64)
    stats = torch.empty((6, n_models, m, v), dtype=torch.float64, device=x.device)
    counts = torch.empty((2, n_models, m), dtype=torch.int64, device=x.device)
    models = torch.arange(n_models, device=x.device).unsqueeze(1)  # [N, 1]
    partner = lira_loo_partner(keep)  # [N, M]
    for n in range(n_models):
        others = (models != n) & (models != partner[n].unsqueeze(0))  # [N, M]
        sides = []
        for member in (True, False):
            mask = (keep == member) & others  # [N, M]
            sides.append(_side_stats(x, mask.unsqueeze(-1).expand(-1, -1, v)))
        (med_i, mean_i, std_i, c_i), (med_o, mean_o, std_o, c_o) = sides
        empty_i, empty_o = (c_i == 0), (c_o == 0)
        # An empty side borrows the other side's statistics (see the docstring).
        stats[0, n] = torch.where(empty_i, med_o, med_i)
        stats[1, n] = torch.where(empty_o, med_i, med_o)
        stats[2, n] = torch.where(empty_i, mean_o, mean_i)
        stats[3, n] = torch.where(empty_o, mean_i, mean_o)
        stats[4, n] = torch.where(empty_i, std_o, std_i)
        stats[5, n] = torch.where(empty_o, std_i, std_o)
        counts[0, n] = c_i[:, 0] if v else ((keep & others).sum(0))
        counts[1, n] = c_o[:, 0] if v else ((~keep & others).sum(0))
    return stats.to(ref_scores.dtype), counts
