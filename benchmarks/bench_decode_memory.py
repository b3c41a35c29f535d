"""Peak memory and time of decoding one large image, each case in a fresh process.

    python benchmarks/decode_memory.py [WIDTH]

Writes flat (small on disk) RGB and RGBA PNGs of WIDTH x WIDTH pixels (default 13000, just under
Pillow's own bomb limit), then decodes each as the indexer does (``decode_one`` with the cheap
features) and prints the peak resident memory (``ru_maxrss``) above the interpreter's baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
from imrec_widgets.features import build_features
from imrec_widgets.indexer import decode_one
features = build_features({"features": ["rgb", "ahash", "dhash", "thumb"], "bins": 8, "hash_size": 8, "thumb_size": 64})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    decode_one(features, sys.argv[1])
    outcome = "decoded"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"[:90]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": (peak - base) / 1024, "base_mb": base / 1024, "seconds": time.perf_counter() - start, "outcome": outcome}))
"""


def main() -> None:
    width = int(sys.argv[1]) if len(sys.argv) > 1 else 13000
    with tempfile.TemporaryDirectory() as folder:
        print(f"{width}x{width} = {width * width / 1e6:.0f} MP")
        print(f"{'image':>10} {'on disk':>9} {'peak RSS':>9} {'seconds':>8}  outcome")
        for mode, colour in (("RGB", (10, 120, 200)), ("RGBA", (10, 120, 200, 128))):
            path = Path(folder) / f"{mode}.png"
            # Written by a child too: Linux keeps a process's peak RSS across fork + exec.
            write = f"from PIL import Image; Image.new({mode!r}, ({width}, {width}), {colour}).save({str(path)!r}, compress_level=9)"
            subprocess.run([sys.executable, "-c", write], check=True)
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode:
                raise SystemExit(out.stderr)
            row = json.loads(out.stdout)
            print(
                f"{mode + ' PNG':>10} {path.stat().st_size / 1e3:>6.0f} kB {row['peak_mb']:>6.0f} MB "
                f"{row['seconds']:>8.1f}  {row['outcome']}"
            )


if __name__ == "__main__":
    main()
