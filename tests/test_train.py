"""balanced_keep, TrainConfig validation, seeded training, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptqx.data import load_dataset
from ptqx.models import build_model
from ptqx.train import TrainConfig, balanced_keep, evaluate_accuracy, predict, train_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ------------------------------------------------------------------ balanced_keep


@pytest.mark.parametrize("n_models,pkeep", [(64, 0.5), (16, 0.5), (10, 0.3), (4, 0.25), (1, 1.0)])
def test_balanced_keep_exact_per_example(n_models, pkeep):
    keep = balanced_keep(n_models, 1001, pkeep=pkeep, seed=7)
    assert keep.dtype == bool and keep.shape == (n_models, 1001)
    k = round(pkeep * n_models)
    assert (keep.sum(0) == k).all()  # each example IN for exactly pkeep*N models
    # each model gets about pkeep*M examples (binomial spread, 6 sigma)
    sd = np.sqrt(1001 * pkeep * (1 - pkeep))
    assert (np.abs(keep.sum(1) - pkeep * 1001) <= 6 * sd + 1e-9).all()


def test_balanced_keep_matches_protocol_and_is_seeded():
    keep = balanced_keep(8, 50, seed=3)
    u = np.random.default_rng(3).uniform(size=(8, 50))
    rank = u.argsort(0).argsort(0)
    assert np.array_equal(keep, rank < 4)
    assert np.array_equal(keep, balanced_keep(8, 50, seed=3))
    assert not np.array_equal(keep, balanced_keep(8, 50, seed=4))
    # not integral: ceil(pkeep*N) models per example
    assert (balanced_keep(5, 40, pkeep=0.5, seed=0).sum(0) == 3).all()
    assert balanced_keep(4, 0, seed=0).shape == (4, 0)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(n_models=0, n_examples=5), "n_models"),
        (dict(n_models=2, n_examples=-1), "n_examples"),
        (dict(n_models=2, n_examples=5, pkeep=0.0), "pkeep"),
        (dict(n_models=2, n_examples=5, pkeep=1.5), "pkeep"),
        (dict(n_models=2.0, n_examples=5), "n_models"),
    ],
)
def test_balanced_keep_bad_args(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        balanced_keep(**kwargs, seed=0)
    with pytest.raises(ValueError, match="seed"):
        balanced_keep(2, 5, seed=-1)


# ------------------------------------------------------------------ TrainConfig


def test_config_defaults():
    paper = TrainConfig.for_dataset("cifar100")
    assert (paper.epochs, paper.batch_size, paper.lr, paper.momentum, paper.weight_decay) == (
        100, 128, 0.1, 0.9, 5e-4,
    )  # fmt: skip
    assert TrainConfig.for_dataset("tinyimagenet") == paper == TrainConfig.for_dataset("cifar10")
    assert TrainConfig.for_dataset("digits").epochs < 100
    assert TrainConfig.for_dataset("fashion-mnist").augment
    with pytest.raises(Exception, match="cannot assign"):
        paper.epochs = 3
    assert paper.replace(epochs=3).epochs == 3 and paper.as_dict()["lr"] == 0.1


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(epochs=0), "epochs: expected a positive int"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(lr=0.0), "lr: expected > 0"),
        (dict(lr=float("nan")), "lr: expected a finite"),
        (dict(momentum=1.0), "momentum"),
        (dict(weight_decay=-1e-4), "weight_decay"),
        (dict(augment="yes"), "augment: expected a bool"),
        (dict(momentum=0.0, nesterov=True), "nesterov"),
        (dict(label_smoothing=1.0), "label_smoothing"),
    ],
)
def test_config_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kwargs)


# ------------------------------------------------------------------ training


@pytest.fixture
def one_thread():
    # Tiny models train fastest single-threaded (and on a shared machine 2 OpenMP threads
    # can be 10x slower); restore the setting for the other tests.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_training_is_deterministic(digits, one_thread):
    cfg = TrainConfig.for_dataset("digits").replace(epochs=2, batch_size=32)
    idx = np.flatnonzero(balanced_keep(2, len(digits.y_train), seed=0)[0])
    runs = []
    for seed in (11, 11, 12):
        m = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, seed=0)
        runs.append(_state(train_model(m, digits, idx, cfg, seed=seed)))
    a, b, c = runs
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical with the same seed
    assert not torch.equal(a["fc.weight"], c["fc.weight"])  # another seed, another model


def test_small_cnn_learns_digits(digits, one_thread):
    calls = []
    cfg = TrainConfig.for_dataset("digits").replace(epochs=6)
    m = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, seed=0)
    out = train_model(m, digits, np.arange(len(digits.y_train)), cfg, seed=0,
                      progress=lambda *a: calls.append(a))  # fmt: skip
    assert out is m and not m.training
    assert [c[:2] for c in calls] == [(e, 6) for e in range(1, 7)]
    assert calls[-1][2] < calls[0][2]  # loss went down
    acc = evaluate_accuracy(m, digits)
    assert acc > 0.90, acc
    assert evaluate_accuracy(m, digits, split="train", batch_size=100) > 0.90


def test_lr_schedule_is_cosine_per_step(digits, one_thread, monkeypatch):
    lrs = []
    real_step = torch.optim.SGD.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    cfg = TrainConfig(epochs=2, batch_size=10, lr=0.2, augment=False)
    m = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, seed=0, width=4)
    train_model(m, digits, np.arange(25), cfg, seed=0)  # 3 steps per epoch, 6 in all
    want = [0.2 * 0.5 * (1 + np.cos(np.pi * t / 6)) for t in range(6)]
    assert np.allclose(lrs, want)


def test_train_bad_inputs(digits):
    m = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, seed=0)
    cfg = TrainConfig(epochs=1)
    with pytest.raises(ValueError, match="indices: empty"):
        train_model(m, digits, np.array([], dtype=np.int64), cfg, seed=0)
    with pytest.raises(ValueError, match=r"indices: must lie in \[0, 1297\)"):
        train_model(m, digits, np.array([0, 1297]), cfg, seed=0)
    with pytest.raises(ValueError, match="indices: expected a 1-D integer array"):
        train_model(m, digits, np.array([0.5]), cfg, seed=0)
    with pytest.raises(ValueError, match="seed"):
        train_model(m, digits, np.arange(3), cfg, seed=-2)
    with pytest.raises(TypeError, match="config: expected a TrainConfig"):
        train_model(m, digits, np.arange(3), {"epochs": 1}, seed=0)
    with pytest.raises(FloatingPointError, match="loss became"):
        train_model(
            m,
            digits,
            np.arange(64),
            TrainConfig(epochs=1, batch_size=8, lr=1e30, augment=False),
            seed=0,
        )
    with pytest.raises(ValueError, match="split"):
        evaluate_accuracy(m, digits, split="val")
    assert predict(m, digits, digits.x_test[:0]).shape == (0, 10)
