"""MovieLens 100K raw files: ``u.data`` (user, item, rating, unix time), ``u.item`` (``|``-separated; latin-1 as
shipped, or UTF-8 when re-saved: each file is read as UTF-8 when it is valid UTF-8, else as latin-1) and
``u.genre``. Views: title (the year suffix removed), genre (genre names joined with spaces), year.
"""

from __future__ import annotations

import re
from pathlib import Path

from semrec.data.dataset import SourceData
from semrec.data.sources._read import TextColumns, iter_lines, parse_number, require_file
from semrec.data.spool import InteractionSpool
from semrec.errors import DataFormatError, SemrecError
from semrec.text.clean import clean_text, clean_title

VIEWS = ["title", "genre", "year"]
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "u.data").is_file() and (path / "u.item").is_file()


def split_title(title: str) -> tuple[str, str]:
    """'Toy Story (1995)' -> ('Toy Story', '1995')."""
    match = _YEAR.search(title)
    return (title[: match.start()], match.group(1)) if match else (title, "")


def load(path: str | Path, name: str | None = None) -> SourceData:
    folder = Path(path)
    if not folder.is_dir():
        raise SemrecError(f"{folder}: expected the MovieLens folder holding u.data, u.item and u.genre")
    data_path, item_path, genre_path = (require_file(folder / f) for f in ("u.data", "u.item", "u.genre"))
    genres: dict[int, str] = {}
    for line, text in iter_lines(genre_path):
        if not text.strip():
            continue
        parts = text.split("|")
        if len(parts) != 2:
            raise DataFormatError(genre_path, "expected 'name|index'", line=line)
        index = int(parse_number(genre_path, line, "index", parts[1], integer=True))
        if index in genres:
            raise DataFormatError(genre_path, f"genre index {index} given twice", line=line, field="index")
        genres[index] = parts[0]
    if sorted(genres) != list(range(len(genres))):
        raise DataFormatError(genre_path, f"genre indices must run 0..{len(genres) - 1} (one per u.item flag column), "
                                          f"got {sorted(genres)}")
    interactions = InteractionSpool(data_path)  # streamed to disk: memory does not grow with u.data
    for line, text in iter_lines(data_path):
        if not text.strip():
            continue
        parts = text.split("\t")
        if len(parts) != 4:
            raise DataFormatError(data_path, f"expected 4 tab-separated fields, got {len(parts)}", line=line)
        parse_number(data_path, line, "rating", parts[2])
        interactions.add(parts[0].strip(), parts[1].strip(),
                         parse_number(data_path, line, "timestamp", parts[3], integer=True, timestamp=True))
    records = TextColumns(["raw_id", *VIEWS])
    for line, text in iter_lines(item_path):
        if not text.strip():
            continue
        parts = text.split("|")
        if len(parts) != 5 + len(genres):
            raise DataFormatError(item_path, f"expected {5 + len(genres)} '|'-separated fields, got {len(parts)}",
                                  line=line)
        flags = parts[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataFormatError(item_path, "genre flags must be 0 or 1", line=line, field="genres")
        title, year = split_title(parts[1])
        if not year and parts[2][-4:].isdigit():
            year = parts[2][-4:]
        records.append({
            "raw_id": parts[0].strip(),
            "title": clean_title(title),
            "genre": clean_text(" ".join(genres[i] for i, f in enumerate(flags) if f == "1")),
            "year": clean_text(year),
        })
    return SourceData(
        name=name or folder.name, format="movielens",
        interactions=interactions.finish(),
        items=records.frame(), views=list(VIEWS),
        files=[data_path, item_path, genre_path],
    )
