"""Indexing pipelines of two checkouts side by side: this one against another commit's.

    git worktree add /tmp/old 0e7c1da
    python benchmarks/bench_checkouts.py --other /tmp/old --images 768

Writes one folder of 2 MP JPEGs (as ``bench_index.py`` does), then runs ``ImageIndex.update()``
with the default workers, each (checkout, engine) in a fresh Python process (a warm-up update,
then the measured one), interleaved for ``--rounds`` rounds so both checkouts see the same
machine, and prints the median images/s of each and every ratio to the other checkout's torch
pipeline. Both checkouts run with this virtual environment.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_index import INT8, engine_settings, make_folder

HERE = Path(__file__).resolve().parents[1]
ONE_RUN = """
import json, shutil, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from imrec_widgets import ImageIndex
folder, settings = Path(sys.argv[2]), json.loads(sys.argv[3])
for _ in range(2):  # a warm-up (imports, graph cache, page cache), then the measured run
    where = Path(tempfile.mkdtemp())
    report = ImageIndex.open(folder, where / "index", **settings).update(progress=False)
    shutil.rmtree(where)
print(report.images_per_second)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, type=Path, help="a checkout of another commit")
    parser.add_argument("--images", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument(
        "--new-engines",
        nargs="+",
        default=[INT8],
        help=f"engines only this checkout has ({INT8}: model_precision='int8')",
    )
    args = parser.parse_args()
    runs = [("other", args.other.resolve(), e) for e in args.engines]
    runs += [("this", HERE, e) for e in [*args.engines, *args.new_engines]]
    work = Path(tempfile.mkdtemp(prefix="bench_checkouts_"))
    try:
        folder = work / "photos"
        make_folder(folder, args.images, 2.0, seed=1)
        rates: dict[tuple[str, str], list[float]] = {}
        for _round, (name, checkout, engine) in itertools.product(range(args.rounds), runs):
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    ONE_RUN,
                    str(checkout),
                    str(folder),
                    json.dumps(engine_settings(engine, setting="model_precision")),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rates.setdefault((name, engine), []).append(float(done.stdout.split()[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(rates[("other", "torch")]) if ("other", "torch") in rates else None
    print(f"{args.images} JPEGs of 2 MP, medians of {args.rounds} interleaved rounds; images/s")
    for (name, engine), values in rates.items():
        median = statistics.median(values)
        ratio = f"  {median / base:.2f}x the other checkout's torch" if base else ""
        print(
            f"{name:<6} {engine:<12} {median:7.1f}{ratio}   ({', '.join(f'{v:.1f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
