"""One module per input format; each has ``detect(path)`` and ``load(path, name=...)`` returning SourceData."""

from __future__ import annotations

from pathlib import Path

from semrec.data.dataset import SourceData
from semrec.data.sources import amazon2023, lcrec, movielens, recbole
from semrec.data.sources._read import recording_encodings
from semrec.errors import SemrecError

SOURCES = {
    "amazon2023": amazon2023,
    "lcrec": lcrec,
    "recbole": recbole,
    "movielens": movielens,
}


def detect_format(path: str | Path) -> str:
    """Guess the input format of ``path`` (``recbole:NAME`` names a RecBole example dataset)."""
    if str(path).startswith("recbole:"):
        return "recbole"
    path = Path(path)
    if not path.exists():
        raise SemrecError(f"{path}: not found")
    for name in ("movielens", "lcrec", "recbole", "amazon2023"):
        if SOURCES[name].detect(path):
            return name
    raise SemrecError(f"{path}: cannot tell the input format; pass --format (one of {', '.join(SOURCES)})")


def load_source(path: str | Path, fmt: str = "auto", name: str | None = None, **options) -> SourceData:
    """Read ``path`` with the module for ``fmt`` (or the detected format).

    ``SourceData.encodings`` tells how each of its text files was decoded (UTF-8, else latin-1; see
    :mod:`semrec.text.decode`).
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in SOURCES:
        raise SemrecError(f"unknown format '{fmt}' (known: {', '.join(SOURCES)})")
    if options.get("meta") and fmt != "amazon2023":
        raise SemrecError("--meta only applies to the amazon2023 format")
    options = {k: v for k, v in options.items() if v is not None}
    with recording_encodings() as encodings:
        source = SOURCES[fmt].load(path, name=name, **options)
    source.encodings = {p.name: encodings[str(p)] for p in source.files if str(p) in encodings}
    return source
