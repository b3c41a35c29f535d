"""``imrec``: the command line for indexing and searching a folder of images."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = func
        return func

    return register


def _open_index(args: argparse.Namespace, **settings: Any) -> Any:
    from .index import ImageIndex

    return ImageIndex.open(args.root, args.index_dir, **settings)


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


@command("index")
def _index(args: argparse.Namespace) -> int:
    features = args.features.split(",") if args.features else None
    rebuild = args.rebuild.split(",") if args.rebuild else ()
    index = _open_index(
        args,
        features=features,
        backbone=args.backbone,
        weights=args.weights,
        bins=args.bins,
        hash_size=args.hash_size,
        thumb_size=args.thumb_size,
        rebuild=rebuild,
    )
    report = index.update(progress=not args.quiet, workers=args.workers, batch_size=args.batch_size)
    print(report)
    for folder in report.skipped_dirs:
        print(f"warning: could not read folder {folder}", file=sys.stderr)
    return 0


@command("info")
def _info(args: argparse.Namespace) -> int:
    info = _open_index(args).info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"images root : {info['root']}")
    print(f"index       : {info['index_dir']}")
    if not info["exists"]:
        print(f"no index yet; run `imrec index {info['root']}`")
        return 0
    counts = info["counts"]
    print(f"images      : {counts['ok']} ok, {counts['error']} error, {counts['removed']} removed")
    settings = info["settings"]
    print(f"backbone    : {settings['backbone']} ({info['feature_config'].get('embedding', {}).get('dim', '-')}-d)")
    print(f"features    : {', '.join(info['stored'])}")
    for name, config in sorted(info["feature_config"].items()):
        print(f"  {name:<9} {json.dumps(config, sort_keys=True)}")
    print(f"on disk     : catalog {_human_bytes(info['catalog_bytes'])}, features {_human_bytes(info['features_bytes'])}")
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .index import ImageIndex
    from .samples import write_sample_photos

    folder = Path(args.folder).expanduser().resolve()
    photos = folder / "photos"
    written = write_sample_photos(photos, with_variants=True)
    print(f"wrote {len(written)} sample photos (scikit-image, scikit-learn) to {photos}")
    index = ImageIndex.open(photos)
    print(index.update(progress=not args.quiet))
    import shutil

    for notebook in example_notebooks():
        shutil.copy(notebook, folder / notebook.name)
    print(f"example notebooks copied to {folder}; they search IMREC_PHOTOS={photos}")
    if args.no_lab:
        return 0
    import os
    import subprocess

    command = [sys.executable, "-m", "jupyter", "lab", "01_quickstart.ipynb", f"--ServerApp.root_dir={folder}"]
    if args.no_browser:
        command.append("--no-browser")
    print("starting JupyterLab:", " ".join(command))
    return subprocess.call(command, cwd=folder, env={**os.environ, "IMREC_PHOTOS": str(photos)})


def example_notebooks() -> list[Any]:
    """The example notebooks: shipped inside the wheel, or ``notebooks/`` of a checkout."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for folder in (here / "notebooks", here.parent / "notebooks"):
        found = sorted(folder.glob("[0-9]*.ipynb"))
        if found:
            return found
    raise FileNotFoundError("the example notebooks are missing from this installation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imrec",
        description="Index a folder of images and search it by example.",
    )
    parser.add_argument("--version", action="version", version=f"imrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add_root(p: argparse.ArgumentParser) -> None:
        p.add_argument("root", help="folder of images")
        p.add_argument("--index-dir", default=None, help="where the index lives (default: ROOT/.imrec)")

    p = sub.add_parser("index", help="build or update the index of a folder (only what changed)")
    add_root(p)
    p.add_argument("--features", help="comma-separated subset of embedding,rgb,ahash,dhash,thumb")
    p.add_argument("--backbone", choices=("efficientnet_lite0", "resnet18"), help="CNN for embeddings (default efficientnet_lite0, works offline)")
    p.add_argument("--weights", help="local weights file for the backbone")
    p.add_argument("--bins", type=int, help="RGB histogram bins per channel (default 8 -> 512 values)")
    p.add_argument("--hash-size", type=int, help="ahash/dhash grid size (default 8 -> 64 bits)")
    p.add_argument("--thumb-size", type=int, help="thumbnail side in pixels (default 64)")
    p.add_argument("--rebuild", help="comma-separated features to recompute for every image")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores - 1)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("demo", help="index real sample photos and open the quick-start notebook")
    p.add_argument("folder", nargs="?", default="imrec-demo", help="where to put photos and notebook (default ./imrec-demo)")
    p.add_argument("--no-lab", action="store_true", help="only write and index the photos")
    p.add_argument("--no-browser", action="store_true", help="start JupyterLab without opening a browser")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("info", help="counts, settings and sizes of an index")
    add_root(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``imrec`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"imrec {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
