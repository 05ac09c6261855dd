"""``semrec prepare``: read a source, build the canonical dataset, save it, report statistics."""

from __future__ import annotations

import re
from pathlib import Path

from semrec.config import PrepareConfig, save_config
from semrec.data.dataset import CanonicalDataset, build_dataset
from semrec.data.sources import load_source

ID_WARNING_TEXT = {"comma": "contain a comma", "outer_whitespace": "begin or end with whitespace",
                   "unprintable": "contain unprintable characters", "empty": "are empty"}
ID_WARNING_HINT = {"item": "pass them to 'semrec recommend' with --item ID (repeatable) or --history-file FILE",
                   "user": "'semrec recommend --user ID' takes an id whole (quote it in the shell)"}


def default_out(name: str) -> Path:
    return Path("data") / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def prepare_dataset(config: PrepareConfig) -> tuple[CanonicalDataset, Path]:
    """Build and save the dataset described by ``config``; return it and its folder."""
    source = load_source(config.source, config.format, name=config.name, meta=config.meta)
    dataset = build_dataset(source, missing_meta=config.missing_meta)
    out = Path(config.out) if config.out else default_out(dataset.name)
    dataset.save(out)
    save_config(config, out / "prepare_config.yaml")
    return dataset, out


def format_stats(dataset: CanonicalDataset) -> str:
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
