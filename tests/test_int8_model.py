"""model_precision="int8": a quantized graph on ONNX Runtime, part of the index's identity, made
once from fixed calibration images, and no torch stand-in when it cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imrec_widgets import ImageIndex, IndexConfigError
from imrec_widgets.cli import main
from imrec_widgets.errors import EngineFallbackWarning, EngineUnavailableError
from imrec_widgets.features import embeddings, engines
from imrec_widgets.features.embeddings import EmbeddingFeature
from imrec_widgets.samples import VARIANTS, sample_photos

REPO = Path(__file__).resolve().parents[1]
LITE0 = ("efficientnet_lite0", None)

# quantizes and runs the CNN
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def indexes(
    variant_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ImageIndex]:
    """The photos and their edited copies, indexed by the float32 and by the int8 model."""
    built = {}
    for precision in ("float32", "int8"):
        index = ImageIndex.open(
            variant_folder,
            tmp_path_factory.mktemp(precision),
            features=["embedding"],
            model_precision=precision,
        )
        index.update(progress=False)
        built[precision] = index
    return built


@pytest.fixture(scope="module")
def prepared() -> np.ndarray:
    model = EmbeddingFeature()
    return np.stack([model.prepare(image) for _, image in list(sample_photos())[:4]])


def copies_found(index: ImageIndex, folder: Path) -> int:
    """How many of each photo's 4 edited copies its 5 nearest neighbours hold, over all photos."""
    found = 0
    for original in sorted(p for p in folder.rglob("*.jpg") if not p.stem.endswith(VARIANTS)):
        names = {hit.path.name for hit in index.search(original, k=5)}
        found += len(names & {f"{original.stem}_{v}.jpg" for v in VARIANTS})
    return found


def test_int8_features_differ_yet_find_the_copies_float32_finds(
    indexes: dict[str, ImageIndex], variant_folder: Path
) -> None:
    exact, int8 = indexes["float32"], indexes["int8"]
    assert int8.info()["feature_config"]["embedding"]["precision"] == "int8"
    assert "precision" not in exact.info()["feature_config"]["embedding"]
    a, b = exact.features("embedding"), int8.features("embedding")
    cosine = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert 0.9 < cosine.mean() < 0.9999  # close, but not the float features
    assert copies_found(int8, variant_folder) >= copies_found(exact, variant_folder) - 1


