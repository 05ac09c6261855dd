"""Residual quantisation with faiss's ``ResidualQuantizer``, per view or on the joined views.

``mode="per_view"`` trains one ``ResidualQuantizer(d_view, levels, nbits)`` per view and concatenates
the codes in view order (``layout``: view -> code slots); ``mode="joint"`` concatenates the views and
trains one quantiser. With ``pca_dim`` set, each view is first projected by its own PCA (whitened if
``whiten``), clamped to ``min(pca_dim, n_fit - 1, view dim)``; ``joint`` concatenates the projections.

Choice of algorithm: faiss's ``ResidualQuantizer`` (beam-search encoding and training,
``beam_size`` = faiss ``max_beam_size``, default 5) rather than greedy residual k-means. Measured on
2 shared CPU cores with 4,344 items and 4 levels x 8 bits: 6-24 s for one 384-d view and 19-45 s
for five PCA-128 views; greedy residual k-means with ``faiss.Kmeans`` took 0.7-2.9 s per view but
had a higher reconstruction error (0.59 vs 0.54 at 128-d, 0.72 vs 0.68 at 384-d, Gaussian data).
Fast enough, so the better quantiser is used; ``beam_size=1`` makes it cheaper.
``seed`` seeds the quantisers' k-means (``cp.seed``; faiss default 1234) and the PCAs.

faiss trains each level with progressive-dimension k-means, which needs at least as many training items as
the quantiser's input dims; with fewer (a small catalogue, no ``pca_dim``) the levels are trained with plain
k-means instead, and a note says so. Above 256 fit items per centroid the quantisers train on a seeded sample of
that many (the PCAs on at most 2^17 rows), so training memory stops growing with the catalogue. Items are encoded
one at a time, so an item's code does not depend on the other items encoded with it; PCA directions without
variance project to 0 (as for ``pq``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from semrec.errors import SemrecError
from semrec.tokenizers import faiss_utils
from semrec.tokenizers.base import BaseTokenizer
from semrec.tokenizers.checks import as_view_list, check_int
from semrec.tokenizers.faiss_utils import (
    check_train_size,
    faiss,
    fit_sample,
    quiet_clustering,
    rowwise,
    smaller_nbits_hint,
    unpack_codes,
)
from semrec.tokenizers.pca import PCAProjection
from semrec.tokenizers.report import squared_error

MODES = ("per_view", "joint")


class RQTokenizer(BaseTokenizer):
    """Residual-quantisation codes: ``levels`` codes per view (``per_view``) or in all (``joint``)."""

    kind = "rq"
    views_from_dataset = True

    def __init__(
        self,
        views: list[str] | tuple[str, ...] = ("all",),
        mode: str = "per_view",
        levels: int = 4,
        nbits: int = 8,
        pca_dim: int | None = None,
        whiten: bool = False,
        beam_size: int = 5,
        *,
        dedup: bool | str | None = None,
        dedup_size: int | None = None,
        threads: int | None = None,
    ):
        super().__init__(dedup=dedup, dedup_size=dedup_size, threads=threads)
        self.views = as_view_list(views)
        if mode not in MODES:
            raise SemrecError(f"unknown RQ mode {mode!r}; known modes: {', '.join(MODES)}")
        self.mode = mode
        self.levels = check_int("levels", levels, 1)
        self.nbits = check_int("nbits", nbits, 1, 16)
        self.pca_dim = None if pca_dim is None else check_int("pca_dim", pca_dim, 1)
        self.whiten = bool(whiten)
        self.beam_size = check_int("beam_size", beam_size, 1)
        self.pcas: dict[str, PCAProjection] = {}
        self.indexes: list[Any] = []

    @property
    def input_views(self) -> list[str]:
        return list(self.views)

    @property
    def _groups(self) -> list[list[str]]:
        """The views each quantiser reads."""
        return [[v] for v in self.views] if self.mode == "per_view" else [list(self.views)]

    @property
    def base_codebook_sizes(self) -> list[int]:
        return [2**self.nbits] * (self.levels * len(self._groups))

    @property
    def layout(self) -> dict[str, list[int]]:
        if self.mode != "per_view":
            return {}
        return {v: list(range(i * self.levels, (i + 1) * self.levels)) for i, v in enumerate(self.views)}

    def params(self) -> dict[str, Any]:
        return {
            "views": list(self.views),
            "mode": self.mode,
            "levels": self.levels,
            "nbits": self.nbits,
            "pca_dim": self.pca_dim,
            "whiten": self.whiten,
            "beam_size": self.beam_size,
        }

    def _project(self, views: Mapping[str, np.ndarray], group: list[str]) -> np.ndarray:
        mats = [self.pcas[v].transform(views[v]) if self.pcas else views[v] for v in group]
        return np.ascontiguousarray(np.concatenate(mats, axis=1) if len(mats) > 1 else mats[0], dtype=np.float32)

    def _fit(self, views: dict[str, np.ndarray], seed: int) -> None:
        n_fit = next(iter(views.values())).shape[0]
        check_train_size(n_fit, 2**self.nbits, f"RQ with nbits={self.nbits}", smaller_nbits_hint(n_fit))
        self.pcas = {}
        if self.pca_dim is not None:
            for v in self.views:
                dim = min(self.pca_dim, n_fit - 1, views[v].shape[1])
                if dim != self.pca_dim:
                    self._note(f"RQ: pca_dim of view '{v}' clamped from {self.pca_dim} to {dim} ({n_fit} fit items, "
                               f"view dim {views[v].shape[1]})")
                self.pcas[v] = self._fit_pca(v, views[v], dim, self.whiten, seed)
        self.indexes = []
        plain: list[str] = []
        # faiss's ResidualQuantizer trains on every row it is given, with beam_size residuals per row (10^5 items
        # x 384 dims peaked at 2.8 GB, bench/results/growth.md): at most 256 rows per centroid, a seeded sample,
        # as faiss's k-means does on its own
        sample = fit_sample(n_fit, 2**self.nbits, seed)
        if sample is not None:
            self._note(f"RQ: trained on a random sample of {len(sample)} of the {n_fit} fit items "
                       f"({faiss_utils.MAX_POINTS_PER_CENTROID} per centroid), then every item encoded")
        for group in self._groups:
            x = self._project(views if sample is None else {v: views[v][sample] for v in group}, group)
            index = faiss.IndexResidualQuantizer(x.shape[1], self.levels, self.nbits)
            quiet_clustering(index.rq.cp, seed)
            index.rq.max_beam_size = self.beam_size
            if n_fit < x.shape[1]:
                # faiss's progressive-dimension k-means fits a PCA of all input dims and fails with fewer items
                index.rq.train_type = faiss.ResidualQuantizer.Train_default
                plain.append(f"{'+'.join(group)} ({x.shape[1]} dims)")
            index.train(x)
            self.indexes.append(index)
        if plain:
            self._note(f"RQ: {n_fit} fit items are fewer than the input dims of {', '.join(plain)}: trained with plain "
                       "k-means per level instead of faiss's progressive-dimension k-means (which needs at least as "
                       f"many items as dims); set pca_dim below {n_fit} to keep it")

    def transform(self, views: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The vectors each view is quantised from (PCA-projected when ``pca_dim`` is set)."""
        self._require_fitted()
        checked = self._check_views(views, at_fit=False)
        return {v: self._project(checked, [v]) for v in self.views}

    def _encode(self, views: dict[str, np.ndarray]) -> np.ndarray:
        parts = [
            unpack_codes(rowwise(index.rq.compute_codes, self._project(views, group)), self.levels, self.nbits)
            for index, group in zip(self.indexes, self._groups)
        ]
        return np.concatenate(parts, axis=1)

    def _reconstruction_terms(self, views: dict[str, np.ndarray]) -> tuple[float, float]:
        xs, hats = [], []
        for index, group in zip(self.indexes, self._groups):
            x = self._project(views, group)
            xs.append(x)
            hats.append(index.rq.decode(rowwise(index.rq.compute_codes, x)))
        return squared_error(np.concatenate(xs, axis=1), np.concatenate(hats, axis=1))

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        for i, v in enumerate(self.views):
            if v in self.pcas:
                arrays.update(self.pcas[v].to_arrays(f"pca_{i}"))
        info = {"pca_dims_used": {v: p.dim for v, p in self.pcas.items()}}
        return info, arrays, {f"rq_{i}": index for i, index in enumerate(self.indexes)}

    def _from_state(self, info: dict[str, Any], arrays: Mapping[str, np.ndarray], indexes: dict[str, Any]) -> None:
        self.pcas = {}
        if self.pca_dim is not None:
            self.pcas = {
                v: PCAProjection.from_arrays(arrays, f"pca_{i}", self.whiten) for i, v in enumerate(self.views)
            }
        self.indexes = [indexes[f"rq_{i}"] for i in range(len(self._groups))]
