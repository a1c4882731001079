"""Public wrappers for packed low-bit weights and the packed linear."""

from __future__ import annotations

import torch


def pack_weights(codes: torch.Tensor, bits: int) -> torch.Tensor:
    raise NotImplementedError


def unpack_weights(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    raise NotImplementedError


def lowbit_linear(x, packed, scale, zero, bits, bias=None):
    raise NotImplementedError
