"""Models (one file each) and the registry: name -> (config dataclass, model class, what it reads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from semrec.config import from_dict
from semrec.errors import SemrecError
from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from semrec.models.ccfrec import CCFRec, CCFRecConfig
from semrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from semrec.models.popularity import Popularity, PopularityConfig
from semrec.models.sasrec import SASRec, SASRecConfig
from semrec.models.unisrec import UniSRec, UniSRecConfig
from semrec.models.vqrec import VQRec, VQRecConfig


@dataclass(frozen=True)
class ModelEntry:
    config_class: type
    model_class: type[SequentialRecommender]
    needs: tuple[str, ...] = ()  # "codes", "text" (PCA vectors of a pq tokenizer), "plm" (raw vectors)
    trainable: bool = True
    pretrain_tokenizer: str | None = None  # the tokenizer kind `semrec pretrain` fits jointly on every domain


REGISTRY: dict[str, ModelEntry] = {
    "popularity": ModelEntry(PopularityConfig, Popularity, trainable=False),
    "sasrec": ModelEntry(SASRecConfig, SASRec),
    "gru4rec": ModelEntry(GRU4RecConfig, GRU4Rec),
    "bert4rec": ModelEntry(BERT4RecConfig, BERT4Rec),
    "ccfrec": ModelEntry(CCFRecConfig, CCFRec, needs=("codes", "text")),
    "vqrec": ModelEntry(VQRecConfig, VQRec, needs=("codes",), pretrain_tokenizer="opq"),
    "unisrec": ModelEntry(UniSRecConfig, UniSRec, needs=("plm",)),
}


def model_entry(name: str) -> ModelEntry:
    if name not in REGISTRY:
        raise SemrecError(f"unknown model '{name}' (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def build_model(name: str, params: dict[str, Any], items: ItemInputs) -> SequentialRecommender:
    """Instantiate model ``name`` from a params mapping (validated against its config dataclass)."""
    entry = model_entry(name)
    config = from_dict(entry.config_class, params, prefix="model_params.")
    try:
        return entry.model_class(config, items)
    except ValueError as exc:
        raise SemrecError(f"{name}: {exc}") from None


__all__ = ["REGISTRY", "ItemInputs", "SequentialRecommender", "build_model", "model_entry"]
