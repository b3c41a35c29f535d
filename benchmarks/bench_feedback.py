"""Relevance feedback: how much a round of 👍/👎 improves a search, per method, and what it costs.

Run: ``python benchmarks/bench_feedback.py [--datasets digits,fashion-mnist] [--limit 2000]
[--queries 200] [--methods mean,rocchio,logistic,svm] [--rows 100000] [--folder DIR]``
(with ``--folder``, images and indexes are kept and a rerun only searches).

Quality: the labelled sets of ``bench_quality.py`` (scikit-learn's digits; Fashion-MNIST's test
set from Debian's ``dataset-fashion-mnist``), indexed with the default embedding. For each of
``--queries`` seeded random images: the plain search, then rounds in which a simulated user
marks each of the top 20 results by its true label (same label as the query: relevant, else
not) and refines: ``idx.search([query and every relevant one], negatives=[every other one])``.
The marked images are left out of a refined search's results (they are the query or its
negatives), so a round's P@10 counts only images the user has not seen yet. ``mean`` is the
relevant images' mean with no negatives (the plain search of several images), the baseline.

Latency: a synthetic index of ``--rows`` 1280-d embeddings (random rows around 100 centres),
one plain search by id against a refine with 8 relevant and 12 not relevant ids, median of 20
after a warm-up, per method.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import FASHION_MNIST, digits, fashion_mnist, write_folder

from imrec_widgets import ImageIndex
from imrec_widgets.evaluation import folder_labels
from imrec_widgets.feedback import METHODS

MARKED = 20
ROUNDS = 2
K = 10


def refine_rounds(
    index: ImageIndex, labels: dict[int, str], queries: np.ndarray, method: str
) -> list[float]:
    """Mean P@10 of the plain search and after each round, over ``queries``."""
    precision = np.zeros((len(queries), ROUNDS + 1))
    if method != "mean":
        index.searcher.feedback_method = method
    for row, query in enumerate(queries.tolist()):
        label = labels[query]
        results = index.search(query, k=MARKED)
        positives, negatives = [query], []
        precision[row, 0] = np.mean([labels[h.id] == label for h in results[:K]])
        for round_ in range(1, ROUNDS + 1):
            for hit in results[:MARKED]:
                (positives if labels[hit.id] == label else negatives).append(hit.id)
            if method == "mean":
                results = index.search(positives, k=MARKED + len(negatives))
                results = [h for h in results if h.id not in set(negatives)]
            else:
                results = index.search(positives, negatives=negatives, k=MARKED)
            precision[row, round_] = np.mean([labels[h.id] == label for h in results[:K]])
    return precision.mean(axis=0).tolist()


def quality(name: str, folder: Path, methods: list[str], count: int) -> None:
    index = ImageIndex.open(folder)
    report = index.update(progress=False)
    if report.new:
        print(f"{name}: {report}")
    labels = folder_labels(index)
    ids = index.ids()
    queries = np.sort(
        np.random.default_rng(0).choice(ids, size=min(count, ids.size), replace=False)
    )
    print(f"{name}: {ids.size} images, {len(set(labels.values()))} labels, {queries.size} queries")
    print(
        f"{'method':<10}{'plain P@10':>12}{'round 1':>10}{'round 2':>10}{'gain':>8}{'ms/refine':>11}"
    )
    for method in methods:
        started = time.perf_counter()
        rounds = refine_rounds(index, labels, queries, method)
        ms = (time.perf_counter() - started) * 1000 / (queries.size * (ROUNDS + 1))
        print(
            f"{method:<10}{rounds[0]:>12.3f}{rounds[1]:>10.3f}{rounds[2]:>10.3f}"
            f"{rounds[2] - rounds[0]:>+8.3f}{ms:>11.1f}"
        )
    print()


def latency(rows: int, methods: list[str], folder: Path) -> None:
    from imrec_widgets.synthetic import write_feature_index

    dim = 1280
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, dim)).astype(np.float32)

    def embeddings(ids: np.ndarray) -> np.ndarray:
        noise = rng.normal(scale=0.8, size=(ids.size, dim)).astype(np.float32)
        return centres[ids % 100] + noise

    index_dir = folder / "synthetic" / ".imrec"
    if not (index_dir / "catalog.sqlite").exists():
        catalog, _store = write_feature_index(
            index_dir, rows, {"embedding": embeddings}, feature_config={"embedding": {"dim": dim}}
        )
        catalog.close()
    index = ImageIndex.open(folder / "synthetic")
    ids = index.ids()
    picked = np.random.default_rng(1).choice(ids, size=20, replace=False).tolist()
    positives, negatives = picked[:8], picked[8:]

    def median_ms(run: object, repeat: int = 20) -> float:
        run()  # type: ignore[operator]
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            run()  # type: ignore[operator]
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    plain = median_ms(lambda: index.search(positives[0], k=20))
    several = median_ms(lambda: index.search(positives, k=20))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"latency at {ids.size:,} rows x {dim}-d (float32, in memory), median of 20:")
    print(f"  load average before: {load}")
    print(f"  plain search by one id        {plain:7.1f} ms")
    print(f"  mean of 8 ids (no negatives)  {several:7.1f} ms")
    for method in methods:
        if method == "mean":
            continue
        index.searcher.feedback_method = method
        refine = median_ms(lambda: index.search(positives, negatives=negatives, k=20))
        print(
            f"  refine, {method:<10} 8 + 12 ids {refine:7.1f} ms ({refine - plain:+.1f} ms over plain)"
        )
    print(f"  load average after: {', '.join(f'{value:.1f}' for value in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--limit", type=int, default=2000, help="images per dataset")
    parser.add_argument("--queries", type=int, default=200, help="queries per dataset")
    parser.add_argument("--methods", default=",".join(("mean", *METHODS)))
    parser.add_argument(
        "--rows", type=int, default=100_000, help="rows of the latency index (0: skip)"
    )
    parser.add_argument("--folder", default=None, help="keep images and indexes here")
    args = parser.parse_args()
    methods = args.methods.split(",")
    print(
        f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}\n"
    )
    with tempfile.TemporaryDirectory(prefix="imrec-feedback-") as scratch:
        base = Path(args.folder).expanduser() if args.folder else Path(scratch)
        for name in filter(None, args.datasets.split(",")):
            folder = base / name
            if not (folder / ".imrec").exists():
                data = digits(args.limit, 0) if name == "digits" else fashion_mnist(args.limit, 0)
                if data is None:
                    print(
                        f"{name}: not found under {FASHION_MNIST}; `apt-get install dataset-fashion-mnist`\n"
                    )
                    continue
                write_folder(folder, *data)
            quality(name, folder, methods, args.queries)
        if args.rows:
            latency(args.rows, methods, base)


if __name__ == "__main__":
    main()
