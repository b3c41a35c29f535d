"""Feature families behind one protocol (see ``base.Feature``) and the registry that builds them."""

from __future__ import annotations

from typing import Any

from .base import Feature

FEATURE_NAMES = ("embedding", "rgb", "ahash", "dhash", "thumb")
"""Every feature an index can hold, in the order they are computed."""

SEARCH_MODES = ("embedding", "rgb", "ahash", "dhash")
"""Features that can be searched (thumbnails are for display only)."""

MODE_METRICS: dict[str, tuple[str, ...]] = {
    "embedding": ("cosine", "euclidean", "manhattan"),
    "rgb": ("euclidean", "manhattan", "cosine"),
    "ahash": ("hamming",),
    "dhash": ("hamming",),
}
"""Allowed metrics of each search mode, its default first."""


def check_mode_metric(mode: str, metric: str | None) -> str:
    """The metric to use for ``mode`` (its default when ``metric`` is None); ValueError if not allowed."""
    if mode not in MODE_METRICS:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODE_METRICS)}")
    allowed = MODE_METRICS[mode]
    if metric is None:
        return allowed[0]
    if metric not in allowed:
        raise ValueError(
            f"metric {metric!r} is not allowed for mode {mode!r}; choose from {', '.join(allowed)}"
        )
    return metric


def build_feature(name: str, settings: dict[str, Any]) -> Feature:
    """One feature extractor configured from index settings (see ``ImageIndex.open``)."""
    if name == "embedding":
        from .embeddings import EmbeddingFeature

        return EmbeddingFeature(backbone=settings["backbone"], weights=settings.get("weights"))
    if name == "rgb":
        from .color import ColorHistogramFeature

        return ColorHistogramFeature(bins=settings["bins"])
    if name in ("ahash", "dhash"):
        from .hashes import AverageHashFeature, DifferenceHashFeature

        cls = AverageHashFeature if name == "ahash" else DifferenceHashFeature
        return cls(hash_size=settings["hash_size"])
    if name == "thumb":
        from .thumbnails import ThumbnailFeature

        return ThumbnailFeature(size=settings["thumb_size"])
    raise ValueError(f"unknown feature {name!r}; choose from {', '.join(FEATURE_NAMES)}")


def build_features(settings: dict[str, Any]) -> dict[str, Feature]:
    """The extractors named in ``settings["features"]``, in ``FEATURE_NAMES`` order."""
    wanted = set(settings["features"])
    unknown = wanted - set(FEATURE_NAMES)
    if unknown:
        raise ValueError(
            f"unknown feature {sorted(unknown)[0]!r}; choose from {', '.join(FEATURE_NAMES)}"
        )
    return {name: build_feature(name, settings) for name in FEATURE_NAMES if name in wanted}


__all__ = [
    "FEATURE_NAMES",
    "MODE_METRICS",
    "SEARCH_MODES",
    "Feature",
    "build_feature",
    "build_features",
    "check_mode_metric",
]
