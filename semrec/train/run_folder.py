"""What a run folder records about the data it was trained on, and the one check that every reader of a run applies.

A run's checkpoints number items as its dataset did when it was trained, and code or text models read that
dataset's codes and embeddings. :func:`semrec.runs.load_run_data` fingerprints those files (SHA-256 of the dataset's
``manifest.json``, of ``codes.npy``, of the embedding matrices); the trainer writes them, with what is needed to
say what changed (paths, modification times, the dataset's creation time, source files and counts), to
``<run>/fingerprints.json`` when the run starts, and into every ``last.pt``. :func:`check_fingerprints` compares
them with the files as they are now and refuses (:class:`RunDataChanged`) with what changed and how to proceed;
``train --resume``, ``evaluate``, ``recommend``, ``serve``, ``export`` and the benchmark scripts all call it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from semrec.artifacts import MissingCheckpoint, RunFolder
from semrec.errors import SemrecError
from semrec.io import read_json, write_json

FINGERPRINTS_FILE = RunFolder.FINGERPRINTS
WHAT = {"dataset": "dataset", "codes": "codes", "embeddings": "text embeddings (the codes' PCA inputs)",
        "plm": "text embeddings", "ctr": "CTR samples",
        "semantic": "semantic ids (codes)", "codebook": "semantic codebook (run checkpoint)"}


class RunDataChanged(SemrecError):
    """A run's dataset, codes or embeddings are not the files it was trained on."""


def _file_facts(path: Path) -> dict[str, Any]:
    stat = path.stat()
    modified = _dt.datetime.fromtimestamp(stat.st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
    return {"path": str(path), "bytes": stat.st_size, "modified": modified}


def _dataset_facts(manifest_path: Path) -> dict[str, Any]:
    manifest = read_json(manifest_path)
    return {"name": manifest.get("name"), "created_at": manifest.get("created_at"),
            "counts": manifest.get("counts", {}),
            "source_files": {f.get("name"): f.get("sha256") for f in manifest.get("source", {}).get("files", [])}}


def data_record(fingerprints: Mapping[str, str], files: Mapping[str, str | Path]) -> dict[str, Any]:
    """The content of ``fingerprints.json``: the fingerprints, and facts about each fingerprinted file."""
    record: dict[str, Any] = {"format": 1, "fingerprints": dict(fingerprints),
                              "files": {k: _file_facts(Path(p)) for k, p in files.items() if Path(p).is_file()}}
    if "dataset" in files and Path(files["dataset"]).is_file():
        record["dataset"] = _dataset_facts(Path(files["dataset"]))
    return record


def write_data_record(run_dir: str | Path, fingerprints: Mapping[str, str], files: Mapping[str, str | Path]) -> None:
    """Write ``<run>/fingerprints.json`` (atomically)."""
    write_json(RunFolder(run_dir).fingerprints, data_record(fingerprints, files))


def recorded_fingerprints(run_dir: str | Path) -> dict[str, Any] | None:
    """The data record of a run: ``fingerprints.json``, else (runs from before it existed) the fingerprints saved
    in ``checkpoints/last.pt``; None when neither exists."""
    folder = RunFolder(run_dir)
    if folder.fingerprints.is_file():
        return read_json(folder.fingerprints)
    last = folder.last
    if last.is_file():
        from semrec.train.checkpoint import load_checkpoint

        fingerprints = load_checkpoint(last).get("fingerprints")
        if fingerprints:
            return {"format": 0, "fingerprints": dict(fingerprints), "files": {}}
    return None


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "none"


def _dataset_changes(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    out = []
    if then.get("created_at") != now.get("created_at"):
        out.append(f"re-prepared {now.get('created_at')} (the run used the version of {then.get('created_at')})")
    old_files, new_files = then.get("source_files", {}), now.get("source_files", {})
    changed = sorted(n for n in set(old_files) | set(new_files) if old_files.get(n) != new_files.get(n))
    if changed:
        out.append(f"source file(s) changed: {', '.join(map(str, changed))}")
    old_counts, new_counts = then.get("counts", {}), now.get("counts", {})
    diffs = [f"{k} {old_counts.get(k)} -> {new_counts.get(k)}" for k in ("users", "items", "interactions")
             if old_counts.get(k) != new_counts.get(k)]
    if diffs:
        out.append(", ".join(diffs))
    return out


def changed_fingerprints(then: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The recorded fingerprints (``then``) that differ ``now``; keys not recorded are not compared.

    When the dataset's content fingerprint was recorded, it decides for the dataset: re-preparing the same source
    rewrites ``manifest.json`` (its date) but changes nothing a model reads. A change is reported as 'dataset'."""
    changed = [key for key, value in then.items() if now.get(key) != value]
    if "dataset_content" in then:
        content_changed = "dataset_content" in changed
        changed = [key for key in changed if key not in ("dataset", "dataset_content")]
        if content_changed:
            changed.insert(0, "dataset")
    return changed


def describe_changes(run_dir: str | Path, recorded: Mapping[str, Any], current: Mapping[str, str],
                     files: Mapping[str, str | Path]) -> list[str]:
    """One phrase per changed file (empty when the data is the run's)."""
    then = recorded.get("fingerprints", {})
    facts = recorded.get("files", {})
    out = []
    for key in changed_fingerprints(then, current):
        old, new = then.get(key), current.get(key)
        path = Path(files[key]) if key in files else Path(facts.get(key, {}).get("path", "?"))
        what = f"{WHAT.get(key, key)} {path}"
        if new is None:
            out.append(f"{what}: no longer used or found")
            continue
        details = []
        if key == "dataset" and "dataset" in recorded and path.is_file():
            details = _dataset_changes(recorded["dataset"], _dataset_facts(path))
        elif path.is_file() and key in facts:
            details = [f"rewritten {_file_facts(path)['modified']} (the run used the file of "
                       f"{facts[key].get('modified')})"]
        details.append(f"sha256 {_short(old)}... then, {_short(new)}... now")
        out.append(f"{what}: {'; '.join(details)}")
    return out


def check_fingerprints(run_dir: str | Path, current: Mapping[str, str], files: Mapping[str, str | Path],
                       recorded: Mapping[str, str] | None = None) -> None:
    """Refuse a run whose dataset, codes or embeddings changed since it was trained.

    ``current`` and ``files`` are ``RunData.fingerprints`` and ``RunData.fingerprint_files``; ``recorded`` (the
    fingerprints of a checkpoint being resumed) defaults to the run's record (:func:`recorded_fingerprints`).
    Fingerprints the run did not record (older runs) are not compared; a run with no record at all passes.
    Raises :class:`RunDataChanged` naming each changed file, what changed in it, and how to proceed."""
    run_dir = Path(run_dir)
    record = recorded_fingerprints(run_dir)
    if recorded is not None:
        record = {**(record or {"files": {}}), "fingerprints": dict(recorded)}
    if record is None:
        return
    changes = describe_changes(run_dir, record, current, files)
    if changes:
        raise RunDataChanged(
            f"{run_dir}: the data this run was trained on has changed since: {' | '.join(changes)}. Its checkpoints "
            f"number and code items as the old files did, so its answers would be wrong. Retrain on the current data "
            f"('semrec train -c {RunFolder(run_dir).config} --out NEW_RUN_FOLDER'), or restore the files it was "
            f"trained on")


__all__ = ["FINGERPRINTS_FILE", "MissingCheckpoint", "RunDataChanged", "check_fingerprints", "data_record",
           "recorded_fingerprints", "write_data_record"]
