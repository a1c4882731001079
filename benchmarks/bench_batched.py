"""Batched shadow logits: N same-architecture models on one batch, vmap vs loop.

Run: python -m pytest benchmarks/bench_batched.py --benchmark-only -q
     --benchmark-group-by=group --benchmark-columns=min,median,rounds

Cases (named list): 16 SmallCNNs on digits-size inputs (1x8x8, batch 512) and 8
ResNet-18s on CIFAR-size inputs (3x32x32, a small batch of 16). "vmap" is
stack_module_state + vmap(functional_call) (stacking included: it is paid per call);
"loop" evaluates the models one after another on the same chunks; "loop-inference-form"
is the loop over ``to_inference_form`` copies (BN folded, channels_last, channels_last
input), which is what the audit's scoring step runs.
"""

from __future__ import annotations

import pytest
import torch

from ptqx.models import build_model, to_inference_form
from ptqx.models.batched import loop_logits, vmap_logits

CASES = {
    "small_cnn-16x-digits-b512": ("small_cnn", 16, 1, 8, 512),
    "small_cnn-16x-fmnist-b334": ("small_cnn", 16, 1, 28, 334),
    "resnet18-8x-cifar-b16": ("resnet18", 8, 3, 32, 16),
}


def _models(arch: str, n: int, c: int, size: int) -> list[torch.nn.Module]:
    models = []
    for i in range(n):
        m = build_model(arch, num_classes=10, in_channels=c, image_size=size, seed=i)
        with torch.no_grad():  # non-trivial BN running statistics, different per model
            m.train()(torch.randn(8, c, size, size, generator=torch.Generator().manual_seed(i)))
        models.append(m.eval())
    return models


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", ["vmap", "loop", "loop-inference-form"])
def test_batched_logits(benchmark, case, method):
    arch, n, c, size, batch = CASES[case]
    models = _models(arch, n, c, size)
    x = torch.randn(batch, c, size, size, generator=torch.Generator().manual_seed(99))
    if method == "loop-inference-form":
        models = [to_inference_form(m) for m in models]
        x = x.contiguous(memory_format=torch.channels_last)
    fn = {"vmap": vmap_logits, "loop": loop_logits, "loop-inference-form": loop_logits}[method]
    benchmark.group = case
    benchmark.extra_info["images_per_s"] = None
    out = benchmark.pedantic(
        fn, args=(models, x), rounds=5 if arch == "small_cnn" else 3, warmup_rounds=1
    )
    assert out.shape == (n, batch, 10)
    if (
        benchmark.stats is not None
    ):  # None under --benchmark-disable: one untimed call, a smoke test
        benchmark.extra_info["images_per_s"] = n * batch / benchmark.stats.stats.median
