"""``semrec prepare``: read a source, build the canonical dataset, save it, report statistics."""

from __future__ import annotations

import re
from pathlib import Path

from semrec.config import PrepareConfig, save_config
from semrec.data.dataset import CanonicalDataset, build_dataset
from semrec.data.sources import load_source


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
    """Human-readable statistics block (counts, sparsity, lengths, empty-field rate per view, skips)."""
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
    return "\n".join(lines)
