"""Shared fixtures: seeded RNG, device parametrisation, a small CNN trained on digits."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ptqx.ops  # noqa: F401  (defines the ops and loads native kernels once)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_report_header(config):
    from ptqx.ops.info import describe

    return describe().splitlines()[:2]


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords or "[cuda" in item.nodeid:
                item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def require_native() -> bool:
    return os.environ.get("PTQX_REQUIRE_NATIVE", "0") == "1"


def native_or_skip(op: str, device: torch.device | str = "cpu") -> None:
    """Skip a kernel-vs-reference test unless a native kernel serves ``op`` on ``device``.

    Without one the op runs the reference (the CompositeExplicitAutograd default), so the
    test would compare the reference with itself and pass for nothing. Under
    ``PTQX_REQUIRE_NATIVE=1`` (CI) a missing kernel fails the test instead.
    """
    from ptqx.ops.info import kernel_table

    key = "CUDA" if torch.device(device).type == "cuda" else "CPU"
    if kernel_table()[op][key] == "reference":
        if require_native():
            pytest.fail(f"no native {key} kernel for {op} (PTQX_REQUIRE_NATIVE=1)")
        pytest.skip(
            f"native {key} kernel for {op} not built: the reference would be tested against itself"
        )


@pytest.fixture(scope="session")
def digits_data():
    """scikit-learn digits as float tensors [N, 1, 8, 8] in [0, 1], split 1297/500."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:-500], y[:-500], x[-500:], y[-500:]


@pytest.fixture(scope="session")
def digits_model(digits_data):
    """A SmallCNN trained on digits for a few seconds; ~97% test accuracy."""
    from ptqx.models import SmallCNN

    x_tr, y_tr, _, _ = digits_data
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, in_channels=1, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    epochs, bs = 15, 64
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * ((len(y_tr) + bs - 1) // bs))
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y_tr), generator=g)
        for i in range(0, len(y_tr), bs):
            idx = perm[i : i + bs]
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def accuracy(model, x, y, batch: int = 512) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(y), batch)])
    return float((pred == y).float().mean())


def np_rng(seed: int = 0):
    return np.random.default_rng(seed)
