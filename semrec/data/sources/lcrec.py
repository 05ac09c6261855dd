"""Amazon 2018 in the LC-Rec / LETTER JSON layout.

``X.inter.json``: ``{user: [item, ...]}`` in time order (no timestamps); ``X.item.json``:
``{item: {title, description, brand, categories}}``. Views: title, brand, categories, description.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from semrec.data.dataset import SourceData
from semrec.data.sources._read import TextColumns, _open_raw, note_encoding, read_json, require_file
from semrec.data.spool import InteractionSpool
from semrec.errors import DataFormatError, SemrecError
from semrec.text.clean import clean_text, clean_title

VIEWS = ["title", "brand", "categories", "description"]


def _files(path: Path) -> tuple[Path, Path]:
    if path.is_file():
        if not path.name.endswith(".inter.json"):
            raise SemrecError(f"{path}: expected an X.inter.json file or the folder holding it")
        return path, require_file(path.with_name(path.name.replace(".inter.json", ".item.json")), "item file")
    inters = sorted(path.glob("*.inter.json"))
    if not inters:
        raise SemrecError(f"{path}: no *.inter.json file found")
    inter = inters[0]
    return inter, require_file(inter.with_name(inter.name.replace(".inter.json", ".item.json")), "item file")


def detect(path: Path) -> bool:
    return (path.is_dir() and any(path.glob("*.inter.json"))) or path.name.endswith(".inter.json")


class _ReadWhole(Exception):
    """The streamed reading cannot decide (not clean UTF-8, malformed JSON, NaN, a key given twice, not one object):
    the file is read whole instead, whose reader accepts it or names the line."""


def _stream_object(path: Path) -> Iterator[tuple[str, Any]]:
    """The ``(key, value)`` pairs of a (possibly gzipped) file holding one JSON object, streamed with ijson's C
    parser: memory holds one value at a time. :class:`_ReadWhole` on anything but clean UTF-8 JSON of one object
    (pairs may have been yielded before it)."""
    import ijson

    with _open_raw(path) as fh:
        try:
            head = fh.read(1 << 16)
        except (OSError, EOFError):
            raise _ReadWhole from None
        if not head.lstrip().startswith(b"{"):  # an array, a BOM, empty: the whole-file reader says what it is
            raise _ReadWhole
    repeated: list[str] = []  # keys given twice in one nested object

    class NoteRepeats(dict):
        def __setitem__(self, key, value):
            if key in self:
                repeated.append(key)
            super().__setitem__(key, value)

    seen: set[str] = set()
    with _open_raw(path) as fh:
        try:
            for key, value in ijson.kvitems(fh, "", use_float=True, map_type=NoteRepeats):
                if key in seen or repeated:
                    raise _ReadWhole
                seen.add(key)
                yield key, value
        except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError, OSError, EOFError, ValueError):
            raise _ReadWhole from None
    note_encoding(path, "utf-8")  # ijson read all of it as UTF-8


def _pairs(path: Path, streamed: bool, expected: str) -> Iterator[tuple[str, Any]]:
    """The pairs of the file's one JSON object, streamed or from the whole file (DataFormatError when it holds
    something else: ``expected`` says what it should)."""
    if streamed:
        return _stream_object(path)
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise DataFormatError(path, f"expected a JSON object {expected}", line=1)
    return iter(obj.items())


def _read_inter(path: Path, streamed: bool) -> tuple[InteractionSpool, int]:
    """``{user: [items]}`` into a spool (rows in sequence order, no timestamps) and the count of empty sequences."""
    spool = InteractionSpool(path)
    empty_users = 0
    try:
        for user, seq in _pairs(path, streamed, "{user: [items]}"):
            if not isinstance(seq, list) or not all(isinstance(i, (int, str)) and not isinstance(i, bool)
                                                    for i in seq):
                raise DataFormatError(path, f"user {user!r}: expected a list of item ids", field=str(user))
            empty_users += not seq
            spool.extend([str(user)] * len(seq), [str(i) for i in seq], np.full(len(seq), np.nan))
    except BaseException:
        spool.cleanup()
        raise
    return spool.finish(), empty_users


def _read_items(path: Path, streamed: bool) -> pd.DataFrame:
    records = TextColumns(["raw_id", *VIEWS])
    for item, fields in _pairs(path, streamed, "{item: {title, ...}}"):
        if not isinstance(fields, dict):
            raise DataFormatError(path, f"item {item!r}: expected an object of text fields", field=str(item))
        records.append({
            "raw_id": str(item),
            "title": clean_title(fields.get("title")),
            "brand": clean_text(fields.get("brand")),
            "categories": clean_text(fields.get("categories")),
            "description": clean_text(fields.get("description")),
        })
    return records.frame()


def _read(reader, path: Path):
    """``reader(path, streamed=True)``; read whole when the stream cannot decide (see :class:`_ReadWhole`)."""
    try:
        return reader(path, True)
    except _ReadWhole:
        return reader(path, False)


def load(path: str | Path, name: str | None = None) -> SourceData:
    """Both files are streamed (ijson): memory does not grow with the number of interactions; a file that is not
    clean UTF-8 JSON (another encoding, a BOM, malformed, ``NaN``, a key given twice) is read whole, whose reader
    accepts it or names the line."""
    path = Path(path)
    if not path.exists():
        raise SemrecError(f"{path}: not found")
    inter_path, item_path = _files(path)
    interactions, empty_users = _read(_read_inter, inter_path)
    items = _read(_read_items, item_path)
    return SourceData(
        name=name or inter_path.name.replace(".inter.json", ""), format="lcrec", interactions=interactions,
        items=items, views=list(VIEWS), files=[inter_path, item_path],
        skips={"users_with_empty_sequences": empty_users},
    )
