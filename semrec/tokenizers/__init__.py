"""Item tokenizers: item vectors (one or more text views) -> discrete semantic codes.

``build_tokenizer(kind, **params)`` makes one from the registry ``TOKENIZERS``;
``load_tokenizer(folder)`` reads one written by ``save`` (``tokenizer.json`` + ``state.npz`` + faiss
index files).

Modules: ``base`` (the interface and the shared fit/encode/save/load machinery), ``pq``/``opq``/``rq``/``kmeans``
(the tokenizers), ``dedup`` (the extra de-duplication digit), ``pca`` (row-independent PCA projections),
``faiss_utils`` (faiss, threads, row-at-a-time calls), ``checks`` (input checks), ``storage`` (the on-disk
format), ``report`` (code quality), ``pipeline`` (``semrec codes`` on a prepared dataset).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from semrec.errors import SemrecError
from semrec.tokenizers.base import BaseTokenizer, ItemTokenizer
from semrec.tokenizers.dedup import add_dedup_level, next_dedup_digits
from semrec.tokenizers.kmeans import KMeansTokenizer
from semrec.tokenizers.opq import OPQTokenizer
from semrec.tokenizers.pq import PQTokenizer
from semrec.tokenizers.report import CodeReport, code_report
from semrec.tokenizers.rq import RQTokenizer
from semrec.tokenizers.storage import read_tokenizer_json

TOKENIZERS: dict[str, type[BaseTokenizer]] = {
    "pq": PQTokenizer,
    "opq": OPQTokenizer,
    "rq": RQTokenizer,
    "kmeans": KMeansTokenizer,
}


def tokenizer_class(kind: str) -> type[BaseTokenizer]:
    """The class registered under ``kind`` (SemrecError listing the known kinds otherwise)."""
    try:
        return TOKENIZERS[kind]
    except (KeyError, TypeError):
        raise SemrecError(f"unknown tokenizer kind {kind!r}; known kinds: {', '.join(TOKENIZERS)}") from None


def tokenizer_params(kind: str) -> list[str]:
    """The parameter names ``build_tokenizer(kind, ...)`` accepts."""
    sig = inspect.signature(tokenizer_class(kind).__init__)
    return [name for name in sig.parameters if name != "self"]


def build_tokenizer(kind: str, **params: Any) -> BaseTokenizer:
    """A new, unfitted tokenizer of ``kind`` with ``params`` (unknown names raise SemrecError)."""
    cls = tokenizer_class(kind)
    known = tokenizer_params(kind)
    for name in params:
        if name not in known:
            raise SemrecError(f"unknown parameter {name!r} for tokenizer '{kind}'; known: {', '.join(known)}")
    return cls(**params)


def load_tokenizer(folder: str | Path, threads: int | None = None) -> BaseTokenizer:
    """Load the tokenizer saved in ``folder`` (its kind is read from ``tokenizer.json``)."""
    meta = read_tokenizer_json(folder)
    return tokenizer_class(meta["kind"]).load(folder, threads=threads)


__all__ = [
    "TOKENIZERS",
    "BaseTokenizer",
    "CodeReport",
    "ItemTokenizer",
    "KMeansTokenizer",
    "OPQTokenizer",
    "PQTokenizer",
    "RQTokenizer",
    "add_dedup_level",
    "build_tokenizer",
    "code_report",
    "load_tokenizer",
    "next_dedup_digits",
    "tokenizer_class",
    "tokenizer_params",
]
