"""Relevance feedback: images marked relevant and not relevant -> one query vector.

Every method returns a vector ``w`` whose cosine ranking (``w . x / |x|``) is its ranking of the
indexed rows, so a refined search is an ordinary search: the same kernels, compact copies,
filters, ANN and Dask paths as any other. Rows are L2-normalised first.

- ``rocchio``: ``mean(relevant) - NEGATIVE_WEIGHT * mean(not relevant)``.
- ``ridge`` (the default): a least-squares linear classifier (ridge regression to +1/-1) of
  relevant vs not relevant plus ``BACKGROUND_ROWS`` random indexed rows (the relevant rows
  weigh as much as all the others, the marked ones as much as the background), solved in its dual (an n x n system for n marked and background rows): as good as the
  logistic and SVM models on the benchmark, at a fraction of their time.
- ``logistic``: logistic regression of relevant (1) vs not relevant plus ``BACKGROUND_ROWS``
  random indexed rows (0), classes balanced; ``w`` is its coefficient vector (its intercept does
  not change a ranking). Random rows stand for "the rest of the index", so a single relevant
  image with no negatives still gets a model.
- ``svm``: the same with a linear SVM (hinge loss; scikit-learn's ``LinearSVC``).

``benchmarks/bench_feedback.py`` measures them; ``DEFAULT_METHOD`` is the one it chose.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import UsageError

METHODS = ("rocchio", "ridge", "logistic", "svm")
DEFAULT_METHOD = "ridge"
"""Chosen by ``benchmarks/bench_feedback.py``: the gain of the classifiers for Rocchio's cost
order (``Searcher.feedback_method`` picks another per index)."""

NEGATIVE_WEIGHT = 0.25
"""Rocchio's weight of the mean of the non-relevant rows (relevant ones weigh 1)."""

BACKGROUND_ROWS = 256
"""Random indexed rows the classifiers take as not relevant, beside the marked ones."""

REGULARISATION = 1.0
"""The classifiers' inverse regularisation strength ``C``."""


def _normalised(rows: Any) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[None]
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.where(norms > 0, norms, np.float32(1.0)))


def background_ids(ok_ids: np.ndarray, count: int = BACKGROUND_ROWS, seed: int = 0) -> np.ndarray:
    """A fixed (seeded) random sample of ``count`` of ``ok_ids``, ascending."""
    if ok_ids.size <= count:
        return np.asarray(ok_ids, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(ok_ids.size, size=count, replace=False)
    return np.sort(np.asarray(ok_ids, dtype=np.int64)[chosen])


def query_vector(
    relevant: Any,
    not_relevant: Any | None = None,
    background: Any | None = None,
    method: str = DEFAULT_METHOD,
) -> np.ndarray:
    """One float32 query vector from the rows marked ``relevant`` (at least one) and
    ``not_relevant``; ``background``: random indexed rows (for the classifiers)."""
    if method not in METHODS:
        raise UsageError(f"unknown feedback method {method!r}; choose from {', '.join(METHODS)}")
    positive = _normalised(relevant)
    if positive.shape[0] == 0:
        raise UsageError("relevance feedback needs at least one relevant image")
    dim = positive.shape[1]
    negative = (
        _normalised(not_relevant)
        if not_relevant is not None and len(not_relevant)
        else np.zeros((0, dim), np.float32)
    )
    if method == "rocchio":
        vector = positive.mean(axis=0)
        if negative.shape[0]:
            vector = vector - NEGATIVE_WEIGHT * negative.mean(axis=0)
        return np.asarray(vector, dtype=np.float32)
    rest = (
        _normalised(background)
        if background is not None and len(background)
        else np.zeros((0, dim), np.float32)
    )
    others = np.concatenate([negative, rest])
    if others.shape[0] == 0:  # nothing to tell the relevant ones from: their mean
        return np.asarray(positive.mean(axis=0), dtype=np.float32)
    features = np.concatenate([positive, others])
    labels = np.concatenate([np.ones(positive.shape[0]), np.zeros(others.shape[0])])
    # marked rows count more than the random ones: each side half the weight, marked
    # negatives as much as all the background together
    weights = (
        np.concatenate(
            [
                np.full(positive.shape[0], 1.0 / positive.shape[0]),
                np.full(negative.shape[0], 0.5 / max(1, negative.shape[0])),
                np.full(rest.shape[0], (0.5 if negative.shape[0] else 1.0) / max(1, rest.shape[0])),
            ]
        )
        * features.shape[0]
    )
    if method == "ridge":
        return _ridge(features, np.where(labels > 0, 1.0, -1.0), weights)
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression

        model: Any = LogisticRegression(C=REGULARISATION, max_iter=200)
    else:
        from sklearn.svm import LinearSVC

        model = LinearSVC(C=REGULARISATION, max_iter=2000)
    model.fit(features, labels, sample_weight=weights)
    return np.asarray(model.coef_[0], dtype=np.float32)


def _ridge(features: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted ridge regression of ``targets`` (+1/-1) with an intercept, solved in its dual:
    one symmetric n x n system for the n marked and background rows, not a D x D one."""
    gram = features @ features.T + np.float32(1.0)  # + 1: the intercept's column of ones
    root = np.sqrt(weights).astype(np.float32)
    system = root[:, None] * gram * root[None, :]
    system[np.diag_indices_from(system)] += np.float32(REGULARISATION)
    scaled = np.linalg.solve(system, (root * targets).astype(np.float32))
    return np.asarray((root * scaled) @ features, dtype=np.float32)
