from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from imrec_widgets import ImageIndex
from imrec_widgets.compact import Quantizer, approximate_scores, build
from imrec_widgets.errors import QuantizerMismatchWarning

FLOAT_CASES = [
    ("embedding", "cosine"),
    ("embedding", "euclidean"),
    ("embedding", "manhattan"),
    ("rgb", "euclidean"),
    ("rgb", "cosine"),
]

# every test here searches an index of real embeddings (the CNN runs over 108 photos)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def indexed(variant_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    root = tmp_path_factory.mktemp("compact") / "photos"
    shutil.copytree(variant_folder, root)
    idx = ImageIndex.open(root, vector_dtype="int8", features=["embedding", "rgb", "thumb"])
    idx.update(progress=False)
    return idx


def reopened(idx: ImageIndex, vector_dtype: str, rerank: int | None = None) -> ImageIndex:
    again = ImageIndex.open(idx.root, vector_dtype=vector_dtype)
    if rerank is not None:
        again.searcher.rerank = rerank
    return again


def top_ids(idx: ImageIndex, mode: str, metric: str, k: int) -> list[list[int]]:
    queries = [int(i) for i in idx.ids()]
    return [[hit.id for hit in found] for found in idx.search_many(queries, mode, metric, k)]


def assert_same_answers(
    found: ImageIndex, expected: ImageIndex, mode: str, metric: str, k: int
) -> None:
    """Same ids, same distances; ids may swap only between equal distances (float rounding)."""
    queries = [int(i) for i in expected.ids()]
    pairs = zip(
        found.search_many(queries, mode, metric, k),
        expected.search_many(queries, mode, metric, k),
        strict=True,
    )
    for got, want in pairs:
        np.testing.assert_allclose(
            [h.distance for h in got], [h.distance for h in want], rtol=1e-5, atol=1e-6
        )
        for a, b in zip(got, want, strict=True):
            assert a.id == b.id or abs(a.distance - b.distance) < 1e-6


@pytest.mark.parametrize("vector_dtype", ["float16", "int8"])
@pytest.mark.parametrize(("mode", "metric"), FLOAT_CASES)
def test_compact_search_matches_float32(
    indexed: ImageIndex, vector_dtype: str, mode: str, metric: str
) -> None:
    exact = reopened(indexed, "float32")
    for k, rerank in ((10, None), (3, 2)):
        compact = reopened(indexed, vector_dtype, rerank)
        assert_same_answers(compact, exact, mode, metric, k)
        assert mode in compact.searcher._compact, "the compact copy was not used"


def test_compact_copy_is_smaller(indexed: ImageIndex) -> None:
    idx = reopened(indexed, "int8")
    idx.search(0)
    data = idx.searcher._compact["embedding"][2]
    assert data.codes.dtype == np.int8
    assert data.codes.nbytes * 4 == len(idx) * idx.store.array("embedding").shape[1] * 4


def test_quantizer_survives_reopen(indexed: ImageIndex) -> None:
    config = indexed.catalog.get_meta("feature_config")["embedding"]
    dim = indexed.store.array("embedding").shape[1]
    sample = indexed.features("embedding")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stored = Quantizer.load(reopened(indexed, "int8").store, "embedding", config, dim)
    assert stored is not None
    trained = Quantizer.train(sample)
    np.testing.assert_array_equal(stored.offset, trained.offset)
    np.testing.assert_array_equal(stored.scale, trained.scale)
    assert (
        np.abs(stored.decode(stored.encode(sample)) - sample).max() <= stored.scale.max() / 2 + 1e-6
    )


def test_quantizer_from_other_settings_is_not_used(indexed: ImageIndex, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(indexed.index_dir, copy)
    idx = ImageIndex.open(indexed.root, copy, vector_dtype="int8")
    values, attrs = idx.store.get_small("quantizer/embedding")
    idx.store.put_small(
        "quantizer/embedding",
        values * 3,
        dict(attrs, feature_config={"backbone": "resnet18", "dim": 512}),
    )
    with pytest.warns(QuantizerMismatchWarning, match="trained on"):
        assert_same_answers(idx, reopened(indexed, "float32"), "embedding", "cosine", 10)

    idx = ImageIndex.open(indexed.root, copy, vector_dtype="int8")
    idx.store.put_small("quantizer/embedding", values * 3, attrs)
    with pytest.warns(QuantizerMismatchWarning, match="damaged"):
        idx.search(0)

    idx.searcher._compact.clear()
    idx.update(progress=False)  # nothing changed, but the stored quantizer is retrained
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageIndex.open(indexed.root, copy).search(0)


def test_unknown_vector_dtype_is_a_readable_error(indexed: ImageIndex) -> None:
    with pytest.raises(ValueError, match="choose from float32, float16, int8"):
        ImageIndex.open(indexed.root, vector_dtype="bfloat16")


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
def test_approximate_scores_order_like_exact(metric: str) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 64)).astype(np.float32)
    data = (centres[rng.integers(20, size=2000)] + 0.3 * rng.normal(size=(2000, 64))).astype(
        np.float32
    )
    queries = data[:5] + 0.01
    from imrec_widgets import search

    exact_ids, _ = search.topk(queries, data, metric, 10)
    for quantizer in (Quantizer.train(data), None):
        compact = build(
            [(np.arange(2000), data)], 2000, 64, "int8" if quantizer else "float16", quantizer
        )
        scores = approximate_scores(queries, compact, metric)
        candidates = np.argsort(scores, axis=1)[:, :40]
        for row, ids in zip(candidates, exact_ids, strict=True):
            assert set(ids) <= set(row)


def test_rerank_rows_file_is_complete_or_ignored(indexed: ImageIndex) -> None:
    idx = reopened(indexed, "int8")
    idx.search(0)
    data = idx.searcher._compact["embedding"][2]
    assert data.rows is not None
    np.testing.assert_array_equal(np.asarray(data.rows), indexed.features("embedding", data.ids))
    files = sorted((indexed.index_dir / "search").glob("embedding.*"))
    assert [f.suffix for f in files] == [".f32"]

    files[0].write_bytes(files[0].read_bytes()[:-100])  # as if cut short
    again = reopened(indexed, "int8")
    assert_same_answers(again, reopened(indexed, "float32"), "embedding", "cosine", 10)
    assert files[0].stat().st_size == data.rows.nbytes, "the damaged file was not rewritten"


def test_more_like_this_reads_the_query_row_from_the_rerank_copy(
    indexed: ImageIndex, monkeypatch
) -> None:
    """On a compact index a query by id takes its row from the memory-mapped float32 copy."""
    idx = reopened(indexed, "int8")
    queries = [int(i) for i in idx.ids()[:3]]
    expected = [idx.search(q).ids for q in queries]
    assert idx.searcher._compact["embedding"][2].rows is not None
    monkeypatch.setattr(idx.store, "read_rows", lambda *a: 1 / 0)
    assert [idx.search(q).ids for q in queries] == expected
