"""Public wrappers for packed low-bit weights and the packed linear.

Layout of the packed bytes: see ``ptqx.ops.reference`` (``pack_weights``). In short,
each row is padded to whole 32-byte blocks; a block is 8 little-endian uint32 words and
the code of column ``j*8P + 8k + l`` (P = 32 // bits codes per word) sits in word ``l``
at bits ``[k*bits, (k+1)*bits)``. Ternary (1.58-bit) codes 0..2 use ``bits=2``.

Typical use (what ``ptqx.quant.pack`` builds on)::

    packed = pack_weights(codes, bits=2)           # codes: uint8 [R, C]
    y = lowbit_linear(x, packed, scale, zero, bits=2, bias=b)  # == F.linear(x, W_q, b)
"""

from __future__ import annotations

import torch

from . import reference
from ._checks import check_tensor, check_values

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


_NATIVE_CPU: dict[str, bool] = {}


# A constant for torch.compile: dynamo cannot trace the dispatcher query (a packed model
# failed to compile with fullgraph=True), and kernels are registered once, at import. A
# dict, not functools.cache: dynamo traces into an lru_cache wrapper despite the mark.
@torch.compiler.assume_constant_result
def _has_native_cpu(op: str = "lowbit_linear") -> bool:
    if op not in _NATIVE_CPU:
        _NATIVE_CPU[op] = torch._C._dispatch_has_kernel_for_dispatch_key(f"ptqx::{op}", "CPU")
    return _NATIVE_CPU[op]


