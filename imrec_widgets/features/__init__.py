"""Feature families behind one protocol (see ``base.Feature``) and the registry that builds them."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Feature

FEATURE_NAMES = ("embedding", "rgb", "ahash", "dhash", "thumb")
"""Every feature an index can hold, in the order they are computed."""

MODEL_FREE_FEATURES = ("rgb", "ahash", "dhash", "thumb")
"""Every feature but the CNN embedding: an index of these needs no model and builds fast."""

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


HYBRID_MODE = "hybrid"
"""The search mode that fuses several modes' normalised distances (``weights=``)."""

DEFAULT_HYBRID_WEIGHTS: dict[str, float] = {"embedding": 0.7, "rgb": 0.3}
"""Weights of ``mode="hybrid"`` when none are given (modes the index lacks are left out)."""


def check_hybrid_weights(
    weights: Mapping[str, Any] | None, available: Sequence[str] | None = None
) -> dict[str, tuple[float, str]]:
    """``{mode: (weight, metric)}`` for a hybrid search, weights scaled to sum to 1.

    ``weights`` maps a search mode to a weight (the mode's default metric) or to a
    ``(weight, metric)`` pair; zero weights drop their mode. None means
    ``DEFAULT_HYBRID_WEIGHTS`` restricted to ``available`` modes. Unknown or unavailable modes,
    disallowed metrics, negative or non-finite weights and all-zero weights are ValueErrors.
    """
    if weights is None:
        weights = {
            mode: weight
            for mode, weight in DEFAULT_HYBRID_WEIGHTS.items()
            if available is None or mode in available
        }
        if not weights:
            raise ValueError(
                f"the default hybrid weights need {' or '.join(DEFAULT_HYBRID_WEIGHTS)}, which this "
                "index lacks; pass weights={mode: weight} for the modes it has"
            )
    if not isinstance(weights, Mapping):
        raise ValueError(
            f"weights must map modes to weights, like {DEFAULT_HYBRID_WEIGHTS}, not {weights!r}"
        )
    chosen: dict[str, tuple[float, str]] = {}
    for mode, value in weights.items():
        if mode not in MODE_METRICS:
            raise ValueError(
                f"unknown mode {mode!r} in weights; choose from {', '.join(MODE_METRICS)}"
            )
        if available is not None and mode not in available:
            raise ValueError(
                f"mode {mode!r} in weights is not in this index; it has {', '.join(available)}"
            )
        weight, metric = (
            value if isinstance(value, (tuple, list)) and len(value) == 2 else (value, None)
        )
        value = _finite_weight(weight) if isinstance(weight, numbers.Real) else None
        if isinstance(weight, bool) or value is None:
            raise ValueError(
                f"the weight of {mode!r} must be a finite number, not {repr(weight)[:40]}"
            )
        if value < 0:
            raise ValueError(f"the weight of {mode!r} must not be negative, not {weight}")
        metric = check_mode_metric(mode, metric)
        if value > 0:
            chosen[mode] = (value, metric)
    if not chosen:
        raise ValueError("hybrid weights are all zero; give at least one mode a positive weight")
    # Scaled by the largest first: the sum of weights near the float maximum stays finite.
    largest = max(weight for weight, _metric in chosen.values())
    scaled = {mode: (weight / largest, metric) for mode, (weight, metric) in chosen.items()}
    total = sum(weight for weight, _metric in scaled.values())
    return {mode: (weight / total, metric) for mode, (weight, metric) in scaled.items()}


def _finite_weight(weight: numbers.Real) -> float | None:
    """``weight`` as a float, or None when it is not finite or too large for one (10**400)."""
    try:
        value = float(weight)
    except (OverflowError, ValueError):
        return None
    return value if math.isfinite(value) else None


def build_feature(name: str, settings: dict[str, Any]) -> Feature:
    """One feature extractor configured from index settings (see ``ImageIndex.open``)."""
    if name == "embedding":
        from .embeddings import EmbeddingFeature

        return EmbeddingFeature(
            backbone=settings["backbone"],
            weights=settings.get("weights"),
            engine=settings.get("engine") or "auto",
            precision=settings.get("model_precision") or "float32",
        )
    if name == "rgb":
        from .color import ColorHistogramFeature

        return ColorHistogramFeature(bins=settings["bins"])
    if name in ("ahash", "dhash"):
        from .hashes import AverageHashFeature, DifferenceHashFeature

        cls = AverageHashFeature if name == "ahash" else DifferenceHashFeature
        return cls(hash_size=settings["hash_size"])
    if name == "thumb":
        from .thumbnails import ThumbnailFeature

        return ThumbnailFeature(
            size=settings["thumb_size"], format=settings.get("thumb_format") or "pixels"
        )
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
    "DEFAULT_HYBRID_WEIGHTS",
    "FEATURE_NAMES",
    "HYBRID_MODE",
    "MODE_METRICS",
    "SEARCH_MODES",
    "Feature",
    "build_feature",
    "build_features",
    "check_hybrid_weights",
    "check_mode_metric",
]
