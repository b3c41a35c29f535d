"""Publishing a computed map in two catalog commits, so that a reader (or a run killed at any
step) sees the old map or the new one, whole, never a mixture."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imrec_widgets.derived import durable_replace

from .mapstore import (
    coords_name,
    labels_name,
    meta_key,
    placement_path,
    read_placement,
    staged_placement_path,
)

if TYPE_CHECKING:
    from imrec_widgets.protocols import IndexView


def publish_step(step: str) -> None:
    """Called before each step of publishing a map (a hook for tests that simulate a kill)."""


def finish_publish(index: IndexView, feature: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Complete a publish that was killed after the switch: copy the staged map over the main one."""
    store = index.store
    for main, staged in (
        (coords_name(feature), coords_name(feature, meta)),
        (labels_name(feature), labels_name(feature, meta)),
    ):
        values = store.read_range(staged, store.array(staged).shape[0])
        store.write_rows(main, np.arange(len(values)), values)
    staged_placement = staged_placement_path(index, feature)
    if read_placement(staged_placement, meta) is not None:
        durable_replace(staged_placement, placement_path(index, feature))
    meta = {key: value for key, value in meta.items() if key != "staged"}
    index.catalog.set_meta(meta_key(feature), meta)
    for name in (coords_name(feature, {"staged": True}), labels_name(feature, {"staged": True})):
        store.delete(name)
    return meta


def publish(
    index: IndexView,
    feature: str,
    ids: np.ndarray,
    xy: np.ndarray,
    labels: np.ndarray,
    meta: dict[str, Any],
    new_placement: Path | None,
) -> None:
    """Make a computed map the cached one so that a reader sees the old map or this one, whole.

    The new positions and labels are written to staged arrays first (readers still see the old
    map); one catalog commit points readers at them; they are then copied over the main arrays
    and a second commit points readers back. A run killed at any step leaves a consistent map,
    and the next ``compute`` rewrites it.
    """
    store, catalog = index.store, index.catalog
    staged_xy, staged_labels = (
        coords_name(feature, {"staged": True}),
        labels_name(feature, {"staged": True}),
    )
    publish_step("staging")
    for name in (staged_xy, staged_labels):
        store.delete(name)
    store.ensure(staged_xy, (2,), "float32", fill_value=np.nan)
    store.ensure(staged_labels, (), "int32", fill_value=-1)
    store.write_rows(staged_xy, ids, xy)
    store.write_rows(staged_labels, ids, labels)
    publish_step("switching")
    catalog.set_meta(meta_key(feature), {**meta, "staged": True})
    publish_step("moving the placement")  # until it is moved, readers find it at the staged path
    if new_placement is not None:
        durable_replace(new_placement, placement_path(index, feature))
    publish_step("copying")
    store.write_rows(coords_name(feature), ids, xy)
    publish_step("copying labels")
    store.write_rows(labels_name(feature), ids, labels)
    publish_step("finishing")
    catalog.set_meta(meta_key(feature), meta)
    for name in (staged_xy, staged_labels):
        store.delete(name)
