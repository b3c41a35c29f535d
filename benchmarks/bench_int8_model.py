"""An int8 EfficientNet-Lite0 on ONNX Runtime: faster, and is retrieval as good? Measured, not kept
unless both hold.

    python benchmarks/bench_int8_model.py [--limit 2000]

The int8 graph is the one ``model_precision="int8"`` runs: the package's float graph quantized by
``engines.quantize_int8`` (ONNX Runtime's static QDQ quantization, int8 weights per channel,
uint8 activations, calibrated on the bundled photos and some edited copies: no Fashion-MNIST or
digits image; the photo copy groups below are other edits of the same photos). Then, side by
side in one process:

  speed    images/s of the float and the int8 graph on the same pre-processed batches (batch 32),
           on 1 thread and on all cores, median of 3
  quality  precision@10 of cosine search over the embeddings of each graph, every image
           querying the others (itself left out): Fashion-MNIST test images (Debian's
           dataset-fashion-mnist; skipped without it) and scikit-learn's digits, upscaled; and
           the tests' copy groups of the photos (6 copies each: P@10 is at most 0.5 there)

The issue's rule: keep int8 only if P@10 stays within 0.01 of float32 on each dataset.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imrec_widgets import search
from imrec_widgets.features import engines
from imrec_widgets.features.embeddings import EmbeddingFeature

FASHION = Path("/usr/share/datasets/fashion-mnist")
BATCH = 32


def idx_array(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion(split: str, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = "t10k" if split == "test" else "train"
    images_path = FASHION / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.exists():
        return None
    images = idx_array(images_path)
    labels = idx_array(FASHION / f"{prefix}-labels-idx1-ubyte.gz")
    pick = np.random.default_rng(seed).choice(len(images), min(limit, len(images)), replace=False)
    return images[pick], labels[pick]


def digits(limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pick = np.random.default_rng(seed).choice(
        len(bunch.images), min(limit, len(bunch.images)), replace=False
    )
    return (bunch.images[pick] * (255 / 16)).astype(np.uint8), bunch.target[pick]


def tensors(model: EmbeddingFeature, grey: np.ndarray) -> np.ndarray:
    """Grey images as the model's uint8 input (upscaled, resized and cropped as indexing does)."""
    return np.stack(
        [model.prepare(Image.fromarray(g).convert("RGB").resize((64, 64))) for g in grey]
    )


def copy_groups(model: EmbeddingFeature, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """The tests' 12 photos x 6 copies (crop, half size, JPEG q30, colour, dark...), labelled by photo."""
    from imrec_widgets.imageio import load_rgb

    from _tests import load

    write_labeled_photos = load("labeled_photos.py").write_labeled_photos
    written = write_labeled_photos(work / "copies")
    paths = [(label, path) for label, group in written.items() for path in group]
    batch = np.stack([model.prepare(load_rgb(path)) for _, path in paths])
    names = sorted(written)
    return batch, np.array([names.index(label) for label, _ in paths])


def precision_at_10(vectors: np.ndarray, labels: np.ndarray) -> float:
    ids, _ = search.topk(vectors, vectors, "cosine", 11)
    neighbours = ids[:, 1:]  # itself first
    return float(np.mean(labels[neighbours] == labels[:, None]))


def rate(session, batch: np.ndarray, repeats: int = 3) -> float:
    session(batch[:BATCH], False)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(batch), BATCH):
            session(batch[start : start + BATCH], False)
        times.append(time.perf_counter() - started)
    return len(batch) / statistics.median(times)


def embed(session, batch: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [session(batch[s : s + BATCH], False) for s in range(0, len(batch), BATCH)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()

    model = EmbeddingFeature(engine="onnxruntime")
    int8 = EmbeddingFeature(engine="onnxruntime", precision="int8")
    graph = model.graph_file()  # exports the float graph if it is not cached
    quantized = engines.int8_graph_path(graph)
    calibration = engines.calibration_batch(model.prepare)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:  # timed afresh, the cached file untouched
        engines.quantize_int8(graph, calibration, Path(scratch) / quantized.name)
    print(
        f"quantized in {time.perf_counter() - started:.0f} s on {len(calibration)} calibration "
        "images (the bundled photos, their edited and grey copies)"
    )
    assert int8.graph_file() == quantized  # the one the package runs (made now if not cached)
    print(
        f"graph size: float {graph.stat().st_size / 2**20:.1f} MiB, int8 {quantized.stat().st_size / 2**20:.1f} MiB"
    )
    work = Path(tempfile.mkdtemp(prefix="bench_int8_"))

    sessions = {
        threads: {
            "float32": engines.OnnxRuntimeSession(graph, threads),
            "int8": engines.OnnxRuntimeSession(quantized, threads),
        }
        for threads in (1, None)
    }
    datasets = {"digits": digits(args.limit, seed=0)}
    test = fashion("test", args.limit, seed=0)
    if test is not None:
        datasets["fashion-mnist"] = test
    inputs = {name: (tensors(model, images), labels) for name, (images, labels) in datasets.items()}
    inputs["photo copies"] = copy_groups(model, work)
    speed_batch = next(iter(inputs.values()))[0][:256]

    print(
        f"\n{'graph':<8} {'img/s 1 thread':>15} {'img/s all cores':>16} "
        + " ".join(f"{'P@10 ' + n:>20}" for n in inputs)
    )
    results = {}
    for kind in ("float32", "int8"):
        speeds = [rate(sessions[t][kind], speed_batch) for t in (1, None)]
        quality = [precision_at_10(embed(sessions[None][kind], x), y) for x, y in inputs.values()]
        results[kind] = (speeds, quality)
        print(
            f"{kind:<8} {speeds[0]:>15.1f} {speeds[1]:>16.1f} "
            + " ".join(f"{q:>20.4f}" for q in quality)
        )
    (f_speed, f_quality), (i_speed, i_quality) = results["float32"], results["int8"]
    drops = [f - i for f, i in zip(f_quality, i_quality, strict=True)]
    same = [
        float(
            np.mean(
                np.sum(
                    embed(sessions[None]["float32"], x[:200])
                    * embed(sessions[None]["int8"], x[:200]),
                    axis=1,
                )
                / (
                    np.linalg.norm(embed(sessions[None]["float32"], x[:200]), axis=1)
                    * np.linalg.norm(embed(sessions[None]["int8"], x[:200]), axis=1)
                )
            )
        )
        for x, _ in inputs.values()
    ]
    print(
        f"\nint8 / float32 speed: {i_speed[0] / f_speed[0]:.2f}x (1 thread), {i_speed[1] / f_speed[1]:.2f}x (all cores)"
    )
    print("P@10 drop: " + ", ".join(f"{n} {d:+.4f}" for n, d in zip(inputs, drops, strict=True)))
    print(
        "mean cosine(float32, int8) of the same image: "
        + ", ".join(f"{n} {c:.4f}" for n, c in zip(inputs, same, strict=True))
    )
    keep = all(d <= 0.01 for d in drops) and i_speed[0] > f_speed[0]
    print(f"keep int8 (P@10 within 0.01 on every dataset and faster): {'yes' if keep else 'no'}")


if __name__ == "__main__":
    main()
