"""PCA projections that give equal outputs for equal inputs, whatever the other rows of a call.

Fitted with scikit-learn in float64 (on at most ``MAX_FIT_ROWS`` rows), stored as arrays, applied with numpy one row
at a time; directions in which the fit data does not vary project to exactly 0 (see :class:`PCAProjection`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# A PCA component whose variance is at most this fraction of the fit rows' mean squared norm is taken as
# numerically zero: the fit data does not vary in that direction (e.g. every direction of a view whose rows
# are all identical, such as an empty brand everywhere). Fitted in float64, such components come out below
# 1e-14 (measured: <= 3e-15 for 10..20,000 rows of 64..1,024 dims); real directions of text embeddings above
# 1e-7.
DEAD_VARIANCE_RTOL = 1e-11
# At most this many rows fit a PCA (a seeded random sample of larger inputs, like faiss's PCA training sample):
# sklearn fits on a float64 copy and centres another, 4x the float32 input's bytes (5.6 GB at 10^6 items x 384
# dims, most of PQ's 6.9 GB peak there, bench/results/growth.md); 2^17 rows estimate 384 x 384 covariances well.
MAX_FIT_ROWS = 2**17
# Rows projected per block in ``transform``: each row is still projected on its own, the float64 temporaries are
# bounded by the block instead of the input.
TRANSFORM_BLOCK = 16384


class PCAProjection:
    """PCA fitted with scikit-learn, stored as arrays and applied with numpy.

    ``transform`` computes ``(x @ C.T - mean @ C.T) / sqrt(explained_variance)`` (the division only when
    whitened), sklearn's ``PCA.transform`` formula, with two differences that make equal inputs give equal
    outputs:

    * ``fit`` runs sklearn in float64 and sets the components whose variance is numerically zero
      (:data:`DEAD_VARIANCE_RTOL`) to zero rows, so they project every row to exactly 0: whitening would
      divide float rounding noise by a near-zero scale and turn bitwise identical inputs into different
      values of order 1;
    * each row is projected on its own (a batched vector-matrix product in float64, then rounded to
      float32), so a row's output does not depend on the other rows of the call.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray, explained_variance: np.ndarray, whiten: bool):
        self.mean = np.asarray(mean)
        self.components = np.asarray(components)
        self.explained_variance = np.asarray(explained_variance)
        self.whiten = bool(whiten)
        c64 = self.components.astype(np.float64)
        self._weights = np.ascontiguousarray(c64.T)  # [d_in, dim]
        self._offset = self._project(self.mean.astype(np.float64).reshape(1, -1))  # [1, dim]
        live = c64.any(axis=1)
        scale = np.sqrt(np.maximum(self.explained_variance.astype(np.float64), 0.0))
        scale = np.maximum(scale, np.finfo(self.explained_variance.dtype).eps)
        self._scale = np.where(live, scale, 1.0).reshape(1, -1)  # a zero row gives 0 whatever the scale

    @classmethod
    def fit(cls, x: np.ndarray, n_components: int, whiten: bool, seed: int) -> PCAProjection:
        """Fit ``sklearn.decomposition.PCA(n_components, whiten, random_state=seed)`` on ``x`` (in float64; on a
        random sample of :data:`MAX_FIT_ROWS` rows, drawn with ``seed``, when ``x`` has more), then zero the
        components without variance (see the class docstring)."""
        from sklearn.decomposition import PCA

        if len(x) > MAX_FIT_ROWS:
            pick = np.sort(np.random.default_rng(seed).choice(len(x), MAX_FIT_ROWS, replace=False))
            x = x[pick]
        x64 = np.asarray(x, dtype=np.float64)
        pca = PCA(n_components=n_components, whiten=whiten, random_state=seed)
        with np.errstate(divide="ignore", invalid="ignore"):  # sklearn divides by a zero total variance
            pca.fit(x64)
        scale = float(np.mean(np.einsum("ij,ij->i", x64, x64))) if len(x64) else 0.0
        components = np.array(pca.components_, dtype=np.float64)
        components[pca.explained_variance_ <= DEAD_VARIANCE_RTOL * scale] = 0.0
        return cls(pca.mean_, components, pca.explained_variance_, whiten)

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def live_dims(self) -> int:
        """How many output dims carry variance (the others are always 0)."""
        return int(self.components.any(axis=1).sum())

    def _project(self, x: np.ndarray) -> np.ndarray:
        # [n, 1, d] @ [d, dim]: one vector-matrix product per row, so no row's rounding depends on the others
        x64 = np.asarray(x, dtype=np.float64)
        return np.matmul(x64[:, None, :], self._weights)[:, 0, :]

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project ``x [n, d_in]`` to ``float32 [n, dim]``; each row independently of the others (in blocks of
        :data:`TRANSFORM_BLOCK` rows, so the float64 temporaries do not grow with ``n``)."""
        out = np.empty((len(x), self.dim), dtype=np.float32)
        for first in range(0, len(x), TRANSFORM_BLOCK):
            block = self._project(x[first:first + TRANSFORM_BLOCK]) - self._offset
            if self.whiten:
                block /= self._scale
            out[first:first + TRANSFORM_BLOCK] = block
        return out

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_mean": self.mean,
            f"{prefix}_components": self.components,
            f"{prefix}_explained_variance": self.explained_variance,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str, whiten: bool) -> PCAProjection:
        return cls(
            arrays[f"{prefix}_mean"], arrays[f"{prefix}_components"], arrays[f"{prefix}_explained_variance"],
            whiten,
        )
