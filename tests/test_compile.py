"""torch.compile over the wrappers a forward pass calls: a packed model (exact and int8
activations), fake_quant / quantize_codes and logit_scores each trace into one graph
(fullgraph=True, dynamic shapes) with the eager results, and their value checks become
assertions inside the graph instead of graph breaks."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import ptqx
import ptqx.ops as ops
from ptqx.quant import pack
from ptqx.quant.pack import PackedLinear

# Emitted by torch's own tracing machinery, not by ptqx.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)

# 20 tokens run the packed GEMM, 7 the GEMV in passes, 1 the single-token GEMV.
BATCHES = (20, 7, 1)


def _packed_mlp(int8_activations: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    calib = [torch.randn(32, 40) for _ in range(2)]
    packed = pack(
        ptqx.quantize(model, method="rtn", bits=2, calib=calib), int8_activations=int8_activations
    )
    assert all(isinstance(packed[i], PackedLinear) for i in (0, 2))
    return packed


def _compile(fn, backend: str = "aot_eager"):
    torch._dynamo.reset()
    return torch.compile(fn, backend=backend, fullgraph=True, dynamic=True)


@pytest.mark.parametrize("int8_activations", [False, True])
def test_packed_model_compiles_to_one_graph(int8_activations, device):
    model = _packed_mlp(int8_activations).to(device)
    compiled = _compile(model)
    for batch in BATCHES:
        x = torch.randn(batch, 40, device=device)
        assert torch.equal(compiled(x), model(x)), batch


@pytest.mark.slow
def test_packed_model_under_inductor():
    model = _packed_mlp(False)
    compiled = _compile(model, backend="inductor")
    for batch in BATCHES:
        x = torch.randn(batch, 40)
        assert torch.equal(compiled(x), model(x)), batch


def test_grid_and_score_ops_compile_to_one_graph(gen):
    w = torch.randn(6, 30, generator=gen)
    scale, zero = torch.rand(6, generator=gen) + 0.1, torch.full((6,), 7.0)
    logits = torch.randn(4, 5, 10, generator=gen)
    labels = torch.randint(0, 10, (4, 5), generator=gen)
    for fn, args in (
        (lambda w, s, z: ops.fake_quant(w, s, z, 15), (w, scale, zero)),
        (lambda w, s, z: ops.quantize_codes(w, s, z, 15), (w, scale, zero)),
        (ops.logit_scores, (logits, labels)),
    ):
        assert torch.equal(_compile(fn)(*args), fn(*args))


def test_value_checks_still_fail_inside_the_graph(gen):
    w = torch.randn(6, 30, generator=gen)
    zero = torch.full((6,), 7.0)
    bad_scale = torch.rand(6, generator=gen) + 0.1
    bad_scale[3] = 0.0
    with pytest.raises(RuntimeError, match="scale: every per-channel scale must be > 0"):
        _compile(lambda w, s, z: ops.fake_quant(w, s, z, 15))(w, bad_scale, zero)
    nan_scale = torch.rand(6, generator=gen) + 0.1
    nan_scale[0] = float("nan")
    with pytest.raises(RuntimeError, match="scale: contains NaN/Inf values"):
        _compile(lambda w, s, z: ops.fake_quant(w, s, z, 15))(w, nan_scale, zero)
    logits = torch.randn(4, 10, generator=gen)
    labels = torch.tensor([0, 3, 10, 2])
    with pytest.raises(RuntimeError, match=r"labels: values must lie in \[0, 10\)"):
        _compile(ops.logit_scores)(logits, labels)
    logits[1, 4] = float("nan")
    with pytest.raises(RuntimeError, match="logits: a row gives a non-finite score"):
        _compile(ops.logit_scores)(logits, torch.tensor([0, 3, 9, 2]))
