"""Calibration activations cached once per reconstruction unit, memory-bounded.

Reconstruction (AdaRound, BRECQ) draws thousands of minibatches from the same unit
inputs and float targets. The paper's code recomputes nothing per iteration either, but
keeps everything on the GPU; here each cached tensor is float32 ``[N, ...]`` in RAM while
a byte budget allows and otherwise in a file-backed (mmap) tensor in a temporary folder,
so a CIFAR ResNet-18 with 1024+ calibration images fits any machine. Minibatches are
gathered by index (``store[idx]``), which reads only the rows it needs from a file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch


class CacheBudget:
    """Shared byte budget for in-memory caches; what does not fit goes to ``cache_dir``.

    Args:
        max_memory_bytes: bytes of RAM all in-memory caches may take together.
        cache_dir: parent folder of the spill folder (default: the system temp dir).
    """

    def __init__(self, max_memory_bytes: int, cache_dir: str | os.PathLike | None = None):
        if not isinstance(max_memory_bytes, int) or max_memory_bytes < 0:
            raise ValueError(f"cache_memory_mb: expected >= 0, got {max_memory_bytes!r} bytes")
        self.max_memory_bytes = max_memory_bytes
        self.in_memory = 0
        self.spilled = 0
        self._parent = None if cache_dir is None else Path(cache_dir)
        self._dir: Path | None = None
        self._count = 0

    def allocate(self, shape: tuple[int, ...], *, device: torch.device) -> torch.Tensor:
        """A float32 tensor of ``shape``: in RAM (or on ``device``) if it fits, else mmapped."""
        numel = 1
        for s in shape:
            numel *= s
        nbytes = 4 * numel
        if device.type != "cpu" or self.in_memory + nbytes <= self.max_memory_bytes:
            self.in_memory += nbytes
            return torch.empty(shape, dtype=torch.float32, device=device)
        if self._dir is None:
            if self._parent is not None:
                self._parent.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="ptqx-recon-", dir=self._parent))
        path = self._dir / f"cache{self._count}.f32"
        self._count += 1
        with open(path, "wb") as f:
            f.truncate(nbytes)
        self.spilled += nbytes
        return torch.from_file(str(path), shared=True, size=numel, dtype=torch.float32).view(shape)

    def release(self, t: torch.Tensor | None) -> None:
        """Return an in-memory tensor's bytes to the budget (file-backed ones stay on disk
        until :meth:`close`)."""
        if t is not None and t.device.type == "cpu" and t.untyped_storage().filename is None:
            self.in_memory -= 4 * t.numel()

    def close(self) -> None:
        """Delete the spill folder."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class ActivationStore:
    """Float32 ``[N, ...]`` rows filled batch by batch; the sample shape comes from the
    first batch. Index it like a tensor once filled (``store.tensor``)."""

    def __init__(self, n: int, budget: CacheBudget, device: torch.device):
        self.n = n
        self.budget = budget
        self.device = device
        self.tensor: torch.Tensor | None = None
        self.filled = 0

    def append(self, batch: torch.Tensor) -> None:
        b = batch.detach()
        if self.tensor is None:
            self.tensor = self.budget.allocate((self.n, *b.shape[1:]), device=self.device)
        if tuple(b.shape[1:]) != tuple(self.tensor.shape[1:]):
            raise ValueError(
                f"calib: a unit's activation shape changed between batches "
                f"({tuple(b.shape[1:])} vs {tuple(self.tensor.shape[1:])}); reconstruction needs "
                "fixed-size calibration inputs"
            )
        end = self.filled + b.shape[0]
        self.tensor[self.filled : end].copy_(b.to(torch.float32))
        self.filled = end

    def free(self) -> None:
        self.budget.release(self.tensor)
        self.tensor = None
