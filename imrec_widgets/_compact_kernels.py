"""numba kernels of the int8 compact scan (imported by ``compact`` on first use)."""

import numba
import numpy as np


@numba.njit(parallel=True, fastmath=True, cache=True)
def dots(
    codes: np.ndarray, queries: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``out[j, i] = queries[j] . codes[i]`` for int8 ``codes``."""
    n, d = codes.shape
    for i in numba.prange(n):
        for j in range(queries.shape[0]):
            acc = np.float32(0)
            for t in range(d):
                acc += np.float32(codes[i, t]) * queries[j, t]
            out[j, i] = acc


@numba.njit(parallel=True, fastmath=True, cache=True)
def l1(  # pragma: no cover - compiled
    codes: np.ndarray, queries: np.ndarray, offset: np.ndarray, scale: np.ndarray, out: np.ndarray
) -> None:
    """``out[j, i]`` = L1 distance of ``queries[j]`` to the decoded ``codes[i]``."""
    n, d = codes.shape
    for i in numba.prange(n):
        for j in range(queries.shape[0]):
            acc = np.float32(0)
            for t in range(d):
                acc += abs(queries[j, t] - (offset[t] + scale[t] * np.float32(codes[i, t])))
            out[j, i] = acc
