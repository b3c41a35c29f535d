"""Near-duplicate finder: groups of images within a small distance of each other.

Every pair of searchable images closer than ``max_distance`` under one mode is a link, found
exactly: for hashes by multi-index hashing (only rows sharing one of ``max_distance + 1`` bit
blocks are compared, XOR + popcount), for floats by blockwise matrix products; no per-pair Python. Byte-identical files are linked too: files of equal size (and only those)
are hashed with SHA-256. A group is a connected set of links (single linkage), so a chain of
small edits can join images that differ more than ``max_distance`` end to end.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import search
from .errors import UsageError
from .features import check_mode_metric

if TYPE_CHECKING:
    from .protocols import IndexView

DEFAULT_MAX_BITS_PER_64 = 4
"""Default ``max_distance`` for hashes: 4 differing bits per 64 (about 6%).

On the test set (skimage and scikit-learn photos, 64-bit dhash) rescaled and JPEG-recompressed
copies differ from their original by at most 2 bits, while different photos differ by 12 or more.
"""

_BLOCK_BYTES = 32 << 20
_READ_BYTES = 1 << 20


class DuplicateGroup(NamedTuple):
    """Images that are near-identical: ``ids`` ascending, their ``paths``, each one's
    ``distances`` to the first image under the search mode, and ``identical`` when every file
    has the same bytes."""

    ids: list[int]
    paths: list[Path]
    distances: list[float]
    identical: bool


class DuplicateGroups(list[DuplicateGroup]):
    """The groups found by ``find_duplicates``, largest first; shows thumbnails in a notebook."""

    def __init__(
        self,
        groups: Iterable[DuplicateGroup],
        *,
        mode: str,
        metric: str,
        max_distance: float,
        seconds: float,
        hashed_files: int,
        thumbnails: Callable[[list[int]], list[bytes]] | None = None,
    ) -> None:
        super().__init__(groups)
        self.mode = mode
        self.metric = metric
        self.max_distance = max_distance
        self.seconds = seconds
        self.hashed_files = hashed_files
        self._thumbnails = thumbnails

    @property
    def images(self) -> int:
        """How many images belong to some group."""
        return sum(len(group.ids) for group in self)

    def redundant(self) -> list[Path]:
        """Paths of every image but the first of each group (what could go)."""
        return [path for group in self for path in group.paths[1:]]

    def to_dicts(self) -> list[dict[str, Any]]:
        """JSON-able groups: ids, paths (strings), distances, identical."""
        return [
            {
                "ids": g.ids,
                "paths": [str(p) for p in g.paths],
                "distances": g.distances,
                "identical": g.identical,
            }
            for g in self
        ]

    def summary(self) -> str:
        return (
            f"{len(self)} groups of near-duplicates ({self.images} images) by {self.mode}/{self.metric} "
            f"<= {self.max_distance:g}, {self.hashed_files} files hashed, {self.seconds:.2f} s"
        )

    def __repr__(self) -> str:
        return f"<DuplicateGroups: {self.summary()}>"

    def _repr_html_(self, max_groups: int = 50) -> str:
        shown = self[:max_groups]
        ids = [id_ for group in shown for id_ in group.ids]
        images = iter(self._thumbnails(ids) if self._thumbnails and ids else [b""] * len(ids))
        rows = []
        for number, group in enumerate(shown, 1):
            cells = []
            for path, distance in zip(group.paths, group.distances, strict=True):
                source = base64.b64encode(next(images)).decode()
                name = html.escape(path.name)
                cells.append(
                    f'<figure style="margin:0;width:96px;text-align:center" title="{html.escape(str(path))}">'
                    f'<img src="data:image/jpeg;base64,{source}" width="96" height="96" '
                    f'style="object-fit:contain;border-radius:4px" alt="{name}">'
                    f'<figcaption style="font-size:11px;overflow:hidden;text-overflow:ellipsis;'
                    f'white-space:nowrap">{name}<br>{distance:.4g}</figcaption></figure>'
                )
            kind = "identical files" if group.identical else "near-duplicates"
            rows.append(
                f'<div style="margin:6px 0"><div style="font-size:12px">group {number}: '
                f"{len(group.ids)} {kind}</div>"
                f'<div style="display:flex;flex-wrap:wrap;gap:6px">{"".join(cells)}</div></div>'
            )
        more = (
            f'<div style="font-size:11px">… {len(self) - max_groups} more groups</div>'
            if len(self) > max_groups
            else ""
        )
        return (
            f'<div class="imrec-duplicates"><div style="font-size:12px;margin-bottom:4px">'
            f"{html.escape(self.summary())}</div>{''.join(rows)}{more}</div>"
        )


def default_max_distance(index: IndexView, mode: str, metric: str) -> float:
    """4 bits per 64 for hash modes; other modes need an explicit ``max_distance``."""
    if metric == "hamming":
        bits = int(index.settings.get("hash_size", 8)) ** 2
        return float(max(1, round(bits * DEFAULT_MAX_BITS_PER_64 / 64)))
    raise UsageError(
        f"pass max_distance for mode {mode!r} ({metric} distance), e.g. 0.05 for embedding/cosine"
    )


def find_duplicates(
    index: IndexView,
    mode: str = "dhash",
    max_distance: float | None = None,
    metric: str | None = None,
) -> DuplicateGroups:
    """Groups of searchable images within ``max_distance`` of each other, largest first.

    ``mode``/``metric`` as for ``ImageIndex.search``; ``max_distance`` defaults to 4 bits for
    64-bit hashes (see ``DEFAULT_MAX_BITS_PER_64``). Byte-identical files are grouped whatever
    their distance.
    """
    started = time.perf_counter()
    metric = check_mode_metric(mode, metric)
    if mode not in index.settings["features"]:
        raise UsageError(
            f"mode {mode!r} is not in this index; it has {', '.join(index.settings['features'])}"
        )
    if max_distance is None:
        max_distance = default_max_distance(index, mode, metric)
    if not np.isfinite(max_distance) or max_distance < 0:
        raise UsageError(f"max_distance must be a number >= 0, not {max_distance!r}")
    ids = index.searcher.ok_ids()
    if ids.size == 0:
        from .errors import EmptyIndexError

        raise EmptyIndexError(
            f"the index of {index.root} has no searchable images yet; run idx.update() first"
        )
    prepared = index.searcher.prepared(mode, metric)

    if metric == "hamming":
        first, second = hamming_links(prepared.data, float(max_distance))
    else:
        first, second = close_pairs(prepared, metric, float(max_distance))
    records = index.records(ids)
    paths = index.image_paths.paths([record.path for record in records])
    digests = _content_digests(paths, records)
    same_first, same_second = _identical_pairs(digests)
    parent = connected_components(
        ids.size, np.concatenate([first, same_first]), np.concatenate([second, same_second])
    )

    members = np.flatnonzero(np.bincount(parent, minlength=ids.size)[parent] >= 2)
    members = members[np.argsort(parent[members], kind="stable")]
    starts = np.flatnonzero(np.diff(parent[members], prepend=-1))
    groups = []
    for rows in np.split(members, starts[1:]) if members.size else []:
        head = search.prepare(
            prepared.data[rows],
            metric,
            data_norms=None if prepared.norms is None else prepared.norms[rows],
        )
        distances = search.distances(prepared.data[rows[0]], head, metric)[0]
        group_digests = {digests.get(int(row)) for row in rows}
        groups.append(
            DuplicateGroup(
                ids=[int(ids[row]) for row in rows],
                paths=[paths[row] for row in rows],
                distances=[float(d) for d in distances],
                identical=len(group_digests) == 1 and None not in group_digests,
            )
        )
    groups.sort(key=lambda group: (-len(group.ids), group.ids[0]))
    return DuplicateGroups(
        groups,
        mode=mode,
        metric=metric,
        max_distance=float(max_distance),
        seconds=time.perf_counter() - started,
        hashed_files=len(digests),
        thumbnails=index.thumbnail_bytes,
    )


def close_pairs(
    prepared: search.PreparedData, metric: str, max_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``(i, j)``, i < j, of ``prepared`` whose distance is at most ``max_distance``.

    Each block of rows is compared with itself and every later row only, so each pair is
    computed once; memory stays near ``_BLOCK_BYTES`` whatever the number of rows.
    """
    n = len(prepared)
    step = max(1, _BLOCK_BYTES // (4 * max(1, n)))
    firsts, seconds = [], []
    for start in range(0, n, step):
        stop = min(n, start + step)
        tail = search.prepare(
            prepared.data[start:],
            metric,
            data_norms=None if prepared.norms is None else prepared.norms[start:],
        )
        block = search.distances(prepared.data[start:stop], tail, metric)
        rows, columns = np.nonzero(block <= max_distance)
        later = columns > rows
        firsts.append(rows[later] + start)
        seconds.append(columns[later] + start)
    if not firsts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)


