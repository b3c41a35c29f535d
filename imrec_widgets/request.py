"""One search request: which images it may return (``Scope``) and how it ranks them
(``SearchOptions``).

``ImageIndex.search``/``search_many`` build both from their keyword arguments; the ``Searcher``
receives the options and the ids the scope allows, and never sees a filter. A new filter is a
field of ``Scope`` and its narrowing in ``Scope.resolve`` (plus a flag of ``imrec search``);
``search(scope=Scope(...))`` reaches it at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .catalog import stored_path
from .errors import UsageError
from .features import HYBRID_MODE
from .tags import check_tag_names, existing_tag_names

if TYPE_CHECKING:
    from .protocols import IndexView


@dataclass(frozen=True)
class Scope:
    """Which images a search may return; every filter given must hold (they intersect).

    ``ids``: those images. ``where``: an SQL condition on the catalog's ``images`` table (see
    ``Catalog.ids_where``). ``folder``: below that folder (relative to the root, or absolute
    inside it). ``path_glob``: relative ``/``-separated paths matching a case-sensitive glob
    (``*`` also crosses ``/``). ``tags``: with any of these tags (a name or a list; a name no
    searchable image has is a ``TagError``). ``exclude_tags``: with none of them.
    """

    ids: Sequence[int] | np.ndarray | None = None
    where: str | None = None
    folder: str | os.PathLike[str] | None = None
    path_glob: str | None = None
    tags: str | Sequence[str] | None = None
    exclude_tags: str | Sequence[str] | None = None

    @classmethod
    def of(
        cls,
        scope: Scope | None,
        ids: Sequence[int] | np.ndarray | None = None,
        where: str | None = None,
        folder: str | os.PathLike[str] | None = None,
        path_glob: str | None = None,
        tags: str | Sequence[str] | None = None,
        exclude_tags: str | Sequence[str] | None = None,
    ) -> Scope:
        """``scope``, or one made of the filters given as keywords (not both)."""
        keywords = cls(ids, where, folder, path_glob, tags, exclude_tags)
        if scope is None:
            return keywords
        if not isinstance(scope, Scope):
            raise TypeError(f"scope= takes a Scope, not {type(scope).__name__}")
        if not keywords.everything:
            raise UsageError(
                "give the filters either as scope=Scope(...) or as keywords (ids=, where=, "
                "folder=, ...), not both"
            )
        return scope

    @property
    def everything(self) -> bool:
        """True when no filter is given: every searchable image is in scope."""
        return all(getattr(self, field.name) is None for field in fields(self))

    def resolve(self, index: IndexView) -> np.ndarray | None:
        """The searchable ids in scope, ascending (maybe none); None when nothing is filtered."""
        if self.everything:
            return None
        allowed = np.asarray(index.searcher.ok_ids(), dtype=np.int64)
        if self.ids is not None:
            wanted = self.ids if isinstance(self.ids, np.ndarray) else list(self.ids)
            allowed = np.intersect1d(allowed, np.asarray(wanted, dtype=np.int64))
        if self.folder is not None or self.path_glob is not None:
            allowed = np.intersect1d(allowed, self._path_ids(index))
        if self.where is not None:
            allowed = np.intersect1d(allowed, np.asarray(index.catalog.ids_where(self.where)))
        if self.tags is not None:
            wanted_tags = existing_tag_names(index.catalog, self.tags, "tags=")
            allowed = np.intersect1d(allowed, np.asarray(index.catalog.tagged_ids(wanted_tags)))
        if self.exclude_tags is not None:
            dropped = index.catalog.tagged_ids(check_tag_names(self.exclude_tags, "exclude_tags="))
            allowed = np.setdiff1d(allowed, np.asarray(dropped, dtype=np.int64))
        return allowed.astype(np.int64, copy=False)

    def _path_ids(self, index: IndexView) -> np.ndarray:
        """Ids of ok images under ``folder`` and matching ``path_glob``."""
        conditions, params = [], []
        if self.folder is not None:
            prefix = _folder_prefix(self.folder, index.root)
            if prefix not in ("", "."):
                # an exact, case-sensitive prefix, compared as bytes: paths that are not UTF-8
                # are stored as their bytes (see ``catalog.stored_path``)
                head = os.fsencode(prefix + "/")
                conditions.append("substr(CAST(path AS BLOB), 1, ?) = ?")
                params += [len(head), head]
        if self.path_glob is not None:
            if not isinstance(self.path_glob, str):
                raise TypeError(
                    "path_glob= must be a str like 'cats/*.jpg', not "
                    f"{type(self.path_glob).__name__}"
                )
            conditions.append("CAST(path AS TEXT) GLOB ?")
            params.append(stored_path(self.path_glob))
        if not conditions:
            return np.asarray(index.searcher.ok_ids(), dtype=np.int64)
        return np.asarray(index.catalog.ids_where(" AND ".join(conditions), params), np.int64)


def _folder_prefix(folder: str | os.PathLike[str], root: Path) -> str:
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder= must be a path, not {type(folder).__name__}")
    path = Path(folder).expanduser()
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError:
            raise UsageError(
                f"folder {str(folder)!r} is not inside the index root {root}"
            ) from None
    return path.as_posix().strip("/")


@dataclass(frozen=True)
class SearchOptions:
    """How a search ranks: see ``ImageIndex.search`` for each option.

    Options that cannot go together (``negatives``, ``client``, ``exact=False`` or a ``metric``
    with ``mode="hybrid"``; ``weights`` without it) are a ``UsageError`` when the options are made.
    """

    mode: str = "embedding"
    metric: str | None = None
    k: int = 10
    negatives: Sequence[int] | np.ndarray | None = None
    exclude_self: bool = True
    weights: Mapping[str, Any] | None = None
    client: Any = None
    exact: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 1:
            raise UsageError(f"k must be a positive integer, not {self.k!r}")
        if self.exact not in (None, True, False):
            raise UsageError(f"exact= takes True, False or None, not {self.exact!r}")
        if not self.hybrid:
            if self.weights is not None:
                raise UsageError(f"weights= is for mode='hybrid', not mode={self.mode!r}")
            if self.exact is False and self.client is not None:
                raise UsageError("exact=False searches the local ANN index; leave out client=")
            return
        if self.negatives is not None:
            raise UsageError("negatives= refines a single-mode search, not mode='hybrid'")
        if self.client is not None:
            raise UsageError("client= runs single-mode searches on Dask workers, not mode='hybrid'")
        if self.exact is False:
            raise UsageError("exact=False (ANN) is for single-mode searches, not mode='hybrid'")
        if self.metric is not None:
            raise UsageError(
                "hybrid search takes each mode's metric from weights, e.g. "
                "weights={'embedding': (0.7, 'cosine'), 'rgb': 0.3}; leave metric=None"
            )

    @property
    def hybrid(self) -> bool:
        """True for ``mode="hybrid"`` (several modes' distances, weighted)."""
        return self.mode == HYBRID_MODE

    def modes(self, features: Sequence[str]) -> list[str]:
        """The stored features this search reads (``features``: the index's, for hybrid)."""
        if not self.hybrid:
            return [self.mode]
        return list(self.weights or features)
