"""Compact search copies of float features (``vector_dtype``) and their approximate scan.

A float32 feature can be searched through a smaller copy held in memory: ``float16`` (half the
bytes) or ``int8`` (a quarter; per-dimension scalar quantization ``x ~ offset + scale * code``
with ``code`` in -127..127, trained on the index's own rows). The compact copy only picks
candidates: the searcher re-ranks the best ``rerank * k`` of them exactly against the float32
rows read from the store, so answers are exact whenever the true top-k is among the candidates.

A quantizer is stored with the index as one plain ``(2, D)`` float32 Zarr array
(``quantizer/<feature>``: offsets, scales) whose attributes record the feature configuration,
catalog generation and row count it was trained on and a checksum; one that does not match
(other backbone, other size, half written) is never used. Since a checksum can be recomputed
by whoever edits the file, what makes answers right is checked against the data itself: each
compact build measures the exact per-dimension range of every row it encodes, and a quantizer
that clips more than ``MAX_CLIPPED`` of the values (trained before the data moved) or steps
more than ``MAX_COARSENESS`` times coarser than the data needs in some dimension is replaced
by one fitted to that range (one ``QuantizerMismatchWarning``), so it never silently drops
true hits.

The float32 re-rank copy (``search/<feature>.<generation>.f32``) is compared with the rows read
from the store each time the compact copy is built (the build reads them all anyway): a copy
that differs is written again, with one ``DerivedFileWarning``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import derived
from .errors import DerivedFileWarning, QuantizerMismatchWarning, UsageError

VECTOR_DTYPES = ("float32", "float16", "int8")
DEFAULT_RERANK = 8
"""Candidates re-ranked exactly per result: ``rerank * k`` rows are read as float32."""
TRAIN_ROWS = 65_536
_INT8_MAX = 127.0
MAX_CLIPPED = 1e-3
"""Largest fraction of encoded values outside a quantizer's range before it is refitted."""
MAX_COARSENESS = 4.0
"""Largest ratio of a quantizer's step to the step the data's own range needs (per dimension)."""


def check_vector_dtype(value: Any) -> str:
    """``value`` if it names a vector dtype, else a ``ValueError`` naming the allowed ones."""
    if value not in VECTOR_DTYPES:
        raise UsageError(f"unknown vector_dtype {value!r}; choose from {', '.join(VECTOR_DTYPES)}")
    return str(value)


