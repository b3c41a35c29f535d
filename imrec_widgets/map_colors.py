"""What a map's points are coloured by: the colour categories of every point for one
``color_by`` kind, read from the index (folders, tags, labels, which images the map was fitted on).

A module of its own rather than part of ``mapdata``: ``mapdata`` is numpy over points and
knows no index (``synthetic`` builds on it), while this reads the catalog, the map's
placement file and label CSVs. ``UmapExplorer`` only caches what this returns and shows it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from imrec_widgets.errors import UsageError
from imrec_widgets.mapdata import Categories, categorize, cluster_categories, tag_categories

if TYPE_CHECKING:
    from imrec_widgets.protocols import IndexView

COLOR_BY = ("cluster", "folder", "status", "tags", "label")
"""What the points can be coloured by: "status" is how a point got its place (in the UMAP fit
sample, or placed later by its neighbours); "tags" is each image's tag (its one tag, "(several
tags)" or "(no tag)"); "label" needs ``labels=``."""

TAG_PREFIX = "tag:"
"""``color_by="tag:<name>"`` colours the images with tag ``<name>`` apart from the rest."""

Labels = str | os.PathLike[str] | Mapping[int, str]
"""Labels to colour by: a CSV of ``id,label`` or ``path,label`` (as ``evaluate`` reads), or a
mapping id -> label."""


def is_live(kind: str) -> bool:
    """Whether ``kind``'s categories change with the catalog at any time (tags): never cache them."""
    return kind == "tags" or kind.startswith(TAG_PREFIX)


def map_categories(
    index: IndexView,
    feature: str,
    ids: np.ndarray,
    kind: str,
    *,
    clusters: np.ndarray,
    labels: Labels | None = None,
) -> Categories:
    """Colour categories of the map points ``ids`` (with cluster labels ``clusters``, in the
    same order) of the map of ``feature`` for ``color_by=kind``: one of ``COLOR_BY`` or
    ``"tag:<name>"``. ``UsageError`` for an unknown kind, or "label" without ``labels``."""
    if kind == "cluster":
        return cluster_categories(clusters)
    if kind == "folder":
        folders = [record.path.rpartition("/")[0] or "." for record in index.records(ids)]
        return categorize(folders)
    if kind == "status":
        from imrec_widgets.projection import fitted_ids

        fitted = fitted_ids(index, feature)
        in_fit = np.ones(len(ids), dtype=bool) if fitted is None else np.isin(ids, fitted)
        return categorize(np.where(in_fit, "fitted", "placed later"))
    if kind == "tags":
        catalog = index.catalog
        names = list(catalog.tag_counts()) if index.exists() else []
        return tag_categories(
            ids, {name: np.asarray(catalog.tagged_ids([name]), np.int64) for name in names}
        )
    if kind.startswith(TAG_PREFIX):
        from imrec_widgets.tags import check_tag_names

        name = kind[len(TAG_PREFIX) :]
        tagged = np.isin(ids, index.catalog.tagged_ids(check_tag_names(name, "color_by")))
        # Categorised as booleans, named after: np.unique over a million strings takes ~1 s.
        categories = categorize(tagged)
        shown = [name if value == "True" else "(not tagged)" for value in categories.names]
        return Categories(categories.codes, shown, categories.colors, categories.counts)
    if kind == "label":
        if labels is None:
            raise UsageError("color_by='label' needs labels= (a CSV path or {id: label})")
        if isinstance(labels, Mapping):
            label_of = {int(k): str(v) for k, v in labels.items()}
        else:
            from imrec_widgets.evaluation import read_labels

            label_of = read_labels(index, labels)
        return categorize([label_of.get(int(i), "(no label)") for i in ids.tolist()])
    raise UsageError(f"color_by must be one of {', '.join(COLOR_BY)} or tag:<name>; got {kind!r}")
