"""Feature families behind one protocol (see ``base.Feature``) and the registry that builds them."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from imrec_widgets.errors import UsageError

from .base import Feature, FeatureBase
from .color import ColorHistogramFeature
from .embeddings import EmbeddingFeature
from .hashes import AverageHashFeature, DifferenceHashFeature
from .thumbnails import ThumbnailFeature

HYBRID_MODE = "hybrid"
"""The search mode that fuses several modes' normalised distances (``weights=``)."""

_TABLE: dict[str, type[FeatureBase]] = {}
"""The one table of features: name -> class, in the order they are computed and listed."""

GENERAL_SETTINGS: dict[str, Any] = {"vector_dtype": "float32"}
"""Index settings that belong to no one feature (see ``settings.IndexSettings``)."""

_SEARCH_METRICS = ("cosine", "euclidean", "manhattan", "hamming")  # search.METRICS
_MAP_METRICS = ("euclidean", "hamming")  # what projection.Placement places by


def register(cls: type[FeatureBase]) -> type[FeatureBase]:
    """Add a feature class to the table (usable as a class decorator); return it.

    Its ``name`` becomes a feature an index can store, a search mode with its ``metrics`` when it
    has any, a choice of the CLI's ``--features``/``--mode``/``--feature``, a map input and
    TensorBoard export; its ``settings`` and ``options`` become index settings with their
    defaults. A ``ValueError`` says what is wrong with a class that does not fit.
    """
    name = cls.name
    if not isinstance(name, str) or not name.isidentifier() or name == HYBRID_MODE:
        raise ValueError(f"a feature's name must be a Python identifier, not {name!r}")
    if name in _TABLE and _TABLE[name] is not cls:
        raise ValueError(f"a feature named {name!r} is registered already ({_TABLE[name]})")
    unknown = [metric for metric in cls.metrics if metric not in _SEARCH_METRICS]
    if unknown:
        raise ValueError(f"{name}: unknown metric {unknown[0]!r}; choose from {_SEARCH_METRICS}")
    if (cls.default_metric is None) != (not cls.metrics) or (
        cls.default_metric is not None and cls.default_metric not in cls.metrics
    ):
        raise ValueError(f"{name}: default_metric must be one of metrics, or None when none")
    if cls.map_metric not in _MAP_METRICS:
        raise ValueError(f"{name}: map_metric must be one of {_MAP_METRICS}")
    taken = {"features", "engine", *GENERAL_SETTINGS}
    for key, default in {**cls.settings, **cls.options}.items():
        owners = [other for other in _TABLE.values() if other is not cls]
        same = [o for o in owners if key in {**o.settings, **o.options}]
        if key in taken or any({**o.settings, **o.options}[key] != default for o in same):
            raise ValueError(f"{name}: setting {key!r} is taken by another feature or the index")
    _TABLE[name] = cls
    return cls


def unregister(name: str) -> None:
    """Take a feature out of the table (an index that stores it can then not be opened)."""
    del _TABLE[name]


def feature_class(name: str) -> type[FeatureBase]:
    """The class of feature ``name``; UsageError naming the choices if there is none."""
    try:
        return _TABLE[name]
    except KeyError:
        raise UsageError(f"unknown feature {name!r}; choose from {', '.join(_TABLE)}") from None


def feature_names() -> tuple[str, ...]:
    """Every feature an index can hold, in the order they are computed."""
    return tuple(_TABLE)


def search_modes() -> tuple[str, ...]:
    """Features that can be searched (those with metrics; thumbnails are for display only)."""
    return tuple(name for name, cls in _TABLE.items() if cls.metrics)


def mode_metrics() -> dict[str, tuple[str, ...]]:
    """Allowed metrics of each search mode, its default first."""
    return {
        name: (cls.default_metric, *(m for m in cls.metrics if m != cls.default_metric))
        for name, cls in _TABLE.items()
        if cls.default_metric is not None
    }


def model_free_features() -> tuple[str, ...]:
    """Every feature but the CNN embedding: an index of these needs no model and builds fast."""
    return tuple(name for name in _TABLE if name != "embedding")


def mappable_features() -> tuple[str, ...]:
    """Features a UMAP map (and a TensorBoard export) can be made of: the searchable ones."""
    return search_modes()


def feature_settings() -> dict[str, Any]:
    """Every setting a feature owns (``settings`` and ``options``), with its default."""
    return {
        key: value
        for cls in _TABLE.values()
        for key, value in {**cls.settings, **cls.options}.items()
    }


def setting_features() -> dict[str, tuple[str, ...]]:
    """Settings that change stored values, and the features each one belongs to."""
    owners: dict[str, tuple[str, ...]] = {}
    for name, cls in _TABLE.items():
        for key in cls.settings:
            owners[key] = (*owners.get(key, ()), name)
    return owners


for _builtin in (
    EmbeddingFeature,
    ColorHistogramFeature,
    AverageHashFeature,
    DifferenceHashFeature,
    ThumbnailFeature,
):
    register(_builtin)

