"""The item-tokenizer interface: ``fit`` on item vectors, ``encode`` any item (also unseen ones), ``save``/``load``.

Input to every tokenizer is a mapping ``view name -> float32 matrix [n_items, dim]`` (rows aligned
across views, no padding row). Output codes are ``int64 [n_items, n_levels]`` with level ``l`` in
``0 .. codebook_sizes[l]-1``. Models turn them into global embedding ids themselves.

``BaseTokenizer`` holds what every concrete tokenizer shares: input checks, the optional extra
de-duplication level, the on-disk format (``tokenizer.json`` + ``state.npz`` + faiss index files) and
a context manager that sets faiss's OpenMP thread count only while a tokenizer works.

Identical input rows get identical codes, at fit time and in any later ``encode`` call, whatever the
other rows of the call: the rows of a call are de-duplicated (by a hash of their vectors), and each
distinct row is quantised on its own (:func:`rowwise`), because faiss and BLAS round a matrix product
differently depending on the batch size and a row's position in it (so a near-tie could otherwise be
decided differently for an item encoded alone, at cold start, than for the same vector in the catalogue).
PCA projections (:class:`PCAProjection`) are row-independent too, and set the directions in which the
fit data does not vary to exactly 0 instead of whitening float rounding noise.

What a fit had to adapt to its data (a clamped size, a fallback training algorithm, PCA directions
without variance) is logged as a warning and kept in ``notes`` (saved in ``tokenizer.json``; the code
report and ``semrec codes`` show them).

De-duplication (``dedup=True``): ``fit`` computes the base codes of the fit items (``fit_rows``, in
ascending row order) and appends one digit numbering the fit items that share a base code
(0, 1, 2, ... like TIGER, see :func:`semrec.tokenizers.report.add_dedup_level`). It remembers these
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
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from semrec.errors import SemrecError
from semrec.io import atomic_path, read_json, require_artifact, write_json

logger = logging.getLogger("semrec.tokenizers")


class MissingFaiss:
    """Stands in for the faiss module, and for the indexes of a loaded tokenizer, where faiss is not installed:
    saved codes, layouts and PCA projections still load (training needs nothing more); fitting or encoding raises
    a clear error."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy / pickle / introspection probes expect AttributeError
            raise AttributeError(name)
        raise SemrecError("faiss is not installed: fitting a tokenizer or encoding items needs it "
                          "(pip install faiss-cpu)")


try:
    import faiss
except ImportError:  # e.g. a GPU machine that only trains from saved codes
    faiss = MissingFaiss()

FORMAT_NAME = "semrec.tokenizer"
FORMAT_VERSION = 1
TOKENIZER_JSON = "tokenizer.json"
STATE_NPZ = "state.npz"
# faiss warns (on stderr, once per k-means run) below this many training points per centroid.
FAISS_MIN_POINTS_PER_CENTROID = 39


@dataclass
class CodeReport:
    """Quality report of a fitted tokenizer on a set of items."""

    tokenizer: str
    n_items: int
    n_levels: int
    codebook_sizes: list[int]
    utilisation: list[float]          # fraction of each level's codebook used by these items
    perplexity: list[float]           # exp(entropy) of each level's code distribution
    collision_rate: float             # fraction of items whose full code equals another item's
    max_collision_group: int          # largest number of items sharing one full code
    reconstruction_error: float | None  # mean ||x - x_hat||^2 / mean ||x||^2 in the quantised space
    layout: dict[str, list[int]] = field(default_factory=dict)  # view -> code slots (when per view)
    dedup_level: bool = False         # whether the last level is the extra de-duplication digit
    notes: list[str] = field(default_factory=list)  # what the fit adapted to its data (clamps, fallbacks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
