"""``semrec prepare``: read a source, build the canonical dataset, save it, report statistics."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semrec.config import PrepareConfig, save_config
from semrec.data.build import check_memory_limit, write_dataset
from semrec.data.dataset import CanonicalDataset
from semrec.data.sources import load_source
from semrec.data.spool import InteractionSpool
from semrec.errors import SemrecError

ID_WARNING_TEXT = {"comma": "contain a comma", "outer_whitespace": "begin or end with whitespace",
                   "unprintable": "contain unprintable characters", "empty": "are empty"}
ID_WARNING_HINT = {"item": "pass them to 'semrec recommend' with --item ID (repeatable) or --history-file FILE",
                   "user": "'semrec recommend --user ID' takes an id whole (quote it in the shell)"}


def default_out(name: str) -> Path:
    return Path("data") / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@dataclass
class PreparedDataset:
    """What ``semrec prepare`` wrote: the folder and its manifest, statistics included (``manifest['stats']``). The
    users' sequences stay on disk; :meth:`load` reads them (:class:`CanonicalDataset`)."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    def stats(self) -> dict[str, Any]:
        """As :meth:`CanonicalDataset.stats`, from the manifest."""
        return self.manifest["stats"]

    def load(self) -> CanonicalDataset:
        return CanonicalDataset.load(self.folder)


def prepare_dataset(config: PrepareConfig) -> tuple[PreparedDataset, Path]:
    """Build and save the dataset described by ``config``; return its summary and folder.

    The readers stream their files (interactions spooled to a temporary file) and the build sorts them out of core
    under ``config.memory_limit`` (:func:`semrec.data.build.write_dataset`): memory grows with the catalogue and
    the number of users, not with the interaction file. Errors: see the source modules and ``write_dataset``."""
    check_memory_limit(config.memory_limit)  # before reading a file that may take minutes
    if config.missing_meta not in ("drop", "keep"):
        raise SemrecError(f"missing_meta must be 'drop' or 'keep', got {config.missing_meta!r}")
    source = load_source(config.source, config.format, name=config.name, meta=config.meta)
    try:
        out = Path(config.out) if config.out else default_out(source.name)
        manifest = write_dataset(source, out, missing_meta=config.missing_meta, memory_limit=config.memory_limit)
    finally:
        if isinstance(source.interactions, InteractionSpool):
            source.interactions.cleanup()
    save_config(config, out / "prepare_config.yaml")
    return PreparedDataset(out, manifest), out


def describe_dataset(folder: str | Path) -> CanonicalDataset | PreparedDataset:
    """What :func:`format_stats` needs of a prepared folder: its manifest when that carries the statistics (written
    since the out-of-core build), after checking that both Parquet files' footers read and hold the manifest's row
    counts (a few KB read); else the loaded dataset. SemrecError as ``CanonicalDataset.load``, naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semrec.artifacts import DatasetFolder
    from semrec.data.dataset import _checked_manifest

    folder = Path(folder)
    manifest, fix = _checked_manifest(folder)
    if "stats" not in manifest:
        return CanonicalDataset.load(folder)
    for name, count in ((DatasetFolder.ITEMS, "items"), (DatasetFolder.SEQUENCES, "users")):
        try:
            rows = pq.read_metadata(folder / name).num_rows
        except (OSError, pa.ArrowException) as exc:
            raise SemrecError(f"{folder / name}: cannot read ({type(exc).__name__}: {exc}); {fix}") from None
        if rows != manifest["stats"][count]:
            raise SemrecError(f"{folder / name}: {rows} rows, its manifest says {manifest['stats'][count]} "
                              f"{count}; {fix}")
    return PreparedDataset(folder, manifest)


def format_stats(dataset: CanonicalDataset | PreparedDataset) -> str:
    """Human-readable statistics block (counts, sparsity, lengths, empty-field rate per view, skips), then how
    the source files were decoded and a warning per kind of raw id that is awkward on a command line."""
    stats = dataset.stats()
    lines = [
        f"dataset      {dataset.name}  ({dataset.manifest['source']['format']})",
        f"users        {stats['users']:,}",
        f"items        {stats['items']:,}",
        f"interactions {stats['interactions']:,}",
        f"sparsity     {stats['sparsity']:.4%}",
        f"avg length   {stats['avg_length']:.2f}  (min {stats['min_length']}, max {stats['max_length']})",
        "empty text   " + ", ".join(f"{v} {r:.1%}" for v, r in stats["empty_rate"].items()),
    ]
    skips = {k: v for k, v in dataset.manifest.get("skips", {}).items() if v}
    lines.append("skipped      " + (", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in skips.items())
                                    if skips else "nothing"))
    encodings: dict[str, list[str]] = {}
    for file, encoding in dataset.manifest["source"].get("encodings", {}).items():
        encodings.setdefault(encoding, []).append(file)
    if encodings:
        lines.append("encoding     " + (next(iter(encodings)) if len(encodings) == 1 else "; ".join(
            f"{encoding} ({', '.join(files)})" for encoding, files in encodings.items())))
    for kind, warnings in dataset.manifest.get("id_warnings", {}).items():
        for check, found in warnings.items():
            lines.append(f"warning      {found['count']:,} {kind} id(s) {ID_WARNING_TEXT[check]}, e.g. "
                         + ", ".join(repr(raw) for raw in found["examples"])
                         + f"; {ID_WARNING_HINT[kind]}")
    return "\n".join(lines)
