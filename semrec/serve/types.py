"""What the recommender returns, and the errors the HTTP layer maps to status codes."""

from __future__ import annotations

from dataclasses import dataclass, field

from semrec.errors import SemrecError


class UnknownItem(SemrecError):
    """A raw item id (or user id) that is not in the catalogue."""


class ItemConflict(SemrecError):
    """An added item's raw id is already in the catalogue."""


@dataclass
class ScoredItem:
    raw_id: str
    score: float  # the model's similarity (cosine or dot); the training frequency for popularity fallbacks
    title: str | None = None


@dataclass
class Recommendation:
    items: list[ScoredItem]
    unknown: list[str] = field(default_factory=list)  # raw ids of the history not in the catalogue (ignored)
    history_used: int = 0  # known history items the model read (the last max_len)
    fallback: str | None = None  # "popularity" when no history item is known