_MIH_GROUP_ROWS = 2048
"""Rows sharing one block value that are paired directly; a bigger group is compared blockwise."""


def hamming_links(packed: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs within ``max_distance`` bits of packed hashes (N x bytes, uint8), enough of
    them to give the same connected groups as every such pair, in about O(N) for random hashes.

    Identical hashes are linked to the first of them; the distinct ones are compared by
    multi-index hashing: split into ``max_distance + 1`` blocks of bits, two hashes within
    ``max_distance`` bits agree on at least one block (pigeonhole), so only rows sharing a
    block value are compared, by XOR + popcount.
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    n = packed.shape[0]
    radius = int(np.floor(max_distance))
    unique, first_of, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    rows = np.arange(n)
    representative = first_of[inverse]
    twins = representative != rows
    firsts, seconds = [representative[twins]], [rows[twins]]
    words = _as_words(unique)
    bits = np.unpackbits(unique, axis=1)
    blocks = np.array_split(np.arange(bits.shape[1]), min(radius + 1, bits.shape[1]))
    found: list[np.ndarray] = []
    weights_of = np.int64(1) << np.arange(max(b.size for b in blocks), dtype=np.int64)
    for block in blocks:
        keys = bits[:, block].astype(np.int64) @ weights_of[: block.size]
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        # Rows of a very common block value are compared blockwise; the rest pair up below.
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        sizes = np.diff(np.r_[starts, keys.size])
        big = sizes > _MIH_GROUP_ROWS
        for begin, size in zip(starts[big], sizes[big], strict=True):
            group = order[begin : begin + size]
            a, b = close_pairs(search.prepare(unique[group], "hamming"), "hamming", max_distance)
            found.append(np.stack([group[a], group[b]], axis=1))
            keys[begin : begin + size] = -1 - np.arange(size)  # out of the pairing below
        # Pairs (i, i + offset) of the sorted rows that share the block value, every offset.
        for offset in range(1, min(int(sizes.max(initial=1)), _MIH_GROUP_ROWS)):
            same = np.flatnonzero(keys[offset:] == keys[:-offset])
            if same.size == 0:
                break
            a, b = order[same], order[same + offset]
            close = np.bitwise_count(words[a] ^ words[b]).sum(axis=1) <= max_distance
            found.append(np.stack([a[close], b[close]], axis=1))
    if found:
        pairs = np.unique(np.concatenate(found), axis=0)
        firsts.append(first_of[pairs[:, 0]])
        seconds.append(first_of[pairs[:, 1]])
    return np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)


