"""Artifact store: content-keyed unit outputs on a file system path.

The interface is four calls (``exists``, ``get``, ``put``, ``list``) plus ``delete``, so
another backend (an object store) can implement it without touching the units.

Each artifact is two files under ``<root>/<key[:2]>/``: the payload ``<key>.pt``
(``torch.save`` of a dict of tensors and plain Python values; loaded with
``weights_only=True``, so no pickled code is ever executed) and ``<key>.json`` with its
sha256, size and how it was made. Both are written to a unique temp file and renamed,
the checksum file last: a reader sees a complete artifact or none. A payload whose
checksum does not match (truncated, corrupted, half-copied) is reported as corrupt,
never returned; the pipeline then recomputes it. Two writers of the same key write
identical content, and ``os.replace`` makes the last rename win atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch


class ArtifactError(RuntimeError):
    """Base class: an artifact is missing or unusable."""


class ArtifactMissing(ArtifactError, KeyError):
    pass


class ArtifactCorrupt(ArtifactError):
    pass


def _plain(value: Any) -> Any:
    """numpy -> torch / Python scalars, recursively, so ``weights_only`` loading accepts it."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a unique temp file + fsync + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


class FileStore:
    """Artifacts on a local or shared file system.

    Args:
        root: folder (created on first write).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"key: expected a lowercase hex content key, got {key!r}")
        d = self.root / key[:2]
        return d / f"{key}.pt", d / f"{key}.json"

    def _meta(self, key: str) -> dict[str, Any] | None:
        _, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
        except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        # Valid JSON that is not a checksum record ([] , a number) is as unusable as a
        # truncated file: the artifact does not exist and is recomputed.
        return meta if isinstance(meta, dict) else None

    def exists(self, key: str, *, verify: bool = False) -> bool:
        """True when the artifact is complete (checksum file present, payload size matches);
        with ``verify`` the payload's sha256 is checked too."""
        payload, _ = self._paths(key)
        meta = self._meta(key)
        if meta is None or not payload.exists() or payload.stat().st_size != meta.get("size"):
            return False
        if verify:
            return hashlib.sha256(payload.read_bytes()).hexdigest() == meta.get("sha256")
        return True

    def info(self, key: str) -> dict[str, Any]:
        """The artifact's metadata (how it was made, checksum); raises if missing."""
        meta = self._meta(key)
        if meta is None:
            raise ArtifactMissing(key)
        return meta

    def get(self, key: str, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load and verify an artifact.

        Raises:
            ArtifactMissing: not (completely) written.
            ArtifactCorrupt: the payload does not match its recorded checksum.
        """
        payload, _ = self._paths(key)
        meta = self._meta(key)
        if meta is None:
            raise ArtifactMissing(key)
        try:
            data = payload.read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(key) from None
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != meta.get("size") or digest != meta.get("sha256"):
            raise ArtifactCorrupt(
                f"artifact {key} at {payload}: checksum mismatch (size {len(data)} vs {meta.get('size')}); "
                "it will be recomputed"
            )
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)

    def put(self, key: str, payload: dict[str, Any], *, meta: dict[str, Any] | None = None) -> None:
        """Save ``payload`` (dict of tensors / numpy arrays / plain values) under ``key``."""
        payload_path, meta_path = self._paths(key)
        buf = io.BytesIO()
        torch.save(_plain(payload), buf)
        data = buf.getvalue()
        # The payload lands first; the checksum file is what makes the artifact exist.
        atomic_write_bytes(payload_path, data)
        record = {
            "key": key,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            **(meta or {}),
        }
        atomic_write_text(meta_path, json.dumps(record, indent=1, sort_keys=True, default=str))

    def delete(self, key: str) -> None:
        for p in self._paths(key):
            p.unlink(missing_ok=True)

    def list(self) -> list[str]:
        """Keys of complete artifacts (checksum file present)."""
        if not self.root.exists():
            return []
        return sorted(p.stem for p in self.root.glob("*/*.json") if not p.name.startswith("."))
