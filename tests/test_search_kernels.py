"""Exact top-k kernels checked against brute-force scipy references."""

from __future__ import annotations

import itertools
import multiprocessing
import os

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from imrec_widgets import search
from imrec_widgets.search import (
    METRICS,
    PreparedData,
    TopKAccumulator,
    combine_queries,
    prepare,
    topk,
    topk_chunks,
)

FLOAT = ("cosine", "euclidean", "manhattan")
SCIPY_NAME = {"cosine": "cosine", "euclidean": "euclidean", "manhattan": "cityblock"}
N = 60
DIM = 24


def reference_distances(queries: np.ndarray, data: np.ndarray, metric: str) -> np.ndarray:
    queries = np.atleast_2d(queries)
    if metric == "hamming":
        qbits = np.unpackbits(queries, axis=1).astype(bool)
        dbits = np.unpackbits(data, axis=1).astype(bool)
        return np.rint(cdist(qbits, dbits, "hamming") * qbits.shape[1])
    return cdist(queries.astype(np.float64), data.astype(np.float64), SCIPY_NAME[metric])


def reference_topk(
    queries: np.ndarray,
    data: np.ndarray,
    metric: str,
    k: int,
    ids: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    dist = reference_distances(queries, data, metric)
    ids = np.arange(data.shape[0], dtype=np.int64) if ids is None else ids
    out_ids, out_dist = [], []
    for row_number, row in enumerate(dist):
        keep = np.ones(row.size, dtype=bool)
        if exclude is not None:
            keep &= ids != exclude[row_number]
        row_ids, row = ids[keep], row[keep]
        order = np.lexsort((row_ids, row))[:k]
        out_ids.append(row_ids[order])
        out_dist.append(row[order])
    return np.array(out_ids), np.array(out_dist)


def make_data(metric: str, n: int, n_queries: int, seed: int = 0, n_bytes: int = 8):
    rng = np.random.default_rng(seed)
    if metric == "hamming":
        data = rng.integers(0, 256, (n, n_bytes), dtype=np.uint8)
        queries = rng.integers(0, 256, (n_queries, n_bytes), dtype=np.uint8)
    else:
        data = rng.standard_normal((n, DIM)).astype(np.float32)
        queries = rng.standard_normal((n_queries, DIM)).astype(np.float32)
    return queries, data


def quantised_with_duplicates(n: int, n_queries: int, seed: int = 3):
    """Small-integer-valued floats (exact dot products) with several exact duplicate rows."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-4, 5, (n, 16)).astype(np.float32) / 4
    data[[7, 19, 33, 50]] = data[2]
    data[[41, 12]] = data[29]
    queries = data[[2, 29, 5]] + rng.integers(-1, 2, (3, 16)).astype(np.float32) / 4
    return np.concatenate([queries, rng.integers(-4, 5, (n_queries, 16)) / 4]).astype(
        np.float32
    ), data


def check_against_reference(
    got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]
) -> None:
    got_ids, got_dist = got
    ref_ids, ref_dist = expected
    assert got_ids.dtype == np.int64
    assert got_dist.dtype == np.float32
    assert got_ids.shape == ref_ids.shape
    assert got_dist.shape == ref_dist.shape
    np.testing.assert_array_equal(got_ids, ref_ids)
    np.testing.assert_allclose(got_dist, ref_dist, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(got_dist, axis=1) >= 0)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n_queries", [1, 7])
@pytest.mark.parametrize("k", [1, 5, N, N + 10])
def test_matches_bruteforce(metric: str, n_queries: int, k: int) -> None:
    queries, data = make_data(metric, N, n_queries)
    got = topk(queries, data, metric, k)
    check_against_reference(got, reference_topk(queries, data, metric, k))
    assert got[0].shape == (n_queries, min(k, N))


@pytest.mark.parametrize("n_bytes", [3, 8, 10, 16, 18, 32, 50, 72, 128, 136, 512])
@pytest.mark.parametrize("k", [1, 5, 300])
def test_hamming_hash_sizes(n_bytes: int, k: int) -> None:
    queries, data = make_data("hamming", 257, 5, seed=n_bytes, n_bytes=n_bytes)
    queries[0] = data[100]
    got = topk(queries, data, "hamming", k)
    check_against_reference(got, reference_topk(queries, data, "hamming", k))
    assert got[0][0, 0] == 100 and got[1][0, 0] == 0


def test_hamming_wide_hashes_plain_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "_MAX_SWAR_WORDS", 8)
    queries, data = make_data("hamming", 300, 3, seed=1, n_bytes=200)
    check_against_reference(
        topk(queries, data, "hamming", 7), reference_topk(queries, data, "hamming", 7)
    )


@pytest.mark.parametrize("metric", METRICS)
def test_strided_data_views(metric: str) -> None:
    queries, data = make_data(metric, 2 * N, 3, n_bytes=16)
    for view in (data[::2], data[:, ::-1]):
        q = queries[:, ::-1] if view.strides[1] < 0 else queries
        got = topk(q, view, metric, 6)
        check_against_reference(got, reference_topk(q, np.ascontiguousarray(view), metric, 6))


@pytest.mark.parametrize("sample_size", [2048, 4])
def test_hamming_many_exact_ties_follow_ids(
    sample_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "_SAMPLE_SIZE", sample_size)
    rng = np.random.default_rng(5)
    data = np.repeat(rng.integers(0, 256, (4, 8), dtype=np.uint8), 50, axis=0)
    ids = rng.permutation(1000)[:200].astype(np.int64)
    queries = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    for k in (1, 7, 49, 50, 51, 120):
        got = topk(queries, data, "hamming", k, ids=ids)
        check_against_reference(got, reference_topk(queries, data, "hamming", k, ids=ids))


@pytest.mark.parametrize("metric", FLOAT)
@pytest.mark.parametrize("k", [1, 3, 5, 6, 10, 63])
@pytest.mark.parametrize("sample_size", [2048, 3])
def test_duplicate_rows_break_ties_by_row(
    metric: str, k: int, sample_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "_SAMPLE_SIZE", sample_size)
    queries, data = quantised_with_duplicates(63, 4)
    got = topk(queries, data, metric, k)
    check_against_reference(got, reference_topk(queries, data, metric, k))
    duplicates = [i for i in got[0][0] if i in (2, 7, 19, 33, 50)]
    assert duplicates == sorted(duplicates)
    assert len(duplicates) == min(k, 5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("sample_size", [2048, 3])
def test_ids_mapping_and_tie_break_by_id(
    metric: str, sample_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "_SAMPLE_SIZE", sample_size)
    if metric == "hamming":
        queries, data = make_data(metric, N, 4)
        data[[3, 9, 20]] = data[40]
        queries[0] = data[40]
    else:
        queries, data = quantised_with_duplicates(N, 4)
    ids = np.random.default_rng(9).permutation(10 * N)[:N].astype(np.int64) + 1000
    for k in (1, 4, 10, N + 1):
        got = topk(queries, data, metric, k, ids=ids)
        check_against_reference(got, reference_topk(queries, data, metric, k, ids=ids))
        assert np.isin(got[0], ids).all()


def test_zero_vectors_never_nan() -> None:
    rng = np.random.default_rng(2)
    data = rng.standard_normal((20, 8)).astype(np.float32)
    data[[4, 11]] = 0
    queries = np.vstack([np.zeros(8, np.float32), data[3]])
    for metric in FLOAT:
        ids, dist = topk(queries, data, metric, 20)
        assert not np.isnan(dist).any()
    ids, dist = topk(queries, data, "cosine", 20)
    np.testing.assert_array_equal(dist[0], np.ones(20, np.float32))
    np.testing.assert_array_equal(ids[0], np.arange(20))
    assert dist[1, 0] == pytest.approx(0.0, abs=1e-6)
    zero_rows = np.isin(ids[1], [4, 11])
    np.testing.assert_array_equal(dist[1][zero_rows], [1.0, 1.0])
    combined = combine_queries(np.zeros((2, 8), np.float32), "cosine")
    assert not np.isnan(combined).any()


def test_exact_match_is_distance_zero() -> None:
    data = make_data("euclidean", 500, 1)[1] * 100
    for metric in FLOAT:
        ids, dist = topk(data[123], data, metric, 2)
        assert ids[0, 0] == 123
        assert dist[0, 0] == pytest.approx(0.0, abs=1e-5)


def test_single_vector_query_returns_2d() -> None:
    queries, data = make_data("euclidean", N, 1)
    ids, dist = topk(queries[0], data, "euclidean", 3)
    assert ids.shape == dist.shape == (1, 3)
    np.testing.assert_array_equal(ids, topk(queries, data, "euclidean", 3)[0])


@pytest.mark.parametrize("metric", METRICS)
def test_exclude_drops_the_query_itself(metric: str) -> None:
    _, data = make_data(metric, N, 1)
    rows = np.array([0, 17, 59, 30])
    exclude = rows.copy()
    exclude[3] = -1
    for k in (1, 5, N - 1, N, N + 5):
        got = topk(data[rows], data, metric, k, exclude=exclude)
        assert not (got[0][:3] == rows[:3, None]).any()
        assert got[0][3, 0] == 30
        if k < N:
            check_against_reference(
                got, reference_topk(data[rows], data, metric, k, exclude=exclude)
            )
    ids, dist = topk(data[rows], data, metric, N, exclude=exclude)
    assert ids.shape == (4, N)
    assert (ids[:3, -1] == -1).all() and np.isinf(dist[:3, -1]).all()
    ids, _ = topk(data[rows[:3]], data, metric, N + 3, exclude=exclude[:3])
    assert ids.shape == (3, N - 1)
    assert (ids >= 0).all()


def test_exclude_with_ids_mapping() -> None:
    data = make_data("cosine", N, 3)[1]
    ids = np.arange(N, dtype=np.int64) * 10 + 5
    exclude = np.array([ids[8], -1, ids[0]])
    got = topk(data[[8, 8, 0]], data, "cosine", 6, ids=ids, exclude=exclude)
    check_against_reference(
        got, reference_topk(data[[8, 8, 0]], data, "cosine", 6, ids=ids, exclude=exclude)
    )
    assert got[0][1, 0] == ids[8]


@pytest.mark.parametrize("bad_k", [0, -3, 2.5, True, "3", None])
def test_bad_k(bad_k: object) -> None:
    queries, data = make_data("cosine", N, 1)
    with pytest.raises(ValueError, match="positive integer"):
        topk(queries, data, "cosine", bad_k)  # type: ignore[arg-type]


def test_numpy_integer_k_is_accepted() -> None:
    queries, data = make_data("cosine", N, 1)
    assert topk(queries, data, "cosine", np.int64(4))[0].shape == (1, 4)


def test_bad_metric_names_the_allowed_ones() -> None:
    queries, data = make_data("cosine", N, 1)
    with pytest.raises(ValueError, match="cosine, euclidean, manhattan, hamming") as info:
        topk(queries, data, "chebyshev", 3)
    assert "chebyshev" in str(info.value)
    with pytest.raises(ValueError, match="allowed metrics"):
        combine_queries(queries, "dot")
    with pytest.raises(ValueError, match="allowed metrics"):
        topk_chunks(queries, [], "l2", 3)


def test_shape_and_dtype_mismatches() -> None:
    queries, data = make_data("euclidean", N, 2)
    with pytest.raises(ValueError, match=r"queries have 23 features .* data has 24"):
        topk(queries[:, :23], data, "euclidean", 3)
    with pytest.raises(ValueError, match="float32"):
        topk(queries, data.astype(np.float64), "euclidean", 3)
    with pytest.raises(ValueError, match="2-D"):
        topk(queries, data[0], "euclidean", 3)
    with pytest.raises(ValueError, match="floating point"):
        topk(np.zeros((1, DIM), np.uint8), data, "euclidean", 3)
    hq, hashes = make_data("hamming", N, 2)
    with pytest.raises(ValueError, match="uint8"):
        topk(hq, data, "hamming", 3)
    with pytest.raises(ValueError, match="uint8"):
        topk(queries[:, :8], hashes, "hamming", 3)
    with pytest.raises(ValueError, match="queries have 7 bytes"):
        topk(hq[:, :7], hashes, "hamming", 3)
    with pytest.raises(ValueError, match="one id per data row"):
        topk(queries, data, "euclidean", 3, ids=np.arange(N - 1))
    with pytest.raises(ValueError, match="one id per query"):
        topk(queries, data, "euclidean", 3, exclude=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="one value per data row"):
        topk(queries, data, "euclidean", 3, data_norms=np.ones(N - 2, np.float32))
    with pytest.raises(ValueError, match="prepared for 'cosine'"):
        topk(queries, prepare(data, "cosine"), "euclidean", 3)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_data_norms_and_prepared_data_match_plain_call(metric: str) -> None:
    queries, data = make_data(metric, N, 3)
    plain = topk(queries, data, metric, 5)
    norms = np.linalg.norm(data.astype(np.float64), axis=1)
    norms = (norms if metric == "cosine" else norms**2).astype(np.float32)
    with_norms = topk(queries, data, metric, 5, data_norms=norms)
    prepared = prepare(data, metric)
    assert isinstance(prepared, PreparedData) and len(prepared) == N
    np.testing.assert_allclose(prepared.norms, norms, rtol=1e-5)
    for ids, dist in (with_norms, topk(queries, prepared, metric, 5)):
        np.testing.assert_array_equal(ids, plain[0])
        np.testing.assert_allclose(dist, plain[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_empty_inputs(metric: str) -> None:
    queries, data = make_data(metric, N, 2)
    ids, dist = topk(queries, data[:0], metric, 4)
    assert ids.shape == dist.shape == (2, 0)
    ids, dist = topk(queries[:0], data, metric, 4)
    assert ids.shape[0] == 0
    ids, dist = topk_chunks(queries, [], metric, 4)
    assert ids.shape == dist.shape == (2, 0)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 6, 200])
def test_topk_chunks_equals_topk_on_concatenation(metric: str, k: int) -> None:
    queries, data = make_data(metric, 150, 7, seed=11, n_bytes=10)
    ids = np.arange(150, dtype=np.int64) * 3 + 7
    sizes = [1, 17, 0, 40, 3, 64, 25]
    bounds = np.cumsum([0, *sizes])
    chunks = [(ids[a:b], data[a:b]) for a, b in itertools.pairwise(bounds)]
    expected = topk(queries, data, metric, k, ids=ids)
    check_against_reference(topk_chunks(queries, iter(chunks), metric, k), expected)
    exclude = np.full(7, -1, dtype=np.int64)
    exclude[2] = int(expected[0][2, 0])
    got = topk_chunks(queries, chunks, metric, k, exclude=exclude)
    check_against_reference(got, topk(queries, data, metric, k, ids=ids, exclude=exclude))


def test_topk_chunks_accepts_norms_and_checks_chunks() -> None:
    queries, data = make_data("cosine", 90, 2)
    norms = np.linalg.norm(data, axis=1)
    chunks = [(np.arange(0, 50), data[:50], norms[:50]), (np.arange(50, 90), data[50:], norms[50:])]
    np.testing.assert_array_equal(
        topk_chunks(queries, chunks, "cosine", 9)[0], topk(queries, data, "cosine", 9)[0]
    )
    with pytest.raises(ValueError, match="columns"):
        topk_chunks(queries, [(np.arange(3), data[:3]), (np.arange(3), data[:3, :5])], "cosine", 2)
    with pytest.raises(ValueError, match="chunk 0"):
        topk_chunks(queries, [(np.arange(3),)], "cosine", 2)


def test_accumulator_merges_blocks() -> None:
    rng = np.random.default_rng(4)
    dist = rng.integers(0, 20, (3, 100)).astype(np.float32)
    ids = np.tile(rng.permutation(100), (3, 1)).astype(np.int64)
    acc = TopKAccumulator(3, 8)
    for a, b in [(0, 10), (10, 11), (11, 70), (70, 70), (70, 100)]:
        acc.update(ids[:, a:b], dist[:, a:b])
    got_ids, got_dist = acc.result()
    for row in range(3):
        order = np.lexsort((ids[row], dist[row]))[:8]
        np.testing.assert_array_equal(got_ids[row], ids[row, order])
        np.testing.assert_array_equal(got_dist[row], dist[row, order])
    big = TopKAccumulator(3, 8)
    big.update(ids[:, :5], dist[:, :5])
    big.update(np.tile(np.arange(100, 5100), (3, 1)), np.full((3, 5000), 3.0, np.float32))
    big_ids, big_dist = big.result()
    for row in range(3):
        all_ids = np.concatenate([ids[row, :5], np.arange(100, 5100)])
        all_dist = np.concatenate([dist[row, :5], np.full(5000, 3.0)])
        order = np.lexsort((all_ids, all_dist))[:8]
        np.testing.assert_array_equal(big_ids[row], all_ids[order])
        np.testing.assert_array_equal(big_dist[row], all_dist[order])
    small = TopKAccumulator(1, 5)
    small.update(np.array([[4, -1, 2]]), np.array([[0.5, 0.1, 0.5]]))
    np.testing.assert_array_equal(small.result()[0], [[2, 4]])
    with pytest.raises(ValueError, match="shape"):
        small.update(np.zeros((2, 3), np.int64), np.zeros((2, 3)))


@pytest.mark.parametrize("metric", METRICS)
def test_many_blocks_and_threads(metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "_BLOCK_BYTES", 4096)
    monkeypatch.setattr(search, "_SUB_BYTES", 512)
    monkeypatch.setattr(search, "_PARALLEL_MIN_BYTES", 1024)
    monkeypatch.setattr(search, "_N_THREADS", 3)
    monkeypatch.setattr(search, "_SAMPLE_SIZE", 16)
    queries, data = make_data(metric, 5000, 3, seed=21, n_bytes=24)
    ids = np.arange(5000, dtype=np.int64)[::-1].copy()
    for k in (1, 10):
        got = topk(queries, data, metric, k, ids=ids)
        check_against_reference(got, reference_topk(queries, data, metric, k, ids=ids))


@pytest.mark.parametrize("metric", METRICS)
def test_many_queries(metric: str) -> None:
    queries, data = make_data(metric, 300, 70, seed=13, n_bytes=16)
    check_against_reference(
        topk(queries, data, metric, 4), reference_topk(queries, data, metric, 4)
    )


def test_hamming_never_unpacks_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    for n_bytes in (8, 10, 128):
        queries, data = make_data("hamming", 3000, 3, seed=n_bytes, n_bytes=n_bytes)
        expected = reference_topk(queries, data, "hamming", 10)

        def forbidden(*args: object, **kwargs: object) -> None:
            raise AssertionError("np.unpackbits called during a hamming search")

        with monkeypatch.context() as patch:
            patch.setattr(np, "unpackbits", forbidden)
            got = topk(queries, data, "hamming", 10)
            chunked = topk_chunks(queries, [(np.arange(3000), data)], "hamming", 10)
        check_against_reference(got, expected)
        check_against_reference(chunked, expected)


@pytest.mark.parametrize("metric", METRICS)
def test_no_full_sort_of_the_distance_row(metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 20_000
    queries, data = make_data(metric, n, 2, seed=8)
    expected = reference_topk(queries, data, metric, 10)
    largest: list[int] = []

    def spy(name: str):
        original = getattr(np, name)

        def wrapper(a, *args, **kwargs):
            arrays = a if name == "lexsort" else [a]
            largest.append(max(np.shape(x)[-1] if np.ndim(x) else 1 for x in arrays))
            return original(a, *args, **kwargs)

        return wrapper

    for name in ("argsort", "sort", "lexsort"):
        monkeypatch.setattr(np, name, spy(name))
    got = topk(queries, data, metric, 10)
    monkeypatch.undo()
    check_against_reference(got, expected)
    assert max(largest, default=0) < 100, "a sort ran over (almost) the whole distance row"


def test_combine_queries_majority_vote() -> None:
    hashes = np.packbits(
        np.array(
            [
                [1, 1, 0, 0, 1, 0, 1, 0, 1, 1],
                [1, 0, 0, 1, 1, 0, 0, 0, 1, 0],
                [0, 1, 0, 0, 1, 1, 1, 0, 0, 0],
            ],
            dtype=np.uint8,
        ),
        axis=1,
    )
    combined = combine_queries(hashes, "hamming")
    assert combined.dtype == np.uint8 and combined.shape == (2,)
    np.testing.assert_array_equal(np.unpackbits(combined)[:10], [1, 1, 0, 0, 1, 0, 1, 0, 1, 0])
    two = combine_queries(hashes[:2], "hamming")
    np.testing.assert_array_equal(np.unpackbits(two)[:10], [1, 1, 0, 1, 1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(combine_queries(hashes[:1], "hamming"), hashes[0])


def test_combine_queries_mean() -> None:
    vectors = np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(combine_queries(vectors, "euclidean"), [1.0, 2.0])
    np.testing.assert_allclose(combine_queries(vectors, "manhattan"), [1.0, 2.0])
    np.testing.assert_allclose(combine_queries(vectors, "cosine"), [0.6 / 3, 1.8 / 3], rtol=1e-6)
    assert combine_queries(vectors, "cosine").dtype == np.float32
    np.testing.assert_allclose(combine_queries(vectors[1], "cosine"), [0.0, 1.0])
    with pytest.raises(ValueError, match="non-empty"):
        combine_queries(vectors[:0], "euclidean")
    with pytest.raises(ValueError, match="uint8"):
        combine_queries(vectors, "hamming")


def _search_in_child(queries: np.ndarray, data: np.ndarray, expected: np.ndarray) -> None:
    ids, _ = topk(queries, data, "hamming", 5)
    os._exit(0 if np.array_equal(ids, expected) else 3)


def test_threaded_search_works_after_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "_PARALLEL_MIN_BYTES", 1024)
    queries, data = make_data("hamming", 4000, 2, n_bytes=16)
    expected = topk(queries, data, "hamming", 5)[0]
    np.testing.assert_array_equal(expected, reference_topk(queries, data, "hamming", 5)[0])
    if not hasattr(os, "fork"):
        return
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_search_in_child, args=(queries, data, expected))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("search in a forked child hung")
    assert child.exitcode == 0
