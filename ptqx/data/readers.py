"""Readers for the on-disk formats ptqx accepts, without torchvision.

Every reader returns numpy arrays ``x`` uint8 [N, C, H, W] and ``y`` int64 [N] and turns
any problem with a file (missing, truncated, corrupt, wrong header, labels out of range)
into one ``DatasetError`` naming that file. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import tempfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .dataset import DatasetError

# ---------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# ---------------------------------------------------------------------------------------

# IDX header: two zero bytes, a type byte (0x08 = unsigned byte), the number of dims,
# then one big-endian uint32 per dim (LeCun's MNIST page).
_IDX_UBYTE = 0x08


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped if it starts with the gzip magic; errors name the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return raw


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped or not) with ``ndim`` dimensions."""
    data = read_bytes(path)
    if len(data) < 4:
        raise DatasetError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    want = (_IDX_UBYTE << 8) | ndim
    if magic != want:
        raise DatasetError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{want:08x} "
            f"(unsigned bytes, {ndim} dims)"
        )
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expect = head + int(np.prod(dims, dtype=np.int64))
    if len(data) != expect:
        kind = "truncated" if len(data) < expect else "has trailing bytes"
        raise DatasetError(
            f"{path}: {kind}: header says dims {dims} ({expect} bytes), file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def _find(root: Path, names: Sequence[str]) -> Path:
    for n in names:
        p = root / n
        if p.is_file():
            return p
    raise DatasetError(f"{root / names[0]}: file not found (also tried: {', '.join(names[1:])})")


def _idx_names(prefix: str, kind: str, nd: int) -> list[str]:
    # The standard names ("train-images-idx3-ubyte[.gz]") and the dotted variant some
    # mirrors use ("train-images.idx3-ubyte").
    base = [f"{prefix}-{kind}-idx{nd}-ubyte", f"{prefix}-{kind}.idx{nd}-ubyte"]
    return [b + ext for b in base for ext in (".gz", "")]


def read_idx_split(
    root: Path, split: str, *, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """One split of an MNIST-format folder: x uint8 [N, 1, H, W], y int64 [N] in [0, K)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    ipath = _find(root, _idx_names(prefix, "images", 3))
    lpath = _find(root, _idx_names(prefix, "labels", 1))
    x = read_idx(ipath, ndim=3)
    y = read_idx(lpath, ndim=1)
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"{lpath}: {y.shape[0]} labels for {x.shape[0]} images in {ipath.name}")
    check_labels(lpath, y, num_classes)
    return x[:, None], y.astype(np.int64)


# ---------------------------------------------------------------------------------------
# CIFAR python pickles
# ---------------------------------------------------------------------------------------


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays.

    The CIFAR files are pickles; a plain ``pickle.load`` of a file from elsewhere could
    run arbitrary code. These are the only globals the real files (and numpy-written
    equivalents) need.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_cifar_pickle(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file: x uint8 [N, 3, 32, 32], y int64 [N]."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means the file is corrupt
        raise DatasetError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise DatasetError(
            f"{path}: missing key 'data' or {label_key!r} (has {sorted(map(str, d))})"
        )
    data = _integer_array(path, "data", d["data"], 0, 255)
    labels = _integer_array(path, label_key, d[label_key], None, None)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be [N, 3072] uint8, got shape {list(data.shape)}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    # rows are 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    return data.reshape(-1, 3, 32, 32), labels


def _integer_array(
    path: Path, key: str, value: object, lo: int | None, hi: int | None
) -> np.ndarray:
    """``value`` as an integer array (uint8 for a 0..255 range, else int64), refusing
    floats, booleans, objects and out-of-range values instead of converting them (a cast
    would turn 0..1 floats into 0/1 pixels, wrap 256 to 0 and truncate 1.7 to 1)."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable {key!r} ({exc})") from exc
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise DatasetError(f"{path}: {key!r} must hold integers, got dtype {a.dtype}")
    if lo is not None and a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise DatasetError(
            f"{path}: {key!r} values must lie in [{lo}, {hi}], got [{int(a.min())}, {int(a.max())}]"
        )
    return a.astype(np.uint8 if lo == 0 and hi == 255 else np.int64)


def check_labels(path: Path | str, y: np.ndarray, num_classes: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DatasetError(
            f"{path}: labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]"
        )


def find_folder(root: Path, name: str, marker: str) -> Path:
    """``root/name`` if it exists, else ``root`` itself if it holds ``marker``."""
    if (root / name).is_dir():
        return root / name
    if (root / marker).exists():
        return root
    raise DatasetError(
        f"{root / name}: folder not found (looked for {name}/ or {marker} in {root})"
    )


# ---------------------------------------------------------------------------------------
# Tiny ImageNet (JPEG tree) with an .npy cache
# ---------------------------------------------------------------------------------------

_TINY_CACHE_VERSION = 1


class _SizeMismatch(DatasetError):
    pass


def _decode_jpeg(path: Path, size: int | None) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DatasetError(
            "tinyimagenet needs Pillow to decode JPEGs: pip install 'ptqx[images]' (or pillow)"
        ) from exc
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)  # some images are grayscale
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc
    if size is not None and arr.shape[:2] != (size, size):
        raise _SizeMismatch(
            f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}"
        )
    return arr.transpose(2, 0, 1)


