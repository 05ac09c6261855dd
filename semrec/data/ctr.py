"""Pointwise CTR samples (the SOLID task, spec solid sections 2-3): (user, history, candidate, label) rows built from
a canonical dataset and its leave-last-out split, written once so that every model is scored on the same candidates.

The split is the project's leave-last-out (:mod:`semrec.data.splits`): per user with ``n >= 3`` items, the test
positive is item ``n-1`` and the valid positive item ``n-2``; training positives are items ``1 .. n-3`` (item 0
has no history). Users with fewer than 3 items give training positives only (items ``1 .. n-1``). Each row's
history is the at most ``history`` items just before its position, so a row is stored as ``(split, user, position,
candidate, label)`` and its history is read from the dataset's sequences in the batch (no second file that must
stay aligned by line number: spec solid 3.2's pitfall).

Negatives are items the user never interacted with (over the whole sequence, test item included), drawn uniformly:
``train_negatives`` per training positive (with replacement across rows: a pair can repeat, rarely), and for valid
and test ``eval_negatives`` distinct ones per user. Draws come from ``numpy.random.default_rng([seed, split])``, so
the table depends only on the dataset and the config. Rows of one user are contiguous (users in id order; within
a user, positions in time order, each positive followed by its negatives), as the reference's per-user metrics
require (spec solid 3.1, 8).

The SOLID spec leaves the generator unknown (3.4); these defaults follow its suggestion: L = 30, 4 negatives per
positive, and 1 positive + 99 negatives per user for valid and test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from semrec.artifacts import CTR_FIX, CtrFolder, DatasetFolder
from semrec.data.splits import MIN_EVAL_LENGTH
from semrec.errors import SemrecError
from semrec.io import atomic_path, require_artifact, sha256_file, write_json

if TYPE_CHECKING:
    from semrec.config import CtrConfig

SPLITS = ("train", "valid", "test")
COLUMNS = ("split", "user", "position", "candidate", "label")


@dataclass
class CtrSamples:
    """The sample table: one row per (user, position, candidate), columns :data:`COLUMNS`.

    ``split`` int8 (0 train, 1 valid, 2 test), ``user`` int64 (row of ``dataset.sequences``), ``position`` int64
    (index of the candidate's slot in the user's sequence: the history is ``sequence[max(0, position - L):
    position]``), ``candidate`` int64 item id 1..N, ``label`` int8 0/1."""

    frame: pd.DataFrame

    def part(self, split: str) -> pd.DataFrame:
        """The rows of one split (``train``, ``valid`` or ``test``), in table order."""
        return self.frame[self.frame["split"].to_numpy() == SPLITS.index(split)].reset_index(drop=True)

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows, positives and users per split."""
        out = {}
        for split in SPLITS:
            part = self.part(split)
            out[split] = {"rows": int(len(part)), "positives": int(part["label"].sum()),
                          "users": int(part["user"].nunique())}
        return out


