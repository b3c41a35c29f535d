"""Every derived file is checked before it is trusted: names read from an index never become
paths outside it, tampered or stale copies never change an answer, damaged files and bad
settings are one readable line (issue 22, items 1-4 and 9)."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image
from test_ann import assert_exact, opened, stored_queries, write_float_index

from imrec_widgets import ImageIndex, ann, derived
from imrec_widgets.catalog import Catalog
from imrec_widgets.errors import AnnWarning


def ann_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, AnnWarning)]


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("derived")
    write_float_index(folder, rows=2000)
    opened(folder).build_ann("embedding")
    return folder


@pytest.fixture
def copy(built: Path, tmp_path: Path) -> Path:
    target = tmp_path / "deep" / "er" / "copy"
    shutil.copytree(built, target)
    return target


def set_stamp(folder: Path, **changes: object) -> dict:
    catalog = Catalog(folder / "index" / "catalog.sqlite")
    stamp = {**catalog.get_meta(ann.stamp_key("embedding")), **changes}
    catalog.set_meta(ann.stamp_key("embedding"), stamp)
    catalog.close()
    return stamp


# -- item 1: names from the index never become paths outside it ---------------------------------
def test_checked_name_takes_only_the_names_the_code_writes(tmp_path: Path) -> None:
    pattern = derived.file_name_pattern("f32")
    assert (
        derived.checked_name(tmp_path, "embedding.17.f32", pattern) == tmp_path / "embedding.17.f32"
    )
    for name in (
        "../../../victim.txt",
        "/etc/passwd",
        "embedding.17.f32/../../x",
        "..",
        "embedding.17.f32\n",
        "embedding.-1.f32",
        "embedding.1.faiss",
        "sub/embedding.1.f32",
        "embedding.1.f32\\..",
        17,
        None,
        ["embedding.1.f32"],
    ):
        assert derived.checked_name(tmp_path, name, pattern) is None, name


@pytest.mark.parametrize("name", ["../../../victim.txt", "ABSOLUTE"])
def test_a_crafted_rows_file_name_writes_nothing_outside_the_index(
    copy: Path, tmp_path: Path, name: str
) -> None:
    """The issue's crafted stamp: ``rows_file`` pointing out of the folder, ``covered_until=0``
    so the next refresh rewrites "uncovered" rows. Nothing outside the index is touched, the
    ANN index is rebuilt from the stored feature with one warning, answers stay exact."""
    victim = copy.parent / "victim.txt"
    # as large as the rows file, so that the old size check let it through
    precious = os.urandom(opened(copy).ann_info()["embedding"]["rows_bytes"] + 100)
    victim.write_bytes(precious)
    outside = files_under(tmp_path / "deep")
    crafted = str(victim) if name == "ABSOLUTE" else name
    assert (copy / "index" / "ann" / crafted).resolve() == victim.resolve()
    set_stamp(copy, rows_file=crafted, covered_until=0)

    catalog = Catalog(copy / "index" / "catalog.sqlite")
    store = opened(copy).store
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = ann.refresh(
            copy / "index", catalog, store, "embedding", {"backbone": "synthetic", "dim": 32}
        )
    catalog.close()
    assert victim.read_bytes() == precious
    lines = ann_lines(caught)
    assert len(lines) == 1 and "not a file of this index" in lines[0] and "\n" not in lines[0]
    assert done.startswith("rebuilt")
    changed = {
        path: state
        for path, state in files_under(tmp_path / "deep").items()
        if not path.startswith(str(copy / "index"))
    }
    assert changed == {p: s for p, s in outside.items() if not p.startswith(str(copy / "index"))}

    idx = opened(copy)
    stamp = idx.ann_info()["embedding"]
    assert ann.stamp_problem(stamp, "embedding") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        for q in stored_queries(idx, 3):
            found = idx.search(q, exact=False)
            assert_exact(found, idx.search(q, exact=True))


@pytest.mark.parametrize(
    "change",
    [
        {"file": "../embedding.1.faiss"},
        {"file": "/tmp/x.faiss"},
        {"sums_file": "../../x.sum"},
        {"rows_file": "rgb.1.f32"},  # another feature's file
        {"rows_bytes": "12"},
        {"dim": True},
        {"params": {"nlist": 10**30}},
        {"covered_until": float("nan")},
        {"sha256": "0" * 10},
    ],
)
def test_a_crafted_stamp_is_never_followed_by_a_search(copy: Path, change: dict) -> None:
    set_stamp(copy, **change)
    idx = opened(copy)
    q = stored_queries(idx, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = [idx.search(v, exact=False) for v in q]
    lines = ann_lines(caught)
    assert lines and all("\n" not in line and "not used" in line for line in lines)
    for got, v in zip(found, q, strict=True):
        assert_exact(got, idx.search(v, exact=True))


def test_an_ann_folder_that_is_a_link_out_is_never_written(copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(copy / "index" / "ann")
    (copy / "index" / "ann").symlink_to(elsewhere)
    with pytest.raises(OSError, match="not a folder of this index"):
        opened(copy).build_ann("embedding")
    assert list(elsewhere.iterdir()) == []


def test_a_rows_file_that_is_a_link_is_not_rewritten_in_place(copy: Path, tmp_path: Path) -> None:
    stamp = opened(copy).ann_info()["embedding"]
    rows = copy / "index" / "ann" / stamp["rows_file"]
    victim = tmp_path / "victim.bin"
    shutil.copy(rows, victim)
    before = victim.read_bytes()
    rows.unlink()
    rows.symlink_to(victim)
    with pytest.raises(OSError):
        derived.open_for_update(rows)
    os.link(victim, tmp_path / "second-name.bin")
    with pytest.raises(OSError, match="not a plain file"):
        derived.open_for_update(victim)
    assert victim.read_bytes() == before


# -- item 2: tampered re-rank rows never change an answer ---------------------------------------
def test_a_swapped_ann_row_is_caught_and_the_answer_stays_exact(copy: Path) -> None:
    idx = opened(copy)
    stamp = idx.ann_info()["embedding"]
    q = stored_queries(idx, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        before = idx.search(q[0], k=10, exact=False)
    target, other = before.ids[0], before.ids[-1]
    rows = copy / "index" / "ann" / stamp["rows_file"]
    data = np.memmap(rows, dtype=np.float32, mode="r+", shape=(stamp["rows_bytes"] // 128, 32))
    data[target] = data[other]  # one row overwritten with another, same size
    data.flush()
    del data

    idx = opened(copy)  # the load-time check (256 rows of one chunk) does not see it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = idx.search(q[0], k=10, exact=False)
        more = [idx.search(v, k=10, exact=False) for v in q[1:]]
    lines = ann_lines(caught)
    assert lines and "do not match their checksums" in lines[0] and "\n" not in lines[0]
    exact = idx.search(q[0], k=10, exact=True)
    assert_exact(found, exact)
    assert target in found.ids
    for got, v in zip(more, q[1:], strict=True):
        assert_exact(got, idx.search(v, k=10, exact=True))
    # "more like this" on the damaged id reads its true row: the other image is not at 0.0
    with pytest.warns(AnnWarning, match="do not match their checksums"):
        like = idx.search(int(target), k=3, exact=False)
    assert_exact(like, idx.search(int(target), k=3, exact=True))
    assert like.distances[0] > 1e-4


# -- item 9: a crafted .faiss with a matching stamp ---------------------------------------------
def test_a_crafted_faiss_file_with_a_matching_stamp_is_refused_before_faiss_reads_it(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import struct

    stamp = opened(copy).ann_info()["embedding"]
    path = copy / "index" / "ann" / stamp["file"]
    data = bytearray(path.read_bytes())
    # the coarse quantizer's centroids declare 2**29 floats (2 GiB) in a file of a few kB
    at = data.index(b"IxFI") + 4 + 33
    struct.pack_into("<Q", data, at, 2**29)
    path.write_bytes(bytes(data))
    set_stamp(copy, sha256=hashlib.sha256(bytes(data)).hexdigest())

    import faiss

    def never(*args: object) -> None:
        raise AssertionError("faiss was asked to read a crafted file")

    monkeypatch.setattr(faiss, "deserialize_index", never)
    idx = opened(copy)
    q = stored_queries(idx, 1)[0]
    with pytest.warns(AnnWarning, match="is not the index its stamp describes"):
        found = idx.search(q, exact=False)
    assert_exact(found, idx.search(q, exact=True))

    set_stamp(copy, bytes=10**12, count=10**9)  # a stamp claiming a huge index
    with pytest.warns(AnnWarning, match="not used"):
        opened(copy).search(q, exact=False)


def test_real_faiss_files_pass_the_layout_check(copy: Path) -> None:
    idx = opened(copy)
    for metric in ("euclidean", "cosine"):
        stamp = idx.build_ann("embedding", metric, nlist=64)
        data = (copy / "index" / "ann" / stamp["file"]).read_bytes()
        assert ann._layout_problem(memoryview(data), stamp) is None
        assert len(data) <= ann._serialized_bytes(stamp)


def test_update_with_a_crafted_stamp_writes_nothing_outside_the_index(
    photos: Path, tmp_path: Path, index_of: IndexOf
) -> None:
    """Through ``update()`` on a real index, as the issue found it."""
    idx = index_of(photos, features=["rgb", "thumb"])
    idx.build_ann("rgb")
    victim = tmp_path / "victim.txt"
    catalog = idx.catalog
    stamp = catalog.get_meta(ann.stamp_key("rgb"))
    precious = os.urandom(stamp["rows_bytes"] + 100)
    victim.write_bytes(precious)
    catalog.set_meta(
        ann.stamp_key("rgb"), {**stamp, "rows_file": "../../../victim.txt", "covered_until": 0}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = idx.update(progress=False)
    assert victim.read_bytes() == precious
    lines = ann_lines(caught)
    assert len(lines) == 1 and "not a file of this index" in lines[0]
    assert (report.new, report.changed) == (0, 0)
    assert ann.stamp_problem(idx.ann_info()["rgb"], "rgb") is None


# -- item 2 (compact copies) and item 3 (int8 quantizer) ----------------------------------------
from imrec_widgets.compact import Quantizer  # noqa: E402
from imrec_widgets.errors import DerivedFileWarning, QuantizerMismatchWarning  # noqa: E402
from imrec_widgets.synthetic import write_feature_index  # noqa: E402

CONFIG = {"backbone": "synthetic", "dim": 48}


def drifted_index(folder: Path, seed: int = 0, diverse: int = 600) -> tuple[Path, np.ndarray]:
    """12 near-identical rows (what a quantizer was trained on) then ``diverse`` others."""
    rng = np.random.default_rng(seed)
    first = rng.standard_normal(48).astype(np.float32) * 0.05
    centres = rng.standard_normal((30, 48)).astype(np.float32)
    data = np.concatenate(
        [
            first + 0.001 * rng.standard_normal((12, 48)),
            centres[rng.integers(30, size=diverse)] + 0.5 * rng.standard_normal((diverse, 48)),
        ]
    ).astype(np.float32)
    catalog, store = write_feature_index(
        folder / "index",
        len(data),
        {"embedding": lambda ids: data[ids]},
        feature_config={"embedding": CONFIG},
        settings={"vector_dtype": "int8"},
        size=(8, 8),
    )
    Quantizer.train(data[:12]).save(store, "embedding", CONFIG, generation=0, rows=12)
    catalog.close()
    (folder / "images").mkdir(exist_ok=True)
    return folder, data


Drifted = Callable[..., tuple[Path, np.ndarray]]


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Drifted:
    """``drifted(folder, diverse=600)``: what ``drifted_index(folder, diverse=diverse)`` writes,
    copied (in milliseconds) from one written once per module, and its rows."""
    made: dict[int, tuple[Path, np.ndarray]] = {}

    def drifted(folder: Path, diverse: int = 600) -> tuple[Path, np.ndarray]:
        if diverse not in made:
            made[diverse] = drifted_index(tmp_path_factory.mktemp("drifted"), diverse=diverse)
        written, data = made[diverse]
        shutil.copytree(written, folder, dirs_exist_ok=True)
        return folder, data.copy()

    return drifted


def recall(idx: ImageIndex, exact: ImageIndex, queries: np.ndarray, k: int = 10) -> float:
    found = idx.search_many(list(queries), k=k)
    truth = exact.search_many(list(queries), k=k)
    hits = sum(len(set(a.ids) & set(b.ids)) for a, b in zip(found, truth, strict=True))
    return hits / (k * len(queries))


def int8_and_exact(folder: Path) -> tuple[ImageIndex, ImageIndex]:
    paths = (folder / "images", folder / "index")
    return ImageIndex.open(*paths, vector_dtype="int8"), ImageIndex.open(
        *paths, vector_dtype="float32"
    )


def drift_queries(data: np.ndarray, count: int = 100) -> np.ndarray:
    rng = np.random.default_rng(5)
    rows = data[12 + rng.choice(len(data) - 12, count, replace=False)]
    return (rows + 0.3 * rng.standard_normal(rows.shape)).astype(np.float32)


@pytest.mark.parametrize("diverse", [600, 4000])
def test_a_quantizer_trained_before_the_data_moved_is_refitted(
    tmp_path: Path, drifted: Drifted, diverse: int
) -> None:
    """The issue's case: trained on 12 near-identical rows, then more were added without
    int8. Measured without the range check: recall@10 0.939 (600 added) and 0.516 (4000)."""
    folder, data = drifted(tmp_path, diverse=diverse)
    queries = drift_queries(data)
    idx, exact = int8_and_exact(folder)
    with pytest.warns(
        QuantizerMismatchWarning, match="fall outside the range it was trained on"
    ) as record:
        got = recall(idx, exact, queries)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert got == 1.0, got
    assert idx.searcher._compact["embedding"][2].quantizer.clipped(data) == 0


@pytest.mark.parametrize("tamper", ["offsets", "scales"])
def test_a_tampered_quantizer_with_a_recomputed_checksum_drops_no_hit(
    tmp_path: Path, drifted: Drifted, tamper: str
) -> None:
    """Measured on this data without the range check: recall@10 0.342 (offsets) and 0.819
    (scales) of 1000 true hits; with it, every one."""
    folder, data = drifted(tmp_path, diverse=4000)
    paths = (folder / "images", folder / "index")
    idx = ImageIndex.open(*paths)
    good = Quantizer.train(data)
    offset, scale = good.offset.copy(), good.scale.copy()
    if tamper == "offsets":
        offset += 200 * scale  # every dimension shifted out of its range
    else:
        scale *= 100  # steps 100 times too coarse
    # saved as update() saves one: the checksum matches the tampered values
    Quantizer(offset, scale).save(idx.store, "embedding", CONFIG, generation=0, rows=len(data))
    queries = drift_queries(data)
    idx, exact = int8_and_exact(folder)
    with pytest.warns(QuantizerMismatchWarning, match="is not used"):
        assert recall(idx, exact, queries) == 1.0


def test_update_retrains_a_quantizer_when_the_rows_changed(photos: Path, index_of: IndexOf) -> None:
    idx = index_of(photos, features=["rgb", "thumb"], vector_dtype="int8")
    first = Quantizer.trained_at(idx.store, "rgb")
    assert first == idx.catalog.generation()
    Image.fromarray(np.full((40, 50, 3), (250, 10, 10), np.uint8)).save(photos / "red.jpg")
    ImageIndex.open(photos, vector_dtype="float32").update(progress=False)  # no int8 here
    idx = ImageIndex.open(photos, vector_dtype="int8")
    idx.update(progress=False)  # nothing new, yet the quantizer predates the red photo
    assert Quantizer.trained_at(idx.store, "rgb") == idx.catalog.generation() != first


def test_a_swapped_row_of_the_rerank_copy_is_caught_and_written_again(
    tmp_path: Path, drifted: Drifted
) -> None:
    folder, data = drifted(tmp_path)
    idx, exact = int8_and_exact(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizerMismatchWarning)
        idx.search(0)
    [copy_file] = (folder / "index" / "search").glob("embedding.*.f32")
    rows = np.memmap(copy_file, dtype=np.float32, mode="r+", shape=data.shape)
    rows[100] = rows[400]  # one row overwritten with another, same size
    rows.flush()
    del rows
    idx, exact = int8_and_exact(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        like = idx.search(100, k=5)
        found = idx.search(data[100], k=5)
    lines = [str(w.message) for w in caught if issubclass(w.category, DerivedFileWarning)]
    assert len(lines) == 1 and "differs from the stored feature" in lines[0]
    assert_exact(like, exact.search(100, k=5))
    assert found.ids[0] == 100 and found.distances[0] < 1e-6
    np.testing.assert_array_equal(
        np.fromfile(copy_file, dtype=np.float32).reshape(data.shape), data
    )


def test_a_search_folder_that_is_a_link_out_is_never_written(
    tmp_path: Path, drifted: Drifted
) -> None:
    folder, _data = drifted(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "index" / "search").symlink_to(elsewhere)
    idx, exact = int8_and_exact(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizerMismatchWarning)
        assert_exact(idx.search(7, k=5), exact.search(7, k=5))
    assert list(elsewhere.iterdir()) == []


# -- item 4: the cached ONNX graphs are verified before they are opened -------------------------
from imrec_widgets.features import embeddings, engines  # noqa: E402
from imrec_widgets.features.embeddings import EmbeddingFeature  # noqa: E402


@pytest.fixture(scope="module")
def prepared_photos() -> np.ndarray:
    from imrec_widgets.samples import sample_photos

    model = EmbeddingFeature(engine="torch")
    return np.stack([model.prepare(image) for _, image in list(sample_photos())[:3]])


@pytest.fixture(scope="module")
def torch_vectors(prepared_photos: np.ndarray) -> np.ndarray:
    return EmbeddingFeature(engine="torch").embed(prepared_photos)


def foreign_graph(path: Path, *, input_name: str = "images", dim: int = 1280) -> None:
    """A small ONNX graph that is not the model: the mean colour times fixed matrices, with
    the model's names and shapes unless told otherwise; its checksum written beside it."""
    import hashlib
    import json

    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
        helper.make_node("MatMul", ["mean", "w_embedding"], ["embedding"]),
        helper.make_node("MatMul", ["mean", "w_logits"], ["logits"]),
    ]
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor(
            "w_embedding", TensorProto.FLOAT, [3, dim], rng.random(3 * dim).tolist()
        ),
        helper.make_tensor("w_logits", TensorProto.FLOAT, [3, 1000], rng.random(3000).tolist()),
    ]
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["batch", 224, 224, 3])],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    engines.sidecar_path(path).write_text(json.dumps({"file": path.name, "sha256": digest}))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
def test_the_int8_graph_copied_over_the_float_one_is_made_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prepared_photos: np.ndarray,
    torch_vectors: np.ndarray,
) -> None:
    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(embeddings, "_SESSIONS", {})
    EmbeddingFeature(precision="int8").embed(prepared_photos[:1])
    graph = engines.graph_path(
        "efficientnet_lite0", 224, embeddings._weights_file("efficientnet_lite0", None)
    )
    quantized = engines.int8_graph_path(graph)
    assert engines.graph_problem(graph) is None and engines.graph_problem(quantized) is None
    shutil.copy(quantized, graph)  # the float graph's checksum stays beside it
    monkeypatch.setattr(embeddings, "_SESSIONS", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = EmbeddingFeature(engine="onnxruntime").embed(prepared_photos)
    lines = [str(w.message) for w in caught if issubclass(w.category, DerivedFileWarning)]
    assert len(lines) == 1 and "does not match the checksum" in lines[0] and "\n" not in lines[0]
    assert not [w for w in caught if w.category.__name__ == "EngineFallbackWarning"]
    assert cosine(vectors, torch_vectors).min() > 0.99999  # the float model's vectors again
    assert engines.graph_problem(graph) is None


@pytest.mark.slow
@pytest.mark.parametrize("foreign", ["512-d", "renamed input", "same names"])
def test_a_foreign_graph_even_with_its_checksum_never_gives_vectors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prepared_photos: np.ndarray,
    torch_vectors: np.ndarray,
    foreign: str,
) -> None:
    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(embeddings, "_SESSIONS", {})
    graph = engines.graph_path(
        "efficientnet_lite0", 224, embeddings._weights_file("efficientnet_lite0", None)
    )
    graph.parent.mkdir(parents=True)
    if foreign == "512-d":
        foreign_graph(graph, dim=512)
    elif foreign == "renamed input":
        foreign_graph(graph, input_name="pixels")
    else:
        foreign_graph(graph)
        engines.sidecar_path(graph).unlink()  # names and shapes alike: only the checksum tells
    feature = EmbeddingFeature(engine="onnxruntime")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = feature.embed(prepared_photos)
    lines = [str(w.message) for w in caught if issubclass(w.category, Warning)]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert cosine(vectors, torch_vectors).min() > 0.99999
    if foreign == "same names":
        assert "no checksum" in lines[0] and feature.engine_used == "onnxruntime"
    else:
        assert "not this model's graph" in lines[0] and feature.engine_used == "torch"


