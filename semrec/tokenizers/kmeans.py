"""K-means item clusters: one code per item (the semantic ids of SOLID, ``/work/shared/specs/solid.md``).

faiss ``Kmeans(d, k)`` (L2, ``niter`` iterations, seeded) on one view or on the concatenation of
several views, each optionally L2-normalised per row first (``normalize``) so that every view weighs
the same. ``encode`` assigns the nearest centroid (L2). Deviation: SOLID's authors' sibling code
uses sklearn ``KMeans(random_state=0)`` (k-means++ initialisation); faiss k-means (initialised from
a random sample of the data, one run, seeded) is used here for speed. Items are assigned one at a time,
so an item's cluster does not depend on the other items encoded with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from semrec.tokenizers import faiss_utils
from semrec.tokenizers.base import BaseTokenizer
from semrec.tokenizers.checks import as_view_list, check_int
from semrec.tokenizers.faiss_utils import check_train_size, faiss, fit_sample, quiet_clustering, rowwise
from semrec.tokenizers.report import squared_error


class KMeansTokenizer(BaseTokenizer):
    """One cluster id per item from faiss k-means with ``k`` centroids."""

    kind = "kmeans"

    def __init__(
        self,
        views: list[str] | tuple[str, ...] = ("all",),
        k: int = 256,
        normalize: bool = False,
        niter: int = 25,
        *,
        dedup: bool | str | None = None,
        dedup_size: int | None = None,
        threads: int | None = None,
    ):
        super().__init__(dedup=dedup, dedup_size=dedup_size, threads=threads)
        self.views = as_view_list(views)
        self.k = check_int("k", k, 1)
        self.normalize = bool(normalize)
        self.niter = check_int("niter", niter, 1)
        self.centroids: np.ndarray | None = None
        self._index: Any = None

    @property
    def input_views(self) -> list[str]:
        return list(self.views)

    @property
    def base_codebook_sizes(self) -> list[int]:
        return [self.k]

    def params(self) -> dict[str, Any]:
        return {"views": list(self.views), "k": self.k, "normalize": self.normalize, "niter": self.niter}

    def vectors(self, views: Mapping[str, np.ndarray]) -> np.ndarray:
        """The clustered vectors: the views (row-normalised if ``normalize``) concatenated in order."""
        mats = []
        for v in self.views:
            x = np.asarray(views[v], dtype=np.float32)
            if self.normalize:
                norms = np.linalg.norm(x, axis=1, keepdims=True)
                x = x / np.maximum(norms, np.float32(1e-12))
            mats.append(x)
        return np.ascontiguousarray(np.concatenate(mats, axis=1) if len(mats) > 1 else mats[0], dtype=np.float32)

    def _fit(self, views: dict[str, np.ndarray], seed: int) -> None:
        n = next(iter(views.values())).shape[0]
        check_train_size(n, self.k, f"k-means with k={self.k}", f"use a smaller k (at most {n})")
        # faiss's k-means keeps 256 points per centroid of what it is given: draw that sample here, so that the
        # whole catalogue's vectors (which may be NpyRows on disk) are never built at once
        sample = fit_sample(n, self.k, seed)
        if sample is not None:
            self._note(f"k-means: trained on a random sample of {len(sample)} of the {n} fit items "
                       f"({faiss_utils.MAX_POINTS_PER_CENTROID} per centroid), then every item assigned")
        x = self.vectors(views if sample is None else {v: views[v][sample] for v in self.views})
        km = faiss.Kmeans(x.shape[1], self.k, niter=self.niter)
        quiet_clustering(km.cp, seed)
        km.train(x)
        self._set_centroids(km.centroids)

    def _set_centroids(self, centroids: np.ndarray) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self._index = faiss.IndexFlatL2(self.centroids.shape[1])
        self._index.add(self.centroids)

    def _assign(self, x: np.ndarray) -> np.ndarray:
        """Nearest centroid of each row, computed row by row (the same result alone or in a batch)."""
        labels = rowwise(lambda row: self._index.search(row, 1)[1], x)
        return labels[:, 0].astype(np.int64)

    def _encode(self, views: dict[str, np.ndarray]) -> np.ndarray:
        return self._assign(self.vectors(views))[:, None]

    def _reconstruction_terms(self, views: dict[str, np.ndarray]) -> tuple[float, float]:
        assert self.centroids is not None
        x = self.vectors(views)
        return squared_error(x, self.centroids[self._assign(x)])

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        assert self.centroids is not None
        return {}, {"centroids": self.centroids}, {}

    def _from_state(self, info: dict[str, Any], arrays: Mapping[str, np.ndarray], indexes: dict[str, Any]) -> None:
        self._set_centroids(arrays["centroids"])
