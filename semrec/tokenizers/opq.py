"""OPQ + single-list IVF + PQ: the VQ-Rec code layout (``/work/shared/specs/vqrec.md`` §2.1-2.4).

One view (``view``, default ``"all"``) is quantised by the faiss index
``index_factory(d, f"OPQ{M},IVF1,PQ{M}x{nbits}", METRIC_INNER_PRODUCT)``, trained on the fit rows only
(VQ-Rec's "strict" mode: the caller passes the items that occur in training sequences). Any item,
cold ones included, is encoded with that quantiser. The codes are exactly those faiss stores in
inverted list 0 after ``add``: ``index.sa_encode`` applies the OPQ rotation, takes the residual
w.r.t. the single coarse centroid and PQ-encodes it; with one list the list number takes 0 bytes, so
what remains are the bit-packed PQ codes, unpacked here to one int per sub-quantiser.

Deviations / choices:

* ``seed`` seeds the IVF and PQ k-means (faiss default 1234). The OPQ rotation's initialisation uses
  faiss's fixed internal seed; only its inner PQ k-means follows ``seed``.
* faiss trains the OPQ rotation with an internal 8-bit PQ whatever the final PQ's nbits; here the
  rotation is trained with a PQ of the tokenizer's ``nbits`` (identical for the default nbits=8,
  and needed so that nbits < 8 works with fewer than 256 items).
* Above 256 fit items per centroid (65,536 at 8 bits) the index trains on a seeded sample of that many, as
  faiss's OPQ and k-means sample on their own, so training no longer holds copies of every fit row; every item is
  still encoded. (The peak of `semrec codes` at 10^6 items x 384 dims stayed 6.2 GB: it comes from the
  whole-catalogue arrays, bench/results/growth.md.)
* ``niter`` is the number of OPQ alternations (faiss default 50, what VQ-Rec used); fewer is faster.
* Items are encoded one at a time (``sa_encode`` of a batch of one), so an item's code does not depend on
  the other items encoded with it (faiss's batched products round differently by batch size).
* ``polysemous`` (default True, what the factory string does in faiss and so in VQ-Rec) runs faiss's
  polysemous training for 8-bit codes: it only renumbers each sub-quantiser's centroids (same
  partition, same reconstruction, different code ids) and took 40-60% of the fit time on 4,344 x 384
  items on 2 shared CPU cores (90-167 s with it, 52-68 s without); ``polysemous=False`` skips it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from semrec.errors import SemrecError
from semrec.tokenizers import faiss_utils
from semrec.tokenizers.base import BaseTokenizer
from semrec.tokenizers.checks import check_int
from semrec.tokenizers.faiss_utils import (
    check_train_size,
    faiss,
    fit_sample,
    quiet_clustering,
    rowwise,
    smaller_nbits_hint,
    unpack_codes,
)
from semrec.tokenizers.report import squared_error


class OPQTokenizer(BaseTokenizer):
    """VQ-Rec codes: faiss ``OPQ{M},IVF1,PQ{M}x{nbits}`` (inner-product metric) on one view."""

    kind = "opq"
    default_fit_on = "train"  # VQ-Rec trains its quantiser on the training items only (strict mode)

    def __init__(
        self,
        view: str = "all",
        M: int = 32,
        nbits: int = 8,
        niter: int = 50,
        polysemous: bool = True,
        *,
        dedup: bool | str | None = None,
        dedup_size: int | None = None,
        threads: int | None = None,
    ):
        super().__init__(dedup=dedup, dedup_size=dedup_size, threads=threads)
        if not isinstance(view, str) or not view:
            raise SemrecError(f"view must be one view name, got {view!r}")
        self.view = view
        self.M = check_int("M", M, 1)
        self.nbits = check_int("nbits", nbits, 1, 16)
        self.niter = check_int("niter", niter, 1)
        self.polysemous = bool(polysemous)
        self.index: Any = None

    @property
    def input_views(self) -> list[str]:
        return [self.view]

    @property
    def base_codebook_sizes(self) -> list[int]:
        return [2**self.nbits] * self.M

    @property
    def factory_string(self) -> str:
        return f"OPQ{self.M},IVF1,PQ{self.M}x{self.nbits}"

    def params(self) -> dict[str, Any]:
        return {"view": self.view, "M": self.M, "nbits": self.nbits, "niter": self.niter, "polysemous": self.polysemous}

    def _fit(self, views: dict[str, np.ndarray], seed: int) -> None:
        x = views[self.view]
        n, d = x.shape
        if d % self.M:
            raise SemrecError(f"OPQ: the view dim {d} is not a multiple of M={self.M}; choose M dividing {d}")
        if n < d:
            # faiss's OPQ rotation training corrupts memory (double free, process abort) when it gets fewer
            # training vectors than dimensions: refuse with a clear message instead
            raise SemrecError(f"OPQ needs at least as many training items as vector dims ({d}); got {n}. Use a "
                              "smaller embedding (PCA), more training items, or the 'pq' tokenizer")
        check_train_size(n, 2**self.nbits, f"OPQ with nbits={self.nbits}", smaller_nbits_hint(n))
        index = faiss.index_factory(d, self.factory_string, faiss.METRIC_INNER_PRODUCT)
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        ivf = faiss.downcast_index(index.index)
        opq.niter = self.niter
        ivf.do_polysemous_training = self.polysemous and ivf.do_polysemous_training
        rotation_pq = faiss.ProductQuantizer(d, self.M, self.nbits)
        quiet_clustering(rotation_pq.cp, seed)
        opq.pq = rotation_pq
        quiet_clustering(ivf.cp, seed)
        quiet_clustering(ivf.pq.cp, seed)
        sample = fit_sample(n, 2**self.nbits, seed)  # faiss samples the rotation's and PQ's points: so do we
        if sample is not None:
            self._note(f"OPQ: trained on a random sample of {len(sample)} of the {n} fit items "
                       f"({faiss_utils.MAX_POINTS_PER_CENTROID} per centroid), then every item encoded")
        try:
            index.train(np.ascontiguousarray(x if sample is None else x[sample]))  # x may be NpyRows
        finally:
            opq.pq = None  # the Python-owned PQ must not outlive this call inside the index
        self.index = index

    def _ivf(self) -> Any:
        return faiss.downcast_index(self.index.index)

    def _encode(self, views: dict[str, np.ndarray]) -> np.ndarray:
        packed = rowwise(self.index.sa_encode, views[self.view])
        return unpack_codes(packed, self.M, self.nbits)

    def _reconstruction_terms(self, views: dict[str, np.ndarray]) -> tuple[float, float]:
        x = views[self.view]
        return squared_error(x, self.index.sa_decode(rowwise(self.index.sa_encode, x)))

    def quantiser_arrays(self) -> dict[str, np.ndarray]:
        """The numbers VQ-Rec reads from the index: rotation ``A [d, d]``, coarse centroid ``[d]``,
        PQ centroids ``[M, 2^nbits, d/M]``."""
        self._require_fitted()
        opq = faiss.downcast_VectorTransform(self.index.chain.at(0))
        ivf = self._ivf()
        d = ivf.d
        return {
            "rotation": faiss.vector_to_array(opq.A).reshape(d, d),
            "coarse_centroid": ivf.quantizer.reconstruct(0),
            "pq_centroids": faiss.vector_to_array(ivf.pq.centroids).reshape(self.M, 2**self.nbits, d // self.M),
        }

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        return {"factory": self.factory_string}, {}, {"opq_ivf_pq": self.index}

    def _from_state(self, info: dict[str, Any], arrays: Mapping[str, np.ndarray], indexes: dict[str, Any]) -> None:
        self.index = indexes["opq_ivf_pq"]  # read_index returns the concrete class and owns it
