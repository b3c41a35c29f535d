"""Joint RGB colour histogram (the seed's 8x8x8), L2-normalised."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from imrec_widgets.errors import UsageError

from .base import FeatureBase


class ColorHistogramFeature(FeatureBase):
    """``bins``\u00b3 joint RGB histogram of each image, L2-normalised (float32, ``bins**3`` values)."""

    name = "rgb"
    default_metric = "euclidean"
    metrics = ("euclidean", "manhattan", "cosine")
    settings: ClassVar[Mapping[str, Any]] = {"bins": 8}
    dtype = np.dtype("float32")

    def __init__(self, bins: int = 8) -> None:
        if not 2 <= int(bins) <= 32:
            raise UsageError(f"histogram bins must be between 2 and 32, not {bins}")
        self.bins = int(bins)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.bins**3,)

    def config(self) -> dict[str, Any]:
        return {"bins": self.bins}

    def extract_one(self, image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint16).reshape(-1, 3)
        quantised = (pixels * self.bins) >> 8
        codes = (quantised[:, 0] * self.bins + quantised[:, 1]) * self.bins + quantised[:, 2]
        histogram = np.bincount(codes, minlength=self.bins**3).astype(np.float32)
        norm = float(np.linalg.norm(histogram))
        return histogram / norm if norm > 0 else histogram

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.extract_one(image) for image in images]).astype(self.dtype)
