"""Retrieval quality of every search mode on real labelled images: ``imrec evaluate`` at scale.

Run: ``python benchmarks/bench_quality.py [--datasets digits,fashion-mnist] [--limit 2000] [-k 10]
[--weights embedding=0.5,ahash=0.5] [--folder DIR]`` (with ``--folder``, images and index are
kept and a rerun only evaluates).

Datasets, written as PNG files in one sub-folder per label, then indexed and evaluated:

* ``digits``: scikit-learn's ``load_digits`` (1797 handwritten 8x8 digits, 10 classes), grey
  levels 0-16 stretched to 0-255 and upscaled to 64x64.
* ``fashion-mnist``: Zalando's Fashion-MNIST test set (10 000 28x28 clothing images, 10 classes)
  from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``),
  upscaled to 64x64; left out with a note when the package is not installed.

A seeded random subset of ``--limit`` images is used from each. Every labelled image queries
the others (itself left out): precision@k, recall@k, mAP@k and ms per query (one
``search_many`` call for all queries, after a warm-up query) per mode and metric, the default
hybrid (0.7 embedding + 0.3 rgb), and a seeded random ranking for reference.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from imrec_widgets import ImageIndex

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
SIDE = 64


def digits(limit: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``(images uint8 N x 8 x 8, labels)`` of a seeded subset of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pick = np.sort(np.random.default_rng(seed).permutation(len(bunch.target))[:limit])
    images = np.clip(bunch.images[pick] * (255 / 16), 0, 255).astype(np.uint8)
    return images, [str(t) for t in bunch.target[pick]]


def _idx_array(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): big-endian dims after a magic number, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(limit: int, seed: int) -> tuple[np.ndarray, list[str]] | None:
    """``(images uint8 N x 28 x 28, labels)`` of a seeded subset of the Fashion-MNIST test set."""
    images_file = FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    labels_file = FASHION_MNIST / "t10k-labels-idx1-ubyte.gz"
    if not images_file.is_file() or not labels_file.is_file():
        return None
    images, labels = _idx_array(images_file), _idx_array(labels_file)
    pick = np.sort(np.random.default_rng(seed).permutation(len(labels))[:limit])
    return images[pick], [FASHION_LABELS[t] for t in labels[pick]]


def write_folder(folder: Path, images: np.ndarray, labels: list[str]) -> None:
    """``folder/<label>/<n>.png``, each image upscaled to ``SIDE`` x ``SIDE`` (bilinear)."""
    for number, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / label
        target.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels, mode="L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        image.convert("RGB").save(target / f"{number:05d}.png")


def parse_weights(text: str | None) -> dict[str, float] | None:
    """``embedding=0.5,ahash=0.5`` -> ``{"embedding": 0.5, "ahash": 0.5}``."""
    if not text:
        return None
    return {
        mode: float(weight) for mode, _, weight in (part.partition("=") for part in text.split(","))
    }


def run(
    name: str, folder: Path, k: int, modes: list[str] | None, weights: dict[str, float] | None
) -> None:
    index = ImageIndex.open(folder)
    started = time.perf_counter()
    report = index.update(progress=False)
    print(f"{name}: {report} ({time.perf_counter() - started:.0f} s)")
    results = index.evaluate(k=k, modes=modes, weights=weights)
    print(results.to_text())
    best = results.best()
    random = next(row for row in results if row["mode"] == "random")
    print(
        f"best mAP@{k}: {best['mode']}/{best['metric']} {best['mAP']:.3f}, "
        f"{best['mAP'] / max(random['mAP'], 1e-9):.1f}x the random ranking's {random['mAP']:.3f}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", default="digits,fashion-mnist", help="comma-separated: digits, fashion-mnist"
    )
    parser.add_argument(
        "--limit", type=int, default=2000, help="images per dataset (seeded random subset)"
    )
    parser.add_argument("-k", type=int, default=10, help="results per query")
    parser.add_argument(
        "--modes", default=None, help="comma-separated modes (default: all, hybrid, random)"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="hybrid weights, e.g. embedding=0.5,ahash=0.5 (default embedding=0.7,rgb=0.3)",
    )
    parser.add_argument(
        "--folder", default=None, help="where to write the images (default: a temporary folder)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}\n"
    )
    modes = args.modes.split(",") if args.modes else None
    with tempfile.TemporaryDirectory(prefix="imrec-quality-") as scratch:
        base = Path(args.folder).expanduser() if args.folder else Path(scratch)
        for name in args.datasets.split(","):
            if name == "digits":
                data = digits(args.limit, args.seed)
            elif name == "fashion-mnist":
                data = fashion_mnist(args.limit, args.seed)
                if data is None:
                    print(
                        f"fashion-mnist: not found under {FASHION_MNIST}; `apt-get install dataset-fashion-mnist`\n"
                    )
                    continue
            else:
                parser.error(f"unknown dataset {name!r}; choose digits or fashion-mnist")
            folder = base / name
            if not (folder / ".imrec").exists():
                write_folder(folder, *data)
            run(
                f"{name} ({len(data[1])} images, {len(set(data[1]))} labels)",
                folder,
                args.k,
                modes,
                parse_weights(args.weights),
            )


if __name__ == "__main__":
    main()
