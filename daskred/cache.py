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

The cache can also live at an fsspec URL where zarr can write (``s3://bucket/cache``,
``gs://...``, ``memory://...``; the filesystem's package, such as ``s3fs``, must be
installed).  Object stores have no rename, so there an entry is written in place and
trusted only once an empty ``<key>.zarr.done`` marker written after it exists; an
interrupted write leaves no marker and is rewritten by the next run.  JSON results are one
object each, which object stores write atomically.  With a distributed cluster, the workers
write the chunks, so they need access (credentials) to the URL too.
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

from .io import is_url, local_path, to_zarr

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
    """A folder (or fsspec URL) of stage checkpoints.

    Parameters
    ----------
    root : path-like, URL or None
        Cache folder, or an fsspec URL such as ``s3://bucket/daskred-cache``; ``None``
        disables caching (every stage computes and nothing is stored).
    version : str
        Part of every key, so that a new daskred version never trusts old entries.

    Examples
    --------
    >>> cache = Cache("memory://doc-cache", version="1.0")
    >>> cache.memo(cache.key("shifts", [1, 2]), lambda: {"dx": 0.5})
    ({'dx': 0.5}, False)
    >>> cache.memo(cache.key("shifts", [1, 2]), lambda: {"dx": 9.9})
    ({'dx': 0.5}, True)
    >>> cache.clear()
    1
    """

    _DONE = ".done"

    def __init__(self, root: str | os.PathLike | None, *, version: str) -> None:
        self.version = version
        self.fs = None
        if root is None:
            self.root: Path | str | None = None
        elif is_url(root):
            import fsspec

            self.root = os.fspath(root).rstrip("/")
            self.fs, self._base = fsspec.core.url_to_fs(self.root)
            self._base = self._base.rstrip("/")
        else:
            self.root = local_path(root).absolute()

    @property
    def is_remote(self) -> bool:
        """True when the cache is at an fsspec URL (entries committed by a marker)."""
        return self.fs is not None

    def key(self, stage: str, *parts: Any) -> str:
        """Deterministic key of a stage from its inputs' identities and parameters."""
        return f"{stage}-{tokenize(self.version, stage, *parts)}"

    def _path(self, key: str, suffix: str) -> Path | str:
        assert self.root is not None
        stage = key.split("-", 1)[0]
        if self.is_remote:
            return f"{self.root}/{stage}/{key}{suffix}"
        return self.root / stage / f"{key}{suffix}"

    def _fs_path(self, location: Path | str) -> str:
        """Path inside the fsspec filesystem of a URL under the cache root."""
        return self._base + str(location)[len(self.root):]

    def has(self, key: str) -> bool:
        """True when a complete entry for ``key`` is stored."""
        if self.root is None:
            return False
        store = self._path(key, ".zarr")
        if self.is_remote:
            return self.fs.exists(self._fs_path(store) + self._DONE)
        return store.is_dir()

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
        if self.has(key):
            return _open(store), True
        to_zarr(build(), store, overwrite=True)
        if self.is_remote:
            self.fs.pipe_file(self._fs_path(store) + self._DONE, b"")
        return _open(store), False

    def memo(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """Small JSON-able results (transforms, zero points) stored like checkpoints."""
        if self.root is None:
            return compute(), False
        path = self._path(key, ".json")
        if self.is_remote:
            target = self._fs_path(path)
            if self.fs.exists(target):
                return json.loads(self.fs.cat_file(target)), True
            value = compute()
            self.fs.pipe_file(target, json.dumps(value).encode())
            return value, False
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
        """One row per entry: stage, key, size in bytes, complete (False: an interrupted write)."""
        if self.root is None:
            return []
        if self.is_remote:
            return self._remote_entries()
        if not self.root.is_dir():
            return []
        rows = []
        for entry in sorted(self.root.glob("*/*")):
            if entry.name.startswith("."):
                continue
            size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else entry.stat().st_size
            rows.append({"stage": entry.parent.name, "key": entry.name, "bytes": size, "complete": True})
        return rows

    def _remote_entries(self) -> list[dict[str, Any]]:
        if not self.fs.exists(self._base):
            return []
        names = sorted(self.fs.glob(f"{self._base}/*/*"))
        done = {name[: -len(self._DONE)] for name in names if name.endswith(self._DONE)}
        rows = []
        for name in names:
            if name.endswith(self._DONE):
                continue
            stage, key = name.rsplit("/", 2)[-2:]
            rows.append({"stage": stage, "key": key, "bytes": int(self.fs.du(name)),
                         "complete": not name.endswith(".zarr") or name in done})
        return rows

    def clear(self, stages: Iterable[str] | None = None) -> int:
        """Remove entries (all, or those of the given stages); returns how many."""
        wanted = set(stages) if stages else None
        if self.is_remote:
            rows = [r for r in self._remote_entries() if wanted is None or r["stage"] in wanted]
            for stage in {r["stage"] for r in rows}:
                self.fs.rm(f"{self._base}/{stage}", recursive=True)
            return len(rows)
        if self.root is None or not self.root.is_dir():
            return 0
        removed = 0
        for folder in self.root.iterdir():
            if folder.is_dir() and (wanted is None or folder.name in wanted):
                removed += sum(1 for _ in folder.iterdir())
                shutil.rmtree(folder)
        return removed


def _open(store: Path | str) -> xr.Dataset:
    ds = xr.open_zarr(store, consolidated=False)
    ds = ds.assign_coords({name: coord.load() for name, coord in ds.coords.items()})  # small header values
    for name, coord in ds.coords.items():
        if coord.dtype.kind == "U":
            ds = ds.assign_coords({name: coord.astype(object)})
    return ds