@dataclass(frozen=True)
class Quantizer:
    """Per-dimension int8 scalar quantization: ``x ~ offset + scale * code``."""

    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def train(cls, sample: np.ndarray) -> Quantizer:
        """Fit offsets and scales to the per-dimension range of ``sample`` (rows x D)."""
        sample = np.asarray(sample, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[0] == 0:
            raise ValueError("a quantizer needs at least one row of training data")
        low, high = sample.min(axis=0), sample.max(axis=0)
        offset = ((low + high) / 2).astype(np.float32)
        scale = ((high - low) / (2 * _INT8_MAX)).astype(np.float32)
        scale[~(scale > 0)] = 1.0  # constant dimensions: any scale reproduces them
        return cls(offset, scale)

    @classmethod
    def from_range(cls, low: np.ndarray, high: np.ndarray) -> Quantizer:
        """The quantizer of data whose per-dimension range is ``low``..``high``."""
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        offset = ((low + high) / 2).astype(np.float32)
        scale = ((high - low) / (2 * _INT8_MAX)).astype(np.float32)
        scale[~(scale > 0)] = 1.0
        return cls(offset, scale)

    def clipped(self, rows: np.ndarray) -> int:
        """How many values of ``rows`` fall outside the range this quantizer encodes."""
        reach = (_INT8_MAX + 0.5) * self.scale
        return int(np.count_nonzero(np.abs(np.asarray(rows, np.float32) - self.offset) > reach))

    def misfit(self, low: np.ndarray, high: np.ndarray, clipped: int, values: int) -> str | None:
        """Why this quantizer does not fit data of range ``low``..``high`` of which ``clipped``
        of ``values`` fell outside it; None when it fits."""
        if values and clipped > MAX_CLIPPED * values:
            return (
                f"{clipped / values:.1%} of the values fall outside the range it was trained on "
                "(the data changed since)"
            )
        needed = (np.asarray(high, np.float32) - np.asarray(low, np.float32)) / (2 * _INT8_MAX)
        spread = needed > 0
        if np.any(self.scale[spread] > MAX_COARSENESS * needed[spread]):
            return "its steps are far coarser than the data needs (the data changed since)"
        return None

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """int8 codes of float rows (values outside the trained range are clipped)."""
        codes = (np.asarray(rows, dtype=np.float32) - self.offset) / self.scale
        np.rint(codes, out=codes)
        np.clip(codes, -_INT8_MAX, _INT8_MAX, out=codes)
        return np.asarray(codes.astype(np.int8))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(self.offset + self.scale * codes.astype(np.float32))

    # -- storage --------------------------------------------------------------------------------
    def save(
        self,
        store: Any,
        feature: str,
        config: dict[str, Any],
        *,
        generation: int | None = None,
        rows: int | None = None,
    ) -> None:
        """Store it with the feature ``config``, catalog ``generation`` and ``rows`` it was
        trained on."""
        values = np.stack([self.offset, self.scale]).astype(np.float32)
        store.put_small(
            f"quantizer/{feature}",
            values,
            {
                "feature_config": config,
                "dim": int(values.shape[1]),
                "checksum": _checksum(values),
                "generation": generation,
                "rows": rows,
            },
        )

    @staticmethod
    def trained_at(store: Any, feature: str) -> int | None:
        """The catalog generation the stored quantizer of ``feature`` was trained at (None:
        unknown, or none stored)."""
        found = store.get_small(f"quantizer/{feature}")
        generation = None if found is None else found[1].get("generation")
        return generation if isinstance(generation, int) else None

    @classmethod
    def load(
        cls, store: Any, feature: str, config: dict[str, Any], dim: int, *, warn: bool = True
    ) -> Quantizer | None:
        """The stored quantizer of ``feature`` if it was trained on ``config`` and ``dim``.

        None when there is none; a ``QuantizerMismatchWarning`` and None when the stored one
        was trained on other settings or is damaged (the caller trains a fresh one).
        """
        found = store.get_small(f"quantizer/{feature}")
        if found is None:
            return None
        values, attrs = found
        problem = None
        if attrs.get("dim") != dim or values.shape != (2, dim):
            problem = f"it has {attrs.get('dim')} dimensions, the feature {dim}"
        elif attrs.get("feature_config") != config:
            problem = f"it was trained on {attrs.get('feature_config')}, the feature is {config}"
        elif (
            attrs.get("checksum") != _checksum(values)
            or not np.all(np.isfinite(values))
            or np.any(values[1] <= 0)
        ):
            problem = "it is damaged (half written?)"
        if problem and warn:
            warnings.warn(
                f"the stored int8 quantizer of {feature!r} is not used: {problem}; a fresh one is "
                "trained in memory (run update() to store it)",
                QuantizerMismatchWarning,
                stacklevel=4,
            )
        if problem:
            return None
        return cls(values[0].copy(), values[1].copy())


def _checksum(values: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float32).tobytes()).hexdigest()[:16]


def train_quantizers(
    catalog: Any, store: Any, features: dict[str, Any], *, only_missing: bool
) -> None:
    """Fit and store the int8 quantizer of each float feature on the searchable rows, at
    ``update()`` under the write lock; with ``only_missing`` (nothing changed) only where none
    is stored for this catalog generation."""
    ids = np.asarray(catalog.ids("ok"), dtype=np.int64)
    if ids.size == 0:
        return
    generation = catalog.generation()
    for name, feature in features.items():
        if np.dtype(feature.dtype) != np.float32:
            continue
        config = json.loads(json.dumps(feature.config()))
        dim = int(np.prod(feature.shape))
        if (
            only_missing
            and Quantizer.load(store, name, config, dim, warn=False) is not None
            and Quantizer.trained_at(store, name) == generation
        ):
            continue
        Quantizer.train(training_sample(store, name, ids)).save(
            store, name, config, generation=generation, rows=int(ids.size)
        )


