"""Amazon 2018 in the LC-Rec / LETTER JSON layout.

``X.inter.json``: ``{user: [item, ...]}`` in time order (no timestamps); ``X.item.json``:
``{item: {title, description, brand, categories}}``. Views: title, brand, categories, description.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from semrec.data.dataset import SourceData
from semrec.data.sources._read import TextColumns, read_json, require_file
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


def load(path: str | Path, name: str | None = None) -> SourceData:
    path = Path(path)
    if not path.exists():
        raise SemrecError(f"{path}: not found")
    inter_path, item_path = _files(path)
    inter = read_json(inter_path)
    if not isinstance(inter, dict):
        raise DataFormatError(inter_path, "expected a JSON object {user: [items]}", line=1)
    users, items, order = [], [], []
    empty_users = 0
    for user, seq in inter.items():
        if not isinstance(seq, list) or not all(isinstance(i, (int, str)) and not isinstance(i, bool) for i in seq):
            raise DataFormatError(inter_path, f"user {user!r}: expected a list of item ids", field=str(user))
        empty_users += not seq
        users.extend([str(user)] * len(seq))
        items.extend(str(i) for i in seq)
        order.extend(range(len(seq)))
    meta = read_json(item_path)
    if not isinstance(meta, dict):
        raise DataFormatError(item_path, "expected a JSON object {item: {title, ...}}", line=1)
    records = TextColumns(["raw_id", *VIEWS])
    for item, fields in meta.items():
        if not isinstance(fields, dict):
            raise DataFormatError(item_path, f"item {item!r}: expected an object of text fields", field=str(item))
        records.append({
            "raw_id": str(item),
            "title": clean_title(fields.get("title")),
            "brand": clean_text(fields.get("brand")),
            "categories": clean_text(fields.get("categories")),
            "description": clean_text(fields.get("description")),
        })
    interactions = pd.DataFrame({"user": users, "item": items, "timestamp": np.nan})
    return SourceData(
        name=name or inter_path.name.replace(".inter.json", ""), format="lcrec", interactions=interactions,
        items=records.frame(), views=list(VIEWS), files=[inter_path, item_path],
        skips={"users_with_empty_sequences": empty_users},
    )
