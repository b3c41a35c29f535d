"""The one small protocol every feature family implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@runtime_checkable
class Feature(Protocol):
    """A per-image feature: fixed dtype and shape, a default metric and the metrics it allows.

    ``extract`` takes decoded RGB images (``PIL.Image`` in mode ``"RGB"``) and returns one
    array of shape ``(len(images), *shape)`` and dtype ``dtype``.
    ``config()`` returns the JSON-able settings recorded in the index's ``meta`` table; an index
    opened with a different config for the same feature is refused.
    """

    @property
    def name(self) -> str: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def default_metric(self) -> str | None:
        """None for a feature that is stored but not searched (thumbnails)."""

    @property
    def metrics(self) -> tuple[str, ...]: ...

    def config(self) -> dict[str, Any]: ...

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray: ...