_VIEWS: dict[str, Callable[[], Any]] = {
    "FEATURE_NAMES": feature_names,
    "MODEL_FREE_FEATURES": model_free_features,
    "SEARCH_MODES": search_modes,
    "MODE_METRICS": mode_metrics,
}

if TYPE_CHECKING:
    FEATURE_NAMES: tuple[str, ...]
    """Every feature an index can hold, in the order they are computed (``feature_names()``)."""
    MODEL_FREE_FEATURES: tuple[str, ...]
    """Every feature but the CNN embedding (``model_free_features()``)."""
    SEARCH_MODES: tuple[str, ...]
    """Features that can be searched (``search_modes()``)."""
    MODE_METRICS: dict[str, tuple[str, ...]]
    """Allowed metrics of each search mode, its default first (``mode_metrics()``)."""


def __getattr__(name: str) -> Any:
    """The public constants, read from the table when asked for (so they follow ``register``)."""
    if name in _VIEWS:
        return _VIEWS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_mode_metric(mode: str, metric: str | None) -> str:
    """The metric to use for ``mode`` (its default when ``metric`` is None); UsageError if not allowed."""
    metrics = mode_metrics()
    if mode not in metrics:
        raise UsageError(f"unknown mode {mode!r}; choose from {', '.join(metrics)}")
    allowed = metrics[mode]
    if metric is None:
        return allowed[0]
    if metric not in allowed:
        raise UsageError(
            f"metric {metric!r} is not allowed for mode {mode!r}; choose from {', '.join(allowed)}"
        )
    return metric


DEFAULT_HYBRID_WEIGHTS: dict[str, float] = {"embedding": 0.7, "rgb": 0.3}
"""Weights of ``mode="hybrid"`` when none are given (modes the index lacks are left out)."""


def check_hybrid_weights(
    weights: Mapping[str, Any] | None, available: Sequence[str] | None = None
) -> dict[str, tuple[float, str]]:
    """``{mode: (weight, metric)}`` for a hybrid search, weights scaled to sum to 1.

    ``weights`` maps a search mode to a weight (the mode's default metric) or to a
    ``(weight, metric)`` pair; zero weights drop their mode. None means
    ``DEFAULT_HYBRID_WEIGHTS`` restricted to ``available`` modes. Unknown or unavailable modes,
    disallowed metrics, negative or non-finite weights and all-zero weights are UsageErrors.
    """
    if weights is None:
        weights = {
            mode: weight
            for mode, weight in DEFAULT_HYBRID_WEIGHTS.items()
            if available is None or mode in available
        }
        if not weights:
            raise UsageError(
                f"the default hybrid weights need {' or '.join(DEFAULT_HYBRID_WEIGHTS)}, which this "
                "index lacks; pass weights={mode: weight} for the modes it has"
            )
    if not isinstance(weights, Mapping):
        raise UsageError(
            f"weights must map modes to weights, like {DEFAULT_HYBRID_WEIGHTS}, not {weights!r}"
        )
    chosen: dict[str, tuple[float, str]] = {}
    modes = search_modes()
    for mode, value in weights.items():
        if mode not in modes:
            raise UsageError(f"unknown mode {mode!r} in weights; choose from {', '.join(modes)}")
        if available is not None and mode not in available:
            raise UsageError(
                f"mode {mode!r} in weights is not in this index; it has {', '.join(available)}"
            )
        weight, metric = (
            value if isinstance(value, (tuple, list)) and len(value) == 2 else (value, None)
        )
        value = _finite_weight(weight) if isinstance(weight, numbers.Real) else None
        if isinstance(weight, bool) or value is None:
            raise UsageError(
                f"the weight of {mode!r} must be a finite number, not {repr(weight)[:40]}"
            )
        if value < 0:
            raise UsageError(f"the weight of {mode!r} must not be negative, not {weight}")
        metric = check_mode_metric(mode, metric)
        if value > 0:
            chosen[mode] = (value, metric)
    if not chosen:
        raise UsageError("hybrid weights are all zero; give at least one mode a positive weight")
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


def build_feature(name: str, settings: Mapping[str, Any]) -> FeatureBase:
    """One feature extractor configured from index settings (see ``ImageIndex.open``)."""
    return feature_class(name).from_settings(settings)


def build_features(settings: Mapping[str, Any]) -> dict[str, FeatureBase]:
    """The extractors named in ``settings["features"]``, in ``feature_names()`` order."""
    wanted = set(settings["features"])
    for name in sorted(wanted):
        feature_class(name)  # unknown names fail before any model is built
    return {name: build_feature(name, settings) for name in _TABLE if name in wanted}


__all__ = [
    "DEFAULT_HYBRID_WEIGHTS",
    "FEATURE_NAMES",
    "HYBRID_MODE",
    "MODEL_FREE_FEATURES",
    "MODE_METRICS",
    "SEARCH_MODES",
    "Feature",
    "FeatureBase",
    "build_feature",
    "build_features",
    "check_hybrid_weights",
    "check_mode_metric",
    "feature_class",
    "feature_names",
    "feature_settings",
    "mappable_features",
    "mode_metrics",
    "model_free_features",
    "register",
    "search_modes",
    "setting_features",
    "unregister",
]