def _as_words(packed: np.ndarray) -> np.ndarray:
    """Packed bit rows as uint64 words (zero-padded to whole words), for XOR + popcount."""
    width = packed.shape[1]
    padded = np.zeros((packed.shape[0], -(-width // 8) * 8), dtype=np.uint8)
    padded[:, :width] = packed
    return padded.view(np.uint64)


def connected_components(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """For each of ``n`` nodes, the smallest node linked to it through the edges ``first[i]-second[i]``.

    Vectorised union-find: hook each edge's roots to the smaller one, then jump pointers until
    every edge joins one root.
    """
    parent = np.arange(n, dtype=np.int64)
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    while first.size:
        a, b = parent[first], parent[second]
        if np.array_equal(a, b):
            break
        low = np.minimum(a, b)
        np.minimum.at(parent, a, low)
        np.minimum.at(parent, b, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def _content_digests(paths: list[Path], records: list[Any]) -> dict[int, str]:
    """SHA-256 of the files (``paths``, checked) that share their size with another file, by
    row; others are not read."""
    sizes = np.array([record.size for record in records], dtype=np.int64)
    if sizes.size == 0:
        return {}
    _values, inverse, counts = np.unique(sizes, return_inverse=True, return_counts=True)
    digests = {}
    for row in np.flatnonzero(counts[inverse] >= 2):
        try:
            digests[int(row)] = _sha256(paths[row])
        except OSError:
            continue
    return digests


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _identical_pairs(digests: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Edges chaining the rows of each set of equal digests."""
    by_digest: dict[str, list[int]] = {}
    for row, digest in digests.items():
        by_digest.setdefault(digest, []).append(row)
    first, second = [], []
    for rows in by_digest.values():
        first.extend(rows[:-1])
        second.extend(rows[1:])
    return np.array(first, dtype=np.int64), np.array(second, dtype=np.int64)
