"""LiRA logit scores: native kernel vs the float64 reference vs torch in float32.

    python -m pytest benchmarks/bench_scores.py --benchmark-only --benchmark-group-by=group
    PTQX_BENCH_FULL=1 python -m pytest benchmarks/bench_scores.py --benchmark-only ...

Logits are [models, examples, views, classes] float32: the paper's scoring of 64 models
on CIFAR's 50000 training images, 2 views, 100 classes is 2.56 GB ("full", only with
PTQX_BENCH_FULL=1); "small" is the same with 1000 examples (51 MB). The reference (and the
float32 alternative) would need several float64 copies of the whole tensor (> 15 GB at
full size), so they run over chunks of 2 models; GB/s counts logits bytes read.
"""

from __future__ import annotations

import os

import pytest
import torch

import ptqx.ops as ops
from ptqx.ops import reference

SIZES = {"small": (64, 1000, 2, 100)}
if os.environ.get("PTQX_BENCH_FULL") == "1":
    SIZES["full"] = (64, 50000, 2, 100)

_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _data(name):
    if name not in _CACHE:
        _CACHE.clear()  # keep one size in memory at a time
        shape = SIZES[name]
        g = torch.Generator().manual_seed(0)
        logits = torch.empty(shape).normal_(generator=g).mul_(4)
        labels = torch.randint(0, shape[-1], shape[:-1], generator=g)
        _CACHE[name] = (logits, labels)
    return _CACHE[name]


def _chunked(fn, logits, labels, chunk=2):
    return torch.cat(
        [fn(logits[i : i + chunk], labels[i : i + chunk]) for i in range(0, logits.shape[0], chunk)]
    )


def _torch_f32(logits, labels):
    """Best plain-torch alternative: same formula in float32, cast at the end."""
    idx = labels.unsqueeze(-1)
    z_y = logits.gather(-1, idx).squeeze(-1)
    return (z_y - torch.logsumexp(logits.scatter(-1, idx, float("-inf")), -1)).double()


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("impl", ["native", "reference", "torch_f32"])
def test_logit_scores(benchmark, name, impl):
    logits, labels = _data(name)
    benchmark.group = f"logit_scores {name} {list(logits.shape)} float32"
    full = name == "full"
    if impl == "native":
        fn = lambda: ops.logit_scores(logits, labels)  # noqa: E731
    elif impl == "reference":
        fn = lambda: _chunked(reference.logit_scores, logits, labels)  # noqa: E731
    else:
        fn = lambda: _chunked(_torch_f32, logits, labels)  # noqa: E731
    benchmark.pedantic(fn, rounds=1 if full else 3, iterations=1, warmup_rounds=0 if full else 1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["GB/s"] = round(logits.numel() * 4 / benchmark.stats["mean"] / 1e9, 3)
