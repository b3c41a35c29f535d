"""``imrec``: the command line for indexing and searching a folder of images."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import EmptyIndexError, ImrecError, NotFoundError, UsageError

if TYPE_CHECKING:
    from .request import Scope

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
DEMO_FOLDER = "~/imrec-demo"  # docs/cli.md, docs/index.md and the Makefile say the same


def command(
    name: str,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = func
        return func

    return register


def _open_index(args: argparse.Namespace, **settings: Any) -> Any:
    from .index import ImageIndex

    return ImageIndex.open(
        args.root, args.index_dir, engine=getattr(args, "engine", None) or "auto", **settings
    )


def shown(path: Any) -> str:
    """``path`` as text a terminal shows on one line, unchanged when it is plain.

    A name with a control character (a newline, an escape sequence), an invisible or
    undecodable character is written in shell quoting, ``$'new\\nline.jpg'`` (as GNU ``ls``
    does), so one file is one line and the bytes can be read back.
    """
    text = str(path)
    if text.isprintable():
        return text
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in "\\'":
            out.append("\\" + char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return "$'" + "".join(out) + "'"


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def plural(count: int, noun: str) -> str:
    """``1 sample photo``, ``2 sample photos``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


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
        vector_dtype=args.vector_dtype,
        model_precision=args.model_precision,
        rebuild=rebuild,
    )
    if args.dask is None:
        if args.path_map:
            raise UsageError("--path-map rewrites paths for Dask workers; use it with --dask")
        report = index.update(
            progress=not args.quiet,
            workers=args.workers,
            batch_size=args.batch_size,
            wait=args.wait,
        )
    else:
        report = _index_on_dask(args, index)
    if not report.updated:
        return 1  # said in one warning line: another process is still updating
    print(report)
    if report.skipped_dirs:
        more = len(report.skipped_dirs) - 1
        print(
            f"warning: could not read folder {shown(report.skipped_dirs[0])}"
            + (f" and {more} more" if more else "")
            + "; what the index holds under them is kept",
            file=sys.stderr,
        )
    return 0


def _index_on_dask(args: argparse.Namespace, index: Any) -> Any:
    try:
        from .distributed import dask_client, parse_path_map, require_distributed

        require_distributed()
    except ImportError as exc:
        raise UsageError(f"--dask: {exc}") from exc
    path_map = parse_path_map(args.path_map or [])
    workers = args.workers if args.dask == "local" else None
    with dask_client(args.dask, workers) as client:
        return index.update(
            progress=not args.quiet,
            client=client,
            batch_size=args.batch_size,
            path_map=path_map,
            wait=args.wait,
        )


@command("search")
def _search(args: argparse.Namespace) -> int:
    from pathlib import Path

    mode = args.mode or ("hybrid" if args.weights else "embedding")
    if args.weights and mode != "hybrid":
        raise UsageError(
            f"--weights mixes modes and goes with --mode hybrid, not --mode {mode}; "
            "drop --mode (or --weights)"
        )
    queries: list[Any] = []
    for query in args.query:
        if query.isdigit() and not Path(query).exists():
            queries.append(int(query))
        elif Path(query).is_dir():
            raise UsageError(
                f"{query} is a folder; give image files (several are one combined query), "
                f"e.g. {Path(query) / '*.jpg'}"
            )
        else:
            queries.append(Path(query))
    index = _open_index(args)
    results = index.search(
        queries if len(queries) > 1 else queries[0],
        mode=mode,
        metric=args.metric,
        k=args.k,
        weights=_parse_weights(args.weights),
        exact=args.exact,
        scope=_scope(args),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "mode": results.mode,
                    "metric": results.metric,
                    "seconds": results.seconds,
                    "hits": results.to_dicts(),
                },
                indent=2,
            )
        )
        return 0
    print(
        f"{len(results)} nearest by {results.mode}/{results.metric} in {results.seconds * 1000:.1f} ms"
    )
    print(f"{'rank':>4}  {'distance':>10}  path")
    for hit in results:
        print(
            f"{hit.rank + 1:>4}  {format_distance(hit.distance, results.metric):>10}  {shown(hit.path)}"
        )
    return 0


def _scope(args: argparse.Namespace) -> Scope:
    """The ``request.Scope`` of ``imrec search``'s filter flags (each stored as its field)."""
    from dataclasses import fields

    from .request import Scope

    given = vars(args)
    return Scope(**{field.name: given.get(field.name) for field in fields(Scope)})


