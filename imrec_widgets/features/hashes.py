"""Perceptual hashes (imagehash's average and difference hash) stored as packed bits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from imrec_widgets.errors import UsageError

from .base import FeatureBase


class _HashFeature(FeatureBase):
    default_metric = "hamming"
    metrics = ("hamming",)
    settings: ClassVar[Mapping[str, Any]] = {"hash_size": 8}
    map_metric = "hamming"
    dtype = np.dtype("uint8")
    method = ""

    def __init__(self, hash_size: int = 8) -> None:
        if not 2 <= int(hash_size) <= 64:
            raise UsageError(f"hash_size must be between 2 and 64, not {hash_size}")
        if (int(hash_size) ** 2) % 8:
            raise UsageError(f"hash_size**2 must be a multiple of 8 bits, not {hash_size}**2")
        self.hash_size = int(hash_size)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.hash_size**2 // 8,)

    @property
    def bits(self) -> int:
        return self.hash_size**2

    def config(self) -> dict[str, Any]:
        return {"hash_size": self.hash_size}

    def extract_one(self, image: Image.Image) -> np.ndarray:
        import imagehash

        hasher = getattr(imagehash, self.method)
        return np.packbits(hasher(image, hash_size=self.hash_size).hash.reshape(-1))

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.extract_one(image) for image in images])

    @classmethod
    def vectors(cls, values: np.ndarray) -> np.ndarray:
        """One 0/1 number per bit of the packed hashes."""
        return np.unpackbits(values, axis=1)


class AverageHashFeature(_HashFeature):
    """Average hash: one bit per cell of a ``hash_size``\u00b2 grey thumbnail, above its mean."""

    name = "ahash"
    method = "average_hash"


class DifferenceHashFeature(_HashFeature):
    """Difference hash: one bit per horizontal gradient sign of a grey thumbnail."""

    name = "dhash"
    method = "dhash"
