"""Dataset readers on small files written in each real on-disk format, every bad-input
path, and the Dataset's normalisation, augmentation and deterministic views."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ptqx.data import DATASETS, Dataset, DatasetError, load_dataset, view_specs
from ptqx.data import readers as R
from ptqx.data.registry import DIGITS_MEAN, DIGITS_STD, FASHION_MEAN, FASHION_STD

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")

# ------------------------------------------------------------------ writers (real formats)


def idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_mnist(root: Path, *, gz: bool, n_train=30, n_test=12, seed=0, dotted=False) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrs = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrs.items():
        nd = a.ndim
        fname = f"{name}.idx{nd}-ubyte" if dotted else f"{name}-idx{nd}-ubyte"
        data = idx_bytes(a)
        if gz:
            (root / (fname + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / fname).write_bytes(data)
    return arrs


def cifar_batch(n: int, rng, label_key: str, k: int) -> dict:
    d = {b"batch_label": b"testing batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    d[label_key.encode()] = [int(v) for v in rng.integers(0, k, n)]
    if label_key == "fine_labels":
        d[b"coarse_labels"] = [int(v) for v in rng.integers(0, 20, n)]
    return d


def write_cifar10(root: Path, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = cifar_batch(4, rng, "labels", 10)
        # protocol 2 like the original (python 2) files
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x"] * 10}, protocol=2))
    return batches


def write_cifar100(root: Path, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", 7), ("test", 3)):
        out[name] = cifar_batch(n, rng, "fine_labels", 100)
        (folder / name).write_bytes(pickle.dumps(out[name], protocol=4))
    return out


def write_tiny(root: Path, *, size=64, seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        d = folder / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(2):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(img).save(d / f"{w}_{i}.JPEG", quality=95)
        (folder / "train" / w / f"{w}_boxes.txt").write_text("")
    # one grayscale training image: the real set has some, they must come out RGB
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(
        folder / "train" / wnids[0] / "images" / f"{wnids[0]}_9.JPEG"
    )
    lines = []
    for i, w in enumerate([wnids[2], wnids[0], wnids[1], wnids[2]]):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / "val" / "images" / f"val_{i}.JPEG"
        )
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t{size - 1}\t{size - 1}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


# ------------------------------------------------------------------ registry, digits


def test_registry_names():
    assert set(DATASETS) == {
        "digits",
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "tinyimagenet",
        "npz",
    }
    assert issubclass(DatasetError, ValueError)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist3d'"):
        load_dataset("mnist3d")


def test_digits_split_and_constants():
    d = load_dataset("digits")
    assert (len(d.y_train), len(d.y_test)) == (1297, 500)
    assert d.x_train.dtype == torch.uint8 and d.x_train.shape[1:] == (1, 8, 8)
    assert d.y_train.dtype == torch.int64
    assert (d.in_channels, d.image_size, d.num_classes) == (1, 8, 10)
    assert int(d.x_train.max()) == 255 and int(d.x_train.min()) == 0
    # the split is fixed: a second load gives the same arrays
    d2 = load_dataset("digits")
    assert torch.equal(d.x_train, d2.x_train) and torch.equal(d.y_test, d2.y_test)
    # train and test are disjoint parts of the 1797 images, all classes present
    from sklearn.datasets import load_digits

    full = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    assert len(full) == 1797
    assert set(d.y_test.tolist()) == set(range(10))
    # constants are the training split's statistics (0..1 scale)
    x = d.x_train.double() / 255
    assert (
        abs(x.mean().item() - DIGITS_MEAN[0]) < 1e-3 and abs(x.std().item() - DIGITS_STD[0]) < 1e-3
    )
    z = d.normalize(d.x_train)
    assert (
        z.dtype == torch.float32 and abs(z.mean().item()) < 2e-3 and abs(z.std().item() - 1) < 2e-3
    )


def test_digits_takes_no_root(tmp_path):
    with pytest.raises(DatasetError, match="embedded"):
        load_dataset("digits", root=tmp_path)


# ------------------------------------------------------------------ IDX / Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path, gz):
    arrs = write_mnist(tmp_path, gz=gz)
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_test.shape == (12, 1, 28, 28)
    assert np.array_equal(d.x_train[:, 0].numpy(), arrs["train-images"])
    assert np.array_equal(d.y_test.numpy(), arrs["t10k-labels"].astype(np.int64))
    assert (d.mean, d.std, d.hflip, d.shift) == (FASHION_MEAN, FASHION_STD, False, 2)


def test_fashion_mnist_dotted_names(tmp_path):
    arrs = write_mnist(tmp_path, gz=False, dotted=True)
    # Only the dotted variant exists, so the load below must go through the dotted lookup.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "t10k-images.idx3-ubyte",
        "t10k-labels.idx1-ubyte",
        "train-images.idx3-ubyte",
        "train-labels.idx1-ubyte",
    ]
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert np.array_equal(d.x_train[:, 0].numpy(), arrs["train-images"])
    assert np.array_equal(d.x_test[:, 0].numpy(), arrs["t10k-images"])
    assert np.array_equal(d.y_test.numpy(), arrs["t10k-labels"].astype(np.int64))


def test_idx_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "nope")):
        load_dataset("fashion-mnist", root=tmp_path / "nope")


def test_idx_missing_file(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: file not found"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_idx_truncated_raw(tmp_path):
    write_mnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: truncated"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_idx_truncated_gzip(tmp_path):
    write_mnist(tmp_path, gz=True)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(
        DatasetError, match=r"train-labels-idx1-ubyte.gz: corrupt or truncated gzip"
    ):
        load_dataset("fashion-mnist", root=tmp_path)


def test_idx_header_too_short(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte: truncated IDX header"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_idx_wrong_magic(tmp_path):
    write_mnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(p.read_bytes())
    data[2] = 0x0D  # float32 element type
    p.write_bytes(bytes(data))
    with pytest.raises(
        DatasetError, match="train-images-idx3-ubyte: bad IDX magic number 0x00000d03"
    ):
        load_dataset("fashion-mnist", root=tmp_path)


def test_idx_images_labels_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(DatasetError, match="29 labels for 30 images"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_idx_labels_out_of_range(tmp_path):
    write_mnist(tmp_path, gz=True)
    bad = np.zeros(12, np.uint8)
    bad[5] = 10
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(bad)))
    with pytest.raises(
        DatasetError,
        match=r"t10k-labels-idx1-ubyte.gz: labels must lie in \[0, 10\), got \[0, 10\]",
    ):
        load_dataset("fashion-mnist", root=tmp_path)


def test_idx_wrong_image_size(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((30, 8, 8), np.uint8)))
    with pytest.raises(DatasetError, match="expected 28x28"):
        load_dataset("fashion-mnist", root=tmp_path)


@pytest.mark.skipif(
    not REAL_FASHION.is_dir(),
    reason=f"{REAL_FASHION} not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_real_files():
    d = load_dataset("fashion-mnist")
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    x = d.x_train.double() / 255
    assert (
        abs(x.mean().item() - FASHION_MEAN[0]) < 1e-3
        and abs(x.std().item() - FASHION_STD[0]) < 1e-3
    )


# ------------------------------------------------------------------ CIFAR


def test_cifar10(tmp_path):
    batches = write_cifar10(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        d = load_dataset("cifar10", root=root)
        assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
        want = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
        assert np.array_equal(d.x_train.reshape(20, -1).numpy(), want)
        # channel-major rows: the first 1024 values of a row are the red plane
        assert np.array_equal(
            d.x_test[1, 0].numpy().ravel(), batches["test_batch"][b"data"][1, :1024]
        )
        assert d.y_test.tolist() == batches["test_batch"][b"labels"]
        assert (d.num_classes, d.hflip, d.shift, d.image_size) == (10, True, 4, 32)
        assert d.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_fine_labels(tmp_path):
    out = write_cifar100(tmp_path)
    d = load_dataset("cifar100", root=tmp_path)
    assert d.num_classes == 100 and d.x_train.shape == (7, 3, 32, 32)
    assert d.y_train.tolist() == out["train"][b"fine_labels"]
    assert d.std == (0.2673, 0.2564, 0.2762)


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py: folder not found"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DatasetError, match="cifar-100-python: folder not found"):
        load_dataset("cifar100", root=tmp_path)


def test_cifar_missing_batch(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3: cannot read"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_corrupt_pickle(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "test_batch"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(DatasetError, match="test_batch: corrupt or truncated pickle"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_refuses_code_in_pickle(tmp_path):
    write_cifar100(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(
        DatasetError, match=r"cifar-100-python/test: corrupt.*refusing to load global"
    ):
        load_dataset("cifar100", root=tmp_path)


def test_cifar_wrong_shape_and_keys(tmp_path):
    write_cifar100(tmp_path)
    p = tmp_path / "cifar-100-python" / "train"
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"train: 'data' must be \[N, 3072\]"):
        load_dataset("cifar100", root=tmp_path)
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match="train: missing key 'data' or 'fine_labels'"):
        load_dataset("cifar100", root=tmp_path)


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_labels_out_of_range(tmp_path, which):
    if which == "cifar10":
        write_cifar10(tmp_path)
        p, key, bad = tmp_path / "cifar-10-batches-py" / "data_batch_2", b"labels", 10
    else:
        write_cifar100(tmp_path)
        p, key, bad = tmp_path / "cifar-100-python" / "test", b"fine_labels", 100
    d = pickle.loads(p.read_bytes())
    d[key][0] = bad
    p.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(DatasetError, match=rf"{p.name}: labels must lie in \[0, {bad}\)"):
        load_dataset(which, root=tmp_path)


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "data",
            lambda d: d.astype(np.float32) / 255,
            "'data' must hold integers, got dtype float32",
        ),
        ("data", lambda d: d.astype(np.int64) + 200, r"'data' values must lie in \[0, 255\]"),
        (
            "data",
            lambda d: np.full(d.shape, np.nan),
            "'data' must hold integers, got dtype float64",
        ),
        ("labels", lambda y: np.asarray(y, np.float64) + 0.7, "'labels' must hold integers"),
    ],
)
def test_cifar_refuses_wrong_dtypes(tmp_path, key, value, message):
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    d = pickle.loads(p.read_bytes())
    d[key.encode()] = value(d[key.encode()])
    p.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(DatasetError, match=rf"data_batch_3: {message}"):
        load_dataset("cifar10", root=tmp_path)


# ------------------------------------------------------------------ Tiny ImageNet


def test_tinyimagenet_decode_and_cache(tmp_path, monkeypatch):
    from PIL import Image

    folder = write_tiny(tmp_path)
    d = load_dataset("tinyimagenet", root=tmp_path)
    assert d.x_train.shape == (7, 3, 64, 64) and d.x_test.shape == (4, 3, 64, 64)
    assert d.num_classes == 3 and d.image_size == 64 and d.hflip and d.shift == 4
    # wnids.txt order gives the class index; files within a class in sorted order
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert d.y_test.tolist() == [2, 0, 1, 2]
    first = np.asarray(
        Image.open(folder / "train/n01443537/images/n01443537_0.JPEG").convert("RGB")
    )
    assert np.array_equal(d.x_train[0].permute(1, 2, 0).numpy(), first)
    gray = d.x_train[2]  # n01443537_9.JPEG, saved as grayscale
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    cache = folder / ".ptqx-cache"
    assert sorted(p.name for p in cache.iterdir()) == [
        "meta.json", "x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy",
    ]  # fmt: skip
    # a second load reads the cache: decoding would fail now
    monkeypatch.setattr(
        R, "_decode_jpeg", lambda *a: (_ for _ in ()).throw(AssertionError("decoded"))
    )
    d2 = load_dataset("tinyimagenet", root=tmp_path)
    assert torch.equal(d.x_train, d2.x_train) and torch.equal(d.y_test, d2.y_test)
    # a changed tree invalidates the cache
    (folder / "val" / "images" / "val_0.JPEG").write_bytes(
        (folder / "val" / "images" / "val_1.JPEG").read_bytes()
    )
    with pytest.raises(AssertionError, match="decoded"):
        load_dataset("tinyimagenet", root=tmp_path)


def test_tinyimagenet_cache_dir_and_size(tmp_path):
    write_tiny(tmp_path / "data", size=16)
    x_tr, y_tr, x_te, y_te, k = R.read_tinyimagenet(
        tmp_path / "data" / "tiny-imagenet-200", cache_dir=tmp_path / "cache"
    )
    assert x_tr.shape == (7, 3, 16, 16) and k == 3
    assert (tmp_path / "cache" / "meta.json").is_file()
    assert not (tmp_path / "data" / "tiny-imagenet-200" / ".ptqx-cache").exists()


def test_tinyimagenet_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match="tiny-imagenet-200: folder not found"):
        load_dataset("tinyimagenet", root=tmp_path)
    folder = write_tiny(tmp_path)
    bad = folder / "train" / "n01629819" / "images" / "n01629819_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match="n01629819_1.JPEG: cannot decode image"):
        load_dataset("tinyimagenet", root=tmp_path)
    bad.unlink()
    ann = folder / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"val_annotations.txt: line 5: class 'n99999999'"):
        load_dataset("tinyimagenet", root=tmp_path)
    ann.write_text("val_7.JPEG\tn01443537\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match="val_7.JPEG: file not found"):
        load_dataset("tinyimagenet", root=tmp_path)
    import shutil

    shutil.rmtree(folder / "train" / "n01641577")
    with pytest.raises(DatasetError, match="n01641577/images: folder not found"):
        load_dataset("tinyimagenet", root=tmp_path)


def test_tinyimagenet_odd_first_image_and_empty_val(tmp_path):
    from PIL import Image

    folder = write_tiny(tmp_path)
    first = folder / "train" / "n01443537" / "images" / "n01443537_0.JPEG"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(first)
    # The odd image is the first one: the message must name it, not only the next image.
    with pytest.raises(DatasetError, match=r"expected 32x32 \(the size of .*n01443537_0.JPEG"):
        load_dataset("tinyimagenet", root=tmp_path)
    first.unlink()
    (folder / "val" / "val_annotations.txt").write_text("\n")
    with pytest.raises(DatasetError, match="val_annotations.txt: no validation images"):
        load_dataset("tinyimagenet", root=tmp_path)


def test_tinyimagenet_mixed_sizes(tmp_path):
    from PIL import Image

    folder = write_tiny(tmp_path)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "val" / "images" / "val_2.JPEG")
    with pytest.raises(DatasetError, match="val_2.JPEG: image is 32x32, expected 64x64"):
        load_dataset("tinyimagenet", root=tmp_path)


# ------------------------------------------------------------------ npz


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nhw", "float"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    c = 1 if layout == "nhw" else 3
    x = rng.integers(0, 256, (10, c, 12, 12), dtype=np.uint8)
    xt = x[:4]
    store = {"nchw": lambda a: a, "nhwc": lambda a: a.transpose(0, 2, 3, 1), "nhw": lambda a: a[:, 0],
             "float": lambda a: a.astype(np.float32) / 255}[layout]  # fmt: skip
    p = tmp_path / "mine.npz"
    np.savez(
        p, x_train=store(x), y_train=rng.integers(0, 5, 10), x_test=store(xt), y_test=np.arange(4)
    )
    d = load_dataset("npz", root=p)
    assert np.array_equal(d.x_train.numpy(), x) and np.array_equal(d.x_test.numpy(), xt)
    assert d.num_classes == 5 and d.name == "mine" and d.in_channels == c
    assert d.hflip == (c == 3) and d.shift == (4 if c == 3 else 1)
    flat = x.transpose(1, 0, 2, 3).reshape(c, -1) / 255
    assert np.allclose(d.mean, flat.mean(1)) and np.allclose(d.std, flat.std(1))


def test_npz_options(tmp_path):
    p = tmp_path / "o.npz"
    np.savez(p, x_train=np.zeros((3, 1, 8, 8), np.uint8), y_train=np.array([0, 1, 2]),
             x_test=np.zeros((1, 1, 8, 8), np.uint8), y_test=np.array([1]), num_classes=7,
             mean=np.array([0.5]), std=np.array([0.25]), hflip=True, shift=0)  # fmt: skip
    d = load_dataset("npz", root=p)
    assert (d.num_classes, d.mean, d.std, d.hflip, d.shift) == (7, (0.5,), (0.25,), True, 0)


def test_npz_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match="pass root"):
        load_dataset("npz")
    with pytest.raises(DatasetError, match="missing.npz: file not found"):
        load_dataset("npz", root=tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DatasetError, match="junk.npz: not a readable .npz"):
        load_dataset("npz", root=junk)
    good = dict(x_train=np.zeros((3, 8, 8), np.uint8), y_train=np.array([0, 1, 2]),
                x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([1, 1]))  # fmt: skip
    cases = {
        "missing arrays \\['y_test'\\]": {k: v for k, v in good.items() if k != "y_test"},
        r"\(y_test\): labels must lie in \[0, 3\), got \[-1, 1\]": {
            **good,
            "y_test": np.array([1, -1]),
        },
        r"\(y_train\): labels must lie in \[0, 2\)": {**good, "num_classes": 2},
        "3 train images but 2 y_train labels": {**good, "y_train": np.array([0, 1])},
        "float x_train must lie in": {**good, "x_train": np.full((3, 8, 8), 2.0)},
        "x_test must have 1 or 3 channels": {**good, "x_test": np.zeros((2, 5, 8, 8), np.uint8)},
        "y_train must be a 1-D integer": {**good, "y_train": np.array([0.0, 1.0, 2.0])},
        "must be equal square images": {**good, "x_test": np.zeros((2, 9, 9), np.uint8)},
        "finite": {**good, "mean": np.array([np.nan]), "std": np.array([0.2])},
        "finite positive stds": {**good, "mean": np.array([0.5]), "std": np.array([np.nan])},
        "test split is empty": {
            **good,
            "x_test": np.zeros((0, 8, 8), np.uint8),
            "y_test": np.zeros(0, np.int64),
        },
    }
    for i, (msg, arrs) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.npz"
        np.savez(p, **arrs)
        with pytest.raises(DatasetError, match=f"bad{i}.npz.*{msg}"):
            load_dataset("npz", root=p)


# ------------------------------------------------------------------ Dataset methods


def make(hflip: bool, shift: int, c=3, size=10, n=6) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (n, c, size, size), generator=g, dtype=torch.uint8)  # no zeros
    y = torch.arange(n) % 3
    return Dataset(name="t", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], num_classes=3,
                   mean=(0.5,) * c, std=(0.25,) * c, hflip=hflip, shift=shift)  # fmt: skip


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    yi, xi = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., ys, xs] = img[..., yi, xi]
    return out


def test_augment_is_flip_plus_padded_crop():
    d = make(hflip=True, shift=4, n=64)
    g = torch.Generator().manual_seed(3)
    out = d.augment(d.x_train, g)
    assert out.dtype == torch.uint8 and out.shape == d.x_train.shape
    seen_flip, seen = set(), set()
    for i in range(64):
        matches = [
            (m, dy, dx)
            for m in (False, True)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if torch.equal(out[i], shifted(d.x_train[i].flip(-1) if m else d.x_train[i], dy, dx))
        ]
        assert len(matches) == 1, f"image {i} is not one flip+shift of its input"
        seen_flip.add(matches[0][0])
        seen.add(matches[0][1:])
    assert seen_flip == {False, True} and len(seen) > 20  # random, not one fixed transform
    # same generator state -> same output; input untouched
    again = d.augment(d.x_train, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    assert not torch.equal(out, d.augment(d.x_train, torch.Generator().manual_seed(4)))


def test_augment_grayscale_shifts_only():
    d = make(hflip=False, shift=1, c=1, size=8, n=40)
    out = d.augment(d.x_train, torch.Generator().manual_seed(0))
    for i in range(40):
        assert any(
            torch.equal(out[i], shifted(d.x_train[i], dy, dx))
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
    none = make(hflip=False, shift=0, c=1, size=8)
    x = none.x_train
    y = none.augment(x, torch.Generator())
    assert torch.equal(y, x) and y is not x


def test_views():
    d = make(hflip=True, shift=4)
    v = d.views(d.x_train, 4)
    assert v.shape == (4, 6, 3, 10, 10) and v.dtype == torch.uint8
    assert torch.equal(v[0], d.x_train) and torch.equal(v[1], d.x_train.flip(-1))
    assert torch.equal(v[2], shifted(d.x_train, 0, 1)) and torch.equal(
        v[3], shifted(d.x_train.flip(-1), 0, 1)
    )
    assert d.max_views() == 2 * (1 + 8 * 4)
    g = make(hflip=False, shift=1, c=1, size=8)
    vg = g.views(g.x_train, 5)
    want = [(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)]
    for k, (dy, dx) in enumerate(want):
        assert torch.equal(vg[k], shifted(g.x_train, dy, dx))
    assert view_specs(hflip=False, shift=0) == [(False, 0, 0)]
    with pytest.raises(ValueError, match=r"n_views: expected an int in \[1, 9\]"):
        g.views(g.x_train, 10)
    with pytest.raises(ValueError, match="n_views"):
        g.views(g.x_train, 0)


def test_normalize_and_bad_batches():
    d = make(hflip=True, shift=4)
    z = d.normalize(d.x_train)
    assert torch.allclose(z, (d.x_train.float() / 255 - 0.5) / 0.25)
    with pytest.raises(TypeError, match="x: expected dtype uint8, got float32"):
        d.normalize(d.x_train.float())
    with pytest.raises(ValueError, match=r"x: expected shape \[B, 3, 10, 10\]"):
        d.augment(d.x_train[:, :1], torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        d.augment(d.x_train, 0)


def test_dataset_validation():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    ok = dict(name="t", x_train=x, y_train=torch.zeros(4, dtype=torch.int64), x_test=x,
              y_test=torch.zeros(4, dtype=torch.int64), num_classes=2, mean=(0.5,), std=(0.5,))  # fmt: skip
    Dataset(**ok)
    with pytest.raises(DatasetError, match=r"train labels must lie in \[0, 2\)"):
        Dataset(**{**ok, "y_train": torch.tensor([0, 1, 2, 0])})
    with pytest.raises(DatasetError, match="4 test images but 3 test labels"):
        Dataset(**{**ok, "y_test": torch.zeros(3, dtype=torch.int64)})
    with pytest.raises(DatasetError, match="positive stds"):
        Dataset(**{**ok, "std": (0.0,)})
    for bad in ({"std": (float("nan"),)}, {"mean": (float("nan"),)}, {"std": (float("inf"),)}):
        with pytest.raises(DatasetError, match="finite"):
            Dataset(**{**ok, **bad})
    with pytest.raises(DatasetError, match="test split is empty"):
        Dataset(**{**ok, "x_test": x[:0], "y_test": torch.zeros(0, dtype=torch.int64)})
    with pytest.raises(DatasetError, match="shift"):
        Dataset(**{**ok, "shift": 8})


def test_cifar_numpy1_era_pickle(tmp_path):
    # The real files were written by Python 2 / numpy 1, whose arrays unpickle through
    # numpy.core.multiarray._reconstruct (numpy 2 writes numpy._core): both must load.
    batches = write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "test_batch"
    raw = p.read_bytes()
    assert b"numpy._core.multiarray" in raw
    p.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    d = load_dataset("cifar10", root=tmp_path)
    assert np.array_equal(d.x_test.reshape(4, -1).numpy(), batches["test_batch"][b"data"])


def test_tinyimagenet_cache_is_mapped_not_copied(tmp_path, monkeypatch):
    # The cached arrays used to be read into private memory by every process that loads
    # the set (each pool worker / Ray task: +1.2 GB for the real training split); mapped
    # copy-on-write, the processes share the file's pages and the Dataset wraps them.
    write_tiny(tmp_path, size=16)
    first = load_dataset("tinyimagenet", root=tmp_path)  # decodes, writes the cache
    seen = {}
    read = R.read_tinyimagenet

    def spy(*args, **kwargs):
        seen["arrays"] = read(*args, **kwargs)
        return seen["arrays"]

    monkeypatch.setattr(R, "read_tinyimagenet", spy)
    d = load_dataset("tinyimagenet", root=tmp_path)
    x_tr, y_tr, x_te, y_te, _ = seen["arrays"]
    assert all(isinstance(a, np.memmap) for a in (x_tr, y_tr, x_te, y_te))
    assert np.shares_memory(d.x_train.numpy(), x_tr) and np.shares_memory(d.x_test.numpy(), x_te)
    assert torch.equal(d.x_train, first.x_train) and torch.equal(d.y_test, first.y_test)
    # copy-on-write: augmenting or writing to the tensors never touches the cache file
    d.x_train[0] = 0
    again = load_dataset("tinyimagenet", root=tmp_path)
    assert torch.equal(again.x_train, first.x_train)
