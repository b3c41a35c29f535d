from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf

from imrec_widgets import ImageIndex
from imrec_widgets.feedback import DEFAULT_METHOD, METHODS, background_ids, query_vector
from imrec_widgets.synthetic import write_feature_index

DIM = 16


def _two_groups(ids: np.ndarray) -> np.ndarray:
    """Even ids lean to axis 0, odd ids to axis 1; all share axis 2, plus seeded noise."""
    rng = np.random.default_rng(ids[0])
    rows = rng.normal(scale=0.05, size=(ids.size, DIM)).astype(np.float32)
    rows[:, 2] += 1.0
    rows[ids % 2 == 0, 0] += 0.6
    rows[ids % 2 == 1, 1] += 0.6
    return rows


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    root = tmp_path_factory.mktemp("feedback")
    catalog, _store = write_feature_index(
        root / ".imrec",
        400,
        {"embedding": _two_groups, "dhash": lambda ids: np.zeros((ids.size, 8), np.uint8)},
        feature_config={"embedding": {"dim": DIM}},
    )
    catalog.close()
    return ImageIndex.open(root)


def test_default_method_is_one_of_the_measured() -> None:
    assert DEFAULT_METHOD in METHODS


@pytest.mark.parametrize("method", METHODS)
def test_refine_follows_the_marks(index: ImageIndex, method: str) -> None:
    index.searcher.feedback_method = method
    # a query between the groups: the plain search mixes them
    middle = np.zeros(DIM, np.float32)
    middle[[0, 1, 2]] = [0.3, 0.3, 1.0]
    plain = index.search(middle, k=40)
    assert {hit.id % 2 for hit in plain} == {0, 1}
    evens = [hit.id for hit in plain if hit.id % 2 == 0][:5]
    odds = [hit.id for hit in plain if hit.id % 2 == 1][:5]
    refined = index.search(evens, negatives=odds, k=40)
    assert len(refined) == 40
    assert all(hit.id % 2 == 0 for hit in refined)
    assert not {hit.id for hit in refined} & set(evens + odds)  # marked ones are not shown again
    assert refined.metric == "cosine"
    # the other way round
    flipped = index.search(odds, negatives=evens, k=40)
    assert all(hit.id % 2 == 1 for hit in flipped)


def test_refine_with_filters_and_an_image_vector(index: ImageIndex) -> None:
    index.searcher.feedback_method = DEFAULT_METHOD
    evens = [0, 2, 4]
    allowed = list(range(0, 100))
    refined = index.search(evens, negatives=[1, 3], k=20, ids=allowed)
    assert {hit.id for hit in refined} <= set(allowed) - {0, 1, 2, 3, 4}
    assert all(hit.id % 2 == 0 for hit in refined)
    # a vector (or an image) among the relevant ones is fine; no negatives either
    vector = _two_groups(np.array([10]))[0]
    assert all(hit.id % 2 == 0 for hit in index.search([vector, 0], negatives=[], k=10))
    # a negative id that is also relevant is left out of the results too
    assert 6 not in index.search([0, 6], negatives=[6, 1], k=50).ids


def test_refine_refuses_what_it_cannot_do(index: ImageIndex) -> None:
    with pytest.raises(ValueError, match="float features"):
        index.search([0], negatives=[1], mode="dhash")
    with pytest.raises(ValueError, match="leave metric= unset"):
        index.search([0], negatives=[1], metric="euclidean")
    with pytest.raises(ValueError, match="no searchable image with id 99999"):
        index.search([0], negatives=[99999])
    with pytest.raises(ValueError, match="takes image ids"):
        index.search([0], negatives=["a.jpg"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not mode='hybrid'"):
        index.search([0], negatives=[1], mode="hybrid")


def test_query_vector_methods() -> None:
    rng = np.random.default_rng(0)
    positive = rng.normal(size=(4, 8)) + np.eye(8)[0] * 3
    negative = rng.normal(size=(6, 8)) + np.eye(8)[1] * 3
    background = rng.normal(size=(50, 8))
    rocchio = query_vector(positive, negative, method="rocchio")
    unit = positive / np.linalg.norm(positive, axis=1, keepdims=True)
    unit_neg = negative / np.linalg.norm(negative, axis=1, keepdims=True)
    np.testing.assert_allclose(rocchio, unit.mean(0) - 0.25 * unit_neg.mean(0), rtol=1e-5)
    for method in METHODS:
        vector = query_vector(positive, negative, background, method=method)
        assert vector.dtype == np.float32 and vector.shape == (8,)
        scores_pos = unit @ vector
        scores_neg = unit_neg @ vector
        assert scores_pos.min() > scores_neg.max(), method
    # one relevant row and nothing else: its own direction
    alone = query_vector(positive[:1], None, None, method="ridge")
    np.testing.assert_allclose(alone, unit[0], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown feedback method"):
        query_vector(positive, method="magic")


def test_background_rows_are_a_fixed_sample() -> None:
    ok = np.arange(0, 10_000, 3)
    first, again = background_ids(ok, 64), background_ids(ok, 64)
    assert np.array_equal(first, again) and first.size == 64 and np.all(np.isin(first, ok))
    assert np.array_equal(background_ids(ok[:10], 64), ok[:10])


def test_refine_on_real_photos_by_colour(photos: Path, index_of: IndexOf) -> None:
    index = index_of(photos, features=["rgb", "thumb"])
    paths = sorted(photos.rglob("*.jpg"))
    plain = index.search(paths[0], mode="rgb", k=5)
    negatives = plain.ids[:2]
    refined = index.search([paths[0]], negatives=negatives, mode="rgb", k=5)
    assert len(refined) == 5 and not set(refined.ids) & set(negatives)
    assert refined.ids != plain.ids
