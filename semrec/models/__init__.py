"""Models (one file each) and the registry: name -> (config dataclass, model class, what it reads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from semrec.errors import SemrecError
from semrec.models.base import ItemInputs, SequentialRecommender
from semrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from semrec.models.ccfrec import CCFRec, CCFRecConfig
from semrec.models.dsr import DSR, DSRConfig
from semrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from semrec.models.popularity import Popularity, PopularityConfig
from semrec.models.sasrec import SASRec, SASRecConfig
from semrec.models.solid import SOLID, SOLIDConfig
from semrec.models.unisrec import UniSRec, UniSRecConfig
from semrec.models.vqrec import VQRec, VQRecConfig
from semrec.typed import from_dict


@dataclass(frozen=True)
class ModelEntry:
    """What generic code may know about a model: its config and class, the item inputs it reads besides item ids
    (``needs``: "codes", "text" = the PCA vectors of a pq tokenizer, "plm" = raw text vectors of one view) and
    whether it has parameters to train. Cold-start support: :func:`cold_start_refusal`; history length: the
    model's ``max_len``."""

    config_class: type
    model_class: type[SequentialRecommender]
    needs: tuple[str, ...] = ()
    trainable: bool = True
    pretrain_tokenizer: str | None = None  # the tokenizer kind `semrec pretrain` fits jointly on every domain
    task: str = "ranking"  # "ranking" (next item, full ranking) or "ctr" (pointwise, semrec.train.tasks)

    @property
    def reads_codes_folder(self) -> bool:
        """Whether the model reads a codes folder (its codes, or the PCA of its fitted tokenizer)."""
        return "codes" in self.needs or "text" in self.needs

    @property
    def reads_item_data(self) -> bool:
        """Whether items are more than ids to the model (codes or text), so that new items can be described."""
        return bool(self.needs)


REGISTRY: dict[str, ModelEntry] = {
    "popularity": ModelEntry(PopularityConfig, Popularity, trainable=False),
    "sasrec": ModelEntry(SASRecConfig, SASRec),
    "gru4rec": ModelEntry(GRU4RecConfig, GRU4Rec),
    "bert4rec": ModelEntry(BERT4RecConfig, BERT4Rec),
    "ccfrec": ModelEntry(CCFRecConfig, CCFRec, needs=("codes", "text")),
    "vqrec": ModelEntry(VQRecConfig, VQRec, needs=("codes",), pretrain_tokenizer="opq"),
    "unisrec": ModelEntry(UniSRecConfig, UniSRec, needs=("plm",)),
    "dsr": ModelEntry(DSRConfig, DSR, task="ctr"),  # CTR: Base / DUET / APG heads on a backbone (issue 19)
    "solid": ModelEntry(SOLIDConfig, SOLID, task="ctr"),  # CTR: DUET / APG + semantic codebook (run keys semantic,
                                                          # codebook_from)
}


def model_entry(name: str) -> ModelEntry:
    if name not in REGISTRY:
        raise SemrecError(f"unknown model '{name}' (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def cold_start_refusal(name: str, params: dict[str, Any]) -> str | None:
    """None when model ``name`` with ``params`` can rank an item added after training (its vectors are a function of
    its codes or text and the trained parameters), else the reason, one sentence with a way out."""
    entry = model_entry(name)
    if not entry.reads_item_data:
        readers = ", ".join(n for n, e in REGISTRY.items() if e.reads_item_data)
        return (f"{name} ranks items by learned per-item parameters (IDs or popularity), so an item added after "
                f"training cannot be ranked; retrain with the item in the dataset, or use a model that reads item "
                f"text or codes ({readers})")
    return entry.model_class.cold_start_refusal(from_dict(entry.config_class, params, prefix="model_params."))


def build_model(name: str, params: dict[str, Any], items: ItemInputs) -> SequentialRecommender:
    """Instantiate model ``name`` from a params mapping (validated against its config dataclass)."""
    entry = model_entry(name)
    config = from_dict(entry.config_class, params, prefix="model_params.")
    try:
        return entry.model_class(config, items)
    except ValueError as exc:
        raise SemrecError(f"{name}: {exc}") from None


__all__ = ["REGISTRY", "ItemInputs", "ModelEntry", "SequentialRecommender", "build_model", "cold_start_refusal",
           "model_entry"]
