"""Zarr v3 feature store: one row-chunked 2-D (or N-D) array per feature; row = catalog id."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexFileError

TARGET_CHUNK_BYTES = 8 * 1024 * 1024
GROWTH_ROWS = 4096


def chunk_rows(row_shape: Sequence[int], dtype: np.dtype) -> int:
    """Rows per chunk so that one chunk holds about ``TARGET_CHUNK_BYTES`` (256 to 16384 rows)."""
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = TARGET_CHUNK_BYTES // max(1, row_bytes)
    return int(min(16384, max(256, 1 << int(np.log2(max(1, rows))))))


class FeatureStore:
    """The ``features.zarr`` group of an index.

    Arrays grow in steps of whole chunks ahead of the rows written, so the metadata changes
    rarely; rows past the catalog's last committed id are scratch space.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        import zarr

        self.path = path
        self.read_only = read_only
        self._arrays: dict[str, Any] = {}
        self._group: Any  # a zarr Group (Any: zarr types a member as Array | Group), None if absent
        root = _local_root(path)
        self._links_checked = read_only or root is None
        # A store folder that is a link is read where it leads, never written (see _writable).
        linked = not read_only and root is not None and root.is_symlink()
        if read_only and not _exists(path):
            self._group = None
        else:
            # fsspec's local file system makes no parent folders unless asked to.
            options = {"auto_mkdir": True} if str(path).startswith("file://") else None
            self._group = zarr.open_group(
                store=str(path), mode="r" if read_only or linked else "a", storage_options=options
            )

    def _writable(self) -> None:
        """Refuse (``IndexFileError``) to write a local store that holds a symbolic link: the
        store folder or any folder or file in it. Zarr writes a chunk through a linked folder,
        wherever the link leads; checked once, before this store's first write."""
        if self._links_checked:
            return
        root = _local_root(self.path)
        assert root is not None
        link = _first_link(root)
        if link is not None:
            raise IndexFileError(
                f"{link} is a symbolic link, not a folder of this index: the feature store is "
                "not written through it; replace it with a plain copy to update the index"
            )
        self._links_checked = True

    def __contains__(self, name: str) -> bool:
        return self._group is not None and name in self._group

    def names(self) -> list[str]:
        if self._group is None:
            return []
        found: list[str] = []

        def walk(group: Any, prefix: str) -> None:
            for key, member in group.members():
                if hasattr(member, "shape"):
                    found.append(prefix + key)
                else:
                    walk(member, prefix + key + "/")

        walk(self._group, "")
        return sorted(found)

    def array(self, name: str) -> Any:
        """The Zarr array of feature ``name`` (opened once; see ``refresh``)."""
        if name not in self._arrays:
            if self._group is None or name not in self._group:
                raise KeyError(f"feature {name!r} is not in the store")
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def refresh(self) -> None:
        """Forget opened arrays, so shapes grown by another process's writer are seen."""
        self._arrays.clear()

    def ensure(
        self,
        name: str,
        row_shape: Sequence[int],
        dtype: np.dtype | str,
        fill_value: Any = 0,
        *,
        rows: int | None = None,
    ) -> Any:
        """The array ``name``, created (empty) with these row shape and dtype if missing.

        Rows never written read as ``fill_value``. ``rows``: rows per chunk (default: about
        ``TARGET_CHUNK_BYTES`` of them).
        """
        self._writable()
        dtype = np.dtype(dtype)
        if name in self:
            array = self._group[name]
            if tuple(array.shape[1:]) != tuple(row_shape) or np.dtype(array.dtype) != dtype:
                raise ValueError(
                    f"stored feature {name!r} has rows {tuple(array.shape[1:])} {array.dtype}, "
                    f"not {tuple(row_shape)} {dtype}"
                )
            return array
        rows = rows or chunk_rows(row_shape, dtype)
        return self._group.create_array(
            name,
            shape=(0, *row_shape),
            chunks=(rows, *row_shape),
            dtype=dtype,
            fill_value=fill_value,
        )

    def delete(self, name: str) -> None:
        self._writable()
        self._arrays.pop(name, None)
        if name in self:
            del self._group[name]

    def write_rows(self, name: str, ids: np.ndarray, values: np.ndarray) -> None:
        """Write ``values[i]`` to row ``ids[i]``, growing the array when needed."""
        self._writable()
        array = self.array(name)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return
        needed = int(ids.max()) + 1
        if needed > array.shape[0]:
            step = max(GROWTH_ROWS, array.chunks[0])
            array.resize((-(-needed // step) * step, *array.shape[1:]))
        values = np.asarray(values, dtype=array.dtype)
        if np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
            array[int(ids[0]) : int(ids[-1]) + 1] = values
        else:
            order = np.argsort(ids)
            array.oindex[ids[order]] = values[order]

    def read_rows(self, name: str, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows ``ids`` of feature ``name``, in the order given."""
        array = self.array(name)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return np.empty((0, *array.shape[1:]), dtype=array.dtype)
        if ids.max() >= array.shape[0]:
            self.refresh()
            array = self.array(name)
        if ids.min() < 0 or ids.max() >= array.shape[0]:
            raise KeyError(f"row ids outside feature {name!r} (0..{array.shape[0] - 1})")
        lo, hi = int(ids.min()), int(ids.max()) + 1
        if hi - lo <= 4 * ids.size:
            return np.asarray(np.asarray(array[lo:hi])[ids - lo])
        unique, inverse = np.unique(ids, return_inverse=True)
        return np.asarray(array.oindex[unique])[inverse]

    def read_range(self, name: str, stop: int) -> np.ndarray:
        """Rows ``0 .. stop-1`` of feature ``name`` as one in-memory array."""
        array = self.array(name)
        if stop > array.shape[0]:
            self.refresh()
            array = self.array(name)
        return np.asarray(array[: min(stop, array.shape[0])])

    def iter_chunks(self, name: str, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, block)`` for each stored chunk of rows below ``stop``."""
        array = self.array(name)
        if stop > array.shape[0]:
            self.refresh()
            array = self.array(name)
        rows = array.chunks[0]
        stop = min(stop, array.shape[0])
        for start in range(0, stop, rows):
            yield start, np.asarray(array[start : min(start + rows, stop)])

    def put_small(self, name: str, values: np.ndarray, attributes: dict[str, Any]) -> None:
        """Store a small array (one chunk) with ``attributes``, replacing any older one."""
        self._writable()
        values = np.asarray(values)
        array = self._group.create_array(
            name, shape=values.shape, chunks=values.shape, dtype=values.dtype, overwrite=True
        )
        array[...] = values
        array.attrs.update(attributes)
        self._arrays.pop(name, None)

    def get_small(self, name: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """A small array and its attributes as ``put_small`` stored them; None if missing."""
        if name not in self:
            return None
        array = self._group[name]
        return np.asarray(array[...]), dict(array.attrs)

    def nbytes_stored(self) -> int:
        """Bytes the store takes on disk (local stores only; 0 otherwise)."""
        root = Path(str(self.path).removeprefix("file://"))
        if not root.is_dir():
            return 0
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _exists(path: str | Path) -> bool:
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return True
    return Path(text.removeprefix("file://")).exists()


def _local_root(path: str | Path) -> Path | None:
    """The folder of a store on this machine's file system; None for a remote one."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return None
    return Path(text.removeprefix("file://"))


def _first_link(root: Path) -> Path | None:
    """``root`` or the first symbolic link found below it (links are not followed)."""
    if root.is_symlink():
        return root
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        return Path(entry.path)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
        except OSError:  # gone or unreadable: nothing can be written there either
            continue
    return None