def training_sample(
    store: Any, feature: str, ids: np.ndarray, rows: int = TRAIN_ROWS
) -> np.ndarray:
    """Up to ``rows`` float rows of ``ids`` read from evenly spread chunks of the store."""
    array = store.array(feature)
    chunk = array.chunks[0]
    chunk_of = ids // chunk
    chunks = np.unique(chunk_of)
    wanted = max(1, -(-rows // chunk))
    picked = chunks[np.linspace(0, chunks.size - 1, min(wanted, chunks.size)).astype(int)]
    parts = []
    for c in picked:
        members = ids[chunk_of == c]
        parts.append(store.read_rows(feature, members))
    return np.concatenate(parts)[:rows] if len(parts) > 1 else parts[0][:rows]


class RowsFile:
    """An uncompressed, row-addressable float32 copy of a feature's searchable rows.

    Re-ranking needs a few scattered float32 rows per query; Zarr reads (and decompresses)
    whole chunks of rows for each, about 3 ms a row here, so the rows come from this copy,
    written from the store while the compact copy is built and memory-mapped (only the rows
    read are touched). ``<index>/search/<feature>.<generation>.f32``: written to a temporary
    name and renamed, so a half-written file is never used; a stale generation is deleted;
    where the index folder is read-only (or ``search`` is not a folder of it) the rows are
    read from Zarr instead.
    """

    _PATTERN = derived.file_name_pattern("f32")

    def __init__(self, folder: Path, feature: str, generation: int, rows: int, dim: int) -> None:
        self.folder = folder
        self.name = feature.replace("/", "_")
        self.path = folder / f"{self.name}.{int(generation)}.f32"
        self.shape = (rows, dim)
        self._temporary: Path | None = None

    def _inner(self, create: bool) -> Path | None:
        """The folder, if it is a real folder of the index (never a link out of it)."""
        return derived.inner_folder(self.folder.parent, self.folder.name, create=create)

    def open(self) -> np.ndarray | None:
        """The rows, memory-mapped, if a complete file of this generation exists."""
        expected = self.shape[0] * self.shape[1] * 4
        if self._inner(create=False) is None or expected == 0:
            return None
        path = derived.checked_name(self.folder, self.path.name, self._PATTERN)
        if path is None or path.is_symlink() or not path.is_file():
            return None
        if path.stat().st_size != expected:
            return None
        return np.memmap(path, dtype=np.float32, mode="r", shape=self.shape)

    def writer(self) -> Any:
        """An open temporary file to append rows to, or None where the folder is read-only."""
        if self._inner(create=True) is None:
            return None
        try:
            handle, self._temporary = derived.create_temporary(self.path)
        except OSError:
            return None
        return handle

    def abandon(self, handle: Any) -> None:
        """Close and delete the temporary file of ``handle`` (an incomplete copy)."""
        handle.close()
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)

    def commit(self, handle: Any) -> np.ndarray | None:
        if self._temporary is None:
            return None
        try:
            derived.commit_temporary(handle, self._temporary, self.path)
        except OSError:
            return None
        for old in self.folder.glob(f"{self.name}.*.f32"):
            if old != self.path:
                old.unlink(missing_ok=True)
        return self.open()


@dataclass
class CompactData:
    """The compact copy of one feature over the searchable rows, with exact float32 norms.

    ``rows``: the float32 rows (memory-mapped ``RowsFile``) for re-ranking, or None.
    """

    ids: np.ndarray
    codes: np.ndarray
    norms_sq: np.ndarray
    quantizer: Quantizer | None
    rows: np.ndarray | None = None
    refit: tuple[Quantizer, str] | None = None
    """When the quantizer asked for does not fit the rows: one fitted to their exact range,
    and why (``build_fitted``: the one ``quantizer`` then is)."""

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.norms_sq.nbytes + self.ids.nbytes)


def build(
    chunks: Any,
    count: int,
    dim: int,
    vector_dtype: str,
    quantizer: Quantizer | None,
    rows_file: RowsFile | None = None,
) -> CompactData:
    """The compact copy of ``count`` rows that arrive as ``(ids, float32 block)`` chunks.

    With ``rows_file`` the float32 rows are also written there, or reused from there when an
    existing copy holds exactly these rows (it is compared with them; one that differs is
    written again, with one ``DerivedFileWarning``). With a ``quantizer`` that does not fit
    the rows, ``refit`` holds one that does (the caller builds again with it).
    """
    existing = rows_file.open() if rows_file is not None else None
    handle = rows_file.writer() if rows_file is not None and existing is None else None
    codes = np.empty((count, dim), dtype=np.int8 if vector_dtype == "int8" else np.float16)
    norms_sq = np.empty(count, dtype=np.float32)
    ids = np.empty(count, dtype=np.int64)
    low = np.full(dim, np.inf, dtype=np.float32)
    high = np.full(dim, -np.inf, dtype=np.float32)
    clipped = 0
    at = 0
    for block_ids, block in chunks:
        block = np.ascontiguousarray(block, dtype=np.float32)
        n = block.shape[0]
        ids[at : at + n] = block_ids
        norms_sq[at : at + n] = np.einsum("ij,ij->i", block, block)
        codes[at : at + n] = quantizer.encode(block) if quantizer is not None else block
        if quantizer is not None and n:
            np.minimum(low, block.min(axis=0), out=low)
            np.maximum(high, block.max(axis=0), out=high)
            clipped += quantizer.clipped(block)
        if existing is not None and not np.array_equal(
            np.asarray(existing[at : at + n]).view(np.uint32), block.view(np.uint32)
        ):
            assert rows_file is not None
            warnings.warn(
                f"the float32 re-rank copy {rows_file.path.name} differs from the stored feature "
                "(changed since written); it is written again",
                DerivedFileWarning,
                stacklevel=4,
            )
            handle = rows_file.writer()
            if handle is not None:
                handle.write(np.ascontiguousarray(existing[:at]).tobytes())
            existing = None
        if handle is not None:
            handle.write(block.tobytes())
        at += n
    rows = existing
    if handle is not None and rows_file is not None:
        if at == count:
            rows = rows_file.commit(handle)
        else:
            rows_file.abandon(handle)
    refit = None
    if quantizer is not None and at:
        why = quantizer.misfit(low, high, clipped, at * dim)
        if why is not None:
            refit = (Quantizer.from_range(low, high), why)
    return CompactData(ids[:at], codes[:at], norms_sq[:at], quantizer, rows, refit)


