"""Per-view PCA + product quantisation: the CCFRec code layout (``/work/shared/specs/ccfrec.md`` §3).

For each view (in the given order) a PCA with ``n_components=pca_dim`` (whitened by default) is
fitted; the projected views are concatenated and one faiss ``IndexPQ(d, M=codes_per_view*len(views),
nbits, METRIC_INNER_PRODUCT)`` is trained on the concatenation. Because every view contributes
``pca_dim`` dims and ``pca_dim`` is a multiple of ``codes_per_view``, each sub-quantiser sees a slice
of one view only: codes ``0..codes_per_view-1`` come from the first view, the next ones from the
second view, and so on (``layout``). With the defaults (5 views, 128 dims, 8 bits, a budget of
``total_codes=20`` split over the views: 4 codes each) this is CCFRec's ``pq.20_256.pca128`` setting. The budget
follows the data: fewer views get more codes each (:func:`codes_for_views`; 16 for one view, where 4 codes left a
third of a title-only catalogue sharing its full code), a catalogue too small for them fewer (noted).
``codes_per_view`` set explicitly overrides the budget.

Deviations from the reference implementation:

* The PCAs and the PQ are fitted on ``fit_rows`` (the reference fits on all items; pass no
  ``fit_rows`` for that).
* Vectors are projected with numpy using sklearn's ``PCA.transform`` formula, for fitting and
  encoding alike; the reference feeds ``fit_transform``'s output to the PQ, which may differ from
  ``transform`` by float rounding.
* If a view has fewer dims than ``pca_dim``, or there are at most ``pca_dim`` fit items, the PCA size is
  clamped to ``min(pca_dim, n_fit - 1, smallest view dim)`` rounded down to a multiple of
  ``codes_per_view``, the same for every view (``n_fit - 1`` because centred data has rank at most
  ``n_fit - 1``). The size used is ``pca_dim_used`` (stored in ``tokenizer.json``); the clamp is a note
  (logged, and shown in the code report).
* PCA directions in which a view's fit items do not vary (a view with fewer distinct texts than
  ``pca_dim_used + 1``, e.g. an empty brand everywhere) project to exactly 0 instead of whitened rounding
  noise (:class:`~semrec.tokenizers.pca.PCAProjection`), so items with identical vectors in a view get
  identical codes for that view; each such view is noted (``pca_live_dims`` in ``tokenizer.json``).
* Codes are computed one item at a time (the reference encodes the catalogue in one batch, whose float
  rounding depends on the batch), so an item has the same code whether encoded alone or with others.
* Above 256 fit items per centroid the codebooks train on a seeded sample of that many (faiss's k-means would
  sample as many itself) and the PCAs on at most 2^17 rows: the fit's memory stops growing with the catalogue.
* ``seed`` seeds the PQ k-means (``pq.cp.seed``; faiss's default is 1234) and the PCA's
  ``random_state`` (only used by sklearn's randomized solver).
* The index is trained but no vectors are added to it (the codes are computed directly).
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

CCFREC_VIEWS = ["title", "brand", "features", "categories", "description"]


def codes_for_views(total_codes: int, n_views: int, pca_dim: int) -> int:
    """Codes per view from a total budget: the largest divisor of ``pca_dim`` (every code slot reads one view)
    that is at most ``total_codes // n_views`` (at least 1). The default budget of 20 gives CCFRec's 4 codes per
    view for 3 to 5 views (spec ccfrec 3: 5 views x 4), 8 for two views and 16 for a title-only dataset."""
    most = max(1, total_codes // max(1, n_views))
    return max(d for d in range(1, most + 1) if pca_dim % d == 0)


class PQTokenizer(BaseTokenizer):
    """CCFRec codes: per-view whitened PCA, then one product quantiser over the concatenation."""

    kind = "pq"
    views_from_dataset = True
    default_dedup = "auto"  # semrec codes: the dedup digit when more than 5% of items collide (base module doc)

    def __init__(
        self,
        views: list[str] | tuple[str, ...] = tuple(CCFREC_VIEWS),
        pca_dim: int = 128,
        whiten: bool = True,
        codes_per_view: int | None = None,
        nbits: int = 8,
        total_codes: int = 20,
        *,
        dedup: bool | str | None = None,
        dedup_size: int | None = None,
        threads: int | None = None,
    ):
        super().__init__(dedup=dedup, dedup_size=dedup_size, threads=threads)
        self.views = as_view_list(views)
        self.pca_dim = check_int("pca_dim", pca_dim, 1)
        self.whiten = bool(whiten)
        self.total_codes = check_int("total_codes", total_codes, 1)
        self.auto_codes = codes_per_view is None
        self.codes_per_view = (check_int("codes_per_view", codes_per_view, 1) if codes_per_view is not None else
                               codes_for_views(self.total_codes, len(self.views), self.pca_dim))
        self.nbits = check_int("nbits", nbits, 1, 16)
        if self.pca_dim % self.codes_per_view:
            raise SemrecError(
                f"pca_dim={self.pca_dim} must be a multiple of codes_per_view={self.codes_per_view} "
                "so that every code slot reads one view only"
            )
        self.pca_dim_used: int | None = None
        self.pcas: dict[str, PCAProjection] = {}
        self.index: Any = None

    # -- description --------------------------------------------------------------------------------

    @property
    def input_views(self) -> list[str]:
        return list(self.views)

    @property
    def n_codes(self) -> int:
        return self.codes_per_view * len(self.views)

    @property
    def base_codebook_sizes(self) -> list[int]:
        return [2**self.nbits] * self.n_codes

    @property
    def layout(self) -> dict[str, list[int]]:
        cpv = self.codes_per_view
        return {view: list(range(i * cpv, (i + 1) * cpv)) for i, view in enumerate(self.views)}

    def params(self) -> dict[str, Any]:
        return {
            "views": list(self.views),
            "pca_dim": self.pca_dim,
            "whiten": self.whiten,
            "codes_per_view": self.codes_per_view,
            "nbits": self.nbits,
            "total_codes": self.total_codes,
        }

    # -- fitting and encoding -----------------------------------------------------------------------

    def _fit(self, views: dict[str, np.ndarray], seed: int) -> None:
        n_fit = next(iter(views.values())).shape[0]
        check_train_size(n_fit, 2**self.nbits, f"PQ with nbits={self.nbits}", smaller_nbits_hint(n_fit))
        min_dim = min(x.shape[1] for x in views.values())
        room = min(self.pca_dim, n_fit - 1, min_dim)
        if self.auto_codes and 1 <= room < self.codes_per_view:  # a small catalogue: fewer codes per view
            fewer = codes_for_views(room, 1, self.pca_dim)
            self._note(f"PQ: {fewer} codes per view instead of {self.codes_per_view} (the total_codes budget): "
                       f"{n_fit} fit items, smallest view dim {min_dim} leave room for {room} PCA dims")
            self.codes_per_view = fewer
        dim = min(self.pca_dim, n_fit - 1, min_dim)
        dim -= dim % self.codes_per_view
        if dim < self.codes_per_view:
            raise SemrecError(
                f"PQ: cannot keep {self.codes_per_view} PCA dims per view "
                f"({n_fit} fit items, smallest view dim {min_dim}); use fewer codes_per_view"
            )
        if dim != self.pca_dim:
            self._note(f"PQ: pca_dim clamped from {self.pca_dim} to {dim} ({n_fit} fit items, smallest view dim "
                       f"{min_dim}; at most fit items - 1, a multiple of codes_per_view={self.codes_per_view})")
        self.pca_dim_used = dim
        self.pcas = {name: self._fit_pca(name, views[name], dim, self.whiten, seed) for name in self.views}
        sample = fit_sample(n_fit, 2**self.nbits, seed)  # faiss's k-means would sample as many on its own
        if sample is not None:
            self._note(f"PQ: codebooks trained on a random sample of {len(sample)} of the {n_fit} fit items "
                       f"({faiss_utils.MAX_POINTS_PER_CENTROID} per centroid), then every item encoded")
        x = self._concat(views if sample is None else {name: views[name][sample] for name in self.views})
        index = faiss.IndexPQ(x.shape[1], self.n_codes, self.nbits, faiss.METRIC_INNER_PRODUCT)
        quiet_clustering(index.pq.cp, seed)
        index.train(x)
        self.index = index

    def transform(self, views: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The PCA(-whitened) vectors of each view: ``{view: float32 [n, pca_dim_used]}``."""
        self._require_fitted()
        checked = self._check_views(views, at_fit=False)
        return {name: self.pcas[name].transform(checked[name]) for name in self.views}

    def _concat(self, views: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(
            np.concatenate([self.pcas[name].transform(views[name]) for name in self.views], axis=1)
        )

    def _encode(self, views: dict[str, np.ndarray]) -> np.ndarray:
        packed = rowwise(self.index.pq.compute_codes, self._concat(views))
        return unpack_codes(packed, self.n_codes, self.nbits)

    def _reconstruction_terms(self, views: dict[str, np.ndarray]) -> tuple[float, float]:
        x = self._concat(views)
        x_hat = self.index.pq.decode(rowwise(self.index.pq.compute_codes, x))
        return squared_error(x, x_hat)

    # -- persistence --------------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        for i, name in enumerate(self.views):
            arrays.update(self.pcas[name].to_arrays(f"pca_{i}"))
        live = {name: self.pcas[name].live_dims for name in self.views}
        return {"pca_dim_used": self.pca_dim_used, "pca_live_dims": live}, arrays, {"pq": self.index}

    def _from_state(self, info: dict[str, Any], arrays: Mapping[str, np.ndarray], indexes: dict[str, Any]) -> None:
        self.pca_dim_used = int(info["pca_dim_used"])
        self.pcas = {
            name: PCAProjection.from_arrays(arrays, f"pca_{i}", self.whiten) for i, name in enumerate(self.views)
        }
        self.index = indexes["pq"]  # read_index returns the concrete class and owns it