# -- item 9: placement files and settings ------------------------------------------------------
from imrec_widgets import projection  # noqa: E402
from imrec_widgets.errors import ProjectionError, SettingError  # noqa: E402
from imrec_widgets.imageio import MAX_PIXELS_VARIABLE, max_pixels_limit  # noqa: E402


def placed_index(folder: Path) -> tuple[ImageIndex, Path]:
    """A synthetic index of 40 rgb rows whose map placement file is written by hand."""
    rng = np.random.default_rng(3)
    data = rng.random((40, 512)).astype(np.float32)
    catalog, _store = write_feature_index(
        folder / "index", 40, {"rgb": lambda ids: data[ids]}, size=(8, 8)
    )
    catalog.set_meta(
        "projection/rgb",
        {"params": {}, "clusters": {}, "updated_at": 0.0, "fitted": 40, "placement": "t0"},
    )
    catalog.close()
    (folder / "images").mkdir(exist_ok=True)
    idx = ImageIndex.open(folder / "images", folder / "index")
    path = folder / "index" / "umap_rgb.npz"
    rng = np.random.default_rng(4)
    mean = data.mean(axis=0)
    components = rng.standard_normal((10, 512)).astype(np.float32)
    vectors = (data - mean) @ components.T
    projection.Placement(
        mean, components, vectors, rng.random((40, 2)).astype(np.float32), "euclidean", 5
    ).save(path, token="t0", ids=np.arange(40))
    return idx, path