def test_queries_run_the_int8_graph_without_torch(
    indexes: dict[str, ImageIndex], variant_folder: Path
) -> None:
    int8 = indexes["int8"]
    query = sorted(variant_folder.rglob("*.jpg"))[5]
    hits = int8.search(query, k=3)
    assert hits[0].path.name == query.name and hits[0].distance < 1e-5  # the same graph's vector
    float_query = indexes["float32"].feature_extractors()["embedding"]
    # a float32 query vector would sit visibly off the int8 row of the same image
    query_vector = float_query.extract([Image.open(query).convert("RGB")])[0]
    ids = int8.ids()
    row = int8.features("embedding", [ids[[p.name for p in int8.paths(ids)].index(query.name)]])[0]
    assert 1 - query_vector @ row / np.linalg.norm(query_vector) / np.linalg.norm(row) > 1e-4

    script = (
        "import sys, json\n"
        "from imrec_widgets import ImageIndex\n"
        f"idx = ImageIndex.open({str(variant_folder)!r}, {str(int8.index_dir)!r})\n"
        f"hits = idx.search({str(query)!r}, k=5)\n"
        "print(json.dumps({'ids': [h.id for h in hits], 'loaded': [m for m in "
        "('torch', 'timm', 'torchvision') if m in sys.modules]}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    report = json.loads(run.stdout)
    assert report == {"ids": [hit.id for hit in int8.search(query, k=5)], "loaded": []}


def test_int8_is_part_of_the_index_identity(
    indexes: dict[str, ImageIndex], capsys: pytest.CaptureFixture[str]
) -> None:
    int8, exact = indexes["int8"], indexes["float32"]
    assert main(["info", str(int8.root), "--index-dir", str(int8.index_dir)]) == 0
    assert "(1280-d, int8 model)" in capsys.readouterr().out
    reopened = ImageIndex.open(int8.root, int8.index_dir)
    assert reopened.settings["model_precision"] == "int8"
    assert reopened.feature_extractors()["embedding"].precision == "int8"
    with pytest.raises(IndexConfigError, match="model_precision='int8', not 'float32'"):
        ImageIndex.open(int8.root, int8.index_dir, model_precision="float32")
    with pytest.raises(IndexConfigError, match="rebuild=\\['embedding'\\]"):
        ImageIndex.open(exact.root, exact.index_dir, model_precision="int8")
    switched = ImageIndex.open(
        exact.root, exact.index_dir, model_precision="int8", rebuild=["embedding"]
    )
    assert switched.feature_extractors()["embedding"].precision == "int8"
    with pytest.raises(ValueError, match="unknown model_precision 'int4'"):
        ImageIndex.open(exact.root, exact.index_dir, model_precision="int4")


def test_an_index_from_before_the_setting_is_float32(photos: Path, tmp_path: Path) -> None:
    index = ImageIndex.open(photos, tmp_path / "idx", features=["dhash"])
    index.update(progress=False, workers=0)
    catalog = index.catalog
    settings = catalog.get_meta("settings")
    del settings["model_precision"]
    catalog.set_meta("settings", settings)
    index.close()
    assert ImageIndex.open(photos, tmp_path / "idx").settings["model_precision"] == "float32"
    ImageIndex.open(photos, tmp_path / "idx", model_precision="float32")  # no conflict
    with pytest.raises(IndexConfigError):
        ImageIndex.open(photos, tmp_path / "idx", model_precision="int8")


def test_only_onnxruntime_runs_the_int8_model(
    indexes: dict[str, ImageIndex], capsys: pytest.CaptureFixture[str]
) -> None:
    for engine in ("torch", "openvino"):
        with pytest.raises(ValueError, match=f"runs on onnxruntime only, not {engine}"):
            EmbeddingFeature(precision="int8", engine=engine)
    assert EmbeddingFeature(precision="int8", device="cuda").engine_used == "onnxruntime"
    int8 = indexes["int8"]
    query = str(next(int8.root.rglob("*.jpg")))  # a file: its vector needs the model
    args = ["search", query, "--root", str(int8.root), "--index-dir", str(int8.index_dir)]
    assert main([*args, "--engine", "torch"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runs on onnxruntime only, not torch" in err[0]


def test_the_int8_graph_is_made_once_and_a_corrupt_one_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared: np.ndarray
) -> None:
    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    first = EmbeddingFeature(precision="int8").embed(prepared)
    graph = engines.graph_path("efficientnet_lite0", 224, embeddings._weights_file(*LITE0))
    quantized = engines.int8_graph_path(graph)
    made = [graph, quantized, engines.sidecar_path(graph), engines.sidecar_path(quantized)]
    assert sorted((tmp_path / "cache" / "onnx").iterdir()) == sorted(made)
    assert quantized.stat().st_size < graph.stat().st_size / 3

    def no_second_quantization(*args: object) -> None:
        raise AssertionError("quantized again")

    with monkeypatch.context() as patch:
        patch.setattr(engines, "quantize_int8", no_second_quantization)
        patch.setattr(embeddings, "_SESSIONS", {})
        np.testing.assert_array_equal(EmbeddingFeature(precision="int8").embed(prepared), first)

    quantized.write_bytes(b"not an onnx graph")
    monkeypatch.setattr(embeddings, "_SESSIONS", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)  # no torch stand-in
        again = EmbeddingFeature(precision="int8").embed(prepared)
    assert quantized.stat().st_size > 1000  # made again from the float graph
    cosine = np.sum(again * first, axis=1) / np.linalg.norm(again, axis=1)
    assert (cosine / np.linalg.norm(first, axis=1)).min() > 0.9999  # the same recipe, alike


def test_a_failed_quantization_leaves_no_file_and_is_one_error_line(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prepared: np.ndarray,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import onnxruntime.quantization

    def half_then_crash(model_input: str, model_output: str, *args: object, **kw: object) -> None:
        Path(model_output).write_bytes(b"\x08\x07partial")
        raise RuntimeError("calibration crashed")

    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", half_then_crash)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)
        with pytest.raises(EngineUnavailableError, match="int8 quantization failed") as raised:
            EmbeddingFeature(precision="int8").embed(prepared[:1])
    assert "\n" not in str(raised.value)
    left = sorted(p.name for p in (tmp_path / "cache" / "onnx").iterdir())
    # the float graph and its checksum only, nothing partial
    assert len(left) == 2 and left[1] == f"{left[0]}.sha256" and "int8" not in left[0]

    assert main(["index", str(photos), "--model-precision", "int8", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int8 quantization failed" in err[0]
    assert "using torch" not in err[0]
