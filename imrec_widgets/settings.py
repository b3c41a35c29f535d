"""The settings an index is built with: their names, types and defaults, in one place."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import SettingError
from .features import GENERAL_SETTINGS, feature_names, feature_settings, setting_features


class IndexSettings(TypedDict, total=False):
    """Keyword settings of ``ImageIndex.open`` (each optional; None or absent = the stored one).

    These are the built-in features' settings, typed; a feature added with
    ``features.register`` brings its own (its class's ``settings`` and ``options``).

    An index remembers them; opening it with other values of the ones that change stored
    features (``backbone``, ``model_precision``, ``bins``, ``hash_size``, ``thumb_size``) needs
    ``rebuild=``.
    """

    features: list[str] | tuple[str, ...] | None
    """Which features to store (default: every one, ``FEATURE_NAMES``)."""
    backbone: str | None
    """CNN of the ``embedding`` feature: ``"efficientnet_lite0"`` (bundled weights) or ``"resnet18"``."""
    weights: str | None
    """Path of a weights file for the backbone (default: the bundled or cached one)."""
    bins: int | None
    """Histogram bins per channel of the ``rgb`` feature (``bins**3`` values)."""
    hash_size: int | None
    """Side of the ``ahash``/``dhash`` grids (``hash_size**2`` bits)."""
    thumb_size: int | None
    """Longer side in pixels of the stored thumbnails (256: crisp in the ~120 px result cells on a 2x screen)."""
    thumb_format: str | None
    """How thumbnails are stored: ``"jpeg"`` (aspect kept; new indexes) or ``"pixels"`` (the
    64 x 64 squares padded with white of indexes made before; read until ``rebuild=["thumb"]``)."""
    vector_dtype: str | None
    """Stored search copy of float features: ``"float32"``, ``"float16"`` or ``"int8"``."""
    model_precision: str | None
    """The CNN's arithmetic: ``"float32"``, or ``"int8"`` (a quantized graph on ONNX Runtime)."""


def default_settings() -> dict[str, Any]:
    """Settings of a new index where ``open`` is not given others: every feature of the table
    (``features.register``), the settings each feature owns with their defaults, and the
    general ones (``features.GENERAL_SETTINGS``)."""
    return {"features": list(feature_names()), **feature_settings(), **GENERAL_SETTINGS}


if TYPE_CHECKING:
    DEFAULT_SETTINGS: dict[str, Any]
    """Settings of a new index where ``open`` is not given others (``default_settings()``)."""
    SETTING_FEATURES: dict[str, tuple[str, ...]]
    """Settings that change stored values, and the features each one belongs to
    (``features.setting_features()``)."""


def __getattr__(name: str) -> Any:
    """The public constants, read from the feature table when asked for."""
    if name == "DEFAULT_SETTINGS":
        return default_settings()
    if name == "SETTING_FEATURES":
        return setting_features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def env_count(name: str, default: int, unit: str = "") -> int:
    """The whole number the environment variable ``name`` holds (``_`` allowed as a thousands
    separator), ``default`` when it is unset or empty; a ``SettingError`` naming the variable
    when it holds anything else (``2GB``, ``1e9``, ``-5``), never a silent default."""
    raw = os.environ.get(name, "")
    value = raw.strip().replace("_", "")
    if not value:
        return default
    if not value.isascii() or not value.isdigit():
        raise SettingError(
            f"{name}={raw!r} is not a whole number{' of ' + unit if unit else ''}; "
            f"set it like {name}={default} or unset it"
        )
    number = int(value)
    if number < 1:
        raise SettingError(f"{name} must be positive, not {number}; unset it for {default:,}")
    return number
