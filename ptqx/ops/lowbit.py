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
from ._checks import check_tensor

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_bits(bits: object) -> int:
    """``bits`` must be 2 or 4 (ternary codes pack with 2)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in reference.PACK_BITS:
        raise ValueError(
            f"bits: expected one of {reference.PACK_BITS} (1.58-bit ternary codes use 2), got {bits!r}"
        )
    return bits


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
    check_tensor(
        "scale", scale, dtypes=(torch.float32,), shape=(rows,), device=x.device, finite=True
    )
    check_tensor("zero", zero, dtypes=(torch.float32,), shape=(rows,), device=x.device, finite=True)
    if bias is not None:
        check_tensor("bias", bias, dtypes=(torch.float32,), shape=(rows,), device=x.device)
        bias = bias.contiguous()
    return torch.ops.ptqx.lowbit_linear(
        x.contiguous(), packed.contiguous(), scale.contiguous(), zero.contiguous(), bits, bias
    )
