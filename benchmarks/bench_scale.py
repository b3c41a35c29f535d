"""A million-row index you can rebuild and measure again: open, search, duplicates, the map.

    python benchmarks/bench_scale.py [--rows 1000000] [--workdir DIR] [--rescan-files 100000]

Part 1 writes a synthetic index of ``rows`` images straight through the project's catalog and
store (``synthetic.write_feature_index``, as ``update()`` would store them; no image files):
1280-d real-like embeddings (Fashion-MNIST through a fixed random ReLU projection, tiled with
per-copy noise, as ``bench_search.py --compact``), a 64-d rgb histogram, and 64-bit dhashes with
planted near-duplicate groups (every ``--group-every``-th image has 3 copies 0-2 bits away). The
index is written once per ``--workdir`` and reused. Then, in this process:

  open + len + info      a fresh ``ImageIndex.open``, ``len`` and ``info()``
  search p50             per mode: exact (float32 in memory), compact (int8 + exact re-rank),
                         ANN (faiss IVF-PQ + exact re-rank; its build time, size and recall@10)
  duplicates(dhash)      time, groups found, planted groups recovered
  map                    a UMAP map of rgb (20,000-row fit, every row placed), then 10,000 new
                         rows written and placed into it by ``idx.umap()`` (no refit)
  peak RSS               of this process

Part 2 (``--rescan-files N``, 0 to skip) writes N real tiny image files (Fashion-MNIST PNGs, or
scikit-learn digits without the Debian dataset), indexes them (dhash only) and times an unchanged
rescan (``update()`` when nothing changed): the goal is under 5 s at 100,000 files.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import RealLike, base_images

from imrec_widgets import ImageIndex
from imrec_widgets.compact import Quantizer, training_sample
from imrec_widgets.synthetic import write_feature_index

K = 10
HASH_BYTES = 8


def random_hashes(values: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random 64-bit hash per value (splitmix64), as (N, 8) uint8."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))).view(np.uint8).reshape(-1, HASH_BYTES)


def planted_hashes(ids: np.ndarray, every: int) -> np.ndarray:
    """Random dhashes, but ids ``g*every + 1, 2, 3`` copy the hash of ``g*every`` with 0, 1
    and 2 bits flipped: one planted group of 4 near-duplicates per ``every`` images."""
    copy = ids % every
    planted = (copy >= 1) & (copy <= 3)
    hashes = random_hashes(np.where(planted, ids - copy, ids))
    for flips in (1, 2):
        rows = np.flatnonzero(copy == flips + 1)
        for flip in range(flips):
            bits = (ids[rows] * 7 + flip * 29) % 64
            hashes[rows, bits // 8] ^= (1 << (bits % 8)).astype(np.uint8)
    return hashes


def build(index_dir: Path, rows: int, every: int) -> float:
    """Write the synthetic index once (reused when complete); seconds it took (0 when reused)."""
    done = index_dir / "complete"
    if done.exists() and done.read_text() == f"{rows} {every}":
        return 0.0
    shutil.rmtree(index_dir, ignore_errors=True)
    started = time.perf_counter()
    data = RealLike()
    rng = np.random.default_rng(1)
    config = {
        "embedding": {"backbone": "efficientnet_lite0", "dim": 1280, "input_size": 224},
        "rgb": {"bins": 4},
        "dhash": {"hash_size": 8},
    }

    def show(count: int, total: int) -> None:
        print(f"\r  writing {count:,}/{total:,}", end="", flush=True)

    catalog, store = write_feature_index(
        index_dir,
        rows,
        {
            "embedding": lambda ids: data.embed(ids, rng),
            "rgb": lambda ids: rng.dirichlet(np.ones(64), ids.size).astype(np.float32),
            "dhash": lambda ids: planted_hashes(ids, every),
        },
        settings={"bins": 4},
        feature_config=config,
        chunk=20_000,
        progress=show,
    )
    print()
    ok = np.arange(rows, dtype=np.int64)
    for name in ("embedding", "rgb"):
        Quantizer.train(training_sample(store, name, ok)).save(store, name, config[name])
    catalog.close()
    done.write_text(f"{rows} {every}")
    return time.perf_counter() - started


def p50_ms(func, queries: list) -> float:
    func(queries[0])
    times = []
    for query in queries[1:]:
        started = time.perf_counter()
        func(query)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def timed(func):
    started = time.perf_counter()
    value = func()
    return value, time.perf_counter() - started


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


Row = tuple[str, str, float, float]


def exact_phase(index_dir: Path, ids: list[int]) -> tuple[list[Row], dict[str, list]]:
    idx = ImageIndex.open(index_dir, index_dir=index_dir)
    table, exact_top = [], {}
    for mode in ("embedding", "rgb", "dhash"):

        def run(q, mode=mode):
            return idx.search(q, mode=mode, k=K, exact=True)

        _, first_s = timed(lambda run=run: run(ids[0]))
        table.append((mode, "exact", p50_ms(run, ids), first_s))
        if mode != "dhash":
            exact_top[mode] = [run(q).ids for q in ids[1:]]
    return table, exact_top


def compact_phase(index_dir: Path, ids: list[int], exact_top: dict[str, list]) -> list[Row]:
    idx = ImageIndex.open(index_dir, index_dir=index_dir, vector_dtype="int8")
    table = []
    for mode in ("embedding", "rgb"):

        def run(q, mode=mode):
            return idx.search(q, mode=mode, k=K, exact=True)

        _, first_s = timed(lambda run=run: run(ids[0]))
        ms = p50_ms(run, ids)
        pairs = zip(ids[1:], exact_top[mode], strict=True)
        same = np.mean([list(run(q).ids) == list(e) for q, e in pairs])
        table.append((mode, f"int8 (top-10 same {same:.0%})", ms, first_s))
    return table


def ann_phase(
    index_dir: Path, ids: list[int], exact_top: dict[str, list], *, rebuild: bool
) -> list[Row]:
    idx = ImageIndex.open(index_dir, index_dir=index_dir)
    stamp = idx.ann_info()["embedding"]
    if stamp is None or rebuild:
        stamp, _seconds = timed(lambda: idx.build_ann("embedding"))
    ann_bytes = du(index_dir / "ann")
    print(
        f"ANN build {stamp['build_seconds']:.0f} s, {ann_bytes / 2**30:.2f} GiB on disk (index + float32 rows)"
    )

    def run(q):
        return idx.search(q, k=K, exact=False)

    _, first_s = timed(lambda: run(ids[0]))
    ms = p50_ms(run, ids)
    pairs = zip(ids[1:], exact_top["embedding"], strict=True)
    recall = np.mean([len(set(run(q).ids) & set(e)) / K for q, e in pairs])
    return [("embedding", f"ANN (recall@10 {recall:.3f})", ms, first_s)]


def part_one(args: argparse.Namespace, index_dir: Path) -> None:
    seconds = build(index_dir, args.rows, args.group_every)
    written = f"written in {seconds:.0f} s" if seconds else "reused"
    print(f"index of {args.rows:,} rows: {written}")
    idx, open_s = timed(lambda: ImageIndex.open(index_dir, index_dir=index_dir))
    count, len_s = timed(lambda: len(idx))
    info, info_s = timed(idx.info)
    print(
        f"open {open_s * 1e3:.0f} ms, len {len_s * 1e3:.0f} ms ({count:,}), info {info_s * 1e3:.0f} ms"
    )
    print(
        f"on disk: features {info['features_bytes'] / 2**30:.2f} GiB, catalog {info['catalog_bytes'] / 2**20:.0f} MiB"
    )

    rng = np.random.default_rng(7)
    ids = rng.choice(count, args.queries + 1, replace=False).tolist()
    idx.close()
    # Each phase opens its own index, so one phase's in-memory copies are freed before the next.
    table, exact_top = exact_phase(index_dir, ids)
    gc.collect()
    table += compact_phase(index_dir, ids, exact_top)
    gc.collect()
    table += ann_phase(index_dir, ids, exact_top, rebuild=args.rebuild_ann)
    gc.collect()
    print(f"\n{'mode':<10} {'search':<28} {'p50 ms':>8} {'first s':>8}")
    for mode, kind, ms, first in table:
        print(f"{mode:<10} {kind:<28} {ms:>8.2f} {first:>8.1f}")

    idx = ImageIndex.open(index_dir, index_dir=index_dir)
    groups, dup_s = timed(lambda: idx.duplicates("dhash"))
    planted = args.rows // args.group_every
    recovered = sum(1 for g in groups if len(g.ids) >= 4 and min(g.ids) % args.group_every == 0)
    print(
        f"\nduplicates(dhash): {dup_s:.1f} s, {len(groups):,} groups, {recovered:,} of {planted:,} planted groups whole"
    )

    if args.map:
        fit, fit_s = timed(lambda: idx.umap("rgb", sample_size=20_000, clusters=20, refit=True))
        print(f"map of rgb: {fit_s:.0f} s (fit on {fit.fitted:,}, {fit.transformed:,} placed)")
        extra = 10_000
        catalog, _store = write_feature_index(
            index_dir,
            count + extra,
            {
                "rgb": lambda block: (
                    np.random.default_rng(int(block[0]))
                    .dirichlet(np.ones(64), block.size)
                    .astype(np.float32)
                )
            },
            settings=idx.settings,
            chunk=count + extra,
            start=count,
        )
        catalog.close()
        idx = ImageIndex.open(index_dir, index_dir=index_dir)
        grown, grow_s = timed(lambda: idx.umap("rgb", sample_size=20_000, clusters=20))
        print(
            f"{extra:,} new rows placed into it: {grow_s:.1f} s (transformed "
            f"{grown.transformed:,}, refit: {grown.fitted != fit.fitted}; includes KMeans on all)"
        )
        idx.catalog.mark_removed(range(count, count + extra))  # the next run starts from `rows`
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


def part_two(files: int, workdir: Path) -> None:
    from PIL import Image

    images, source = base_images()
    side = int(np.sqrt(images.shape[1]))
    root = workdir / "tiny"
    if not (root / "complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        for i in range(files):
            folder = root / f"{i // 1000:03d}"
            if i % 1000 == 0:
                folder.mkdir(parents=True)
            pixels = images[i % len(images)].reshape(side, side)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:06d}.png")
        (root / "complete").write_text(str(files))
    idx = ImageIndex.open(root, index_dir=workdir / "tiny-index", features=["dhash"])
    report, first_s = timed(lambda: idx.update(progress=False))
    print(
        f"\n{files:,} real tiny files ({source}): first index {first_s:.0f} s ({report.new:,} new)"
    )
    times = []
    for _ in range(3):
        report, seconds = timed(lambda: idx.update(progress=False))
        assert report.unchanged == files and report.processed == 0, report
        times.append(seconds)
    print(f"unchanged rescan: median {statistics.median(times):.2f} s of 3 (goal < 5 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--group-every", type=int, default=100)
    parser.add_argument("--rescan-files", type=int, default=100_000)
    parser.add_argument("--no-map", dest="map", action="store_false")
    parser.add_argument("--rebuild-ann", action="store_true", help="build the ANN index again")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.gettempdir()) / "imrec-bench-scale"
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"2-core x86-64, {args.rows:,} rows, workdir {workdir}")
    part_one(args, workdir / f"index-{args.rows}")
    if args.rescan_files:
        part_two(args.rescan_files, workdir)


if __name__ == "__main__":
    main()