def format_distance(distance: float, metric: str) -> str:
    """A distance as the CLI prints it: whole bits for hamming, four decimals otherwise."""
    if metric == "hamming":
        return str(round(distance))
    return f"{distance:.4f}"


@command("ann")
def _ann(args: argparse.Namespace) -> int:
    index = _open_index(args)
    if args.drop:
        dropped = index.drop_ann(args.feature)
        print(
            f"dropped the ANN index of {args.feature}"
            if dropped
            else f"no ANN index of {args.feature}"
        )
        return 0
    params = {
        name: getattr(args, name)
        for name in ("nlist", "m", "nprobe", "candidates")
        if getattr(args, name) is not None
    }
    stamp = index.build_ann(args.feature, args.metric, progress=not args.quiet, **params)
    p = stamp["params"]
    print(
        f"ANN index of {args.feature} ({stamp['metric']}): {stamp['count']} rows in "
        f"{stamp['build_seconds']:.1f} s; faiss IVF-PQ, {p['nlist']} lists, {p['m']} x {p['nbits']}-bit "
        f"codes, {p['nprobe']} probed; {_human_bytes(stamp['bytes'])} + float32 rows "
        f"{_human_bytes(stamp['rows_bytes'])} in {index.index_dir / 'ann'}"
    )
    return 0


@command("umap")
def _umap(args: argparse.Namespace) -> int:
    index = _open_index(args)
    projection = index.umap(
        args.feature,
        refit=args.refit,
        n_neighbors=args.n_neighbors,
        sample_size=args.sample_size,
        clusters=args.clusters,
        min_cluster_size=args.min_cluster_size,
        progress=not args.quiet,
    )
    n_clusters = len(set(projection.clusters.tolist()) - {-1})
    print(
        f"mapped {len(projection)} images by {args.feature} in {projection.seconds:.1f} s "
        f"(fitted on {projection.fitted}, transformed {projection.transformed}): {n_clusters} clusters"
    )
    return 0


@command("info")
def _info(args: argparse.Namespace) -> int:
    index = _open_index(args)
    info = index.info()
    errors = []
    if args.errors and info["exists"]:
        errors = [{"path": str(path), "error": message} for path, message in index.errors()]
    if args.json:
        print(
            json.dumps({**info, "errors": errors} if args.errors else info, indent=2, default=str)
        )
        return 0
    print(f"images root : {info['root']}")
    print(f"index       : {info['index_dir']}")
    if not info["exists"]:
        below = info["indexes_below"]
        if below:
            print("no index here, but these folders below it have one:")
            for folder in below:
                print(f"  {folder}")
            print(f"see one with `imrec info {below[0]}`")
        else:
            print(f"no index yet; run `imrec index {info['root']}`")
        return 0
    counts = info["counts"]
    hint = " (list them with --errors)" if counts["error"] and not args.errors else ""
    print(
        f"images      : {counts['ok']} ok, {counts['error']} error, {counts['removed']} removed{hint}"
    )
    if info["rebuild"]:
        rebuild = info["rebuild"]
        print(
            f"rebuilding  : {', '.join(rebuild['features'])}, {rebuild['done']} of {rebuild['total']} images "
            f"done (running, or stopped: `imrec index {info['root']}` resumes it)"
        )
    settings = info["settings"]
    print(
        f"backbone    : {settings['backbone']} ({info['feature_config'].get('embedding', {}).get('dim', '-')}-d"
        f"{', int8 model' if settings.get('model_precision') == 'int8' else ''})"
    )
    print(f"features    : {', '.join(info['stored'])}")
    for name, config in sorted(info["feature_config"].items()):
        print(f"  {name:<9} {json.dumps(config, sort_keys=True)}")
    print(
        f"on disk     : catalog {_human_bytes(info['catalog_bytes'])}, features {_human_bytes(info['features_bytes'])}"
    )
    for name, stamp in sorted(info.get("ann", {}).items()):
        if "invalid" in stamp:
            print(f"ANN         : {name}: not used, {shown(stamp['invalid'])}")
            continue
        print(
            f"ANN         : {name} ({stamp['metric']}), {stamp['count']} rows, "
            f"{_human_bytes(stamp['bytes'])} + float32 rows {_human_bytes(stamp['rows_bytes'])}"
        )
    if args.errors:
        print(f"unreadable  : {len(errors)} file{'' if len(errors) == 1 else 's'}")
        for row in errors:
            print(f"  {shown(row['path'])}: {shown(row['error'])}")
    return 0