Placed = Callable[[Path], tuple[ImageIndex, Path]]


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> Placed:
    """``placed(folder)``: what ``placed_index(folder)`` writes, copied (in milliseconds, file
    times kept) from one written once per module, opened; and its placement file."""
    written = tmp_path_factory.mktemp("placed")
    placed_index(written)[0].close()

    def placed(folder: Path) -> tuple[ImageIndex, Path]:
        shutil.copytree(written, folder, dirs_exist_ok=True)
        idx = ImageIndex.open(folder / "images", folder / "index")
        return idx, folder / "index" / "umap_rgb.npz"

    return placed


def corrupt_deflate(path: Path, member: str) -> None:
    """Garble the middle of one member's compressed stream (the zip directory stays intact)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for at in range(start + 20, start + info.compress_size - 4):
        data[at] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["vectors.npy", "pca_components.npy", "token.npy"])
def test_a_placement_with_a_corrupt_deflate_stream_is_one_line_never_zlib_error(
    tmp_path: Path, placed: Placed, member: str
) -> None:
    idx, path = placed(tmp_path)
    query = idx.features("rgb", [3])[0]
    assert projection.place(idx, "rgb", query).shape == (1, 2)
    corrupt_deflate(path, member)
    projection.mapstore.PLACEMENTS.clear()
    with pytest.raises(ValueError, match=r"placement file umap_rgb\.npz"):
        projection.Placement.read(path)
    with pytest.raises(ProjectionError, match="cannot place new images") as raised:
        projection.place(idx, "rgb", query)
    assert "\n" not in str(raised.value)
    assert projection.fitted_ids(idx, "rgb") is None


@pytest.mark.parametrize("array", ["pca_mean", "pca_components"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_pca_arrays_never_reach_sklearn(
    tmp_path: Path, placed: Placed, array: str, value: float
) -> None:
    idx, path = placed(tmp_path)
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays[array] = arrays[array].copy()
    arrays[array].flat[7] = value
    np.savez_compressed(path, **arrays)
    with pytest.raises(ValueError, match="not finite"):
        projection.Placement.read(path)
    projection.mapstore.PLACEMENTS.clear()
    with pytest.raises(ProjectionError, match="cannot place new images"):
        projection.place(idx, "rgb", idx.features("rgb", [3])[0])


@pytest.mark.parametrize("value", ["2GB", "1e9", "-5", "0", "½", "3.5"])
def test_a_bad_placement_cap_is_one_line_naming_the_variable(
    tmp_path: Path, placed: Placed, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    idx, path = placed(tmp_path)
    monkeypatch.setenv(projection.MAX_PLACEMENT_VARIABLE, value)
    projection.mapstore.PLACEMENTS.clear()
    with pytest.raises(SettingError, match="IMREC_MAX_PLACEMENT_BYTES") as raised:
        projection.place(idx, "rgb", idx.features("rgb", [3])[0])
    assert "\n" not in str(raised.value)
    # the map is not thrown away as if its placement were unreadable
    with pytest.raises(SettingError, match="IMREC_MAX_PLACEMENT_BYTES"):
        projection.mapstore.read_placement(path, {"placement": "t0"})
    monkeypatch.setenv(projection.MAX_PLACEMENT_VARIABLE, "2_000_000_000")
    assert projection.mapstore.read_placement(path, {"placement": "t0"}) is not None


@pytest.mark.parametrize("value", ["100MP", "1e8", "-1"])
def test_a_bad_pixel_cap_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, value)
    with pytest.raises(SettingError, match="IMREC_MAX_PIXELS") as raised:
        max_pixels_limit()
    assert "\n" not in str(raised.value)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, " 200_000_000 ")
    assert max_pixels_limit() == 200_000_000


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_planted_write_lock_link_is_never_written_through(tmp_path: Path, kind: str) -> None:
    from imrec_widgets.errors import IndexLockedError
    from imrec_widgets.indexer import WriteLock

    index_dir = tmp_path / "index"
    index_dir.mkdir()
    victim = tmp_path / "bashrc"
    victim.write_text("export PATH=/usr/bin\n")
    lock = index_dir / "write.lock"
    if kind == "symlink":
        lock.symlink_to(victim)
    else:
        os.link(victim, lock)
    with pytest.raises(IndexLockedError, match="not a plain file"), WriteLock(lock):
        pass
    assert victim.read_text() == "export PATH=/usr/bin\n"
    lock.unlink()
    with WriteLock(lock):  # a plain lock file works as before
        assert lock.read_text() == str(os.getpid())


# -- a planted catalog link is never written through -------------------------------------------
@pytest.mark.parametrize("kind", ["symlink", "hardlink", "wal symlink", "shm hardlink"])
def test_a_planted_catalog_link_is_never_written_through(
    copy: Path, tmp_path: Path, kind: str
) -> None:
    from imrec_widgets.errors import IndexFileError

    catalog = copy / "index" / "catalog.sqlite"
    name = {"wal symlink": "catalog.sqlite-wal", "shm hardlink": "catalog.sqlite-shm"}.get(
        kind, "catalog.sqlite"
    )
    planted = copy / "index" / name
    victim = tmp_path / "victim"
    if name == "catalog.sqlite":
        shutil.copy(catalog, victim)  # a database, so that SQLite would gladly write to it
        catalog.unlink()
    else:
        victim.write_bytes(b"precious\n" * 1000)
        planted.unlink(missing_ok=True)
    if "symlink" in kind:
        planted.symlink_to(victim)
    else:
        os.link(victim, planted)
    before = (victim.read_bytes(), victim.stat().st_mtime_ns)
    with pytest.raises(IndexFileError, match="not a file of this index") as raised:
        Catalog(catalog)
    assert "\n" not in str(raised.value) and name in str(raised.value)
    with pytest.raises(IndexFileError):
        ImageIndex.open(copy / "images", copy / "index").update(progress=False)
    assert (victim.read_bytes(), victim.stat().st_mtime_ns) == before
    if name == "catalog.sqlite":  # a read-only open may still read it
        reader = Catalog(catalog, read_only=True)
        assert reader.count() == 2000
        reader.close()


# -- a feature store (or a folder in it) that is a link out is never written -------------------
@pytest.mark.parametrize("link", ["features.zarr", "features.zarr/rgb", "features.zarr/rgb/c"])
def test_a_feature_store_link_out_of_the_index_is_never_written(
    photos: Path, tmp_path: Path, index_of: IndexOf, link: str
) -> None:
    from imrec_widgets.errors import IndexFileError

    idx = index_of(photos, features=["rgb", "thumb"])
    before = idx.features("rgb", [0])
    idx.close()
    planted = idx.index_dir / link
    elsewhere = tmp_path / "elsewhere"
    shutil.move(planted, elsewhere)
    planted.symlink_to(elsewhere, target_is_directory=True)
    outside = files_under(elsewhere)
    Image.fromarray(np.full((40, 50, 3), (250, 10, 10), np.uint8)).save(photos / "red.jpg")

    idx = ImageIndex.open(photos)
    np.testing.assert_array_equal(idx.features("rgb", [0]), before)  # still read
    with pytest.raises(IndexFileError, match="is a symbolic link") as raised:
        idx.update(progress=False)
    assert "\n" not in str(raised.value) and link.rsplit("/", 1)[-1] in str(raised.value)
    assert files_under(elsewhere) == outside
    assert {p.name for p in elsewhere.rglob("*.partial")} == set()


# -- a crafted ANN stamp is reported, never a KeyError -----------------------------------------
@pytest.mark.parametrize("missing", ["metric", "rows_bytes", "params", "built_at", "not a record"])
def test_info_reports_a_crafted_ann_stamp_as_invalid(
    copy: Path, missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from imrec_widgets.cli import main

    catalog = Catalog(copy / "index" / "catalog.sqlite")
    stamp = catalog.get_meta(ann.stamp_key("embedding"))
    if missing == "not a record":
        stamp = ["embedding.1.faiss"]
    else:
        del stamp[missing]
    catalog.set_meta(ann.stamp_key("embedding"), stamp)
    catalog.close()

    found = opened(copy).info()["ann"]["embedding"]
    if missing == "built_at":  # not needed to use the index: shown as unknown
        assert found["built_at"] is None and found["count"] == 2000
    else:
        assert list(found) == ["invalid"] and "\n" not in found["invalid"]
    root, index_dir = str(copy / "images"), str(copy / "index")
    assert main(["info", root, "--index-dir", index_dir]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ANN")]
    assert len(lines) == 1 and ("not used" in lines[0]) == (missing != "built_at")
    assert main(["info", root, "--index-dir", index_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ann"]["embedding"] == found


# -- image paths from a crafted catalog never lead out of the root ------------------------------
@pytest.mark.parametrize("crafted", ["../outside.jpg", "sub/../../outside.jpg", "./../outside.jpg"])
def test_a_crafted_catalog_path_is_never_read_outside_the_root(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    index_of: IndexOf,
    crafted: str,
) -> None:
    import sqlite3

    from imrec_widgets import duplicates

    idx = index_of(photos, features=["rgb", "dhash"])  # no stored thumbnails
    a, b = (int(i) for i in idx.ids()[:2])
    outside = tmp_path / "outside.jpg"
    shutil.copy(idx.path(a), outside)
    assert (photos / crafted).resolve() == outside.resolve()
    idx.close()
    with sqlite3.connect(photos / ".imrec" / "catalog.sqlite") as db:
        size = db.execute("SELECT size FROM images WHERE id = ?", (a,)).fetchone()[0]
        db.execute("UPDATE images SET path = ?, size = ? WHERE id = ?", (crafted, size, b))
    db.close()

    idx = ImageIndex.open(photos)
    [path] = idx.paths([b])
    assert path.resolve().is_relative_to(photos.resolve()) and not path.exists()
    assert idx.thumbnail_bytes([b]) == [b""] and idx.thumbnail_bytes([a])[0] != b""
    read: list[Path] = []
    real = duplicates._sha256
    monkeypatch.setattr(duplicates, "_sha256", lambda p: (read.append(Path(p)), real(p))[1])
    digests = duplicates._content_digests(idx.paths([a, b]), idx.records([a, b]))
    assert list(digests) == [0]  # the crafted row (same size as a) is not hashed
    duplicates.find_duplicates(idx, "dhash")
    assert read and all(p.resolve().is_relative_to(photos.resolve()) for p in read)


def test_a_file_reached_through_a_linked_folder_keeps_its_absolute_path(
    photos: Path, tmp_path: Path
) -> None:
    """The one absolute name ``update()`` writes for a single root: a linked folder out of it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(next(photos.rglob("*.jpg")), elsewhere / "far.jpg")
    (photos / "linked").symlink_to(elsewhere, target_is_directory=True)
    idx = ImageIndex.open(photos, features=["rgb"])
    idx.update(progress=False)
    [far] = [r for r in idx.records() if r.path.endswith("far.jpg")]
    assert far.path == (elsewhere.resolve() / "far.jpg").as_posix()
    assert idx.paths([far.id]) == [elsewhere.resolve() / "far.jpg"]
    assert idx.thumbnail_bytes([far.id])[0] != b""


