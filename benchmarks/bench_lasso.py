"""The cost of one lasso selection over every point, whatever its shape.

    python benchmarks/bench_lasso.py                  # 1M points
    python benchmarks/bench_lasso.py --points 200000

``MapPoints.in_polygon`` on N points (2-D gaussian, like a UMAP map) for: a hand-drawn lasso
(a wavy loop of 2,000 vertices), a zigzag of 60 edges across every point (about the most the
exact test takes, ``MAX_LASSO_POINT_TESTS``), and zigzags of 2,000, 20,000 and 50,000 vertices
whose every edge spans the whole y range (the exact test would take 2e9-2e10 point tests: 45 s
of CPU for 20,000 before the work was bounded). Prints wall and CPU seconds of the call, which
test ran (exact, or by rows), its work, and the row height as a share of the map's height.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from imrec_widgets.mapdata import MapPoints


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def zigzag(vertices: int, width: float = 50.0, height: float = 60.0) -> np.ndarray:
    return np.column_stack(
        [
            np.linspace(-width / 2, width / 2, vertices),
            np.where(np.arange(vertices) % 2 == 0, -height / 2, height / 2),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    xy = rng.normal(0, 5, (args.points, 2)).astype(np.float32)
    points = MapPoints(np.arange(args.points), xy)
    points.in_polygon([[0, 0], [1, 0], [0, 1]])  # the one-off sort of the points by y
    map_height = float(xy[:, 1].max() - xy[:, 1].min())
    angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    radii = 8 + 2 * np.sin(7 * angles)
    shapes = [
        ("hand-drawn loop, 2,000 vertices", np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])),
        ("zigzag, 60 vertices", zigzag(60)),
        ("zigzag, 2,000 vertices", zigzag(2_000)),
        ("zigzag, 20,000 vertices", zigzag(20_000)),
        ("zigzag, 50,000 vertices", zigzag(50_000)),
    ]  # fmt: skip
    print(f"{args.points:,} points")
    print(
        f"{'lasso':32s} {'wall s':>7s} {'CPU s':>7s}  {'test':5s} {'point tests':>12s} "
        f"{'row crossings':>13s} {'row height':>10s} {'selected':>10s}"
    )
    for name, polygon in shapes:
        wall, cpu = time.perf_counter(), cpu_seconds()
        selected = points.in_polygon(polygon)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        cost = points.last_cost
        share = f"{cost.row_height / map_height:.3%}" if not cost.exact else "-"
        print(
            f"{name:32s} {wall:7.2f} {cpu:7.2f}  {'exact' if cost.exact else 'rows':5s} "
            f"{cost.point_tests:12.3g} {cost.row_crossings:13.3g} {share:>10s} "
            f"{int(selected.sum()):10,}"
        )


if __name__ == "__main__":
    main()
