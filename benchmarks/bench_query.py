"""End-to-end ``ImageIndex.search`` latency on a large synthetic index, split into its parts.

    python benchmarks/bench_query.py --rows 100000

Builds an index of N synthetic rows (random 1280-d embeddings, 64-bit hashes; catalog rows with
made-up paths) directly through the catalog and store, then times, median over repeats:
  search(path, embedding)  the whole call for a real photo file: decode + model + top-k + paths
  model forward            the same photo through the backbone alone
  top-k kernel             search.topk on the in-memory matrix alone (exact: reads every row;
                           one BLAS thread, as inside search(path), see searcher.py)
  search(id, mode)         "more like this" by id: no model at all
and prints the share of the embedding search spent in the model forward pass. Then, per
installed engine, the cold start in fresh processes (the ONNX graph already cached):
  cold CLI                 wall time of `imrec search photo --root R --engine E`
  cold first search        a fresh `python -c`: import + ImageIndex.open + the first search(path)
  warm search              search(path) again in a warm process
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from imrec_widgets import ImageIndex, search
from imrec_widgets.features import engines
from imrec_widgets.imageio import load_rgb
from imrec_widgets.indexer import DECODE_MIN_SIDE
from imrec_widgets.searcher import _blas_single_thread
from imrec_widgets.synthetic import write_feature_index


def build(index_dir: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    catalog, _store = write_feature_index(
        index_dir,
        rows,
        {
            "embedding": lambda ids: rng.random((ids.size, 1280), dtype=np.float32),
            "dhash": lambda ids: rng.integers(0, 256, (ids.size, 8), dtype=np.uint8),
        },
    )
    catalog.close()


def median_ms(func, repeats: int) -> float:
    func()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


COLD_SCRIPT = """
import sys, time
started = time.perf_counter()
from imrec_widgets import ImageIndex
index = ImageIndex.open(sys.argv[1], index_dir=sys.argv[2], engine=sys.argv[4])
index.search(sys.argv[3], mode="embedding", k=10)
print(time.perf_counter() - started, "torch" in sys.modules)
"""


def cold_starts(work: Path, photo: Path, engine: str, repeats: int) -> tuple[float, float, bool]:
    """Median wall seconds of a fresh CLI search and of a fresh process's first search()."""
    cli = [
        sys.executable,
        "-m",
        "imrec_widgets.cli",
        "search",
        str(photo),
        "--root",
        str(work),
        "--index-dir",
        str(work / "index"),
        "--engine",
        engine,
    ]
    script = [sys.executable, "-c", COLD_SCRIPT, str(work), str(work / "index"), str(photo), engine]
    subprocess.run(cli, check=True, capture_output=True)  # exports the graph if not cached yet
    cli_times, first_times, torch_loaded = [], [], False
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True)
        cli_times.append(time.perf_counter() - started)
        seconds, loaded = subprocess.run(
            script, check=True, capture_output=True, text=True
        ).stdout.split()
        first_times.append(float(seconds))
        torch_loaded |= loaded == "True"
    return statistics.median(cli_times), statistics.median(first_times), torch_loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--cold-repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_query_"))
    try:
        started = time.perf_counter()
        build(work / "index", args.rows)
        print(f"built a {args.rows:,}-row synthetic index in {time.perf_counter() - started:.0f} s")
        photo = work / "coffee.jpg"
        Image.fromarray(data.coffee()).save(photo)
        index = ImageIndex.open(work, index_dir=work / "index")
        model = index.feature_extractors()["embedding"]
        tensor = model.prepare(load_rgb(photo, min_side=DECODE_MIN_SIDE))[None]

        whole = median_ms(lambda: index.search(photo, mode="embedding", k=10), args.repeats)
        forward = median_ms(lambda: model.embed(tensor), args.repeats)
        prepared = index.searcher.prepared("embedding", "cosine")
        vector = model.embed(tensor)
        with _blas_single_thread():  # as search(path) runs it, right after the model
            kernel = median_ms(lambda: search.topk(vector, prepared, "cosine", 10), args.repeats)
        by_id = median_ms(lambda: index.search(123, mode="embedding", k=10), args.repeats)
        by_hash = median_ms(lambda: index.search(123, mode="dhash", k=10), args.repeats)
        print(f"{'what':<32}{'ms (p50)':>10}")
        print(f"{'search(path) embedding/cosine':<32}{whole:>10.1f}")
        print(f"{'  model forward alone':<32}{forward:>10.1f}")
        print(f"{'  top-k kernel alone':<32}{kernel:>10.1f}")
        print(f"{'  decode + overhead (rest)':<32}{whole - forward - kernel:>10.1f}")
        print(f"{'search(id) embedding/cosine':<32}{by_id:>10.1f}")
        print(f"{'search(id) dhash/hamming':<32}{by_hash:>10.1f}")
        print(
            f"model share of search(path): {forward / whole:.0%}; top-k share {kernel / whole:.0%}"
        )
        print(f"(engine above: {model.engine_used})")

        print(
            f"\ncold start, median of {args.cold_repeats} fresh processes ({os.cpu_count()} cores)"
        )
        print(f"{'engine':<12}{'CLI s':>8}{'1st search s':>14}{'warm ms':>9}{'torch loaded':>14}")
        for engine in [e for e in engines.ENGINES[1:] if engines.installed(e)]:
            cli, first, loaded = cold_starts(work, photo, engine, args.cold_repeats)
            warm_index = ImageIndex.open(work, index_dir=work / "index", engine=engine)
            warm = median_ms(
                lambda idx=warm_index: idx.search(photo, mode="embedding", k=10), args.repeats
            )
            print(f"{engine:<12}{cli:>8.2f}{first:>14.2f}{warm:>9.1f}{loaded!s:>14}")
        print("goals: CLI <= 1.5 s and first search <= 1.5 s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
