"""Indexing throughput per embedding engine: the full pipeline vs the bare backbone.

    python benchmarks/bench_index.py --images 256 --megapixels 2

Writes a folder of real-size JPEGs made from the bundled sample photos (crops and rescales, so
every file differs), then measures, in one process, side by side for every installed engine
(torch, onnxruntime, openvino) and for onnxruntime-int8 (``model_precision="int8"``: a quantized
model, other features), each with its model already loaded, repeats interleaved:
  backbone     EmbeddingFeature.embed() alone on the images already decoded to input tensors,
               on all cores (engine default threads) and on one thread
  pipeline     ImageIndex.update() on a fresh index: scan, decode, every feature, Zarr + SQLite
and prints images/s (median of repeats) and ratios: pipeline / torch pipeline (goal >= 2.5) and
pipeline / own backbone on all cores (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.errors import EngineFallbackWarning
from imrec_widgets.features import engines
from imrec_widgets.features.embeddings import EmbeddingFeature
from imrec_widgets.imageio import load_rgb
from imrec_widgets.indexer import DECODE_MIN_SIDE, default_workers
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


INT8 = "onnxruntime-int8"
"""The int8 model (``model_precision="int8"``: other features, so not one of the engines)."""


def engine_settings(name: str, setting: str = "precision") -> dict[str, str]:
    """``engine=`` (and the precision, under the name ``setting``) for an engine row."""
    if name == INT8:
        return {"engine": "onnxruntime", setting: "int8"}
    return {"engine": name}


def backbone_rate(model: EmbeddingFeature, tensors: np.ndarray, batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(tensors), batch_size):
        model.embed(tensors[start : start + batch_size])
    return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=None,
        help="decode worker counts to compare (default: the indexer's default)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        default=None,
        help="default: every installed engine, and onnxruntime-int8 (model_precision='int8')",
    )
    args = parser.parse_args()
    names = args.engines or [e for e in engines.ENGINES[1:] if engines.installed(e)]
    if args.engines is None and "onnxruntime" in names:
        names.append(INT8)
    # None: the indexer's default for the engine (onnxruntime: a worker per core, each decoding
    # and embedding; the others: cores - 1 decoding workers, the model on the core left)
    worker_counts: list[int | None] = [None, *(args.workers or [])]

    work = Path(tempfile.mkdtemp(prefix="bench_index_"))
    try:
        folder = work / "photos"
        paths = make_folder(folder, args.images, args.megapixels)
        models = {
            name: EmbeddingFeature(backbone=args.backbone, **engine_settings(name))
            for name in names
        }
        tensors = np.stack(
            [models[names[0]].prepare(load_rgb(p, min_side=DECODE_MIN_SIDE)) for p in paths]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", EngineFallbackWarning)
            for model in models.values():  # load (and export) once, as the index's instance will
                model.embed(tensors[:8])
                with model.using_threads(1):
                    model.embed(tensors[:8])

        pipes = [f"pipeline {'default' if w is None else f'w{w}'}" for w in worker_counts]
        rates: dict[str, dict[str, list[float]]] = {
            n: {"all": [], "pipe_t": [], **{p: [] for p in pipes}} for n in names
        }
        for repeat in range(args.repeats):
            for name, model in models.items():
                rates[name]["all"].append(backbone_rate(model, tensors, args.batch_size))
                with model.using_threads(1):
                    rates[name]["pipe_t"].append(backbone_rate(model, tensors, args.batch_size))
                for count, pipe in zip(worker_counts, pipes, strict=True):
                    where = work / f"index-{name}-{repeat}-{count}"
                    index = ImageIndex.open(
                        folder,
                        index_dir=where,
                        backbone=args.backbone,
                        **engine_settings(name, setting="model_precision"),
                    )
                    report = index.update(progress=False, workers=count, batch_size=args.batch_size)
                    assert report.new == len(paths) and report.errors == 0
                    rates[name][pipe].append(report.images_per_second)
                    shutil.rmtree(where)

        med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rates.items()}
        torch_pipeline = med.get("torch", {}).get(pipes[0])
        print(
            f"{args.images} JPEGs of {args.megapixels:g} MP, backbone {args.backbone}, batch "
            f"{args.batch_size}, {os.cpu_count()} cores, median of {args.repeats}; images/s. "
            f"default: the indexer's worker processes for the engine (onnxruntime: "
            f"{default_workers(models.get('onnxruntime'))}, each decoding and embedding; torch: "
            f"{default_workers(models.get('torch', EmbeddingFeature(engine='torch')))} decoding, the "
            "model on the cores left); wN: N workers; bb: backbone alone on all cores / 1 thread"
        )
        head = f"{'engine':<17}{'bb all':>8}{'bb 1t':>8}"
        head += "".join(f"{p.split()[1]:>8}{'/bb':>6}{'/torch':>7}" for p in pipes)
        print(head)
        for name, m in med.items():
            line = f"{name:<17}{m['all']:>8.1f}{m['pipe_t']:>8.1f}"
            for pipe in pipes:
                ratio = f"{m[pipe] / torch_pipeline:>6.2f}x" if torch_pipeline else f"{'-':>7}"
                line += f"{m[pipe]:>8.1f}{m[pipe] / max(m['all'], m['pipe_t']):>6.2f}{ratio}"
            print(line)
        print(
            "goals: pipeline >= 2.5x torch's pipeline (same run); pipeline >= 0.8x its own "
            "backbone (the faster of all cores / the pipeline's threads)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
