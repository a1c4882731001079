"""OBC greedy row quantization: native kernels vs the reference vs the official-style code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import ptqx.ops as ops
from ptqx.ops import reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _obc_official_style import obc_official_style  # noqa: E402


def correlated_hinv(
    cols: int, *, seed: int, dtype=torch.float64, damp: float = 0.01, n: int | None = None
):
    """Inverse of H = 2 X X^T / n + damp * mean(diag) I with X = A Z: dense, correlated."""
    g = torch.Generator().manual_seed(seed)
    n = n or max(2 * cols, 8)
    a = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5
    a += torch.eye(cols, dtype=torch.float64)  # keeps H well conditioned but far from diagonal
    x = a @ torch.randn(cols, n, generator=g, dtype=torch.float64)
    h = 2 * x @ x.T / n
    h += damp * torch.diagonal(h).mean() * torch.eye(cols, dtype=torch.float64)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return ((hinv + hinv.T) / 2).to(dtype)  # exactly symmetric, as the kernels assume


def make_problem(
    rows: int, cols: int, *, bits: float = 3, seed: int = 0, dtype=torch.float64, hinv_dtype=None
):
    g = torch.Generator().manual_seed(seed + 1000)
    w = (torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.1).to(dtype)
    maxq = 2 if bits == 1.58 else 2 ** int(bits) - 1
    scale, zero = (
        ops.grid_search(w.float(), maxq, steps=1) if rows else (torch.ones(0), torch.zeros(0))
    )
    hinv = correlated_hinv(cols, seed=seed, dtype=hinv_dtype or dtype)
    return w, hinv, scale, zero, maxq


def obc_loss(w: torch.Tensor, q: torch.Tensor, hinv: torch.Tensor) -> float:
    """Summed OBC loss: sum over rows of (w - q) H (w - q)^T with H = hinv^-1."""
    h = torch.linalg.inv(hinv.double())
    d = (w - q).double()
    return float(((d @ h) * d).sum())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rows,cols,bits", [(5, 11, 3), (33, 17, 2), (3, 23, 1.58), (2, 1, 4)])
def test_reference_matches_official_style(rows, cols, bits, dtype):
    w, hinv, scale, zero, maxq = make_problem(rows, cols, bits=bits, seed=rows * cols, dtype=dtype)
    q_ref, o_ref = reference.obc_quantize_rows_order(w, hinv, scale, zero, maxq)
    q_off, o_off = obc_official_style(w, hinv, scale, zero, maxq)
    assert torch.equal(o_ref, o_off)
    assert torch.equal(q_ref, q_off)


def test_reference_beats_rtn_and_is_on_grid():
    w, hinv, scale, zero, maxq = make_problem(8, 24, bits=2, seed=3)
    q = reference.obc_quantize_rows(w, hinv, scale, zero, maxq)
    rtn = reference.fake_quant(w, scale, zero, maxq)
    assert torch.equal(reference.fake_quant(q, scale, zero, maxq), q)  # every entry on the grid
    assert obc_loss(w, q, hinv) < obc_loss(w, rtn, hinv)
