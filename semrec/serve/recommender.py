"""``Recommender``: a trained run folder as an object that answers "what should this history see next?".

Item tables are computed once at load (``model.eval_tables()``, plus the cold-start items saved in the run
folder) and extended incrementally by :meth:`Recommender.add_items`. A batch of histories is scored with one
matrix product (or one faiss search with ``retrieval='hnsw' | 'ivf'``). A readers-writer lock lets any number of
recommendations run together while an addition waits only for the short append of its rows.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semrec.data.batching import pad_right
from semrec.errors import SemrecError
from semrec.eval.ranking import history_pairs, item_scores, mask_scores, scoring_vectors, top_lists
from semrec.models import cold_start_refusal
from semrec.runs import load_run
from semrec.serve import index as faiss_index
from semrec.serve.items import (
    ColdStartUnsupported,
    Encoder,
    ItemFeaturizer,
    clean_item,
    item_vectors,
    load_cold_items,
    save_cold_items,
)
from semrec.serve.locks import RWLock
from semrec.serve.types import ItemConflict, Recommendation, ScoredItem, UnknownItem

SCORE_BUDGET = 1 << 25  # scores per matrix product of exact retrieval (128 MiB of float32)


class Recommender:
    """A trained model with its dataset mapping, tokenizer and text encoder settings. Build with :meth:`load`."""

    def __init__(self, run_dir: str | Path, encoder: Encoder | Any | None = None, device: str = "cpu"):
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        run = load_run(self.run_dir, "best", self.device)  # refused if the dataset, codes or embeddings changed since
        self.config, data, self.model = run.config, run.data, run.model
        self.dataset, self.fingerprints, self._tokenizer = data.dataset, data.fingerprints, data.tokenizer
        self.similarity = self.model.similarity
        self.max_len = self.model.max_len
        self.cold_start_refusal = cold_start_refusal(self.config.model, self.config.model_params)
        self._codebook_sizes = data.items.codebook_sizes
        self._encoder, self._featurizer = encoder, None
        self._lock, self._add_lock = RWLock(), threading.Lock()
        self._retrieval, self._faiss = "exact", None
        self._raw_ids = ["", *self.dataset.items["raw_id"].astype(str)]
        self._index = {raw: i for i, raw in enumerate(self._raw_ids) if i}
        self._n_base = len(self._raw_ids)
        self._titles = self.dataset.items["title"].tolist() if "title" in self.dataset.views else None
        self._cold: dict[int, dict[str, Any]] = {}  # internal id -> record of items added after training
        with torch.no_grad():
            candidate, history = self.model.eval_tables()
        self._candidate = self._scoring_rows(candidate)
        self._history = None if history is None else history.detach()
        self._popularity = data.items.popularity.float().to(self.device)
        self._cold_records, self._cold_features = load_cold_items(self.run_dir, self.fingerprints)
        if self._cold_records:
            cand, hist = item_vectors(self.config, self.model.state_dict(), self._cold_features,
                                      self._codebook_sizes, self.device)
            self._append(self._cold_records, cand, hist)

    @classmethod
    def load(cls, run_dir: str | Path, encoder: Encoder | Any | None = None, device: str = "cpu",
             retrieval: str = "exact", retrieval_params: dict[str, Any] | None = None) -> Recommender:
        """Restore a run folder: model (``checkpoints/best.pt``), dataset mapping, tokenizer, encoder settings and
        the cold-start items added so far. ``encoder`` (a callable ``texts -> float32 [n, dim]`` or an object
        with ``encode``) replaces the run's text encoder; ``retrieval`` 'hnsw' or 'ivf' searches an approximate
        faiss index instead of scoring every item.

        Raises SemrecError when the run folder is incomplete (naming the missing file) and
        :class:`~semrec.train.run_folder.RunDataChanged` when the run's dataset, codes or embeddings changed since it
        was trained."""
        rec = cls(run_dir, encoder=encoder, device=device)
        if retrieval != "exact":
            rec.set_retrieval(retrieval, retrieval_params)
        return rec

    # ----- catalogue ----------------------------------------------------------------------------------------
    def _scoring_rows(self, table: torch.Tensor) -> torch.Tensor:
        return scoring_vectors(table.detach().to(self.device, torch.float32), self.similarity)

    def _append(self, records: list[dict[str, Any]], candidate: torch.Tensor, history: torch.Tensor | None) -> None:
        """Add rows for ``records`` (each with a 'raw_id'); caller holds the write lock or is the constructor."""
        rows = self._scoring_rows(candidate)
        self._candidate = torch.cat([self._candidate, rows])
        if self._history is not None:
            hist = candidate if history is None else history
            self._history = torch.cat([self._history, hist.detach().to(self.device, self._history.dtype)])
        self._popularity = torch.cat([self._popularity, self._popularity.new_zeros(len(records))])
        for record in records:
            self._index[record["raw_id"]] = len(self._raw_ids)
            self._cold[len(self._raw_ids)] = record
            self._raw_ids.append(record["raw_id"])
        if self._faiss is not None:
            self._faiss.add(rows.cpu().numpy())

    @property
    def n_items(self) -> int:
        """Rankable items: the dataset's plus the cold-start additions."""
        return len(self._raw_ids) - 1

    @property
    def n_cold_items(self) -> int:
        return len(self._raw_ids) - self._n_base

    @property
    def retrieval(self) -> str:
        return self._retrieval

    @property
    def ann_index(self) -> Any:
        """The approximate faiss index searched by :meth:`recommend_batch` (None with exact retrieval)."""
        return self._faiss

    def set_retrieval(self, kind: str, params: dict[str, Any] | None = None) -> None:
        """'exact' (one matrix product over all items) or an approximate faiss index ('hnsw' | 'ivf')."""
        with self._add_lock:  # no rows may be appended between the build and the swap
            built = None
            if kind != "exact":
                built = faiss_index.approx_index(self._candidate[1:].cpu().numpy(), kind, params)
            with self._lock.write():
                self._retrieval, self._faiss = kind, built

    def item_id(self, raw_id: str) -> int:
        """Internal id (1..n_items) of a raw id; :class:`UnknownItem` when absent."""
        found = self._index.get(raw_id)
        if found is None:
            raise UnknownItem(f"unknown item {raw_id!r}")
        return found

    def item(self, raw_id: str) -> dict[str, Any]:
        """Texts of one item and whether it is a cold-start addition."""
        with self._lock.read():
            i = self.item_id(raw_id)
            if i in self._cold:
                record = self._cold[i]
                return {"raw_id": raw_id, "cold_start": True, "texts": dict(record.get("texts", {})),
                        "added_at": record.get("added_at")}
            row = self.dataset.items.iloc[i - 1]
            return {"raw_id": raw_id, "cold_start": False, "texts": {v: str(row[v]) for v in self.dataset.views},
                    "added_at": None}

    def item_matrix(self) -> tuple[np.ndarray, list[str]]:
        """Scoring vectors ``[n_items, d]`` (normalised for cosine models) and raw ids, row j = item j + 1."""
        with self._lock.read():
            return self._candidate[1:].cpu().numpy().copy(), list(self._raw_ids[1:])

    def user_history(self, raw_user_id: str) -> list[str]:
        """The raw item ids of a dataset user's whole sequence (oldest first)."""
        users = self.dataset.users["raw_id"].astype(str).tolist()
        if raw_user_id not in users:
            raise UnknownItem(f"unknown user {raw_user_id!r} in dataset '{self.dataset.name}'")
        return self.dataset.raw_item_ids(self.dataset.sequences[users.index(raw_user_id)])

    def info(self) -> dict[str, Any]:
        return {"model": self.config.model, "dataset": self.dataset.name, "run": str(self.run_dir),
                "n_items": self.n_items, "n_cold_items": self.n_cold_items, "similarity": self.similarity,
                "retrieval": self._retrieval, "max_history_used": self.max_len,
                "cold_start": self.cold_start_refusal is None}

    # ----- scoring ------------------------------------------------------------------------------------------
    def _resolve(self, history: Sequence[str]) -> tuple[list[int], list[str]]:
        if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
            raise SemrecError("a history must be a list of raw item ids (oldest first), not "
                              f"{type(history).__name__}")
        known, unknown = [], []
        for raw in history:
            raw = raw if isinstance(raw, str) else str(raw)
            i = self._index.get(raw)
            if i is None:
                unknown.append(raw)
            else:
                known.append(i)
        return known, unknown

    @torch.no_grad()
    def user_vectors(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """User vectors ``[B, d]`` of non-empty internal-id histories (the last ``max_len`` items), normalised for
        cosine models. Not synchronised with :meth:`add_items` (the recommend methods are)."""
        items, lengths = pad_right([np.asarray(h, dtype=np.int64) for h in histories], self.max_len)
        width = max(1, int(lengths.max())) if len(lengths) else 1
        items_t = torch.from_numpy(items[:, :width]).to(self.device)
        user = self.model.encode_sequence(items_t, torch.from_numpy(lengths).to(self.device), self._history)
        return scoring_vectors(user, self.similarity)

    def _scores(self, known: list[list[int]], exclude_seen: bool) -> torch.Tensor:
        """Scores ``[B, n_items + 1]`` (column = internal id) under the one ranking rule
        (:mod:`semrec.eval.ranking`): one matrix product; padding, and seen items when asked, at -inf; histories
        without a known item get the training frequencies (popularity fallback)."""
        scores = torch.empty(len(known), len(self._raw_ids), device=self.device)
        real = [r for r, ids in enumerate(known) if ids]
        if real:
            histories = [known[r] for r in real]
            seen = history_pairs(histories, device=self.device) if exclude_seen else None
            scores[real] = item_scores(self.user_vectors(histories), self._candidate, start=0, exclude=seen)
        empty = [r for r, ids in enumerate(known) if not ids]
        if empty:
            scores[empty] = mask_scores(self._popularity.expand(len(empty), -1).clone())
        return scores

    def score_histories(self, histories: Sequence[Sequence[str]], exclude_seen: bool = True) -> torch.Tensor:
        """Full score matrix ``[B, n_items + 1]`` of raw-id histories (column = internal id, see :meth:`item_id`)."""
        with self._lock.read():
            known = [self._resolve(h)[0] for h in histories]
            return self._scores(known, exclude_seen)

    def _top(self, known: list[list[int]], k: int, exclude_seen: bool) -> list[list[tuple[int, float]]]:
        if self._faiss is None or all(not ids for ids in known):
            out = []
            rows = max(1, SCORE_BUDGET // len(self._raw_ids))  # bounded score matrices for huge catalogues
            for start in range(0, len(known), rows):
                scores = self._scores(known[start:start + rows], exclude_seen)
                out += top_lists(scores, min(k, scores.size(1) - 1))
            return out
        out: list[list[tuple[int, float]]] = [[] for _ in known]
        real = [r for r, ids in enumerate(known) if ids]
        users = self.user_vectors([known[r] for r in real]).cpu().numpy()
        seen = [set(known[r]) if exclude_seen else set() for r in real]
        for r, top in zip(real, faiss_index.search_unseen(self._faiss, users, seen, k)):
            out[r] = top
        empty = [r for r, ids in enumerate(known) if not ids]
        for r, top in zip(empty, self._top([[] for _ in empty], k, exclude_seen) if empty else []):
            out[r] = top
        return out

    def recommend_batch(self, histories: Sequence[Sequence[str]], k: int = 10,
                        exclude_seen: bool = True) -> list[Recommendation]:
        """Top-``k`` raw ids with scores for each history of raw item ids (oldest first). Unknown ids are reported
        in ``unknown`` and ignored; a history with no known item gets the most popular items."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SemrecError(f"k must be a positive integer, got {k!r}")
        with self._lock.read():
            resolved = [self._resolve(h) for h in histories]
            if not resolved:
                return []
            known = [ids for ids, _ in resolved]
            tops = self._top(known, k, exclude_seen)
            return [Recommendation(items=[ScoredItem(self._raw_ids[i], s, self._title(i)) for i, s in top],
                                   unknown=unknown, history_used=min(len(ids), self.max_len),
                                   fallback=None if ids else "popularity")
                    for (ids, unknown), top in zip(resolved, tops)]

    def recommend(self, history: Sequence[str], k: int = 10, exclude_seen: bool = True) -> Recommendation:
        """Top-``k`` raw ids with scores for one history (see :meth:`recommend_batch`)."""
        return self.recommend_batch([history], k, exclude_seen)[0]

    def _title(self, i: int) -> str | None:
        if self._titles is None:
            return None
        if i < self._n_base:
            return self._titles[i - 1]
        return self._cold[i].get("texts", {}).get("title")

    # ----- cold start ---------------------------------------------------------------------------------------
    def _get_featurizer(self) -> ItemFeaturizer:
        if self._featurizer is None:
            self._featurizer = ItemFeaturizer(self.config, self.dataset, self._tokenizer, self._encoder,
                                              "cpu" if self.device.type == "cpu" else str(self.device))
        return self._featurizer

    def warm_up(self) -> float:
        """Load now what the first requests would otherwise load on the way (call it at start-up): for models that
        can add items, the fitted tokenizer and the text encoder of :meth:`add_items`, exercised on one made-up
        item through the whole path (encoding loads the model, typically seconds; nothing is added), then one
        scoring pass. Additions wait while it runs. Returns the seconds taken; raises
        :class:`EncoderUnavailable` when the encoder cannot be loaded, SemrecError when the tokenizer cannot or
        does not fit the encoder's vectors."""
        start = time.perf_counter()
        if self.cold_start_refusal is None:
            with self._add_lock:
                featurizer = self._get_featurizer()
                featurizer.load_encoder()  # even when the probe item's texts are all in the catalogue
                features = featurizer.features([{view: "warm-up" for view in self.dataset.views}])
                item_vectors(self.config, self.model.state_dict(), features, self._codebook_sizes, self.device)
        self.recommend_batch([[self._raw_ids[1]]], k=1)
        return time.perf_counter() - start

    @property
    def encoder_loaded(self) -> bool:
        """Whether :meth:`add_items` has its tokenizer and text encoder (after :meth:`warm_up` or a first addition)."""
        return self._featurizer is not None and self._featurizer.loaded

    def _check_new(self, raw_ids: list[str]) -> None:
        dupes = sorted(r for r, n in Counter(raw_ids).items() if n > 1)
        if dupes:
            raise ItemConflict(f"raw id(s) given twice in one request: {', '.join(map(repr, dupes[:10]))}")
        taken = [r for r in raw_ids if r in self._index]
        if taken:
            raise ItemConflict(f"item(s) already in the catalogue: {', '.join(map(repr, taken[:10]))}"
                               f"{' ...' if len(taken) > 10 else ''}")

    def add_items(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Make new items rankable at once, without retraining: ``[{raw_id, title, brand, ...}]`` (the dataset's
        view names). Texts are encoded with the run's encoder, coded by its tokenizer and turned into item vectors
        by the trained model; the items are saved to ``<run>/cold_items.npz`` (atomically) before they become
        visible. Models without text or codes refuse (:class:`ColdStartUnsupported`)."""
        if self.cold_start_refusal:
            raise ColdStartUnsupported(self.cold_start_refusal)
        if isinstance(items, Mapping) or not isinstance(items, Sequence) or not items:
            raise SemrecError("add_items takes a non-empty list of items ({raw_id, <view>: text, ...})")
        with self._add_lock:  # one addition at a time; recommendations go on until the append below
            cleaned = [clean_item(item, self.dataset.views) for item in items]
            raw_ids = [raw for raw, _ in cleaned]
            self._check_new(raw_ids)
            featurizer = self._get_featurizer()
            for raw, texts in cleaned:
                featurizer.check_readable(raw, texts)
            features = featurizer.features([texts for _, texts in cleaned])
            candidate, history = item_vectors(self.config, self.model.state_dict(), features, self._codebook_sizes,
                                              self.device)
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            records = [{"raw_id": raw, "texts": texts, "added_at": now} for raw, texts in cleaned]
            merged = {k: np.concatenate([self._cold_features[k], v]) if k in self._cold_features else v
                      for k, v in features.items()}
            save_cold_items(self.run_dir, self._cold_records + records, merged, self.fingerprints)
            with self._lock.write():
                first = len(self._raw_ids)
                self._append(records, candidate, history)
                self._cold_records, self._cold_features = self._cold_records + records, merged
        codes = features.get("codes")
        return [{"raw_id": raw, "item_id": first + j, **({"codes": codes[j].tolist()} if codes is not None else {})}
                for j, raw in enumerate(raw_ids)]

    def add_vectors(self, raw_ids: Sequence[str], candidate: torch.Tensor | np.ndarray,
                    history: torch.Tensor | np.ndarray | None = None) -> None:
        """Low level: add items by precomputed vectors (model space, before normalisation), in memory only (not
        saved). For synthetic catalogues in benchmarks; ``history`` defaults to ``candidate``."""
        as_tensor = lambda x: None if x is None else torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        cand, hist = as_tensor(candidate), as_tensor(history)
        if cand.ndim != 2 or len(cand) != len(raw_ids) or cand.size(1) != self._candidate.size(1):
            raise SemrecError(f"candidate vectors must be [{len(raw_ids)}, {self._candidate.size(1)}], "
                              f"got {list(cand.shape)}")
        with self._add_lock:
            self._check_new(list(raw_ids))
            with self._lock.write():
                self._append([{"raw_id": str(r), "texts": {}, "added_at": None} for r in raw_ids], cand, hist)