def _decode_all(paths: list[Path], size: int | None, first: Path | None = None) -> np.ndarray:
    """Decode ``paths`` into uint8 [N, 3, S, S]; S is ``size``, or the first image's size.

    Every image must have that size; an error names the image that set it (``first``,
    else ``paths[0]``) as well, since either one may be the odd one out.
    """
    if not paths:
        return np.zeros((0, 3, size or 64, size or 64), np.uint8)
    if size is None:
        first = paths[0]
        size = _decode_jpeg(first, None).shape[1]
    out = np.empty((len(paths), 3, size, size), np.uint8)

    def work(i: int) -> None:
        try:
            out[i] = _decode_jpeg(paths[i], size)
        except _SizeMismatch as exc:
            raise DatasetError(
                f"{exc} (the size of {first}; images of one set must all have one size, "
                "Tiny ImageNet's is 64x64)"
            ) from None

    # Pillow releases the GIL while decoding, so threads give a real speed-up.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(paths))))
    return out


def _tiny_listing(folder: Path) -> tuple[list[str], list[Path], list[int], list[Path], list[int]]:
    wpath = folder / "wnids.txt"
    try:
        wnids = [w.strip() for w in wpath.read_text().splitlines() if w.strip()]
    except OSError as exc:
        raise DatasetError(f"{wpath}: cannot read ({exc.strerror or exc})") from exc
    if not wnids or len(set(wnids)) != len(wnids):
        raise DatasetError(
            f"{wpath}: expected a list of distinct class ids, got {len(wnids)} lines"
        )
    index = {w: i for i, w in enumerate(wnids)}
    tr_paths: list[Path] = []
    tr_labels: list[int] = []
    for w in wnids:
        d = folder / "train" / w / "images"
        if not d.is_dir():
            raise DatasetError(f"{d}: folder not found (class {w} from {wpath})")
        # sorted by name: the same order as comparing the Paths, 2.5 s sooner on 100k files
        files = sorted(
            (p for p in d.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png")),
            key=lambda p: p.name,
        )
        if not files:
            raise DatasetError(f"{d}: no images")
        tr_paths += files
        tr_labels += [index[w]] * len(files)
    apath = folder / "val" / "val_annotations.txt"
    try:
        lines = [ln.split("\t") for ln in apath.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise DatasetError(f"{apath}: cannot read ({exc.strerror or exc})") from exc
    if not lines:
        raise DatasetError(f"{apath}: no validation images listed (the test split would be empty)")
    va_paths: list[Path] = []
    va_labels: list[int] = []
    for n, parts in enumerate(lines, 1):
        if len(parts) < 2:
            raise DatasetError(f"{apath}: line {n} is not '<file>\\t<wnid>...'")
        if parts[1] not in index:
            raise DatasetError(f"{apath}: line {n}: class {parts[1]!r} is not in {wpath.name}")
        p = folder / "val" / "images" / parts[0]
        if not p.is_file():
            raise DatasetError(f"{p}: file not found (listed in {apath.name} line {n})")
        va_paths.append(p)
        va_labels.append(index[parts[1]])
    return wnids, tr_paths, tr_labels, va_paths, va_labels


def _fingerprint(paths: list[Path], labels: list[int]) -> str:
    h = hashlib.sha256(str(_TINY_CACHE_VERSION).encode())
    for p, y in zip(paths, labels, strict=True):
        st = p.stat()
        h.update(f"{p.name}\0{y}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` to ``path`` via a temp file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cache_dir(folder: Path, cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    local = folder / ".ptqx-cache"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    # read-only data folder (e.g. a system install): a per-user cache keyed by its path
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "ptqx" / f"tinyimagenet-{key}"


def read_tinyimagenet(
    folder: Path, *, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Decode a ``tiny-imagenet-200`` tree once; later calls map the cached .npy arrays.

    The test split is ``val/`` (the official ``test/`` has no labels). The cache holds
    ``{x,y}_{train,test}.npy`` plus ``meta.json`` with a fingerprint of the file list
    (names, labels, sizes, mtimes): a changed tree is decoded again. Each array is written
    atomically, meta.json last, so an interrupted decode never leaves a cache that is read.
    """
    wnids, tr_p, tr_y, va_p, va_y = _tiny_listing(folder)
    fp = _fingerprint(tr_p + va_p, tr_y + va_y)
    cdir = _cache_dir(folder, cache_dir)
    meta = cdir / "meta.json"
    names = ("x_train", "y_train", "x_test", "y_test")
    try:
        ok = json.loads(meta.read_text()).get("fingerprint") == fp
    except (OSError, ValueError):
        ok = False
    if ok:
        try:
            # Memory-mapped copy-on-write: the 1.2 GB of training images are read lazily
            # and every process that loads the set (pool workers, Ray tasks) shares the
            # file's pages instead of holding its own copy. Nothing writes to them.
            arrs = [np.load(cdir / f"{n}.npy", mmap_mode="c", allow_pickle=False) for n in names]
            return (*arrs, len(wnids))
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    x_tr = _decode_all(tr_p, None)
    x_te = _decode_all(va_p, x_tr.shape[2], tr_p[0])
    arrs = [x_tr, np.asarray(tr_y, np.int64), x_te, np.asarray(va_y, np.int64)]
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        for n, a in zip(names, arrs, strict=True):
            atomic_save_npy(cdir / f"{n}.npy", a)
        fd, tmp = tempfile.mkstemp(dir=cdir, prefix=".meta.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"fingerprint": fp, "version": _TINY_CACHE_VERSION, "source": str(folder)}, f)
        os.replace(tmp, meta)
    except OSError:
        pass  # caching is an optimisation; the decoded arrays are still correct
    return (*arrs, len(wnids))


# ---------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------


def to_nchw(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """[N,H,W] -> [N,1,H,W]; NHWC (last axis 1 or 3, second not) -> NCHW; else NCHW as is."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DatasetError(
            f"{path}: {key} must be [N, H, W], [N, C, H, W] or [N, H, W, C], got {list(x.shape)}"
        )
    if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise DatasetError(f"{path}: {key} must have 1 or 3 channels, got shape {list(x.shape)}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise DatasetError(f"{path}: float {key} must lie in [0, 1]")
        return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))
    raise DatasetError(f"{path}: {key} must be uint8 (0..255) or float (0..1), got {x.dtype}")
