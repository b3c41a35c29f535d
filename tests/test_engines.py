"""Embedding engines on real photos: ONNX Runtime / OpenVINO give torch's features, the cached
graph, no torch on the query path, and a readable fallback to torch for every failure."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from imrec_widgets import ImageIndex, indexer
from imrec_widgets.cli import main
from imrec_widgets.errors import EngineFallbackWarning
from imrec_widgets.features import embeddings, engines
from imrec_widgets.features.embeddings import EmbeddingFeature
from imrec_widgets.imageio import load_rgb
from imrec_widgets.indexer import DECODE_MIN_SIDE

REPO = Path(__file__).resolve().parents[1]
ONNX_ENGINES = [
    pytest.param(
        name, marks=pytest.mark.skipif(not engines.installed(name), reason=f"{name} not installed")
    )
    for name in ("onnxruntime", "openvino")
]
CATS = range(281, 286)
ESPRESSO, MISSILE = 967, 657
PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "camera")

# exports and runs the CNN on three engines
pytestmark = pytest.mark.slow


def photo(name: str) -> Image.Image:
    pixels = getattr(skimage.data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return Image.fromarray(pixels[..., :3])


@pytest.fixture(scope="module")
def torch_model() -> EmbeddingFeature:
    return EmbeddingFeature(engine="torch")


@pytest.fixture(scope="module")
def prepared(torch_model: EmbeddingFeature) -> np.ndarray:
    return np.stack([torch_model.prepare(photo(name)) for name in PHOTOS])


@pytest.fixture(scope="module")
def torch_index(sample_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    index = ImageIndex.open(sample_folder, tmp_path_factory.mktemp("torch_index"), engine="torch")
    index.update(progress=False, workers=0)
    return index


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_engine_gives_torchs_features_and_classes(
    engine: str, torch_model: EmbeddingFeature, prepared: np.ndarray
) -> None:
    feature = EmbeddingFeature(engine=engine)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)
        vectors = feature.embed(prepared)
    assert feature.engine_used == engine
    assert cosine_rows(vectors, torch_model.embed(prepared)).min() >= 0.9999
    classes = feature.classify(prepared).argmax(axis=1).tolist()
    assert classes == torch_model.classify(prepared).argmax(axis=1).tolist()
    assert classes[0] == ESPRESSO and classes[1] in CATS and classes[3] == MISSILE
    np.testing.assert_allclose(feature.embed(prepared[2:3])[0], vectors[2], atol=1e-4, rtol=0)


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_engine_search_and_update_match_torch(
    engine: str, torch_index: ImageIndex, sample_folder: Path, tmp_path: Path
) -> None:
    other = ImageIndex.open(sample_folder, torch_index.index_dir, engine=engine)  # not identity
    queries = sorted(sample_folder.rglob("*.jpg"))[:6]
    for query in queries:
        want = torch_index.search(query, k=10)
        got = other.search(query, k=10)
        assert [hit.id for hit in got] == [hit.id for hit in want]
        np.testing.assert_allclose([h.distance for h in got], [h.distance for h in want], atol=2e-5)
    assert other.feature_extractors()["embedding"].engine_used == engine

    rebuilt = ImageIndex.open(sample_folder, tmp_path / "index", engine=engine)
    rebuilt.update(progress=False, workers=1)
    assert [str(p) for p in rebuilt.paths(range(18))] == [
        str(p) for p in torch_index.paths(range(18))
    ]
    assert (
        cosine_rows(rebuilt.features("embedding"), torch_index.features("embedding")).min()
        >= 0.9999
    )


def test_auto_prefers_the_fastest_installed_cpu_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "_nvidia_driver", lambda: False)
    monkeypatch.setattr(engines, "installed", lambda name: True)
    assert engines.choose("auto", None) == "onnxruntime"
    monkeypatch.setattr(engines, "installed", lambda name: name == "openvino")
    assert engines.choose("auto", None) == "openvino"
    monkeypatch.setattr(engines, "installed", lambda name: False)
    assert engines.choose("auto", None) == "torch"
    assert engines.choose("auto", "cuda:0") == "torch"
    assert engines.choose("onnxruntime", None) == "onnxruntime"
    with pytest.raises(ValueError, match="openvino"):
        EmbeddingFeature(engine="tensorrt")
    with pytest.raises(ValueError, match="engine"):
        ImageIndex.open(REPO, engine="tensorrt")


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_graph_is_cached_per_weights_file(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared: np.ndarray
) -> None:
    import torch

    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    source = Path(embeddings._weights_file("efficientnet_lite0", None))
    timm_format = tmp_path / "lite0-timm.pth"  # same values, another file
    torch.save(embeddings._efficientnet_lite0_state_dict(None), timm_format)

    first = EmbeddingFeature(engine=engine).embed(prepared[:2])
    graphs = sorted((tmp_path / "cache" / "onnx").iterdir())
    assert [g.suffix for g in graphs] == [".onnx", ".sha256"]  # the graph and its checksum
    assert engines.weights_digest(source)[:20] in graphs[0].name
    stamp = graphs[0].stat().st_mtime_ns
    EmbeddingFeature(engine=engine).embed(prepared[:2])  # reused, not exported again
    assert graphs[0].stat().st_mtime_ns == stamp

    second = EmbeddingFeature(engine=engine, weights=timm_format).embed(prepared[:2])
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 4  # two graphs, two checksums
    np.testing.assert_allclose(second, first, atol=1e-5)


def test_query_path_never_imports_torch_once_the_graph_is_cached(
    torch_index: ImageIndex, sample_folder: Path
) -> None:
    query = sorted(sample_folder.rglob("*.jpg"))[0]
    script = (
        "import sys, json\n"
        "from imrec_widgets import ImageIndex\n"
        f"idx = ImageIndex.open({str(sample_folder)!r}, {str(torch_index.index_dir)!r})\n"
        f"hits = idx.search({str(query)!r}, k=10)\n"
        "print(json.dumps({'ids': [h.id for h in hits], 'engine': "
        "idx.feature_extractors()['embedding'].engine_used, "
        "'loaded': [m for m in ('torch', 'timm', 'torchvision', 'umap', 'bqplot', 'sklearn') if m in sys.modules]}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        )
        for _ in range(2)  # the first may export the graph; the second finds it cached
    ]
    report = json.loads(runs[1].stdout)
    assert report["engine"] != "torch"
    assert report["loaded"] == []
    assert report["ids"] == [hit.id for hit in torch_index.search(query, k=10)]


def fallback(feature: EmbeddingFeature, batch: np.ndarray, match: str) -> np.ndarray:
    with pytest.warns(EngineFallbackWarning, match=match) as record:
        vectors = feature.embed(batch)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert feature.engine_used == "torch"
    return vectors


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_failed_export_leaves_no_graph_and_falls_back(
    engine: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    torch_model: EmbeddingFeature,
    prepared: np.ndarray,
) -> None:
    import torch.onnx

    def half_then_crash(model: object, args: object, path: str, **kwargs: object) -> None:
        Path(path).write_bytes(b"\x08\x07partial")
        raise RuntimeError("exporter crashed")

    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(torch.onnx, "export", half_then_crash)
    vectors = fallback(EmbeddingFeature(engine=engine), prepared[:2], "export failed")
    np.testing.assert_array_equal(vectors, torch_model.embed(prepared[:2]))
    assert list((tmp_path / "cache" / "onnx").iterdir()) == []


def test_unwritable_cache_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared: np.ndarray
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(engines.CACHE_ENV, str(blocker))
    fallback(EmbeddingFeature(engine="onnxruntime"), prepared[:1], "not writable")


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_corrupt_cached_graph_falls_back_and_is_removed(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared: np.ndarray
) -> None:
    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    weights = embeddings._weights_file("efficientnet_lite0", None)
    graph = engines.graph_path("efficientnet_lite0", 224, weights)
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"this is not an onnx graph")
    # with a checksum that matches it, so that it reaches the engine (which cannot read it)
    digest = hashlib.sha256(graph.read_bytes()).hexdigest()
    engines.sidecar_path(graph).write_text(json.dumps({"file": graph.name, "sha256": digest}))
    fallback(EmbeddingFeature(engine=engine), prepared[:1], "unreadable")
    assert not graph.exists()  # the next run exports it again
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)
        assert EmbeddingFeature(engine=engine).embed(prepared[:1]).shape == (1, 1280)


def test_missing_or_broken_engine_package_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared: np.ndarray
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # "not installed"
    fallback(EmbeddingFeature(engine="openvino"), prepared[:1], "openvino is not installed")

    broken = tmp_path / "site" / "onnxruntime"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        "raise ImportError('libonnxruntime.so: cannot open shared object file')\n"
    )
    monkeypatch.syspath_prepend(str(broken.parent))
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(embeddings, "_SESSIONS", {})
    fallback(
        EmbeddingFeature(engine="onnxruntime"),
        prepared[:1],
        "onnxruntime is not installed or broken",
    )


def test_update_with_a_broken_engine_warns_once_and_indexes(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["index", str(photos), "--engine", "onnxruntime", "-q", "--workers", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "using torch" in err[0]
    assert len(ImageIndex.open(photos)) == 18


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_cli_engine_option(
    engine: str, torch_index: ImageIndex, sample_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query = str(sorted(sample_folder.rglob("*.jpg"))[0])
    args = [
        "search",
        query,
        "--root",
        str(sample_folder),
        "--index-dir",
        str(torch_index.index_dir),
        "--json",
    ]
    assert main([*args, "--engine", engine]) == 0
    got = json.loads(capsys.readouterr().out)
    assert main([*args, "--engine", "torch"]) == 0
    want = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in want["hits"]]


def test_onnxruntime_workers_embed_their_chunks_even_after_the_writer_ran_the_model(
    photos: Path, prepared: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers (forked from a process that already holds ONNX Runtime sessions, as a
    notebook that searched does) embed what they decode; the writing process embeds nothing."""
    model = EmbeddingFeature(engine="onnxruntime")
    for threads in (1, 2):
        with model.using_threads(threads):
            model.embed(prepared[:2])

    def not_here(batch: np.ndarray) -> np.ndarray:
        raise AssertionError("the writing process embedded")

    monkeypatch.setattr(model, "embed", not_here)
    settings = ImageIndex.open(photos, features=["embedding"]).settings
    found = indexer.scan([photos])
    tasks = list(enumerate(found.files[p] for p in sorted(found.files)))
    written: list[indexer.Decoded] = []
    batches = list(indexer.batched(tasks, 8))
    indexer.run_batches(batches, settings, os.cpu_count() or 1, written.extend, model=model)

    assert [d.entry.id for d in written] == [id_ for id_, _ in tasks]
    reference = EmbeddingFeature(engine="onnxruntime")
    want = reference.embed(
        np.stack(
            [
                reference.prepare(load_rgb(photos / d.entry.path, min_side=DECODE_MIN_SIDE))
                for d in written
            ]
        )
    )
    got = np.stack([d.embedding for d in written])
    assert cosine_rows(got, want).min() >= 0.99999
    assert indexer.default_workers(model) == os.cpu_count()
    # fewer workers than cores: the writing process embeds, on the cores they leave
    monkeypatch.setattr(indexer.os, "cpu_count", lambda: 4)
    with pytest.raises(AssertionError, match="the writing process embedded"):
        indexer.run_batches(batches, settings, 2, written.extend, model=model)
    assert indexer.default_workers(EmbeddingFeature(engine="torch")) == max(
        1, (os.cpu_count() or 1) - 1
    )


def test_a_first_index_exports_the_graph_once_in_the_writer_not_in_each_worker(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(embeddings, "_SESSIONS", {})
    real_export = engines.export
    log = tmp_path / "exports.log"

    def logged_export(*args: object) -> None:
        with open(log, "a") as fh:  # forked workers inherit this patch: a line each
            fh.write(f"{os.getpid()}\n")
        real_export(*args)

    monkeypatch.setattr(engines, "export", logged_export)
    index = ImageIndex.open(photos, tmp_path / "index", engine="onnxruntime")
    report = index.update(progress=False, workers=os.cpu_count())
    assert (report.new, report.errors) == (18, 0)
    assert log.read_text().split() == [str(os.getpid())]
