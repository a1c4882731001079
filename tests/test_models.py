"""build_model registry, the CIFAR ResNet-18 layout, and batched_logits == per-model loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptqx.models import MODELS, ResNet18, SmallCNN, batched_logits, build_model, default_model
from ptqx.models import batched as B


def test_registry():
    assert set(MODELS) == {"small_cnn", "resnet18"}
    assert default_model("digits") == "small_cnn" and default_model("cifar100") == "resnet18"


def test_resnet18_layout_and_param_count():
    m = build_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    assert isinstance(m, ResNet18)
    # torchvision resnet18 (11,689,512 for 1000 classes) with a 3x3 stem and fc 512 -> 10
    assert sum(p.numel() for p in m.parameters()) == 11_173_962
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and m.conv1.bias is None
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    assert (m.fc.in_features, m.fc.out_features) == (512, 10)
    names = dict(m.named_modules())
    for n in ["conv1", "bn1", "layer1.0.conv1", "layer1.1.bn2", "layer2.0.downsample.0",
              "layer4.1.conv2", "fc"]:  # fmt: skip
        assert n in names, n
    assert "layer1.0.downsample" not in names or names["layer1.0.downsample"] is None
    widths = [names[f"layer{i}.0.conv1"].out_channels for i in range(1, 5)]
    assert widths == [64, 128, 256, 512]


@pytest.mark.parametrize("size,classes", [(32, 10), (64, 200)])
def test_resnet18_shapes(size, classes):
    m = build_model("resnet18", num_classes=classes, in_channels=3, image_size=size).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, size, size)).shape == (2, classes)


@pytest.mark.parametrize("size", [8, 28])
def test_small_cnn_shapes(size):
    m = build_model("small_cnn", num_classes=10, in_channels=1, image_size=size).eval()
    assert isinstance(m, SmallCNN) and m.fc.in_features == 64
    with torch.no_grad():
        assert m(torch.randn(3, 1, size, size)).shape == (3, 10)
    wide = build_model("small_cnn", num_classes=4, in_channels=3, image_size=size, width=8)
    assert wide.fc.in_features == 32


def test_seeded_build_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, seed=3)
    c = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["fc.weight"], sc["fc.weight"])


def test_module_callable():
    m = build_model(
        "tests.custom_models:tiny_mlp", num_classes=3, in_channels=1, image_size=8, hidden=5
    )
    assert m[1].in_features == 64 and m[1].out_features == 5 and m[3].out_features == 3


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("resnet50", "unknown model 'resnet50'"),
        ("tests.no_such_module:fn", "cannot import module 'tests.no_such_module'"),
        ("tests.custom_models:missing", "has no attribute 'missing'"),
        ("tests.custom_models:NOT_CALLABLE", "is not callable"),
        ("tests.custom_models:not_a_model", "returned str, expected an nn.Module"),
        (":fn", "expected 'package.module:callable'"),
    ],
)
def test_bad_model_spec(spec, msg):
    with pytest.raises(ValueError, match=msg):
        build_model(spec, num_classes=10, in_channels=1, image_size=8)


def test_bad_model_args():
    with pytest.raises(ValueError, match="num_classes: expected a positive int"):
        build_model("small_cnn", num_classes=0, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="image_size: resnet18 needs at least 8x8"):
        build_model("resnet18", num_classes=10, in_channels=3, image_size=4)


# ------------------------------------------------------------------ batched_logits


@pytest.fixture(autouse=True)
def one_thread():
    # Autouse, so every test in this module: small convs run fastest single-threaded, and
    # on a shared 2-core machine two OpenMP threads can be several times slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _models(arch, n, c, size, **kw):
    out = []
    for i in range(n):
        m = build_model(arch, num_classes=7, in_channels=c, image_size=size, seed=i, **kw)
        with torch.no_grad():  # distinct running statistics per model
            m.train()(
                torch.randn(16, c, size, size, generator=torch.Generator().manual_seed(100 + i))
                * (i + 1)
            )
        out.append(m)
    return out


def _loop(models, x):
    with torch.no_grad():
        return torch.stack([m.eval()(x) for m in models])


@pytest.mark.parametrize("method", ["auto", "vmap", "loop"])
def test_batched_equals_loop_small_cnn(method):
    models = _models("small_cnn", 5, 1, 8)
    x = torch.randn(37, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for m in models:
        m.train()  # batched_logits evaluates in eval mode regardless (running stats)
    got = batched_logits(models, x, method=method, chunk_size=10)
    want = _loop(models, x)
    assert got.shape == (5, 37, 7) and got.dtype == torch.float32
    # vmap runs the same float32 math in another order (grouped conv): tiny differences
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_batched_restores_training_flag():
    models = _models("small_cnn", 2, 1, 8)
    models[0].train()
    models[1].eval()
    batched_logits(models, torch.randn(4, 1, 8, 8), method="loop")
    assert models[0].training and not models[1].training


def test_batched_equals_loop_resnet18():
    models = _models("resnet18", 2, 3, 32)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    want = _loop(models, x)
    for method in ("vmap", "loop"):
        torch.testing.assert_close(
            batched_logits(models, x, method=method), want, rtol=1e-4, atol=1e-5
        )


def test_batched_empty_and_default_chunk():
    models = _models("small_cnn", 3, 1, 8)
    for method in ("vmap", "loop"):
        assert batched_logits(models, torch.zeros(0, 1, 8, 8), method=method).shape == (3, 0, 7)
    assert B._chunk(16, torch.zeros(1, 1, 8, 8), None) == (1 << 20) // (16 * 64)


def test_batched_fallback_for_unstackable(monkeypatch):
    models = [*_models("small_cnn", 1, 1, 8), *_models("small_cnn", 1, 1, 8, width=8)]
    x = torch.randn(6, 1, 8, 8)
    with pytest.raises(Exception):  # noqa: B017  (torch.func's own error type)
        batched_logits(models, x, method="vmap")
    monkeypatch.setattr(B, "DEFAULT_METHOD", "vmap")
    with pytest.warns(RuntimeWarning, match="cannot vmap these models"):
        got = batched_logits(models, x)
    torch.testing.assert_close(got, _loop(models, x), rtol=0, atol=0)


def test_batched_bad_inputs():
    models = _models("small_cnn", 2, 1, 8)
    with pytest.raises(ValueError, match="models: expected a non-empty sequence"):
        batched_logits([], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="models: expected a non-empty sequence"):
        batched_logits(models[0], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"x: expected float32 \[B, C, H, W\]"):
        batched_logits(models, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="method"):
        batched_logits(models, torch.zeros(1, 1, 8, 8), method="grouped")
    with pytest.raises(ValueError, match="chunk_size"):
        batched_logits(models, torch.zeros(1, 1, 8, 8), chunk_size=0)


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    # Non-trivial running statistics and affine parameters, so folding has work to do.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.3)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize(
    "arch,shape",
    [("small_cnn", (1, 28, 28)), ("small_cnn", (1, 8, 8)), ("resnet18", (3, 32, 32))],
    ids=["small_cnn-28", "small_cnn-8", "resnet18"],
)
def test_inference_form_same_function(arch, shape):
    import copy

    from ptqx.models import to_inference_form

    c, h, w = shape
    model = _randomise_bn(
        build_model(arch, num_classes=10, in_channels=c, image_size=h, seed=3), seed=4
    )
    fc_before = model.fc.weight.detach().clone()
    fast = to_inference_form(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert not fast.training
    # A layer that no BN follows keeps its weights bit for bit.
    assert torch.equal(fast.fc.weight, fc_before)
    x = torch.randn(17, c, h, w, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
        got_nchw = fast(x)
    # Folding reassociates gamma / sqrt(var + eps) into the weights: float32 rounding only.
    tol = 1e-5 * want.abs().max().item() + 1e-6
    assert (got - want).abs().max().item() <= tol
    assert (got_nchw - want).abs().max().item() <= tol
