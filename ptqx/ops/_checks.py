"""Argument checks at the op boundary: each message names the argument, what was
expected and what was given, so a bad call fails here and not deep inside a kernel."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

FLOATS = (torch.float32, torch.float64)


def check_tensor(
    name: str,
    t: object,
    *,
    dtypes: Iterable[torch.dtype] | None = None,
    ndim: int | None = None,
    min_ndim: int | None = None,
    shape: tuple[int | None, ...] | None = None,
    device: torch.device | None = None,
    finite: bool = False,
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            want = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise TypeError(
                f"{name}: expected dtype {want}, got {str(t.dtype).replace('torch.', '')}"
            )
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(
            f"{name}: expected at least {min_ndim} dimensions, got shape {tuple(t.shape)}"
        )
    if shape is not None:
        if t.dim() != len(shape) or any(
            s is not None and s != d for s, d in zip(shape, t.shape, strict=False)
        ):
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name}: expected shape {want}, got {list(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {t.device}")
    if finite and t.is_floating_point() and t.numel():
        check_values(
            torch.isfinite(t).all(),
            f"{name}: contains NaN/Inf values",
            lambda: f"{name}: contains {int((~torch.isfinite(t)).sum())} NaN/Inf value(s)",
        )
    return t


def check_values(ok: torch.Tensor, message: str, detail: Callable[[], str] | None = None) -> None:
    """Raise ValueError(``detail()`` or ``message``) unless the bool tensor ``ok`` is true.

    While torch.compile traces, branching on a tensor's value would break the graph (an
    error under ``fullgraph=True``), so there the check becomes an assertion inside the
    graph that raises RuntimeError(``message``) when it runs (a device-side assert on
    CUDA). ``detail`` (eager only) may count or locate the offending values."""
    if torch.compiler.is_compiling():
        torch._assert_async(ok, message)
    elif not bool(ok):
        raise ValueError(detail() if detail is not None else message)


def check_maxq(maxq: object) -> int:
    if not isinstance(maxq, int) or isinstance(maxq, bool) or not 1 <= maxq <= 255:
        raise ValueError(
            f"maxq: expected an int in [1, 255] (2^bits - 1, or 2 for 1.58 bits), got {maxq!r}"
        )
    return maxq


def check_per_row(name: str, v: object, rows: int, device: torch.device) -> torch.Tensor:
    return check_tensor(name, v, dtypes=(torch.float32,), shape=(rows,), device=device, finite=True)