def check_bits(bits: object) -> int:
    """``bits`` must be 2 or 4 (ternary codes pack with 2)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in reference.PACK_BITS:
        raise ValueError(
            f"bits: expected one of {reference.PACK_BITS} (1.58-bit ternary codes use 2), got {bits!r}"
        )
    return bits


def check_int8act_zero(zero: torch.Tensor, bits: int) -> None:
    """``zero`` must hold integers in [0, 2^bits - 1]: the int8-activation product is
    exact integer arithmetic, ``sum code * xq - int(zero) * sum xq``.

    Raises:
        ValueError: naming the first row that is not.
    """
    maxq = (1 << bits) - 1
    ok = (zero == zero.round()) & (zero >= 0) & (zero <= maxq)
    message = f"zero: lowbit_linear_int8act needs integer values in [0, {maxq}] for bits={bits}"

    def detail() -> str:
        bad = int((~ok).nonzero()[0, 0])
        return f"{message}, got {float(zero[bad])} at row {bad}"

    check_values(ok.all(), message, detail)


def packed_row_bytes(cols: int, bits: int) -> int:
    """Bytes per packed row: ``32 * ceil(cols / (256 // bits))``."""
    check_bits(bits)
    if not isinstance(cols, int) or isinstance(cols, bool) or cols < 0:
        raise ValueError(f"cols: expected an int >= 0, got {cols!r}")
    return reference.packed_row_bytes(cols, bits)


def pack_weights(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes row by row into ``bits``-bit fields.

    Args:
        codes: uint8/int8/int16/int32/int64 [R, C], every value in [0, 2^bits - 1]
            (ternary: [0, 2] with ``bits=2``).
        bits: 2 or 4.
    Returns:
        uint8 [R, packed_row_bytes(C, bits)] on the device of ``codes``.

    Raises:
        ValueError: a code outside [0, 2^bits - 1], bits not in {2, 4}, codes not 2-D.
    """
    check_bits(bits)
    check_tensor("codes", codes, dtypes=_INT_DTYPES, ndim=2)
    if codes.numel():
        lo, hi = (int(v) for v in torch.aminmax(codes))
        if lo < 0 or hi > (1 << bits) - 1:
            raise ValueError(
                f"codes: values must lie in [0, {(1 << bits) - 1}] for bits={bits}, got range [{lo}, {hi}]"
            )
    return torch.ops.ptqx.pack_weights(codes.to(torch.uint8).contiguous(), bits)


def _check_packed(packed: torch.Tensor, bits: int, cols: int) -> None:
    check_tensor("packed", packed, dtypes=(torch.uint8,), ndim=2)
    want = reference.packed_row_bytes(cols, bits)
    if packed.shape[1] != want:
        raise ValueError(
            f"packed: expected {want} bytes per row for {cols} columns at {bits} bits, "
            f"got shape {list(packed.shape)}"
        )


def unpack_weights(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Exact inverse of :func:`pack_weights`.

    Args:
        packed: uint8 [R, packed_row_bytes(cols, bits)].
        bits: 2 or 4 (as packed).
        cols: C, the number of columns that were packed.
    Returns:
        uint8 codes [R, cols].
    """
    check_bits(bits)
    if not isinstance(cols, int) or isinstance(cols, bool) or cols < 0:
        raise ValueError(f"cols: expected an int >= 0, got {cols!r}")
    _check_packed(packed, bits, cols)
    return torch.ops.ptqx.unpack_weights(packed.contiguous(), bits, cols)


def lowbit_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear(x, scale[:, None] * (codes - zero[:, None]), bias)`` with packed codes.

    Activations stay float32 (weight-only quantization, the fake-quant semantics the
    audit needs); the native kernels never materialise the full float weight.

    Args:
        x: float32 [..., C]. NaN/Inf are allowed and propagate as in ``F.linear``
            (not checked: a per-call scan of the activations would cost a pass).
        packed: uint8 [R, packed_row_bytes(C, bits)] from :func:`pack_weights`.
        scale: float32 [R], finite.
        zero: float32 [R], finite (usually integer-valued).
        bits: 2 or 4 (as packed).
        bias: float32 [R] or None.
    Returns:
        float32 [..., R].
    """
    check_bits(bits)
    check_tensor("x", x, dtypes=(torch.float32,), min_ndim=1)
    check_tensor("packed", packed, dtypes=(torch.uint8,), ndim=2, device=x.device)
    rows = packed.shape[0]
    cols = x.shape[-1]
    want = reference.packed_row_bytes(cols, bits)
    if packed.shape[1] != want:
        raise ValueError(
            f"packed: x has {cols} input features, which at {bits} bits take {want} bytes "
            f"per row, but packed has shape {list(packed.shape)}"
        )
    # The NaN/Inf scan of scale/zero costs three tensor ops per call, a large share of a
    # small layer's time: the native CPU kernel does it in its own O(R) loop instead.
    native_cpu = x.device.type == "cpu" and _has_native_cpu()
    for name, v in (("scale", scale), ("zero", zero)):
        check_tensor(
            name, v, dtypes=(torch.float32,), shape=(rows,), device=x.device, finite=not native_cpu
        )
    if bias is not None:
        check_tensor("bias", bias, dtypes=(torch.float32,), shape=(rows,), device=x.device)
        bias = bias.contiguous()
    return torch.ops.ptqx.lowbit_linear(
        x.contiguous(), packed.contiguous(), scale.contiguous(), zero.contiguous(), bits, bias
    )


def lowbit_linear_int8act(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Packed low-bit linear with dynamically int8-quantized activations (opt-in).

    This CHANGES THE MODEL: unlike :func:`lowbit_linear` (exact fake-quant semantics),
    each token's activations are quantized to int8 before the product (dynamic per-token
    symmetric absmax scaling, as in LLM.int8() / SmoothQuant W8A8 per-token), which makes
    the product an exact integer dot product and the CPU kernel faster. Use it only where
    that extra activation error is acceptable; the audit's fake-quant path does not.

    Exact semantics (every kernel matches ``reference.lowbit_linear_int8act`` bit for
    bit), per token t of x viewed as [T, C]:

    - any NaN/Inf in x[t] -> y[t, :] = NaN (other tokens unaffected);
    - ``s_x = max|x[t]| / 127`` in float32, or 1 when that is 0 (then y[t] = bias);
    - ``xq = clamp(round_half_even(x[t] / s_x), -127, 127)`` (division, not reciprocal);
    - ``acc[r] = sum_c code[r, c] * xq[c] - int(zero[r]) * sum_c xq[c]``, exact in int32;
    - ``y[t, r] = s_x * (scale[r] * float32(acc[r])) (+ bias[r])``, float32, that order.

    The relative error against :func:`lowbit_linear` is that of int8 activations: about
    ``max|x[t]| / 254 * sqrt(C / 3)`` absolute per output for dense weights of unit scale
    (tests bound it).

    Args:
        x: float32 [..., C], C <= 2^20 (the int32 accumulator stays exact).
        packed: uint8 [R, packed_row_bytes(C, bits)] from :func:`pack_weights`.
        scale: float32 [R], finite.
        zero: float32 [R], integer values in [0, 2^bits - 1].
        bits: 2 or 4 (as packed; ternary codes use 2).
        bias: float32 [R] or None.
    Returns:
        float32 [..., R].

    Raises:
        ValueError: ``zero`` not integer-valued in range, C > 2^20, NaN/Inf ``scale``,
            or the shape errors of :func:`lowbit_linear`.
    """
    check_bits(bits)
    check_tensor("x", x, dtypes=(torch.float32,), min_ndim=1)
    check_tensor("packed", packed, dtypes=(torch.uint8,), ndim=2, device=x.device)
    rows = packed.shape[0]
    cols = x.shape[-1]
    if cols > reference.INT8ACT_MAX_COLS:
        raise ValueError(
            f"x: lowbit_linear_int8act accumulates in int32 and supports at most "
            f"{reference.INT8ACT_MAX_COLS} input features, got {cols}"
        )
    want = reference.packed_row_bytes(cols, bits)
    if packed.shape[1] != want:
        raise ValueError(
            f"packed: x has {cols} input features, which at {bits} bits take {want} bytes "
            f"per row, but packed has shape {list(packed.shape)}"
        )
    # The native CPU binding checks scale and zero in its own O(R) loop (cheaper than
    # the tensor ops below on a small layer); other devices are checked here.
    native_cpu = x.device.type == "cpu" and _has_native_cpu("lowbit_linear_int8act")
    # zero gets no finiteness check of its own: check_int8act_zero refuses NaN/Inf with
    # the same message the native binding gives.
    for name, v, finite in (("scale", scale, not native_cpu), ("zero", zero, False)):
        check_tensor(
            name, v, dtypes=(torch.float32,), shape=(rows,), device=x.device, finite=finite
        )
    if not native_cpu:
        check_int8act_zero(zero, bits)
    if bias is not None:
        check_tensor("bias", bias, dtypes=(torch.float32,), shape=(rows,), device=x.device)
        bias = bias.contiguous()
    return torch.ops.ptqx.lowbit_linear_int8act(
        x.contiguous(), packed.contiguous(), scale.contiguous(), zero.contiguous(), bits, bias
    )
