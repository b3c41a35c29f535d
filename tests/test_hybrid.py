from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from imrec_widgets import ImageIndex, searcher
from imrec_widgets.cli import main
from imrec_widgets.features import DEFAULT_HYBRID_WEIGHTS, check_hybrid_weights

SCIPY_METRIC = {"cosine": "cosine", "euclidean": "euclidean", "manhattan": "cityblock"}


def mode_distances(index: ImageIndex, mode: str, metric: str, query_id: int) -> np.ndarray:
    """Reference distances from image ``query_id`` to every searchable image (scipy)."""
    stored = index.features(mode)
    query = index.features(mode, [query_id])
    if metric == "hamming":
        bits = np.unpackbits(stored, axis=1).astype(bool)
        return cdist(np.unpackbits(query, axis=1).astype(bool), bits, "hamming")[0] * bits.shape[1]
    return cdist(query.astype(np.float64), stored.astype(np.float64), SCIPY_METRIC[metric])[0]


def label_of(index: ImageIndex, ids: list[int]) -> list[str]:
    return [r.path.split("/")[0] for r in index.records(ids)]


def original(index: ImageIndex, label: str, copy: str = "original") -> int:
    return next(r.id for r in index.records(index.ids()) if r.path == f"{label}/{copy}.jpg")


@pytest.mark.parametrize(
    ("weights", "parts"),
    [
        (None, {"embedding": (0.7, "cosine"), "rgb": (0.3, "euclidean")}),
        ({"rgb": 1, "dhash": 3}, {"rgb": (0.25, "euclidean"), "dhash": (0.75, "hamming")}),
        (
            {"embedding": (2.0, "euclidean"), "rgb": (1.0, "manhattan"), "ahash": 1.0},
            {
                "embedding": (0.5, "euclidean"),
                "rgb": (0.25, "manhattan"),
                "ahash": (0.25, "hamming"),
            },
        ),
    ],
)
def test_fused_distance_is_the_weighted_mean_of_scaled_distances(
    labeled_index: ImageIndex, weights: dict | None, parts: dict
) -> None:
    ids = labeled_index.ids()
    query = original(labeled_index, "astronaut")
    expected = np.zeros(ids.size)
    for mode, (weight, metric) in parts.items():
        scale = labeled_index.searcher.distance_scale(mode, metric)
        expected += weight * mode_distances(labeled_index, mode, metric, query) / scale
    hits = labeled_index.search(query, mode="hybrid", weights=weights, k=len(ids))
    assert hits.mode == "hybrid"
    assert all(mode in hits.metric for mode in parts)
    assert len(hits) == ids.size - 1 and query not in hits.ids
    got = dict(zip(hits.ids, hits.distances, strict=True))
    for id_, value in zip(ids.tolist(), expected.tolist(), strict=True):
        if id_ != query:
            assert got[id_] == pytest.approx(value, rel=1e-3, abs=1e-3)
    assert hits.distances == sorted(hits.distances)
    # Exact top-k: the 5 best agree with the reference ranking wherever it has no near-tie.
    reference = sorted(
        (value, id_) for id_, value in zip(ids.tolist(), expected, strict=True) if id_ != query
    )
    top = labeled_index.search(query, mode="hybrid", weights=weights, k=5)
    for rank, hit in enumerate(top):
        close = [id_ for value, id_ in reference if abs(value - reference[rank][0]) < 1e-3]
        assert hit.id in close


def test_distance_scale_is_the_typical_pair_distance(labeled_index: ImageIndex) -> None:
    for mode, metric in [("embedding", "cosine"), ("rgb", "euclidean"), ("dhash", "hamming")]:
        scale = labeled_index.searcher.distance_scale(mode, metric)
        assert scale == labeled_index.searcher.distance_scale(mode, metric)  # cached, seeded
        stored = labeled_index.features(mode)
        if metric == "hamming":
            bits = np.unpackbits(stored, axis=1).astype(bool)
            pairs = cdist(bits, bits, "hamming") * bits.shape[1]
        else:
            pairs = cdist(
                stored.astype(np.float64), stored.astype(np.float64), SCIPY_METRIC[metric]
            )
        median = np.median(pairs[np.triu_indices(len(stored), 1)])
        assert 0.8 * median <= scale <= 1.25 * median, (mode, scale, median)


def test_one_weight_ranks_like_that_mode(labeled_index: ImageIndex) -> None:
    query = original(labeled_index, "coffee")
    plain = labeled_index.search(query, mode="rgb", k=10)
    fused = labeled_index.search(query, mode="hybrid", weights={"rgb": 5.0}, k=10)
    scale = labeled_index.searcher.distance_scale("rgb", "euclidean")
    np.testing.assert_allclose(
        fused.distances, np.array(plain.distances) / scale, rtol=1e-3, atol=1e-4
    )
    assert fused.ids[:3] == plain.ids[:3]


def test_hybrid_is_at_least_as_good_as_its_parts(labeled_index: ImageIndex) -> None:
    report = labeled_index.evaluate(k=5, modes=["embedding:cosine", "rgb:euclidean", "hybrid"])
    by_mode = {row["mode"]: row["mAP"] for row in report}
    # Measured: embedding 1.000, rgb 0.591, hybrid (0.7 embedding + 0.3 rgb) 1.000.
    assert by_mode["hybrid"] >= max(by_mode["embedding"], by_mode["rgb"]) - 1e-9

    weights = {"rgb": 0.5, "dhash": 0.5}
    report = labeled_index.evaluate(
        k=5, modes=["rgb:euclidean", "dhash", "hybrid"], weights=weights
    )
    by_mode = {row["mode"]: row["mAP"] for row in report}
    # Measured: rgb 0.591, dhash 0.855, their hybrid 0.967: the fusion beats both parts.
    assert by_mode["hybrid"] > max(by_mode["rgb"], by_mode["dhash"]) + 0.05


