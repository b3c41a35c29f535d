"""Tags: names a user gives to images (many per image), kept in the catalog's ``tags`` table.

What a tag name may be, what a selection to tag may be, and the writes and reads behind
``ImageIndex.tag``/``untag``/``tags``/``tagged``/``tags_of`` (the catalog stores them).
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import TagError

if TYPE_CHECKING:
    from .protocols import IndexView

MAX_TAG_LENGTH = 100
"""Longest tag name, in characters (after trimming)."""

_FORBIDDEN_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")
"""Control characters, lone surrogates and line/paragraph separators: a tag is one line."""


def describe_tagging(name: str, asked: int, changed: int, *, add: bool) -> str:
    """What tagging (``add``) or untagging ``asked`` images with ``name`` did, ``changed`` of
    them for real, in the one line the CLI and both widgets show: "tagged 12 images 'keep'
    (11 had it already)", "untagged 3 images 'keep' (1 did not have it)"."""
    images = f"{asked:,} image{'' if asked == 1 else 's'}"
    label = check_tag_name(name)
    if add:
        note = f" ({asked - changed:,} had it already)" if changed < asked else ""
        return f"tagged {images} {label!r}{note}"
    note = f" ({asked - changed:,} did not have it)" if changed < asked else ""
    return f"untagged {images} {label!r}{note}"


def check_tag_name(name: Any) -> str:
    """``name`` trimmed and in Unicode NFC form; TagError unless 1-100 characters of any
    script with no control character."""
    if not isinstance(name, str):
        raise TagError(f"a tag name is a str, not {type(name).__name__}")
    trimmed = unicodedata.normalize("NFC", name.strip())
    if not trimmed:
        raise TagError("a tag name needs at least one visible character")
    if len(trimmed) > MAX_TAG_LENGTH:
        raise TagError(
            f"tag name {trimmed[:20]!r}... is {len(trimmed)} characters; at most {MAX_TAG_LENGTH}"
        )
    for char in trimmed:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise TagError(
                f"tag name {trimmed!r} holds the control character U+{ord(char):04X}; "
                "use printable characters only"
            )
    return trimmed


def check_tag_names(names: str | Iterable[str], what: str = "tags=") -> list[str]:
    """One name or several, each checked, without repeats, in the order given."""
    if isinstance(names, str):
        names = [names]
    try:
        listed = list(names)
    except TypeError:
        raise TagError(f"{what} takes a tag name or a list of them") from None
    checked = list(dict.fromkeys(check_tag_name(name) for name in listed))
    if not checked:
        raise TagError(f"{what} is empty; name at least one tag")
    return checked


def existing_tag_names(catalog: Any, names: str | Iterable[str], what: str = "tags=") -> list[str]:
    """``names`` checked, each one some searchable image has (else a TagError: likely a typo)."""
    wanted = check_tag_names(names, what)
    counts = catalog.tag_counts()
    unknown = [name for name in wanted if name not in counts]
    if unknown:
        known = ", ".join(repr(name) for name in list(counts)[:10]) or "none yet"
        raise TagError(f"no searchable image is tagged {unknown[0]!r}; tags: {known}")
    return wanted


def selected_ids(ids: Any) -> list[int]:
    """A selection (an id, ids, an array of ids, or search results) as distinct ids in order;
    TagError when it is empty or holds something that is not an id."""
    from .results import SearchResults

    if isinstance(ids, SearchResults):
        ids = ids.ids
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        ids = [ids]
    try:
        values = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids)).ravel()
    except TypeError:
        raise TagError(f"select images by id: an int or a list of ints, not {ids!r}") from None
    if values.size == 0:
        raise TagError("the selection is empty; select at least one image")
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        if values.dtype == object and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
        ):
            values = values.astype(np.int64)
        else:
            raise TagError(f"image ids are integers; got {values[:3].tolist()!r}")
    return list(dict.fromkeys(int(v) for v in values))


def _write(index: IndexView, ids: Any, name: str, add: bool) -> int:
    wanted = selected_ids(ids)
    tag = check_tag_name(name)
    catalog = index.catalog
    try:
        return catalog.add_tag(wanted, tag) if add else catalog.remove_tag(wanted, tag)
    except KeyError as exc:
        raise TagError(str(exc.args[0])) from None
    except sqlite3.OperationalError as exc:
        if "readonly" in str(exc) or "read-only" in str(exc):
            raise TagError(
                f"the index at {index.index_dir} is read-only here; tags are written to its "
                "catalog, so open a copy you can write to"
            ) from None
        raise


def tag(index: IndexView, ids: Any, name: str) -> int:
    """Give ``name`` to images ``ids`` (see ``ImageIndex.tag``); how many did not have it."""
    return _write(index, ids, name, add=True)


def untag(index: IndexView, ids: Any, name: str) -> int:
    """Take ``name`` off images ``ids``; how many had it."""
    return _write(index, ids, name, add=False)


def tag_labels(index: IndexView) -> dict[int, str]:
    """``{id: tag}`` for ``evaluate(labels="tags")``: every ok image with exactly one tag.

    An image with several tags has no single label, so it is left out; TagError when none is left.
    """
    by_id = index.catalog.tags_by_id()
    labels = {id_: names[0] for id_, names in by_id.items() if len(names) == 1}
    if not labels:
        raise TagError(
            "labels='tags' needs images with exactly one tag each; "
            + ("none is tagged yet" if not by_id else "every tagged image has several")
        )
    return labels


def ids_for_paths(index: IndexView, paths: Iterable[str]) -> list[int]:
    """Ids of the searchable images at ``paths`` (relative to the root, or absolute inside it);
    TagError naming the first path that is not one."""
    from pathlib import Path

    root = index.root
    found = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_absolute():
            try:
                path = path.resolve().relative_to(root.resolve())
            except ValueError:
                raise TagError(f"{text} is not inside the index root {root}") from None
        id_ = index.catalog.id_for_path(path.as_posix())
        if id_ is None:
            raise TagError(f"{text} is not an indexed image of {root}")
        found.append(id_)
    return found
