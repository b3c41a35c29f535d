"""Indexing throughput: the full pipeline vs the bare backbone on pre-decoded tensors.

    python benchmarks/bench_index.py --images 256 --megapixels 2

Writes a folder of real-size JPEGs made from the bundled sample photos (crops and rescales, so
every file differs), then measures, in one process, side by side and with the model already
loaded:
  pipeline  ImageIndex.update() on a fresh index: scan, decode, every feature, Zarr + SQLite
  backbone  EmbeddingFeature.embed() alone on the same images already decoded to input tensors
and prints images/s of each and their ratio (goal: pipeline >= 0.8x backbone). Median of repeats.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.features.embeddings import EmbeddingFeature
from imrec_widgets.imageio import load_rgb
from imrec_widgets.indexer import DECODE_MIN_SIDE
from imrec_widgets.samples import sample_photos


def make_folder(folder: Path, count: int, megapixels: float, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    photos = [image for _, image in sample_photos()]
    width = int(np.sqrt(megapixels * 1e6 * 4 / 3))
    height = int(width * 3 / 4)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        left, top = rng.integers(0, w // 4 + 1), rng.integers(0, h // 4 + 1)
        crop = photo.crop((left, top, left + 3 * w // 4, top + 3 * h // 4))
        path = folder / f"{i // 100:03d}" / f"img_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_index_"))
    try:
        folder = work / "photos"
        paths = make_folder(folder, args.images, args.megapixels)
        model = EmbeddingFeature(backbone=args.backbone)
        tensors = np.stack([model.prepare(load_rgb(p, min_side=DECODE_MIN_SIDE)) for p in paths])
        model.embed(tensors[:8])  # load the model once, as the index's own instance will be

        backbone_rates, pipeline_rates = [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            for start in range(0, len(tensors), args.batch_size):
                model.embed(tensors[start : start + args.batch_size])
            backbone_rates.append(len(tensors) / (time.perf_counter() - started))

            index = ImageIndex.open(folder, index_dir=work / f"index{repeat}", backbone=args.backbone)
            report = index.update(progress=False, workers=args.workers, batch_size=args.batch_size)
            assert report.new == len(paths) and report.errors == 0
            pipeline_rates.append(report.images_per_second)

        backbone = statistics.median(backbone_rates)
        pipeline = statistics.median(pipeline_rates)
        print(f"{args.images} JPEGs of {args.megapixels:g} MP, backbone {args.backbone}, "
              f"batch {args.batch_size}, {os.cpu_count()} cores, median of {args.repeats}")
        print(f"{'':<10}{'images/s':>10}")
        print(f"{'backbone':<10}{backbone:>10.1f}")
        print(f"{'pipeline':<10}{pipeline:>10.1f}")
        print(f"ratio pipeline/backbone: {pipeline / backbone:.2f} (goal >= 0.80)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