def test_queries_by_file_list_restriction_and_many(labeled_index: ImageIndex) -> None:
    file = labeled_index.root / "chelsea" / "small.jpg"
    hits = labeled_index.search(file, mode="hybrid", k=6)
    assert label_of(labeled_index, hits.ids) == ["chelsea"] * 6
    assert hits[0].path == file and hits[0].distance < 0.02

    query = original(labeled_index, "rocket")
    only = [
        r.id
        for r in labeled_index.records(labeled_index.ids())
        if r.path.startswith(("rocket/", "coins/"))
    ]
    restricted = labeled_index.search(query, mode="hybrid", k=50, ids=only)
    assert sorted(restricted.ids) == sorted(set(only) - {query})
    where = labeled_index.search(query, mode="hybrid", k=50, where="path LIKE 'coins/%'")
    assert label_of(labeled_index, where.ids) == ["coins"] * 6
    assert labeled_index.search(query, mode="hybrid", ids=[]) == []

    combined = labeled_index.search(
        [query, original(labeled_index, "rocket", "dark")], mode="hybrid", k=4
    )
    assert label_of(labeled_index, combined.ids) == ["rocket"] * 4

    queries = [original(labeled_index, label) for label in ("brick", "flower", "retina")]
    many = labeled_index.search_many(queries, mode="hybrid", k=5)
    assert [label_of(labeled_index, r.ids) for r in many] == [
        [label] * 5 for label in ("brick", "flower", "retina")
    ]
    for query, results in zip(queries, many, strict=True):
        assert results.ids == labeled_index.search(query, mode="hybrid", k=5).ids


def test_streamed_and_blocked_search_give_the_same_answer(
    labeled_index: ImageIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = [original(labeled_index, label) for label in ("astronaut", "china")]
    expected = labeled_index.search_many(queries, mode="hybrid", k=8)
    streamed = ImageIndex.open(labeled_index.root)
    streamed.searcher.memory_budget = 0
    monkeypatch.setattr(searcher, "_FUSED_MIN_ROWS", 7)
    monkeypatch.setattr(searcher, "_FUSED_BLOCK_BYTES", 1)
    for got, want in zip(streamed.search_many(queries, mode="hybrid", k=8), expected, strict=True):
        assert got.ids == want.ids
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4)
    streamed.close()


def test_bad_weights_are_value_errors(labeled_index: ImageIndex) -> None:
    query = original(labeled_index, "camera")
    cases = [
        ({"colour": 1.0}, "unknown mode 'colour'"),
        ({"embedding": -0.5, "rgb": 1.0}, "must not be negative"),
        ({"embedding": 0, "rgb": 0.0}, "all zero"),
        ({"rgb": (1.0, "hamming")}, "choose from euclidean, manhattan, cosine"),
        ({"rgb": float("nan")}, "finite number"),
        ({"rgb": "a lot"}, "finite number"),
        ({}, "all zero"),
    ]
    for weights, message in cases:
        with pytest.raises(ValueError, match=message):
            labeled_index.search(query, mode="hybrid", weights=weights)
    with pytest.raises(ValueError, match="leave metric=None"):
        labeled_index.search(query, mode="hybrid", metric="cosine")
    with pytest.raises(ValueError, match="weights= is for mode='hybrid'"):
        labeled_index.search(query, mode="rgb", weights={"rgb": 1.0})
    with pytest.raises(ValueError, match="k must be a positive integer"):
        labeled_index.search(query, mode="hybrid", k=0)
    with pytest.raises(ValueError, match="feature vector belongs to one mode"):
        labeled_index.search(labeled_index.features("rgb", [query])[0], mode="hybrid")


def test_check_hybrid_weights_defaults_to_what_the_index_has() -> None:
    assert check_hybrid_weights(None) == {"embedding": (0.7, "cosine"), "rgb": (0.3, "euclidean")}
    assert set(DEFAULT_HYBRID_WEIGHTS) == {"embedding", "rgb"}
    assert check_hybrid_weights(None, ["rgb", "dhash"]) == {"rgb": (1.0, "euclidean")}
    with pytest.raises(ValueError, match="index lacks"):
        check_hybrid_weights(None, ["dhash"])
    with pytest.raises(ValueError, match="not in this index"):
        check_hybrid_weights({"embedding": 1.0}, ["rgb", "dhash"])
    assert check_hybrid_weights({"rgb": np.float32(2), "dhash": 0}, ["rgb", "dhash"]) == {
        "rgb": (1.0, "euclidean")
    }


def test_cli_search_hybrid(labeled_index: ImageIndex, capsys: pytest.CaptureFixture[str]) -> None:
    query = labeled_index.root / "flower" / "dark.jpg"
    assert (
        main(
            [
                "search",
                str(query),
                "--root",
                str(labeled_index.root),
                "--mode",
                "hybrid",
                "--weights",
                "rgb=0.5,dhash=0.5:hamming",
                "-k",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 nearest by hybrid/0.5 rgb/euclidean + 0.5 dhash/hamming" in out
    assert out.count("flower/") == 3
    assert (
        main(
            [
                "search",
                str(query),
                "--root",
                str(labeled_index.root),
                "--mode",
                "hybrid",
                "--weights",
                "rgb",
            ]
        )
        == 1
    )
    assert "MODE=WEIGHT" in capsys.readouterr().err
