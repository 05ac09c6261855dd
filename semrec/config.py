"""Typed dataclass configs with YAML in/out and ``key=value`` overrides (dotted keys for nesting).

Every command resolves its config the same way: dataclass defaults, then a YAML file (optional),
then CLI overrides; the resolved config is saved next to what the command writes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from semrec.errors import SemrecError
from semrec.io import atomic_path

T = TypeVar("T")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except SemrecError as exc:
                errors.append(str(exc))
        raise SemrecError(errors[0] if errors else f"config '{key}': bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SemrecError(f"config '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise SemrecError(f"config '{key}': expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, key) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SemrecError(f"config '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise SemrecError(f"config '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (
                isinstance(value, str) and not value.lstrip("-").isdigit()):
            raise SemrecError(f"config '{key}': expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SemrecError(f"config '{key}': expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise SemrecError(f"config '{key}': expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking names and types; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SemrecError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)} "
                          f"(known: {', '.join(sorted(prefix + n for n in names))})")
    values = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars/lists) to a nested mapping."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise SemrecError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Defaults <- ``base`` <- YAML file ``path`` <- ``overrides``."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SemrecError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SemrecError(f"{path}: invalid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise SemrecError(f"{path}: expected a mapping at the top level")
        data.update(loaded)
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    """Write a config as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")


@dataclasses.dataclass
class PrepareConfig:
    """``semrec prepare``: read one input format into a canonical dataset."""

    source: str = "recbole:ml-100k"
    format: str = "auto"  # amazon2023 | lcrec | recbole | movielens | auto
    name: str | None = None
    out: str | None = None  # default: data/<name>
    meta: str | None = None  # amazon2023 only: explicit metadata file
    missing_meta: str = "drop"  # drop | keep interactions on items without metadata


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
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # tokenizer parameters
    fit_on: str | None = None  # all | train (items in training sequences); default per tokenizer
    dedup: bool = False  # append one extra digit that makes every item's code unique
    seed: int = 0


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, early stopping and evaluation settings shared by every model."""

    epochs: int = 500
    batch_size: int = 400  # global batch (split across ranks under torchrun)
    eval_batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 500  # linear ramp 0 -> lr, then the schedule
    schedule: str = "constant"  # constant | linear | cosine (after warm-up, over all planned steps)
    grad_clip: float | None = None  # max gradient norm
    patience: int = 10  # evaluations without improvement before stopping
    time_budget_minutes: float | None = None  # wall time of one train invocation (setup included); None = no limit
    eval_every: int = 1  # epochs between validation passes
    metric: str = "ndcg@10"  # validation metric for model selection
    exclude_history: bool = False  # remove history items from the ranking
    seed: int = 2020
    device: str | None = None  # default: cuda when available
    max_steps_per_epoch: int | None = None  # cap (quick runs and benchmarks); None = full epochs
    progress: bool = True
    malloc_mmap_threshold_mb: float = 4.0  # glibc: fixed mmap threshold, large tensors off the heap; 0 = glibc default
    huge_pages: bool = True  # Linux: transparent huge pages for large CPU tensors (fewer page faults)
    malloc_trim: bool = True  # glibc: return freed heap pages after each CPU step (peak RSS flat over long runs)


@dataclasses.dataclass
class RunConfig:
    """Everything ``semrec train`` needs; saved as config.yaml in the run folder."""

    model: str = "sasrec"  # a name in semrec.models.REGISTRY (see `semrec train --help`)
    dataset: str = "data/ml-100k"  # a folder written by 'semrec prepare'
    codes: str = "pq"  # codes folder under <dataset>/codes (models that read codes or text vectors)
    text_model: str = "all-MiniLM-L6-v2"  # whose embeddings models reading raw text vectors ('plm') use
    text_view: str = "all"  # which view those models read
    init_from: str | None = None  # run folder or checkpoint whose weights initialise the model (fine-tuning)
    model_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    out: str | None = None  # run folder (default runs/<dataset>-<model>-<time>)