# helpers shared by the concrete tokenizers


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Set faiss's OpenMP thread count inside the block only (``None`` leaves it alone)."""
    if threads is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def as_view_list(views: Any, what: str = "views") -> list[str]:
    """Normalise a view-name parameter (a name, a comma-separated string or a sequence) to a non-empty list."""
    if isinstance(views, str):
        views = [v.strip() for v in views.split(",") if v.strip()]
    try:
        names = [str(v) for v in views]
    except TypeError:
        raise SemrecError(f"{what} must be a view name or a list of view names, got {views!r}") from None
    if not names:
        raise SemrecError(f"{what} must name at least one view")
    if len(set(names)) != len(names):
        raise SemrecError(f"{what} lists a view twice: {names}")
    return names


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else a SemrecError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SemrecError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise SemrecError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_train_size(n_train: int, n_centroids: int, what: str, hint: str) -> None:
    """Raise if k-means cannot run (fewer points than centroids); log when faiss would warn."""
    if n_train < n_centroids:
        raise SemrecError(
            f"{what} needs at least {n_centroids} training items for {n_centroids} centroids, "
            f"got {n_train}; {hint}"
        )
    if n_train < FAISS_MIN_POINTS_PER_CENTROID * n_centroids:
        logger.warning(
            "%s: %d training items for %d centroids per codebook (faiss recommends at least %d)",
            what, n_train, n_centroids, FAISS_MIN_POINTS_PER_CENTROID * n_centroids,
        )


def smaller_nbits_hint(n_train: int) -> str:
    """Advice for a quantiser with too few training items: the largest nbits they support."""
    if n_train < 2:
        return "provide more training items"
    nbits = int(np.floor(np.log2(n_train)))
    return f"use a smaller nbits (nbits={nbits} needs {2**nbits} items) or provide more training items"


def quiet_clustering(cp: Any, seed: int) -> None:
    """Seed a faiss ``ClusteringParameters`` and silence its per-run 'too few points' stderr warning.

    ``min_points_per_centroid`` only controls that warning in faiss (``check_train_size`` logs one
    instead); the clustering itself is unchanged.
    """
    cp.seed = int(seed)
    cp.min_points_per_centroid = 1


