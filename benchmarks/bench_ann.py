"""ANN candidates for 1M+ rows measured on the same real-like data: faiss HNSW and usearch HNSW.

Run: ``python benchmarks/bench_ann.py [--rows 100000] [--queries 200]``.

Data as ``bench_search.py --compact`` (Fashion-MNIST through a fixed random ReLU projection to
1280-d, tiled with per-copy perturbations). For each library: build time (all cores), size of
the saved index on disk, recall@10 against the exact cosine top-10 (``search.topk``) and p50
single-query latency. Nothing here is used by the package yet: it is the measurement the choice
of library for ``build_ann`` rests on.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import RealLike

from imrec_widgets import search

K = 10


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def p50_ms(fn, queries: np.ndarray) -> float:
    for q in queries[:5]:
        fn(q)
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    data = RealLike()
    rng = np.random.default_rng(1)
    vectors = np.concatenate(
        [
            data.embed(np.arange(s, min(args.rows, s + 50_000)), rng)
            for s in range(0, args.rows, 50_000)
        ]
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = data.embed(rng.choice(args.rows, args.queries, replace=False), rng)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact, _ = search.topk(queries, vectors, "cosine", K)
    print(
        f"{args.rows:,} x {vectors.shape[1]} ({data.source}), {args.queries} queries, k={K}, {os.cpu_count()} CPUs"
    )
    rows = []
    folder = Path(tempfile.mkdtemp())

    import usearch.index

    for dtype in ("i8", "f16"):
        start = time.perf_counter()
        index = usearch.index.Index(
            ndim=vectors.shape[1],
            metric="cos",
            dtype=dtype,
            connectivity=16,
            expansion_add=128,
            expansion_search=64,
        )
        index.add(np.arange(args.rows), vectors)
        built = time.perf_counter() - start
        index.save(str(folder / f"usearch-{dtype}.usearch"))
        size = (folder / f"usearch-{dtype}.usearch").stat().st_size
        found = np.stack([index.search(q, K).keys for q in queries])
        rows.append(
            (
                f"usearch HNSW {dtype} M=16",
                built,
                size,
                recall(found, exact),
                p50_ms(lambda q, index=index: index.search(q, K), queries),
            )
        )
        print(rows[-1], flush=True)

    import faiss

    start = time.perf_counter()
    index = faiss.IndexHNSWSQ(
        vectors.shape[1], faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT
    )
    index.hnsw.efConstruction = 128
    index.train(vectors[:50_000])
    index.add(vectors)
    built = time.perf_counter() - start
    index.hnsw.efSearch = 64
    faiss.write_index(index, str(folder / "faiss-hnsw-sq8.index"))
    size = (folder / "faiss-hnsw-sq8.index").stat().st_size
    found = index.search(queries, K)[1]
    rows.append(
        (
            "faiss HNSW SQ8 M=16",
            built,
            size,
            recall(found, exact),
            p50_ms(lambda q: index.search(q[None], K), queries),
        )
    )
    print(rows[-1], flush=True)

    print(f"\n{'index':<24} {'build s':>8} {'MiB on disk':>12} {'recall@10':>10} {'p50 ms':>8}")
    for name, built, size, rec, ms in rows:
        print(f"{name:<24} {built:8.1f} {size / 2**20:12.0f} {rec:10.3f} {ms:8.2f}")


if __name__ == "__main__":
    main()
