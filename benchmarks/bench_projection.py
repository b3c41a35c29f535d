"""The UMAP map's costs: freshness check at scale, placing new images, numba's compile cache.

    python benchmarks/bench_projection.py status --rows 1000000
    python benchmarks/bench_projection.py placement
    python benchmarks/bench_projection.py numba

status     builds an index of N synthetic rows with a cached rgb map directly through the catalog
           and store, then times ``projection.status`` (median over repeats) and ``load``.
placement  scikit-learn's digits (1,797 8x8 images): fits UMAP on 1,000 rows and places the other
           797 twice, with umap-learn's ``UMAP.transform`` and with imrec's stored k-nearest-
           neighbour placement; prints the time of each and how well the two agree: the overlap
           of each placed point's 10 nearest fitted points on the map, and the distance between
           the two positions relative to the map's spread.
numba      a fresh process fits UMAP on 500 rows through ``projection.compute``, twice in a row
           with an empty numba cache folder before the first; prints the wall and CPU time of
           each (CPU time is the steadier one on a busy machine).
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

from imrec_widgets import ImageIndex, projection
from imrec_widgets.synthetic import MAP_PARAMS, write_feature_index


def build_mapped(index_dir: Path, rows: int, seed: int = 0) -> None:
    """``rows`` catalog rows, an 8-d rgb feature and a fresh cached ``umap/rgb`` map."""
    rng = np.random.default_rng(seed)
    catalog, _store = write_feature_index(
        index_dir,
        rows,
        {
            "rgb": lambda ids: rng.random((ids.size, 8), dtype=np.float32),
            "umap/rgb": lambda ids: rng.normal(0, 5, (ids.size, 2)).astype(np.float32),
            "cluster/rgb": lambda ids: (ids % 5).astype(np.int32),
        },
        settings={"bins": 2},
        chunk=100_000,
    )
    catalog.set_meta(
        "projection/rgb",
        {
            "params": MAP_PARAMS,
            "clusters": {"clusters": 5, "min_cluster_size": None},
            "updated_at": time.time(),
            "fitted": 20_000,
        },
    )
    catalog.close()


def median_s(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_status(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_projection_"))
    try:
        started = time.perf_counter()
        build_mapped(work / "index", args.rows)
        print(f"built a {args.rows:,}-row synthetic index in {time.perf_counter() - started:.0f} s")
        index = ImageIndex.open(work, index_dir=work / "index")
        state = projection.status(index, "rgb")
        assert state == {"state": "fresh", "pending": 0}, state
        print(
            f"status()  {median_s(lambda: projection.status(index, 'rgb'), args.repeats):7.2f} s  (median of {args.repeats})"
        )
        print(
            f"load()    {median_s(lambda: projection.load(index, 'rgb'), args.repeats):7.2f} s  (median of {args.repeats})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _map_neighbours(points: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    d2 = ((points[:, None, :] - reference[None, :, :]) ** 2).sum(-1)
    return np.argsort(d2, axis=1)[:, :k]


def bench_placement(args: argparse.Namespace) -> None:
    import warnings

    import umap
    from sklearn.datasets import load_digits

    digits = load_digits().data.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(digits))
    fit, new = digits[order[: args.fit]], digits[order[args.fit :]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=42).fit(fit)
        reducer.transform(new)  # numba compiles outside the timing
        started = time.perf_counter()
        by_umap = reducer.transform(new)
        umap_s = time.perf_counter() - started
        reducer.transform_seed = 7  # how much umap's own transform moves with its seed
        by_umap_again = reducer.transform(new)
    fit_xy = reducer.embedding_.astype(np.float32)
    model = projection.Placement(None, None, fit, fit_xy, "euclidean", 15)
    model.place(new[:5])  # scikit-learn's import outside the timing
    started = time.perf_counter()
    by_imrec = model.place(new)
    imrec_s = time.perf_counter() - started
    # the same neighbours through umap-learn's own code for the start of transform
    from scipy.sparse import coo_matrix
    from umap.umap_ import compute_membership_strengths, init_graph_transform, smooth_knn_dist

    neighbours, distances = model.nearest(new)
    sigmas, rhos = smooth_knn_dist(distances.astype(np.float32), 15.0, local_connectivity=0.0)
    rows, cols, vals, _ = compute_membership_strengths(
        neighbours.astype(np.int32), distances.astype(np.float32), sigmas, rhos, bipartite=True
    )
    graph = coo_matrix((vals, (rows, cols)), shape=(len(new), len(fit))).tocsr()
    umap_init = init_graph_transform(graph, fit_xy)

    k = 10
    ours, theirs = _map_neighbours(by_imrec, fit_xy, k), _map_neighbours(by_umap, fit_xy, k)
    again = _map_neighbours(by_umap_again, fit_xy, k)

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))

    spread = float(np.ptp(fit_xy, axis=0).max())
    gap = np.linalg.norm(by_imrec - by_umap, axis=1) / spread
    seed_gap = np.linalg.norm(by_umap_again - by_umap, axis=1) / spread
    print(f"digits: fit on {len(fit)}, placed {len(new)}; map spread {spread:.1f} units")
    print(f"  umap-learn transform   {umap_s * 1000:8.1f} ms")
    print(f"  imrec kNN placement    {imrec_s * 1000:8.1f} ms   ({umap_s / imrec_s:.0f}x faster)")
    print(
        f"  imrec vs umap's own start of transform (same neighbours): max |difference| "
        f"{np.abs(by_imrec - umap_init).max() / spread:.1e} of the spread"
    )
    print(f"  10-NN overlap on the map, imrec vs umap:              {overlap(ours, theirs):6.1%}")
    print(f"  10-NN overlap on the map, umap seed 42 vs seed 7:     {overlap(again, theirs):6.1%}")
    print(
        f"  distance imrec-umap / spread:    median {np.median(gap):.3f}, mean {gap.mean():.3f}, "
        f"p90 {np.quantile(gap, 0.9):.3f}"
    )
    print(
        f"  distance umap 42-umap 7 / spread: median {np.median(seed_gap):.3f}, mean {seed_gap.mean():.3f}, "
        f"p90 {np.quantile(seed_gap, 0.9):.3f}"
    )


_FIT_SCRIPT = """
import sys, time
started = time.perf_counter()
import numpy as np
from imrec_widgets import projection
from imrec_widgets.catalog import Catalog, Entry
from imrec_widgets import ImageIndex
from imrec_widgets.settings import DEFAULT_SETTINGS
from imrec_widgets.store import FeatureStore
from pathlib import Path
work = Path(sys.argv[1])
rng = np.random.default_rng(0)
catalog = Catalog(work / "catalog.sqlite")
store = FeatureStore(work / "features.zarr")
catalog.set_meta("settings", dict(DEFAULT_SETTINGS, features=["rgb"]))
store.ensure("rgb", (512,), "float32")
centres = rng.random((5, 512), dtype=np.float32)
store.write_rows("rgb", np.arange(500), centres[np.arange(500) % 5] + rng.normal(0, 0.05, (500, 512)).astype(np.float32))
catalog.commit_entries(Entry(i, f"{i}.jpg", 1, 1, 8, 8, "JPEG") for i in range(500))
catalog.close()
index = ImageIndex.open(work, index_dir=work)
fit_started = time.perf_counter()
projection.compute(index, "rgb", clusters=5, refit=True)
print(f"{time.perf_counter() - started:.1f} {time.perf_counter() - fit_started:.1f}")
"""


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_numba(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_numba_"))
    try:
        cache = work / "cache"
        env = dict(os.environ, XDG_CACHE_HOME=str(cache))
        env.pop("NUMBA_CACHE_DIR", None)
        for run in (1, 2):
            index_dir = work / f"index{run}"
            index_dir.mkdir()
            started, cpu = time.perf_counter(), _children_cpu()
            out = subprocess.run(
                [sys.executable, "-c", _FIT_SCRIPT, str(index_dir)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                cwd=work,  # imrec_widgets from PYTHONPATH, not cwd
            ).stdout.split()
            wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
            files = sum(1 for _ in (cache / "imrec-widgets" / "numba").rglob("*.nbi"))
            print(
                f"run {run}: process {wall:5.1f} s wall, {cpu:5.1f} s CPU; in-script {out[0]} s "
                f"(compute() {out[1]} s); {files} cached function indexes"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("status")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("placement")
    p.add_argument("--fit", type=int, default=1000)
    sub.add_parser("numba")
    args = parser.parse_args()
    {"status": bench_status, "placement": bench_placement, "numba": bench_numba}[args.what](args)


if __name__ == "__main__":
    main()
