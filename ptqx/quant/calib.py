"""Calibration inputs: a tensor or any iterable of batches, materialised once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


class CalibrationSet:
    """Calibration batches, kept in memory so quantizers can run them several times.

    Args:
        calib: a tensor ``[N, ...]`` (split into batches of ``batch_size``) or an
            iterable of tensors ``[B, ...]`` or of tuples/lists whose first element is
            the input batch (so a DataLoader over (x, y) works). Inputs must be
            floating point and finite.
        batch_size: batch size used when ``calib`` is a single tensor.

    Raises:
        ValueError: empty set, non-tensor batches, mismatched sample shapes, NaN/Inf.
    """

    def __init__(self, calib: torch.Tensor | Iterable, *, batch_size: int = 128):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        if calib is None:
            raise ValueError("calib: this method needs calibration inputs, got None")
        if isinstance(calib, torch.Tensor):
            if calib.dim() == 0:
                raise ValueError("calib: expected a batch tensor [N, ...], got a scalar")
            batches = list(calib.split(batch_size)) if calib.shape[0] else []
        else:
            try:
                it = iter(calib)
            except TypeError:
                raise ValueError(
                    f"calib: expected a tensor or an iterable of batches, got {type(calib).__name__}"
                ) from None
            batches = []
            for i, b in enumerate(it):
                if isinstance(b, tuple | list) and b:
                    b = b[0]
                if not isinstance(b, torch.Tensor) or b.dim() == 0:
                    raise ValueError(
                        f"calib: batch {i} is not a batch tensor [B, ...] ({type(b).__name__})"
                    )
                if b.shape[0]:
                    batches.append(b.detach())
        if not batches:
            raise ValueError("calib: the calibration set is empty (0 samples)")
        shape = batches[0].shape[1:]
        for i, b in enumerate(batches):
            if b.shape[1:] != shape:
                raise ValueError(
                    f"calib: batch {i} has sample shape {tuple(b.shape[1:])}, batch 0 has {tuple(shape)}"
                )
            if not b.is_floating_point():
                raise ValueError(f"calib: batch {i} has dtype {b.dtype}; expected float inputs")
            if not torch.isfinite(b).all():
                raise ValueError(f"calib: batch {i} contains NaN/Inf")
        self._batches = batches

    def __len__(self) -> int:
        """Number of batches."""
        return len(self._batches)

    @property
    def num_samples(self) -> int:
        return sum(b.shape[0] for b in self._batches)

    def batches(self, device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
        """Yield the batches, moved to ``device`` (the model's device) when given."""
        for b in self._batches:
            yield b if device is None else b.to(device, non_blocking=True)


def as_calibration(calib: object, *, batch_size: int = 128) -> CalibrationSet:
    """``calib`` as a :class:`CalibrationSet` (returned unchanged if it already is one)."""
    return (
        calib if isinstance(calib, CalibrationSet) else CalibrationSet(calib, batch_size=batch_size)
    )