def build_fitted(
    chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    count: int,
    dim: int,
    vector_dtype: str,
    quantizer: Quantizer | None,
    rows_file: RowsFile | None = None,
) -> CompactData:
    """``build`` over ``chunks()``; when ``quantizer`` does not fit the rows, built again (from
    ``chunks()`` once more) with one fitted to their exact range, and ``refit`` holds that one
    and why. The one check of a quantizer against the data, for every compact build (here and
    on Dask workers): the caller says so in one ``QuantizerMismatchWarning`` line."""
    data = build(chunks(), count, dim, vector_dtype, quantizer, rows_file)
    if data.refit is None:
        return data
    fitted, why = data.refit
    again = build(chunks(), count, dim, vector_dtype, fitted, rows_file)
    again.refit = (fitted, why)
    return again


def refit_message(feature: str, why: str) -> str:
    """The one line saying a stored quantizer was not used."""
    return (
        f"the int8 quantizer of {feature!r} is not used: {why}; one fitted to the data is "
        "used (run update() to store it)"
    )


def approximate_scores(
    queries: np.ndarray, data: CompactData, metric: str, rows: Any = None
) -> np.ndarray:
    """Approximate distances (or a monotone stand-in) of each query to the compact rows.

    Cosine returns ``-q.x / |x|`` and euclidean ``|x|^2 - 2 q.x`` (smaller is closer, like the
    distances they order); manhattan returns the L1 distance to the decoded rows.
    """
    codes = data.codes if rows is None else data.codes[rows]
    norms_sq = data.norms_sq if rows is None else data.norms_sq[rows]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if metric == "manhattan":
        return _l1(queries, codes, data.quantizer)
    dots = _dots(queries, codes, data.quantizer)
    if metric == "cosine":
        return np.asarray(-dots / np.sqrt(np.maximum(norms_sq, 1e-30)))
    return np.asarray(norms_sq - 2 * dots)


def _dots(queries: np.ndarray, codes: np.ndarray, quantizer: Quantizer | None) -> np.ndarray:
    if quantizer is None:
        import torch

        # One matrix-vector product per query: torch's half-precision mv is vectorised on CPU,
        # its half matmul (several queries at once) is ~4x slower.
        table = torch.from_numpy(np.ascontiguousarray(codes))
        with torch.no_grad():
            return np.stack(
                [
                    torch.mv(table, torch.from_numpy(q.astype(np.float16))).float().numpy()
                    for q in queries
                ]
            )
    out = np.empty((queries.shape[0], codes.shape[0]), dtype=np.float32)
    _kernels().dots(codes, np.ascontiguousarray(queries * quantizer.scale), out)
    return np.asarray(out + (queries @ quantizer.offset)[:, None])


def _l1(queries: np.ndarray, codes: np.ndarray, quantizer: Quantizer | None) -> np.ndarray:
    out = np.empty((queries.shape[0], codes.shape[0]), dtype=np.float32)
    if quantizer is None:
        step = 4096
        for start in range(0, codes.shape[0], step):
            block = codes[start : start + step].astype(np.float32)
            for i, q in enumerate(queries):
                out[i, start : start + step] = np.abs(block - q).sum(axis=1)
        return out
    _kernels().l1(codes, queries, quantizer.offset, quantizer.scale, out)
    return out


def _kernels() -> Any:
    """The int8 scan kernels, compiled by numba on first use (and cached on disk)."""
    from .numba_cache import use_numba_cache

    use_numba_cache()
    from . import _compact_kernels

    return _compact_kernels
