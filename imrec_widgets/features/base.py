"""The one small protocol every feature family implements, and the base class that fills it in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
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
    def dtype(self) -> np.dtype[Any]: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def default_metric(self) -> str | None:
        """None for a feature that is stored but not searched (thumbnails)."""

    @property
    def metrics(self) -> tuple[str, ...]: ...

    def config(self) -> dict[str, Any]: ...

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class FeatureBase:
    """What the feature table (``features.register``) reads from a feature class.

    A feature family subclasses this, sets the class attributes, and implements ``dtype``,
    ``shape``, ``config`` and ``extract_one`` (or ``extract``). Everything else (search modes
    and metrics, settings and their defaults, the CLI's choices, the UMAP and TensorBoard
    inputs) is derived from these attributes by ``imrec_widgets.features``.
    """

    name: ClassVar[str] = ""
    """The feature's name: its stored array, its search mode, its ``features=`` entry."""
    metrics: ClassVar[tuple[str, ...]] = ()
    """Metrics a search of this feature allows (``search.METRICS``); empty: stored, not searched."""
    default_metric: ClassVar[str | None] = None
    """The metric used when none is asked for; one of ``metrics`` (None when not searched)."""
    settings: ClassVar[Mapping[str, Any]] = {}
    """Index settings that change this feature's stored rows, with their defaults: changing one
    on an existing index needs ``rebuild=[name]``."""
    options: ClassVar[Mapping[str, Any]] = {}
    """Other index settings this feature reads (they do not change stored rows), with defaults."""
    map_metric: ClassVar[str] = "euclidean"
    """How UMAP compares the rows ``map_input`` makes: ``"euclidean"`` or ``"hamming"``."""

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> FeatureBase:
        """The extractor an index with ``settings`` uses (the keys of ``settings`` and ``options``
        become keyword arguments of the same name)."""
        wanted = {**cls.settings, **cls.options}
        return cls(**{key: settings.get(key, default) for key, default in wanted.items()})

    @classmethod
    def vectors(cls, values: np.ndarray) -> np.ndarray:
        """Stored rows as numbers, one flat row per image (what TensorBoard's projector shows)."""
        return values.reshape(len(values), -1)

    @classmethod
    def map_input(cls, values: np.ndarray) -> np.ndarray:
        """Stored rows as float32 UMAP input, compared by ``map_metric``."""
        return cls.vectors(values).astype(np.float32, copy=False)

    def extract_one(self, image: Image.Image) -> np.ndarray:
        """The row of one decoded RGB image (what indexing and image queries call)."""
        raise NotImplementedError(f"{type(self).__name__} must define extract_one")

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The rows of decoded RGB images, stacked."""
        return np.stack([self.extract_one(image) for image in images])
