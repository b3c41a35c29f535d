"""Retrieval quality you can measure: precision, recall and mAP at k of every search mode.

Each labelled image queries all other labelled images ("more like this", the query itself left
out); a hit is relevant when it has the query's label. For a query with ``R`` other images of its
label and relevance ``rel_i`` of the hit at rank ``i`` (1-based, i <= k):

- precision@k = (relevant hits in the top k) / k
- recall@k    = (relevant hits in the top k) / R
- AP@k        = sum_i precision@i * rel_i / min(R, k); mAP@k is its mean over the queries

Images whose label no other image shares cannot be scored and do not query (they stay
searchable as distractors). A seeded random ranking of the same images is the baseline row.
"""

from __future__ import annotations

import csv
import html
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import NotFoundError, UsageError
from .features import (
    DEFAULT_HYBRID_WEIGHTS,
    HYBRID_MODE,
    check_hybrid_weights,
    check_mode_metric,
    mode_metrics,
)

if TYPE_CHECKING:
    from .protocols import IndexView

RANDOM_MODE = "random"
"""The baseline row: a seeded random ranking of the labelled images."""

TAG_LABELS = "tags"
"""``labels=`` value that labels each image by its one tag (a CSV path is anything else)."""

COLUMNS = ("mode", "metric", "k", "queries", "precision", "recall", "mAP", "ms_per_query")
"""Keys of every row of an ``EvaluationReport`` (and columns of its CSV)."""


def folder_labels(index: IndexView) -> dict[int, str]:
    """``{id: label}`` where the label is the name of the image's parent folder.

    ``cats/a.jpg`` and ``pets/cats/b.jpg`` are both labelled ``cats``; images directly in the
    indexed folder have no label.
    """
    labels = {}
    for record in index.catalog.records(status="ok"):
        parent = PurePosixPath(record.path).parent
        if parent.name:
            labels[record.id] = parent.name
    return labels


def read_labels(index: IndexView, path: str | os.PathLike[str]) -> dict[int, str]:
    """``{id: label}`` from a CSV file with a header row naming ``id`` or ``path``, and ``label``.

    Paths are relative to the indexed folder (as ``imrec search`` prints them) or absolute.
    Rows naming no searchable image are ignored; ValueError if none names one.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(f"labels file not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = [name.strip().lower() for name in reader.fieldnames or []]
        if "label" not in fields or not {"id", "path"} & set(fields):
            raise UsageError(
                f"{path} needs a header row with columns id,label or path,label; it has {', '.join(fields) or 'none'}"
            )
        rows = [
            {key.strip().lower(): (value or "").strip() for key, value in row.items() if key}
            for row in reader
        ]
    ok = {record.id: record.path for record in index.catalog.records(status="ok")}
    by_path = {record_path: id_ for id_, record_path in ok.items()}
    labels = {}
    for row in rows:
        if not row.get("label"):
            continue
        if row.get("id", "").isdigit():
            id_: int | None = int(row["id"])
        else:
            name = Path(row.get("path", "")).expanduser()
            if name.is_absolute():
                try:
                    name = name.resolve().relative_to(index.root)
                except ValueError:
                    continue
            id_ = by_path.get(name.as_posix())
        if id_ is not None and id_ in ok:
            labels[id_] = row["label"]
    if not labels:
        raise UsageError(f"no row of {path} names a searchable image of {index.root}")
    return labels


def evaluate(
    index: IndexView,
    labels: str | os.PathLike[str] | Mapping[int, str] | None = None,
    k: int = 10,
    modes: Sequence[str] | None = None,
    weights: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
) -> EvaluationReport:
    """Precision@k, recall@k, mAP@k and query time of each mode on labelled images.

    ``labels``: None (parent folder names, see ``folder_labels``), ``"tags"`` (each image's
    tag, for images with exactly one; see ``tags.tag_labels``), a CSV path (``read_labels``)
    or a ``{id: label}`` mapping. ``modes``: entries like ``"embedding"`` (every allowed
    metric), ``"rgb:cosine"`` (one metric) or ``"hybrid"`` (with ``weights``, see
    ``ImageIndex.search``); default: every indexed mode and metric, plus hybrid when the
    index has its modes. The random-ranking baseline row (``seed``) is always added.
    Only labelled images are searched. Query time is measured after one warm-up query, with
    one ``search_many`` call for all queries.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise UsageError(f"k must be a positive integer, not {k!r}")
    k = int(k)
    if labels is None:
        label_of = folder_labels(index)
    elif isinstance(labels, str) and labels == TAG_LABELS:
        from .tags import tag_labels

        label_of = tag_labels(index)
    elif isinstance(labels, Mapping):
        label_of = {int(id_): str(label) for id_, label in labels.items()}
    else:
        label_of = read_labels(index, labels)
    searchable = set(index.ids().tolist())
    label_of = {id_: label for id_, label in label_of.items() if id_ in searchable}
    gallery = np.array(sorted(label_of), dtype=np.int64)
    names, codes = np.unique([label_of[int(i)] for i in gallery], return_inverse=True)
    codes = np.asarray(codes, dtype=np.int64).ravel()
    counts = np.bincount(codes, minlength=len(names)) if gallery.size else np.zeros(0, np.int64)
    is_query = counts[codes] >= 2 if gallery.size else np.zeros(0, bool)
    if not is_query.any():
        raise UsageError(
            "nothing to evaluate: no label has two searchable images; put images in one sub-folder "
            "per label, or pass labels= a CSV of id,label or path,label"
        )
    queries = gallery[is_query]
    query_codes = codes[is_query]
    relevant = counts[query_codes] - 1
    code_of = dict(zip(gallery.tolist(), codes.tolist(), strict=True))
    restrict = None if gallery.size == len(searchable) else gallery

    report = EvaluationReport(
        k=k,
        images=int(gallery.size),
        labels=len(names),
        expected_random_precision=float(np.mean(relevant / (gallery.size - 1))),
    )
    for mode, metric in _configurations(index, modes, weights):
        search_weights = weights if mode == HYBRID_MODE else None
        search_metric = None if mode == HYBRID_MODE else metric
        index.search_many(
            [int(queries[0])], mode, search_metric, k, ids=restrict, weights=search_weights
        )
        started = time.perf_counter()
        results = index.search_many(
            [int(q) for q in queries], mode, search_metric, k, ids=restrict, weights=search_weights
        )
        seconds = time.perf_counter() - started
        found = [[code_of[hit.id] for hit in hits] for hits in results]
        hits = _relevance(found, query_codes, k)
        report.append(
            _row(mode, results[0].metric, k, hits, relevant, seconds * 1000 / len(queries))
        )

    rng = np.random.default_rng(seed)
    positions = np.searchsorted(gallery, queries)
    random_found = []
    for position in positions:
        picked = rng.choice(gallery.size - 1, size=min(k, gallery.size - 1), replace=False)
        picked += picked >= position
        random_found.append(codes[picked].tolist())
    report.append(
        _row(RANDOM_MODE, "-", k, _relevance(random_found, query_codes, k), relevant, None)
    )
    return report


