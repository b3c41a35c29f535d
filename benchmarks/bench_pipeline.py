"""Indexing throughput: a naive seed-style loop vs our pipeline, locally and on a Dask LocalCluster.

    python benchmarks/bench_pipeline.py --images 500 --megapixels 12
    python benchmarks/bench_pipeline.py --images 120            # a run of a few minutes

Writes a folder of real-size JPEGs made from the bundled sample photos (each a different crop of
an upscaled photo, so every file differs), then measures on the same files, same features
(ResNet18 512-d embedding, 8x8x8 RGB histogram, 1024-bit ahash and dhash):

  (a) naive   the seed's approach, written here: each file fully decoded (no draft mode), one
              image at a time through ResNet18 at batch size 1, histogram and
              imagehash.average_hash/dhash(hash_size=32) per image, results appended to a list
              that is pickled every 2,000 images;
  (b) local   ImageIndex.update() on a fresh index: scan, draft decode in worker processes ahead
              of the batched model, every feature (thumbnails too), Zarr + SQLite;
  (c) dask    the same update(client=...) on a LocalCluster of single-threaded worker processes.

We are offline: ResNet18 has RANDOM weights (seeded), saved to a temporary file and passed as
``weights=``; speed does not depend on the weights. The model is loaded before timing in every
case (the Dask workers are warmed up on a two-image folder). images/s counts every file.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imrec_widgets import ImageIndex
from imrec_widgets.samples import sample_photos

BINS = 8
HASH_SIZE = 32
PICKLE_EVERY = 2000


def make_folder(
    folder: Path, count: int, megapixels: float, grain: float = 6.0, seed: int = 0
) -> list[Path]:
    """``count`` JPEGs of about ``megapixels`` (4:3), each a different crop of a sample photo.

    Upscaled photos are smooth and compress far better than a camera's; ``grain`` (the standard
    deviation of added Gaussian noise, in levels) brings file sizes closer to real photos.
    """
    rng = np.random.default_rng(seed)
    width = int(np.sqrt(megapixels * 1e6 * 4 / 3))
    height = int(width * 3 / 4)
    margin = 1.15
    pad = 64
    noise = (
        rng.normal(0, grain, (height + pad, width + pad, 3)) if grain > 0 else np.zeros((1, 1, 3))
    )
    noise = noise.astype(np.int16)
    big = [
        photo.resize((int(width * margin), int(height * margin)), Image.Resampling.BICUBIC)
        for _, photo in sample_photos()
    ]
    paths = []
    for i in range(count):
        photo = big[i % len(big)]
        left = int(rng.integers(0, photo.width - width + 1))
        top = int(rng.integers(0, photo.height - height + 1))
        path = folder / f"{i // 100:03d}" / f"img_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.asarray(photo.crop((left, top, left + width, top + height)), dtype=np.int16)
        if grain > 0:
            dy, dx = rng.integers(0, pad, size=2)
            pixels += noise[dy : dy + height, dx : dx + width]
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def random_resnet18(path: Path) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def naive_baseline(paths: list[Path], weights: Path, out: Path) -> float:
    """The seed's loop; returns images/s (model loaded before the clock starts)."""
    import imagehash
    import torch
    import torchvision
    from torchvision import transforms

    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.fc = torch.nn.Identity()
    model.eval()
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))  # warm-up, as (b) and (c) get
    started = time.perf_counter()
    results = []
    for n, path in enumerate(paths, 1):
        image = Image.open(path).convert("RGB")
        with torch.no_grad():
            embedding = model(preprocess(image).unsqueeze(0))[0].numpy()
        pixels = np.asarray(image).reshape(-1, 3) >> 5
        codes = (pixels[:, 0].astype(np.int32) * BINS + pixels[:, 1]) * BINS + pixels[:, 2]
        histogram = np.bincount(codes, minlength=BINS**3).astype(np.float32)
        results.append(
            {
                "path": str(path),
                "embedding": embedding,
                "histogram": histogram / np.linalg.norm(histogram),
                "ahash": imagehash.average_hash(image, hash_size=HASH_SIZE).hash,
                "dhash": imagehash.dhash(image, hash_size=HASH_SIZE).hash,
            }
        )
        if n % PICKLE_EVERY == 0:
            out.write_bytes(pickle.dumps(results))
    out.write_bytes(pickle.dumps(results))
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument(
        "--grain", type=float, default=6.0, help="noise added to each photo (levels, default 6)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: the indexer's, per engine)",
    )
    parser.add_argument(
        "--dask-workers", type=int, default=2, help="LocalCluster worker processes (default 2)"
    )
    args = parser.parse_args()

    settings = {"backbone": "resnet18", "bins": BINS, "hash_size": HASH_SIZE}
    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        started = time.perf_counter()
        folder = work / "photos"
        paths = make_folder(folder, args.images, args.megapixels, args.grain)
        size = Image.open(paths[0]).size
        mean_mb = np.mean([p.stat().st_size for p in paths]) / 1e6
        print(
            f"wrote {len(paths)} JPEGs of {size[0]}x{size[1]} ({mean_mb:.1f} MB each) in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        weights = random_resnet18(work / "resnet18-random.pth")
        settings["weights"] = str(weights)

        naive = naive_baseline(paths, weights, work / "naive.pkl")
        print(f"(a) naive: {naive:.2f} images/s", flush=True)

        from imrec_widgets.features.embeddings import EmbeddingFeature

        EmbeddingFeature(backbone="resnet18", weights=weights).embed(
            np.zeros((1, 224, 224, 3), np.uint8)
        )
        index = ImageIndex.open(folder, index_dir=work / "local", **settings)
        report = index.update(progress=False, workers=args.workers, batch_size=args.batch_size)
        assert report.processed == len(paths) and report.errors == 0, report
        local = report.images_per_second
        print(f"(b) local: {local:.2f} images/s", flush=True)

        from dask.distributed import Client, LocalCluster

        warm = work / "warm"
        warm.mkdir()
        for path in paths[:2]:
            shutil.copy(path, warm / path.name)
        with (
            LocalCluster(
                n_workers=args.dask_workers,
                processes=True,
                threads_per_worker=1,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            client.wait_for_workers(args.dask_workers, timeout=300)
            ImageIndex.open(warm, **settings).update(progress=False, client=client, batch_size=1)
            index = ImageIndex.open(folder, index_dir=work / "dask", **settings)
            report = index.update(progress=False, client=client, batch_size=args.batch_size)
        assert report.processed == len(paths) and report.errors == 0, report
        dask = report.images_per_second
        print(f"(c) dask:  {dask:.2f} images/s", flush=True)
        same = ImageIndex.open(folder, index_dir=work / "local")
        for name in ("rgb", "ahash", "dhash", "thumb"):
            assert np.array_equal(index.features(name), same.features(name)), name

        load = os.getloadavg()[0]
        print()
        print(
            f"{len(paths)} JPEGs of {args.megapixels:g} MP; resnet18 with RANDOM weights (offline, "
            f"saved and passed as weights=), {BINS}x{BINS}x{BINS} histograms, {HASH_SIZE * HASH_SIZE}-bit "
            f"ahash/dhash; batch {args.batch_size}"
        )
        print(
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"load average {load:.1f} at the end; model loaded and warmed up before timing in every row"
        )
        print(f"{'':<44}{'images/s':>10}{'x naive':>10}")
        rows = [
            ("(a) naive seed-style loop", naive),
            ("(b) local pipeline", local),
            (f"(c) Dask LocalCluster, {args.dask_workers} workers x 1 thread", dask),
        ]
        for label, rate in rows:
            print(f"{label:<44}{rate:>10.2f}{rate / naive:>10.2f}")
        print(
            f"dask / local: {dask / local:.2f}; goal local >= 4x naive: "
            f"{'met' if local >= 4 * naive else 'NOT met'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