def _positions(sequences: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(users, positions) of every positive of each split, users in id order and positions in time order."""
    out: dict[str, tuple[list[int], list[int]]] = {s: ([], []) for s in SPLITS}
    for user, seq in enumerate(sequences):
        n = len(seq)
        last_train = n - 2 if n >= MIN_EVAL_LENGTH else n  # exclusive
        out["train"][0].extend([user] * max(0, last_train - 1))
        out["train"][1].extend(range(1, last_train))
        if n >= MIN_EVAL_LENGTH:
            out["valid"][0].append(user)
            out["valid"][1].append(n - 2)
            out["test"][0].append(user)
            out["test"][1].append(n - 1)
    return {s: (np.asarray(u, dtype=np.int64), np.asarray(p, dtype=np.int64)) for s, (u, p) in out.items()}


class _Seen:
    """Membership of (user, item) pairs in the users' whole sequences, vectorised through sorted pair keys."""

    def __init__(self, sequences: list[np.ndarray], n_items: int):
        self.width = n_items + 1
        users = np.repeat(np.arange(len(sequences), dtype=np.int64), [len(s) for s in sequences])
        items = np.concatenate(sequences).astype(np.int64) if sequences else np.zeros(0, dtype=np.int64)
        self.keys = np.unique(users * self.width + items)
        self.count = np.asarray([len(np.unique(s)) for s in sequences], dtype=np.int64)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.width + items
        where = np.searchsorted(self.keys, keys)
        where = np.minimum(where, len(self.keys) - 1)
        return self.keys[where] == keys if len(self.keys) else np.zeros(len(keys), dtype=bool)


def _draw_unseen(rng: np.random.Generator, seen: _Seen, users: np.ndarray, n_items: int) -> np.ndarray:
    """One uniform unseen item per entry of ``users`` (rejection sampling; every user has an unseen item)."""
    out = rng.integers(1, n_items + 1, size=len(users))
    bad = seen.contains(users, out)
    while bad.any():
        out[bad] = rng.integers(1, n_items + 1, size=int(bad.sum()))
        bad[bad] = seen.contains(users[bad], out[bad])
    return out


def _distinct_unseen(rng: np.random.Generator, seen: _Seen, user: int, k: int, n_items: int) -> np.ndarray:
    """``k`` distinct unseen items of one user, uniformly without replacement."""
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < k:
        draw = rng.integers(1, n_items + 1, size=2 * (k - len(chosen)) + 8)
        ok = ~seen.contains(np.full(len(draw), user, dtype=np.int64), draw)
        for item in draw[ok].tolist():
            if item not in taken:
                taken.add(item)
                chosen.append(item)
                if len(chosen) == k:
                    break
    return np.asarray(chosen, dtype=np.int64)


def build_ctr_samples(sequences: list[np.ndarray], n_items: int, train_negatives: int = 4,
                      eval_negatives: int = 99, seed: int = 0, user_names: list[str] | None = None) -> CtrSamples:
    """The CTR sample table of a dataset's sequences (module docstring for the rules).

    Raises SemrecError when a setting is negative, or when a user has fewer unseen items than a split needs
    (naming the user, by ``user_names[row]`` when given, the counts and the option to lower)."""
    for name, value in (("train_negatives", train_negatives), ("eval_negatives", eval_negatives)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise SemrecError(f"{name} must be an integer >= 0, got {value!r}")
    seen = _Seen(sequences, n_items)
    unseen = n_items - seen.count
    positions = _positions(sequences)
    parts = []
    for index, split in enumerate(SPLITS):
        users, pos = positions[split]
        if not len(users):
            continue
        rng = np.random.default_rng([seed, index])
        k = train_negatives if split == "train" else eval_negatives
        short = np.flatnonzero(unseen[users] < (1 if split == "train" else k)) if k else np.zeros(0, dtype=np.int64)
        if len(short):
            user = int(users[short[0]])
            who = f"user {user_names[user]!r}" if user_names is not None else f"user row {user}"
            raise SemrecError(f"{who} interacted with {int(seen.count[user])} of {n_items} items, so "
                              f"{int(unseen[user])} unseen item(s) remain for {k} {split} negatives; lower "
                              f"--{'train' if split == 'train' else 'eval'}-negatives")
        candidates = np.asarray([sequences[u][p] for u, p in zip(users.tolist(), pos.tolist())], dtype=np.int64)
        if split == "train":
            negatives = _draw_unseen(rng, seen, np.repeat(users, k), n_items).reshape(len(users), k)
        else:
            negatives = np.stack([_distinct_unseen(rng, seen, int(u), k, n_items) for u in users]) if k else \
                np.zeros((len(users), 0), dtype=np.int64)
        block = np.concatenate([candidates[:, None], negatives], axis=1)  # [positives, 1 + k]
        labels = np.zeros_like(block, dtype=np.int8)
        labels[:, 0] = 1
        parts.append(pd.DataFrame({
            "split": np.full(block.size, index, dtype=np.int8),
            "user": np.repeat(users, 1 + k), "position": np.repeat(pos, 1 + k),
            "candidate": block.reshape(-1), "label": labels.reshape(-1)}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {c: np.zeros(0, dtype=np.int8 if c in ("split", "label") else np.int64) for c in COLUMNS})
    # users contiguous within a split (train rows of a user, then its valid rows, then its test rows would also
    # do; the reference groups consecutive rows per file, one split per file)
    return CtrSamples(frame[list(COLUMNS)])


def histories(sequences: list[np.ndarray], users: np.ndarray, positions: np.ndarray,
              length: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-aligned, right-padded histories ``int64 [rows, length]`` (0 = padding) and their lengths: the at most
    ``length`` items before each row's position (spec solid 3.1: the state is read at index length - 1)."""
    out = np.zeros((len(users), length), dtype=np.int64)
    lengths = np.zeros(len(users), dtype=np.int64)
    for row, (user, pos) in enumerate(zip(users.tolist(), positions.tolist())):
        tail = sequences[user][max(0, pos - length): pos]
        out[row, : len(tail)] = tail
        lengths[row] = len(tail)
    return out, lengths


# ------------------------------------------------------------------------------------------------ on disk


def write_ctr_samples(dataset_dir: str | Path, config: CtrConfig) -> tuple[CtrSamples, Path]:
    """Build the samples of the prepared dataset in ``dataset_dir`` and write ``<dataset>/ctr/<config.name>/``
    (samples.parquet and the manifest atomically, manifest last). Raises SemrecError on bad settings or data."""
    from semrec.config import save_config
    from semrec.data.dataset import CanonicalDataset

    if isinstance(config.history, bool) or not isinstance(config.history, int) or config.history < 1:
        raise SemrecError(f"history must be an integer >= 1, got {config.history!r}")
    folder = DatasetFolder(dataset_dir)
    dataset = CanonicalDataset.load(dataset_dir)
    samples = build_ctr_samples(dataset.sequences, dataset.n_items, config.train_negatives, config.eval_negatives,
                                config.seed, user_names=dataset.users["raw_id"].astype(str).tolist())
    target = folder.ctr(config.name)
    with atomic_path(target.samples) as tmp:
        samples.frame.to_parquet(tmp, index=False)
    save_config(config, target.config)
    write_json(target.manifest, {
        "history": config.history, "train_negatives": config.train_negatives,
        "eval_negatives": config.eval_negatives, "seed": config.seed, "n_items": dataset.n_items,
        "counts": samples.counts(), "dataset_manifest_sha256": folder.manifest_sha256(),
        "samples_sha256": sha256_file(target.samples)})
    return samples, target.path


def load_ctr_samples(folder: str | Path, dataset_dir: str | Path | None = None) -> tuple[CtrSamples, dict]:
    """The samples and manifest of a ``ctr/<name>`` folder. With ``dataset_dir``, SemrecError when they were
    built from another version of that dataset; always when the table is unreadable or not the one written."""
    ctr = CtrFolder(folder)
    manifest = ctr.read_manifest()
    require_artifact(ctr.samples, "CTR samples", CTR_FIX)
    if dataset_dir is not None and not ctr.is_current(DatasetFolder(dataset_dir)):
        raise SemrecError(f"{ctr.path}: built from another version of {dataset_dir}; {CTR_FIX}")
    if sha256_file(ctr.samples) != manifest.get("samples_sha256"):
        raise SemrecError(f"{ctr.samples}: not the table ctr.json describes (changed or damaged); {CTR_FIX}")
    try:
        frame = pd.read_parquet(ctr.samples)
    except (OSError, ValueError) as exc:
        raise SemrecError(f"{ctr.samples}: cannot read ({type(exc).__name__}: {exc}); {CTR_FIX}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SemrecError(f"{ctr.samples}: no column(s) {', '.join(missing)}; {CTR_FIX}")
    return CtrSamples(frame[list(COLUMNS)]), manifest


def format_ctr_report(manifest: dict) -> str:
    """What ``semrec ctr-data`` built, one line per split plus the settings."""
    lines = [f"settings     history L = {manifest['history']}, {manifest['train_negatives']} unseen negatives per "
             f"training positive, 1 positive + {manifest['eval_negatives']} unseen negatives per user for valid "
             f"and test, seed {manifest['seed']}"]
    for split, c in manifest["counts"].items():
        lines.append(f"{split:<12} {c['rows']:,} rows, {c['positives']:,} positives, {c['users']:,} users")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ batches


@dataclass
class CtrRows:
    """The rows of one split as arrays: histories ``int64 [R, L]`` (left-aligned, 0 = padding), ``lengths [R]``,
    ``candidates [R]``, ``labels [R]`` (0/1), ``users [R]``."""

    items: np.ndarray
    lengths: np.ndarray
    candidates: np.ndarray
    labels: np.ndarray
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, samples: CtrSamples, split: str, sequences: list[np.ndarray], length: int) -> CtrRows:
        part = samples.part(split)
        users = part["user"].to_numpy(np.int64)
        items, lengths = histories(sequences, users, part["position"].to_numpy(np.int64), length)
        return cls(items, lengths, part["candidate"].to_numpy(np.int64), part["label"].to_numpy(np.int64), users)

    def history_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Runs of consecutive rows with the same history (same length and ids): ``(starts [G], group [R])``, the
        first row of each run and each row's run index. Cached (the rows never change)."""
        cached = getattr(self, "_groups", None)
        if cached is None:
            n = len(self.labels)
            change = np.ones(n, dtype=bool)
            if n > 1:
                change[1:] = (self.lengths[1:] != self.lengths[:-1]) | (self.items[1:] != self.items[:-1]).any(axis=1)
            cached = (np.flatnonzero(change), np.cumsum(change) - 1)
            self._groups = cached
        return cached

    def batch(self, idx: np.ndarray, device) -> dict:
        import torch

        width = max(1, int(self.lengths[idx].max())) if len(idx) else 1
        return {"items": torch.from_numpy(self.items[idx, :width]).to(device),
                "lengths": torch.from_numpy(self.lengths[idx]).to(device),
                "candidates": torch.from_numpy(self.candidates[idx]).to(device),
                "labels": torch.from_numpy(self.labels[idx]).float().to(device)}
