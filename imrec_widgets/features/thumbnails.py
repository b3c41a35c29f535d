"""Small RGB thumbnails, aspect kept and padded to a square, for galleries and sprites."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

PAD_COLOR = (255, 255, 255)


class ThumbnailFeature:
    """``size`` x ``size`` x 3 uint8 thumbnail of each image, centred on a white square."""

    name = "thumb"
    default_metric: str | None = None
    metrics: tuple[str, ...] = ()
    dtype = np.dtype("uint8")

    def __init__(self, size: int = 64) -> None:
        if not 8 <= int(size) <= 512:
            raise ValueError(f"thumbnail size must be between 8 and 512, not {size}")
        self.size = int(size)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size, self.size, 3)

    def config(self) -> dict[str, Any]:
        return {"size": self.size}

    def extract_one(self, image: Image.Image) -> np.ndarray:
        small = image.convert("RGB")
        small.thumbnail((self.size, self.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        canvas = Image.new("RGB", (self.size, self.size), PAD_COLOR)
        canvas.paste(small, ((self.size - small.width) // 2, (self.size - small.height) // 2))
        return np.asarray(canvas, dtype=np.uint8)

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self.extract_one(image) for image in images])