# -- meta entries of the wrong type are one warning, never a traceback ----------------------------
@pytest.mark.parametrize("value", ['["a", "list"]', '"text"', "3", "not json {"])
def test_a_stamp_that_is_not_a_record_is_reported_as_none(copy: Path, value: str) -> None:
    import sqlite3

    from imrec_widgets.errors import IndexDataWarning

    with sqlite3.connect(copy / "index" / "catalog.sqlite") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, ann.stamp_key("embedding")))
        db.execute("UPDATE meta SET value = ? WHERE key = 'feature_config'", (value,))
        db.execute("UPDATE meta SET value = ? WHERE key = 'pending_rebuild'", (value,))
    db.close()
    idx = opened(copy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert idx.ann_info()["embedding"] is None
        info = idx.info()
        q = stored_queries(idx, 1)[0]
        found = idx.search(q, k=5, exact=False)
    assert info["rebuild"] is None and info["feature_config"] == {}
    assert_exact(found, idx.search(q, k=5, exact=True))
    lines = [str(w.message) for w in caught if issubclass(w.category, IndexDataWarning)]
    assert lines and all("\n" not in line and "not used" in line for line in lines)


class _Done:
    def __init__(self, value: object) -> None:
        self.value = value

    def result(self) -> object:
        return self.value


class InlineClient:
    """Just enough of a Dask client to build ``CompactShards`` in this process."""

    def scatter(self, values: list, **_: object) -> list:
        return list(values)

    def submit(self, fn, *args, **_: object) -> _Done:
        return _Done(fn(*(a.value if isinstance(a, _Done) else a for a in args)))

    def gather(self, futures: list[_Done]) -> list:
        return [future.value for future in futures]


def test_the_dask_compact_shards_check_the_quantizer_like_the_local_build(
    tmp_path: Path, drifted: Drifted
) -> None:
    """The same drifted index as above, its shards built on (inline) Dask workers: without the
    check the stale quantizer reached every shard silently."""
    pytest.importorskip("distributed")
    from imrec_widgets.distributed import CompactShards, shard_candidates

    folder, data = drifted(tmp_path, diverse=4000)
    idx, exact = int8_and_exact(folder)
    stale = Quantizer.load(idx.store, "embedding", CONFIG, 48)
    assert stale is not None and stale.clipped(data) > 0
    ok = idx.ids()
    with pytest.warns(QuantizerMismatchWarning, match="trained on") as record:
        shards = CompactShards(InlineClient(), idx.store.path, "embedding", ok, 1024, "int8", stale)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    built = [shard.value for shard in shards.shards]
    assert all(shard.quantizer.clipped(data[shard.ids]) == 0 for shard in built)
    queries = drift_queries(data)
    candidates = np.concatenate(
        [shard_candidates(shard, queries, "cosine", 80, None)[0] for shard in built], axis=1
    )
    truth = exact.search_many(list(queries), k=10, metric="cosine")
    assert all(set(t.ids) <= set(c) for t, c in zip(truth, candidates, strict=True))


def test_tampered_ann_rows_seen_by_a_search_are_rebuilt_by_the_next_update(
    photos: Path, monkeypatch: pytest.MonkeyPatch, index_of: IndexOf
) -> None:
    # At scale the load-time check (256 rows of one chunk) misses a tampered row; here every
    # row is in that chunk, so it is switched off to reach the per-row checksums.
    monkeypatch.setattr(ann, "_check_rows", lambda *args: None)
    idx = index_of(photos, features=["rgb", "thumb"])
    idx.build_ann("rgb")
    stamp = idx.ann_info()["rgb"]
    target, other = (int(i) for i in idx.ids()[:2])
    dim = stamp["dim"]
    rows = photos / ".imrec" / "ann" / stamp["rows_file"]
    data = np.memmap(
        rows, dtype=np.float32, mode="r+", shape=(stamp["rows_bytes"] // (4 * dim), dim)
    )
    data[target] = data[other]
    data.flush()
    del data
    idx.close()

    idx = ImageIndex.open(photos)
    with pytest.warns(AnnWarning, match="do not match their checksums"):
        idx.search(target, mode="rgb", k=3, exact=False)
    idx.close()
    idx = ImageIndex.open(photos)  # another process: it learns of the damage from the catalog
    with pytest.warns(AnnWarning, match="it is rebuilt"):
        idx.update(progress=False)
    assert idx.ann_info()["rgb"]["rows_file"] != stamp["rows_file"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnWarning)
        found = idx.search(target, mode="rgb", k=3, exact=False)
    loaded = idx.searcher._ann["rgb"][1]
    assert isinstance(loaded, ann.AnnIndex) and loaded.problem is None  # the ANN index was used
    assert_exact(found, idx.search(target, mode="rgb", k=3, exact=True))
    assert idx.catalog.get_meta(ann.damaged_key("rgb")) is None
