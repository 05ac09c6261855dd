"""The item-tokenizer interface: ``fit`` on item vectors, ``encode`` any item (also unseen ones), ``save``/``load``.

Input to every tokenizer is a mapping ``view name -> float32 matrix [n_items, dim]`` (rows aligned
across views, no padding row); a matrix may also be a :class:`~semrec.io.NpyRows` (a ``.npy`` file read in blocks, what
`semrec codes` passes: fits read their samples, encoding goes :data:`~semrec.tokenizers.checks.BLOCK_ROWS` rows at a
time, so no whole view is held in memory). Output codes are ``int64 [n_items, n_levels]`` with level ``l`` in
``0 .. codebook_sizes[l]-1``. Models turn them into global embedding ids themselves.

``BaseTokenizer`` holds what every concrete tokenizer shares: input checks (:mod:`~semrec.tokenizers.checks`),
the optional extra de-duplication level (:mod:`~semrec.tokenizers.dedup`), save/load in the on-disk format
(:mod:`~semrec.tokenizers.storage`: ``tokenizer.json`` + ``state.npz`` + faiss index files) and faiss's OpenMP
thread count set only while a tokenizer works (:mod:`~semrec.tokenizers.faiss_utils`).

Identical input rows get identical codes, at fit time and in any later ``encode`` call, whatever the
other rows of the call: the rows of a call are de-duplicated (by a hash of their vectors), and each
distinct row is quantised on its own (:func:`~semrec.tokenizers.faiss_utils.rowwise`), because faiss and
BLAS round a matrix product differently depending on the batch size and a row's position in it (so a
near-tie could otherwise be decided differently for an item encoded alone, at cold start, than for the
same vector in the catalogue). PCA projections (:class:`~semrec.tokenizers.pca.PCAProjection`) are
row-independent too, and set the directions in which the fit data does not vary to exactly 0 instead of
whitening float rounding noise.

What a fit had to adapt to its data (a clamped size, a fallback training algorithm, PCA directions
without variance) is logged as a warning and kept in ``notes`` (saved in ``tokenizer.json``; the code
report and ``semrec codes`` show them).

De-duplication (``dedup=True``): ``fit`` computes the base codes of the fit items (``fit_rows``, in
ascending row order) and appends one digit numbering the fit items that share a base code
(0, 1, 2, ... like TIGER, see :class:`semrec.tokenizers.dedup.DedupDigits`). It remembers these
codes together with a 128-bit hash of each fit item's input vectors. ``encode`` then gives each row:

* the remembered code of a fit item when the row's vectors hash to that fit item and its base code
  equals the remembered one (identical vectors are interchangeable: the k-th such row of one call
  gets the k-th remembered code), so ``encode`` of the fit items reproduces the fit codes;
* otherwise (a new item) the next free digit of its base code: ``max remembered digit + 1`` for that
  base code (0 if no fit item has it), plus the number of new items with that base code earlier in
  the same call.

Within one ``encode`` call every row therefore gets a distinct code. The codebook size of the extra
level (``dedup_size``) is fixed at fit time: by default the largest number of rows that share a base
code among *all* rows passed to ``fit`` (so encoding exactly those rows never overflows); pass a larger
``dedup_size`` to leave room for future items. A new item that would need a digit ``>= dedup_size``
raises :class:`~semrec.errors.SemrecError`.

``dedup="auto"`` decides at fit time: the digit is added when more than
:data:`~semrec.tokenizers.dedup.COLLISION_THRESHOLD` (5%) of all rows passed to ``fit`` share their base code
with another row, and the decision is kept in ``notes``; after the fit, ``dedup`` is the decided bool (what
``tokenizer.json`` stores). ``dedup=None`` (the default) is the class's ``default_dedup``: "auto"
for pq (CCFRec's codes: a model that reads only codes cannot tell colliding items apart; issue 18 measured it on
Scientific, 15.7% collisions), off for the others (VQ-Rec's OPQ codes and the references have no such digit).
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from semrec.errors import SemrecError
from semrec.io import NpyRows
from semrec.tokenizers.checks import BLOCK_ROWS, check_fit_rows, check_int, check_views
from semrec.tokenizers.dedup import (
    COLLISION_THRESHOLD,
    DedupDigits,
    add_dedup_level,
    collision_stats,
    distinct_rows,
    row_keys,
)
from semrec.tokenizers.faiss_utils import faiss_threads
from semrec.tokenizers.pca import PCAProjection
from semrec.tokenizers.storage import (
    TOKENIZER_JSON,
    read_tokenizer_json,
    read_tokenizer_state,
    write_tokenizer_folder,
)

logger = logging.getLogger("semrec.tokenizers")


class ItemTokenizer(ABC):
    """Base class: subclasses implement ``_fit``, ``_encode``, ``_state`` and ``_from_state``."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def n_levels(self) -> int: ...

    @property
    @abstractmethod
    def codebook_sizes(self) -> list[int]: ...

    @abstractmethod
    def fit(self, views: dict[str, np.ndarray], fit_rows: np.ndarray | None = None, seed: int = 0) -> None:
        """Fit on ``views`` (optionally only the rows in ``fit_rows``)."""

    @abstractmethod
    def encode(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """Codes ``int64 [n, n_levels]`` of any items, seen at fit time or not."""

    @abstractmethod
    def save(self, folder: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, folder: str | Path) -> ItemTokenizer: ...


# ----------------------------------------------------------------------------------------------------
# the shared implementation


class BaseTokenizer(ItemTokenizer):
    """Shared machinery; subclasses implement the hooks below and call ``super().__init__``.

    Hooks: ``input_views``, ``base_codebook_sizes``, ``params``, ``_fit(views, seed)``,
    ``_encode(views)``, ``_reconstruction_terms(views)``, ``_state()``, ``_from_state(...)`` and
    optionally ``layout``. ``views`` given to the hooks are already checked float32 matrices.
    ``_encode`` must compute each row's codes from that row alone (``faiss_utils.rowwise``, row-independent
    projections); ``_fit`` reports what it adapts to the data with ``_note`` and fits PCAs with ``_fit_pca``.
    """

    kind: ClassVar[str] = ""
    # The items `semrec codes` fits on when its config names none: "all" items or "train" (those occurring in
    # training sequences).
    default_fit_on: ClassVar[str] = "all"
    # Whether `semrec codes` gives the tokenizer the dataset's views as its ``views`` parameter when the config
    # names none (else the constructor's default applies).
    views_from_dataset: ClassVar[bool] = False
    # What ``dedup=None`` (the constructor's and `semrec codes`' default) means: False, True or "auto".
    default_dedup: ClassVar[bool | str] = False

    def __init__(self, *, dedup: bool | str | None = None, dedup_size: int | None = None,
                 threads: int | None = None):
        if dedup is None:
            dedup = type(self).default_dedup
        if not (isinstance(dedup, bool) or dedup == "auto"):
            raise SemrecError(f"dedup must be true, false or 'auto', got {dedup!r}")
        self.auto_dedup = dedup == "auto"  # decide at fit time from the collision rate (module docstring)
        self.dedup = dedup is True
        self.dedup_size = None if dedup_size is None else check_int("dedup_size", dedup_size, 1)
        self._requested_dedup_size = self.dedup_size
        self.threads = None if threads is None else check_int("threads", threads, 1)
        self.view_dims: dict[str, int] = {}
        self.n_fit = 0
        self.notes: list[str] = []  # what the last fit adapted to its data (see the module docstring)
        self._fit_codes: np.ndarray | None = None
        self._dedup: DedupDigits | None = None  # with dedup: the fit items' codes and their vectors' hashes

    # -- description --------------------------------------------------------------------------------

    @property
    @abstractmethod
    def input_views(self) -> list[str]:
        """The view names this tokenizer reads, in order."""

    @property
    @abstractmethod
    def base_codebook_sizes(self) -> list[int]:
        """Codebook sizes of the quantiser's own levels (without the dedup level)."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The constructor parameters specific to this tokenizer (JSON-serialisable)."""

    @property
    def layout(self) -> dict[str, list[int]]:
        """View -> code slots, for tokenizers that code each view separately (else ``{}``)."""
        return {}

    @property
    def is_fitted(self) -> bool:
        return bool(self.view_dims)

    @property
    def n_levels(self) -> int:
        return len(self.base_codebook_sizes) + (1 if self.dedup else 0)

    @property
    def codebook_sizes(self) -> list[int]:
        sizes = list(self.base_codebook_sizes)
        if self.dedup:
            if self.dedup_size is None:
                raise SemrecError(f"{self.kind} tokenizer: the dedup level's size is known only after fit")
            sizes.append(int(self.dedup_size))
        return sizes

    @property
    def fit_codes(self) -> np.ndarray:
        """Codes of the fit items (ascending ``fit_rows`` order), including the dedup digit if any."""
        self._require_fitted()
        assert self._fit_codes is not None
        return self._fit_codes.copy()

    def all_params(self) -> dict[str, Any]:
        """Every constructor parameter that defines the tokenizer (what ``tokenizer.json`` stores)."""
        return {**self.params(), "dedup": self.dedup, "dedup_size": self._requested_dedup_size}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.all_params().items())
        return f"{type(self).__name__}({args})"

    # -- hooks --------------------------------------------------------------------------------------

    @abstractmethod
    def _fit(self, views: dict[str, np.ndarray], seed: int) -> None: ...

    @abstractmethod
    def _encode(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """Base codes ``[n, base levels]``; a row's codes must depend on that row only."""

    @abstractmethod
    def _reconstruction_terms(self, views: dict[str, np.ndarray]) -> tuple[float, float]:
        """``(sum ||x - x_hat||^2, sum ||x||^2)`` over in-memory rows
        (:func:`~semrec.tokenizers.report.squared_error`)."""

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        """(JSON-able info, numpy arrays, faiss indexes by file stem) describing the fitted quantiser."""

    @abstractmethod
    def _from_state(self, info: dict[str, Any], arrays: Mapping[str, np.ndarray], indexes: dict[str, Any]) -> None:
        ...

    # -- helpers for the subclasses -----------------------------------------------------------------

    def _note(self, message: str) -> None:
        """Record something the fit adapted to its data (logged at INFO: the code report shows the notes)."""
        logger.info("%s", message)
        self.notes.append(message)

    def _fit_pca(self, view: str, x: np.ndarray, dim: int, whiten: bool, seed: int) -> PCAProjection:
        """A :class:`PCAProjection` of ``dim`` components fitted on view ``x``; a note when some have no variance."""
        pca = PCAProjection.fit(x, dim, whiten, seed)
        if pca.live_dims < dim:
            self._note(
                f"{self.kind.upper()}: view '{view}' varies in only {pca.live_dims} of its {dim} PCA directions "
                f"over the {x.shape[0]} fit items ({distinct_rows(x)} distinct vector(s)); the other "
                f"{dim - pca.live_dims} are set to 0, the same for every item"
            )
        return pca

    def _base_codes(self, views: Mapping[str, np.ndarray | NpyRows]) -> np.ndarray:
        """Base codes ``int64 [n, base levels]``, :data:`BLOCK_ROWS` rows at a time (``_encode`` is row-independent,
        so the blocks change nothing but the memory: no copy of a whole view, whether the views are arrays or
        :class:`~semrec.io.NpyRows` on disk). Within a block each distinct row is encoded once."""
        n = next(iter(views.values())).shape[0]
        if n <= BLOCK_ROWS:
            return self._block_codes({name: np.asarray(x) for name, x in views.items()})
        out = np.empty((n, len(self.base_codebook_sizes)), dtype=np.int64)
        for first in range(0, n, BLOCK_ROWS):
            block = {name: np.ascontiguousarray(x[first:first + BLOCK_ROWS]) for name, x in views.items()}
            out[first:first + BLOCK_ROWS] = self._block_codes(block)
        return out

    def _block_codes(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """Base codes of in-memory rows: each distinct row encoded once, identical rows share its code."""
        n = next(iter(views.values())).shape[0]
        if n == 0:
            return np.zeros((0, len(self.base_codebook_sizes)), dtype=np.int64)
        first: dict[bytes, int] = {}
        inverse = np.array([first.setdefault(key, len(first)) for key in row_keys(views, self.input_views)])
        if len(first) < n:
            _, rows = np.unique(inverse, return_index=True)
            views = {name: np.ascontiguousarray(x[rows]) for name, x in views.items()}
        codes = np.ascontiguousarray(self._encode(views), dtype=np.int64)
        return codes if len(first) == n else codes[inverse]

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise SemrecError(f"{self.kind} tokenizer is not fitted; call fit() or load a saved one first")

    def _check_views(self, views: Mapping[str, np.ndarray], at_fit: bool) -> dict[str, np.ndarray]:
        """The input views as C-contiguous float32 matrices with equal row counts (and fitted dims)."""
        return check_views(views, self.input_views, self.kind, None if at_fit else self.view_dims)

    # -- public API ---------------------------------------------------------------------------------

    def fit(self, views: dict[str, np.ndarray], fit_rows: np.ndarray | None = None, seed: int = 0) -> None:
        """Fit on ``views`` restricted to ``fit_rows`` (indices or boolean mask; default all rows).

        The rows are used in ascending order. ``seed`` makes the fit deterministic.
        """
        seed = check_int("seed", seed, 0, 2**31 - 1)
        checked = self._check_views(views, at_fit=True)
        n_items = next(iter(checked.values())).shape[0]
        rows = np.arange(n_items) if fit_rows is None else check_fit_rows(fit_rows, n_items)
        if rows.size == 0:
            raise SemrecError("no items to fit on")
        train = checked if rows.size == n_items else {  # on disk, the fit rows stay there (read in blocks)
            k: v.subset(rows) if isinstance(v, NpyRows) else np.ascontiguousarray(v[rows]) for k, v in checked.items()}
        self.view_dims = {}
        self.notes = []
        try:
            with faiss_threads(self.threads):
                self._fit(train, seed)
                self.view_dims = {name: int(x.shape[1]) for name, x in checked.items()}
                self.n_fit = int(rows.size)
                base_fit = self._base_codes(train)
                base_all = None
                if self.auto_dedup:
                    base_all = base_fit if rows.size == n_items else self._base_codes(checked)
                    self._decide_dedup(base_all)
                if self.dedup:
                    if base_all is None:
                        base_all = base_fit if rows.size == n_items else self._base_codes(checked)
                    self._fit_dedup(train, base_fit, base_all)
                else:
                    self._set_fit_codes(base_fit, None)
        except BaseException:
            self.view_dims = {}  # a failed fit leaves the tokenizer unfitted
            raise

    def encode(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """Codes ``int64 [n, n_levels]`` of any items (see the module docstring for the dedup digit)."""
        self._require_fitted()
        checked = self._check_views(views, at_fit=False)
        n = next(iter(checked.values())).shape[0]
        if n == 0:
            return np.zeros((0, self.n_levels), dtype=np.int64)
        with faiss_threads(self.threads):
            base = self._base_codes(checked)
        if not self.dedup:
            return base
        assert self._dedup is not None
        digits = self._dedup.digits(base, row_keys(checked, self.input_views), self.dedup_size)
        return np.concatenate([base, digits[:, None]], axis=1)

    def reconstruction_error(self, views: dict[str, np.ndarray]) -> float:
        """``sum ||x - x_hat||^2 / sum ||x||^2`` over these items, in the tokenizer's quantised space (summed over
        blocks of :data:`BLOCK_ROWS` rows; ``views`` may be :class:`~semrec.io.NpyRows`)."""
        self._require_fitted()
        checked = self._check_views(views, at_fit=False)
        n = next(iter(checked.values())).shape[0]
        error = denom = 0.0
        with faiss_threads(self.threads):
            for first in range(0, n, BLOCK_ROWS):
                block = {name: np.ascontiguousarray(x[first:first + BLOCK_ROWS]) for name, x in checked.items()}
                e, d = self._reconstruction_terms(block)
                error, denom = error + e, denom + d
        return 0.0 if denom == 0.0 else error / denom

    # -- dedup --------------------------------------------------------------------------------------

    def _decide_dedup(self, base_all: np.ndarray) -> None:
        """``dedup="auto"``: add the digit when more than COLLISION_THRESHOLD of the rows share a base code."""
        rate, biggest = collision_stats(base_all)
        self.dedup = rate > COLLISION_THRESHOLD
        if self.dedup:
            self._note(f"dedup auto: {rate:.1%} of items share their code with another item (largest group "
                       f"{biggest}; more than {COLLISION_THRESHOLD:.0%}), so a de-duplication digit was added "
                       "(--no-dedup to keep the codes as they are)")

    def _fit_dedup(self, train: dict[str, np.ndarray], base_fit: np.ndarray, base_all: np.ndarray) -> None:
        """Number the fit items of each base code (their codes), size the dedup level, remember both."""
        codes, fit_size = add_dedup_level(base_fit)
        _, all_size = add_dedup_level(base_all)
        if self._requested_dedup_size is None:
            self.dedup_size = all_size
        elif self._requested_dedup_size < fit_size:
            raise SemrecError(
                f"dedup_size={self._requested_dedup_size} is too small: {fit_size} fit items share one code"
            )
        else:
            self.dedup_size = self._requested_dedup_size
        self._set_fit_codes(codes, row_keys(train, self.input_views))

    def _set_fit_codes(self, codes: np.ndarray, keys: list[bytes] | None) -> None:
        """The fit items' codes; with their vectors' ``keys`` (dedup), remembered for ``encode``'s digits."""
        self._fit_codes = np.ascontiguousarray(codes, dtype=np.int64)
        self._dedup = None if keys is None else DedupDigits(self._fit_codes, keys)

    # -- persistence --------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``tokenizer.json``, ``state.npz`` and the faiss index files into ``folder``
        (the format: :mod:`semrec.tokenizers.storage`)."""
        self._require_fitted()
        info, arrays, indexes = self._state()
        arrays = dict(arrays)
        assert self._fit_codes is not None
        arrays["fit_codes"] = self._fit_codes
        if self.dedup:
            assert self._dedup is not None
            arrays["fit_keys"] = np.frombuffer(b"".join(self._dedup.keys), dtype=np.uint8).reshape(-1, 16)
        fitted = {
            "view_dims": self.view_dims,
            "n_fit": self.n_fit,
            "n_levels": self.n_levels,
            "codebook_sizes": self.codebook_sizes,
            "layout": self.layout,
            "notes": list(self.notes),
            **info,
        }
        write_tokenizer_folder(folder, self.kind, self.all_params(), fitted, arrays, indexes)

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> BaseTokenizer:
        """Rebuild a tokenizer written by ``save``; it encodes exactly as the saved one did."""
        meta = read_tokenizer_json(folder)
        if meta["kind"] != cls.kind:
            raise SemrecError(f"{folder} holds a '{meta['kind']}' tokenizer, not '{cls.kind}'")
        folder = Path(folder)
        params = dict(meta["params"])
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise SemrecError(f"{folder / TOKENIZER_JSON}: unknown parameter(s) {unknown} for '{cls.kind}'")
        tok = cls(**params, threads=threads)
        fitted = meta["fitted"]
        arrays, indexes = read_tokenizer_state(folder, meta)
        tok._from_state(fitted, arrays, indexes)
        tok.view_dims = {k: int(v) for k, v in fitted["view_dims"].items()}
        tok.n_fit = int(fitted["n_fit"])
        tok.notes = [str(n) for n in fitted.get("notes", [])]
        if tok.dedup:
            tok.dedup_size = int(fitted["codebook_sizes"][-1])
            tok._set_fit_codes(arrays["fit_codes"], [bytes(row) for row in arrays["fit_keys"]])
        else:
            tok._set_fit_codes(arrays["fit_codes"], None)
        return tok