def unpack_codes(packed: np.ndarray, n_codes: int, nbits: int) -> np.ndarray:
    """Unpack faiss bit-packed codes ``uint8 [n, code_size]`` into ``int64 [n, n_codes]``."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if packed.shape[0] == 0:
        return np.zeros((0, n_codes), dtype=np.int64)
    if nbits == 8:
        return packed[:, :n_codes].astype(np.int64)
    return faiss.unpack_bitstrings(packed, n_codes, nbits).astype(np.int64)


def rowwise(fn: Any, x: np.ndarray) -> np.ndarray:
    """``fn`` applied to each row of ``x [n, d]`` as a batch of one, the results stacked along axis 0.

    faiss and the BLAS matrix products it uses round differently depending on the batch size and a row's
    position in the batch; called one row at a time, a row's result depends on that row only (so an item
    encoded alone gets the code it gets in the catalogue). faiss runs single-threaded meanwhile: starting
    OpenMP threads for one row cost ~1 ms per call on 2 busy cores, 5-50x the work. Measured on 5,000 rows
    (2 shared cores): PQ 640-d x 20 codes 0.8 s, RQ 384-d x 4 levels 1.6 s, k-means 0.06 s (batched:
    0.3, 1.0 and 0.03 s).
    """
    if x.shape[0] == 0:
        return fn(x)
    with faiss_threads(1):
        return np.concatenate([fn(x[i:i + 1]) for i in range(x.shape[0])], axis=0)


def relative_error(x: np.ndarray, x_hat: np.ndarray) -> float:
    """``sum ||x - x_hat||^2 / sum ||x||^2`` (= ratio of the means), computed in float64."""
    x = np.asarray(x, dtype=np.float64)
    denom = float(np.square(x).sum())
    if denom == 0.0:
        return 0.0
    return float(np.square(x - np.asarray(x_hat, dtype=np.float64)).sum() / denom)


def write_index(index: Any, path: Path) -> None:
    """``faiss.write_index`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


# A PCA component whose variance is at most this fraction of the fit rows' mean squared norm is taken as
# numerically zero: the fit data does not vary in that direction (e.g. every direction of a view whose rows
# are all identical, such as an empty brand everywhere). Fitted in float64, such components come out below
# 1e-14 (measured: <= 3e-15 for 10..20,000 rows of 64..1,024 dims); real directions of text embeddings above
# 1e-7.
DEAD_VARIANCE_RTOL = 1e-11


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
        """Fit ``sklearn.decomposition.PCA(n_components, whiten, random_state=seed)`` on ``x`` (in float64),
        then zero the components without variance (see the class docstring)."""
        from sklearn.decomposition import PCA

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
        """Project ``x [n, d_in]`` to ``float32 [n, dim]``; each row independently of the others."""
        out = self._project(x) - self._offset
        if self.whiten:
            out /= self._scale
        return np.ascontiguousarray(out, dtype=np.float32)

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


def _distinct_rows(x: np.ndarray) -> int:
    return len(set(row_keys({"x": x}, ["x"])))


def row_keys(views: Mapping[str, np.ndarray], names: list[str]) -> list[bytes]:
    """A 128-bit hash of each row's input vectors (views in ``names`` order; -0.0 counts as 0.0)."""
    per_view = []
    for name in names:  # one view at a time, to avoid a copy of all views together
        x = np.ascontiguousarray(views[name], dtype=np.float32) + np.float32(0.0)
        per_view.append([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x])
    if len(per_view) == 1:
        return per_view[0]
    return [hashlib.blake2b(b"".join(parts), digest_size=16).digest() for parts in zip(*per_view)]


# ----------------------------------------------------------------------------------------------------
# the shared implementation


class BaseTokenizer(ItemTokenizer):
    """Shared machinery; subclasses implement the hooks below and call ``super().__init__``.

    Hooks: ``input_views``, ``base_codebook_sizes``, ``params``, ``_fit(views, seed)``,
    ``_encode(views)``, ``_reconstruction_error(views)``, ``_state()``, ``_from_state(...)`` and
    optionally ``layout``. ``views`` given to the hooks are already checked float32 matrices.
    ``_encode`` must compute each row's codes from that row alone (:func:`rowwise`, row-independent
    projections); ``_fit`` reports what it adapts to the data with ``_note`` and fits PCAs with ``_fit_pca``.
    """

    kind: ClassVar[str] = ""

    def __init__(self, *, dedup: bool = False, dedup_size: int | None = None, threads: int | None = None):
        self.dedup = bool(dedup)
        self.dedup_size = None if dedup_size is None else check_int("dedup_size", dedup_size, 1)
        self._requested_dedup_size = self.dedup_size
        self.threads = None if threads is None else check_int("threads", threads, 1)
        self.view_dims: dict[str, int] = {}
        self.n_fit = 0
        self.notes: list[str] = []  # what the last fit adapted to its data (see the module docstring)
        self._fit_codes: np.ndarray | None = None
        self._fit_keys: list[bytes] = []
        self._registry: dict[bytes, list[np.ndarray]] = {}
        self._group_next: dict[tuple[int, ...], int] = {}

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
    def _reconstruction_error(self, views: dict[str, np.ndarray]) -> float: ...

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        """(JSON-able info, numpy arrays, faiss indexes by file stem) describing the fitted quantiser."""

    @abstractmethod
    def _from_state(self, info: dict[str, Any], arrays: Mapping[str, np.ndarray], indexes: dict[str, Any]) -> None:
        ...

    # -- helpers for the subclasses -----------------------------------------------------------------

    def _note(self, message: str) -> None:
        """Record (and log as a warning) something the fit adapted to its data."""
        logger.warning("%s", message)
        self.notes.append(message)

    def _fit_pca(self, view: str, x: np.ndarray, dim: int, whiten: bool, seed: int) -> PCAProjection:
        """A :class:`PCAProjection` of ``dim`` components fitted on view ``x``; a note when some have no variance."""
        pca = PCAProjection.fit(x, dim, whiten, seed)
        if pca.live_dims < dim:
            self._note(
                f"{self.kind.upper()}: view '{view}' varies in only {pca.live_dims} of its {dim} PCA directions "
                f"over the {x.shape[0]} fit items ({_distinct_rows(x)} distinct vector(s)); the other "
                f"{dim - pca.live_dims} are set to 0, the same for every item"
            )
        return pca

    def _base_codes(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """Base codes ``int64 [n, base levels]``: each distinct row encoded once, identical rows share its code."""
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

    # -- input checks -------------------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise SemrecError(f"{self.kind} tokenizer is not fitted; call fit() or load a saved one first")

    def _check_views(self, views: Mapping[str, np.ndarray], at_fit: bool) -> dict[str, np.ndarray]:
        """The input views as C-contiguous float32 matrices with equal row counts (and fitted dims)."""
        if not isinstance(views, Mapping):
            raise SemrecError(f"views must be a dict of view name -> matrix, got {type(views).__name__}")
        missing = [v for v in self.input_views if v not in views]
        if missing:
            raise SemrecError(
                f"{self.kind} tokenizer: missing view(s) {missing}; given views: {sorted(views)}"
            )
        out: dict[str, np.ndarray] = {}
        n_rows: int | None = None
        for name in self.input_views:
            x = np.asarray(views[name])
            if x.ndim != 2:
                raise SemrecError(f"view '{name}' must be a 2-d matrix [n_items, dim], got shape {x.shape}")
            if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
                raise SemrecError(f"view '{name}' must hold real numbers, got dtype {x.dtype}")
            if n_rows is not None and x.shape[0] != n_rows:
                first = self.input_views[0]
                raise SemrecError(
                    f"views are not row-aligned: '{first}' has {n_rows} rows, '{name}' has {x.shape[0]}"
                )
            n_rows = x.shape[0]
            if not at_fit and x.shape[1] != self.view_dims[name]:
                raise SemrecError(
                    f"view '{name}' has dim {x.shape[1]}, but the tokenizer was fitted on dim {self.view_dims[name]}"
                )
            x = np.ascontiguousarray(x, dtype=np.float32)
            if not np.isfinite(x).all():
                raise SemrecError(f"view '{name}' contains NaN or infinite values")
            out[name] = x
        return out

    @staticmethod
    def _check_fit_rows(fit_rows: Any, n_items: int) -> np.ndarray:
        rows = np.asarray(fit_rows)
        if rows.dtype == bool:
            if rows.shape != (n_items,):
                raise SemrecError(f"a boolean fit_rows mask must have shape ({n_items},), got {rows.shape}")
            rows = np.flatnonzero(rows)
        if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise SemrecError("fit_rows must be a 1-d array of row indices or a boolean mask")
        rows = rows.astype(np.int64)
        if rows.size == 0:
            raise SemrecError("fit_rows is empty: nothing to fit on")
        if rows.min() < 0 or rows.max() >= n_items:
            raise SemrecError(f"fit_rows must lie in 0..{n_items - 1}, got values {rows.min()}..{rows.max()}")
        unique = np.unique(rows)
        if unique.size != rows.size:
            raise SemrecError("fit_rows contains duplicate rows")
        return unique

    # -- public API ---------------------------------------------------------------------------------

    def fit(self, views: dict[str, np.ndarray], fit_rows: np.ndarray | None = None, seed: int = 0) -> None:
        """Fit on ``views`` restricted to ``fit_rows`` (indices or boolean mask; default all rows).

        The rows are used in ascending order. ``seed`` makes the fit deterministic.
        """
        seed = check_int("seed", seed, 0, 2**31 - 1)
        checked = self._check_views(views, at_fit=True)
        n_items = next(iter(checked.values())).shape[0]
        rows = np.arange(n_items) if fit_rows is None else self._check_fit_rows(fit_rows, n_items)
        if rows.size == 0:
            raise SemrecError("no items to fit on")
        train = checked if rows.size == n_items else {k: np.ascontiguousarray(v[rows]) for k, v in checked.items()}
        self.view_dims = {}
        self.notes = []
        try:
            with faiss_threads(self.threads):
                self._fit(train, seed)
                self.view_dims = {name: int(x.shape[1]) for name, x in checked.items()}
                self.n_fit = int(rows.size)
                base_fit = self._base_codes(train)
                if self.dedup:
                    base_all = base_fit if rows.size == n_items else self._base_codes(checked)
                    self._fit_dedup(train, base_fit, base_all)
                else:
                    self._fit_codes = base_fit
                    self._clear_registry()
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
        return np.concatenate([base, self._dedup_digits(checked, base)[:, None]], axis=1)

    def reconstruction_error(self, views: dict[str, np.ndarray]) -> float:
        """``sum ||x - x_hat||^2 / sum ||x||^2`` over these items, in the tokenizer's quantised space."""
        self._require_fitted()
        checked = self._check_views(views, at_fit=False)
        if next(iter(checked.values())).shape[0] == 0:
            return 0.0
        with faiss_threads(self.threads):
            return float(self._reconstruction_error(checked))

    # -- dedup --------------------------------------------------------------------------------------

    def _clear_registry(self) -> None:
        self._fit_keys = []
        self._registry = {}
        self._group_next = {}

    def _fit_dedup(self, train: dict[str, np.ndarray], base_fit: np.ndarray, base_all: np.ndarray) -> None:
        from semrec.tokenizers.report import add_dedup_level

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
        self._set_registry(row_keys(train, self.input_views), codes)

    def _set_registry(self, keys: list[bytes], codes: np.ndarray) -> None:
        self._fit_keys = list(keys)
        self._fit_codes = np.ascontiguousarray(codes, dtype=np.int64)
        self._registry = {}
        self._group_next = {}
        for key, code in zip(self._fit_keys, self._fit_codes):
            self._registry.setdefault(key, []).append(code)
            group = tuple(int(c) for c in code[:-1])
            self._group_next[group] = max(self._group_next.get(group, 0), int(code[-1]) + 1)

    def _dedup_digits(self, views: dict[str, np.ndarray], base: np.ndarray) -> np.ndarray:
        keys = row_keys(views, self.input_views)
        taken: dict[bytes, int] = {}
        new_in_call: dict[tuple[int, ...], int] = {}
        digits = np.empty(base.shape[0], dtype=np.int64)
        for i, (key, code) in enumerate(zip(keys, base)):
            known = self._registry.get(key)
            used = taken.get(key, 0)
            if known is not None and used < len(known) and np.array_equal(known[used][:-1], code):
                digits[i] = known[used][-1]
                taken[key] = used + 1
                continue
            group = tuple(int(c) for c in code)
            offset = new_in_call.get(group, 0)
            digit = self._group_next.get(group, 0) + offset
            assert self.dedup_size is not None
            if digit >= self.dedup_size:
                raise SemrecError(
                    f"row {i}: {digit + 1} items share the code {list(group)}, but the dedup level has only "
                    f"{self.dedup_size} values; refit with a larger dedup_size"
                )
            digits[i] = digit
            new_in_call[group] = offset + 1
        return digits

    # -- persistence --------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``tokenizer.json``, ``state.npz`` and the faiss index files into ``folder``."""
        self._require_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        info, arrays, indexes = self._state()
        arrays = dict(arrays)
        assert self._fit_codes is not None
        arrays["fit_codes"] = self._fit_codes
        if self.dedup:
            arrays["fit_keys"] = np.frombuffer(b"".join(self._fit_keys), dtype=np.uint8).reshape(-1, 16)
        index_files: dict[str, str] = {}
        for stem, index in indexes.items():
            index_files[stem] = f"{stem}.faiss"
            write_index(index, folder / index_files[stem])
        with atomic_path(folder / STATE_NPZ) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        write_json(
            folder / TOKENIZER_JSON,
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "params": self.all_params(),
                "fitted": {
                    "view_dims": self.view_dims,
                    "n_fit": self.n_fit,
                    "n_levels": self.n_levels,
                    "codebook_sizes": self.codebook_sizes,
                    "layout": self.layout,
                    "notes": list(self.notes),
                    **info,
                },
                "files": {"arrays": STATE_NPZ, "indexes": index_files},
            },
        )

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
        for name in [meta["files"]["arrays"], *meta["files"]["indexes"].values()]:
            require_artifact(folder / name, "tokenizer", "re-run 'semrec codes' to rebuild it")
        with np.load(folder / meta["files"]["arrays"], allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        indexes = {stem: MissingFaiss() if isinstance(faiss, MissingFaiss) else faiss.read_index(str(folder / name))
                   for stem, name in meta["files"]["indexes"].items()}
        tok._from_state(fitted, arrays, indexes)
        tok.view_dims = {k: int(v) for k, v in fitted["view_dims"].items()}
        tok.n_fit = int(fitted["n_fit"])
        tok.notes = [str(n) for n in fitted.get("notes", [])]
        if tok.dedup:
            tok.dedup_size = int(fitted["codebook_sizes"][-1])
            keys = [bytes(row) for row in arrays["fit_keys"]]
            tok._set_registry(keys, arrays["fit_codes"])
        else:
            tok._fit_codes = arrays["fit_codes"].astype(np.int64)
        return tok


def read_tokenizer_json(folder: str | Path) -> dict[str, Any]:
    """Read and check ``folder/tokenizer.json`` (format name and version)."""
    path = Path(folder) / TOKENIZER_JSON
    if not path.is_file():
        raise SemrecError(f"no tokenizer found: {path} does not exist")
    try:
        meta = read_json(path)
    except ValueError as exc:
        raise SemrecError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise SemrecError(f"{path}: not a semrec tokenizer file")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise SemrecError(f"{path}: format version {version} is not supported (this semrec reads {FORMAT_VERSION})")
    for key in ("kind", "params", "fitted", "files"):
        if key not in meta:
            raise SemrecError(f"{path}: missing field '{key}'")
    return meta
