"""Zarr checkpoints of pipeline stages: content-addressed, atomic, resumable.

A stage's result is stored under ``<cache>/<stage>/<key>.zarr`` where ``key`` is a token of
everything that determines it: the identities of its inputs (path, size, modification
time — or a content hash when asked), its parameters, the keys of the stages it reads and
the daskred version.  A re-run builds the same keys, finds the entries and computes
nothing; changing a parameter changes that stage's key and the keys of the stages after
it, and nothing before.

Entries are written under a temporary name and renamed into place (see
:func:`daskred.io.to_zarr`), so an interrupted run never leaves an entry that a later run
would trust.  Small results (transforms, zero points) are stored as JSON the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import xarray as xr
from dask.base import tokenize

from .io import to_zarr

__all__ = ["Cache", "file_identity"]


def file_identity(path: str | os.PathLike, *, content_hash: bool = False) -> tuple[str, int, int] | tuple[str, str]:
    """Identity of an input file: (path, size, mtime in ns), or (path, sha256) on request."""
    path = os.fspath(path)
    if content_hash:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return (os.path.realpath(path), digest.hexdigest())
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


class Cache:
    """A folder of stage checkpoints.

    Parameters
    ----------
    root : path-like or None
        Cache folder; ``None`` disables caching (every stage computes and nothing is stored).
    version : str
        Part of every key, so that a new daskred version never trusts old entries.
    """

    def __init__(self, root: str | os.PathLike | None, *, version: str) -> None:
        self.root = Path(root) if root is not None else None
        self.version = version

    def key(self, stage: str, *parts: Any) -> str:
        """Deterministic key of a stage from its inputs' identities and parameters."""
        return f"{stage}-{tokenize(self.version, stage, *parts)}"

    def _path(self, key: str, suffix: str) -> Path:
        assert self.root is not None
        stage = key.split("-", 1)[0]
        return self.root / stage / f"{key}{suffix}"

    def has(self, key: str) -> bool:
        return self.root is not None and self._path(key, ".zarr").is_dir()

    def checkpoint(self, key: str, build: Callable[[], xr.Dataset]) -> tuple[xr.Dataset, bool]:
        """Return the stored Dataset for ``key``, or build, store and reopen it.

        Returns ``(dataset, cached)``; ``cached`` is True when nothing was computed.

        Notes
        -----
        Computes ``build()``'s graph when the entry is missing (that is the point of a
        checkpoint); the returned Dataset is read lazily from the store, chunked as stored.
        """
        if self.root is None:
            return build(), False
        store = self._path(key, ".zarr")
        if store.is_dir():
            return _open(store), True
        to_zarr(build(), store, overwrite=True)
        return _open(store), False

    def memo(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """Small JSON-able results (transforms, zero points) stored like checkpoints."""
        if self.root is None:
            return compute(), False
        path = self._path(key, ".json")
        if path.is_file():
            return json.loads(path.read_text()), True
        value = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(value, fh)
        os.replace(tmp, path)
        return value, False

    def entries(self) -> list[dict[str, Any]]:
        """One row per entry: stage, key, size in bytes."""
        if self.root is None or not self.root.is_dir():
            return []
        rows = []
        for entry in sorted(self.root.glob("*/*")):
            if entry.name.startswith("."):
                continue
            size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else entry.stat().st_size
            rows.append({"stage": entry.parent.name, "key": entry.name, "bytes": size})
        return rows

    def clear(self, stages: Iterable[str] | None = None) -> int:
        """Remove entries (all, or those of the given stages); returns how many."""
        removed = 0
        if self.root is None or not self.root.is_dir():
            return 0
        wanted = set(stages) if stages else None
        for folder in self.root.iterdir():
            if folder.is_dir() and (wanted is None or folder.name in wanted):
                removed += sum(1 for _ in folder.iterdir())
                shutil.rmtree(folder)
        return removed


def _open(store: Path) -> xr.Dataset:
    ds = xr.open_zarr(store, consolidated=False)
    ds = ds.assign_coords({name: coord.load() for name, coord in ds.coords.items()})  # small header values
    for name, coord in ds.coords.items():
        if coord.dtype.kind == "U":
            ds = ds.assign_coords({name: coord.astype(object)})
    return ds
