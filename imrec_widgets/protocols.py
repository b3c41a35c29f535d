"""What the services below ``ImageIndex`` need of it, as protocols, so imports point down only.

``searcher``, ``projection``, ``duplicates``, ``evaluation`` and the TensorBoard export take an
``IndexView``; ``ImageIndex`` is one (checked by mypy wherever it is passed), and a test may pass
anything else with these members.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .catalog import Catalog, ImagePaths, Record
from .results import SearchResults
from .search import PreparedData
from .store import FeatureStore


class QueryVectors(Protocol):
    """The query side of an index, as the map and the duplicate finder use it."""

    def ok_ids(self) -> np.ndarray: ...

    def prepared(self, mode: str, metric: str) -> PreparedData: ...

    def vectors(self, query: Any, mode: str) -> tuple[np.ndarray, list[int]]: ...


class IndexView(Protocol):
    """One index: where it is, its settings, catalog and store, and its read-side methods."""

    root: Path
    index_dir: Path
    settings: dict[str, Any]

    @property
    def catalog(self) -> Catalog: ...

    @property
    def store(self) -> FeatureStore: ...

    @property
    def image_paths(self) -> ImagePaths: ...

    @property
    def searcher(self) -> QueryVectors: ...

    @property
    def read_only(self) -> bool: ...

    def __len__(self) -> int: ...

    def exists(self) -> bool: ...

    def close(self) -> None: ...

    def feature_extractors(self) -> dict[str, Any]: ...

    def ids(self) -> np.ndarray: ...

    def records(self, ids: Sequence[int] | np.ndarray | None = None) -> list[Record]: ...

    def paths(self, ids: Sequence[int] | np.ndarray) -> list[Path]: ...

    def features(self, name: str, ids: Sequence[int] | np.ndarray | None = None) -> np.ndarray: ...

    def thumbnail_bytes(
        self, ids: Sequence[int] | np.ndarray, format: str = "JPEG"
    ) -> list[bytes]: ...

    @property
    def search_many(self) -> Callable[..., list[SearchResults]]:
        """``ImageIndex.search_many``: its signature is kept there only."""
        ...