@command("export")
def _export(args: argparse.Namespace) -> int:
    if args.format == "files":
        return _export_files(args)
    from .export.tensorboard import export_tensorboard, tensorboard_command

    run_dir = export_tensorboard(
        _open_index(args),
        args.out,
        args.feature,
        run=args.run,
        sprite=False if args.no_sprite else None,
        max_points=args.max_points,
    )
    print(f"wrote TensorBoard projector run {run_dir}")
    print(f"view it with: {tensorboard_command(run_dir.parent)}  (then open the PROJECTOR tab)")
    return 0


def _selection(args: argparse.Namespace, index: Any) -> list[int]:
    """The ids ``imrec tag``/``untag`` act on: --ids, --from-file paths, or a --query search."""
    from pathlib import Path

    from .tags import ids_for_paths

    if args.ids is not None:
        try:
            return [int(part) for entry in args.ids for part in entry.split(",") if part.strip()]
        except ValueError:
            raise UsageError(
                f"--ids takes image ids like 3 7 12; not {' '.join(args.ids)!r}"
            ) from None
    if args.from_file is not None:
        listing = Path(args.from_file).expanduser()
        if not listing.is_file():
            raise NotFoundError(f"--from-file: no such file {listing}")
        lines = listing.read_text(encoding="utf-8").splitlines()
        return ids_for_paths(index, [line.strip() for line in lines if line.strip()])
    queries: list[Any] = [
        int(query) if query.isdigit() and not Path(query).exists() else Path(query)
        for query in args.query
    ]
    results = index.search(queries if len(queries) > 1 else queries[0], mode=args.mode, k=args.k)
    return [hit.id for hit in results]


@command("tag")
def _tag(args: argparse.Namespace) -> int:
    from .tags import describe_tagging

    index = _open_index(args)
    ids = _selection(args, index)
    added = index.tag(ids, args.name)
    have = len(index.tagged(args.name))
    report = describe_tagging(args.name, len(set(ids)), added, add=True)
    print(f"{report}; {plural(have, 'image')} {'has' if have == 1 else 'have'} it")
    return 0


@command("untag")
def _untag(args: argparse.Namespace) -> int:
    from .tags import describe_tagging

    index = _open_index(args)
    ids = index.tagged(args.name).tolist() if args.all else _selection(args, index)
    removed = index.untag(ids, args.name) if ids else 0
    print(describe_tagging(args.name, len(set(ids)), removed, add=False))
    return 0


@command("tags")
def _tags(args: argparse.Namespace) -> int:
    index = _open_index(args)
    if args.show is not None:
        ids = index.tagged(args.show)
        paths = [str(path) for path in index.paths(ids)] if len(ids) else []
        if args.json:
            print(json.dumps([{"id": int(i), "path": p} for i, p in zip(ids, paths, strict=True)]))
        else:
            for id_, path in zip(ids, paths, strict=True):
                print(f"{int(id_):>8}  {path}")
        return 0
    counts = index.tags()
    if args.json:
        print(json.dumps(counts, ensure_ascii=False, indent=2))
        return 0
    if not counts:
        print(f"no tags yet; add one with `imrec tag {args.root} NAME --ids ...`")
    for name, count in counts.items():
        print(f"{count:>8}  {name}")
    return 0


def _export_files(args: argparse.Namespace) -> int:
    index = _open_index(args)
    if args.ids is not None:
        try:
            selection: Any = [int(part) for entry in args.ids for part in entry.split(",") if part]
        except ValueError:
            raise UsageError(
                f"--ids takes image ids like 3 7 12; not {' '.join(args.ids)!r}"
            ) from None
    else:
        selection = args.tag
    report = index.export(selection, args.dest, how=args.how, layout=args.layout)
    print(report)
    for path in report.missing[:5]:
        print(
            f"warning: {path} is indexed but gone; run `imrec index {args.root}`", file=sys.stderr
        )
    return 0


