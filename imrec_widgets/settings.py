"""The settings an index is built with: their names, types and defaults, in one place."""

from __future__ import annotations

import os
from typing import Any, TypedDict

from .errors import SettingError
from .features import FEATURE_NAMES


class IndexSettings(TypedDict, total=False):
    """Keyword settings of ``ImageIndex.open`` (each optional; None or absent = the stored one).

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


DEFAULT_SETTINGS: dict[str, Any] = {
    "features": list(FEATURE_NAMES),
    "backbone": "efficientnet_lite0",
    "weights": None,
    "bins": 8,
    "hash_size": 8,
    "thumb_size": 256,
    "thumb_format": "jpeg",
    "vector_dtype": "float32",
    "model_precision": "float32",
}
"""Settings of a new index where ``open`` is not given others."""

SETTING_FEATURES: dict[str, tuple[str, ...]] = {
    "backbone": ("embedding",),
    "model_precision": ("embedding",),
    "bins": ("rgb",),
    "hash_size": ("ahash", "dhash"),
    "thumb_size": ("thumb",),
    "thumb_format": ("thumb",),
}
"""Settings that change stored values, and the features each one belongs to."""


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