def _configurations(
    index: IndexView, modes: Sequence[str] | None, weights: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    metrics = mode_metrics()
    available = [mode for mode in metrics if mode in index.settings["features"]]
    if modes is None:
        chosen = [(mode, metric) for mode in available for metric in metrics[mode]]
        if weights is not None:
            check_hybrid_weights(weights, available)
            chosen.append((HYBRID_MODE, ""))
        elif len(set(DEFAULT_HYBRID_WEIGHTS) & set(available)) >= 2:
            chosen.append((HYBRID_MODE, ""))
        return chosen
    chosen = []
    for entry in modes:
        mode, _, metric = str(entry).partition(":")
        if mode == RANDOM_MODE:
            continue
        if mode == HYBRID_MODE:
            check_hybrid_weights(weights, available)
            chosen.append((HYBRID_MODE, ""))
            continue
        if mode not in available:
            check_mode_metric(mode, None)
            raise UsageError(f"mode {mode!r} is not in this index; it has {', '.join(available)}")
        if metric:
            chosen.append((mode, check_mode_metric(mode, metric)))
        else:
            chosen.extend((mode, name) for name in metrics[mode])
    if not chosen:
        raise UsageError(f"choose at least one mode of {', '.join([*available, HYBRID_MODE])}")
    return list(dict.fromkeys(chosen))


def _relevance(found: list[list[int]], query_codes: np.ndarray, k: int) -> np.ndarray:
    """(queries, k) booleans: is the hit at each rank of the query's label (short lists padded)."""
    matrix = np.full((len(found), k), -1, dtype=np.int64)
    for row, codes in enumerate(found):
        matrix[row, : len(codes)] = codes[:k]
    return np.asarray(matrix == query_codes[:, None])


def _row(
    mode: str, metric: str, k: int, hits: np.ndarray, relevant: np.ndarray, ms: float | None
) -> dict[str, Any]:
    ranks = np.arange(1, k + 1)
    precision_at = np.cumsum(hits, axis=1) / ranks
    average_precision = (precision_at * hits).sum(axis=1) / np.minimum(relevant, k)
    return {
        "mode": mode,
        "metric": metric,
        "k": k,
        "queries": int(hits.shape[0]),
        "precision": float(hits.sum(axis=1).mean() / k),
        "recall": float((hits.sum(axis=1) / relevant).mean()),
        "mAP": float(average_precision.mean()),
        "ms_per_query": None if ms is None else float(ms),
    }


class EvaluationReport(list[dict[str, Any]]):
    """Rows (dicts with ``COLUMNS``) of ``evaluate``: a table in notebooks, ``chart()`` for bars."""

    def __init__(
        self,
        rows: Sequence[dict[str, Any]] = (),
        *,
        k: int,
        images: int,
        labels: int,
        expected_random_precision: float,
    ) -> None:
        super().__init__(rows)
        self.k = k
        self.images = images
        self.labels = labels
        self.expected_random_precision = expected_random_precision

    def best(self, measure: str = "mAP") -> dict[str, Any]:
        """The row with the highest ``measure`` (precision, recall or mAP)."""
        _check_measure(measure)
        return max(self, key=lambda row: row[measure])

    def summary(self) -> str:
        """One line: what was measured."""
        queries = self[0]["queries"] if self else 0
        return (
            f"{self.images} labelled images, {self.labels} labels, {queries} queries, k={self.k}; "
            f"a random ranking is expected to reach precision {self.expected_random_precision:.3f}"
        )

    def to_text(self) -> str:
        """The rows as a fixed-width text table (what ``imrec evaluate`` prints)."""
        header = ["mode", "metric", f"P@{self.k}", f"R@{self.k}", f"mAP@{self.k}", "ms/query"]
        lines = [
            [
                row["mode"],
                row["metric"],
                f"{row['precision']:.3f}",
                f"{row['recall']:.3f}",
                f"{row['mAP']:.3f}",
                "-" if row["ms_per_query"] is None else f"{row['ms_per_query']:.2f}",
            ]
            for row in self
        ]
        widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
        formatted = []
        for cells in [header, *lines]:
            text = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
            text += [cell.rjust(width) for cell, width in zip(cells[2:], widths[2:], strict=True)]
            formatted.append("  ".join(text).rstrip())
        return "\n".join([*formatted, self.summary()])

    def __str__(self) -> str:
        return self.to_text()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the rows to ``path``: CSV for ``.csv``, JSON (with the summary) for ``.json``."""
        path = Path(path).expanduser()
        suffix = path.suffix.lower()
        if suffix == ".csv":
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(
                    {key: ("" if row[key] is None else row[key]) for key in COLUMNS} for row in self
                )
        elif suffix == ".json":
            document = {
                "k": self.k,
                "images": self.images,
                "labels": self.labels,
                "expected_random_precision": self.expected_random_precision,
                "rows": list(self),
            }
            path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        else:
            raise UsageError(f"cannot write {path.name}: name a .csv or .json file")
        return path

    def _repr_html_(self) -> str:
        best = self.best()["mAP"] if self else None
        head = "".join(
            f'<th style="text-align:{align}">{html.escape(name)}</th>'
            for name, align in [
                ("mode", "left"),
                ("metric", "left"),
                (f"P@{self.k}", "right"),
                (f"R@{self.k}", "right"),
                (f"mAP@{self.k}", "right"),
                ("ms/query", "right"),
            ]
        )
        body = []
        for row in self:
            ms = "–" if row["ms_per_query"] is None else f"{row['ms_per_query']:.2f}"
            mean_ap = f"{row['mAP']:.3f}"
            if row["mAP"] == best:
                mean_ap = f"<b>{mean_ap}</b>"
            body.append(
                f'<tr><td style="text-align:left">{html.escape(row["mode"])}</td>'
                f'<td style="text-align:left">{html.escape(row["metric"])}</td>'
                f"<td>{row['precision']:.3f}</td><td>{row['recall']:.3f}</td><td>{mean_ap}</td>"
                f"<td>{ms}</td></tr>"
            )
        return (
            f'<div class="imrec-evaluation"><table style="font-size:12px"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            f'<div style="font-size:11px;color:#666">{html.escape(self.summary())}</div></div>'
        )

    def chart(self, measures: Sequence[str] = ("precision", "recall", "mAP")) -> Any:
        """A bqplot ``Figure``: grouped bars of ``measures`` for every row."""
        import bqplot

        for measure in measures:
            _check_measure(measure)
        names = [
            row["mode"]
            if not row["metric"] or row["mode"] == HYBRID_MODE
            else f"{row['mode']}/{row['metric']}"
            for row in self
        ]
        names = [name.removesuffix("/-") for name in names]
        x_scale, y_scale = bqplot.OrdinalScale(), bqplot.LinearScale(min=0.0, max=1.0)
        bars = bqplot.Bars(
            x=names,
            y=[[row[measure] for row in self] for measure in measures],
            scales={"x": x_scale, "y": y_scale},
            type="grouped",
            labels=[f"{measure}@{self.k}" for measure in measures],
            display_legend=True,
            colors=["#4c78a8", "#f58518", "#54a24b", "#e45756"][: len(measures)],
        )
        axes = [
            bqplot.Axis(scale=x_scale, tick_rotate=-30, tick_style={"font-size": "10px"}),
            bqplot.Axis(scale=y_scale, side="left", tick_format=".1f", label="score"),
        ]
        return bqplot.Figure(
            marks=[bars],
            axes=axes,
            title=f"retrieval quality at k={self.k} ({self.images} images, {self.labels} labels)",
            legend_location="top-right",
            fig_margin={"top": 50, "bottom": 90, "left": 50, "right": 20},
        )


def _check_measure(measure: str) -> None:
    if measure not in ("precision", "recall", "mAP"):
        raise UsageError(f"unknown measure {measure!r}; choose from precision, recall, mAP")