def _parse_weights(text: str | None) -> dict[str, Any] | None:
    """``embedding=0.7,rgb=0.3`` (a weight may carry a metric: ``rgb=0.3:cosine``) -> weights."""
    if not text:
        return None
    weights: dict[str, Any] = {}
    for part in text.split(","):
        mode, sep, value = part.partition("=")
        weight, _, metric = value.partition(":")
        try:
            number = float(weight)
        except ValueError:
            number = None
        if not sep or number is None:
            raise UsageError(
                f"--weights takes MODE=WEIGHT[:METRIC],... like embedding=0.7,rgb=0.3; not {part!r}"
            )
        weights[mode.strip()] = (number, metric.strip()) if metric.strip() else number
    return weights


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    modes = [m for entry in args.modes for m in entry.split(",") if m] if args.modes else None
    report = _open_index(args).evaluate(
        labels=args.labels, k=args.k, modes=modes, weights=_parse_weights(args.weights)
    )
    print(report.to_text())
    if args.out:
        print(f"wrote {report.save(args.out)}")
    return 0


@command("duplicates")
def _duplicates(args: argparse.Namespace) -> int:
    from .features import mode_metrics

    # hash modes (hamming distance) have a default --max-distance: a number of bits
    if args.max_distance is None and mode_metrics()[args.mode][0] != "hamming":
        raise UsageError(
            f"--mode {args.mode} has no default distance; pass --max-distance, "
            "e.g. --max-distance 0.05 for embedding (cosine)"
        )
    index = _open_index(args)
    groups = index.duplicates(mode=args.mode, max_distance=args.max_distance, metric=args.metric)
    if args.move_extras is not None:
        return _move_extras(args, index, groups)
    if args.json:
        print(
            json.dumps(
                {
                    "mode": groups.mode,
                    "metric": groups.metric,
                    "max_distance": groups.max_distance,
                    "groups": groups.to_dicts(),
                },
                indent=2,
            )
        )
        return 0
    print(groups.summary())
    for number, group in enumerate(groups, 1):
        kind = "identical files" if group.identical else "near-duplicates"
        print(f"group {number}: {len(group.ids)} {kind}")
        print(f"  {'distance':>8}  path")
        for path, distance in zip(group.paths, group.distances, strict=True):
            print(f"  {format_distance(distance, groups.metric):>8}  {shown(path)}")
    return 0


def _move_extras(args: argparse.Namespace, index: Any, groups: Any) -> int:
    dest = args.move_extras or None
    report = index.move_duplicates(groups, dest, dry_run=not args.yes)
    if not args.yes:
        for item in report.moved:
            print(f"would move {item.source} -> {item.destination}")
        print(
            f"{len(report.moved)} file(s) would move, one kept per group (most pixels, then "
            "oldest); nothing moved yet: add --yes to move them"
        )
        return 0
    for item in report.moved:
        print(f"moved {item.source} -> {item.destination}")
    for path, why in report.skipped:
        print(f"warning: left {path}: {why}", file=sys.stderr)
    print(f"{report.summary()}; undo with `imrec restore {args.root}`")
    return 0


@command("restore")
def _restore(args: argparse.Namespace) -> int:
    report = _open_index(args).undo_moves(args.batch)
    for item in report.restored:
        print(f"put back {item.source}")
    for path, why in report.skipped:
        print(f"warning: left {path}: {why}", file=sys.stderr)
    print(report.summary())
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .index import ImageIndex
    from .samples import write_sample_photos

    folder = Path(args.folder).expanduser().resolve()
    photos = folder / "photos"
    # A rerun changes nothing that exists: no photo rewritten, no edited notebook replaced.
    written = write_sample_photos(photos, with_variants=True, overwrite=False)
    if written:
        print(
            f"wrote {plural(len(written), 'sample photo')} (scikit-image, scikit-learn) to {photos}"
        )
    else:
        print(f"sample photos already in {photos}")
    index = ImageIndex.open(photos)
    print(index.update(progress=not args.quiet))
    if not args.no_warm_up:
        log = start_umap_warm_up()
        if log is not None:
            print(
                "compiling UMAP for this machine in the background (once, about a minute), "
                f"so that the first map is quick; log: {log}"
            )
    import shutil

    copied, kept = [], []
    for notebook in example_notebooks():
        target = folder / notebook.name
        if target.exists():
            kept.append(notebook.name)
        else:
            shutil.copyfile(notebook, target)
            copied.append(notebook.name)
    if copied:
        print(f"example notebooks copied to {folder}: {', '.join(copied)}")
    if kept:
        print(f"kept your {', '.join(kept)} (delete one to get the shipped version back)")
    print(f"the notebooks search IMREC_PHOTOS={photos}")
    hint = terminal_hint()
    if args.no_lab:
        if hint:
            print(hint)
        return 0
    return _run_lab(folder, photos, open_browser=not args.no_browser, hint=hint)


