"""The typed configs of every command (prepare, embed, codes, train), with YAML in/out and ``key=value`` overrides.

Every command resolves its config the same way: dataclass defaults, then a YAML file (optional),
then CLI overrides; the resolved config is saved next to what the command writes. How text values are read
(by the type of the field they set, never by YAML's guess) is :mod:`semrec.typed`; the free-form mappings
``model_params`` and ``params`` are typed by the model's config class or the tokenizer's constructor, looked up
here at call time.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from semrec.typed import (  # noqa: F401  (re-exported: the configs' loading API)
    Override,
    Text,
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


def _model_param_types(config: RunConfig) -> dict[str, Any]:
    """Field types of the model's config class ({} for an unknown model: the model refuses it later)."""
    from semrec.models import REGISTRY

    entry = REGISTRY.get(config.model)
    return typing.get_type_hints(entry.config_class) if entry is not None else {}


def _tokenizer_param_types(config: CodesConfig) -> dict[str, Any]:
    """Parameter types of the tokenizer's constructor ({} for an unknown kind: the pipeline refuses it later)."""
    from semrec.tokenizers import TOKENIZERS

    cls = TOKENIZERS.get(config.tokenizer)
    return {k: v for k, v in typing.get_type_hints(cls.__init__).items() if k != "return"} if cls else {}


@dataclasses.dataclass
class PrepareConfig:
    """``semrec prepare``: read one input format into a canonical dataset."""

    source: str = "recbole:ml-100k"
    format: str = "auto"  # amazon2023 | lcrec | recbole | movielens | auto
    name: str | None = None
    out: str | None = None  # default: data/<name>
    meta: str | None = None  # amazon2023 only: explicit metadata file
    missing_meta: str = "drop"  # drop | keep interactions on items without metadata
    memory_limit: str = "256MB"  # the out-of-core build's working memory (DuckDB), beyond which it spills to TMPDIR


@dataclasses.dataclass
class EmbedConfig:
    """``semrec embed``: one PLM matrix per text view."""

    model: str = "all-MiniLM-L6-v2"
    views: list[str] | None = None  # default: every view of the dataset plus the joined view 'all'
    batch_size: int = 64
    device: str | None = None  # default: cuda when available, else cpu
    max_seq_length: int | None = None  # default: the model's own


@dataclasses.dataclass
class CodesConfig:
    """``semrec codes``: fit an item tokenizer on the view embeddings and encode every item."""

    tokenizer: str = "pq"  # pq (CCFRec layout) | opq (VQ-Rec layout) | rq | kmeans
    name: str | None = None  # output folder under <dataset>/codes/ (default: the tokenizer kind)
    model: str = "all-MiniLM-L6-v2"  # whose embeddings to read
    params: dict[str, Any] = dataclasses.field(default_factory=dict,  # tokenizer parameters
                                               metadata={"param_types": _tokenizer_param_types})
    fit_on: str | None = None  # all | train (items in training sequences); default per tokenizer
    # Append one extra digit that makes every item's code unique: true | false | auto (added when more than 5% of
    # items share their full code); default (None) the tokenizer's own: auto for pq, false for opq / rq / kmeans.
    dedup: bool | Literal["auto"] | None = None
    seed: int = 0


@dataclasses.dataclass
class CtrConfig:
    """``semrec ctr-data``: pointwise CTR samples (SOLID's task) from a prepared dataset, written once
    (:mod:`semrec.data.ctr`)."""

    name: str = "ctr"  # output folder under <dataset>/ctr/
    history: int = 30  # L: items of history per row (the last L before the candidate)
    train_negatives: int = 4  # unseen items per training positive
    eval_negatives: int = 99  # distinct unseen items per user beside its valid / test positive
    seed: int = 0


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, early stopping and evaluation settings shared by every model."""

    epochs: int = 500
    # global batch (split across ranks under torchrun), counted in training samples: user windows for the
    # 'sequence' models (SASRec, GRU4Rec, BERT4Rec...: each window holds up to max_len target positions, ~7 on the
    # Amazon sets), prefix rows for 'prefix' models, CTR rows for the SOLID family. RecBole's train_batch_size counts
    # target positions, so copying its 2048 here gives several times fewer updates per epoch.
    batch_size: int = 400
    eval_batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 500  # linear ramp 0 -> lr, then the schedule
    schedule: str = "constant"  # constant | linear | cosine (after warm-up, over all planned steps)
    grad_clip: float | None = None  # max gradient norm
    patience: int = 10  # evaluations without improvement before stopping
    time_budget_minutes: float | None = None  # wall time of one train invocation (setup included); None = no limit
    eval_every: int = 1  # epochs between validation passes
    metric: str | None = None  # model-selection metric; default per task: ndcg@10 (ranking), uauc (CTR)
    select_on: str = "valid"  # valid | test (the SOLID reference selects on test UAUC; reported as such)
    exclude_history: bool = False  # remove history items from the ranking
    seed: int = 2020
    device: str | None = None  # default: cuda when available
    max_steps_per_epoch: int | None = None  # cap (quick runs and benchmarks); None = full epochs
    progress: bool = True
    malloc_mmap_threshold_mb: float = 4.0  # glibc: fixed mmap threshold, large tensors off the heap; 0 = glibc default
    huge_pages: bool = True  # Linux: transparent huge pages for large CPU tensors (fewer page faults)
    malloc_trim: bool = True  # glibc: return freed heap pages after each CPU step (peak RSS flat over long runs)
    malloc_reuse: bool = False  # glibc: all tensors from the heap, freed pages kept for the next step (fewer faults)
    malloc_trim_every: int = 1  # steps between heap trims; with malloc_reuse, trims only when this is above 1
    cpu_block_cache: bool = True  # CPU tensors >= 1 MiB from a caching allocator (semrec.train.block_cache; built
    # on first use with a C++ compiler, glibc's settings where none): freed blocks reused, fewer page faults
    cpu_block_cache_headroom: float = 0.05  # its blocks (in use + free) stay within (1 + this) x the most in use


@dataclasses.dataclass
class RunConfig:
    """Everything ``semrec train`` needs; saved as config.yaml in the run folder."""

    model: str = "sasrec"  # a name in semrec.models.REGISTRY (see `semrec train --help`)
    dataset: str = "data/ml-100k"  # a folder written by 'semrec prepare'
    codes: str = "pq"  # codes folder under <dataset>/codes (models that read codes or text vectors)
    ctr: str = "ctr"  # CTR samples folder under <dataset>/ctr (CTR models: 'semrec ctr-data')
    semantic: str | None = None  # SOLID family: codes folder of one-level k-means codes = the items' semantic ids
    codebook_from: str | None = None  # SOLID: run folder whose item table (semantic rows) is the frozen codebook
    text_model: str = "all-MiniLM-L6-v2"  # whose embeddings models reading raw text vectors ('plm') use
    text_view: str = "all"  # which view those models read
    init_from: str | None = None  # run folder or checkpoint whose weights initialise the model (fine-tuning)
    model_params: dict[str, Any] = dataclasses.field(default_factory=dict,
                                                     metadata={"param_types": _model_param_types})
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    out: str | None = None  # run folder (default runs/<dataset>-<model>-<time>)
