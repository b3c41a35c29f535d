"""Feature families behind one protocol (see ``base.Feature``) and the registry that builds them."""

from __future__ import annotations

from typing import Any

from .base import Feature

FEATURE_NAMES = ("embedding", "rgb", "ahash", "dhash", "thumb")
"""Every feature an index can hold, in the order they are computed."""

SEARCH_MODES = ("embedding", "rgb", "ahash", "dhash")
"""Features that can be searched (thumbnails are for display only)."""


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


__all__ = ["FEATURE_NAMES", "SEARCH_MODES", "Feature", "build_feature", "build_features"]