WARM_UP_CODE = (
    "from imrec_widgets.projection import warm_umap; print(f'compiled in {warm_umap():.0f} s')"
)


def start_umap_warm_up() -> Any:
    """Start compiling umap-learn into the numba cache in a process of its own (it outlives
    this one); return its log file, or None when there is nothing to do or nowhere to keep it."""
    import os
    import subprocess
    from pathlib import Path

    from .numba_cache import umap_compiled, use_numba_cache

    use_numba_cache()
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if not folder or umap_compiled():
        return None
    log = Path(folder) / "imrec-warm-up.log"
    with open(log, "wb") as out:
        subprocess.Popen(
            [sys.executable, "-c", WARM_UP_CODE],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return log


def terminal_hint() -> str | None:
    """How to get ``imrec`` in a terminal when this one is not on the PATH (``make demo`` runs it
    from ./.venv without activating it); None when ``imrec`` already is the one on the PATH."""
    import shutil
    from pathlib import Path

    scripts = Path(sys.executable).parent
    found = shutil.which("imrec")
    if found and Path(found).parent == scripts:
        return None
    activate = scripts / "activate"
    if activate.is_file():
        return f"to use `imrec` in a terminal: . {activate}   (then: imrec --help)"
    return f"`imrec` is in {scripts}, not on your PATH: run {scripts / 'imrec'} --help"


DEMO_NOTEBOOK = "01_quickstart.ipynb"
LAB_URL_TIMEOUT = 120.0  # seconds to wait for JupyterLab to say where it listens


def lab_command(folder: Any, *, open_browser: bool, as_root: bool) -> list[str]:
    """The JupyterLab command line of ``imrec demo``; ``as_root`` adds ``--allow-root``."""
    command = [sys.executable, "-m", "jupyterlab", DEMO_NOTEBOOK, f"--ServerApp.root_dir={folder}"]
    if not open_browser:
        command.append("--no-browser")
    if as_root:  # JupyterLab refuses root without it (containers, CI runners)
        command.append("--allow-root")
    return command


LAB_LOG = "jupyterlab.log"
"""JupyterLab's own messages go to this file in the demo folder, so that its banner never
buries the demo's last lines (the URL to open)."""


def _run_lab(folder: Any, photos: Any, *, open_browser: bool, hint: str | None = None) -> int:
    """Run JupyterLab on the demo folder until it stops; print its URL (with the token) once up,
    last."""
    import importlib.util
    import os
    import subprocess
    from pathlib import Path

    if importlib.util.find_spec("jupyterlab") is None:
        raise UsageError(
            "JupyterLab is not installed: `pip install jupyterlab`, or open the notebooks in "
            f"{folder} with any Jupyter"
        )
    command = lab_command(folder, open_browser=open_browser, as_root=os.geteuid() == 0)
    log_path = Path(folder) / LAB_LOG
    print("starting JupyterLab:", " ".join(command), flush=True)
    print(f"its messages go to {log_path}", flush=True)
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            command,
            cwd=folder,
            env={**os.environ, "IMREC_PHOTOS": str(photos)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_for_lab_url(server)
        if url:
            if hint:
                print(hint)
            print("stop JupyterLab with Ctrl-C; open the quick start at:")
            print(f"\nJupyterLab is running at {url}\n", flush=True)
        else:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            print(f"JupyterLab did not start; its messages are in {log_path}", file=sys.stderr)
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()  # a clean shutdown: JupyterLab stops its kernels
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        raise


def _wait_for_lab_url(server: Any, timeout: float = LAB_URL_TIMEOUT) -> str | None:
    """The demo notebook's URL, read from the file JupyterLab writes once it listens."""
    import time
    from pathlib import Path

    from jupyter_core.paths import jupyter_runtime_dir

    info_file = Path(jupyter_runtime_dir()) / f"jpserver-{server.pid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
        token = info.get("token") or ""
        return f"{info['url'].rstrip('/')}/lab/tree/{DEMO_NOTEBOOK}" + (
            f"?token={token}" if token else ""
        )
    return None


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
    from .features import HYBRID_MODE, feature_names, mappable_features, mode_metrics

    # every choice of a feature or mode comes from the feature table (features.register)
    modes = tuple(mode_metrics())
    ann_features = tuple(
        m for m, metrics in mode_metrics().items() if {"cosine", "euclidean"} & set(metrics)
    )
    parser = argparse.ArgumentParser(
        prog="imrec",
        description="Index a folder of images and search it by example.",
    )
    parser.add_argument("--version", action="version", version=f"imrec {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"print every error with its traceback (also: {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add_root(p: argparse.ArgumentParser) -> None:
        p.add_argument("root", help="folder of images")
        p.add_argument(
            "--index-dir", default=None, help="where the index lives (default: ROOT/.imrec)"
        )

    def add_engine(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--engine",
            default="auto",
            choices=("auto", "torch", "onnxruntime", "openvino"),
            help="what runs the CNN (default auto: torch on CUDA, else the fastest CPU engine installed); same features either way",
        )

    p = sub.add_parser("index", help="build or update the index of a folder (only what changed)")
    add_root(p)
    p.add_argument("--features", help=f"comma-separated subset of {','.join(feature_names())}")
    p.add_argument(
        "--backbone",
        choices=("efficientnet_lite0", "resnet18"),
        help="CNN for embeddings (default efficientnet_lite0, works offline)",
    )
    p.add_argument("--weights", help="local weights file for the backbone")
    p.add_argument(
        "--bins", type=int, help="RGB histogram bins per channel (default 8 -> 512 values)"
    )
    p.add_argument("--hash-size", type=int, help="ahash/dhash grid size (default 8 -> 64 bits)")
    p.add_argument("--thumb-size", type=int, help="thumbnail side in pixels (default 64)")
    p.add_argument("--rebuild", help="comma-separated features to recompute for every image")
    add_engine(p)
    p.add_argument(
        "--vector-dtype",
        choices=("float32", "float16", "int8"),
        help="copy of float features that searches scan; float16/int8 re-rank exactly (default float32)",
    )
    p.add_argument(
        "--model-precision",
        choices=("float32", "int8"),
        help="the CNN's arithmetic: int8 is a quantized graph on onnxruntime, faster on a CPU, "
        "as good for search, other features (default float32)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: one per core, each also embedding, with onnxruntime; cores - 1 decoding beside the model otherwise); 0: none; with --dask local: Dask worker processes (default: cores)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument(
        "--dask",
        metavar="ADDRESS|local",
        help="extract features on Dask workers: a scheduler address (tcp://host:8786) or 'local' for a LocalCluster",
    )
    p.add_argument(
        "--path-map",
        metavar="SRC=DST",
        action="append",
        help="with --dask: workers read files under SRC at DST instead (repeatable)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="when another process is updating the index, wait this long for it to finish (default 600; 0: not at all); still running after that: nothing is done, exit status 1",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("search", help="find the indexed images nearest to one or more query images")
    p.add_argument(
        "query", nargs="+", help="image file(s) or indexed id(s); several are one combined query"
    )
    p.add_argument("--root", required=True, help="the indexed folder")
    add_engine(p)
    p.add_argument("--index-dir", default=None, help="where the index lives (default: ROOT/.imrec)")
    p.add_argument(
        "--mode",
        default=None,
        choices=(*modes, HYBRID_MODE),
        help="what to compare (default embedding; hybrid when --weights is given)",
    )
    p.add_argument(
        "--metric", default=None, help="distance (default: the mode's; see docs/search.md)"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="hybrid search: MODE=WEIGHT[:METRIC],... (default embedding=0.7,rgb=0.3); implies --mode hybrid",
    )
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    scope = p.add_argument_group("which images may be found (each given must hold)")
    scope.add_argument("--folder", help="only below this folder (relative to ROOT)")
    scope.add_argument(
        "--glob", dest="path_glob", help="only paths matching this glob, e.g. 'cats/*.jpg'"
    )
    scope.add_argument(
        "--tag", dest="tags", action="append", help="only images with this tag (repeatable: any)"
    )
    scope.add_argument(
        "--exclude-tag", dest="exclude_tags", action="append", help="never images with this tag"
    )
    scope.add_argument("--where", help='an SQL condition on the catalog, e.g. "width >= 1000"')
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--exact",
        dest="exact",
        action="store_const",
        const=True,
        default=None,
        help="always scan every row (default: exact below 1,000,000 rows or without an ANN index)",
    )
    how.add_argument(
        "--ann",
        dest="exact",
        action="store_const",
        const=False,
        help="use the ANN index (`imrec ann`), candidates re-ranked exactly",
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "ann",
        help="build the approximate nearest-neighbour index of a feature (extra: imrec-widgets[ann])",
    )
    add_root(p)
    p.add_argument("--feature", default="embedding", choices=ann_features)
    p.add_argument(
        "--metric",
        default=None,
        choices=("cosine", "euclidean"),
        help="distance it serves (default: the feature's)",
    )
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~sqrt(rows))")
    p.add_argument("--m", type=int, default=None, help="PQ sub-quantizers (default dim/10)")
    p.add_argument("--nprobe", type=int, default=None, help="lists visited per query")
    p.add_argument(
        "--candidates", type=int, default=None, help="candidates re-ranked exactly (default 400)"
    )
    p.add_argument("--drop", action="store_true", help="delete the ANN index instead")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("umap", help="precompute the 2-D UMAP map and clusters of a feature")
    add_root(p)
    p.add_argument("--feature", default="embedding", choices=mappable_features())
    p.add_argument(
        "--refit", action="store_true", help="fit again instead of extending the cached map"
    )
    p.add_argument("--n-neighbors", type=int, default=15, help="UMAP n_neighbors (default 15)")
    p.add_argument(
        "--sample-size",
        type=int,
        default=20_000,
        help="images to fit on; the rest are transformed (default 20000)",
    )
    p.add_argument(
        "--clusters",
        type=int,
        default=None,
        help="KMeans with this many clusters (default: HDBSCAN)",
    )
    p.add_argument(
        "--min-cluster-size",
        type=int,
        default=None,
        help="HDBSCAN min_cluster_size (default ~1%% of images)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")

    p = sub.add_parser("demo", help="index real sample photos and open the quick-start notebook")
    p.add_argument(
        "folder",
        nargs="?",
        default=DEMO_FOLDER,
        help=f"where to put photos and notebooks (default {DEMO_FOLDER})",
    )
    p.add_argument("--no-lab", action="store_true", help="only write and index the photos")
    p.add_argument(
        "--no-browser", action="store_true", help="start JupyterLab without opening a browser"
    )
    p.add_argument(
        "--no-warm-up",
        action="store_true",
        help="do not compile UMAP in the background (the first map then takes a minute longer)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("info", help="counts, settings and sizes of an index")
    add_root(p)
    p.add_argument("--errors", action="store_true", help="also list the unreadable files and why")
    p.add_argument("--json", action="store_true", help="print as JSON")

    def add_selection(p: argparse.ArgumentParser, *, with_all: bool = False) -> None:
        p.add_argument("name", help="the tag: 1-100 characters, any script")
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--ids", nargs="+", help="image ids (as `imrec search --json` prints)")
        which.add_argument(
            "--from-file",
            metavar="PATHS.TXT",
            help="a text file of image paths, one a line (relative to ROOT, or absolute)",
        )
        which.add_argument(
            "--query",
            nargs="+",
            metavar="IMAGE",
            help="the images a search for these image file(s) or id(s) finds (-k of them)",
        )
        if with_all:
            which.add_argument("--all", action="store_true", help="every image with the tag")
        p.add_argument("-k", type=int, default=20, help="with --query: how many (default 20)")
        p.add_argument(
            "--mode",
            default="embedding",
            choices=modes,
            help="with --query: how to search (default embedding)",
        )
        add_engine(p)

    p = sub.add_parser("tag", help="give a tag to images (by id, a list of paths, or a search)")
    add_root(p)
    add_selection(p)

    p = sub.add_parser("untag", help="take a tag off images")
    add_root(p)
    add_selection(p, with_all=True)

    p = sub.add_parser("tags", help="list the tags and how many images have each")
    add_root(p)
    p.add_argument("--show", metavar="NAME", default=None, help="list the images with this tag")
    p.add_argument("--json", action="store_true", help="print JSON")

    export = sub.add_parser(
        "export",
        help="copy tagged images out as a labelled dataset (files), or a feature for TensorBoard",
    )
    formats = export.add_subparsers(dest="format", metavar="FORMAT")
    formats.required = True
    p = formats.add_parser(
        "files",
        help="the files of tagged (or chosen) images, one folder per tag (torchvision ImageFolder)",
    )
    add_root(p)
    p.add_argument("dest", help="folder to export into (created; nothing in it is replaced)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tag", nargs="+", help="the tag(s) whose images to export")
    which.add_argument("--ids", nargs="+", help="image ids to export (their tags name the folders)")
    p.add_argument("--how", choices=("copy", "symlink", "hardlink"), default="copy")
    p.add_argument(
        "--layout",
        choices=("by_tag", "flat"),
        default="by_tag",
        help="by_tag: DEST/TAG/FILE (default); flat: DEST/FILE; labels.csv lists path,tag",
    )
    p = formats.add_parser("tensorboard", help="a feature as a TensorBoard projector run")
    add_root(p)
    p.add_argument(
        "--feature",
        default="embedding",
        help=f"one of {', '.join(mappable_features())} the index has (default embedding)",
    )
    p.add_argument(
        "--out",
        default="logs",
        help="TensorBoard log folder to write the run into (default ./logs)",
    )
    p.add_argument("--run", default=None, help="run (sub-folder) name (default: FOLDER-FEATURE)")
    p.add_argument(
        "--max-points",
        type=int,
        default=None,
        help="export a fixed random sample of at most N images",
    )
    p.add_argument("--no-sprite", action="store_true", help="leave out the thumbnail sprite")

    p = sub.add_parser(
        "evaluate", help="measure retrieval quality (P@k, R@k, mAP@k, ms/query) on labelled images"
    )
    add_root(p)
    p.add_argument(
        "--labels",
        default=None,
        help="CSV with a header id,label or path,label, or \"tags\" (each image's one tag) (default: each image's parent folder name)",
    )
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help="modes to measure: embedding, rgb:cosine, hybrid, ... (default: every mode and metric, and hybrid)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="hybrid weights MODE=WEIGHT[:METRIC],... (default embedding=0.7,rgb=0.3)",
    )
    p.add_argument("--out", default=None, help="also write the rows to this .csv or .json file")

    p = sub.add_parser(
        "duplicates", help="find groups of near-identical (and byte-identical) images"
    )
    add_root(p)
    p.add_argument("--mode", default="dhash", choices=modes)
    p.add_argument("--metric", default=None, help="distance (default: the mode's)")
    p.add_argument(
        "--max-distance",
        type=float,
        default=None,
        help="link images at most this far apart (default 4 bits of a 64-bit hash)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--move-extras",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="move all but one image of each group to DIR (default <root>/.imrec-moved/<date>); "
        "lists what would move unless --yes",
    )
    p.add_argument("--yes", action="store_true", help="with --move-extras: move the files")

    p = sub.add_parser("restore", help="put back files that `duplicates --move-extras` moved")
    add_root(p)
    p.add_argument("--batch", default=None, help="only this clean-up's files (default: all)")
    return parser


def _index_command(args: argparse.Namespace) -> str:
    """The ``imrec index`` command line that fills the index ``args`` point at."""
    index_dir = getattr(args, "index_dir", None)
    return f"imrec index {args.root}" + (f" --index-dir {index_dir}" if index_dir else "")


DEBUG_ENV = "IMREC_DEBUG"
"""Set to 1 (or pass ``--debug``) and every error is printed with its traceback."""

BUG_LINE = "this is a bug in imrec-widgets, please report it with the traceback above"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``imrec`` console script; returns the exit status.

    Errors a user can cause or fix (``ImrecError``, and ``OSError`` from the system: a missing
    file, no permission, a full disk) are printed as one line; anything else is a bug and is
    printed with its traceback and a line asking for a report. ``--debug`` or ``IMREC_DEBUG=1``
    prints every error's traceback.
    """
    import os
    import traceback
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")

    def one_line(message: Any, category: Any, *_rest: Any, **_kw: Any) -> None:
        print(f"imrec {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ImrecError, OSError) as exc:
        if debug:
            traceback.print_exc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, EmptyIndexError):
            message = f"no searchable images indexed yet; run `{_index_command(args)}`"
        print(f"imrec {args.command}: error: {message}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"imrec {args.command}: {BUG_LINE}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
