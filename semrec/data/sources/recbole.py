"""RecBole atomic files (``X.inter`` and ``X.item``, tab-separated, ``name:type`` headers).

Every ``token``/``token_seq`` column of the ``.item`` file except the id becomes a text view
(``movie_title`` -> title, ``release_year`` -> year, ``class`` -> genre; other names are kept).
The examples shipped inside the ``recbole`` wheel (e.g. ``ml-100k``) are fetched with
``pip download --no-deps recbole==1.2.1`` and read straight from the wheel, cached, without
installing recbole or its dependencies: use the source ``recbole:ml-100k``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from semrec.data.dataset import SourceData
from semrec.data.sources._read import (
    NotFastPath,
    TextColumns,
    fast_csv_batches,
    iter_lines,
    parse_number,
    plain_ids,
    plain_numbers,
    require_file,
)
from semrec.data.spool import InteractionSpool
from semrec.errors import DataFormatError, SemrecError
from semrec.io import atomic_path, cache_root
from semrec.text.clean import clean_text, clean_title

RECBOLE_VERSION = "1.2.1"
VIEW_NAMES = {"movie_title": "title", "title": "title", "release_year": "year", "class": "genre"}
TEXT_TYPES = {"token", "token_seq"}


def fetch_recbole_example(name: str, version: str = RECBOLE_VERSION) -> Path:
    """Return a folder with ``{name}.inter``/``.item`` extracted from the recbole wheel (downloaded once)."""
    folder = cache_root() / "sources" / f"recbole-{version}" / name
    if (folder / f"{name}.inter").is_file():
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "-d", tmp, f"recbole=={version}"]
        print(f"Downloading recbole=={version} (wheel only, to read its example '{name}')...", file=sys.stderr)
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if result.returncode != 0 or not wheels:
            raise SemrecError(f"could not download recbole=={version} with pip: "
                              f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            prefix = f"recbole/dataset_example/{name}/"
            members = [m for m in wheel.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not any(m.endswith(".inter") for m in members):
                known = sorted({m.split("/")[2] for m in wheel.namelist()
                                if m.startswith("recbole/dataset_example/") and m.count("/") >= 3})
                raise SemrecError(f"recbole=={version} ships no example '{name}' (it has: {', '.join(known)})")
            folder.mkdir(parents=True, exist_ok=True)
            for member in members:
                with atomic_path(folder / Path(member).name) as target:
                    target.write_bytes(wheel.read(member))
    return folder


def detect(path: Path) -> bool:
    return (path.is_dir() and any(path.glob("*.inter"))) or path.suffix == ".inter"


def _read_atomic(path: Path) -> tuple[list[tuple[str, str]], Iterator[tuple[int, list[str]]]]:
    """The ``(name, type)`` header of an atomic file and an iterator over its ``(line, fields)`` rows (streamed; blank
    lines skipped, a row with the wrong field count is a DataFormatError naming its line)."""
    lines = iter_lines(path)
    first = next(lines, None)
    if first is None:
        raise DataFormatError(path, "empty file", line=1)
    header = []
    for column in first[1].split("\t"):
        name, sep, kind = column.strip().partition(":")
        if not sep or kind not in ("token", "token_seq", "float", "float_seq"):
            raise DataFormatError(path, f"bad header column {column!r} (expected name:type)", line=1)
        header.append((name, kind))

    def rows() -> Iterator[tuple[int, list[str]]]:
        for line, text in lines:
            if not text.strip():
                continue
            fields = text.split("\t")
            if len(fields) != len(header):
                raise DataFormatError(path, f"expected {len(header)} tab-separated fields, got {len(fields)}",
                                      line=line)
            yield line, fields

    return header, rows()


def _read_inter_fast(path: Path, header: list[str], u: int, i: int, t: int | None) -> InteractionSpool:
    """The interactions of a clean UTF-8 ``.inter`` file, vectorised (pyarrow's CSV reader, no quoting, tabs);
    :class:`NotFastPath` when any id or timestamp is not plainly valid (the line reader then decides)."""
    spool = InteractionSpool(path)
    try:
        for batch in fast_csv_batches(path, header, delimiter="\t", quoting=False):
            stamps = (np.full(len(batch), np.nan) if t is None
                      else plain_numbers(batch.column(t), timestamp=True))
            spool.add_arrays(plain_ids(batch.column(u)), plain_ids(batch.column(i)), stamps)
    except NotFastPath:
        spool.cleanup()
        raise
    return spool.finish()


def load(path: str | Path, name: str | None = None) -> SourceData:
    path = Path(path)
    if str(path).startswith("recbole:"):
        example = str(path).split(":", 1)[1]
        folder = fetch_recbole_example(example)
        inter_path = folder / f"{example}.inter"
    elif path.is_dir():
        found = sorted(path.glob("*.inter"))
        if not found:
            raise SemrecError(f"{path}: no .inter file found")
        inter_path = found[0]
    else:
        inter_path = require_file(path, "interaction file")
    stem = inter_path.name[: -len(".inter")]
    item_path = require_file(inter_path.with_name(f"{stem}.item"), "item file")

    header, rows = _read_atomic(inter_path)
    names = [n for n, _ in header]
    for needed in ("user_id", "item_id"):
        if needed not in names:
            raise DataFormatError(inter_path, f"header has no '{needed}' column", line=1, field=needed)
    u, i = names.index("user_id"), names.index("item_id")
    t = names.index("timestamp") if "timestamp" in names else None
    try:
        interactions = _read_inter_fast(inter_path, [f"{n}:{k}" for n, k in header], u, i, t)
    except NotFastPath:
        interactions = InteractionSpool(inter_path)  # streamed to disk: memory does not grow with the file
        for line, fields in rows:
            interactions.add(fields[u].strip(), fields[i].strip(),
                             float("nan") if t is None else parse_number(inter_path, line, "timestamp", fields[t],
                                                                         timestamp=True))
        interactions.finish()

    item_header, item_rows = _read_atomic(item_path)
    item_names = [n for n, _ in item_header]
    if "item_id" not in item_names:
        raise DataFormatError(item_path, "header has no 'item_id' column", line=1, field="item_id")
    text_columns = [(k, n) for k, (n, kind) in enumerate(item_header) if kind in TEXT_TYPES and n != "item_id"]
    views = [VIEW_NAMES.get(n, n) for _, n in text_columns]
    if len(set(views)) != len(views):
        raise DataFormatError(item_path, f"two columns map to the same view name: {views}", line=1)
    id_col = item_names.index("item_id")
    records = TextColumns(["raw_id", *views])
    for _, fields in item_rows:
        record = {"raw_id": fields[id_col].strip()}
        for (k, _), view in zip(text_columns, views):
            record[view] = clean_title(fields[k]) if view == "title" else clean_text(fields[k])
        records.append(record)
    return SourceData(
        name=name or stem, format="recbole", interactions=interactions,
        items=records.frame(), views=views, files=[inter_path, item_path],
        options={"example": str(path)} if str(path).startswith("recbole:") else {},
    )
